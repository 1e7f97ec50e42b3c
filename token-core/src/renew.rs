//! Keeps a delivered token file valid while a job runs: the renewal loop behind
//! `qlam-auth job-renewer`, which the SPANK plugin starts once per job, node and token file.
//!
//! * One renewer per token file: it holds an exclusive lock on `.<file>.renewer.lock` in the
//!   job directory for its whole life; a second one started beside it leaves at once.
//! * It renews ahead of expiry, once a fraction (`renew_at`, default one half, as HTCondor's
//!   credmon) of the token's lifetime has passed, through the same single-flight broker as
//!   everything else: K jobs of one user cost what one costs, because the first renewer to wake
//!   refreshes and the others find a token that is fresh enough in the store.
//! * The new token replaces the file atomically (temp file + rename at the same path), so a
//!   reader sees the old token or the new one, never a partial or empty file.
//! * It never fails the job: when renewal fails it keeps the last token, retries with backoff
//!   (10 s doubling to 5 min) and says why in the status file beside the token
//!   ([`status_file_name`]).
//!
//! Nothing here knows Slurm: whether the job still runs is the caller's `alive` closure.

use crate::broker::{Obtained, Source};
use crate::fsutil::{self, Policy};

use crate::time::Timestamp;
use crate::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Default of `renew_at`: renew once half the token's lifetime has passed.
pub const DEFAULT_RENEW_AT: f64 = 0.5;
/// `renew_at` is kept within these bounds: earlier than half costs more IdP requests for nothing
/// (HTCondor's credmon renews at half too); later than nine tenths leaves too little time for
/// retries before the token in the file expires.
pub const RENEW_AT_RANGE: (f64, f64) = (0.5, 0.9);
/// First retry after a failed renewal; doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Longest pause between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Shortest pause between two renewals (no busy loop, whatever the IdP issues).
pub const MIN_PAUSE: Duration = Duration::from_secs(5);
/// How often the renewer checks that the job still runs.
pub const POLL: Duration = Duration::from_secs(1);
/// How often a plain [`AtomicBool`] stop flag is looked at while waiting. `qlam-auth
/// job-renewer` does not poll: its [`Stop`] wakes on the signal itself.
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// How the loop learns that it must end, and how it waits without missing that. The plugin
/// waits for the renewers to end before it removes a job's directory, and the node is not free
/// before that: a stop must be seen at once, not at the next [`POLL`].
pub trait Stop {
    /// True once a stop was requested.
    fn requested(&self) -> bool;
    /// Waits up to `d`; may return early, and should when a stop is requested.
    fn nap(&self, d: Duration);
}

/// A flag set from elsewhere (tests, embedders): looked at every [`STOP_POLL`].
impl Stop for AtomicBool {
    fn requested(&self) -> bool {
        self.load(Ordering::SeqCst)
    }
    fn nap(&self, d: Duration) {
        std::thread::sleep(d.min(STOP_POLL));
    }
}

/// The status file beside a token file: `<file>.status`.
pub fn status_file_name(token_file: &str) -> String {
    format!("{token_file}.status")
}

/// The renewer's lock file beside a token file.
pub fn lock_file_name(token_file: &str) -> String {
    format!(".{token_file}.renewer.lock")
}

/// What the renewer needs to know.
#[derive(Debug, Clone)]
pub struct RenewerConfig {
    /// The job's private token directory.
    pub dir: PathBuf,
    /// The token file's name in it.
    pub file_name: String,
    /// Renew once this fraction of the token's lifetime has passed (clamped to
    /// [`RENEW_AT_RANGE`]).
    pub renew_at: f64,
    /// Stop by then at the latest (the job's end time plus a margin), if known.
    pub stop_at: Option<Timestamp>,
}

impl RenewerConfig {
    fn renew_at(&self) -> f64 {
        if self.renew_at.is_finite() {
            self.renew_at.clamp(RENEW_AT_RANGE.0, RENEW_AT_RANGE.1)
        } else {
            DEFAULT_RENEW_AT
        }
    }
}

/// The state of renewal, as the status file shows it (JSON, documented in docs/user.md).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    /// `ok`: the file holds a token renewed on schedule. `retrying`: the last renewal failed; the
    /// file keeps the last token until it expires, and renewal is retried. `stopped`: the
    /// renewer ended (the job ended on this node).
    pub state: &'static str,
    /// When the token in the file expires (ISO 8601), if known.
    pub token_expires_at: Option<String>,
    /// When the token file was last replaced by the renewer.
    pub renewed_at: Option<String>,
    /// When the renewer looks again.
    pub next_check_at: Option<String>,
    /// Why the last renewal failed (never a token), with what to do about it.
    pub last_error: Option<String>,
    /// Failed renewals in a row.
    pub failures: u32,
    /// The renewer's process id.
    pub pid: u32,
    /// When this status was written.
    pub updated_at: String,
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Another renewer holds the lock for this token file.
    AlreadyRunning,
    /// The job no longer runs here, or its end time has passed.
    JobEnded,
    /// A stop was requested (SIGTERM).
    Stopped,
}

