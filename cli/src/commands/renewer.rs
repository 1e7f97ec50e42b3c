//! `qlam-auth job-renewer`: keeps a Slurm job's token file valid while the job runs on this node.
//!
//! The SPANK plugin starts it in `user_init`, detached and as the job's user (see
//! `spank-plugin/src/spawn.rs`). The loop itself is token-core's [`token_core::renew`]; this
//! module builds the broker as the plugin does and decides when the job has ended here:
//! * the job's token directory is gone (removed by the batch step's `exit` or by `job_epilog`),
//! * or no `slurmstepd` of the job is left on the node (all its steps ended),
//! * or the job's end time has passed (plus a margin) and slurmctld, asked again with `--squeue`,
//!   does not tell a later one (an extended time limit),
//! * or SIGTERM, SIGINT or SIGHUP.

use crate::cli::JobRenewerArgs;
use crate::exit::{self, Failure};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use token_core::broker::{Broker, ObtainOptions, Obtained, Source};
use token_core::config::Config;
use token_core::http::HttpSettings;
use token_core::jobcache::{From as CacheFrom, JobCache};
use token_core::paths::QshPaths;
use token_core::renew::{Ended, RenewerConfig};
use token_core::secret::Secret;
use token_core::time::Timestamp;
use token_core::{deliver, exchange};

/// How long past the job's end time the renewer may still run (Slurm's own grace periods).
const END_MARGIN_SECS: i64 = 300;

/// The renewer's stop request: SIGTERM, SIGINT or SIGHUP set the flag and also write a byte to
/// a socket pair (signal-hook's self-pipe), so a waiting renewer wakes at once instead of at its
/// next check: the plugin waits for it before the job's node is free.
#[derive(Debug)]
struct SignalStop {
    flag: Arc<AtomicBool>,
    wake: UnixStream,
}

impl SignalStop {
    fn register() -> std::io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let (wake, signalled) = UnixStream::pair()?;
        for sig in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
            signal_hook::low_level::pipe::register(sig, signalled.try_clone()?)?;
        }
        Ok(SignalStop { flag, wake })
    }
}

impl token_core::renew::Stop for SignalStop {
    fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    fn nap(&self, d: Duration) {
        if d.is_zero() || self.wake.set_read_timeout(Some(d)).is_err() {
            return;
        }
        // A byte (a signal) or the timeout ends the nap; either way the loop looks again.
        let _ = (&self.wake).read(&mut [0u8; 16]);
    }
}

