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

use crate::config::{IssuerUrl, ProviderConfig};
use crate::http::{HttpSettings, SharedHttp, UreqClient};
use crate::oauth::{OAuthClient, TokenResponse};
use crate::paths::QshPaths;
use crate::secret::Secret;
use crate::store::{CredentialStore, SaveOutcome, Stored, TokenSet};
use crate::time::Timestamp;
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How fresh a token must be and how long to wait for others.
#[derive(Debug, Clone)]
pub struct ObtainOptions {
    /// The access token must stay valid at least this long; otherwise it is renewed. A request
    /// for the whole lifetime the IdP gives its access tokens or more is capped at half that
    /// lifetime ([`TokenSet::achievable`]): asked as it is, it would renew on every call and
    /// never be met.
    pub min_valid: Duration,
    /// How long to wait for another process holding the store lock.
    pub lock_timeout: Duration,
}

impl Default for ObtainOptions {
    fn default() -> Self {
        ObtainOptions {
            min_valid: Duration::from_secs(300),
            lock_timeout: Duration::from_secs(30),
        }
    }
}

impl ObtainOptions {
    /// The lock wait: `lock_timeout`, but never past `deadline`.
    fn lock_wait(&self, deadline: Option<Instant>) -> Duration {
        match deadline {
            Some(d) => self
                .lock_timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => self.lock_timeout,
        }
    }
}

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The store already held a token valid long enough: no IdP call.
    Cache,
    /// Another process renewed it while we waited for the lock: no IdP call by us.
    RenewedByOther,
    /// We renewed it (refresh, or a new machine token).
    Renewed,
    /// Renewal failed for a network reason; this stored token is still valid, but for less than
    /// `min_valid`.
    Stale,
}

/// A valid access token and what is safe to log about it.
#[derive(Debug, Clone)]
pub struct Obtained {
    /// The token.
    pub access_token: Secret,
    /// Its expiry (QLAM Core's rule), if known.
    pub expires_at: Option<Timestamp>,
    /// True if this call made a token request to the IdP.
    pub refreshed: bool,
    /// Where it came from.
    pub source: Source,
    /// Time spent in [`Broker::obtain`].
    pub elapsed: Duration,
    /// Time spent waiting for the lock.
    pub lock_wait: Duration,
    /// Who the token is for (from the ID or access token), if known.
    pub subject: Option<String>,
    /// The OAuth client id.
    pub client_id: String,
    /// The validity that was asked for, when it was at least this IdP's token lifetime and was
    /// therefore capped (at half that lifetime); `None` when `min_valid` was used as asked.
    pub capped_from: Option<Duration>,
    /// How long the IdP makes its access tokens live, if known.
    pub lifetime: Option<Duration>,
}

/// What the store says about a login, without any network call.
#[derive(Debug, Clone)]
pub struct LoginSummary {
    /// The credentials file.
    pub path: PathBuf,
    /// Access-token expiry, if known.
    pub access_expires_at: Option<Timestamp>,
    /// True if a refresh token is stored.
    pub has_refresh_token: bool,
    /// Who is logged in, if known.
    pub subject: Option<String>,
    /// Granted scope.
    pub scope: Option<String>,
    /// How long the IdP makes its access tokens live (from the stored one), if known.
    pub lifetime: Option<Duration>,
}

/// What happened to the token at the IdP during [`Broker::logout`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Revocation {
    /// The IdP revoked it.
    Revoked,
    /// The IdP has no revocation endpoint.
    NotSupported,
    /// Not asked for, or nothing was stored.
    NotAttempted,
    /// Revocation failed; the local credentials were removed anyway.
    Failed(Error),
}