/// When to look again after `got`: at `renew_at` of its lifetime, at least [`MIN_PAUSE`] from
/// `now`. A token without a known expiry is looked at again in an hour.
pub fn next_check(got: &Obtained, renew_at: f64, now: Timestamp) -> Duration {
    let (Some(exp), Some(life)) = (got.expires_at, got.lifetime) else {
        return Duration::from_secs(3600);
    };
    let left = now.seconds_until(exp).max(0) as f64;
    let life = life.as_secs_f64();
    // Seconds until `renew_at` of the lifetime has passed: left - (1 - renew_at) * life.
    let until = left - (1.0 - renew_at) * life;
    Duration::from_secs_f64(until.max(0.0)).max(MIN_PAUSE)
}

/// The validity to ask of the broker at a scheduled renewal: what is left of a lifetime once
/// `renew_at` of it has passed (one second less, so a token renewed exactly on schedule counts as
/// due). Without a known lifetime, anything still valid.
pub fn wanted_validity(lifetime: Option<Duration>, renew_at: f64) -> Duration {
    lifetime.map_or(Duration::ZERO, |l| {
        l.mul_f64(1.0 - renew_at)
            .saturating_sub(Duration::from_secs(1))
    })
}

/// The pause after `failures` failed renewals in a row: 10 s, 20 s, 40 s, ... at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(MAX_RETRY)
}

/// Runs the renewal loop until the job ends, `stop` is set, or another renewer is found.
///
/// `obtain(min_valid)` asks the broker for a token valid that long (a fresh broker each time, so
/// configuration changes and a new login are picked up). `alive()` says whether the job still
/// runs on this node. Errors are returned only when the job directory cannot be used at all.
pub fn run(
    cfg: &RenewerConfig,
    obtain: &mut dyn FnMut(Duration) -> Result<Obtained>,
    alive: &dyn Fn() -> bool,
    stop: &dyn Stop,
) -> Result<Ended> {
    let dir = fsutil::open_dir(&cfg.dir, Policy::PRIVATE)?
        .ok_or_else(|| Error::store(&cfg.dir, "the job token directory does not exist"))?;
    let lock = match crate::lock::acquire(
        fsutil::fd(&dir),
        &cfg.dir,
        &lock_file_name(&cfg.file_name),
        Duration::ZERO,
        &mut |_| {},
        &mut || false,
    ) {
        Ok(l) => l,
        Err(Error::LockTimeout { .. }) => return Ok(Ended::AlreadyRunning),
        Err(e) => return Err(e),
    };
    let renew_at = cfg.renew_at();
    let mut lifetime: Option<Duration> = None;
    let mut failures = 0u32;
    let mut status = Status {
        state: "ok",
        token_expires_at: None,
        renewed_at: None,
        next_check_at: None,
        last_error: None,
        failures: 0,
        pid: std::process::id(),
        updated_at: String::new(),
    };
    let mut in_file = crate::deliver::read_token_file(&cfg.dir.join(&cfg.file_name))
        .ok()
        .flatten();
    let ended = loop {
        let now = Timestamp::now();
        let pause = match obtain(wanted_validity(lifetime, renew_at)) {
            Ok(got) => {
                lifetime = got.lifetime.or(lifetime);
                if in_file.as_ref() != Some(&got.access_token) {
                    match crate::deliver::write_token_file(
                        &cfg.dir,
                        &cfg.file_name,
                        &got.access_token,
                    ) {
                        Ok(_) => {
                            log::info!(target: "qlam_auth", "renewed the job's token file {} (token {}, source {:?})", cfg.dir.join(&cfg.file_name).display(), got.access_token.fingerprint(), got.source);
                            in_file = Some(got.access_token.clone());
                            status.renewed_at = Some(now.to_isoformat());
                        }
                        Err(e) => {
                            // The directory is gone or unusable: the job has ended here.
                            log::info!(target: "qlam_auth", "cannot write the token file any more ({e}); stopping");
                            break Ended::JobEnded;
                        }
                    }
                }
                status.token_expires_at = got.expires_at.map(|t| t.to_isoformat());
                if got.source == Source::Stale {
                    failures += 1;
                    status.state = "retrying";
                    status.last_error = Some(
                        "the identity provider could not be reached; the file keeps a token \
                         that is still valid, and renewal is retried"
                            .to_owned(),
                    );
                    backoff(failures).min(next_check(&got, renew_at, now))
                } else {
                    failures = 0;
                    status.state = "ok";
                    status.last_error = None;
                    next_check(&got, renew_at, now)
                }
            }
            Err(e) => {
                failures += 1;
                status.state = "retrying";
                status.last_error = Some(e.to_string());
                log::warn!(target: "qlam_auth", "renewing the job's token failed ({e}); keeping the last token, retrying in {} s", backoff(failures).as_secs());
                backoff(failures)
            }
        };
        status.failures = failures;
        status.next_check_at = Some(now.plus_seconds(pause.as_secs() as i64).to_isoformat());
        if write_status(&dir, cfg, &mut status).is_err() {
            break Ended::JobEnded;
        }
        if let Some(end) = wait(pause, cfg.stop_at, alive, stop) {
            break end;
        }
    };
    if ended != Ended::AlreadyRunning {
        status.state = "stopped";
        status.next_check_at = None;
        let _ = write_status(&dir, cfg, &mut status);
    }
    drop(lock);
    Ok(ended)
}

