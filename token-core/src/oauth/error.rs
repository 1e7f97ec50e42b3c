//! Error answers of an IdP, classified by their `error` field only: the body is never logged
//! or carried in errors (an IdP may echo what it was sent).

use super::json::bad;
use super::response::ErrorWire;
use crate::Error;
use crate::http::HttpResponse;
use std::fmt;

/// An OAuth `error` code (RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1,
/// RFC 8628 §3.5, RFC 8693 §2.2.2). Only an RFC-style code (`a-z`, `_`, at most 40 characters)
/// is kept, as [`OAuthErrorCode::Other`] when we do not know it; anything else is
/// [`OAuthErrorCode::NonStandard`], so that an IdP that echoes what it was sent cannot get it
/// into our errors. `error_description` is never read, for the same reason. Displayed as the
/// code itself (`invalid_grant`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`: a parameter is missing, repeated or malformed.
    InvalidRequest,
    /// `invalid_client`: client authentication failed (wrong id or secret).
    InvalidClient,
    /// `invalid_grant`: the refresh token, code or device code is invalid, expired or spent.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant.
    UnauthorizedClient,
    /// `unsupported_grant_type`: the IdP does not offer this grant.
    UnsupportedGrantType,
    /// `unsupported_response_type`: the IdP does not offer this response type.
    UnsupportedResponseType,
    /// `unsupported_token_type`: revocation of this token type is not supported.
    UnsupportedTokenType,
    /// `invalid_scope`: the scope is invalid or more than granted.
    InvalidScope,
    /// `invalid_target`: the audience or resource is not acceptable.
    InvalidTarget,
    /// `invalid_token`: the access token is invalid (a resource server's answer).
    InvalidToken,
    /// `insufficient_scope`: the access token lacks a scope (a resource server's answer).
    InsufficientScope,
    /// `authorization_pending`: the user has not approved the device code yet.
    AuthorizationPending,
    /// `slow_down`: poll the device code less often.
    SlowDown,
    /// `access_denied`: the user or the IdP denied the request.
    AccessDenied,
    /// `expired_token`: the device code expired.
    ExpiredToken,
    /// `temporarily_unavailable`: the IdP is overloaded or in maintenance.
    TemporarilyUnavailable,
    /// `server_error`: the IdP failed.
    ServerError,
    /// An RFC-style code we do not know (e.g. `login_required`), as the IdP sent it.
    Other(String),
    /// Anything that is not an RFC-style code: shown as `non_standard_error`.
    NonStandard,
}

/// The codes we know, with their spelling.
const KNOWN: [(&str, OAuthErrorCode); 17] = [
    ("invalid_request", OAuthErrorCode::InvalidRequest),
    ("invalid_client", OAuthErrorCode::InvalidClient),
    ("invalid_grant", OAuthErrorCode::InvalidGrant),
    ("unauthorized_client", OAuthErrorCode::UnauthorizedClient),
    (
        "unsupported_grant_type",
        OAuthErrorCode::UnsupportedGrantType,
    ),
    (
        "unsupported_response_type",
        OAuthErrorCode::UnsupportedResponseType,
    ),
    (
        "unsupported_token_type",
        OAuthErrorCode::UnsupportedTokenType,
    ),
    ("invalid_scope", OAuthErrorCode::InvalidScope),
    ("invalid_target", OAuthErrorCode::InvalidTarget),
    ("invalid_token", OAuthErrorCode::InvalidToken),
    ("insufficient_scope", OAuthErrorCode::InsufficientScope),
    (
        "authorization_pending",
        OAuthErrorCode::AuthorizationPending,
    ),
    ("slow_down", OAuthErrorCode::SlowDown),
    ("access_denied", OAuthErrorCode::AccessDenied),
    ("expired_token", OAuthErrorCode::ExpiredToken),
    (
        "temporarily_unavailable",
        OAuthErrorCode::TemporarilyUnavailable,
    ),
    ("server_error", OAuthErrorCode::ServerError),
];

