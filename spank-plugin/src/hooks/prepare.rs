//! slurmstepd's `init_post_opt`: the submission check in sbatch/salloc/srun, and in
//! slurmstepd (as root) the job's token directory and a site account's token. Never fails a
//! remote hook: a problem is remembered for `task_init`.
#![forbid(unsafe_code)]

use super::option::{job_request, parse_args};
use super::submit::{scrub_inherited_token, submit_check};
use super::{Backend, Context, Host, Level, State, Verdict, audited};

/// `slurm_spank_init_post_opt`: the submission check (allocator, local) or the per-job
/// directory (remote).
pub fn init_post_opt(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    argv: &[String],
) -> Verdict {
    match host.context() {
        Context::Allocator => {
            scrub_inherited_token(host, argv);
            submit_check(host, backend, state, argv)
        }
        Context::Local => submit_check(host, backend, state, argv),
        Context::Remote => {
            prepare_remote(host, backend, state, argv);
            Verdict::Continue
        }
        _ => Verdict::Continue,
    }
}

/// Remote context, as root: make `<token_dir>/<jobid>` for the job's user. Never fails the hook.
pub(super) fn prepare_remote(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    argv: &[String],
) {
    let args = parse_args(host, argv, Level::Error);
    let (req, auto) = match job_request(host, state, &args) {
        None => return,
        Some((Ok(r), auto)) => (r, auto),
        Some((Err(msg), _)) => return state.remember(host, msg),
    };
    if let Some(msg) = args.misconfigured.clone() {
        if auto {
            return;
        }
        return state.remember(host, msg);
    }
    let (Some(job), Some(uid), Some(gid)) = (host.job_id(), host.job_uid(), host.job_gid()) else {
        return state.remember(
            host,
            "Slurm did not provide the job id, uid and gid; please tell your site admins"
                .to_owned(),
        );
    };
    match backend.prepare_job_dir(&args.token_dir, &job.to_string(), uid, gid) {
        Ok(dir) => {
            host.log(
                Level::Debug,
                &format!(
                    "job={job} uid={uid} token directory {} ready",
                    dir.display()
                ),
            );
            state.job_dir = Some(dir);
            if let Some(account) = args.site_account(req.context.as_deref()) {
                super::site::fetch(&*host, backend, state, &args, account);
            }
        }
        Err(e) if auto => {
            let line = audited(
                &*host,
                &e,
                format!(
                    "job={job}: no automatic token: could not prepare the job's token directory: {e}"
                ),
            );
            host.log(Level::Error, &line);
        }
        Err(e) => {
            let msg = audited(
                &*host,
                &e,
                format!(
                    "could not prepare the job's token directory on this node: {e}; please tell your site admins"
                ),
            );
            state.remember(host, msg);
        }
    }
}
