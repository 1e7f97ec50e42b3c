//! The root-only file of a site service account (`m2m=NAME:FILE`), read by root in slurmstepd:
//!
//! ```json
//! { "issuer": "https://login.example.org", "client_id": "qpu-ci",
//!   "client_secret": "..." | "file:/etc/qlam/m2m/qpu-ci.secret" | "private_key_jwt:/etc/qlam/m2m/qpu-ci.pem",
//!   "client_secret_next": "...",            // optional: the next secret during a rotation
//!   "audience": "https://api.example.org", "scope": null,
//!   "allowed_groups": ["qpu-users", "qpu-admins"],
//!   "monthly_budget": 10000, "warn_percent": 80,            // optional
//!   "token_endpoint_auth_method": "client_secret_basic" }   // optional
//! ```
//!
//! `AccountFile` is the file as serde reads it (unknown keys refused); [`SiteAccount`] is what
//! it means once checked. Every field is read through a `deserialize_with` that replaces serde's
//! message by ours, so an error names the key and never quotes a value (a secret may be one).
//! The secrets are `Zeroizing` from the moment they are parsed.
#![forbid(unsafe_code)]

use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use token_core::config::{EnvSnapshot, GrantType, ProviderConfig, SecretSource, normalize_issuer};
use token_core::m2m::Settings;
use token_core::oauth::ClientAuth;
use token_core::paths::QshPaths;
use token_core::secret::Secret;
use zeroize::Zeroizing;

use super::BackendError;
use crate::args::{SiteAccountRef, parse_groups};

/// Largest account file we read.
const MAX_ACCOUNT_BYTES: u64 = 64 * 1024;

/// The keys of an account file, for the message about an unknown one.
const KEYS: [&str; 10] = [
    "issuer",
    "client_id",
    "client_secret",
    "client_secret_next",
    "audience",
    "scope",
    "allowed_groups",
    "monthly_budget",
    "warn_percent",
    "token_endpoint_auth_method",
];

/// One optional field, with our message when its value has the wrong type (serde's own message
/// would quote the value).
macro_rules! field {
    ($name:ident: $ty:ty, $msg:literal) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
            Option::<$ty>::deserialize(d).map_err(|_| D::Error::custom($msg))
        }
    };
}

field!(issuer: String, "'issuer' must be a non-empty string");
field!(client_id: String, "'client_id' must be a non-empty string");
field!(audience: String, "'audience' must be a non-empty string");
field!(scope: String, "'scope' must be a non-empty string");
field!(auth_method: String, "'token_endpoint_auth_method' must be a non-empty string");
field!(groups: Vec<String>, "'allowed_groups' must be a non-empty list of group names");
field!(budget: u64, "'monthly_budget' must be a whole number");
field!(percent: u64, "'warn_percent' must be 1 to 100");

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    Option::<String>::deserialize(d)
        .map(|s| s.map(Zeroizing::new))
        .map_err(|_| D::Error::custom("'client_secret' must be a non-empty string"))
}

fn next_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    Option::<String>::deserialize(d)
        .map(|s| s.map(Zeroizing::new))
        .map_err(|_| D::Error::custom("'client_secret_next' must be a non-empty string"))
}

/// An account file as it is written (see the module's documentation).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFile {
    #[serde(default, deserialize_with = "issuer")]
    issuer: Option<String>,
    #[serde(default, deserialize_with = "client_id")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    client_secret: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "next_secret")]
    client_secret_next: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "audience")]
    audience: Option<String>,
    #[serde(default, deserialize_with = "scope")]
    scope: Option<String>,
    #[serde(default, deserialize_with = "groups")]
    allowed_groups: Option<Vec<String>>,
    #[serde(default, deserialize_with = "budget")]
    monthly_budget: Option<u64>,
    #[serde(default, deserialize_with = "percent")]
    warn_percent: Option<u64>,
    #[serde(default, deserialize_with = "auth_method")]
    token_endpoint_auth_method: Option<String>,
}

