//! Machine-to-machine (client credentials) specifics that do not fit QLAM Core's config model:
//!
//! * [`Settings`]: qlam-auth's own settings file `qlam-auth.json`, beside `config.json` (QLAM
//!   Core's provider model forbids unknown keys, so nothing of ours goes into config.json):
//!   monthly token budgets and the client authentication method, per client id.
//! * [`env_context`]: the implicit context `env` made from `QLAM_CLIENT_ID`,
//!   `QLAM_CLIENT_SECRET`, `QLAM_AUDIENCE` and `AUTH_BASE_URL`, for pipelines without any
//!   config file, with a cache that `QLAM_TOKEN_CACHE` may move to a shared directory.
//!
//! Settings file (all keys optional):
//!
//! ```json
//! { "monthly_budget": 1000, "warn_percent": 80,
//!   "clients": { "svc-id": { "monthly_budget": 500, "token_endpoint_auth_method": "client_secret_post" } } }
//! ```
//!
//! The environment overrides it: `QLAM_TOKEN_BUDGET=N` (0 = no limit),
//! `QLAM_TOKEN_BUDGET_WARN_PERCENT=P`, `QLAM_CLIENT_AUTH_METHOD=client_secret_basic|client_secret_post`.
#![forbid(unsafe_code)]

use crate::config::{
    ConfigSource, EnvSnapshot, GrantType, ProviderConfig, SecretSource, allow_http_loopback,
    normalize_issuer,
};
use crate::fsutil::{self, Policy};
use crate::oauth::ClientAuth;
use crate::paths::QshPaths;
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, de};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of qlam-auth's settings file in the config directory (or in `QLAM_TOKEN_CACHE`).
pub const SETTINGS_FILE: &str = "qlam-auth.json";
/// The implicit context name of environment mode.
pub const ENV_CONTEXT: &str = "env";
/// Default warning threshold, percent of the monthly budget.
pub const DEFAULT_WARN_PERCENT: u8 = 80;

/// Environment variables of environment mode.
pub mod vars {
    /// The OAuth client id (required).
    pub const CLIENT_ID: &str = "QLAM_CLIENT_ID";
    /// The client secret.
    pub const CLIENT_SECRET: &str = "QLAM_CLIENT_SECRET";
    /// The next client secret during a rotation.
    pub const CLIENT_SECRET_NEXT: &str = "QLAM_CLIENT_SECRET_NEXT";
    /// A file holding the client secret (a second line: the next secret).
    pub const CLIENT_SECRET_FILE: &str = "QLAM_CLIENT_SECRET_FILE";
    /// A PEM private key for `private_key_jwt` instead of a secret.
    pub const CLIENT_KEY_FILE: &str = "QLAM_CLIENT_KEY_FILE";
    /// The API audience.
    pub const AUDIENCE: &str = "QLAM_AUDIENCE";
    /// The scope (optional).
    pub const SCOPE: &str = "QLAM_SCOPE";
    /// The issuer: a host or an https URL (required).
    pub const AUTH_BASE_URL: &str = "AUTH_BASE_URL";
    /// A directory for the token cache (and budget) instead of `~/.qsh/credentials`.
    pub const TOKEN_CACHE: &str = "QLAM_TOKEN_CACHE";
    /// The monthly budget of token requests (0: none), overriding the settings file.
    pub const TOKEN_BUDGET: &str = "QLAM_TOKEN_BUDGET";
    /// The warning threshold in percent.
    pub const TOKEN_BUDGET_WARN_PERCENT: &str = "QLAM_TOKEN_BUDGET_WARN_PERCENT";
}

/// A client's monthly budget of token requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Requests allowed per calendar month (UTC); `None` = unlimited (still counted).
    pub limit: Option<u64>,
    /// Warn from this share of the limit on.
    pub warn_percent: u8,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            limit: None,
            warn_percent: DEFAULT_WARN_PERCENT,
        }
    }
}

impl BudgetPolicy {
    /// The request count from which warnings are given.
    pub fn warn_at(&self) -> Option<u64> {
        self.limit
            .map(|l| (l * u64::from(self.warn_percent)).div_ceil(100))
    }
}

/// One entry of `clients` in the settings file.
#[derive(Debug, Clone)]
struct ClientSettings {
    client_id: String,
    monthly_budget: Option<u64>,
    warn_percent: Option<u8>,
    auth: Option<ClientAuth>,
}

/// qlam-auth's settings (`qlam-auth.json` plus environment overrides).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    default_budget: BudgetPolicy,
    clients: Vec<ClientSettings>,
    env_limit: Option<u64>,
    env_warn: Option<u8>,
    env_auth: Option<ClientAuth>,
    /// The file the settings came from, if any.
    pub path: Option<PathBuf>,
}