/// Runs the renewer until the job ends on this node.
pub fn run(a: &JobRenewerArgs) -> Result<(), Failure> {
    let stop = SignalStop::register()
        .map_err(|e| Failure::msg(format!("cannot handle signals: {e}"), exit::OTHER))?;
    // The environment was set by the plugin from the job's: QSH_CONFIG_DIR / QSH_CONFIG.
    let env = |k: &str| std::env::var(k).ok();
    let paths = QshPaths::resolve(&a.home, &env);
    let http = HttpSettings {
        timeout: Duration::from_secs(a.timeout.saturating_sub(a.lock_timeout).max(1)),
        connect_timeout: Duration::from_secs(a.timeout.saturating_sub(a.lock_timeout).clamp(1, 5)),
        ca_bundle: a.ca_bundle.clone(),
        allowed_issuers: (!a.issuers.is_empty()).then(|| a.issuers.clone()),
        ssl_cert_file: None,
    }
    .with_env(&|k| std::env::var_os(k));
    let broker_now = || -> token_core::Result<Broker> {
        // The site file is read again each time, as the plugin does in every hook.
        let site = match &a.site_file {
            Some(f) => token_core::site::Site::load(f)?,
            None => None,
        };
        let config =
            Config::load_with_site(&paths, site)?.with_http_loopback(super::http_loopback());
        let provider = config.provider_with_env(a.context.as_deref(), &env)?;
        Ok(Broker::new(&paths, provider, &http, &super::env)?
            .with_deadline(Instant::now() + Duration::from_secs(a.timeout)))
    };
    // With token exchange: every job token this renewer saw, revoked when the job ends.
    let mut job_tokens: Vec<Secret> = Vec::new();
    if a.exchange
        && let Some(t) = deliver::read_token_file(&a.dir.join(&a.file))
            .ok()
            .flatten()
        && exchange::read_meta(&a.dir, &a.file).is_some_and(|m| m.describes(&t))
    {
        job_tokens.push(t);
    }
    let end = JobEnd::new(a.job, a.end_time, a.squeue.clone());
    let mut obtain = |min_valid: Duration| {
        if a.exchange {
            return renew_job_token(a, &broker_now()?, min_valid, end.ask(), &mut job_tokens);
        }
        broker_now()?.obtain(&ObtainOptions {
            min_valid,
            lock_timeout: Duration::from_secs(a.lock_timeout),
        })
    };
    let cfg = RenewerConfig {
        dir: a.dir.clone(),
        file_name: a.file.clone(),
        renew_at: a.renew_at,
        // With --squeue the end is checked in `alive`, where it can be asked again.
        stop_at: a
            .end_time
            .filter(|_| a.squeue.is_none())
            .and_then(|e| i64::try_from(e).ok())
            .map(|e| Timestamp::from_unix_seconds(e).plus_seconds(END_MARGIN_SECS)),
    };
    let job = a.job;
    let dir = a.dir.clone();
    let watch = a.watch_pid;
    let alive = || {
        dir.is_dir()
            && match watch {
                Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
                None => job_runs_here(job),
            }
            && !end.passed(END_MARGIN_SECS)
    };
    let ended = token_core::renew::run(&cfg, &mut obtain, &alive, &stop);
    if a.exchange && ended.as_ref().is_ok_and(|e| *e != Ended::AlreadyRunning) {
        revoke_job_tokens(job, &broker_now, &job_tokens);
        if let Err(e) = JobCache::new(&paths).remove(job, &a.file) {
            log::warn!(target: "qlam_auth", "job {job}: could not remove the job's cache entry ({e})");
        }
    }
    match ended? {
        Ended::AlreadyRunning => {
            log::info!(target: "qlam_auth", "a renewer already runs for {}", a.dir.join(&a.file).display())
        }
        Ended::JobEnded => {
            log::info!(target: "qlam_auth", "job {job} ended on this node; renewer done")
        }
        Ended::Stopped => log::info!(target: "qlam_auth", "stopped by a signal"),
    }
    Ok(())
}

/// The job's end time: what the plugin passed (`--end-time`), asked of slurmctld again
/// (`--squeue`) before each job token exchange and once it has passed, so that a time limit
/// extended with `scontrol update` is followed. A failed query keeps the last known end.
#[derive(Debug)]
struct JobEnd {
    job: u32,
    known: std::cell::Cell<Option<u64>>,
    squeue: Option<std::path::PathBuf>,
}

impl JobEnd {
    fn new(job: u32, known: Option<u64>, squeue: Option<std::path::PathBuf>) -> Self {
        JobEnd {
            job,
            known: std::cell::Cell::new(known),
            squeue,
        }
    }

    /// Asks slurmctld (if the renewer may) and returns the end as now known.
    fn ask(&self) -> Option<u64> {
        if let Some(q) = &self.squeue {
            // The renewer's own environment: the plugin gave it a clean one, as the job's user.
            let conf = std::env::var("SLURM_CONF").ok();
            match slurm_jobinfo::query_end_time(
                q,
                self.job,
                conf.as_deref(),
                slurm_jobinfo::QUERY_TIMEOUT,
            ) {
                Ok(e) => self.known.set(Some(e)),
                Err(e) => {
                    log::warn!(target: "qlam_auth", "job {}: {e}; keeping the end time known so far", self.job)
                }
            }
        }
        self.known.get()
    }

    /// True once the end plus `margin` seconds has passed and slurmctld does not tell a later
    /// end. Without `--squeue` the renewal loop's own `stop_at` decides instead.
    fn passed(&self, margin: i64) -> bool {
        if self.squeue.is_none() {
            return false;
        }
        let past = |e: Option<u64>| {
            e.and_then(|e| i64::try_from(e).ok())
                .is_some_and(|e| Timestamp::now().unix_seconds() > e + margin)
        };
        past(self.known.get()) && past(self.ask())
    }
}

