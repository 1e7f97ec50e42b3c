//! sbatch, salloc and srun (allocator and local context), as the submitting user: is there a
//! usable login (offline)? A job submitted from inside a job does not inherit its token.
#![forbid(unsafe_code)]

use std::path::Path;

use super::env;
use super::exchange::exchange_request;
use super::option::{job_request, parse_args};
use super::{Backend, Host, Level, Request, State, Verdict};

/// The variables through which a job holds its token.
pub const TOKEN_VARS: [&str; 3] = ["QLAM_ACCESS_TOKEN", "QLAM_TOKEN_FILE", "BEARER_TOKEN_FILE"];

/// Allocator context inside a job that got a token (a job that runs `sbatch` or `salloc`):
/// slurmctld stores the submitted environment, so the parent job's token and token-file
/// variables must not travel into the new job. Recognised by `QLAM_TOKEN_FILE` pointing into
/// `token_dir`; a user's own variables are left alone. The new job gets its own token if it
/// asks for one.
pub(super) fn scrub_inherited_token(host: &mut dyn Host, argv: &[String]) {
    let args = parse_args(host, argv, Level::Debug);
    let Some(file) = env::get(&*host, env::PARENT_TOKEN_FILE) else {
        return;
    };
    if !Path::new(&file).starts_with(&args.token_dir) {
        return;
    }
    for name in TOKEN_VARS {
        let ours = match name {
            "BEARER_TOKEN_FILE" => {
                env::get(&*host, env::submitter(name)).as_deref() == Some(file.as_str())
            }
            _ => env::get(&*host, env::submitter(name)).is_some(),
        };
        if ours {
            host.remove_process_env(name);
        }
    }
    host.log(
        Level::Debug,
        "not passing the parent job's token variables to the new job",
    );
}

/// Allocator and local context, as the submitting user: is there a usable login? Never touches
/// the environment (it is stored with the job).
pub(super) fn submit_check(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &State,
    argv: &[String],
) -> Verdict {
    // Argument problems are the admins' to fix, and they see them in slurmd's log.
    let args = parse_args(host, argv, Level::Debug);
    let (req, auto) = match job_request(host, state, &args) {
        None => return Verdict::Continue,
        Some((Ok(r), auto)) => (r, auto),
        Some((Err(msg), _)) => {
            host.log(Level::Error, &msg);
            return Verdict::Fail;
        }
    };
    if let Some(msg) = &args.misconfigured {
        if auto {
            host.log(Level::Verbose, &format!("no automatic token: {msg}"));
            return Verdict::Continue;
        }
        host.log(Level::Error, msg);
        return Verdict::Fail;
    }
    // A site service account: no user login is involved.
    if let Some(account) = args.site_account(req.context.as_deref()) {
        return super::site::submit_check(&*host, account);
    }
    let uid = host.process_uid();
    let Some(home) = host.user_home(uid) else {
        host.log(
            Level::Error,
            &format!("cannot find the home directory of uid {uid} in the password database"),
        );
        return Verdict::Fail;
    };
    if let Err(msg) = check_config_env(&*host) {
        host.log(Level::Error, &msg);
        return Verdict::Fail;
    }
    // A job token beyond the site's policy is refused here, before the job exists.
    if let Err(msg) = exchange_request(&*host, &args, None) {
        host.log(Level::Error, &format!("this job cannot get a token: {msg}"));
        return Verdict::Fail;
    }
    let job_env = |name: &str| env::job_var(&*host, name);
    let request = Request {
        home: &home,
        env: &job_env,
        context: req.context.as_deref(),
        args: &args,
    };
    match backend.check_login(&request) {
        Ok(summary) => {
            host.log(Level::Verbose, &format!("login ok: {summary}"));
            Verdict::Continue
        }
        // A job that did not ask is never refused: it runs without a token.
        Err(msg) if auto => {
            host.log(
                Level::Verbose,
                &format!("this job gets no automatic token: {msg}"),
            );
            Verdict::Continue
        }
        Err(msg) => {
            host.log(Level::Error, &format!("this job cannot get a token: {msg}"));
            Verdict::Fail
        }
    }
}

/// A relative `QSH_CONFIG_DIR` / `QSH_CONFIG` would be resolved against a different directory on
/// the compute node than at submission: refuse it with the fix, at submission already.
pub(super) fn check_config_env(host: &dyn Host) -> Result<(), String> {
    for setting in env::CONFIG_ENV {
        let name = setting.name;
        if let Some(v) = env::get(host, setting).filter(|v| !v.is_empty())
            && !Path::new(&v).is_absolute()
        {
            return Err(format!(
                "{name}={v} is a relative path, which a job cannot use: \
                 export {name}=\"$(realpath {v})\" and submit again"
            ));
        }
    }
    Ok(())
}
