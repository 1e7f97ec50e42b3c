//! `~/.qsh/config.json`, read as QLAM Core 0.10 reads it, with the site file's contexts behind.
//!
//! - [`model`]: the file as serde types; unknown keys kept, so that a file rewritten by
//!   `qlam-auth config init` still loads in QLAM Core.
//! - [`provider`]: from a context to the oauth provider to use ([`ProviderConfig`]).
//! - [`secret`]: where a client secret comes from ([`SecretSource`], [`EnvSnapshot`]).
//! - [`issuer`]: the one issuer-URL rule.
//! - [`ConfigSource`]: where a setting came from, for messages.

pub mod issuer;
pub mod model;
pub mod provider;
pub mod secret;

pub use issuer::{IssuerUrl, allow_http_loopback, normalize_issuer};
pub use model::QshConfig;
pub use provider::{DEFAULT_USER_SCOPE, GrantType, ProviderConfig};
pub use secret::{EnvSnapshot, NEXT_SECRET_SUFFIX, SecretSource};

use crate::fsutil::{self, Policy};
use crate::paths::QshPaths;
use crate::site::Site;
use crate::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest config file we read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Where a configuration value came from, as configuration errors name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file: the user's config.json, a settings file, a secret file.
    File(PathBuf),
    /// The site file (`/etc/qlam-auth/site.json`).
    SiteFile(PathBuf),
    /// Environment variables (the process's, or a job's).
    Environment,
    /// The command line.
    CommandLine,
}

impl ConfigSource {
    /// The file, if this came from one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigSource::File(p) | ConfigSource::SiteFile(p) => Some(p),
            ConfigSource::Environment | ConfigSource::CommandLine => None,
        }
    }

    /// For messages: the file's path, or "the environment", "the command line".
    pub fn display(&self) -> impl fmt::Display + '_ {
        self
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) | ConfigSource::SiteFile(p) => write!(f, "{}", p.display()),
            ConfigSource::Environment => f.write_str("the environment"),
            ConfigSource::CommandLine => f.write_str("the command line"),
        }
    }
}

impl From<&Path> for ConfigSource {
    fn from(p: &Path) -> Self {
        ConfigSource::File(p.to_owned())
    }
}

impl From<PathBuf> for ConfigSource {
    fn from(p: PathBuf) -> Self {
        ConfigSource::File(p)
    }
}

impl From<&PathBuf> for ConfigSource {
    fn from(p: &PathBuf) -> Self {
        ConfigSource::File(p.clone())
    }
}

impl From<&str> for ConfigSource {
    fn from(p: &str) -> Self {
        ConfigSource::File(PathBuf::from(p))
    }
}

impl From<&ConfigSource> for ConfigSource {
    fn from(s: &ConfigSource) -> Self {
        s.clone()
    }
}

impl PartialEq<Path> for ConfigSource {
    fn eq(&self, other: &Path) -> bool {
        self.file() == Some(other)
    }
}

impl PartialEq<&Path> for ConfigSource {
    fn eq(&self, other: &&Path) -> bool {
        self.file() == Some(*other)
    }
}

