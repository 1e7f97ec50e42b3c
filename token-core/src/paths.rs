//! Where `~/.qsh` lives, resolved as QLAM Core 0.10 does.

use std::path::{Path, PathBuf};

/// Environment variable overriding the config directory.
pub const ENV_CONFIG_DIR: &str = "QSH_CONFIG_DIR";
/// Environment variable overriding the config file.
pub const ENV_CONFIG_FILE: &str = "QSH_CONFIG";

/// The three locations of a user's qsh state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QshPaths {
    /// `$QSH_CONFIG_DIR`, else `<home>/.qsh`.
    pub config_dir: PathBuf,
    /// `$QSH_CONFIG`, else `<config_dir>/config.json`.
    pub config_file: PathBuf,
    /// `<config_dir>/credentials`.
    pub credentials_dir: PathBuf,
}

impl QshPaths {
    /// Resolves the paths for a user whose home is `home`, honouring `QSH_CONFIG_DIR` and
    /// `QSH_CONFIG` as returned by `env`. Empty values count as unset.
    pub fn resolve(home: &Path, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
        let config_dir = non_empty(ENV_CONFIG_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".qsh"));
        let config_file = non_empty(ENV_CONFIG_FILE)
            .map(PathBuf::from)
            .unwrap_or_else(|| config_dir.join("config.json"));
        let credentials_dir = config_dir.join("credentials");
        QshPaths {
            config_dir,
            config_file,
            credentials_dir,
        }
    }

    /// Resolves from an environment (`HOME` in `env`, else `home`: the caller's home from the
    /// password database).
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<PathBuf>,
    ) -> crate::Result<Self> {
        let home = match env("HOME").filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => home.ok_or_else(|| {
                crate::Error::config(
                    crate::config::ConfigSource::Environment,
                    "HOME",
                    "cannot find your home directory: set HOME or QSH_CONFIG_DIR",
                )
            })?,
        };
        Ok(Self::resolve(&home, env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_under_home() {
        let p = QshPaths::resolve(Path::new("/home/alice"), &|_| None);
        assert_eq!(p.config_dir, Path::new("/home/alice/.qsh"));
        assert_eq!(p.config_file, Path::new("/home/alice/.qsh/config.json"));
        assert_eq!(p.credentials_dir, Path::new("/home/alice/.qsh/credentials"));
    }

    #[test]
    fn environment_overrides() {
        let env = |k: &str| match k {
            ENV_CONFIG_DIR => Some("/scratch/q".to_string()),
            ENV_CONFIG_FILE => Some("/etc/q.json".to_string()),
            _ => None,
        };
        let p = QshPaths::resolve(Path::new("/home/alice"), &env);
        assert_eq!(p.config_dir, Path::new("/scratch/q"));
        assert_eq!(p.config_file, Path::new("/etc/q.json"));
        assert_eq!(p.credentials_dir, Path::new("/scratch/q/credentials"));
    }
}
