//! The arguments of `qlam-auth config init|show`.

use clap::{Args, Subcommand, ValueEnum};

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