/// A job token lives at most until the job's end plus this (the plugin's `EXCHANGE_MARGIN`).
const EXCHANGE_MARGIN_SECS: u64 = 150;

/// The longest the renewer spends revoking job tokens when the job has ended.
const REVOKE_WITHIN: Duration = Duration::from_secs(5);

/// With token exchange: the job token in the file while it is valid for `min_valid`, else a new
/// one (the user's fresh token exchanged, for no longer than the job still needs).
fn renew_job_token(
    a: &JobRenewerArgs,
    broker: &Broker,
    min_valid: Duration,
    end_time: Option<u64>,
    seen: &mut Vec<Secret>,
) -> token_core::Result<Obtained> {
    let now = Timestamp::now();
    let in_file = deliver::read_token_file(&a.dir.join(&a.file))
        .ok()
        .flatten();
    let meta = exchange::read_meta(&a.dir, &a.file);
    if let (Some(t), Some(m)) = (&in_file, &meta)
        && m.describes(t)
        && let Some(exp) = m.expires_at
        && now.seconds_until(Timestamp::from_unix_seconds(exp)) >= min_valid.as_secs() as i64
    {
        return Ok(Obtained {
            access_token: t.clone(),
            expires_at: Some(Timestamp::from_unix_seconds(exp)),
            refreshed: false,
            source: Source::Cache,
            elapsed: Duration::ZERO,
            lock_wait: Duration::ZERO,
            subject: None,
            client_id: broker.provider().client_id.clone(),
            capped_from: None,
            lifetime: m.lifetime.map(Duration::from_secs),
        });
    }
    let until_end = end_time.and_then(|e| i64::try_from(e).ok()).map(|e| {
        Duration::from_secs(
            e.saturating_sub(now.unix_seconds()).max(0) as u64 + EXCHANGE_MARGIN_SECS,
        )
    });
    let max = a.exchange_max_lifetime.map(Duration::from_secs);
    let req = exchange::Request {
        audience: a.exchange_audience.clone(),
        scope: a.exchange_scope.clone(),
        lifetime: match (until_end, max) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
    };
    let started = Instant::now();
    let opts = ObtainOptions {
        min_valid: Duration::from_secs(60),
        lock_timeout: Duration::from_secs(a.lock_timeout),
    };
    // Single flight across the job's nodes: the first renewer to come exchanges, the others
    // take its token from the job's cache in the user's home.
    let paths = QshPaths::resolve(&a.home, &|k| std::env::var(k).ok());
    let mut user = None;
    let (job, _, from) = JobCache::new(&paths).get_or_exchange(
        a.job,
        &a.file,
        &req,
        min_valid,
        Duration::from_secs(a.lock_timeout),
        &mut || {
            let (u, x) = exchange::job_token(broker, &opts, &req)?;
            let subject = u.subject.clone();
            user = Some(u);
            Ok((x, subject))
        },
    )?;
    exchange::write_meta(&a.dir, &a.file, &exchange::Meta::of(&job, now))?;
    seen.push(job.token.clone());
    log::info!(target: "qlam_auth", "job {}: job token {} ({from:?}; user token {}), audience {}, lifetime {} s", a.job, job.token.fingerprint(), user.as_ref().map_or("-".to_owned(), |u| u.access_token.fingerprint()), job.audience.as_deref().unwrap_or("-"), job.lifetime.map_or(0, |l| l.as_secs()));
    let (lock_wait, subject, client_id) = match user {
        Some(u) => (u.lock_wait, u.subject, u.client_id),
        None => (Duration::ZERO, None, broker.provider().client_id.clone()),
    };
    Ok(Obtained {
        access_token: job.token,
        expires_at: job.lifetime.map(|l| now.plus_seconds(l.as_secs() as i64)),
        refreshed: from == CacheFrom::Exchanged,
        source: match from {
            CacheFrom::Exchanged => Source::Renewed,
            CacheFrom::Cache => Source::RenewedByOther,
        },
        elapsed: started.elapsed(),
        lock_wait,
        subject,
        client_id,
        capped_from: None,
        lifetime: job.lifetime,
    })
}

