//! The plugin's policy: what each SPANK hook does, written against two small traits so that it
//! is unit-tested without Slurm ([`Host`]) and without an identity provider ([`Backend`]).
//!
//! One file per concern:
//! * this file: the [`Host`] trait, the [`State`] kept between hooks, what a hook returns;
//! * [`option`]: `--qlam-auth[=CONTEXT]`, automatic injection, the plugin arguments of a hook;
//! * [`mod@env`]: which environment each setting is read from (always the job's, never the
//!   daemon's), and what the plugin puts into the job's;
//! * [`submit`]: sbatch/salloc/srun, as the user: the offline login check, no token inherited;
//! * [`prepare`]: `init_post_opt` in each context; in slurmstepd (as root) the job's token
//!   directory and a site account's token;
//! * [`deliver`]: `user_init`, as the job's user: obtain, write and export the token;
//! * [`exchange`]: a narrow job token by token exchange;
//! * [`renewal`]: the renewer of the token file, and the job's end ([`job_end`]);
//! * [`cleanup`]: `task_init` (reports a remembered failure), `job_epilog`, `exit`;
//! * [`site`]: site service accounts: who may use one (group allowlist).
//!
//! The rules that shape it (measured on Slurm 22.05, see the project's notes):
//! * A failing hook in allocator context (sbatch/salloc/srun) stops the submission with our
//!   message: the user's login is checked there, offline.
//! * A failing remote `init_post_opt` or `user_init` drains the node while the job "completes".
//!   Those hooks never fail: they remember the failure in [`State`], and `task_init` (which fails
//!   only the job) reports it.
//! * The submitted environment is stored by slurmctld: a token is put into the environment only
//!   in remote context, never in allocator or local context.
//! * `job_epilog` runs in slurmd without `init`: it parses the arguments itself and only cleans up.
//! * A job gets a token when it asks (`--qlam-auth[=CONTEXT]`) or, with automatic injection
//!   (plugstack `inject=auto` or the site file; `QLAM_AUTH_INJECT` in the job's environment is
//!   the user's own default), when it did not say `--qlam-auth=no`. A job that did not ask is
//!   never refused or failed for a token problem: it runs without one (`job_request`).
//! * No allowed issuers (neither `issuers=` nor the site file's): no token at all, fail closed.
#![forbid(unsafe_code)]

use std::path::PathBuf;

pub use crate::backend::{
    Backend, BackendError, Delivery, Exchange, JobTokens, RenewerSpec, Request, Secret, Source,
};
pub use crate::users::{Gid, Uid};

pub mod cleanup;
pub mod deliver;
pub mod env;
pub mod exchange;
pub mod option;
pub mod prepare;
pub mod renewal;
pub mod site;
pub mod submit;

pub use cleanup::{REVOKE_WITHIN, exit, job_epilog, task_init};
pub use deliver::user_init;
pub use env::CONFIG_ENV;
pub use exchange::{EXCHANGE_MARGIN, exchange_request};
pub use option::{ENV_INJECT, OPT_OUT, Requested, option_callback, parse_option_value};
pub use prepare::init_post_opt;
pub use renewal::{END_TIME_MARGIN, ENV_STATUS_FILE, job_end, needed_validity};
pub use submit::TOKEN_VARS;

/// The step id Slurm gives the batch script (`SLURM_BATCH_SCRIPT` in slurm.h; `ffi` checks
/// at compile time that the two agree).
pub const BATCH_STEP: u32 = 0xffff_fffb;
/// The step id of the extern step (`SLURM_EXTERN_CONT`).
pub const EXTERN_STEP: u32 = 0xffff_fffc;

/// Environment variable naming the job's token file (qlam-auth's own name).
pub const ENV_TOKEN_FILE: &str = "QLAM_TOKEN_FILE";
/// WLCG bearer token discovery: the file holding the token.
pub const ENV_BEARER_TOKEN_FILE: &str = "BEARER_TOKEN_FILE";
/// WLCG bearer token discovery: the token itself. It takes precedence over the file, so a stale
/// value inherited from the submission environment is removed when a token is delivered.
pub const ENV_BEARER_TOKEN: &str = "BEARER_TOKEN";
/// The access token itself (unless the site sets `env_token=no`).
pub const ENV_ACCESS_TOKEN: &str = "QLAM_ACCESS_TOKEN";
/// Submission environment: the audience a user asks of the job token (token exchange).
pub const ENV_WANT_AUDIENCE: &str = "QLAM_AUTH_AUDIENCE";
/// Submission environment: the scopes a user asks of the job token (space- or comma-separated).
pub const ENV_WANT_SCOPE: &str = "QLAM_AUTH_SCOPE";

/// Where the plugin is running (`spank_context()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// srun.
    Local,
    /// slurmstepd.
    Remote,
    /// sbatch / salloc.
    Allocator,
    /// slurmd itself.
    Slurmd,
    /// job prolog / epilog in slurmd.
    JobScript,
    /// Slurm could not tell (`S_CTX_ERROR`), or a value this build does not know.
    Unknown,
}

/// How a message is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `slurm_error`.
    Error,
    /// `slurm_info`: slurmd's log; in allocator and local context the user's terminal.
    Info,
    /// `slurm_verbose` (`sbatch -v`).
    Verbose,
    /// `slurm_debug`.
    Debug,
}

/// What `--qlam-auth` said for this job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionState {
    /// The option was not given.
    NotGiven,
    /// `--qlam-auth` (value `None`) or `--qlam-auth=VALUE`.
    Given(Option<String>),
}

