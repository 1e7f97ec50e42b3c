//! The plugin's policy: what each SPANK hook does, written against two small traits so that it
//! is unit-tested without Slurm ([`Host`]) and without an identity provider ([`Backend`]).
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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use token_core::secret::Secret;

use crate::args::Args;

/// The step id Slurm gives the batch script (`SLURM_BATCH_SCRIPT` in slurm.h; ffi.rs checks
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
pub struct HostError(pub String);

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
    fn job_uid(&self) -> Option<u32>;
    /// The job's primary group, where Slurm provides it.
    fn job_gid(&self) -> Option<u32>;
    /// The step id, where Slurm provides it.
    fn step_id(&self) -> Option<u32>;
    /// The real uid of this process (the submitting user in allocator and local context).
    fn process_uid(&self) -> u32;
    /// The home directory of a user, from the password database (never `$HOME`).
    fn user_home(&self, uid: u32) -> Option<PathBuf>;
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
    fn user_groups(&self, _uid: u32) -> Option<Vec<u32>> {
        None
    }
    /// The id of a group, by name.
    fn group_id(&self, _name: &str) -> Option<u32> {
        None
    }
    /// The job's end time (Unix seconds) as slurmctld knows it, asked with this `squeue`
    /// (remote context only; see [`slurm_jobinfo`]).
    fn job_end_from_slurm(&self, _squeue: &Path) -> Option<u64> {
        None
    }
    /// Logs one line (never a secret).
    fn log(&self, level: Level, msg: &str);
}

/// A request for the user's token, as [`Backend`] sees it.
pub struct Request<'a> {
    /// The user's home directory (from the password database).
    pub home: &'a Path,
    /// Environment lookup (`QSH_CONFIG_DIR`, `QSH_CONFIG`).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The qsh context from `--qlam-auth=CONTEXT`; `None` = the config's current context.
    pub context: Option<&'a str>,
    /// The plugin arguments.
    pub args: &'a Args,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("home", &self.home)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// A token obtained for a job.
#[derive(Debug)]
pub struct Delivery {
    /// The access token.
    pub token: Secret,
    /// True when this call made a token request to the identity provider.
    pub refreshed: bool,
    /// Where the token came from, for the log: `cache`, `renewed`, `renewed_by_other`, or
    /// `stale` (renewal failed for a network reason; the token is valid for less than
    /// `min_valid`).
    pub source: &'static str,
    /// Seconds until the token expires, if known.
    pub expires_in: Option<i64>,
    /// The token's subject, if known.
    pub subject: Option<String>,
    /// The OAuth client id.
    pub client_id: String,
    /// Time spent, including lock waiting.
    pub elapsed: Duration,
    /// Time spent waiting for the store lock.
    pub lock_wait: Duration,
    /// `min_valid` as configured, when it asked for a whole token lifetime or more and was capped
    /// (at half their lifetime).
    pub capped_from: Option<Duration>,
}

/// What the renewer of one token file needs (see [`crate::spawn`] and `qlam-auth job-renewer`).
#[derive(Debug, Clone)]
pub struct RenewerSpec {
    /// The job.
    pub job: u32,
    /// The job's user and group.
    pub uid: u32,
    /// The job's primary group.
    pub gid: u32,
    /// The user's home directory.
    pub home: PathBuf,
    /// The job's private token directory and the token file's name in it.
    pub dir: PathBuf,
    /// The token file's name.
    pub file_name: String,
    /// `--qlam-auth=CONTEXT`, if given.
    pub context: Option<String>,
    /// The job's `QSH_CONFIG_DIR` / `QSH_CONFIG`, if set (from the job's environment).
    pub config_env: Vec<(String, String)>,
    /// The job's end (`SLURM_JOB_END_TIME`, Unix seconds), if known.
    pub end_time: Option<u64>,
    /// With token exchange: what each renewal exchanges for (its lifetime is the site's
    /// maximum; the renewer shortens it to the job's remaining time).
    pub exchange: Option<token_core::exchange::Request>,
}

