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
    /// command fails (exit 5) rather than print a token that lapses sooner than asked.
    #[arg(long, value_name = "SECONDS")]
    pub min_valid: Option<u64>,
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
