//! What a caller asks of [`super::Broker::obtain`].

use std::time::{Duration, Instant};

/// How fresh a token must be and how long to wait for others.
#[derive(Debug, Clone)]
pub struct ObtainOptions {
    /// The access token must stay valid at least this long; otherwise it is renewed. A request
    /// for the whole lifetime the IdP gives its access tokens or more is capped at half that
    /// lifetime ([`TokenSet::achievable`](crate::store::TokenSet::achievable)): asked as it is, it would renew on every call and
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
    pub(super) fn lock_wait(&self, deadline: Option<Instant>) -> Duration {
        match deadline {
            Some(d) => self
                .lock_timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => self.lock_timeout,
        }
    }
}