/// `qlam-auth.json` as read (all keys optional; unknown keys ignored).
#[derive(Debug, Default, Deserialize)]
struct SettingsFile {
    #[serde(default, deserialize_with = "count")]
    monthly_budget: Option<u64>,
    #[serde(default, deserialize_with = "percent")]
    warn_percent: Option<u8>,
    #[serde(default)]
    clients: Option<BTreeMap<String, ClientFile>>,
}

/// One entry of `clients`.
#[derive(Debug, Deserialize)]
struct ClientFile {
    #[serde(default, deserialize_with = "count")]
    monthly_budget: Option<u64>,
    #[serde(default, deserialize_with = "percent")]
    warn_percent: Option<u8>,
    #[serde(default, deserialize_with = "client_auth")]
    token_endpoint_auth_method: Option<ClientAuth>,
}

fn count<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d).map_err(|_| de::Error::custom("must be a whole number >= 0"))
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u8>, D::Error> {
    count(d)?
        .map(|p| {
            u8::try_from(p)
                .ok()
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| de::Error::custom("must be a percentage, 1 to 100"))
        })
        .transpose()
}

fn client_auth<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<ClientAuth>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|m| {
            ClientAuth::parse(&m).ok_or_else(|| {
                de::Error::custom("must be client_secret_basic or client_secret_post")
            })
        })
        .transpose()
}

impl Settings {
    /// Reads `<dir>/qlam-auth.json` (absent: defaults) and the environment through `env`.
    pub fn load(dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let path = dir.join(SETTINGS_FILE);
        let mut s = Settings::default();
        if let Some(bytes) =
            fsutil::read_file_following(&path, Policy::NOT_WRITABLE_BY_OTHERS, 256 * 1024)?
        {
            s = Self::from_bytes(&path, &bytes)?;
        }
        let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let env_path = &ConfigSource::Environment;
        if let Some(v) = nonempty(vars::TOKEN_BUDGET) {
            s.env_limit = Some(v.trim().parse().map_err(|_| {
                Error::config(
                    env_path,
                    vars::TOKEN_BUDGET,
                    format!("'{v}' is not a whole number"),
                )
            })?);
        }
        if let Some(v) = nonempty(vars::TOKEN_BUDGET_WARN_PERCENT) {
            s.env_warn = percent(Value::from(v.trim().parse::<u64>().unwrap_or(0))).map_err(
                |e: serde_json::Error| {
                    Error::config(env_path, vars::TOKEN_BUDGET_WARN_PERCENT, e.to_string())
                },
            )?;
        }
        s.env_auth = nonempty("QLAM_CLIENT_AUTH_METHOD").and_then(|v| ClientAuth::parse(v.trim()));
        Ok(s)
    }

    /// Parses a settings file's content.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let f: SettingsFile = crate::json::from_slice(bytes).map_err(|r| {
            let message = match (r.path.as_str(), r.message.as_str()) {
                ("", "must be an object") => "must be a JSON object".to_owned(),
                _ => r.message,
            };
            Error::config(path, r.path, message)
        })?;
        let mut s = Settings {
            path: Some(path.to_owned()),
            ..Settings::default()
        };
        s.default_budget.limit = f.monthly_budget.filter(|n| *n > 0);
        if let Some(p) = f.warn_percent {
            s.default_budget.warn_percent = p;
        }
        for (id, c) in f.clients.unwrap_or_default() {
            s.clients.push(ClientSettings {
                client_id: id,
                monthly_budget: c.monthly_budget,
                warn_percent: c.warn_percent,
                auth: c.token_endpoint_auth_method,
            });
        }
        Ok(s)
    }

    /// Settings with just this budget (the plugin's site accounts, tests).
    pub fn with_budget(limit: Option<u64>, warn_percent: Option<u8>) -> Self {
        Settings {
            default_budget: BudgetPolicy {
                limit: limit.filter(|l| *l > 0),
                warn_percent: warn_percent.unwrap_or(DEFAULT_WARN_PERCENT),
            },
            ..Settings::default()
        }
    }

    /// These settings, with the client authentication method fixed to `auth`.
    pub fn with_client_auth(mut self, auth: ClientAuth) -> Self {
        self.env_auth = Some(auth);
        self
    }

    fn client(&self, client_id: &str) -> Option<&ClientSettings> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// The budget of `client_id`: environment, else the client's entry, else the default.
    pub fn budget(&self, client_id: &str) -> BudgetPolicy {
        let c = self.client(client_id);
        let limit = match self.env_limit {
            Some(n) => Some(n),
            None => c
                .and_then(|c| c.monthly_budget)
                .or(self.default_budget.limit),
        };
        BudgetPolicy {
            limit: limit.filter(|n| *n > 0),
            warn_percent: self
                .env_warn
                .or_else(|| c.and_then(|c| c.warn_percent))
                .unwrap_or(self.default_budget.warn_percent),
        }
    }

    /// How `client_id` sends its secret, if fixed (environment, else the client's entry).
    pub fn client_auth(&self, client_id: &str) -> Option<ClientAuth> {
        self.env_auth
            .or_else(|| self.client(client_id).and_then(|c| c.auth))
    }
}