/// The result of [`Broker::logout`].
#[derive(Debug)]
pub struct LogoutOutcome {
    /// True if a credentials file was deleted.
    pub removed: bool,
    /// What happened at the IdP.
    pub revocation: Revocation,
}

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

    /// Checks, offline, that a token can be had: a valid access token or a refresh token is
    /// stored (user flows), or the machine credentials are configured (client credentials).
    pub fn check_login(&self) -> Result<LoginSummary> {
        let stored = self.store.load(&self.provider.cache_key())?;
        if !self.provider.grant_type.is_user_flow() {
            self.provider.resolve_secret()?;
        }
        let summary = |s: &Stored| LoginSummary {
            path: s.path.clone(),
            access_expires_at: s.tokens.exact_expires_at(),
            has_refresh_token: s.tokens.refresh_token.is_some(),
            subject: subject_of(&s.tokens),
            scope: s.tokens.scope.clone(),
            lifetime: s.tokens.lifetime(),
        };
        match stored {
            Some(s) if !self.provider.grant_type.is_user_flow() => Ok(summary(&s)),
            Some(s) if s.tokens.valid_for(Timestamp::now(), Duration::ZERO) => Ok(summary(&s)),
            Some(s)
                if s.tokens
                    .refresh_token
                    .as_ref()
                    .is_some_and(|rt| self.store.was_refused(&self.provider.cache_key(), rt)) =>
            {
                Err(Error::LoginExpired {
                    context: self.provider.context.clone(),
                    reason: "the identity provider refused its refresh token (invalid_grant)"
                        .into(),
                })
            }
            Some(s) if s.tokens.refresh_token.is_some() => Ok(summary(&s)),
            Some(_) => Err(Error::LoginExpired {
                context: self.provider.context.clone(),
                reason: "the access token expired and no refresh token is stored".into(),
            }),
            None if !self.provider.grant_type.is_user_flow() => Ok(LoginSummary {
                path: self.credentials_path(),
                access_expires_at: None,
                has_refresh_token: false,
                subject: None,
                scope: None,
                lifetime: None,
            }),
            None => Err(self.not_logged_in()),
        }
    }

    /// A valid access token, renewed (once, under the lock) only if needed.
    ///
    /// "Valid" is judged by the exact expiry ([`TokenSet::exact_expires_at`]) against
    /// `min_valid`, capped when it asks for a whole token lifetime or more. A token that another process renewed
    /// while this one waited is taken even if it lives less than asked: it is the freshest the
    /// IdP gives, and asking again would only cost another request.
    pub fn obtain(&self, opts: &ObtainOptions) -> Result<Obtained> {
        let start = Instant::now();
        let key = self.provider.cache_key();
        let done = |t: &TokenSet, source: Source, lock_wait: Duration| {
            let wanted = t.achievable(opts.min_valid);
            Obtained {
                access_token: t.access_token.clone(),
                expires_at: t.exact_expires_at(),
                refreshed: source == Source::Renewed,
                source,
                elapsed: start.elapsed(),
                lock_wait,
                subject: subject_of(t),
                client_id: self.provider.client_id.clone(),
                capped_from: (wanted < opts.min_valid).then_some(opts.min_valid),
                lifetime: t.lifetime(),
            }
        };
        // Renewal failed for a reason that is not the user's (IdP down, lock holder hangs): a
        // stored token that is still valid beats failing. The store is read again first: the
        // holder we waited for may have renewed it by now.
        let stale = |e: Error, lock_wait: Duration| match self.store.load(&key) {
            Ok(Some(s)) if s.tokens.valid_for(Timestamp::now(), Duration::from_secs(1)) => {
                if matches!(e, Error::LockTimeout { .. }) {
                    log::warn!(target: "qlam_auth", "{e}; using the stored token, valid for less than requested");
                } else {
                    log::warn!(target: "qlam_auth", "could not renew the token ({e}); using the stored one, valid for less than requested");
                }
                Ok(done(&s.tokens, Source::Stale, lock_wait))
            }
            Ok(_) => Err(e),
            Err(read) => {
                log::warn!(target: "qlam_auth", "could not read the store again after: {e}");
                Err(read)
            }
        };
        let user_flow = self.provider.grant_type.is_user_flow();
        // 1. Fast path.
        let seen = self.store.load(&key)?;
        match &seen {
            Some(s)
                if s.tokens
                    .valid_for(Timestamp::now(), s.tokens.achievable(opts.min_valid)) =>
            {
                return Ok(done(&s.tokens, Source::Cache, Duration::ZERO));
            }
            Some(s) if user_flow && s.tokens.refresh_token.is_none() => {
                return Err(Error::LoginExpired {
                    context: self.provider.context.clone(),
                    reason: "the access token expires soon and no refresh token is stored".into(),
                });
            }
            None if user_flow => return Err(self.not_logged_in()),
            _ => {}
        }
        let seen_at = seen.as_ref().map(|s| s.tokens.created_at);
        // Good enough now: valid for what can be asked of this IdP, or renewed by someone else
        // since we looked and not yet expired.
        let good = |t: &TokenSet| {
            let now = Timestamp::now();
            t.valid_for(now, t.achievable(opts.min_valid))
                || (seen_at.is_some_and(|at| t.created_at > at)
                    && t.valid_for(now, Duration::from_secs(1)))
        };
        // 2. Single flight.
        let context = self.provider.context.clone();
        let wait_start = Instant::now();
        // While another process holds the lock, look at the store between polls (without the
        // lock: replacement is atomic) and leave as soon as its refresh has landed.
        let mut fresh: Option<TokenSet> = None;
        let lock = self.store.lock_unless(
            &key,
            opts.lock_wait(self.deadline),
            &mut |waited| {
                // Target `qlam_auth::lock_wait`: the CLI shows it on a terminal without -v.
                let secs = waited.as_secs();
                if secs <= 1 || secs % 5 == 0 {
                    log::info!(target: "qlam_auth::lock_wait", "waiting for another process that is renewing the token of context '{context}' (it holds {}.lock; {secs} s so far, at most {} s)", self.credentials_path().display(), opts.lock_timeout.as_secs());
                }
            },
            &mut || match self.store.load(&key) {
                Ok(Some(s)) if good(&s.tokens) => {
                    fresh = Some(s.tokens);
                    true
                }
                _ => false,
            },
        );
        let lock = match lock {
            Ok(Some(l)) => l,
            Ok(None) => {
                let t = fresh.ok_or_else(|| {
                    Error::store(
                        self.credentials_path(),
                        "the lock wait ended without a token",
                    )
                })?;
                return Ok(done(&t, Source::RenewedByOther, wait_start.elapsed()));
            }
            Err(Error::LockTimeout { path, waited }) => {
                // The holder may have finished just now.
                if let Ok(Some(s)) = self.store.load(&key)
                    && good(&s.tokens)
                {
                    return Ok(done(&s.tokens, Source::RenewedByOther, waited));
                }
                return stale(Error::LockTimeout { path, waited }, waited);
            }
            Err(e) => return Err(e),
        };
        let lock_wait = lock.waited();
        // A writer killed between fsync and rename left the newest tokens in a temp file.
        self.store.recover_interrupted_write(&key)?;
        let current = self.store.load(&key)?;
        if let Some(s) = &current
            && good(&s.tokens)
        {
            return Ok(done(&s.tokens, Source::RenewedByOther, lock_wait));
        }
        let renewed = self.renew(current.as_ref(), 0);
        drop(lock);
        match renewed {
            Ok(t) => Ok(done(&t, Source::Renewed, lock_wait)),
            Err(e @ (Error::IdpUnreachable { .. } | Error::IdpBadResponse { .. })) => {
                stale(e, lock_wait)
            }
            Err(e) => Err(e),
        }
    }

    /// Renews under the lock; `current` was read under the lock.
    fn renew(&self, current: Option<&Stored>, depth: u8) -> Result<TokenSet> {
        let key = self.provider.cache_key();
        let oauth = self.oauth()?;
        let response: TokenResponse = if self.provider.grant_type.is_user_flow() {
            let s = current.ok_or_else(|| self.not_logged_in())?;
            let rt = s
                .tokens
                .refresh_token
                .clone()
                .ok_or_else(|| Error::LoginExpired {
                    context: self.provider.context.clone(),
                    reason: "no refresh token is stored".into(),
                })?;
            crate::faultpoint::hit("broker.before_refresh");
            match oauth.refresh(&rt) {
                Ok(r) => r,
                Err(Error::IdpRefused {
                    code: crate::oauth::OAuthErrorCode::InvalidGrant,
                    ..
                }) => {
                    return self.after_invalid_grant(&rt, depth);
                }
                Err(e) => return Err(e),
            }
        } else {
            let budget = self.settings.budget(&self.provider.client_id);
            crate::budget::machine_token(oauth, self.store.dir(), budget)?
        };
        crate::faultpoint::hit("broker.after_response");
        let tokens = response.into_token_set(current.map(|s| &s.tokens), Timestamp::now());
        let expected = current.and_then(|s| s.file_id);
        match self
            .store
            .save_if_unchanged(&key, &self.provider.context, &tokens, expected)?
        {
            SaveOutcome::Saved => {}
            SaveOutcome::ChangedMeanwhile => log::warn!(
                target: "qlam_auth",
                "the credentials file {} was replaced by another program during the refresh; left it as it is",
                self.credentials_path().display()
            ),
        }
        Ok(tokens)
    }

    fn after_invalid_grant(&self, used: &Secret, depth: u8) -> Result<TokenSet> {
        let expired = |reason: &str| Error::LoginExpired {
            context: self.provider.context.clone(),
            reason: reason.to_owned(),
        };
        let again = self.store.load(&self.provider.cache_key())?;
        match again {
            Some(s) if s.tokens.refresh_token.as_ref() != Some(used) => {
                // Someone who takes no lock rotated it meanwhile.
                if s.tokens
                    .valid_for(Timestamp::now(), Duration::from_secs(60))
                {
                    return Ok(s.tokens);
                }
                if depth == 0 {
                    return self.renew(Some(&s), 1);
                }
                Err(expired(
                    "the identity provider refused the refresh token (invalid_grant)",
                ))
            }
            _ => {
                // Remembered so that `status`, `doctor` and sbatch say so, offline.
                if let Err(e) = self.store.mark_refused(&self.provider.cache_key(), used) {
                    log::debug!(target: "qlam_auth", "could not record the refused login: {e}");
                }
                Err(expired(
                    "the identity provider refused the refresh token (invalid_grant)",
                ))
            }
        }
    }

    /// After a resource server refused `rejected` (HTTP 401): a new token, unless the stored one
    /// already differs from `rejected` (someone renewed it since it was used) and is valid for
    /// `min_valid`. Renews under the lock, at most once; for user logins this uses the refresh
    /// token as [`Broker::obtain`] does.
    pub fn obtain_replacing(&self, rejected: &Secret, opts: &ObtainOptions) -> Result<Obtained> {
        let start = Instant::now();
        let key = self.provider.cache_key();
        let lock = self
            .store
            .lock(&key, opts.lock_wait(self.deadline), &mut |_| {})?;
        let lock_wait = lock.waited();
        // A writer killed between fsync and rename left the newest tokens in a temp file.
        self.store.recover_interrupted_write(&key)?;
        let current = self.store.load(&key)?;
        let (tokens, source) = match &current {
            Some(s)
                if &s.tokens.access_token != rejected
                    && s.tokens.valid_for(Timestamp::now(), opts.min_valid) =>
            {
                (s.tokens.clone(), Source::RenewedByOther)
            }
            _ => (self.renew(current.as_ref(), 0)?, Source::Renewed),
        };
        drop(lock);
        Ok(Obtained {
            access_token: tokens.access_token.clone(),
            expires_at: tokens.exact_expires_at(),
            refreshed: source == Source::Renewed,
            source,
            elapsed: start.elapsed(),
            lock_wait,
            subject: subject_of(&tokens),
            client_id: self.provider.client_id.clone(),
            capped_from: None,
            lifetime: tokens.lifetime(),
        })
    }

    /// Stores the result of an interactive login, under the lock.
    pub fn save_login(&self, response: TokenResponse) -> Result<PathBuf> {
        let key = self.provider.cache_key();
        let _lock = self
            .store
            .lock(&key, Duration::from_secs(30), &mut |_| {})?;
        let tokens = response.into_token_set(None, Timestamp::now());
        self.store.save(&key, &self.provider.context, &tokens)
    }

    /// Deletes the stored login; revokes the refresh token first if `revoke`. If revocation was
    /// asked for and failed (IdP down), the credentials are kept, so that the still valid
    /// refresh token can be revoked later.
    pub fn logout(&self, revoke: bool) -> Result<LogoutOutcome> {
        let key = self.provider.cache_key();
        let _lock = self
            .store
            .lock(&key, Duration::from_secs(30), &mut |_| {})?;
        let stored = self.store.load(&key)?;
        let revocation = match (&stored, revoke) {
            (None, _) | (_, false) => Revocation::NotAttempted,
            (Some(t), true) => {
                let (tok, hint) = match &t.tokens.refresh_token {
                    Some(rt) => (rt.clone(), "refresh_token"),
                    None => (t.tokens.access_token.clone(), "access_token"),
                };
                match self.oauth().and_then(|o| o.revoke(&tok, hint)) {
                    Ok(true) => Revocation::Revoked,
                    Ok(false) => Revocation::NotSupported,
                    Err(e) => Revocation::Failed(e),
                }
            }
        };
        let removed = match revocation {
            Revocation::Failed(_) => false,
            _ => self.store.remove(&key)?,
        };
        Ok(LogoutOutcome {
            removed,
            revocation,
        })
    }
}