/// Waits `pause`, looking at the job every [`POLL`] and napping in between through `stop` (which
/// returns early on a stop request); `Some` if the renewer must end meanwhile.
fn wait(
    pause: Duration,
    stop_at: Option<Timestamp>,
    alive: &dyn Fn() -> bool,
    stop: &dyn Stop,
) -> Option<Ended> {
    let until = Instant::now() + pause;
    let mut next_check = Instant::now();
    loop {
        if stop.requested() {
            return Some(Ended::Stopped);
        }
        let now = Instant::now();
        if now >= next_check {
            if !alive() || stop_at.is_some_and(|t| Timestamp::now().seconds_until(t) < 0) {
                return Some(Ended::JobEnded);
            }
            next_check = now + POLL;
        }
        let left = until.saturating_duration_since(now);
        if left.is_zero() {
            return None;
        }
        stop.nap(left.min(next_check.saturating_duration_since(now)));
    }
}

fn write_status(
    dir: &std::os::fd::OwnedFd,
    cfg: &RenewerConfig,
    status: &mut Status,
) -> Result<()> {
    status.updated_at = Timestamp::now().to_isoformat();
    let mut bytes = serde_json::to_vec_pretty(status)
        .map_err(|e| Error::store(&cfg.dir, format!("cannot encode the status: {e}")))?;
    bytes.push(b'\n');
    fsutil::atomic_write_at(
        fsutil::fd(dir),
        &cfg.dir,
        &status_file_name(&cfg.file_name),
        &bytes,
        0o600,
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::path::Path;

    /// Reads a status file; `None` if absent or unreadable.
    fn read_status(dir: &Path, token_file: &str) -> Option<serde_json::Value> {
        let fd = fsutil::open_dir(dir, Policy::PRIVATE).ok()??;
        let bytes = fsutil::read_file_at(
            fsutil::fd(&fd),
            dir,
            &status_file_name(token_file),
            Policy::PRIVATE,
            64 * 1024,
        )
        .ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Is `token` what the file holds?
    fn file_holds(dir: &Path, file_name: &str, token: &Secret) -> bool {
        crate::deliver::read_token_file(&dir.join(file_name))
            .ok()
            .flatten()
            .is_some_and(|t| &t == token)
    }

    fn got(expires_in: i64, lifetime: u64) -> (Obtained, Timestamp) {
        let now = Timestamp::now();
        (
            Obtained {
                access_token: Secret::new("t"),
                expires_at: Some(now.plus_seconds(expires_in)),
                refreshed: false,
                source: Source::Cache,
                elapsed: Duration::ZERO,
                lock_wait: Duration::ZERO,
                subject: None,
                client_id: "c".into(),
                capped_from: None,
                lifetime: Some(Duration::from_secs(lifetime)),
            },
            now,
        )
    }

    /// A private job directory (0700, in a temporary directory that lives as long as the
    /// guard) whose token file holds `token`, and a renewer's settings for it.
    fn job_with_token(token: &str) -> (tempfile::TempDir, PathBuf, RenewerConfig) {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("job");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        crate::deliver::write_token_file(&dir, "token", &Secret::new(token)).unwrap();
        let cfg = RenewerConfig {
            dir: dir.clone(),
            file_name: "token".into(),
            renew_at: 0.5,
            stop_at: None,
        };
        (tmp, dir, cfg)
    }

    #[test]
    fn renews_at_half_the_lifetime() {
        // A fresh 60 s token: look again in 30 s.
        let (g, now) = got(60, 60);
        assert_eq!(next_check(&g, 0.5, now).as_secs(), 30);
        // 20 s left of 60: already past half, but never a busy loop.
        let (g, now) = got(20, 60);
        assert_eq!(next_check(&g, 0.5, now), MIN_PAUSE);
        // A day-long token: in 12 h.
        let (g, now) = got(86_400, 86_400);
        assert_eq!(next_check(&g, 0.5, now).as_secs(), 43_200);
    }

    #[test]
    fn asks_for_what_is_left_after_renew_at() {
        let w = wanted_validity(Some(Duration::from_secs(60)), 0.5);
        assert_eq!(w.as_secs(), 29);
        // Always less than a lifetime: the broker keeps it as asked (it caps only requests for a
        // whole lifetime or more).
        let life = Duration::from_secs(300);
        assert!(wanted_validity(Some(life), 0.5) < life);
        assert_eq!(wanted_validity(None, 0.5), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        assert_eq!(backoff(1).as_secs(), 10);
        assert_eq!(backoff(2).as_secs(), 20);
        assert_eq!(backoff(6).as_secs(), 300);
        assert_eq!(backoff(1000).as_secs(), 300);
    }

    #[test]
    fn renew_at_is_clamped() {
        let cfg = |r| RenewerConfig {
            dir: PathBuf::new(),
            file_name: "token".into(),
            renew_at: r,
            stop_at: None,
        };
        assert_eq!(cfg(0.1).renew_at(), 0.5);
        assert_eq!(cfg(0.99).renew_at(), 0.9);
        assert_eq!(cfg(f64::NAN).renew_at(), DEFAULT_RENEW_AT);
    }

    #[test]
    fn one_renewer_per_token_file_and_the_file_follows_the_store() {
        let (_tmp, dir, cfg) = job_with_token("old");
        let stop = AtomicBool::new(false);
        let mut calls = 0;
        let mut obtain = |_: Duration| {
            calls += 1;
            let (mut g, _) = got(3600, 3600);
            g.access_token = Secret::new("new");
            Ok(g)
        };
        // The second run (while the first holds the lock) leaves at once; simulate with a
        // held lock.
        let fd = fsutil::open_dir(&dir, Policy::PRIVATE).unwrap().unwrap();
        let held = crate::lock::acquire(
            fsutil::fd(&fd),
            &dir,
            &lock_file_name("token"),
            Duration::ZERO,
            &mut |_| {},
            &mut || false,
        )
        .unwrap();
        assert_eq!(
            run(&cfg, &mut obtain, &|| true, &stop).unwrap(),
            Ended::AlreadyRunning
        );
        drop(held);
        // Alive once, then the job ends: one renewal, the file replaced, status "stopped".
        let alive_calls = std::cell::Cell::new(0);
        let alive = || {
            alive_calls.set(alive_calls.get() + 1);
            alive_calls.get() < 2
        };
        assert_eq!(
            run(&cfg, &mut obtain, &alive, &stop).unwrap(),
            Ended::JobEnded
        );
        assert!(file_holds(&dir, "token", &Secret::new("new")));
        let st = read_status(&dir, "token").unwrap();
        assert_eq!(st["state"], "stopped");
        assert!(st["renewed_at"].is_string());
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_failed_renewal_keeps_the_last_token_and_says_why() {
        let (_tmp, dir, cfg) = job_with_token("last");
        let stop = AtomicBool::new(false);
        let status_seen = std::cell::RefCell::new(None);
        let mut obtain = |_: Duration| -> Result<Obtained> {
            Err(Error::LoginExpired {
                context: "default".into(),
                reason: "the identity provider refused the refresh token (invalid_grant)".into(),
            })
        };
        let alive = || {
            // Called after the first status was written.
            *status_seen.borrow_mut() = read_status(&dir, "token");
            false
        };
        assert_eq!(
            run(&cfg, &mut obtain, &alive, &stop).unwrap(),
            Ended::JobEnded
        );
        let st = status_seen.borrow().clone().unwrap();
        assert_eq!(st["state"], "retrying");
        assert_eq!(st["failures"], 1);
        assert!(
            st["last_error"]
                .as_str()
                .unwrap()
                .contains("qlam-auth login"),
            "{st}"
        );
        assert!(file_holds(&dir, "token", &Secret::new("last")));
    }
}