/// Environment mode: the context `env` from `QLAM_CLIENT_ID` etc. `home_paths` are the user's
/// usual paths (`~/.qsh`); the cache is their credentials directory unless `QLAM_TOKEN_CACHE`
/// names another. Returns the paths to use (cache) and the provider.
pub fn env_context(
    home_paths: &QshPaths,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(QshPaths, ProviderConfig)> {
    let get = |k: &str| {
        env(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let origin = ConfigSource::Environment;
    let missing = |k: &str| {
        Error::config(
            &origin,
            k,
            format!(
                "is not set; environment mode needs {} and {} (plus {}, {} or {}, and usually {})",
                vars::CLIENT_ID,
                vars::AUTH_BASE_URL,
                vars::CLIENT_SECRET,
                vars::CLIENT_SECRET_FILE,
                vars::CLIENT_KEY_FILE,
                vars::AUDIENCE
            ),
        )
    };
    let client_id = get(vars::CLIENT_ID).ok_or_else(|| missing(vars::CLIENT_ID))?;
    let raw_issuer = get(vars::AUTH_BASE_URL).ok_or_else(|| missing(vars::AUTH_BASE_URL))?;
    let issuer = normalize_issuer(&raw_issuer, allow_http_loopback(env))
        .map_err(|m| Error::config(&origin, vars::AUTH_BASE_URL, m))?;
    let client_secret = if let Some(k) = get(vars::CLIENT_KEY_FILE) {
        SecretSource::PrivateKeyJwt(PathBuf::from(k))
    } else if let Some(f) = get(vars::CLIENT_SECRET_FILE) {
        SecretSource::File(PathBuf::from(f))
    } else if get(vars::CLIENT_SECRET).is_some() {
        SecretSource::Env(vars::CLIENT_SECRET.to_owned())
    } else {
        return Err(missing(vars::CLIENT_SECRET));
    };
    let audience = get(vars::AUDIENCE);
    let scope = get(vars::SCOPE);
    // The provider name (part of the cache file name) tells different clients and audiences
    // apart, so that pipelines sharing one QLAM_TOKEN_CACHE never get each other's tokens.
    let fp = crate::digest::sha256(
        format!(
            "{issuer}\n{client_id}\n{}\n{}",
            audience.as_deref().unwrap_or(""),
            scope.as_deref().unwrap_or("")
        )
        .as_bytes(),
    );
    let name = format!(
        "{client_id}-{}",
        fp[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let paths = match get(vars::TOKEN_CACHE) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !dir.is_absolute() {
                return Err(Error::config(
                    &origin,
                    vars::TOKEN_CACHE,
                    "must be an absolute path",
                ));
            }
            QshPaths {
                config_file: dir.join("config.json"),
                config_dir: dir.clone(),
                credentials_dir: dir,
            }
        }
        None => home_paths.clone(),
    };
    let provider = ProviderConfig {
        context: ENV_CONTEXT.to_owned(),
        name,
        issuer,
        client_id,
        client_secret: Some(client_secret),
        grant_type: GrantType::ClientCredentials,
        scope,
        audience,
        tenant: None,
        subject_token_type: None,
        subject_token: None,
        config_path: origin,
        env: EnvSnapshot::default(),
    }
    .with_env(env);
    Ok((paths, provider))
}

/// Whether environment mode applies: `--context env` (when the config, if any, has no context of
/// that name), or no `--context` and no config file while `QLAM_CLIENT_ID` is set.
pub fn wants_env_mode(
    context: Option<&str>,
    config_exists: bool,
    config_has_env_context: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> bool {
    match context.filter(|c| !c.is_empty()) {
        Some(c) => c == ENV_CONTEXT && !config_has_env_context,
        None => !config_exists && env(vars::CLIENT_ID).is_some_and(|v| !v.trim().is_empty()),
    }
}

/// The broker for `context` as every front end picks it: environment mode (see
/// [`wants_env_mode`]) or the context of the qsh config (default: its current context), with
/// the site file's contexts behind the user's (`site`, loaded by the caller). `env` is the
/// caller's environment (environment mode, `env:` secrets, settings overrides).
pub fn select_broker(
    context: Option<&str>,
    paths: &QshPaths,
    env: &dyn Fn(&str) -> Option<String>,
    http: &crate::http::HttpSettings,
    site: Option<crate::site::Site>,
) -> Result<crate::broker::Broker> {
    let loopback = allow_http_loopback(env);
    let config = if paths.config_file.exists() {
        Some(crate::config::Config::load(paths)?.with_http_loopback(loopback))
    } else {
        None
    };
    let has_env_context = config
        .as_ref()
        .is_some_and(|c| c.context_names().iter().any(|n| n == ENV_CONTEXT));
    if wants_env_mode(context, config.is_some(), has_env_context, env) {
        let (cache_paths, provider) = env_context(paths, env)?;
        return crate::broker::Broker::new(&cache_paths, provider, http, env);
    }
    let config = match config {
        Some(c) => c.with_site(site),
        // Or explains what is missing.
        None => crate::config::Config::load_with_site(paths, site)?.with_http_loopback(loopback),
    };
    let provider = config.provider_with_env(context, env)?;
    crate::broker::Broker::new(paths, provider, http, env)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn env_mode_builds_a_client_credentials_context() {
        let home = QshPaths::resolve(Path::new("/home/ci"), &|_| None);
        let env = env_of(&[
            ("QLAM_CLIENT_ID", "svc"),
            ("QLAM_CLIENT_SECRET", "s1"),
            ("QLAM_CLIENT_SECRET_NEXT", "s2"),
            ("QLAM_AUDIENCE", "https://api.example"),
            ("AUTH_BASE_URL", "login.example.org"),
        ]);
        let (paths, p) = env_context(&home, &env).unwrap();
        assert_eq!(paths, home);
        assert_eq!(p.context, "env");
        assert_eq!(p.issuer, "https://login.example.org");
        assert_eq!(p.grant_type, GrantType::ClientCredentials);
        assert!(p.name.starts_with("svc-"), "{}", p.name);
        let secrets = p
            .client_secret
            .as_ref()
            .unwrap()
            .resolve_all(&p.config_path, "x", &p.env)
            .unwrap();
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets[1].expose(), "s2");
        let shared = env_of(&[
            ("QLAM_CLIENT_ID", "svc"),
            ("QLAM_CLIENT_SECRET", "s1"),
            ("AUTH_BASE_URL", "https://login.example.org/"),
            ("QLAM_TOKEN_CACHE", "/shared/cache"),
        ]);
        let (paths, p2) = env_context(&home, &shared).unwrap();
        assert_eq!(paths.credentials_dir, Path::new("/shared/cache"));
        assert_ne!(p2.name, p.name, "another audience is another cache file");
        let e = env_context(&home, &env_of(&[("QLAM_CLIENT_ID", "svc")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AUTH_BASE_URL"), "{e}");
    }

    #[test]
    fn env_mode_selection() {
        let with_id = env_of(&[("QLAM_CLIENT_ID", "svc")]);
        assert!(wants_env_mode(None, false, false, &with_id));
        assert!(!wants_env_mode(None, true, false, &with_id));
        assert!(wants_env_mode(Some("env"), true, false, &with_id));
        assert!(!wants_env_mode(Some("env"), true, true, &with_id));
        assert!(!wants_env_mode(None, false, false, &|_| None));
    }

    #[test]
    fn settings_budgets_and_overrides() {
        let s = Settings::from_bytes(
            Path::new("/q/qlam-auth.json"),
            br#"{"monthly_budget": 1000, "clients": {"a": {"monthly_budget": 5, "warn_percent": 60,
                "token_endpoint_auth_method": "client_secret_post"}}}"#,
        )
        .unwrap();
        assert_eq!(s.budget("a").limit, Some(5));
        assert_eq!(s.budget("a").warn_at(), Some(3));
        assert_eq!(s.budget("b").limit, Some(1000));
        assert_eq!(s.budget("b").warn_at(), Some(800));
        assert_eq!(s.client_auth("a"), Some(ClientAuth::Post));
        let e = Settings::from_bytes(Path::new("/q/x.json"), br#"{"warn_percent": 300}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("percentage"), "{e}");
        assert_eq!(Settings::default().budget("x").limit, None);
        let e = Settings::from_bytes(
            Path::new("/q/x.json"),
            br#"{"clients": {"a": {"monthly_budget": "987654"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("clients.a.monthly_budget") && e.contains("whole number"),
            "{e}"
        );
        assert!(!e.contains("987654"), "{e}");
        let e = Settings::from_bytes(Path::new("/q/x.json"), br#"{"clients": [1]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("clients") && e.contains("must be an object"),
            "{e}"
        );
    }
}
