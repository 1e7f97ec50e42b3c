//! The command line, as clap derives it. Help texts teach by example; the exit codes are
//! written once (in `exit_codes!`) and shown by `--help`, `token --help` and the man page.

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// The exit-code table (kept in step with [`crate::exit`]; a unit test checks it).
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0    success
  1    other failure (login denied or timed out, output not writable, doctor found a FAIL)
  2    usage error (bad command line)
  3    not logged in: run `qlam-auth login`
  4    the login expired or was revoked: run `qlam-auth login`
  5    identity provider unreachable, or its answer was not valid: try again later
  6    identity provider refused the request (e.g. invalid_client): check the config
  7    bad configuration (~/.qsh/config.json, or $QSH_CONFIG)
  8    credentials store or permission problem (the message says how to fix it)
  9    timed out waiting for the credentials lock (another process is refreshing)
  10   monthly token budget exhausted
  11   the issuer URL is wrong (nothing answers discovery there, or it names another issuer)
  20   ssh: the API key was refused (401/403): rotate it (docs/ssh.md)
  21   ssh check: there is no certificate
  22   ssh check: the certificate has expired, is not valid yet, or lapses within --min-valid
  23   ssh check: the certificate is for another key, has other principals, or is unreadable
  24   ssh sign: the signing service's certificate was refused (another key, expired,
       other principals, longer than asked); the existing files are untouched
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM/SIGHUP) during a renewal, which was saved first; no token printed"
    };
}

/// The exit-code table as text (the tests compare it with [`crate::exit`]).
#[cfg(test)]
pub const EXIT_CODES: &str = exit_codes!();

/// Log in once on a login node; scripts and Slurm jobs then get OAuth2 access tokens.
#[derive(Debug, Parser)]
#[command(
    name = "qlam-auth",
    version,
    about = "Log in once on a login node; scripts and Slurm jobs then get OAuth2 access tokens",
    long_about = "Log in once on a login node; scripts and Slurm jobs then get OAuth2 access \
tokens.\n\nqlam-auth logs you in to your identity provider with OAuth2 (device code or browser), \
keeps the tokens in ~/.qsh/credentials/ exactly as QLAM Core and `qsh` do, and prints fresh access \
tokens for scripts. Slurm jobs get their tokens from the qlam SPANK plugin, which reads the same \
store; refreshes are coordinated by a lock so that parallel jobs never lose the login.",
    after_help = concat!(
        "Examples:
  qlam-auth login                 # on a cluster with a site file: nothing else to set up
  # elsewhere, once, with the values your site gives you:
  qlam-auth config init --issuer https://login.example.org --client-id qlam-cli
  qlam-auth login                 # device code over ssh, browser on a desktop
  qlam-auth config show           # each setting in use, and where it comes from
  qlam-auth status
  curl -H \"Authorization: Bearer $(qlam-auth token)\" https://api.example.org/v1/me
  qlam-auth doctor                # when something does not work
  qlam-auth logout

Files: ~/.qsh/config.json and ~/.qsh/credentials/ (QLAM Core's layout); QSH_CONFIG_DIR and
QSH_CONFIG move them. The site file /etc/qlam-auth/site.json (QLAM_AUTH_SITE_FILE moves it)
gives the site's default contexts. Precedence: --context > ~/.qsh/config.json > site file.
SSL_CERT_FILE names a CA bundle to trust besides the system's.

Pipelines (client credentials) need no config file: with QLAM_CLIENT_ID, QLAM_CLIENT_SECRET,
AUTH_BASE_URL and QLAM_AUDIENCE set, `qlam-auth token` uses the implicit context `env`, cached
and shared under the same lock (QLAM_TOKEN_CACHE, QLAM_TOKEN_BUDGET: see docs/m2m.md). When a
~/.qsh/config.json exists it wins, and the variables are ignored with a warning: pass
--context env to use them.

Service accounts whose API key buys short-lived SSH certificates: `qlam-auth ssh sign`,
`qlam-auth ssh check` and `qlam-auth ssh config HOST` (docs/ssh.md).

Admin helpers: `qlam-auth completions bash|zsh|fish|elvish|powershell` prints a shell
completion script; `qlam-auth man --dir /usr/local/share/man/man1` writes the man pages (one per
subcommand: `man qlam-auth-login`).

",
        exit_codes!()
    ),
    propagate_version = true
)]
pub struct Cli {
    /// Say more on stderr (-v: what happens, -vv: debugging). Tokens are never logged.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in (device code or browser) and store the tokens.
    #[command(after_help = "Examples:
  qlam-auth login                   # device code when headless or over ssh, else browser
  qlam-auth login --device --no-qr  # show only the URL and the code
  qlam-auth login --browser         # authorization code + PKCE via http://127.0.0.1:PORT
  qlam-auth login --context prod

The device flow shows a URL, a code and a QR code: open the URL on any device (phone, laptop),
enter the code and approve. Ctrl-C cancels; nothing is stored unless the login succeeds.
The browser flow must run where the browser runs (the IdP redirects to 127.0.0.1); over ssh,
forward the port (ssh -L PORT:127.0.0.1:PORT) or use --device.")]
    Login(LoginArgs),

