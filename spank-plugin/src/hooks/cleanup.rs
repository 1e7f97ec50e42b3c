//! The end of a step and of a job: `task_init` reports a failure remembered by an earlier hook
//! (it fails the job, never the node), `exit` and `job_epilog` remove the job's token directory,
//! and the batch step's `exit` revokes the job tokens it delivered.
#![forbid(unsafe_code)]

use std::time::Duration;

use super::option::{job_request, parse_args};
use super::{BATCH_STEP, Backend, Context, Host, Level, Secret, State, Verdict, step_name};
use crate::args::Args;

/// `slurm_spank_task_init` (remote, as the user, once per task): report a remembered failure,
/// which fails the job and leaves the node up.
pub fn task_init(host: &mut dyn Host, state: &State) -> Verdict {
    if host.context() != Context::Remote {
        return Verdict::Continue;
    }
    match &state.failure {
        Some(msg) => {
            host.log(Level::Error, msg);
            Verdict::Fail
        }
        None => Verdict::Continue,
    }
}

/// `slurm_spank_job_epilog` (slurmd, root, no `init` before it): remove the job's token
/// directory. Runs for every job, whether it asked for a token or not, so srun-only jobs and
/// `--export=NONE` jobs are cleaned too. Never fails the hook.
pub fn job_epilog(host: &mut dyn Host, backend: &dyn Backend, argv: &[String]) -> Verdict {
    let args = parse_args(host, argv, Level::Error);
    match host.job_id() {
        Some(job) => remove(host, backend, &args, job),
        None => host.log(
            Level::Error,
            "job_epilog: Slurm did not provide the job id; nothing cleaned",
        ),
    }
    Verdict::Continue
}

/// `slurm_spank_exit`: the batch step's slurmstepd removes the job's token directory when the
/// batch script has ended (the epilog does it on every node anyway). Never fails the hook.
pub fn exit(host: &mut dyn Host, backend: &dyn Backend, state: &State, argv: &[String]) -> Verdict {
    if host.context() != Context::Remote {
        return Verdict::Continue;
    }
    let args = parse_args(host, argv, Level::Debug);
    let Some((Ok(req), _)) = job_request(host, state, &args) else {
        return Verdict::Continue;
    };
    // What the renewer says goes into slurmd's log (it has no log of its own there).
    if let (Some(job), Some(dir)) = (host.job_id(), state.job_dir.as_ref())
        && let Some((st, err)) = backend.renewal_status(dir, &req.file_name())
        && st != "ok"
        && st != "stopped"
    {
        host.log(
            Level::Error,
            &format!(
                "job={job} step={}: renewal of the token file is failing: {}",
                step_name(host.step_id()),
                err.as_deref().unwrap_or("no reason recorded")
            ),
        );
    }
    if host.step_id() != Some(BATCH_STEP) {
        return Verdict::Continue;
    }
    if let Some(job) = host.job_id() {
        remove(host, backend, &args, job);
        revoke(host, backend, state, &args, job);
    }
    Verdict::Continue
}

/// The longest the batch step's `exit` spends revoking job tokens.
pub const REVOKE_WITHIN: Duration = Duration::from_secs(5);

/// Revokes the job tokens this process delivered (RFC 7009): best effort, bounded by
/// [`REVOKE_WITHIN`] (and `timeout=`), logged, never failing the hook.
fn revoke(host: &dyn Host, backend: &dyn Backend, state: &State, args: &Args, job: u32) {
    let jt = &state.job_tokens;
    if jt.tokens.is_empty() {
        return;
    }
    let fps: Vec<String> = jt.tokens.iter().map(Secret::fingerprint).collect();
    match backend.revoke(jt, args, REVOKE_WITHIN.min(args.timeout)) {
        Ok(0) => host.log(
            Level::Info,
            &format!("job={job}: the identity provider offers no revocation; job token(s) {} expire at their end", fps.join(",")),
        ),
        Ok(n) => host.log(
            Level::Info,
            &format!("job={job} revoked {n} job token(s): {}", fps.join(",")),
        ),
        Err(msg) => host.log(
            Level::Error,
            &format!("job={job}: could not revoke job token(s) {} ({msg}); they expire at their end", fps.join(",")),
        ),
    }
}

fn remove(host: &dyn Host, backend: &dyn Backend, args: &Args, job: u32) {
    match backend.remove_job_dir(&args.token_dir, &job.to_string()) {
        Ok(true) => host.log(Level::Info, &format!("job={job} token directory removed")),
        Ok(false) => {}
        Err(msg) => host.log(
            Level::Error,
            &format!("job={job} could not remove the token directory: {msg}"),
        ),
    }
}
