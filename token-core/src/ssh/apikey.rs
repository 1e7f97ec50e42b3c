//! Where a service account's API key comes from: an environment variable (CI systems inject
//! masked secrets that way) or a file only its owner can read. Never the command line.

use super::{SshError, SshResult};
use crate::config::ConfigSource;
use crate::secret::Secret;
use crate::{Error, fsutil};
use std::path::PathBuf;

/// The source of an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeySource {
    /// The environment variable of this name.
    Env(String),
    /// This file (owned by the user, mode 0600 or stricter).
    File(PathBuf),
}

impl ApiKeySource {
    /// Reads the key. `env` reads the process environment (passed in by the front end).
    pub fn read(&self, service: &str, env: &dyn Fn(&str) -> Option<String>) -> SshResult<Secret> {
        let (text, origin) = match self {
            ApiKeySource::Env(var) => {
                let v = env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                    SshError::Core(Error::config(
                        ConfigSource::Environment,
                        var.as_str(),
                        format!(
                            "the API key of SSH service '{service}' is not set: export {var} \
                             (in CI, a masked secret variable), or set api_key_file for the \
                             service (docs/ssh.md)"
                        ),
                    ))
                })?;
                (Secret::new(v), (ConfigSource::Environment, var.clone()))
            }
            ApiKeySource::File(path) => {
                let bytes = fsutil::read_file_following(path, fsutil::Policy::PRIVATE, 16 * 1024)?
                    .ok_or_else(|| {
                        SshError::Core(Error::config(
                            path,
                            "",
                            format!(
                                "the API key file of SSH service '{service}' does not exist: \
                                 write the key into it (umask 077; chmod 600)"
                            ),
                        ))
                    })?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| SshError::file(path, "the API key file is not text"))?;
                (
                    Secret::new(text),
                    (ConfigSource::File(path.clone()), String::new()),
                )
            }
        };
        let key = text.expose().trim();
        // It goes into an HTTP header: one line of visible ASCII.
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(SshError::Core(Error::config(
                origin.0,
                origin.1,
                "the API key must be one line of printable ASCII without spaces (the value is \
                 not shown)",
            )));
        }
        Ok(Secret::new(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_key_is_trimmed_and_errors_never_show_it() {
        let src = ApiKeySource::Env("K".into());
        let k = src.read("s", &|_| Some(" abc123\n".into())).expect("key");
        assert_eq!(k.expose(), "abc123");
        let e = src
            .read("s", &|_| Some("two words-secretvalue".into()))
            .unwrap_err();
        assert!(!e.to_string().contains("secretvalue"), "{e}");
        let e = src.read("s", &|_| None).unwrap_err();
        assert!(e.to_string().contains("export K"), "{e}");
    }
}
