//! The arguments of the commands about one login: `login`, `status`, `token`, `logout`,
//! `doctor`, and the plugin's `job-renewer`.

use clap::Args;

/// `job-renewer`: started by the SPANK plugin in `user_init`, as the job's user, once per job,
/// node and token file. Not for interactive use; documented in docs/admin.md.
#[derive(Debug, Args)]
pub struct JobRenewerArgs {
    /// The Slurm job id (the renewer ends when no step of this job runs on the node any more).
    #[arg(long)]
    pub job: u32,
    /// The job's private token directory.
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
    /// The token file's name in it.
    #[arg(long, value_name = "NAME")]
    pub file: String,
    /// The job user's home directory (from the password database).
    #[arg(long, value_name = "DIR")]
    pub home: std::path::PathBuf,
    /// The qsh context (default: current_context of the config).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Renew once this fraction of the token's lifetime has passed (0.5 to 0.9).
    #[arg(long, default_value_t = token_core::renew::DEFAULT_RENEW_AT)]
    pub renew_at: f64,
    /// The bound on one renewal, lock wait included (plugstack timeout=).
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub timeout: u64,
    /// The part of --timeout spent waiting for the store lock.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub lock_timeout: u64,
    /// The job's end (Unix seconds): the renewer stops then at the latest.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub end_time: Option<u64>,
    /// The `squeue` that tells the job's end again (plugstack squeue=): asked before each job
    /// token exchange and when the end has passed, so a time limit extended with `scontrol
    /// update` keeps the renewer and the job token alive.
    #[arg(long, value_name = "FILE")]
    pub squeue: Option<std::path::PathBuf>,
    /// The CAs that TLS to the issuer trusts (plugstack ca_bundle=).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<std::path::PathBuf>,
    /// An allowed issuer (plugstack issuers=); repeatable.
    #[arg(long = "issuer", value_name = "URL")]
    pub issuers: Vec<String>,
    /// The site file (plugstack site=): its contexts stand behind the user's config.
    #[arg(long, value_name = "FILE")]
    pub site_file: Option<std::path::PathBuf>,
    /// Outside Slurm (benchmarks, tests): the job runs while this process lives, instead of
    /// while a slurmstepd of the job runs on the node.
    #[arg(long, value_name = "PID")]
    pub watch_pid: Option<u32>,
    /// Keep a job token (RFC 8693 token exchange of the user's token) in the file instead of the
    /// user's token, and revoke the job tokens when the job ends (plugstack exchange=).
    #[arg(long)]
    pub exchange: bool,
    /// With --exchange: the job token's audience.
    #[arg(long, value_name = "URL", requires = "exchange")]
    pub exchange_audience: Option<String>,
    /// With --exchange: the job token's scopes (space-separated).
    #[arg(long, value_name = "SCOPES", requires = "exchange")]
    pub exchange_scope: Option<String>,
    /// With --exchange: the longest a job token may live; each renewal also asks for no more
    /// than the job's remaining time plus a margin.
    #[arg(long, value_name = "SECONDS", requires = "exchange")]
    pub exchange_max_lifetime: Option<u64>,
}

/// `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The qsh context (default: current_context of the config).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Use the device code flow (a URL and a code to enter on any device).
    #[arg(long, conflicts_with = "browser")]
    pub device: bool,
    /// Use a browser on this machine (authorization code + PKCE).
    #[arg(long)]
    pub browser: bool,
    /// Do not draw a QR code of the login link.
    #[arg(long)]
    pub no_qr: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The qsh context (default: current_context of the config).
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub context: Option<String>,
    /// Show every context of the config.
    #[arg(long)]
    pub all: bool,
    /// Print JSON (an object, or a list with --all).
    #[arg(long)]
    pub json: bool,
}

/// `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The qsh context (default: current_context of the config).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The token must stay valid at least this many seconds (default 300); otherwise it is
    /// renewed first. When it cannot be renewed (identity provider unreachable), a stored token
    /// that is still valid is printed with a warning, unless --min-valid was given: then the
    /// command fails (exit 5) rather than print a token that lapses sooner than asked. A value
    /// of at least the lifetime the identity provider gives its tokens (`qlam-auth status`
    /// shows it) is capped at half that lifetime: no token could meet it.
    #[arg(long, value_name = "SECONDS")]
    pub min_valid: Option<u64>,
    /// Print a narrow token for this audience instead of your own: your token is exchanged at
    /// the identity provider (RFC 8693 token exchange) for one that only this API accepts.
    /// The identity provider decides what it allows; no site policy is read here.
    #[arg(long, value_name = "URL")]
    pub audience: Option<String>,
    /// With token exchange: only these scopes (space- or comma-separated). Giving --scope
    /// alone exchanges for your provider's own audience with fewer scopes.
    #[arg(long, value_name = "SCOPES")]
    pub scope: Option<String>,
    /// With token exchange: ask for a token that lives at most this many seconds (sent as
    /// `requested_lifetime`; an identity provider may ignore it, which is then reported).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub lifetime: Option<u64>,
}

/// `logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The qsh context (default: current_context of the config).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Do not revoke the refresh token at the identity provider; only delete it here (also when
    /// the identity provider cannot be reached).
    #[arg(long, visible_alias = "local")]
    pub no_revoke: bool,
}

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The qsh context (default: current_context of the config).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Print JSON: {"context", "ok", "checks": [{"level", "check", "detail", "fix"}]}.
    #[arg(long)]
    pub json: bool,
}
