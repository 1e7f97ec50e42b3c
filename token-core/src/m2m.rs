//! Machine-to-machine (client credentials) without a qsh context: [`env_context`] makes the
//! implicit context `env` from `QLAM_CLIENT_ID`, `QLAM_CLIENT_SECRET`, `QLAM_AUDIENCE` and
//! `AUTH_BASE_URL`, for pipelines without any config file, with a cache that `QLAM_TOKEN_CACHE`
//! may move to a shared directory; [`select_broker`] picks environment mode or a qsh context as
//! every front end does. The settings file (`qlam-auth.json`: budgets, client authentication)
//! is [`crate::settings`], re-exported here.
#![forbid(unsafe_code)]

pub use crate::settings::{BudgetPolicy, DEFAULT_WARN_PERCENT, SETTINGS_FILE, Settings, vars};

use crate::config::{
    ConfigSource, EnvSnapshot, GrantType, ProviderConfig, SecretSource, allow_http_loopback,
    normalize_issuer,
};
use crate::paths::QshPaths;
use crate::{Error, Result};
use std::path::PathBuf;

/// The implicit context name of environment mode.
pub const ENV_CONTEXT: &str = "env";

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
    use std::path::Path;

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
}
