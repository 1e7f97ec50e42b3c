//! One module per subcommand, plus what they share: finding the config, the provider and its
//! broker.

pub mod config;
pub mod doctor;
pub mod login;
pub mod logout;
pub mod renewer;
pub mod ssh;
pub mod status;
pub mod token;

use crate::exit::Failure;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use token_core::broker::Broker;
use token_core::config::{Config, ProviderConfig};
use token_core::http::HttpSettings;
use token_core::paths::QshPaths;
use token_core::site::Site;

static SITE_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Sets the site file's path (`main` reads `QLAM_AUTH_SITE_FILE`); once, before any command.
pub fn set_site_file(path: PathBuf) {
    let _ = SITE_FILE.set(path);
}

/// The site file's path (default `/etc/qlam-auth/site.json`).
pub fn site_file() -> &'static Path {
    SITE_FILE.get_or_init(|| PathBuf::from(token_core::site::DEFAULT_SITE_FILE))
}

/// The site file, if there is one; refused (with the fix) if others could have changed it.
pub fn load_site() -> Result<Option<Site>, Failure> {
    Ok(Site::load(site_file())?)
}

/// The CLI's environment: commands read variables through this, and pass it to token-core
/// (which reads none itself).
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// This user's qsh paths: `HOME` (else the password database), `QSH_CONFIG_DIR`, `QSH_CONFIG`.
pub fn qsh_paths() -> token_core::Result<QshPaths> {
    QshPaths::from_env(&env, std::env::home_dir())
}

/// True if `QLAM_AUTH_ALLOW_HTTP_LOOPBACK=1` allows plain http to a loopback issuer
/// (development only).
pub fn http_loopback() -> bool {
    token_core::config::allow_http_loopback(&env)
}

/// The user's config with the site's contexts behind it.
pub fn load_config(paths: &QshPaths) -> Result<Config, Failure> {
    Ok(Config::load_with_site(paths, load_site()?)?.with_http_loopback(http_loopback()))
}

/// Warns when pipeline variables are set but a config file makes them unused.
pub fn warn_ignored_pipeline_vars(context: Option<&str>, paths: &QshPaths) {
    let id_set = env(token_core::m2m::vars::CLIENT_ID).is_some_and(|v| !v.trim().is_empty());
    if id_set && context.is_none() && paths.config_file.exists() {
        crate::ui::warn(&format!(
            "{} and the other pipeline variables are ignored because {} exists (precedence: \
             --context, then that file, then the site file; the variables apply only without a \
             config file): pass --context env to use them",
            token_core::m2m::vars::CLIENT_ID,
            paths.config_file.display()
        ));
    }
}

/// What most commands work on: one context's provider, and its broker.
#[derive(Debug)]
pub struct Selected {
    /// The selected context's oauth provider.
    pub provider: ProviderConfig,
    /// Its tokens.
    pub broker: Broker,
}

/// How we reach identity providers: the defaults, plus `SSL_CERT_FILE` from our environment.
pub fn http_settings() -> HttpSettings {
    HttpSettings::default().with_env(&|k| std::env::var_os(k))
}

/// Selects `context` (default: `current_context`) from the config, or the implicit context
/// `env` of environment mode (`QLAM_CLIENT_ID`, `QLAM_CLIENT_SECRET`, `QLAM_AUDIENCE`,
/// `AUTH_BASE_URL`): with `--context env`, or with no config file at all.
pub fn select(context: Option<&str>) -> Result<Selected, Failure> {
    if let Ok(paths) = qsh_paths() {
        warn_ignored_pipeline_vars(context, &paths);
    }
    let paths = qsh_paths()?;
    let broker =
        token_core::m2m::select_broker(context, &paths, &env, &http_settings(), load_site()?)?;
    Ok(Selected {
        provider: broker.provider().clone(),
        broker,
    })
}

/// The subject (email, username or sub) of a login: from the ID token, else the access token.
pub fn subject_of(
    id_token: Option<&token_core::secret::Secret>,
    access_token: &token_core::secret::Secret,
) -> Option<String> {
    id_token
        .and_then(|t| token_core::jwt::subject(t.expose()))
        .or_else(|| token_core::jwt::subject(access_token.expose()))
}
