//! `~/.qsh/config.json`, read as QLAM Core 0.10 reads it.
//!
//! Only what qlam-auth needs is interpreted (contexts, `current_context`,
//! `defaults.auth_provider`, oauth providers); everything else is kept untouched so that a file
//! rewritten by `qlam-auth config init` still loads in QLAM Core.

use crate::fsutil::{self, Policy};
use crate::paths::QshPaths;
use crate::secret::Secret;
use crate::site::Site;
use crate::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Largest config file we read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

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

/// Where a client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the config (discouraged; the file must then be private).
    Literal(Secret),
    /// `env:VARIABLE`, resolved when a token is requested.
    Env(String),
    /// `file:/path`, read when a token is requested (first line, trimmed; a second line is the
    /// next secret during a rotation).
    File(PathBuf),
    /// `private_key_jwt:/path/key.pem`: no shared secret; the client signs an RFC 7523 assertion
    /// with this PEM key (EC P-256 → ES256, RSA → RS256). Spelled inside `client_secret` because
    /// QLAM Core's provider model forbids unknown keys.
    PrivateKeyJwt(PathBuf),
}

/// Suffix of the environment variable holding the next secret during a rotation
/// (`env:VAR` → `$VAR_NEXT`).
pub const NEXT_SECRET_SUFFIX: &str = "_NEXT";

impl SecretSource {
    /// Parses the config spelling: `env:VAR`, `file:/path`, `private_key_jwt:/path`, or a literal.
    pub fn parse(s: &str) -> Self {
        if let Some(p) = s.strip_prefix("private_key_jwt:") {
            SecretSource::PrivateKeyJwt(PathBuf::from(p))
        } else if let Some(var) = s.strip_prefix("env:") {
            SecretSource::Env(var.to_owned())
        } else if let Some(p) = s.strip_prefix("file:") {
            SecretSource::File(PathBuf::from(p))
        } else {
            SecretSource::Literal(Secret::new(s))
        }
    }

    /// The secret itself; `field` names where it was configured, for messages; `env` looks up
    /// `env:` references (the process environment, or a job's).
    pub fn resolve(&self, config_path: &Path, field: &str, env: &EnvSnapshot) -> Result<Secret> {
        self.resolve_all(config_path, field, env)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::config(config_path, field, "the secret is empty"))
    }

    /// The secret and, during a rotation, the next one (`$VAR_NEXT`, or the second line of a
    /// secret file): the caller tries the second when the IdP answers `invalid_client`.
    pub fn resolve_all(
        &self,
        config_path: &Path,
        field: &str,
        env: &EnvSnapshot,
    ) -> Result<Vec<Secret>> {
        let next = |var: &str| {
            env.get(&format!("{var}{NEXT_SECRET_SUFFIX}"))
                .filter(|v| !v.is_empty())
        };
        let one = match self {
            SecretSource::Literal(s) => Ok(s.clone()),
            SecretSource::PrivateKeyJwt(p) => Err(Error::config(
                config_path,
                field,
                format!(
                    "names the private key {} (private_key_jwt), not a secret",
                    p.display()
                ),
            )),
            SecretSource::Env(var) => match env.get(var) {
                Some(v) if !v.is_empty() => {
                    return Ok(std::iter::once(v).chain(next(var)).collect());
                }
                _ => Err(Error::config(
                    config_path,
                    field,
                    format!(
                        "the client secret is taken from ${var}, which is unset or empty: export it"
                    ),
                )),
            },
            SecretSource::File(p) => {
                let bytes = fsutil::read_file_following(p, Policy::PRIVATE, 64 * 1024)?
                    .ok_or_else(|| {
                        Error::config(
                            config_path,
                            field,
                            format!("the secret file {} does not exist", p.display()),
                        )
                    })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::config(
                        config_path,
                        field,
                        format!("the secret file {} is not UTF-8", p.display()),
                    )
                })?;
                let text = zeroize::Zeroizing::new(text);
                let lines: Vec<Secret> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .take(2)
                    .map(Secret::new)
                    .collect();
                if lines.is_empty() {
                    return Err(Error::config(
                        config_path,
                        field,
                        format!("the secret file {} is empty", p.display()),
                    ));
                }
                return Ok(lines);
            }
        };
        one.map(|s| vec![s])
    }
}

