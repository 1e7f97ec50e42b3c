//! "Give me a valid access token": the single-flight refresh every front end uses.
//!
//! 1. Fast path, no lock: if the stored access token is valid for `min_valid`, use it.
//! 2. Otherwise take the store lock (bounded wait), RE-READ the store, and check again: another
//!    process may have refreshed while we waited. Only if it is still needed, call the IdP once.
//! 3. Persist the answer (with rotation: the new refresh token) atomically and durably before the
//!    lock is released, and only if the file is still the one we read.
//! 4. On `invalid_grant`, re-read: a writer that takes no lock (QLAM Core) may have rotated the
//!    token meanwhile. Never delete credentials on failure.
//!
//! N processes that need a refresh at once therefore cause exactly one token request.
//!
//! `mod.rs` holds the [`Broker`] and how it is built; `obtain` the single-flight obtain (the
//! stale fallback and the `invalid_grant` re-read included), `login` the offline login check
//! (with the refused-login marker), saving a login and logout; `options` and `outcome` the types
//! callers pass and get back.

use crate::config::{IssuerUrl, ProviderConfig};
use crate::http::{HttpSettings, SharedHttp, UreqClient};
use crate::oauth::OAuthClient;
use crate::paths::QshPaths;
use crate::store::{CredentialStore, TokenSet};
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

mod login;
mod obtain;
mod options;
mod outcome;

pub use options::ObtainOptions;
pub use outcome::{LoginSummary, LogoutOutcome, Obtained, Revocation, Source};

/// One provider's tokens: store plus IdP.
#[derive(Debug)]
pub struct Broker {
    provider: ProviderConfig,
    store: CredentialStore,
    http_settings: HttpSettings,
    http: OnceLock<SharedHttp>,
    settings: crate::settings::Settings,
    deadline: Option<Instant>,
}

fn subject_of(t: &TokenSet) -> Option<String> {
    t.id_token
        .as_ref()
        .and_then(|i| crate::jwt::subject(i.expose()))
        .or_else(|| crate::jwt::subject(t.access_token.expose()))
}

impl Broker {
    /// Refuses a provider whose issuer is not in `http.allowed_issuers` (the site's allowlist,
    /// when there is one). [`Broker::new`] calls it first; the plugin calls it on its own so that
    /// this refusal, and only this one, is logged as a security event.
    pub fn check_issuer(provider: &ProviderConfig, http: &HttpSettings) -> Result<()> {
        if let Some(allowed) = &http.allowed_issuers {
            let ok = allowed
                .iter()
                .any(|a| IssuerUrl::parse(a, true).is_ok_and(|a| a == provider.issuer));
            if !ok {
                return Err(Error::config(
                    &provider.config_path,
                    format!("context '{}' auth_base_url", provider.context),
                    format!(
                        "the issuer {} is not allowed on this cluster (allowed: {}); ask your admins",
                        provider.issuer,
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A broker for `provider`'s tokens in `paths`. Refuses an issuer outside
    /// `http.allowed_issuers`. `env` is the environment whose settings overrides
    /// (`QLAM_TOKEN_BUDGET` ..., see [`crate::settings::Settings::load`]) apply: the CLI's, or in the
    /// plugin the daemon's (never a job's). Only `qlam-auth.json` is read; no connection is made
    /// yet.
    pub fn new(
        paths: &QshPaths,
        provider: ProviderConfig,
        http: &HttpSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        Self::check_issuer(&provider, http)?;
        Ok(Broker {
            store: CredentialStore::new(paths),
            provider,
            http_settings: http.clone(),
            http: OnceLock::new(),
            settings: crate::settings::Settings::load(&paths.config_dir, env)?,
            deadline: None,
        })
    }

    /// Uses `http` instead of building a real client (tests, or a caller's shared client).
    pub fn with_http(mut self, http: SharedHttp) -> Self {
        self.http = OnceLock::from(http);
        self
    }

    /// Ends every later call of this broker by `deadline`: the lock wait, discovery, the token
    /// request, its retries, a second client secret and the budget lock each get only what
    /// remains (one SPANK hook's `timeout=`). Without it each part has only its own bound.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Uses these settings (budget, client authentication) instead of `qlam-auth.json`.
    pub fn with_settings(mut self, settings: crate::settings::Settings) -> Self {
        self.settings = settings;
        self
    }

    /// qlam-auth's settings for this broker (budget, client authentication).
    pub fn settings(&self) -> &crate::settings::Settings {
        &self.settings
    }

    /// The provider.
    pub fn provider(&self) -> &ProviderConfig {
        &self.provider
    }

    /// The credentials store.
    pub fn store(&self) -> &CredentialStore {
        &self.store
    }

    /// The credentials file of this provider.
    pub fn credentials_path(&self) -> PathBuf {
        self.store.path_for(&self.provider.cache_key())
    }

    /// An OAuth client for this provider (builds the HTTP client on first use).
    pub fn oauth(&self) -> Result<OAuthClient> {
        let http = match self.http.get() {
            Some(h) => h.clone(),
            None => {
                let h: SharedHttp = Arc::new(UreqClient::new(&self.http_settings)?);
                self.http.get_or_init(|| h).clone()
            }
        };
        let mut client = OAuthClient::new(http, self.provider.clone(), self.http_settings.timeout)
            .with_deadline(self.deadline);
        if let Some(a) = self.settings.client_auth(&self.provider.client_id) {
            client.client_auth = Some(a);
        }
        Ok(client)
    }

    fn not_logged_in(&self) -> Error {
        Error::NotLoggedIn {
            context: self.provider.context.clone(),
            path: self.credentials_path(),
        }
    }
}