/// A job token obtained by token exchange, and what was used to get it.
#[derive(Debug)]
pub struct Exchange {
    /// The user's token that was exchanged (its source, subject, client id, timings); `None`
    /// when the job token came from the job's cache (another step or node exchanged it).
    pub user: Option<Delivery>,
    /// The user the job token is for (`sub`), if known.
    pub subject: Option<String>,
    /// The OAuth client that exchanged it.
    pub client_id: String,
    /// The job token.
    pub job: token_core::exchange::Exchanged,
    /// True when the IdP made it live longer than asked (or did not say how long).
    pub outlives: bool,
    /// The provider that issued it (for revocation at the job's end).
    pub provider: token_core::config::ProviderConfig,
}

/// The job tokens this process delivered, revoked when the batch step ends.
#[derive(Debug, Clone, Default)]
pub struct JobTokens {
    /// The provider that issued them.
    pub provider: Option<token_core::config::ProviderConfig>,
    /// The tokens.
    pub tokens: Vec<Secret>,
}

impl PartialEq for JobTokens {
    fn eq(&self, other: &Self) -> bool {
        let key = |j: &JobTokens| {
            (
                j.provider
                    .as_ref()
                    .map(|p| (p.issuer.clone(), p.client_id.clone())),
                j.tokens.iter().map(Secret::fingerprint).collect::<Vec<_>>(),
            )
        };
        key(self) == key(other)
    }
}

impl Eq for JobTokens {}

