//! The token set of one token response, and the expiry rules around it.

use crate::secret::Secret;
use crate::time::Timestamp;
use std::time::Duration;

/// A set of tokens from one token response, as QLAM Core's `TokenData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// Usually `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds from `created_at`, if the IdP said.
    pub expires_in: Option<i64>,
    /// The refresh token, if any.
    pub refresh_token: Option<Secret>,
    /// The ID token, if any.
    pub id_token: Option<Secret>,
    /// Granted scope.
    pub scope: Option<String>,
    /// When the response was received.
    pub created_at: Timestamp,
}

impl TokenSet {
    /// This (new) answer as the store keeps it. With rotation the new refresh token replaces
    /// the old one; an answer without one keeps the previous refresh token (and ID token and
    /// scope).
    pub fn rotated_from(self, previous: Option<&TokenSet>) -> TokenSet {
        TokenSet {
            refresh_token: self
                .refresh_token
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            id_token: self
                .id_token
                .or_else(|| previous.and_then(|p| p.id_token.clone())),
            scope: self
                .scope
                .or_else(|| previous.and_then(|p| p.scope.clone())),
            ..self
        }
    }

    /// Expiry of the access token by QLAM Core's rule (`created_at` truncated to the minute, plus
    /// `expires_in`): what the file's `expires_at` says. `None` = unknown. Our own decisions use
    /// [`TokenSet::exact_expires_at`] instead: this rule can make a short-lived token look expired
    /// at birth.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_in
            .map(|s| self.created_at.truncated_to_minute().plus_seconds(s))
    }

    /// The access token's real expiry: `created_at` (with its fraction) plus `expires_in`, or the
    /// JWT `exp` claim when the access token is a JWT that has one; the earlier of the two when
    /// both are known (a token is used past neither). `None` = unknown (treated as not
    /// expiring, as QLAM Core does).
    pub fn exact_expires_at(&self) -> Option<Timestamp> {
        let by_answer = self.expires_in.map(|s| self.created_at.plus_seconds(s));
        let by_claim =
            crate::jwt::expiry(self.access_token.expose()).map(Timestamp::from_unix_seconds);
        match (by_answer, by_claim) {
            (Some(a), Some(c)) => Some(if a.seconds_until(c) < 0 { c } else { a }),
            (a, c) => a.or(c),
        }
    }

    /// How long the identity provider made this access token live (`expires_in`, else the JWT's
    /// `exp - iat`): the most validity a renewal can give. `None` = unknown.
    pub fn lifetime(&self) -> Option<Duration> {
        let secs = self.expires_in.or_else(|| {
            let c = crate::jwt::unverified_claims(self.access_token.expose())?;
            Some(c.get("exp")?.as_i64()? - c.get("iat")?.as_i64()?)
        })?;
        u64::try_from(secs).ok().map(Duration::from_secs)
    }

    /// Seconds of validity left at `now` by the exact expiry (`None` if unknown).
    pub fn seconds_left(&self, now: Timestamp) -> Option<i64> {
        self.exact_expires_at().map(|e| now.seconds_until(e))
    }

    /// True if the access token is valid for at least `min_valid` more at `now` (exact expiry).
    pub fn valid_for(&self, now: Timestamp, min_valid: Duration) -> bool {
        match self.seconds_left(now) {
            None => true,
            Some(left) => left >= i64::try_from(min_valid.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The validity a caller can get from this IdP. A request the IdP's tokens can meet
    /// (`min_valid` below their lifetime) is kept as it is. A request for the whole lifetime or
    /// more, which no token meets once it is a second old, is capped at half the lifetime: asked
    /// as it is, every call would renew, one after another under the lock, and still not get it.
    pub fn achievable(&self, min_valid: Duration) -> Duration {
        match self.lifetime() {
            Some(l) if min_valid >= l => l / 2,
            _ => min_valid,
        }
    }
}

/// A token set for the tests of the store.
#[cfg(test)]
pub(crate) fn sample() -> TokenSet {
    TokenSet {
        access_token: Secret::new("at\"1"),
        token_type: "Bearer".into(),
        expires_in: Some(86_400),
        refresh_token: Some(Secret::new("rt1")),
        id_token: None,
        scope: Some("openid offline_access".into()),
        created_at: Timestamp::parse("2026-11-22T10:00:42.5+00:00").unwrap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn the_file_keeps_qlam_cores_rule_and_decisions_use_the_exact_expiry() {
        let t = sample();
        // sample(): created 10:00:42.5 with 86400 s: QLAM Core's rule truncates to the minute,
        // the exact expiry keeps the seconds and their fraction.
        let file_exp = t.expires_at().unwrap();
        let exact = t.exact_expires_at().unwrap();
        assert_eq!(file_exp.to_python_str(), "2026-11-23 10:00:00+00:00");
        assert_eq!(file_exp.seconds_until(exact), 42);
        assert!(t.valid_for(exact.plus_seconds(-300), Duration::from_secs(300)));
        assert!(!t.valid_for(exact.plus_seconds(-299), Duration::from_secs(300)));
    }

    #[test]
    fn a_short_token_created_late_in_a_minute_is_not_expired_at_birth() {
        let created = Timestamp::parse("2026-11-22T10:00:55.000000+00:00").unwrap();
        let t = TokenSet {
            expires_in: Some(30),
            created_at: created,
            ..sample()
        };
        // QLAM Core's rule: 10:00:00 + 30 s, already past at birth.
        assert!(t.expires_at().unwrap().seconds_until(created) > 0);
        assert!(t.valid_for(created.plus_seconds(1), Duration::ZERO));
        assert!(t.valid_for(created, Duration::from_secs(29)));
    }

    #[test]
    fn the_jwt_exp_counts_and_requests_beyond_the_lifetime_are_capped_at_half() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","iat":1800000000,"exp":1800000300}"#);
        let t = TokenSet {
            access_token: Secret::new(format!("e30.{claims}.sig")),
            expires_in: None,
            ..sample()
        };
        assert_eq!(t.exact_expires_at().unwrap().unix_seconds(), 1_800_000_300);
        assert_eq!(t.lifetime(), Some(Duration::from_secs(300)));
        assert_eq!(
            t.achievable(Duration::from_secs(600)),
            Duration::from_secs(150)
        );
        assert_eq!(
            t.achievable(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        let opaque = TokenSet {
            expires_in: Some(300),
            ..sample()
        };
        assert_eq!(
            opaque.achievable(Duration::from_secs(600)),
            Duration::from_secs(150)
        );
        // Both known: the earlier one.
        let both = TokenSet {
            expires_in: Some(60),
            created_at: Timestamp::from_unix_seconds(1_800_000_000),
            ..t.clone()
        };
        assert_eq!(
            both.exact_expires_at().unwrap().unix_seconds(),
            1_800_000_060
        );
    }
}
