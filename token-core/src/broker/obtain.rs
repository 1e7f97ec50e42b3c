//! The single-flight obtain: fast path, lock, re-read, one renewal, the stale fallback and the
//! re-read after `invalid_grant`.

use super::{Broker, ObtainOptions, Obtained, Source, subject_of};
use crate::secret::Secret;
use crate::store::{SaveOutcome, Stored, TokenSet};
use crate::time::Timestamp;
use crate::{Error, Result};
use std::time::{Duration, Instant};

impl Broker {
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
        let response: TokenSet = if self.provider.grant_type.is_user_flow() {
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
        let tokens = response.rotated_from(current.map(|s| &s.tokens));
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
}