/// serde's error, told without quoting anything from the file but key names.
fn describe(e: &serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() || e.is_io() {
        return "not valid JSON".to_owned();
    }
    let msg = e.to_string();
    let quoted = |prefix: &str| {
        msg.strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .map(|(key, _)| key.to_owned())
    };
    if let Some(k) = quoted("unknown field `") {
        return format!("unknown key '{k}' (known: {})", KEYS.join(", "));
    }
    if let Some(k) = quoted("duplicate field `") {
        return format!("'{k}' is given twice");
    }
    // Our own messages (the `field!` ones) start with the quoted key; serde_json appends the
    // position.
    if msg.starts_with('\'') {
        return msg
            .split_once(" at line ")
            .map_or(msg.clone(), |(m, _)| m.to_owned());
    }
    "not a JSON object".to_owned()
}

/// A non-empty string, trimmed; `None` if absent or null.
fn text(value: Option<String>, key: &str) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(format!("'{key}' must be a non-empty string")),
    }
}

/// A site account, checked: what token-core needs to get its token, and who may use it.
#[derive(Clone)]
pub struct SiteAccount {
    issuer: String,
    client_id: String,
    secret: SecretSource,
    literal: Option<Secret>,
    literal_next: Option<Secret>,
    audience: Option<String>,
    scope: Option<String>,
    /// Groups whose members may use the account (names, or numeric gids as `gid:N`).
    pub allowed_groups: Vec<String>,
    monthly_budget: Option<u64>,
    warn_percent: Option<u8>,
    client_auth: Option<ClientAuth>,
}

impl std::fmt::Debug for SiteAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteAccount")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("allowed_groups", &self.allowed_groups)
            .finish_non_exhaustive()
    }
}

/// The names under which a literal secret and its successor reach token-core (they are looked
/// up in the account, never in an environment).
const LITERAL: &str = "client_secret";

impl SiteAccount {
    /// Reads and parses the account file, as root: it must be a regular file of root's, mode
    /// 0600 or stricter (checked on the open descriptor).
    pub fn load(r: &SiteAccountRef) -> Result<SiteAccount, BackendError> {
        let bytes = token_core::fsutil::read_file_following(
            &r.file,
            token_core::fsutil::Policy::PRIVATE,
            MAX_ACCOUNT_BYTES,
        )?
        .ok_or_else(|| {
            BackendError::SiteAccount(format!(
                "the account file {} does not exist",
                r.file.display()
            ))
        })?;
        let bytes = Zeroizing::new(bytes);
        Self::parse(&r.file, &bytes)
    }