    /// Create or update ~/.qsh/config.json.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Make NAME the current context (in ~/.qsh/config.json, as `qsh config use-context` does).
    #[command(after_help = "Examples:
  qlam-auth use-context prod
  qlam-auth config show          # the contexts there are, and where each setting comes from

A context that only the site file defines is copied into ~/.qsh/config.json first.")]
    UseContext {
        /// The context to make current.
        name: String,
    },

    /// Show who is logged in and how long the tokens last (offline).
    #[command(after_help = "Examples:
  qlam-auth status                  # the current context
  qlam-auth status --all            # every context in the config
  qlam-auth status --json | jq .access_token_expires_in_seconds

Nothing is sent to the identity provider. Exit status 0 means a token can be had (a valid
access token or a refresh token is stored); otherwise the exit code says why (see
`qlam-auth --help`). With --json, --all prints a list, else one object.")]
    Status(StatusArgs),

    /// Print a valid access token (refreshing it if needed) and nothing else.
    #[command(after_help = concat!("Examples:
  curl -H \"Authorization: Bearer $(qlam-auth token)\" https://api.example.org/v1/me
  TOKEN=$(qlam-auth token --min-valid 3600) || exit   # valid for at least an hour
  qlam-auth token --context prod > \"$XDG_RUNTIME_DIR/token\"
  QLAM_CLIENT_ID=svc QLAM_CLIENT_SECRET=... AUTH_BASE_URL=login.example.org \\
      QLAM_AUDIENCE=https://api.example.org qlam-auth token    # client credentials, no config

Only the token and a newline go to stdout; messages go to stderr. The refresh is done once
under a lock even when many processes ask at the same time. SIGTERM during a renewal is
deferred until the renewal is saved (exit 143).

", exit_codes!()))]
    Token(TokenArgs),

    /// Revoke the refresh token at the identity provider and delete the stored login.
    #[command(after_help = "Examples:
  qlam-auth logout
  qlam-auth logout --context prod --local       # only delete the local credentials

If the identity provider cannot revoke the refresh token (it is down), nothing is deleted and the
exit status is non-zero: the token is still valid there, and a later `qlam-auth logout` can
revoke it. --local (or --no-revoke) deletes the local credentials without revoking.")]
    Logout(LogoutArgs),

    /// Check the setup (config, permissions, identity provider, clock, locking, Slurm plugin).
    #[command(after_help = "Examples:
  qlam-auth doctor
  qlam-auth doctor --context prod -v
  qlam-auth doctor --json | jq '.checks[] | select(.level == \"fail\")'

Each check prints ok, warn, FAIL or info, with the fix. Exit status 1 if any check FAILs.")]
    Doctor(DoctorArgs),

    /// Short-lived SSH certificates for service accounts (API key -> JWT -> certificate).
    #[command(subcommand)]
    Ssh(SshCommand),