/// An error from the host (Slurm refused a call).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostError {
    /// A variable's name or value holds a NUL byte, which a C string cannot carry.
    Nul {
        /// `name` or `value`.
        what: &'static str,
    },
    /// Slurm answered with an error (`spank_err_t`).
    Slurm {
        /// The error number.
        code: i64,
        /// Slurm's text for it (`spank_strerror`).
        text: String,
    },
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Nul { what } => write!(f, "NUL in variable {what}"),
            HostError::Slurm { code, text } => write!(f, "{text} (spank error {code})"),
        }
    }
}

impl std::error::Error for HostError {}

/// What the policy needs from Slurm. [`crate::ffi::SpankHandle`] implements it over a `spank_t`;
/// the tests implement it with a fake.
pub trait Host {
    /// The context the plugin runs in.
    fn context(&self) -> Context;
    /// True in slurmstepd.
    fn is_remote(&self) -> bool;
    /// The job id, where Slurm provides it.
    fn job_id(&self) -> Option<u32>;
    /// The job's user, where Slurm provides it.
    fn job_uid(&self) -> Option<Uid>;
    /// The job's primary group, where Slurm provides it.
    fn job_gid(&self) -> Option<Gid>;
    /// The step id, where Slurm provides it.
    fn step_id(&self) -> Option<u32>;
    /// The real uid of this process (the submitting user in allocator and local context).
    fn process_uid(&self) -> Uid;
    /// The home directory of a user, from the password database (never `$HOME`).
    fn user_home(&self, uid: Uid) -> Option<PathBuf>;
    /// A variable of the job's environment in remote context, of this process's environment
    /// in allocator and local context.
    fn getenv(&self, name: &str) -> Option<String>;
    /// Sets a variable in the job's environment (remote context only).
    fn setenv(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    /// Removes a variable from the job's environment (remote context only).
    fn unsetenv(&mut self, name: &str) -> Result<(), HostError>;
    /// Removes a variable from this process's own environment (allocator context only: sbatch
    /// and salloc copy their environment into the job after `init_post_opt`).
    fn remove_process_env(&mut self, name: &str);
    /// The `--qlam-auth` option as Slurm reports it.
    fn option_value(&self) -> OptionState;
    /// The group ids of a user (primary and supplementary, from the group database).
    fn user_groups(&self, _uid: Uid) -> Option<Vec<Gid>> {
        None
    }
    /// The id of a group, by name.
    fn group_id(&self, _name: &str) -> Option<Gid> {
        None
    }
    /// The job's end time (Unix seconds) as slurmctld knows it, asked with this `squeue`
    /// (remote context only; see [`slurm_jobinfo`]).
    fn job_end_from_slurm(&self, _squeue: &std::path::Path) -> Option<u64> {
        None
    }
    /// Logs one line (never a secret).
    fn log(&self, level: Level, msg: &str);
    /// Logs one line of a refusal a site admin audits, under [`crate::logtarget::SECURITY`]
    /// (in Slurm's log: `qlam-auth: [qlam-auth::security] ...`).
    fn security(&self, level: Level, msg: &str) {
        self.log(level, &format!("[{}] {msg}", crate::logtarget::SECURITY));
    }
}

/// A backend failure in slurmstepd, passed on as `msg`; a refusal a site admin audits
/// ([`BackendError::is_security`]) is logged under the security target first, with the job and
/// its user.
fn audited(host: &dyn Host, e: &BackendError, msg: String) -> String {
    if e.is_security() {
        let (job, uid) = (
            host.job_id().unwrap_or(0),
            host.job_uid().unwrap_or(Uid::ROOT),
        );
        host.security(Level::Error, &format!("job={job} uid={uid} refused: {e}"));
    }
    msg
}

/// A site account's token, obtained as root in `init_post_opt` and written into the job's
/// directory as the user in `user_init` (same slurmstepd process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteToken {
    /// The access token.
    pub token: Secret,
    /// What the log line says about it (never the token).
    pub log: String,
}

/// What a hook tells Slurm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Return 0.
    Continue,
    /// Return an error: only where that fails the submission or the job, never the node.
    Fail,
}

/// State kept between the hooks of one process (one slurmstepd serves one step; task children
/// inherit a copy when they are forked). Plain data: a panic cannot leave it unusable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    /// A failure of a remote hook that may not fail, reported by `task_init`.
    pub failure: Option<String>,
    /// The per-job directory prepared by `init_post_opt`.
    pub job_dir: Option<PathBuf>,
    /// The option's value as the option callback saw it (a fallback for `spank_option_getopt`).
    pub option_from_callback: Option<Option<String>>,
    /// A site service account's token, waiting for `user_init`.
    pub site_token: Option<SiteToken>,
    /// Job tokens delivered by this process (token exchange), revoked by `exit`.
    pub job_tokens: JobTokens,
}

impl State {
    /// The empty state (a `const fn`, for a `static`).
    pub const fn new() -> Self {
        State {
            failure: None,
            job_dir: None,
            option_from_callback: None,
            site_token: None,
            job_tokens: JobTokens {
                provider: None,
                tokens: Vec::new(),
            },
        }
    }

    /// Records a failure that `task_init` will report (the first one wins), and logs it.
    pub fn remember(&mut self, host: &dyn Host, msg: String) {
        // Info, not error: task_init logs it as the job's error (into the job's output too).
        host.log(Level::Info, &format!("job will fail in task_init: {msg}"));
        // The first failure is the cause; later ones are consequences.
        self.failure.get_or_insert(msg);
    }
}

fn step_name(step: Option<u32>) -> String {
    match step {
        Some(BATCH_STEP) => "batch".to_owned(),
        Some(EXTERN_STEP) => "extern".to_owned(),
        Some(n) => n.to_string(),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod site_tests;
#[cfg(test)]
mod tests;