/// Values of the environment variables a provider refers to (`env:VAR`), captured when the
/// provider was resolved, from the process or from a job's environment.
#[derive(Debug, Clone, Default)]
pub struct EnvSnapshot(Vec<(String, Secret)>);

impl EnvSnapshot {
    /// Captures `names` through `lookup`.
    pub fn capture(names: &[&str], lookup: &dyn Fn(&str) -> Option<String>) -> Self {
        EnvSnapshot(
            names
                .iter()
                .filter_map(|n| lookup(n).map(|v| ((*n).to_owned(), Secret::new(v))))
                .collect(),
        )
    }

    /// The captured value of `name`.
    pub fn get(&self, name: &str) -> Option<Secret> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
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
    /// The file this came from (for messages).
    pub config_path: PathBuf,
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

/// Normalizes an issuer: adds `https://` to a bare host, strips one trailing `/`, refuses
/// anything but https (plain http only for a loopback host, and only if `allow_http_loopback`).
pub fn normalize_issuer(
    raw: &str,
    allow_http_loopback: bool,
) -> std::result::Result<String, String> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("https://{raw}")
    };
    let url = with_scheme.trim_end_matches('/').to_owned();
    let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Only printable ASCII: whitespace or control characters in an issuer are never legitimate
    // and would be refused later by the HTTP stack with a less helpful message.
    let printable = url.chars().all(|c| c.is_ascii_graphic());
    if !printable || host.is_empty() || rest.contains(['?', '#']) || host.contains('@') {
        return Err(format!(
            "'{raw}' is not an issuer URL (expected https://host[:port][/path])"
        ));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(url),
        "http" if allow_http_loopback && is_loopback_host(host) => Ok(url),
        "http" => Err(format!(
            "'{raw}' uses plain http; identity providers must be reached over https"
        )),
        _ => Err(format!("'{raw}' is not an https URL")),
    }
}

fn is_loopback_host(hostport: &str) -> bool {
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A loaded config.json, with the site file's contexts behind it.
///
/// Precedence: the command line (`--context`) > the user's config.json > the site file. A
/// context the user's file defines is used as it is (QLAM Core reads only that file, so it must
/// be complete); a context only the site defines comes from the site file.
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    root: Value,
    site: Option<Site>,
    exists: bool,
}

/// Where an effective setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    CommandLine,
    /// The user's config.json.
    UserConfig,
    /// The site file.
    SiteFile,
    /// qlam-auth's (or QLAM Core's) built-in default.
    Default,
}

impl Origin {
    /// How `config show` and `doctor` name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::CommandLine => "command line",
            Origin::UserConfig => "user config",
            Origin::SiteFile => "site file",
            Origin::Default => "default",
        }
    }
}

fn field_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &Path,
    at: &str,
) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::config(
            path,
            format!("{at}.{key}"),
            "must be a string",
        )),
    }
}

impl Config {
    /// Loads the config file named by `paths`. A missing file is [`Error::Config`] with a hint.
    pub fn load(paths: &QshPaths) -> Result<Self> {
        Self::load_with_site(paths, None)
    }

