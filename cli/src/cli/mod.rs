//! The command line, as clap derives it. Help texts teach by example; the exit codes are
//! written once (in `exit_codes!`) and shown by `--help`, `token --help` and the man page.

use clap::{ArgAction, Parser, Subcommand};

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

// After `exit_codes!`, which their help texts use.
mod config;
mod ssh;
mod user;

pub use config::{ConfigCommand, GrantArg, InitArgs, ShowArgs};
pub use ssh::{
    SshCheckArgs, SshCommand, SshConfigArgs, SshEndpointArgs, SshServiceArgs, SshSignArgs,
};
pub use user::{DoctorArgs, JobRenewerArgs, LoginArgs, LogoutArgs, StatusArgs, TokenArgs};

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
