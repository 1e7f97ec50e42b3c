//! Narrow job tokens: RFC 8693 token exchange of the user's access token for a token with a
//! site-approved audience, scope and lifetime, and the site policy that bounds what a user may
//! ask for.
//!
//! * [`Policy`]: what a site allows (`exchange=off|preferred|required`, audiences, scopes, a
//!   maximum lifetime); [`Policy::resolve`] turns what a user asks for into a [`Request`] or
//!   refuses it with the fix in the message. A user may ask for less, never for more.
//! * [`crate::oauth::OAuthClient::exchange_access_token`] sends the request.
//!
//! RFC 8693 has no parameter for the lifetime of the issued token. qlam-auth sends the cap as
//! `requested_lifetime` (seconds), which an IdP may honour or ignore; [`Exchanged::lifetime`]
//! says what the IdP granted, and callers log when it is longer than asked.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::broker::{Broker, ObtainOptions, Obtained};
use crate::fsutil::{self, Policy as FilePolicy};
use crate::secret::Secret;
use crate::store::TokenSet;
use crate::time::Timestamp;
use crate::{Error, Result};

/// The RFC 8693 grant type.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The RFC 8693 token type of an OAuth access token (subject and requested token).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Whether jobs get exchanged tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Jobs get the user's own token (the default).
    #[default]
    Off,
    /// Jobs get an exchanged token; if the exchange fails, the user's token, with the reason
    /// logged.
    Preferred,
    /// Jobs get an exchanged token or none: the job fails with the reason.
    Required,
}

impl Mode {
    /// Parses `off`, `preferred`, `required`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Mode::Off),
            "preferred" => Some(Mode::Preferred),
            "required" => Some(Mode::Required),
            _ => None,
        }
    }

    /// The plugstack spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Preferred => "preferred",
            Mode::Required => "required",
        }
    }
}

/// What a site allows a job token to be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Off, preferred or required.
    pub mode: Mode,
    /// Allowed audiences; the first is the default. Empty: the user's provider's `audience`
    /// (or none) is the only one.
    pub audiences: Vec<String>,
    /// Allowed scopes; all of them by default. Empty: the request carries no scope and the IdP
    /// decides.
    pub scopes: Vec<String>,
    /// Longest lifetime a job token may have.
    pub max_lifetime: Option<Duration>,
}

/// What one exchange asks for, within a [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The audience, if any.
    pub audience: Option<String>,
    /// Space-separated scopes, if any.
    pub scope: Option<String>,
    /// The longest lifetime wanted (sent as `requested_lifetime`).
    pub lifetime: Option<Duration>,
}

/// Splits a scope list given with spaces or commas.
pub fn split_scopes(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Policy {
    /// What an exchange asks for when the user asks for `audience` and `scope` (space- or
    /// comma-separated), for a job that needs its token for at most `needed`. Refuses, with a
    /// message that names what is allowed, anything beyond the policy.
    pub fn resolve(
        &self,
        audience: Option<&str>,
        scope: Option<&str>,
        needed: Option<Duration>,
    ) -> Result<Request, String> {
        let audience = audience.map(str::trim).filter(|a| !a.is_empty());
        let audience = match audience {
            None => self.audiences.first().cloned(),
            Some(a) if self.audiences.is_empty() || self.audiences.iter().any(|x| x == a) => {
                Some(a.to_owned())
            }
            Some(a) => {
                return Err(format!(
                    "the audience '{a}' is not allowed for job tokens here; allowed: {} \
                     (ask for one of them, or leave the audience out for '{}')",
                    self.audiences.join(", "),
                    self.audiences[0]
                ));
            }
        };
        let wanted = scope.map(split_scopes).unwrap_or_default();
        let refused: Vec<&str> = wanted
            .iter()
            .filter(|s| !self.scopes.is_empty() && !self.scopes.contains(s))
            .map(String::as_str)
            .collect();
        if !refused.is_empty() {
            return Err(format!(
                "the scope '{}' is not allowed for job tokens here; allowed: {} (ask for \
                 fewer scopes, or leave the scope out for all of them)",
                refused.join(" "),
                self.scopes.join(" ")
            ));
        }
        let scopes = if wanted.is_empty() {
            self.scopes.clone()
        } else {
            wanted
        };
        let lifetime = match (needed, self.max_lifetime) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Request {
            audience,
            scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
            lifetime,
        })
    }
}

/// A job token obtained by token exchange.
#[derive(Debug, Clone)]
pub struct Exchanged {
    /// The token.
    pub token: Secret,
    /// Its lifetime as the IdP stated it (`expires_in`).
    pub lifetime: Option<Duration>,
    /// The scope the IdP granted (or the one asked for, if it did not say).
    pub scope: Option<String>,
    /// The audience asked for.
    pub audience: Option<String>,
}

impl Exchanged {
    /// From a token response to `req`.
    pub fn from_response(res: TokenSet, req: &Request) -> Self {
        Exchanged {
            token: res.access_token,
            lifetime: res
                .expires_in
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            scope: res.scope.or_else(|| req.scope.clone()),
            audience: req.audience.clone(),
        }
    }