impl OAuthErrorCode {
    /// The code an IdP sent, classified (see the type's documentation).
    pub fn from_wire(s: &str) -> Self {
        if let Some((_, code)) = KNOWN.iter().find(|(k, _)| *k == s) {
            code.clone()
        } else if !s.is_empty()
            && s.len() <= 40
            && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            OAuthErrorCode::Other(s.to_owned())
        } else {
            OAuthErrorCode::NonStandard
        }
    }

    /// The code as the RFCs spell it (`non_standard_error` for [`OAuthErrorCode::NonStandard`]).
    pub fn as_str(&self) -> &str {
        match self {
            OAuthErrorCode::Other(s) => s,
            OAuthErrorCode::NonStandard => "non_standard_error",
            known => KNOWN
                .iter()
                .find(|(_, c)| c == known)
                .map_or("non_standard_error", |(k, _)| k),
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Turns a non-success answer into an error: an OAuth error object if there is one, else a
/// description of what came back (status, content type), never the body.
pub(crate) fn oauth_error(url: &str, res: &HttpResponse) -> Error {
    let parsed: Option<ErrorWire<'_>> = serde_json::from_slice(&res.body).ok();
    let code = parsed.as_ref().and_then(|w| w.error.as_deref());
    match code {
        // Rate limiting is "busy, try later" (retryable, and a still-valid stored token may be
        // used meanwhile), never "refused: check your config", whatever the body says.
        _ if res.status == 429 => Error::IdpUnreachable {
            url: url.to_owned(),
            detail: "HTTP 429 (rate limited: try again later)".to_owned(),
        },
        Some(code) if (400..500).contains(&res.status) => Error::IdpRefused {
            url: url.to_owned(),
            code: OAuthErrorCode::from_wire(code),
        },
        _ if res.status == 429 || res.status >= 500 => Error::IdpUnreachable {
            url: url.to_owned(),
            detail: format!("HTTP {} (busy or failing, try again later)", res.status),
        },
        _ => bad(url, res, "unexpected answer"),
    }
}

#[cfg(test)]
mod tests {
    use crate::oauth::fixtures::res;
    use crate::oauth::parse_token_response;

    #[test]
    fn rate_limiting_is_busy_not_refused() {
        let e = parse_token_response(
            "u",
            &res(429, "application/json", r#"{"error":"too_many_requests"}"#),
        )
        .unwrap_err();
        assert_eq!(e.kind(), "idp_unreachable", "{e}");
    }

    use super::OAuthErrorCode;

    /// Every code reads back as it is spelled; unknown RFC-style codes are kept as sent, anything
    /// else is `non_standard_error`; the message of the error is the one it always was.
    #[test]
    fn error_codes_are_typed_and_shown_as_spelled() {
        for (code, _) in super::KNOWN.iter() {
            let c = OAuthErrorCode::from_wire(code);
            assert!(!matches!(
                c,
                OAuthErrorCode::Other(_) | OAuthErrorCode::NonStandard
            ));
            assert_eq!(c.as_str(), *code);
        }
        assert_eq!(
            OAuthErrorCode::from_wire("invalid_grant"),
            OAuthErrorCode::InvalidGrant
        );
        assert_eq!(
            OAuthErrorCode::from_wire("login_required"),
            OAuthErrorCode::Other("login_required".into())
        );
        for junk in [
            "",
            "Invalid_Grant",
            "eyJhbGciOi.x",
            "invalid grant",
            &"a".repeat(41),
        ] {
            assert_eq!(
                OAuthErrorCode::from_wire(junk),
                OAuthErrorCode::NonStandard,
                "{junk}"
            );
        }
        assert_eq!(
            OAuthErrorCode::NonStandard.to_string(),
            "non_standard_error"
        );
        let e = crate::Error::IdpRefused {
            url: "https://idp/t".into(),
            code: OAuthErrorCode::InvalidScope,
        };
        assert_eq!(
            e.to_string(),
            "the identity provider at https://idp/t refused the request: invalid_scope; check \
             audience and scope in the qsh config"
        );
        let e = crate::Error::IdpRefused {
            url: "u".into(),
            code: OAuthErrorCode::Other("login_required".into()),
        };
        assert_eq!(
            e.to_string(),
            "the identity provider at u refused the request: login_required"
        );
    }
}
