//! The plugin's side of token-core: the [`Backend`] trait (what the hooks need: a login check,
//! a token, the job's files, the renewer, revocation, site accounts) and [`TokenCore`], its
//! implementation. This module and its children are the only ones that call token-core; the
//! hooks see its values through the types re-exported here.
//!
//! * this file: the trait, the values that cross it, [`BackendError`];
//! * `tokencore.rs`: [`TokenCore`]: config, store, OAuth, job files;
//! * `renewer.rs`: the renewer's command line, its status file, stopping it;
//! * [`site_account`]: the root-only site account file (`m2m=NAME:FILE`), a typed model.
//!
//! Every call is synchronous and starts no thread (token-core's HTTP client is blocking), so
//! nothing outlives the hook that made it. Time is bounded by the plugin's `timeout` argument:
//! `lock_timeout` for the store lock, the rest for the network.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use token_core::broker::Source;
pub use token_core::config::ProviderConfig;
pub use token_core::exchange::{Exchanged, Mode as ExchangeMode, Request as ExchangeRequest};
pub use token_core::secret::Secret;

mod renewer;

/// A variable of the daemon's own environment (slurmstepd's, root's), never the job's: read only
/// for what only the site may set (`QLAM_AUTH_ALLOW_HTTP_LOOPBACK`, the budget overrides,
/// `SSL_CERT_FILE`, and `SLURM_CONF` for `squeue`). The hooks never read it (see
/// [`crate::hooks::env`]).
pub fn daemon_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name)
}

/// [`daemon_var`] as text (a value that is not UTF-8 is none).
pub fn daemon_env(name: &str) -> Option<String> {
    daemon_var(name).and_then(|v| v.into_string().ok())
}
pub mod site_account;
mod tokencore;

pub use renewer::{RENEWER_STOP_WAIT, renewer_args, stop_renewers};
pub use site_account::SiteAccount;
pub use tokencore::{TokenCore, http_settings};

use crate::args::{Args, SiteAccountRef};
use crate::users::{Gid, Uid};