    /// Loads the user's config file with the site's contexts behind it. Without a user file,
    /// the site's contexts alone make the config (the user has not logged in yet); without
    /// either, [`Error::Config`] says how to set one up.
    pub fn load_with_site(paths: &QshPaths, site: Option<Site>) -> Result<Self> {
        let bytes = fsutil::read_file_following(
            &paths.config_file,
            Policy::NOT_WRITABLE_BY_OTHERS,
            MAX_CONFIG_BYTES,
        )?;
        match bytes {
            Some(bytes) => {
                let mut c = Self::from_bytes(&paths.config_file, &bytes)?;
                c.site = site;
                Ok(c)
            }
            None => match site {
                Some(site) if !site.contexts.is_empty() => {
                    let mut c = Self::empty(&paths.config_file);
                    c.site = Some(site);
                    Ok(c)
                }
                _ => Err(Error::config(
                    &paths.config_file,
                    "",
                    "no qsh configuration found, and this machine has no site file with default \
                     contexts: ask your site admins for the issuer and client id (or for a site \
                     file, see docs/admin.md), then run `qlam-auth config init --issuer URL \
                     --client-id ID` and `qlam-auth login`; or set QSH_CONFIG_DIR",
                )),
            },
        }
    }

    /// This config with `site`'s contexts behind it.
    pub fn with_site(mut self, site: Option<Site>) -> Self {
        self.site = site;
        self
    }

    /// The site file behind this config, if any.
    pub fn site(&self) -> Option<&Site> {
        self.site.as_ref()
    }

    /// True if the user's config file exists (else only the site's contexts are known).
    pub fn user_file_exists(&self) -> bool {
        self.exists
    }

    /// True if the user's config file defines `context`.
    pub fn user_has_context(&self, context: &str) -> bool {
        self.user_context_names().iter().any(|n| n == context)
    }

    /// Where `current_context` comes from: the user's file, else the site's default context.
    pub fn current_context_origin(&self) -> Option<Origin> {
        if self.user_current_context().is_some() {
            Some(Origin::UserConfig)
        } else if self
            .site
            .as_ref()
            .and_then(|s| s.default_context.as_ref())
            .is_some()
        {
            Some(Origin::SiteFile)
        } else {
            None
        }
    }