/// What the policy needs from token-core. [`crate::broker::TokenCore`] implements it. Errors are
/// actionable messages (they say what to do next) and never contain a secret.
pub trait Backend {
    /// Offline check that the user has a usable login (allocator context, as the user).
    /// Returns a short summary for the verbose log.
    fn check_login(&self, req: &Request<'_>) -> Result<String, String>;
    /// Creates `<base>/<job>` for the job's user, mode 0700 (remote context, as root).
    fn prepare_job_dir(
        &self,
        base: &Path,
        job: &str,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, String>;
    /// The token already in `file`, if it is valid for at least `min_valid` (a later step of
    /// the same job).
    fn reuse_token(&self, file: &Path, min_valid: Duration) -> Option<Secret>;
    /// A token valid for at least `args.min_valid`, from the store or the identity provider
    /// (remote context, as the user).
    fn obtain(&self, req: &Request<'_>) -> Result<Delivery, String>;
    /// Writes the token into `<dir>/<file_name>` (0600, as the user) and returns its path.
    fn write_token(&self, dir: &Path, file_name: &str, token: &Secret) -> Result<PathBuf, String>;
    /// Removes `<base>/<job>` and what it holds; `Ok(false)` if there was nothing (as root).
    fn remove_job_dir(&self, base: &Path, job: &str) -> Result<bool, String>;
    /// Starts the renewer of a token file unless one already runs for it (remote context, as the
    /// user). `Ok(true)` if one was started, `Ok(false)` if one already runs.
    fn start_renewer(&self, _spec: &RenewerSpec, _args: &Args) -> Result<bool, String> {
        Ok(false)
    }
    /// The renewer's status of a token file (its `state` and `last_error`), if there is one.
    fn renewal_status(&self, _dir: &Path, _file_name: &str) -> Option<(String, Option<String>)> {
        None
    }
    /// The job token of job `job` for its token file `file_name`: from the job's cache in the
    /// user's home if another step or node of the job got one, else the user's token (as
    /// [`Backend::obtain`]) exchanged for one as `ex` asks (remote context, as the user).
    fn exchange(
        &self,
        _req: &Request<'_>,
        _ex: &token_core::exchange::Request,
        _job: u32,
        _file_name: &str,
    ) -> Result<Exchange, String> {
        Err("token exchange is not supported here".to_owned())
    }
    /// Records, beside the token file, what the exchanged token in it is (as the user).
    fn write_meta(
        &self,
        _dir: &Path,
        _file_name: &str,
        _meta: &token_core::exchange::Meta,
    ) -> Result<(), String> {
        Ok(())
    }
    /// Revokes job tokens at their IdP (RFC 7009) within `within`; the number revoked, 0 if
    /// the IdP offers no revocation (as root, in the batch step's `exit`).
    fn revoke(
        &self,
        _tokens: &JobTokens,
        _args: &Args,
        _within: Duration,
    ) -> Result<usize, String> {
        Ok(0)
    }
    /// Reads a site service account's root-only file (remote context, as root).
    fn load_site_account(
        &self,
        account: &crate::site::SiteAccountRef,
    ) -> Result<crate::site::SiteAccount, String> {
        Err(format!(
            "site accounts are not supported here ({})",
            account.name
        ))
    }
    /// The site account's token from its root-only shared cache or the IdP (as root).
    fn obtain_site(
        &self,
        account: &crate::site::SiteAccountRef,
        _acct: &crate::site::SiteAccount,
        _args: &Args,
    ) -> Result<Delivery, String> {
        Err(format!(
            "site accounts are not supported here ({})",
            account.name
        ))
    }
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

/// The qsh context a job asked for: `None` is the config's current context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// `--qlam-auth=CONTEXT`.
    pub context: Option<String>,
}

impl Requested {
    /// The token file's name in the job directory: one per context, so that a step asking for
    /// another context never reuses the first one's token.
    pub fn file_name(&self) -> String {
        match &self.context {
            None => "token".to_owned(),
            Some(c) => format!("token-{c}"),
        }
    }
}

/// Longest accepted context name.
pub const MAX_CONTEXT_LEN: usize = 128;

/// Checks an option value. `None`, empty and Slurm's `(null)` mean "the current context".
pub fn parse_option_value(value: Option<&str>) -> Result<Requested, String> {
    let value = match value {
        None | Some("") | Some("(null)") => return Ok(Requested { context: None }),
        Some(v) => v,
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-@+".contains(c);
    if value.len() > MAX_CONTEXT_LEN || value.starts_with('.') || !value.chars().all(ok_char) {
        return Err(format!(
            "invalid --qlam-auth value: a qsh context name is 1 to {MAX_CONTEXT_LEN} characters \
             of A-Z a-z 0-9 . _ - @ + and does not start with '.'; use --qlam-auth for the \
             current context or --qlam-auth=CONTEXT (see `qlam-auth status`)"
        ));
    }
    Ok(Requested {
        context: Some(value.to_owned()),
    })
}

/// Whether and how this job asked for a token. In remote context the option may only be in the
/// job environment (`--export=NONE`): see [`crate::OPTION_ENV`].
fn requested(host: &dyn Host, state: &State) -> Option<Result<Requested, String>> {
    let (raw, source) = match host.option_value() {
        OptionState::Given(v) => (v, "spank_option_getopt"),
        OptionState::NotGiven => match &state.option_from_callback {
            Some(v) => (v.clone(), "option callback"),
            None if host.is_remote() => (Some(host.getenv(crate::OPTION_ENV)?), crate::OPTION_ENV),
            None => return None,
        },
    };
    host.log(
        Level::Debug,
        &format!("--{}={raw:?} (from {source})", crate::OPTION_NAME),
    );
    Some(parse_option_value(raw.as_deref()))
}

/// Environment variable of the submission: a user's own default for automatic injection
/// (`yes` or `no`), over the site's.
pub const ENV_INJECT: &str = "QLAM_AUTH_INJECT";

/// `--qlam-auth=no`: this job gets no token, even with automatic injection.
pub const OPT_OUT: &str = "no";

/// What a job gets: `Some((request, automatic))`, or `None` for no token. `automatic` is true
/// when the job did not ask (automatic injection): then nothing may fail it or its submission.
fn job_request(
    host: &dyn Host,
    state: &State,
    args: &Args,
) -> Option<(Result<Requested, String>, bool)> {
    match requested(host, state) {
        Some(Ok(r)) if r.context.as_deref() == Some(OPT_OUT) => None,
        Some(r) => Some((r, false)),
        None => {
            let user = host
                .getenv(ENV_INJECT)
                .map(|v| v.trim().to_ascii_lowercase());
            let auto = match user.as_deref() {
                Some("yes" | "1" | "true" | "auto") => true,
                Some("no" | "0" | "false") => false,
                _ => args.inject_automatically(),
            };
            auto.then_some((Ok(Requested { context: None }), true))
        }
    }
}

fn parse_args(host: &dyn Host, argv: &[String], level: Level) -> Args {
    let (mut args, mut problems) = Args::parse(argv);
    let site = token_core::site::Site::load(&args.site_file);
    problems.extend(args.apply_site(site));
    for p in problems {
        host.log(level, &format!("plugstack.conf: {}", p.0));
    }
    args
}

/// The option callback: Slurm calls it when it parses `--qlam-auth` (allocator, local) or
/// receives it (remote). Failing it in sbatch stops the submission.
pub fn option_callback(
    host_log: &dyn Fn(Level, &str),
    state: &mut State,
    value: Option<&str>,
) -> Verdict {
    match parse_option_value(value) {
        Ok(_) => {
            state.option_from_callback = Some(value.map(str::to_owned));
            Verdict::Continue
        }
        Err(msg) => {
            host_log(Level::Error, &msg);
            Verdict::Fail
        }
    }
}

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

/// The variables through which a job holds its token.
pub const TOKEN_VARS: [&str; 3] = ["QLAM_ACCESS_TOKEN", "QLAM_TOKEN_FILE", "BEARER_TOKEN_FILE"];

/// Allocator context inside a job that got a token (a job that runs `sbatch` or `salloc`):
/// slurmctld stores the submitted environment, so the parent job's token and token-file
/// variables must not travel into the new job. Recognised by `QLAM_TOKEN_FILE` pointing into
/// `token_dir`; a user's own variables are left alone. The new job gets its own token if it
/// asks for one.
fn scrub_inherited_token(host: &mut dyn Host, argv: &[String]) {
    let args = parse_args(host, argv, Level::Debug);
    let Some(file) = host.getenv("QLAM_TOKEN_FILE") else {
        return;
    };
    if !Path::new(&file).starts_with(&args.token_dir) {
        return;
    }
    for name in TOKEN_VARS {
        let ours = match name {
            "BEARER_TOKEN_FILE" => host.getenv(name).as_deref() == Some(file.as_str()),
            _ => host.getenv(name).is_some(),
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
fn submit_check(
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
        return crate::site::submit_check(&*host, account);
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
    let env = |name: &str| host.getenv(name);
    let request = Request {
        home: &home,
        env: &env,
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

/// Remote context, as root: make `<token_dir>/<jobid>` for the job's user. Never fails the hook.
fn prepare_remote(host: &mut dyn Host, backend: &dyn Backend, state: &mut State, argv: &[String]) {
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
            host.log(Level::Debug, &format!("job={job} uid={uid} token directory {} ready", dir.display()));
            state.job_dir = Some(dir);
            if let Some(account) = args.site_account(req.context.as_deref()) {
                crate::site::fetch(&*host, backend, state, &args, account);
            }
        }
        Err(msg) if auto => host.log(
            Level::Error,
            &format!("job={job}: no automatic token: could not prepare the job's token directory: {msg}"),
        ),
        Err(msg) => state.remember(
            host,
            format!("could not prepare the job's token directory on this node: {msg}; please tell your site admins"),
        ),
    }
}

/// `slurm_spank_user_init` (remote, effective uid = the job's user): obtain the token, write the
/// job's token file, export its path. Never fails the hook.
pub fn user_init(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    argv: &[String],
) -> Verdict {
    if host.context() != Context::Remote {
        return Verdict::Continue;
    }
    let args = parse_args(host, argv, Level::Debug);
    let (req, auto) = match job_request(host, state, &args) {
        None => return Verdict::Continue,
        Some((Ok(r), auto)) => (r, auto),
        Some((Err(msg), _)) => {
            state.remember(host, msg);
            return Verdict::Continue;
        }
    };
    if state.failure.is_some() {
        return Verdict::Continue; // reported by task_init
    }
    if auto && (args.misconfigured.is_some() || state.job_dir.is_none()) {
        return Verdict::Continue;
    }
    match deliver(host, backend, state, &args, &req) {
        Ok(()) => {}
        // Automatic injection never fails a job: it runs without a token.
        Err(msg) if auto => host.log(
            Level::Info,
            &format!("no automatic token for this job: {msg}"),
        ),
        Err(msg) => state.remember(host, msg),
    }
    Verdict::Continue
}

/// What the user asks of the job token (`QLAM_AUTH_AUDIENCE`, `QLAM_AUTH_SCOPE` in the
/// submission environment), within the site's policy: `None` when the site does not exchange
/// tokens. `needed` is how long the job still needs a token. Asking for more than the site
/// allows, or for a narrow token where the site makes none, is an error that says what to do.
pub fn exchange_request(
    host: &dyn Host,
    args: &Args,
    needed: Option<Duration>,
) -> Result<Option<token_core::exchange::Request>, String> {
    let want = |k: &str| host.getenv(k).filter(|v| !v.trim().is_empty());
    let (audience, scope) = (want(ENV_WANT_AUDIENCE), want(ENV_WANT_SCOPE));
    if args.exchange.mode == token_core::exchange::Mode::Off {
        if audience.is_some() || scope.is_some() {
            return Err(format!(
                "{ENV_WANT_AUDIENCE}/{ENV_WANT_SCOPE} ask for a narrow job token, but this \
                 cluster does not make them (plugstack exchange=off): unset them, or ask your \
                 site admins"
            ));
        }
        return Ok(None);
    }
    args.exchange
        .resolve(audience.as_deref(), scope.as_deref(), needed)
        .map(Some)
        .map_err(|m| format!("{m} ({ENV_WANT_AUDIENCE}, {ENV_WANT_SCOPE})"))
}

/// The margin beyond the job's end of a job token's lifetime: [`END_TIME_MARGIN`] and half a
/// minute more, so that a later step, which needs the token until the end plus
/// [`END_TIME_MARGIN`], still reuses it.
pub const EXCHANGE_MARGIN: Duration = Duration::from_secs(END_TIME_MARGIN.as_secs() + 30);

/// How long this job still needs a token: until its end (`SLURM_JOB_END_TIME`) plus
/// [`EXCHANGE_MARGIN`].
fn job_remaining(host: &dyn Host, args: &Args) -> Option<Duration> {
    let end = job_end(host, args)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Some(Duration::from_secs(end.saturating_sub(now)) + EXCHANGE_MARGIN)
}

fn deliver(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    args: &Args,
    req: &Requested,
) -> Result<(), String> {
    let started = Instant::now();
    let (Some(job), Some(uid)) = (host.job_id(), host.job_uid()) else {
        return Err(
            "Slurm did not provide the job id and uid; please tell your site admins".to_owned(),
        );
    };
    let dir = state
        .job_dir
        .clone()
        .unwrap_or_else(|| args.token_dir.join(job.to_string()));
    let file_name = req.file_name();
    let step = step_name(host.step_id());
    if args.site_account(req.context.as_deref()).is_some() {
        // Obtained as root in init_post_opt; the user's side only writes it.
        let site = state.site_token.as_ref().ok_or_else(|| {
            "internal error: the site account's token was not obtained; please tell your site admins"
                .to_owned()
        })?;
        let path = backend
            .write_token(&dir, &file_name, &site.token)
            .map_err(|msg| format!("could not write the job's token file: {msg}"))?;
        export(host, args, &path, &site.token)?;
        host.log(
            Level::Info,
            &format!(
                "job={job} step={step} uid={uid} token={} {} elapsed_ms={}",
                site.token.fingerprint(),
                site.log,
                started.elapsed().as_millis()
            ),
        );
        return Ok(());
    }
    let args = &needed_validity(&*host, args);
    let exchange = exchange_request(&*host, args, job_remaining(&*host, args))?;

    if let Some(token) = backend.reuse_token(&dir.join(&file_name), args.min_valid) {
        let path = dir.join(&file_name);
        export(host, args, &path, &token)?;
        renewal(
            host,
            backend,
            args,
            &dir,
            &file_name,
            req,
            uid,
            exchange.as_ref(),
        );
        host.log(
            Level::Info,
            &format!(
                "job={job} step={step} uid={uid} token={} reused=yes refreshed=no elapsed_ms={}",
                token.fingerprint(),
                started.elapsed().as_millis()
            ),
        );
        return Ok(());
    }

    let home = host.user_home(uid).ok_or_else(|| {
        format!("cannot find the home directory of uid {uid} in the password database")
    })?;
    check_config_env(&*host)?;
    let env = |name: &str| host.getenv(name);
    let request = Request {
        home: &home,
        env: &env,
        context: req.context.as_deref(),
        args,
    };
    if let Some(ex) = &exchange {
        match backend.exchange(&request, ex, job, &file_name) {
            Ok(x) => {
                return deliver_exchanged(host, backend, state, args, req, &dir, x, ex, started);
            }
            Err(msg) if args.exchange.mode == token_core::exchange::Mode::Required => {
                return Err(format!(
                    "this job could not get its job token (token exchange is required on this \
                     cluster): {msg}"
                ));
            }
            Err(msg) => host.log(
                Level::Error,
                &format!(
                    "job={job}: token exchange failed ({msg}); the job gets the user's own \
                     token (exchange=preferred)"
                ),
            ),
        }
    }
    let got = backend
        .obtain(&request)
        .map_err(|msg| format!("this job could not get a token: {msg}"))?;
    let path = backend
        .write_token(&dir, &file_name, &got.token)
        .map_err(|msg| format!("could not write the job's token file: {msg}"))?;
    export(host, args, &path, &got.token)?;
    renewal(host, backend, args, &dir, &file_name, req, uid, None);
    let expires_in = got
        .expires_in
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    host.log(
        Level::Info,
        &format!(
            "job={job} step={step} uid={uid} token={} subject={} client_id={} reused=no \
             refreshed={} source={} expires_in_s={expires_in} lock_wait_ms={} elapsed_ms={}{}",
            got.token.fingerprint(),
            got.subject.as_deref().unwrap_or("-"),
            got.client_id,
            if got.refreshed { "yes" } else { "no" },
            got.source,
            got.lock_wait.as_millis(),
            got.elapsed.max(started.elapsed()).as_millis(),
            got.capped_from.map_or_else(String::new, |c| format!(
                " min_valid_capped_from_s={} (the identity provider's tokens live shorter)",
                c.as_secs()
            )),
        ),
    );
    if got.source == "stale" {
        host.log(
            Level::Error,
            &format!(
                "job={job}: the identity provider could not be reached; the job got a token that \
                 expires in {expires_in} s, less than min_valid ({} s)",
                args.min_valid.as_secs()
            ),
        );
    }
    Ok(())
}

/// Writes and exports an exchanged job token, starts its renewer, logs the audit line (job,
/// subject, client id, audience, fingerprints; never a token) and keeps the token for `exit`.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn deliver_exchanged(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    args: &Args,
    req: &Requested,
    dir: &Path,
    x: Exchange,
    ex: &token_core::exchange::Request,
    started: Instant,
) -> Result<(), String> {
    let (job, uid) = (host.job_id().unwrap_or(0), host.job_uid().unwrap_or(0));
    let file_name = req.file_name();
    let path = backend
        .write_token(dir, &file_name, &x.job.token)
        .map_err(|msg| format!("could not write the job's token file: {msg}"))?;
    let meta = token_core::exchange::Meta::of(&x.job, token_core::time::Timestamp::now());
    if let Err(msg) = backend.write_meta(dir, &file_name, &meta) {
        host.log(Level::Error, &format!("job={job}: could not record the job token's expiry ({msg}); later steps exchange again"));
    }
    export(host, args, &path, &x.job.token)?;
    state.job_tokens.provider = Some(x.provider);
    state.job_tokens.tokens.push(x.job.token.clone());
    renewal(host, backend, args, dir, &file_name, req, uid, Some(ex));
    let (user_token, user_source, lock_wait) = match &x.user {
        Some(u) => (u.token.fingerprint(), u.source, u.lock_wait.as_millis()),
        None => ("-".to_owned(), "job_cache", 0),
    };
    host.log(
        Level::Info,
        &format!(
            "job={job} step={} uid={uid} token={} exchanged={} subject={} client_id={} \
             audience={} scope={} expires_in_s={} user_token={user_token} \
             user_source={user_source} lock_wait_ms={lock_wait} elapsed_ms={}",
            step_name(host.step_id()),
            x.job.token.fingerprint(),
            if x.user.is_some() { "yes" } else { "cached" },
            x.subject.as_deref().unwrap_or("-"),
            x.client_id,
            x.job.audience.as_deref().unwrap_or("-"),
            x.job
                .scope
                .as_deref()
                .map_or("-".to_owned(), |s| s.replace(' ', ",")),
            x.job
                .lifetime
                .map_or("-".to_owned(), |l| l.as_secs().to_string()),
            started.elapsed().as_millis(),
        ),
    );
    if x.outlives {
        host.log(
            Level::Error,
            &format!(
                "job={job}: the identity provider issued a job token that lives {} s, longer \
                 than the {} s asked for (it ignores requested_lifetime)",
                x.job
                    .lifetime
                    .map_or("an unknown number of".to_owned(), |l| l
                        .as_secs()
                        .to_string()),
                ex.lifetime.map_or(0, |l| l.as_secs())
            ),
        );
    }
    Ok(())
}

/// Environment variable naming the renewer's status file (beside the token file).
pub const ENV_STATUS_FILE: &str = "QLAM_TOKEN_STATUS_FILE";

/// Keeps the token file valid while the job runs: starts its renewer unless the site turned
/// renewal off or one already runs for this file on this node. A problem here is logged and
/// never fails the job: the token just delivered is valid for `min_valid`.
#[allow(clippy::too_many_arguments)] // internal; each is one distinct input
fn renewal(
    host: &mut dyn Host,
    backend: &dyn Backend,
    args: &Args,
    dir: &Path,
    file_name: &str,
    req: &Requested,
    uid: u32,
    exchange: Option<&token_core::exchange::Request>,
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
        .filter_map(|k| {
            host.getenv(k)
                .filter(|v| !v.is_empty())
                .map(|v| ((*k).to_owned(), v))
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
        end_time: job_end(host, args),
        // Each renewal asks for the site's maximum, shortened to what is left of the job.
        exchange: exchange.map(|ex| token_core::exchange::Request {
            lifetime: args.exchange.max_lifetime,
            ..ex.clone()
        }),
    };
    let status = dir.join(token_core::renew::status_file_name(file_name));
    if let Some(p) = status.to_str() {
        let _ = host.setenv(ENV_STATUS_FILE, p);
    }
    match backend.start_renewer(&spec, args) {
        Ok(true) => host.log(
            Level::Verbose,
            &format!(
                "job={job} step={} renewer started for {file_name}",
                step_name(host.step_id())
            ),
        ),
        Ok(false) => {}
        Err(msg) => host.log(
            Level::Error,
            &format!(
                "job={job}: could not start the token renewer ({msg}); the job's token will not \
                 be renewed while it runs (check plugstack renewer=)"
            ),
        ),
    }
}

/// Margin kept beyond the job's end when `min_valid` is shortened to the job's remaining time.
pub const END_TIME_MARGIN: Duration = Duration::from_secs(120);

/// A job that ends before `min_valid` runs out needs the token only until its end: if Slurm tells
/// the end (`SLURM_JOB_END_TIME`, Unix seconds), ask for validity until then plus a margin, so
/// that a stored token that outlives the job is used without any call to the identity provider.
pub fn needed_validity(host: &dyn Host, args: &Args) -> Args {
    let mut args = args.clone();
    let end = job_end(host, &args);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Some(end) = end.filter(|e| *e > 0) {
        let until_end = Duration::from_secs(end.saturating_sub(now)) + END_TIME_MARGIN;
        args.min_valid = args.min_valid.min(until_end);
    }
    args
}

/// The job's end time (Unix seconds): slurmctld's answer (`squeue=`, see [`slurm_jobinfo`]),
/// else the job's `SLURM_JOB_END_TIME` (set by Slurm 23.02 and later; on 22.05 only if the user
/// set it: a value a user can choose moves their own job's token lifetime only within the site's
/// `exchange_max_lifetime`, which is why slurmctld is asked first).
pub fn job_end(host: &dyn Host, args: &Args) -> Option<u64> {
    let from_slurm = match &args.squeue {
        crate::args::Squeue::Off => None,
        crate::args::Squeue::Path(p) => host.job_end_from_slurm(p),
        crate::args::Squeue::Auto => {
            slurm_jobinfo::squeue_path(None).and_then(|p| host.job_end_from_slurm(&p))
        }
    };
    from_slurm.or_else(|| {
        host.getenv("SLURM_JOB_END_TIME")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|e| *e > 0)
    })
}

/// The variables that move a user's qsh configuration (as token-core reads them).
pub const CONFIG_ENV: [&str; 2] = ["QSH_CONFIG_DIR", "QSH_CONFIG"];

/// A relative `QSH_CONFIG_DIR` / `QSH_CONFIG` would be resolved against a different directory on
/// the compute node than at submission: refuse it with the fix, at submission already.
fn check_config_env(host: &dyn Host) -> Result<(), String> {
    for name in CONFIG_ENV {
        if let Some(v) = host.getenv(name).filter(|v| !v.is_empty())
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

/// Puts the token file (and, unless `env_token=no`, the token) into the job's environment.
fn export(host: &mut dyn Host, args: &Args, path: &Path, token: &Secret) -> Result<(), String> {
    let path = path.to_str().ok_or_else(|| {
        format!(
            "the token file path {} is not UTF-8; set token_dir to a plain path",
            path.display()
        )
    })?;
    let set = |host: &mut dyn Host, k: &str, v: &str| {
        host.setenv(k, v)
            .map_err(|e| format!("could not set {k} in the job environment: {}", e.0))
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
