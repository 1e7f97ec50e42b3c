//! Keeping the job's token file valid while the job runs (`qlam-auth job-renewer`), and the
//! job's end, which bounds how long a token must stay valid.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use super::env::{self, CONFIG_ENV};
use super::{Backend, Host, Level, RenewerSpec, Requested, Uid, step_name};
use crate::args::Args;
use crate::backend::ExchangeRequest;

/// Environment variable naming the renewer's status file (beside the token file).
pub const ENV_STATUS_FILE: &str = "QLAM_TOKEN_STATUS_FILE";

/// Keeps the token file valid while the job runs: starts its renewer unless the site turned
/// renewal off or one already runs for this file on this node. A problem here is logged and
/// never fails the job: the token just delivered is valid for `min_valid`.
#[allow(clippy::too_many_arguments)] // internal; each is one distinct input
pub(super) fn renewal(
    host: &mut dyn Host,
    backend: &dyn Backend,
    args: &Args,
    dir: &Path,
    file_name: &str,
    req: &Requested,
    uid: Uid,
    exchange: Option<&ExchangeRequest>,
) {
    if !args.renew {
        let _ = host.unsetenv(ENV_STATUS_FILE);
        return;
    }
    let job = host.job_id().unwrap_or(0);
    let (Some(gid), Some(home)) = (host.job_gid(), host.user_home(uid)) else {
        host.log(
            Level::Error,
            &format!("job={job}: no renewal of the token file: Slurm did not provide the gid or the home directory"),
        );
        return;
    };
    let config_env = CONFIG_ENV
        .iter()
        .filter_map(|s| {
            env::get(&*host, *s)
                .filter(|v| !v.is_empty())
                .map(|v| (s.name.to_owned(), v))
        })
        .collect();
    let spec = RenewerSpec {
        job,
        uid,
        gid,
        home,
        dir: dir.to_path_buf(),
        file_name: file_name.to_owned(),
        context: req.context.clone(),
        config_env,
        end_time: job_end(&*host, args),
        // Each renewal asks for the site's maximum, shortened to what is left of the job.
        exchange: exchange.map(|ex| ExchangeRequest {
            lifetime: args.exchange.max_lifetime,
            ..ex.clone()
        }),
    };
    let status = crate::backend::status_file(dir, file_name);
    if let Some(p) = status.to_str() {
        let _ = host.setenv(ENV_STATUS_FILE, p);
    }
    match backend.start_renewer(&spec, args) {
        Ok(true) => host.log(
            Level::Verbose,
            &format!("job={job} step={} renewer started for {file_name}", step_name(host.step_id())),
        ),
        Ok(false) => {}
        Err(msg) => host.log(
            Level::Error,
            &format!(
                "job={job}: could not start the token renewer ({msg}); the job's token will not                  be renewed while it runs (check plugstack renewer=)"
            ),
        ),
    }
}

/// Margin kept beyond the job's end when `min_valid` is shortened to the job's remaining time.
pub const END_TIME_MARGIN: Duration = Duration::from_secs(120);

/// A job that ends before `min_valid` runs out needs the token only until its end: if Slurm tells
/// the end ([`job_end`]), ask for validity until then plus a margin, so
/// that a stored token that outlives the job is used without any call to the identity provider.
pub fn needed_validity(host: &dyn Host, args: &Args) -> Args {
    let mut args = args.clone();
    let end = job_end(host, &args);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Some(end) = end {
        let until_end = Duration::from_secs(end.saturating_sub(now)) + END_TIME_MARGIN;
        args.min_valid = args.min_valid.min(until_end);
    }
    args
}

/// The job's end time (Unix seconds), for [`needed_validity`], the renewer and the job token's
/// lifetime. With token exchange, where it bounds how long a job token lives, slurmctld's answer
/// (`squeue=`, see [`slurm_jobinfo`]) comes first: the job's `SLURM_JOB_END_TIME` is set by Slurm
/// 23.02 and later, but on 22.05 only if the user set it, and a value a user can choose would move
/// their job token's lifetime within the site's `exchange_max_lifetime`. Without exchange the
/// end only shortens `min_valid` (an optimisation), so the variable alone is used and no step
/// start costs a query to slurmctld (about 12 ms here, `docs/performance.md` §1b).
pub fn job_end(host: &dyn Host, args: &Args) -> Option<u64> {
    let from_slurm = (args.exchange.mode != token_core::exchange::Mode::Off)
        .then(|| args.squeue_path())
        .flatten()
        .and_then(|p| host.job_end_from_slurm(&p));
    from_slurm.or_else(|| {
        env::get(host, env::JOB_END_TIME)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|e| *e > 0)
    })
}