    /// Parses config JSON that came from `path`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let root: Value = serde_json::from_slice(bytes).map_err(|e| {
            Error::config(
                path,
                "",
                format!("not valid JSON (line {}, column {})", e.line(), e.column()),
            )
        })?;
        let cfg = Config {
            path: path.to_owned(),
            root,
            site: None,
            exists: true,
        };
        cfg.contexts()?;
        Ok(cfg)
    }

    /// An empty config that will be written to `path`.
    pub fn empty(path: &Path) -> Self {
        Config {
            path: path.to_owned(),
            root: serde_json::json!({ "current_context": null, "contexts": [] }),
            site: None,
            exists: false,
        }
    }

    /// The file this config came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw JSON (for writers that keep unknown fields).
    pub fn json(&self) -> &Value {
        &self.root
    }

    /// The raw JSON, mutable.
    pub fn json_mut(&mut self) -> &mut Value {
        &mut self.root
    }

    fn contexts(&self) -> Result<&Vec<Value>> {
        let obj = self
            .root
            .as_object()
            .ok_or_else(|| Error::config(&self.path, "", "must be a JSON object"))?;
        match obj.get("contexts") {
            Some(Value::Array(a)) => Ok(a),
            None => Err(Error::config(
                &self.path,
                "contexts",
                "missing: the config must list its contexts",
            )),
            Some(_) => Err(Error::config(&self.path, "contexts", "must be a list")),
        }
    }

    fn user_current_context(&self) -> Option<&str> {
        self.root
            .get("current_context")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
    }

    /// `current_context` of the user's file if set, else the site's default context.
    pub fn current_context(&self) -> Option<&str> {
        self.user_current_context()
            .or_else(|| self.site.as_ref()?.default_context.as_deref())
    }

    fn user_context_names(&self) -> Vec<String> {
        self.contexts()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The names of all contexts: the user's file in file order, then the site's others.
    pub fn context_names(&self) -> Vec<String> {
        let mut names = self.user_context_names();
        if let Some(site) = &self.site {
            for c in &site.contexts {
                if !names.contains(&c.name) {
                    names.push(c.name.clone());
                }
            }
        }
        names
    }

    /// The context names closest to a mistyped `name` (for "did you mean").
    pub fn similar_context(&self, name: &str) -> Option<String> {
        self.context_names()
            .into_iter()
            .map(|n| {
                (
                    strsim::levenshtein(&n.to_lowercase(), &name.to_lowercase()),
                    n,
                )
            })
            .filter(|(d, n)| *d <= 2.max(n.len() / 3))
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| n)
    }

    /// The oauth provider of `context` (default: `current_context`), as `defaults.auth_provider`
    /// names it (if unset: the context's only oauth provider).
    pub fn provider(&self, context: Option<&str>) -> Result<ProviderConfig> {
        self.provider_with_env(context, &|k| std::env::var(k).ok())
    }

    /// As [`Config::provider`], with `env:` references looked up through `env` (the plugin passes
    /// the job's environment).
    pub fn provider_with_env(
        &self,
        context: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProviderConfig> {
        let name = match context.filter(|c| !c.is_empty()) {
            Some(c) => c,
            None => self.current_context().ok_or_else(|| {
                Error::config(&self.path, "current_context", "no current context is set: pass --context NAME or set one with `qlam-auth use-context NAME`")
            })?,
        };
        let contexts = self.contexts()?;
        let site_ctx;
        let (path, at, ctx) = match contexts
            .iter()
            .enumerate()
            .find(|(_, c)| c.get("name").and_then(Value::as_str) == Some(name))
        {
            Some((idx, ctx)) => (self.path.clone(), format!("contexts[{idx}]"), ctx),
            None => {
                let found = self.site.as_ref().and_then(|s| {
                    let i = s.contexts.iter().position(|c| c.name == name)?;
                    Some((s.path.clone(), i, s.contexts[i].to_qsh_context()))
                });
                let Some((site_path, i, v)) = found else {
                    let hint = match self.similar_context(name) {
                        Some(n) => format!("did you mean '{n}'? "),
                        None => String::new(),
                    };
                    return Err(Error::config(
                        &self.path,
                        "contexts",
                        format!(
                            "there is no context named '{name}': {hint}known: {}; see \
                             `qlam-auth config show`",
                            self.context_names().join(", ")
                        ),
                    ));
                };
                site_ctx = v;
                (site_path, format!("contexts[{i}]"), &site_ctx)
            }
        };
        Self::provider_in(&path, name, ctx, &at, env)
    }

    fn provider_in(
        path: &Path,
        name: &str,
        ctx: &Value,
        at: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProviderConfig> {
        let ctx = ctx
            .as_object()
            .ok_or_else(|| Error::config(path, at, "must be an object"))?;
        let wanted = match ctx.get("defaults") {
            Some(Value::Object(d)) => {
                field_str(d, "auth_provider", path, &format!("{at}.defaults"))?
            }
            None | Some(Value::Null) => None,
            Some(_) => {
                return Err(Error::config(
                    path,
                    format!("{at}.defaults"),
                    "must be an object",
                ));
            }
        };
        let providers = match ctx.get("auth_providers") {
            Some(Value::Array(a)) => a.as_slice(),
            None | Some(Value::Null) => &[],
            Some(_) => {
                return Err(Error::config(
                    path,
                    format!("{at}.auth_providers"),
                    "must be a list",
                ));
            }
        };
        let oauth: Vec<(usize, &Map<String, Value>)> = providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_object().map(|o| (i, o)))
            .filter(|(_, p)| p.get("provider").and_then(Value::as_str) == Some("oauth"))
            .collect();
        let (pidx, p) = match wanted {
            Some(w) => *oauth
                .iter()
                .find(|(_, p)| p.get("name").and_then(Value::as_str) == Some(w))
                .ok_or_else(|| {
                    Error::config(
                        path,
                        format!("{at}.defaults.auth_provider"),
                        format!(
                            "names '{w}', but context '{name}' has no oauth provider of that name"
                        ),
                    )
                })?,
            None if oauth.len() == 1 => oauth[0],
            None => {
                return Err(Error::config(
                    path,
                    format!("{at}.defaults.auth_provider"),
                    format!(
                        "context '{name}' has {} oauth providers: name the one to use here",
                        oauth.len()
                    ),
                ));
            }
        };
        Self::parse_provider(path, name, p, &format!("{at}.auth_providers[{pidx}]"), env)
    }

    fn parse_provider(
        path: &Path,
        context: &str,
        p: &Map<String, Value>,
        at: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProviderConfig> {
        let get = |k: &str| field_str(p, k, path, at);
        let need = |k: &str| -> Result<String> {
            get(k)?
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::config(
                        path,
                        format!("{at}.{k}"),
                        "is required for an oauth provider",
                    )
                })
        };
        let name = need("name")?;
        let client_id = need("client_id")?;
        let raw_issuer = need("auth_base_url")?;
        let issuer = normalize_issuer(&raw_issuer, allow_http_loopback_from_env())
            .map_err(|m| Error::config(path, format!("{at}.auth_base_url"), m))?;
        let client_secret = get("client_secret")?.map(SecretSource::parse);
        let grant_type = match get("grant_type")? {
            None => GrantType::AuthorizationCode,
            Some(g) => GrantType::parse(g).ok_or_else(|| {
                Error::config(path, format!("{at}.grant_type"), format!("'{g}' is not one of device_code, authorization_code, client_credentials, token_exchange"))
            })?,
        };
        if grant_type == GrantType::ClientCredentials && client_secret.is_none() {
            return Err(Error::config(
                path,
                format!("{at}.client_secret"),
                "is required for client_credentials",
            ));
        }
        let scope = match get("scope")? {
            Some(s) => Some(s.to_owned()),
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
            audience: get("audience")?.map(str::to_owned),
            tenant: get("tenant")?.map(str::to_owned),
            subject_token_type: get("subject_token_type")?.map(str::to_owned),
            subject_token: get("subject_token")?.map(str::to_owned),
            config_path: path.to_path_buf(),
            env: EnvSnapshot::default(),
        }
        .with_env(env))
    }
}

