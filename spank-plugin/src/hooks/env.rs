//! Which environment each setting the plugin reads comes from, chosen here, visibly.
//!
//! In slurmstepd two environments are within reach: the job's (`spank_getenv`, Slurm's
//! `S_JOB_ENV`: what the user submitted, plus Slurm's own variables) and slurmstepd's
//! (`std::env`: the daemon's, root's). A user controls the first and none of the second, and a
//! value of the daemon's must never be sent anywhere on a user's behalf. So the hooks never
//! read the daemon's environment: there is no such [`Env`] on purpose, and the hooks have no
//! other way to read a variable than [`get`] (through [`Host::getenv`]). The few settings only
//! the site may make from slurmd's environment are read in one place,
//! [`crate::backend::daemon_var`].
//!
//! | setting | [`Env`] | read by |
//! |---|---|---|
//! | [`QSH_CONFIG_DIR`], [`QSH_CONFIG`] | job | the user's config, at submission and in the job |
//! | `env:VAR` in the user's config (a `client_secret`, a `subject_token`) | job | token-core, through [`job_var`] |
//! | [`INJECT`] | job | automatic injection: the user's own default |
//! | [`WANT_AUDIENCE`], [`WANT_SCOPE`] | job | token exchange: what the user asks of the job token |
//! | [`OPTION`] | job | `--qlam-auth` with `--export=NONE` (slurmstepd only) |
//! | [`JOB_END_TIME`] | job | the job's end (set by Slurm 23.02+, and by any submitter), only when slurmctld cannot be asked (`squeue=`) |
//! | [`PARENT_TOKEN_FILE`] and the other token variables | submitter | a job's token not passed on to a job it submits |
//!
//! What the plugin writes into the job's environment is here too: [`export`].
#![forbid(unsafe_code)]

use std::path::Path;

use super::{
    Context, ENV_ACCESS_TOKEN, ENV_BEARER_TOKEN, ENV_BEARER_TOKEN_FILE, ENV_TOKEN_FILE, Host,
    Secret,
};
use crate::args::Args;

/// Where a setting is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// The job's environment: in slurmstepd `spank_getenv` (the submitted environment, never
    /// slurmstepd's own); in sbatch, salloc and srun this process's, which is the submitting
    /// user's (they run as the user, and it becomes the job's). Everything in it is the user's
    /// to choose.
    Job,
    /// sbatch's and salloc's own environment, before they copy it into the new job
    /// (`init_post_opt` in allocator context only; nothing elsewhere).
    Submitter,
}

/// A variable the plugin reads, and from which environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable's name.
    pub name: &'static str,
    /// Its environment.
    pub env: Env,
}

const fn job(name: &'static str) -> Setting {
    Setting {
        name,
        env: Env::Job,
    }
}

/// Moves the user's qsh configuration directory (as token-core reads it).
pub const QSH_CONFIG_DIR: Setting = job("QSH_CONFIG_DIR");
/// Moves the user's qsh configuration file (as token-core reads it).
pub const QSH_CONFIG: Setting = job("QSH_CONFIG");
/// The user's own default for automatic injection (`yes` or `no`), over the site's.
pub const INJECT: Setting = job("QLAM_AUTH_INJECT");
/// The audience a user asks of the job token (token exchange).
pub const WANT_AUDIENCE: Setting = job(super::ENV_WANT_AUDIENCE);
/// The scopes a user asks of the job token (space- or comma-separated).
pub const WANT_SCOPE: Setting = job(super::ENV_WANT_SCOPE);
/// `--qlam-auth` as it reaches slurmstepd when the job was submitted with `--export=NONE`.
pub const OPTION: Setting = job(crate::OPTION_ENV);
/// The job's end, Unix seconds (set by Slurm 23.02 and later; the submitter can set it too).
pub const JOB_END_TIME: Setting = job("SLURM_JOB_END_TIME");
/// The variables that move a user's qsh configuration (as token-core reads them).
pub const CONFIG_ENV: [Setting; 2] = [QSH_CONFIG_DIR, QSH_CONFIG];
/// A token file of the job that runs sbatch or salloc (never passed on to the new job).
pub const PARENT_TOKEN_FILE: Setting = submitter(super::ENV_TOKEN_FILE);

/// A variable of the submitter's own environment (see [`Env::Submitter`]).
pub const fn submitter(name: &'static str) -> Setting {
    Setting {
        name,
        env: Env::Submitter,
    }
}

/// The value of `setting`, from its environment; `None` if unset (or, for [`Env::Submitter`],
/// outside sbatch and salloc).
pub fn get(host: &dyn Host, setting: Setting) -> Option<String> {
    match setting.env {
        Env::Job => host.getenv(setting.name),
        Env::Submitter if host.context() == Context::Allocator => host.getenv(setting.name),
        Env::Submitter => None,
    }
}

/// A variable of the job's environment ([`Env::Job`]) by name, for token-core's lookups:
/// `QSH_CONFIG_DIR`, `QSH_CONFIG` and the `env:VAR` references of the user's config. Never the
/// daemon's.
pub fn job_var(host: &dyn Host, name: &str) -> Option<String> {
    host.getenv(name)
}

/// Puts the token file (and, unless `env_token=no`, the token) into the job's environment.
pub fn export(host: &mut dyn Host, args: &Args, path: &Path, token: &Secret) -> Result<(), String> {
    let path = path.to_str().ok_or_else(|| {
        format!(
            "the token file path {} is not UTF-8; set token_dir to a plain path",
            path.display()
        )
    })?;
    let set = |host: &mut dyn Host, k: &str, v: &str| {
        host.setenv(k, v)
            .map_err(|e| format!("could not set {k} in the job environment: {e}"))
    };
    set(host, ENV_TOKEN_FILE, path)?;
    set(host, ENV_BEARER_TOKEN_FILE, path)?;
    // A BEARER_TOKEN from the submission environment would shadow the file; a missing
    // variable is not an error.
    let _ = host.unsetenv(ENV_BEARER_TOKEN);
    if args.env_token {
        set(host, ENV_ACCESS_TOKEN, token.expose())?;
    } else {
        let _ = host.unsetenv(ENV_ACCESS_TOKEN);
    }
    Ok(())
}
