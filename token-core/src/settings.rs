//! qlam-auth's own settings file `qlam-auth.json`, beside `config.json` (QLAM Core's provider
//! model forbids unknown keys, so nothing of ours goes into config.json): monthly token budgets
//! and the client authentication method, per client id. The broker, the budget ledger and
//! environment mode ([`crate::m2m`]) use it.
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

use crate::config::ConfigSource;
use crate::fsutil::{self, Policy};
use crate::oauth::ClientAuth;
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, de};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of qlam-auth's settings file in the config directory (or in `QLAM_TOKEN_CACHE`).
pub const SETTINGS_FILE: &str = "qlam-auth.json";
/// Default warning threshold, percent of the monthly budget.
pub const DEFAULT_WARN_PERCENT: u8 = 80;

/// Environment variables of machine-to-machine use: environment mode and the settings overrides.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

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