    /// True when the IdP granted a longer lifetime than `req` asked for (or did not say).
    pub fn outlives(&self, req: &Request) -> bool {
        match (req.lifetime, self.lifetime) {
            (Some(want), Some(got)) => got > want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The user's fresh token (single flight through the broker), exchanged for a job token.
/// Returns both: the user's for the log (subject, client, refresh), the job's for delivery.
pub fn job_token(
    broker: &Broker,
    opts: &ObtainOptions,
    req: &Request,
) -> Result<(Obtained, Exchanged)> {
    let user = broker.obtain(opts)?;
    let res = broker
        .oauth()?
        .exchange_access_token(&user.access_token, req)?;
    Ok((user, Exchanged::from_response(res, req)))
}

/// What the job directory records about an exchanged token file, beside it: its expiry (an
/// opaque token does not tell) and what it is for. Never the token; its fingerprint only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Fingerprint of the token this describes.
    pub fingerprint: String,
    /// Expiry, Unix seconds.
    pub expires_at: Option<i64>,
    /// Lifetime in seconds, as the IdP stated it.
    #[serde(default)]
    pub lifetime: Option<u64>,
    /// The audience asked for.
    pub audience: Option<String>,
    /// The scope granted.
    pub scope: Option<String>,
}

impl Meta {
    /// The record for `x`, obtained at `now`.
    pub fn of(x: &Exchanged, now: Timestamp) -> Self {
        Meta {
            fingerprint: x.token.fingerprint(),
            expires_at: x
                .lifetime
                .map(|l| now.unix_seconds().saturating_add(l.as_secs() as i64)),
            lifetime: x.lifetime.map(|l| l.as_secs()),
            audience: x.audience.clone(),
            scope: x.scope.clone(),
        }
    }

    /// True if this record describes `token`.
    pub fn describes(&self, token: &Secret) -> bool {
        self.fingerprint == token.fingerprint()
    }
}

/// The record's name beside token file `file_name`.
pub fn meta_file_name(file_name: &str) -> String {
    format!("{file_name}.exchange")
}

/// Writes the record of token file `file_name` in the job directory `dir` (as the user, 0600).
pub fn write_meta(dir: &Path, file_name: &str, meta: &Meta) -> Result<()> {
    let fd = fsutil::open_dir(dir, FilePolicy::PRIVATE)?
        .ok_or_else(|| Error::store(dir, "the job token directory does not exist"))?;
    let mut bytes = serde_json::to_vec(meta)
        .map_err(|e| Error::store(dir, format!("cannot encode the token record: {e}")))?;
    bytes.push(b'\n');
    fsutil::atomic_write_at(
        fsutil::fd(&fd),
        dir,
        &meta_file_name(file_name),
        &bytes,
        0o600,
    )
    .map(|_| ())
}

/// The record of token file `file_name`, if there is a readable one (as the user).
pub fn read_meta(dir: &Path, file_name: &str) -> Option<Meta> {
    let fd = fsutil::open_dir(dir, FilePolicy::PRIVATE).ok()??;
    let bytes = fsutil::read_file_at(
        fsutil::fd(&fd),
        dir,
        &meta_file_name(file_name),
        FilePolicy::PRIVATE,
        16 * 1024,
    )
    .ok()??;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Policy {
        Policy {
            mode: Mode::Required,
            audiences: vec!["https://a.example".into(), "https://b.example".into()],
            scopes: vec!["read".into(), "write".into()],
            max_lifetime: Some(Duration::from_secs(3600)),
        }
    }

    #[test]
    fn defaults_are_the_first_audience_and_all_scopes() {
        let r = site().resolve(None, None, None).unwrap();
        assert_eq!(r.audience.as_deref(), Some("https://a.example"));
        assert_eq!(r.scope.as_deref(), Some("read write"));
        assert_eq!(r.lifetime, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn a_user_may_ask_for_less() {
        let r = site()
            .resolve(
                Some("https://b.example"),
                Some("read"),
                Some(Duration::from_secs(600)),
            )
            .unwrap();
        assert_eq!(r.audience.as_deref(), Some("https://b.example"));
        assert_eq!(r.scope.as_deref(), Some("read"));
        assert_eq!(r.lifetime, Some(Duration::from_secs(600)));
        let r = site().resolve(None, Some("write,read"), None).unwrap();
        assert_eq!(r.scope.as_deref(), Some("write read"));
    }

    #[test]
    fn never_more() {
        let e = site().resolve(None, Some("read admin"), None).unwrap_err();
        assert!(
            e.contains("'admin'") && e.contains("allowed: read write"),
            "{e}"
        );
        let e = site()
            .resolve(Some("https://evil.example"), None, None)
            .unwrap_err();
        assert!(
            e.contains("https://evil.example") && e.contains("https://a.example"),
            "{e}"
        );
        // The job's need never raises the site's maximum.
        let r = site()
            .resolve(None, None, Some(Duration::from_secs(99_999)))
            .unwrap();
        assert_eq!(r.lifetime, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn an_open_policy_passes_the_request_on() {
        let p = Policy {
            mode: Mode::Preferred,
            ..Policy::default()
        };
        let r = p.resolve(Some("https://x"), Some("s1 s2"), None).unwrap();
        assert_eq!(r.audience.as_deref(), Some("https://x"));
        assert_eq!(r.scope.as_deref(), Some("s1 s2"));
        assert_eq!(r.lifetime, None);
        assert_eq!(p.resolve(None, None, None).unwrap().scope, None);
    }

    #[test]
    fn modes_parse() {
        for m in [Mode::Off, Mode::Preferred, Mode::Required] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
        assert_eq!(Mode::parse("yes"), None);
    }
}
