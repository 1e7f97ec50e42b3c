//! Provider resolution: from a context of config.json (or of the site file) to the one oauth
//! provider to use, with QLAM Core's defaults applied ([`ProviderConfig`]).

use super::ConfigSource;
use super::issuer::normalize_issuer;
use super::model::{self, AuthProvider, Context, ProviderEntry};
use super::secret::{EnvSnapshot, NEXT_SECRET_SUFFIX, SecretSource};
use crate::secret::Secret;
use crate::{Error, Result};

/// Default scope of user flows (QLAM Core's).
pub const DEFAULT_USER_SCOPE: &str = "openid email profile offline_access";

/// The OAuth grant a provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    /// RFC 8628, for users on a terminal.
    DeviceCode,
    /// RFC 6749 + PKCE, for users with a browser.
    AuthorizationCode,
    /// Machine to machine.
    ClientCredentials,
    /// RFC 8693.
    TokenExchange,
}

impl GrantType {
    /// The spelling in config.json.
    pub fn as_str(&self) -> &'static str {
        match self {
            GrantType::DeviceCode => "device_code",
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::TokenExchange => "token_exchange",
        }
    }

    /// Parses the config.json spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "device_code" => GrantType::DeviceCode,
            "authorization_code" => GrantType::AuthorizationCode,
            "client_credentials" => GrantType::ClientCredentials,
            "token_exchange" => GrantType::TokenExchange,
            _ => return None,
        })
    }

    /// True for grants that log a person in and keep a refresh token.
    pub fn is_user_flow(&self) -> bool {
        matches!(self, GrantType::DeviceCode | GrantType::AuthorizationCode)
    }
}

/// One oauth provider of one context, with everything needed to talk to its IdP.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The qsh context name.
    pub context: String,
    /// The provider's `name` (part of the credentials cache key).
    pub name: String,
    /// The issuer (`auth_base_url`), normalized: `https://host[:port][/path]`, no trailing slash.
    pub issuer: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The client secret, if the client is confidential.
    pub client_secret: Option<SecretSource>,
    /// The grant.
    pub grant_type: GrantType,
    /// The scope to request (QLAM Core's default applied).
    pub scope: Option<String>,
    /// The API audience.
    pub audience: Option<String>,
    /// The Auth0 organization, if any.
    pub tenant: Option<String>,
    /// Token exchange: the subject token type.
    pub subject_token_type: Option<String>,
    /// Token exchange: `env:VAR` holding the subject token.
    pub subject_token: Option<String>,
    /// Where this came from (for messages): the user's file, the site file, the environment.
    pub config_path: ConfigSource,
    /// Values of the `env:` variables this provider refers to.
    pub env: EnvSnapshot,
}

impl ProviderConfig {
    /// Captures the `env:` variables this provider refers to through `lookup`, and the two that
    /// shape its requests (`QLAM_CLIENT_AUTH_METHOD`, `QLAM_AUTH_AUDIENCE_PARAM`, read by
    /// [`crate::oauth::OAuthClient::new`]).
    pub fn with_env(mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut names: Vec<&str> = vec![
            crate::oauth::CLIENT_AUTH_METHOD_VAR,
            crate::oauth::AUDIENCE_PARAM_VAR,
        ];
        let next;
        if let Some(SecretSource::Env(v)) = &self.client_secret {
            names.push(v);
            next = format!("{v}{NEXT_SECRET_SUFFIX}");
            names.push(&next);
        }
        if let Some(v) = self
            .subject_token
            .as_deref()
            .and_then(|s| s.strip_prefix("env:"))
        {
            names.push(v);
        }
        self.env = EnvSnapshot::capture(&names, lookup);
        self
    }

    /// QLAM Core's credentials cache key: `oauth_<context>_<provider name>`.
    pub fn cache_key(&self) -> String {
        format!("oauth_{}_{}", self.context, self.name)
    }

