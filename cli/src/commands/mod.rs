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
use token_core::broker::Broker;
use token_core::config::ProviderConfig;
use token_core::http::HttpSettings;

/// What most commands work on: one context's provider, and its broker.
#[derive(Debug)]
pub struct Selected {
    /// The selected context's oauth provider.
    pub provider: ProviderConfig,
    /// Its tokens.
    pub broker: Broker,
}

/// How we reach identity providers.
pub fn http_settings() -> HttpSettings {
    HttpSettings::default()
}

/// Selects `context` (default: `current_context`) from the config, or the implicit context
/// `env` of environment mode (`QLAM_CLIENT_ID`, `QLAM_CLIENT_SECRET`, `QLAM_AUDIENCE`,
/// `AUTH_BASE_URL`): with `--context env`, or with no config file at all.
pub fn select(context: Option<&str>) -> Result<Selected, Failure> {
    let broker = token_core::m2m::select_broker(context, &http_settings())?;
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