/// A loaded config.json, with the site file's contexts behind it.
///
/// Precedence: the command line (`--context`) > the user's config.json > the site file. A
/// context the user's file defines is used as it is (QLAM Core reads only that file, so it must
/// be complete); a context only the site defines comes from the site file.
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    model: QshConfig,
    site: Option<Site>,
    exists: bool,
    allow_http_loopback: bool,
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

    /// Allows `http://` issuers on a loopback host (development only; see
    /// [`issuer::allow_http_loopback`]: the caller decides from its own environment, never a
    /// job's). Off unless set.
    pub fn with_http_loopback(mut self, allow: bool) -> Self {
        self.allow_http_loopback = allow;
        self
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
        if self.model.current().is_some() {
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
        Ok(Config {
            path: path.to_owned(),
            model: model::parse(path, bytes)?,
            site: None,
            exists: true,
            allow_http_loopback: false,
        })
    }

    /// An empty config that will be written to `path`.
    pub fn empty(path: &Path) -> Self {
        Config {
            path: path.to_owned(),
            model: QshConfig {
                current_context: Some(None),
                ..QshConfig::default()
            },
            site: None,
            exists: false,
            allow_http_loopback: false,
        }
    }

    /// The file this config came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The user's file as read (for writers: unknown fields are kept).
    pub fn model(&self) -> &QshConfig {
        &self.model
    }

    /// The user's file, mutable.
    pub fn model_mut(&mut self) -> &mut QshConfig {
        &mut self.model
    }

    /// `current_context` of the user's file if set, else the site's default context.
    pub fn current_context(&self) -> Option<&str> {
        self.model
            .current()
            .or_else(|| self.site.as_ref()?.default_context.as_deref())
    }

    fn user_context_names(&self) -> Vec<String> {
        self.model.contexts.iter().map(|c| c.name.clone()).collect()
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
    /// names it (if unset: the context's only oauth provider), with `env:` references looked up
    /// through `env` (the CLI passes its environment, the plugin the job's).
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
        if let Some((idx, ctx)) = self.model.context(name) {
            let source = ConfigSource::File(self.path.clone());
            let at = format!("contexts[{idx}]");
            return provider::resolve(&source, ctx, &at, env, self.allow_http_loopback);
        }
        let found = self.site.as_ref().and_then(|s| {
            let i = s.contexts.iter().position(|c| c.name == name)?;
            Some((s.path.clone(), i, s.contexts[i].to_qsh_context()))
        });
        let Some((site_path, i, ctx)) = found else {
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
        let source = ConfigSource::SiteFile(site_path);
        let at = format!("contexts[{i}]");
        provider::resolve(&source, &ctx, &at, env, self.allow_http_loopback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<Config> {
        // No secret is resolved here: `env:` references need no environment.
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
        let p = cfg(GOOD)
            .unwrap()
            .provider_with_env(None, &|_| None)
            .unwrap();
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
        let p = cfg(GOOD)
            .unwrap()
            .provider_with_env(Some("m2m"), &|_| None)
            .unwrap();
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
            .provider_with_env(Some("nope"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no context named 'nope'") && e.contains("prod, m2m"),
            "{e}"
        );
        let bad = GOOD.replace("\"client_id\": \"cli\"", "\"client_id\": 7");
        let e = cfg(&bad)
            .unwrap()
            .provider_with_env(None, &|_| None)
            .unwrap_err()
            .to_string();
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
        let e = cfg(&http)
            .unwrap()
            .provider_with_env(None, &|_| None)
            .unwrap_err()
            .to_string();
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
        let p = c.provider_with_env(Some("prod"), &|_| None).unwrap();
        assert_eq!(p.client_id, "cli", "the user's context wins");
        assert_eq!(p.config_path, Path::new("/t/config.json"));
        let p = c.provider_with_env(Some("hpc"), &|_| None).unwrap();
        assert_eq!(p.client_id, "site-hpc");
        assert_eq!(p.config_path, Path::new("/etc/qlam-auth/site.json"));
        assert_eq!(p.cache_key(), "oauth_hpc_qlam");
        assert_eq!(c.current_context(), Some("prod"));
        assert_eq!(c.current_context_origin(), Some(Origin::UserConfig));
        assert_eq!(c.context_names(), ["prod", "m2m", "hpc"]);
        let e = c
            .provider_with_env(Some("hcp"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 'hpc'"), "{e}");
        // No current context of the user's own: the site's default.
        let mut none = cfg(GOOD).unwrap().with_site(Some(site));
        none.model_mut().current_context = Some(None);
        assert_eq!(none.current_context(), Some("hpc"));
        assert_eq!(none.current_context_origin(), Some(Origin::SiteFile));
    }

    #[test]
    fn plain_http_to_loopback_is_the_callers_choice_never_the_lookups() {
        let loopback = GOOD.replace("https://idp.example/", "http://127.0.0.1:9");
        // A job's environment asking for it changes nothing: only the caller decides.
        let job_env = |k: &str| (k == "QLAM_AUTH_ALLOW_HTTP_LOOPBACK").then(|| "1".to_owned());
        let e = cfg(&loopback)
            .unwrap()
            .provider_with_env(None, &job_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain http"), "{e}");
        let p = cfg(&loopback)
            .unwrap()
            .with_http_loopback(true)
            .provider_with_env(None, &|_| None)
            .unwrap();
        assert_eq!(p.issuer, "http://127.0.0.1:9");
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