    /// Print a shell completion script (for packagers and admins).
    #[command(
        hide = true,
        after_help = "Examples:
  qlam-auth completions bash > /etc/bash_completion.d/qlam-auth
  qlam-auth completions zsh > \"${fpath[1]}/_qlam-auth\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) to stdout, or write one page per subcommand (for packagers and
    /// admins).
    #[command(
        hide = true,
        after_help = "Examples:\n  qlam-auth man > /usr/local/share/man/man1/qlam-auth.1\n  \
qlam-auth man --dir /usr/local/share/man/man1   # qlam-auth.1, qlam-auth-login.1, ...\n\n\
The top page lists the subcommands as qlam-auth-login(1), qlam-auth-config-init(1), ..."
    )]
    Man {
        /// Write qlam-auth.1 and a page for every subcommand into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },

    /// Keep a Slurm job's token file valid while the job runs (started by the SPANK plugin).
    #[command(hide = true)]
    JobRenewer(JobRenewerArgs),
}

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

/// `ssh ...`.
#[derive(Debug, Subcommand)]
pub enum SshCommand {
    /// Make sure KEY-cert.pub is a valid certificate for KEY, renewing it only when needed.
    #[command(after_help = concat!("Examples:
  export QLAM_API_KEY=...            # in CI: a masked secret variable; never on the command line
  qlam-auth ssh sign                 # the site's default service, key ~/.ssh/qlam-sa
  ssh -i ~/.ssh/qlam-sa login.example.org hostname
  qlam-auth ssh sign --service cscs --min-valid 30 --quiet
  qlam-auth ssh sign --token-url https://auth.example.org/token \\
      --sign-url https://sshca.example.org/sign -f ~/.ssh/ci-key   # no config at all

The API key is read from the variable the service names (default QLAM_API_KEY) or from its
api_key_file (0600). It buys a JWT, cached 0600 under ~/.cache/qlam-auth/ssh/ for the JWT's own
short life; the JWT buys the certificate, which is checked (right key, valid now and for
--min-valid more, the principals and validity asked for) before it replaces KEY-cert.pub
atomically (mode 0644). Only KEY.pub is read and sent; the private key never is. Processes
that run this together wait for one renewal: one JWT request and one signing request.

--duration says what the service is expected to grant. A certificate that lives longer than
asked is refused (exit 24); one that lives shorter is used with a warning on stderr.
With --quiet nothing is printed on success; warnings and errors still go to stderr.
With --agent the key and certificate are also added to ssh-agent (`ssh-add -t REMAINING`), so
ssh, git and tools that only use the agent work too; the agent forgets them when they expire.

Services live in the \"ssh\" section of the site file /etc/qlam-auth/site.json (root-owned;
QLAM_AUTH_SITE_FILE names another) and of ~/.config/qlam-auth/ssh.json (user fields override
the site's). See docs/ssh.md.

", exit_codes!()))]
    Sign(SshSignArgs),

    /// Exit 0 if KEY-cert.pub is a certificate for KEY valid for --min-valid more (no network).
    #[command(after_help = concat!("Examples:
  qlam-auth ssh check && ssh -i ~/.ssh/qlam-sa host cmd
  qlam-auth ssh check -f ~/.ssh/ci-key --min-valid 30 --quiet || qlam-auth ssh sign -f ~/.ssh/ci-key

Exit 0: valid; 21: no certificate; 22: expired, not yet valid, or lapsing within --min-valid;
23: for another key, other principals than the service asks for, or unreadable.

", exit_codes!()))]
    Check(SshCheckArgs),

    /// Print an ssh_config block that renews the certificate by itself for plain ssh/scp/rsync/git.
    #[command(after_help = "Examples:
  qlam-auth ssh config 'login*.example.org' >> ~/.ssh/config
  qlam-auth ssh config --service cscs ela.cscs.ch daint.cscs.ch > ~/.ssh/qlam.conf
      # then put `Include ~/.ssh/qlam.conf` at the top of ~/.ssh/config
  ssh daint.cscs.ch hostname; scp f daint.cscs.ch:; rsync -a d/ daint.cscs.ch:d/

The block is `Match host PATTERNS exec \"qlam-auth ssh sign --quiet ...\"` with IdentityFile
and CertificateFile: before each connection to a matching host, ssh runs the sign command, which
returns at once while the certificate is valid and renews it otherwise. The API key must be in
the environment of the ssh command (or in the service's api_key_file).")]
    Config(SshConfigArgs),
}

/// Which service, and which key (shared by the ssh subcommands).
#[derive(Debug, Args, Clone)]
pub struct SshServiceArgs {
    /// The service, as named in the site file or ~/.config/qlam-auth/ssh.json (default: the
    /// config's default_service, or its only service).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// The private key whose certificate is KEY-cert.pub (only KEY.pub is read; default: the
    /// service's key, else ~/.ssh/qlam-sa).
    #[arg(short = 'f', long = "key", value_name = "KEY")]
    pub key: Option<std::path::PathBuf>,
    /// The certificate must stay valid at least this many more seconds (default 10).
    #[arg(long, value_name = "SECS")]
    pub min_valid: Option<u64>,
    /// The principals the certificate must carry, exactly (repeatable; default: the service's
    /// "principals", else not checked).
    #[arg(long = "principal", value_name = "NAME")]
    pub principals: Vec<String>,
}

/// The service's endpoints and API key (for `sign` and `config`).
#[derive(Debug, Args, Clone)]
pub struct SshEndpointArgs {
    /// The token URL (POST with X-API-Key gives a JWT); with --sign-url, no config is needed.
    #[arg(long, value_name = "URL")]
    pub token_url: Option<String>,
    /// The signing URL (POST with the JWT and the public key gives the certificate).
    #[arg(long, value_name = "URL")]
    pub sign_url: Option<String>,
    /// The environment variable that holds the API key (default: the service's, else
    /// QLAM_API_KEY). The key itself is never accepted on the command line.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// A file (yours, mode 0600) that holds the API key.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// The validity the service is expected to grant, e.g. 1m (default: the service's
    /// "duration"; unset: not checked).
    #[arg(long, value_name = "D")]
    pub duration: Option<String>,
    /// Bound on each HTTP request, in seconds (default 20).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// `ssh sign`.
#[derive(Debug, Args)]
pub struct SshSignArgs {
    /// Service and key.
    #[command(flatten)]
    pub which: SshServiceArgs,
    /// Endpoints and API key.
    #[command(flatten)]
    pub endpoint: SshEndpointArgs,
    /// Print nothing on success.
    #[arg(short, long)]
    pub quiet: bool,
    /// Get a new certificate even if the current one is still valid.
    #[arg(long)]
    pub force: bool,
    /// Also add KEY and its certificate to the running ssh-agent (SSH_AUTH_SOCK), with a
    /// lifetime equal to the certificate's remaining validity: the agent drops it when it
    /// expires.
    #[arg(long)]
    pub agent: bool,
}

/// `ssh check`.
#[derive(Debug, Args)]
pub struct SshCheckArgs {
    /// Service and key.
    #[command(flatten)]
    pub which: SshServiceArgs,
    /// Print nothing; only the exit status tells.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `ssh config`.
#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// Service and key.
    #[command(flatten)]
    pub which: SshServiceArgs,
    /// Endpoints and API key.
    #[command(flatten)]
    pub endpoint: SshEndpointArgs,
    /// The hosts the block applies to (ssh_config patterns, e.g. 'login*.example.org').
    #[arg(value_name = "HOST-PATTERN", required = true)]
    pub hosts: Vec<String>,
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

/// `config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Add or update a context with an oauth provider (keeps everything else in the file).
    #[command(after_help = "Examples:
  qlam-auth config init --issuer https://login.example.org --client-id qlam-cli
  qlam-auth config init --context prod --issuer https://tenant.eu.auth0.com \\
      --client-id AbC123 --audience https://api.qlam.example --tenant acme
  qlam-auth config init --context ci --grant client_credentials \\
      --issuer https://login.example.org --client-id svc --client-secret-env SVC_SECRET

Before writing, the issuer's OIDC discovery is fetched: a URL where nothing answers (HTTP 404,
an unknown host) or that names another issuer is refused (exit 11) and nothing is written;
--offline skips the check. The file is written atomically with mode 0600. Other contexts,
providers and fields are kept.
Updating an existing provider changes only what you pass (issuer and client id always);
pass an empty value to clear a field, e.g. --audience ''. The first context becomes
current_context; switch later with `qlam-auth use-context NAME`.")]
    Init(InitArgs),

    /// Print each effective setting and where it comes from (command line, user config, site
    /// file, default).
    #[command(after_help = "Examples:
  qlam-auth config show
  qlam-auth config show --context prod --json

Precedence: the command line (--context) > ~/.qsh/config.json > the site file
(/etc/qlam-auth/site.json, or $QLAM_AUTH_SITE_FILE). A context defined in ~/.qsh/config.json is
used as it is there; a context only the site file defines comes from the site file.")]
    Show(ShowArgs),
}

/// `config show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The context to show (default: the current one).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The grants `config init` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrantArg {
    /// Device code (RFC 8628): logins from terminals.
    #[value(name = "device_code")]
    DeviceCode,
    /// Authorization code + PKCE: logins with a local browser.
    #[value(name = "authorization_code")]
    AuthorizationCode,
    /// Client credentials: machine accounts, no login.
    #[value(name = "client_credentials")]
    ClientCredentials,
}

