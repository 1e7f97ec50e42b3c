//! `qlam-auth job-renewer`: keeps a Slurm job's token file valid while the job runs on this node.
//!
//! The SPANK plugin starts it in `user_init`, detached and as the job's user (see
//! `spank-plugin/src/spawn.rs`). The loop itself is token-core's [`token_core::renew`]; this
//! module builds the broker as the plugin does and decides when the job has ended here:
//! * the job's token directory is gone (removed by the batch step's `exit` or by `job_epilog`),
//! * or no `slurmstepd` of the job is left on the node (all its steps ended),
//! * or the job's end time has passed (plus a margin),
//! * or SIGTERM, SIGINT or SIGHUP.

use crate::cli::JobRenewerArgs;
use crate::exit::{self, Failure};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use token_core::broker::{Broker, ObtainOptions};
use token_core::config::Config;
use token_core::http::HttpSettings;
use token_core::paths::QshPaths;
use token_core::renew::{Ended, RenewerConfig};
use token_core::time::Timestamp;

/// How long past the job's end time the renewer may still run (Slurm's own grace periods).
const END_MARGIN_SECS: i64 = 300;

/// Runs the renewer until the job ends on this node.
pub fn run(a: &JobRenewerArgs) -> Result<(), Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Failure::msg(format!("cannot handle signals: {e}"), exit::OTHER))?;
    }
    // The environment was set by the plugin from the job's: QSH_CONFIG_DIR / QSH_CONFIG.
    let env = |k: &str| std::env::var(k).ok();
    let paths = QshPaths::resolve(&a.home, &env);
    let http = HttpSettings {
        timeout: Duration::from_secs(a.timeout.saturating_sub(a.lock_timeout).max(1)),
        connect_timeout: Duration::from_secs(a.timeout.saturating_sub(a.lock_timeout).clamp(1, 5)),
        ca_bundle: a.ca_bundle.clone(),
        allowed_issuers: (!a.issuers.is_empty()).then(|| a.issuers.clone()),
    };
    let mut obtain = |min_valid: Duration| {
        // The site file is read again each time, as the plugin does in every hook.
        let site = match &a.site_file {
            Some(f) => token_core::site::Site::load(f)?,
            None => None,
        };
        let config = Config::load_with_site(&paths, site)?;
        let provider = config.provider_with_env(a.context.as_deref(), &env)?;
        let broker = Broker::new(&paths, provider, &http)?
            .with_deadline(Instant::now() + Duration::from_secs(a.timeout));
        broker.obtain(&ObtainOptions {
            min_valid,
            lock_timeout: Duration::from_secs(a.lock_timeout),
        })
    };
    let cfg = RenewerConfig {
        dir: a.dir.clone(),
        file_name: a.file.clone(),
        renew_at: a.renew_at,
        stop_at: a
            .end_time
            .and_then(|e| i64::try_from(e).ok())
            .map(|e| Timestamp::from_unix_seconds(e).plus_seconds(END_MARGIN_SECS)),
    };
    let job = a.job;
    let dir = a.dir.clone();
    let watch = a.watch_pid;
    let alive = move || {
        dir.is_dir()
            && match watch {
                Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
                None => job_runs_here(job),
            }
    };
    match token_core::renew::run(&cfg, &mut obtain, &alive, &stop)? {
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
