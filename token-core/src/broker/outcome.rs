//! What the broker's calls return.

use crate::Error;
use crate::secret::Secret;
use crate::time::Timestamp;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Time spent in [`Broker::obtain`](super::Broker::obtain).
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

/// What happened to the token at the IdP during [`Broker::logout`](super::Broker::logout).
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

/// The result of [`Broker::logout`](super::Broker::logout).
#[derive(Debug)]
pub struct LogoutOutcome {
    /// True if a credentials file was deleted.
    pub removed: bool,
    /// What happened at the IdP.
    pub revocation: Revocation,
}