    /// Parses an account file's content; `path` is for messages. Errors never quote a value.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SiteAccount, BackendError> {
        Self::check(bytes)
            .map_err(|what| BackendError::SiteAccount(format!("{}: {what}", path.display())))
    }

    fn check(bytes: &[u8]) -> Result<SiteAccount, String> {
        // Syntax first: a field's own error replaces serde's, which would hide a broken file.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| describe(&e))?;
        let file: AccountFile = serde_json::from_slice(bytes).map_err(|e| describe(&e))?;
        let need = |v: Option<String>, key: &str| {
            text(v, key)?.ok_or_else(|| format!("'{key}' is required"))
        };
        let issuer = normalize_issuer(&need(file.issuer, "issuer")?, false)
            .map_err(|m| format!("issuer: {m}"))?;
        let client_id = need(file.client_id, "client_id")?;
        let raw_secret = match &file.client_secret {
            Some(s) if !s.trim().is_empty() => Zeroizing::new(s.trim().to_owned()),
            Some(_) => return Err("'client_secret' must be a non-empty string".to_owned()),
            None => return Err("'client_secret' is required".to_owned()),
        };
        let secret = SecretSource::parse(&raw_secret);
        let literal = match &secret {
            SecretSource::Env(_) => {
                return Err("client_secret: env: is not allowed here (the environment is the job's); use the secret, file:/path or private_key_jwt:/path".to_owned());
            }
            SecretSource::Literal(s) => Some(s.clone()),
            _ => None,
        };
        let literal_next = match &file.client_secret_next {
            None => None,
            Some(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
            Some(_) => return Err("'client_secret_next' must be a non-empty string".to_owned()),
        };
        if literal_next.is_some() && literal.is_none() {
            return Err("client_secret_next needs a literal client_secret (with file:, put the next secret on the file's second line)".to_owned());
        }
        let allowed_groups = match file.allowed_groups {
            Some(g) => parse_groups(g.iter().map(String::as_str))
                .map_err(|e| format!("allowed_groups: {e}"))?,
            None => {
                return Err(
                    "'allowed_groups' (a non-empty list of group names) is required".to_owned(),
                );
            }
        };
        let warn_percent = match file.warn_percent {
            None => None,
            Some(p) => Some(
                u8::try_from(p)
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or("warn_percent must be 1 to 100")?,
            ),
        };
        let client_auth = match text(
            file.token_endpoint_auth_method,
            "token_endpoint_auth_method",
        )? {
            None => None,
            Some(m) => Some(ClientAuth::parse(&m).ok_or(
                "token_endpoint_auth_method must be client_secret_basic or client_secret_post",
            )?),
        };
        Ok(SiteAccount {
            issuer,
            client_id,
            secret,
            literal,
            literal_next,
            audience: text(file.audience, "audience")?,
            scope: text(file.scope, "scope")?,
            allowed_groups,
            monthly_budget: file.monthly_budget,
            warn_percent,
            client_auth,
        })
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// token-core's view of the account: context `name`, provider `site`.
    pub fn provider(&self, name: &str, file: &Path) -> ProviderConfig {
        let secret = match &self.secret {
            SecretSource::Literal(_) => SecretSource::Env(LITERAL.to_owned()),
            other => other.clone(),
        };
        let next_name = format!("{LITERAL}{}", token_core::config::NEXT_SECRET_SUFFIX);
        let lookup = |k: &str| -> Option<String> {
            if k == LITERAL {
                self.literal.as_ref().map(|s| s.expose().to_owned())
            } else if k == next_name {
                self.literal_next.as_ref().map(|s| s.expose().to_owned())
            } else {
                None
            }
        };
        ProviderConfig {
            context: name.to_owned(),
            name: "site".to_owned(),
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: Some(secret),
            grant_type: GrantType::ClientCredentials,
            scope: self.scope.clone(),
            audience: self.audience.clone(),
            tenant: None,
            subject_token_type: None,
            subject_token: None,
            config_path: file.into(),
            env: EnvSnapshot::default(),
        }
        .with_env(&lookup)
    }

    /// The budget and client authentication of the account.
    pub fn settings(&self) -> Settings {
        let s = Settings::with_budget(self.monthly_budget, self.warn_percent);
        match self.client_auth {
            None => s,
            Some(a) => s.with_client_auth(a),
        }
    }
}

/// The root-only cache of account `name` under `base`.
pub fn cache_paths(base: &Path, name: &str) -> QshPaths {
    let dir = base.join(name);
    QshPaths {
        config_file: dir.join("config.json"),
        config_dir: dir.clone(),
        credentials_dir: dir,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn account_file() {
        let a = SiteAccount::parse(
            Path::new("/etc/qlam/m2m/ci.json"),
            br#"{"issuer": "idp.example", "client_id": "ci", "client_secret": "s3cret",
                 "client_secret_next": "n3xt", "audience": "https://api", "allowed_groups": ["qpu"],
                 "monthly_budget": 100}"#,
        )
        .unwrap();
        assert!(!format!("{a:?}").contains("s3cret"));
        let p = a.provider("ci", Path::new("/etc/qlam/m2m/ci.json"));
        assert_eq!(p.issuer, "https://idp.example");
        assert_eq!(p.cache_key(), "oauth_ci_site");
        let secrets = p
            .client_secret
            .as_ref()
            .unwrap()
            .resolve_all(&p.config_path, "client_secret", &p.env)
            .unwrap();
        assert_eq!(
            secrets.iter().map(|s| s.expose()).collect::<Vec<_>>(),
            ["s3cret", "n3xt"]
        );
        assert_eq!(a.settings().budget("ci").limit, Some(100));
        for (bad, want) in [
            (
                r#"{"issuer":"idp","client_id":"c","client_secret":"env:X","allowed_groups":["g"]}"#,
                "env:",
            ),
            (
                r#"{"issuer":"idp","client_id":"c","client_secret":"s"}"#,
                "allowed_groups",
            ),
            (
                r#"{"issuer":"idp","client_id":"c","client_secret":"s","allowed_groups":["g"],"x":1}"#,
                "unknown key 'x'",
            ),
            (
                r#"{"issuer":"http://idp","client_id":"c","client_secret":"s","allowed_groups":["g"]}"#,
                "http",
            ),
        ] {
            let e = SiteAccount::parse(Path::new("/f.json"), bad.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(want) && e.contains("/f.json") && !e.contains("\"s\""),
                "{e}"
            );
        }
    }

    /// An error names the key and never quotes a value of the file, whatever its type: serde's
    /// own messages would (`invalid type: string "..."`).
    #[test]
    fn errors_never_quote_a_value() {
        let secret = "s3cret-value";
        for (bad, want) in [
            (
                format!(
                    r#"{{"issuer":"idp","client_id":"c","client_secret":"s","allowed_groups":["g"],"monthly_budget":"{secret}"}}"#
                ),
                "'monthly_budget' must be a whole number",
            ),
            (
                format!(
                    r#"{{"issuer":"idp","client_id":["{secret}"],"client_secret":"s","allowed_groups":["g"]}}"#
                ),
                "'client_id' must be a non-empty string",
            ),
            (
                format!(
                    r#"{{"issuer":"idp","client_id":"c","client_secret":{{"v":"{secret}"}},"allowed_groups":["g"]}}"#
                ),
                "'client_secret' must be a non-empty string",
            ),
            (
                format!(
                    r#"{{"issuer":"idp","client_id":"c","client_secret":"s","allowed_groups":[{{"{secret}":1}}]}}"#
                ),
                "'allowed_groups' must be a non-empty list",
            ),
            (format!(r#""{secret}""#), "not a JSON object"),
            (format!(r#"{{"issuer": "{secret}"#), "not valid JSON"),
            (
                format!(
                    r#"{{"issuer":"idp","client_id":"c","client_secret":"s","allowed_groups":["g"],"warn_percent":"{secret}"}}"#
                ),
                "'warn_percent' must be 1 to 100",
            ),
        ] {
            let e = SiteAccount::parse(Path::new("/f.json"), bad.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains(secret), "{e}");
            assert!(e.starts_with("/f.json: "), "{e}");
        }
    }

    /// Security review item 7: the parsed account file's copies of the secrets are wiped when
    /// they are dropped: the model holds them as `Zeroizing` (this does not compile otherwise).
    #[test]
    fn parsed_account_secrets_are_wiped() {
        fn wiped_on_drop(_: &Option<Zeroizing<String>>) {}
        let file: AccountFile = serde_json::from_slice(
            br#"{"client_secret": "s3cret", "client_secret_next": "n3xt", "allowed_groups": ["g"]}"#,
        )
        .unwrap();
        wiped_on_drop(&file.client_secret);
        wiped_on_drop(&file.client_secret_next);
        let mut secret = file.client_secret.clone().unwrap();
        zeroize::Zeroize::zeroize(&mut *secret);
        assert_eq!(secret.as_str(), "");
        assert_eq!(
            file.client_secret.as_deref().map(String::as_str),
            Some("s3cret")
        );
    }
}
