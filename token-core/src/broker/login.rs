//! The login's life in the store: the offline check (with the refused-login marker), saving an
//! interactive login, logout.

use super::{Broker, LoginSummary, LogoutOutcome, Revocation, subject_of};
use crate::store::Stored;
use crate::store::TokenSet;
use crate::time::Timestamp;
use crate::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

impl Broker {
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

    /// Stores the result of an interactive login, under the lock.
    pub fn save_login(&self, response: TokenSet) -> Result<PathBuf> {
        let key = self.provider.cache_key();
        let _lock = self
            .store
            .lock(&key, Duration::from_secs(30), &mut |_| {})?;
        let tokens = response.rotated_from(None);
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
