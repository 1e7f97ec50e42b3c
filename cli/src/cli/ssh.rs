//! The arguments of `qlam-auth ssh sign|check|config`.

use clap::{Args, Subcommand};

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