    /// The client secret, resolved now, if one is configured. For `private_key_jwt` the key is
    /// loaded (so that a broken key is reported) and `None` is returned: there is no secret.
    pub fn resolve_secret(&self) -> Result<Option<Secret>> {
        if let Some(SecretSource::PrivateKeyJwt(p)) = &self.client_secret {
            crate::assertion::SigningKey::load(p)?;
            return Ok(None);
        }
        self.client_secret
            .as_ref()
            .map(|s| s.resolve(&self.config_path, "client_secret", &self.env))
            .transpose()
    }
}

/// The oauth provider of context `ctx` (found at `at` in `source`), as `defaults.auth_provider`
/// names it (if unset: the context's only oauth provider); `env` looks up its `env:` references.
pub(crate) fn resolve(
    source: &ConfigSource,
    ctx: &Context,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    allow_http_loopback: bool,
) -> Result<ProviderConfig> {
    let name = &ctx.name;
    let oauth: Vec<(usize, &ProviderEntry)> = ctx
        .providers()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_oauth())
        .collect();
    let (pidx, p) = match ctx.default_provider() {
        Some(w) => *oauth
            .iter()
            .find(|(_, p)| p.name() == Some(w))
            .ok_or_else(|| {
                Error::config(
                    source,
                    format!("{at}.defaults.auth_provider"),
                    format!("names '{w}', but context '{name}' has no oauth provider of that name"),
                )
            })?,
        None if oauth.len() == 1 => oauth[0],
        None => {
            return Err(Error::config(
                source,
                format!("{at}.defaults.auth_provider"),
                format!(
                    "context '{name}' has {} oauth providers: name the one to use here",
                    oauth.len()
                ),
            ));
        }
    };
    let at = format!("{at}.auth_providers[{pidx}]");
    let entry = p.typed(source, &at)?;
    from_entry(source, name, &entry, &at, env, allow_http_loopback)
}

fn from_entry(
    source: &ConfigSource,
    context: &str,
    p: &AuthProvider,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    allow_http_loopback: bool,
) -> Result<ProviderConfig> {
    let get = |f: &model::Field<String>| model::value(f).cloned();
    let need = |f: &model::Field<String>, k: &str| -> Result<String> {
        get(f).filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::config(
                source,
                format!("{at}.{k}"),
                "is required for an oauth provider",
            )
        })
    };
    let name = need(&p.name, "name")?;
    let client_id = need(&p.client_id, "client_id")?;
    let raw_issuer = need(&p.auth_base_url, "auth_base_url")?;
    let issuer = normalize_issuer(&raw_issuer, allow_http_loopback)
        .map_err(|m| Error::config(source, format!("{at}.auth_base_url"), m))?;
    let client_secret = model::value(&p.client_secret).map(|s| SecretSource::parse(s));
    let grant_type = match model::value(&p.grant_type) {
        None => GrantType::AuthorizationCode,
        Some(g) => GrantType::parse(g).ok_or_else(|| {
            Error::config(
                source,
                format!("{at}.grant_type"),
                format!(
                    "'{g}' is not one of device_code, authorization_code, client_credentials, \
                     token_exchange"
                ),
            )
        })?,
    };
    if grant_type == GrantType::ClientCredentials && client_secret.is_none() {
        return Err(Error::config(
            source,
            format!("{at}.client_secret"),
            "is required for client_credentials",
        ));
    }
    let scope = match get(&p.scope) {
        Some(s) => Some(s),
        None => {
            let m2m = grant_type == GrantType::ClientCredentials
                || (client_secret.is_some() && grant_type != GrantType::DeviceCode);
            (!(m2m || grant_type == GrantType::TokenExchange))
                .then(|| DEFAULT_USER_SCOPE.to_owned())
        }
    };
    Ok(ProviderConfig {
        context: context.to_owned(),
        name,
        issuer,
        client_id,
        client_secret,
        grant_type,
        scope,
        audience: get(&p.audience),
        tenant: get(&p.tenant),
        subject_token_type: get(&p.subject_token_type),
        subject_token: get(&p.subject_token),
        config_path: source.clone(),
        env: EnvSnapshot::default(),
    }
    .with_env(env))
}