/// `QLAM_AUTH_ALLOW_HTTP_LOOPBACK=1` permits `http://127.0.0.1...` issuers (development only).
pub fn allow_http_loopback_from_env() -> bool {
    std::env::var("QLAM_AUTH_ALLOW_HTTP_LOOPBACK").is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<Config> {
        Config::from_bytes(Path::new("/t/config.json"), json.as_bytes())
    }

    const GOOD: &str = r#"{
      "current_context": "prod",
      "contexts": [
        {"name": "prod", "qpu": "q1",
         "defaults": {"api_base_url": "https://api.example", "auth_provider": "quera"},
         "auth_providers": [
           {"provider": "basic", "name": "b", "username": "u", "password": "p"},
           {"provider": "oauth", "name": "quera", "auth_base_url": "https://idp.example/",
            "client_id": "cli", "client_secret": null, "grant_type": "device_code",
            "scope": null, "audience": "https://api.example", "tenant": "t1"}]},
        {"name": "m2m", "qpu": "q1",
         "auth_providers": [{"provider": "oauth", "name": "svc", "auth_base_url": "idp.example",
            "client_id": "svc", "client_secret": "env:SVC_SECRET", "grant_type": "client_credentials"}]}
      ]}"#;

    #[test]
    fn reads_current_context_provider() {
        let p = cfg(GOOD).unwrap().provider(None).unwrap();
        assert_eq!(p.context, "prod");
        assert_eq!(p.name, "quera");
        assert_eq!(p.issuer, "https://idp.example");
        assert_eq!(p.grant_type, GrantType::DeviceCode);
        assert_eq!(p.scope.as_deref(), Some(DEFAULT_USER_SCOPE));
        assert_eq!(p.tenant.as_deref(), Some("t1"));
        assert_eq!(p.cache_key(), "oauth_prod_quera");
    }

    #[test]
    fn named_context_with_single_provider_and_env_secret() {
        let p = cfg(GOOD).unwrap().provider(Some("m2m")).unwrap();
        assert_eq!(p.issuer, "https://idp.example");
        assert_eq!(p.scope, None);
        assert_eq!(
            p.client_secret,
            Some(SecretSource::Env("SVC_SECRET".into()))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = cfg(GOOD)
            .unwrap()
            .provider(Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no context named 'nope'") && e.contains("prod, m2m"),
            "{e}"
        );
        let bad = GOOD.replace("\"client_id\": \"cli\"", "\"client_id\": 7");
        let e = cfg(&bad).unwrap().provider(None).unwrap_err().to_string();
        assert!(
            e.contains("contexts[0].auth_providers[1].client_id") && e.contains("string"),
            "{e}"
        );
        let e = cfg("{nope").unwrap_err().to_string();
        assert!(
            e.contains("not valid JSON") && e.contains("/t/config.json"),
            "{e}"
        );
        let http = GOOD.replace("https://idp.example/", "http://idp.example");
        let e = cfg(&http).unwrap().provider(None).unwrap_err().to_string();
        assert!(e.contains("plain http"), "{e}");
    }

    #[test]
    fn the_site_file_is_behind_the_users_config() {
        let site = crate::site::Site::from_bytes(
            Path::new("/etc/qlam-auth/site.json"),
            br#"{"default_context": "hpc", "contexts": [
                {"name": "prod", "issuer": "https://site.example", "client_id": "site-prod"},
                {"name": "hpc", "issuer": "https://site.example", "client_id": "site-hpc"}]}"#,
        )
        .unwrap();
        let c = cfg(GOOD).unwrap().with_site(Some(site.clone()));
        let p = c.provider(Some("prod")).unwrap();
        assert_eq!(p.client_id, "cli", "the user's context wins");
        assert_eq!(p.config_path, Path::new("/t/config.json"));
        let p = c.provider(Some("hpc")).unwrap();
        assert_eq!(p.client_id, "site-hpc");
        assert_eq!(p.config_path, Path::new("/etc/qlam-auth/site.json"));
        assert_eq!(p.cache_key(), "oauth_hpc_qlam");
        assert_eq!(c.current_context(), Some("prod"));
        assert_eq!(c.current_context_origin(), Some(Origin::UserConfig));
        assert_eq!(c.context_names(), ["prod", "m2m", "hpc"]);
        let e = c.provider(Some("hcp")).unwrap_err().to_string();
        assert!(e.contains("did you mean 'hpc'"), "{e}");
        // No current context of the user's own: the site's default.
        let mut none = cfg(GOOD).unwrap().with_site(Some(site));
        none.json_mut()["current_context"] = Value::Null;
        assert_eq!(none.current_context(), Some("hpc"));
        assert_eq!(none.current_context_origin(), Some(Origin::SiteFile));
    }

    #[test]
    fn issuer_normalization() {
        assert_eq!(
            normalize_issuer("idp.example:8443", false).unwrap(),
            "https://idp.example:8443"
        );
        assert!(normalize_issuer("http://127.0.0.1:9", false).is_err());
        assert_eq!(
            normalize_issuer("http://127.0.0.1:9/", true).unwrap(),
            "http://127.0.0.1:9"
        );
        assert!(normalize_issuer("http://evil.example", true).is_err());
        assert!(normalize_issuer("https://user@evil.example", false).is_err());
        assert!(normalize_issuer("ftp://x", false).is_err());
    }
}
