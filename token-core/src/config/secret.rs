//! Where a client secret comes from (`client_secret`), and the environment values captured for
//! `env:` references.

use super::ConfigSource;
use crate::fsutil::{self, Policy};
use crate::secret::Secret;
use crate::{Error, Result};
use std::path::PathBuf;

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
    pub fn resolve(
        &self,
        config_path: &ConfigSource,
        field: &str,
        env: &EnvSnapshot,
    ) -> Result<Secret> {
        self.resolve_all(config_path, field, env)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::config(config_path, field, "the secret is empty"))
    }

    /// The secret and, during a rotation, the next one (`$VAR_NEXT`, or the second line of a
    /// secret file): the caller tries the second when the IdP answers `invalid_client`.
    pub fn resolve_all(
        &self,
        config_path: &ConfigSource,
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