/// Why the backend could not do what a hook asked. The message ([`fmt::Display`]) says what to
/// do next; it never holds a secret or an identity provider's response body.
#[derive(Debug)]
#[non_exhaustive]
pub enum BackendError {
    /// token-core failed: not logged in, the login expired, the IdP unreachable or refusing, a
    /// bad config, a file with unsafe permissions, the store, the lock ...
    Core(token_core::Error),
    /// The user's config names an issuer outside the site's allowlist (`issuers=`).
    IssuerNotAllowed(token_core::Error),
    /// A directory named by a plugstack setting (`token_dir`, `m2m_cache`) is not safe for root
    /// to create or remove anything under.
    UnsafeDirectory {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        source: token_core::Error,
    },
    /// The user's config uses a grant this cluster does not allow in jobs (`grants=`); the
    /// message has the fix.
    GrantNotAllowed(String),
    /// A site service account's file cannot be used (missing, unsafe, or not a valid account).
    SiteAccount(String),
    /// The job's token directory is not there (the renewer has nothing to keep valid).
    NoJobDir,
    /// The renewer could not be started.
    Renewer {
        /// The program (plugstack `renewer=`).
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// This backend does not do that (a test's backend, or a feature a build lacks).
    Unsupported(&'static str),
    /// Any other failure, described (backends other than [`TokenCore`], such as tests' fakes).
    Other(String),
}

impl BackendError {
    /// True for a refusal a site admin audits (an issuer outside the allowlist, a grant the site
    /// does not allow, a file or directory with unsafe permissions, an unusable site account):
    /// logged under [`crate::logtarget::SECURITY`] as well.
    pub fn is_security(&self) -> bool {
        match self {
            BackendError::IssuerNotAllowed(_)
            | BackendError::UnsafeDirectory { .. }
            | BackendError::GrantNotAllowed(_)
            | BackendError::SiteAccount(_) => true,
            BackendError::Core(e) => matches!(e, token_core::Error::InsecurePermissions { .. }),
            _ => false,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Core(e) | BackendError::IssuerNotAllowed(e) => e.fmt(f),
            BackendError::UnsafeDirectory { setting, source } => write!(f, "{setting}: {source}"),
            BackendError::GrantNotAllowed(m)
            | BackendError::SiteAccount(m)
            | BackendError::Other(m) => f.write_str(m),
            BackendError::NoJobDir => f.write_str("the job token directory does not exist"),
            BackendError::Renewer { program, source } => {
                write!(f, "{}: {source}", program.display())
            }
            BackendError::Unsupported(what) => write!(f, "{what} are not supported here"),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackendError::Core(e)
            | BackendError::IssuerNotAllowed(e)
            | BackendError::UnsafeDirectory { source: e, .. } => Some(e),
            BackendError::Renewer { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<token_core::Error> for BackendError {
    fn from(e: token_core::Error) -> Self {
        BackendError::Core(e)
    }
}

/// How a [`Source`] is named in the log lines (`source=...`).
pub fn source_name(source: Source) -> &'static str {
    match source {
        Source::Cache => "cache",
        Source::RenewedByOther => "renewed_by_other",
        Source::Renewed => "renewed",
        Source::Stale => "stale",
    }
}

/// The site file (plugstack `site=`), as [`Args::apply_site`] takes it.
pub fn load_site_file(path: &Path) -> token_core::Result<Option<token_core::site::Site>> {
    token_core::site::Site::load(path)
}

/// The renewer's status file of token file `file_name` in `dir` (beside it).
pub fn status_file(dir: &Path, file_name: &str) -> PathBuf {
    dir.join(token_core::renew::status_file_name(file_name))
}

/// One line for a log: control characters escaped, so a user's value cannot forge a line.
pub fn escape_for_log(msg: &str) -> std::borrow::Cow<'_, str> {
    token_core::logsafe::escape(msg)
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
    /// Where the token came from; [`Source::Stale`]: renewal failed for a network reason and
    /// the token is valid for less than `min_valid`. Logged as [`source_name`] says.
    pub source: Source,
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
    pub uid: Uid,
    /// The job's primary group.
    pub gid: Gid,
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
    pub exchange: Option<ExchangeRequest>,
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
    pub job: Exchanged,
    /// True when the IdP made it live longer than asked (or did not say how long).
    pub outlives: bool,
    /// The provider that issued it (for revocation at the job's end).
    pub provider: ProviderConfig,
}

/// The job tokens this process delivered, revoked when the batch step ends.
#[derive(Debug, Clone, Default)]
pub struct JobTokens {
    /// The provider that issued them.
    pub provider: Option<ProviderConfig>,
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

/// What the policy needs from token-core. [`TokenCore`] implements it; the hooks' tests
/// implement it with fakes. Errors say what to do next and never contain a secret.
pub trait Backend {
    /// Offline check that the user has a usable login (allocator context, as the user).
    /// Returns a short summary for the verbose log.
    fn check_login(&self, req: &Request<'_>) -> Result<String, BackendError>;
    /// Creates `<base>/<job>` for the job's user, mode 0700 (remote context, as root).
    fn prepare_job_dir(
        &self,
        base: &Path,
        job: &str,
        uid: Uid,
        gid: Gid,
    ) -> Result<PathBuf, BackendError>;
    /// The token already in `file`, if it is valid for at least `min_valid` (a later step of
    /// the same job).
    fn reuse_token(&self, file: &Path, min_valid: Duration) -> Option<Secret>;
    /// A token valid for at least `args.min_valid`, from the store or the identity provider
    /// (remote context, as the user).
    fn obtain(&self, req: &Request<'_>) -> Result<Delivery, BackendError>;
    /// Writes the token into `<dir>/<file_name>` (0600, as the user) and returns its path.
    fn write_token(
        &self,
        dir: &Path,
        file_name: &str,
        token: &Secret,
    ) -> Result<PathBuf, BackendError>;
    /// Removes `<base>/<job>` and what it holds; `Ok(false)` if there was nothing (as root).
    fn remove_job_dir(&self, base: &Path, job: &str) -> Result<bool, BackendError>;
    /// Starts the renewer of a token file unless one already runs for it (remote context, as the
    /// user). `Ok(true)` if one was started, `Ok(false)` if one already runs.
    fn start_renewer(&self, _spec: &RenewerSpec, _args: &Args) -> Result<bool, BackendError> {
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
        _ex: &ExchangeRequest,
        _job: u32,
        _file_name: &str,
    ) -> Result<Exchange, BackendError> {
        Err(BackendError::Unsupported("token exchange"))
    }
    /// Records, beside the token file, what the exchanged token in it is and when it expires
    /// (as the user).
    fn write_meta(
        &self,
        _dir: &Path,
        _file_name: &str,
        _job: &Exchanged,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    /// Revokes job tokens at their IdP (RFC 7009) within `within`; the number revoked, 0 if
    /// the IdP offers no revocation (as root, in the batch step's `exit`).
    fn revoke(
        &self,
        _tokens: &JobTokens,
        _args: &Args,
        _within: Duration,
    ) -> Result<usize, BackendError> {
        Ok(0)
    }
    /// Reads a site service account's root-only file (remote context, as root).
    fn load_site_account(&self, _account: &SiteAccountRef) -> Result<SiteAccount, BackendError> {
        Err(BackendError::Unsupported("site accounts"))
    }
    /// The site account's token from its root-only shared cache or the IdP (as root).
    fn obtain_site(
        &self,
        _account: &SiteAccountRef,
        _acct: &SiteAccount,
        _args: &Args,
    ) -> Result<Delivery, BackendError> {
        Err(BackendError::Unsupported("site accounts"))
    }
}