/// Revokes the job tokens (RFC 7009) within [`REVOKE_WITHIN`]; best effort, logged.
fn revoke_job_tokens(job: u32, broker: &dyn Fn() -> token_core::Result<Broker>, tokens: &[Secret]) {
    if tokens.is_empty() {
        return;
    }
    let result = broker().and_then(|b| {
        let oauth = b
            .oauth()?
            .with_deadline(Some(Instant::now() + REVOKE_WITHIN));
        let mut n = 0;
        for t in tokens {
            if oauth.revoke(t, "access_token")? {
                n += 1;
            }
        }
        Ok(n)
    });
    let fps: Vec<String> = tokens.iter().map(Secret::fingerprint).collect();
    match result {
        Ok(n) => {
            log::info!(target: "qlam_auth", "job {job} ended: revoked {n} job token(s) {}", fps.join(","))
        }
        Err(e) => {
            log::warn!(target: "qlam_auth", "job {job} ended: could not revoke job token(s) {} ({e}); they expire at their end", fps.join(","))
        }
    }
}

/// True while some `slurmstepd` of `job` runs on this node (its command line is
/// `slurmstepd: [JOB.STEP]`). If /proc hides other users' processes (`hidepid`), nothing is
/// visible and the token directory alone decides.
pub fn job_runs_here(job: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    let prefix = format!("slurmstepd: [{job}.");
    let mut saw_any_stepd = false;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmd) = std::fs::read(Path::new("/proc").join(pid).join("cmdline")) else {
            continue;
        };
        if cmd.starts_with(prefix.as_bytes()) {
            return true;
        }
        saw_any_stepd |= cmd.starts_with(b"slurmstepd:");
    }
    // No slurmstepd visible at all: /proc may hide them (hidepid); trust the directory.
    !saw_any_stepd && !hidden_pids_visible()
}

/// True when /proc shows processes of other users (no `hidepid`): then seeing no slurmstepd
/// means there is none. PID 1 belongs to root.
fn hidden_pids_visible() -> bool {
    Path::new("/proc/1/cmdline").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `squeue` that prints `out` (the real one is exercised by the e2e suite).
    fn squeue(dir: &Path, out: &str) -> std::path::PathBuf {
        slurm_jobinfo::testing::fake_squeue(dir, &format!("echo {out}"))
    }

    #[test]
    fn an_extended_time_limit_keeps_the_renewer_alive() {
        let d = tempfile::tempdir().unwrap();
        let now = Timestamp::now().unix_seconds() as u64;
        let passed = now - 3600;
        // slurmctld now says the job ends in an hour (scontrol update TimeLimit=+...).
        let end = JobEnd::new(
            7,
            Some(passed),
            Some(squeue(d.path(), &(now + 3600).to_string())),
        );
        assert!(!end.passed(END_MARGIN_SECS), "the later end is followed");
        assert_eq!(end.known.get(), Some(now + 3600));
        assert_eq!(
            end.ask(),
            Some(now + 3600),
            "and used for the next job token"
        );
        // slurmctld confirms the end has passed: the renewer stops.
        let end = JobEnd::new(7, Some(passed), Some(squeue(d.path(), &passed.to_string())));
        assert!(end.passed(END_MARGIN_SECS));
        // squeue fails: the end known so far decides.
        let end = JobEnd::new(7, Some(passed), Some(squeue(d.path(), "Unknown")));
        assert!(end.passed(END_MARGIN_SECS));
        let end = JobEnd::new(7, Some(now + 600), Some(squeue(d.path(), "Unknown")));
        assert!(!end.passed(END_MARGIN_SECS));
        assert_eq!(end.ask(), Some(now + 600));
        // Without --squeue, the loop's stop_at decides (as before).
        assert!(!JobEnd::new(7, Some(passed), None).passed(END_MARGIN_SECS));
    }
}