impl GrantArg {
    /// The config.json spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantArg::DeviceCode => "device_code",
            GrantArg::AuthorizationCode => "authorization_code",
            GrantArg::ClientCredentials => "client_credentials",
        }
    }
}

/// `config init`.
#[derive(Debug, Args, Clone)]
pub struct InitArgs {
    /// The identity provider's issuer URL (https; OIDC discovery must answer under it).
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// The OAuth client id registered for this tool.
    #[arg(long, value_name = "ID")]
    pub client_id: String,
    /// The API the tokens are for (sent as `audience`; '' clears it).
    #[arg(long, value_name = "A")]
    pub audience: Option<String>,
    /// The tenant / organization (adds the scope organization:T; '' clears it).
    #[arg(long, value_name = "T")]
    pub tenant: Option<String>,
    /// The context to create or update.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub context: String,
    /// The provider's name within the context (part of the credentials file name).
    #[arg(long, value_name = "NAME", default_value = "qlam")]
    pub provider_name: String,
    /// The OAuth grant (default device_code for a new provider).
    #[arg(long, value_enum)]
    pub grant: Option<GrantArg>,
    /// Take the client secret from this environment variable when a token is requested.
    #[arg(long, value_name = "VAR")]
    pub client_secret_env: Option<String>,
    /// The scope to request (unset: openid email profile offline_access for logins).
    #[arg(long, value_name = "S")]
    pub scope: Option<String>,
    /// The context's QPU (default "default" for a new context; kept when updating).
    #[arg(long, value_name = "Q")]
    pub qpu: Option<String>,
    /// Write the file without first checking that the issuer answers OIDC discovery.
    #[arg(long)]
    pub offline: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_man_page_for_every_subcommand_and_the_top_page_refers_to_them() {
        let dir = tempfile::tempdir().unwrap();
        clap_mangen::generate_to(Cli::command(), dir.path()).unwrap();
        let mut top = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut top)
            .unwrap();
        let top = String::from_utf8(top).unwrap();
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            let page = dir.path().join(format!("qlam-auth-{}.1", sub.get_name()));
            assert!(page.is_file(), "{}", page.display());
            let roff_name = format!("qlam\\-auth\\-{}(1)", sub.get_name().replace('-', "\\-"));
            assert!(top.contains(&roff_name), "the top page names {roff_name}");
        }
        assert!(dir.path().join("qlam-auth-config-show.1").is_file());
    }

    #[test]
    fn device_and_browser_conflict() {
        let e = Cli::try_parse_from(["qlam-auth", "login", "--device", "--browser"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
