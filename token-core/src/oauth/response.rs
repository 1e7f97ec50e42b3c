//! The token endpoint's answer (RFC 6749 §5.1), parsed.

use super::error::oauth_error;
use crate::http::HttpResponse;
use crate::secret::Secret;
use crate::store::TokenSet;
use crate::time::Timestamp;
use crate::{Error, Result};
use serde_json::Value;

/// A successful token response.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: Secret,
    /// Token type (`Bearer`).
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: Option<i64>,
    /// A (new) refresh token.
    pub refresh_token: Option<Secret>,
    /// An ID token.
    pub id_token: Option<Secret>,
    /// Granted scope.
    pub scope: Option<String>,
}

impl TokenResponse {
    /// Builds what the store keeps. With rotation the new refresh token replaces the old one; a
    /// response without one keeps the previous refresh token (and ID token and scope).
    pub fn into_token_set(self, previous: Option<&TokenSet>, now: Timestamp) -> TokenSet {
        TokenSet {
            access_token: self.access_token,
            token_type: self.token_type,
            expires_in: self.expires_in,
            refresh_token: self
                .refresh_token
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            id_token: self
                .id_token
                .or_else(|| previous.and_then(|p| p.id_token.clone())),
            scope: self
                .scope
                .or_else(|| previous.and_then(|p| p.scope.clone())),
            created_at: now,
        }
    }
}

pub(super) fn json_object(url: &str, res: &HttpResponse) -> Result<Value> {
    let v: Value =
        serde_json::from_slice(&res.body).map_err(|_| bad(url, res, "the answer is not JSON"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(bad(url, res, "the answer is not a JSON object"))
    }
}

pub(super) fn bad(url: &str, res: &HttpResponse, what: &str) -> Error {
    Error::IdpBadResponse {
        url: url.to_owned(),
        detail: format!(
            "{what}: HTTP {}, content type {}",
            res.status,
            res.content_type.as_deref().unwrap_or("none")
        ),
    }
}

/// The longest `expires_in` we take from an IdP: ten years.
pub const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

/// Parses a token endpoint answer (RFC 6749 §5.1/§5.2).
pub fn parse_token_response(url: &str, res: &HttpResponse) -> Result<TokenResponse> {
    if res.status != 200 {
        return Err(oauth_error(url, res));
    }
    let v = json_object(url, res)?;
    let str_of = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let access_token =
        str_of("access_token").ok_or_else(|| bad(url, res, "no access_token in the answer"))?;
    let expires_in = match v.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    }
    .filter(|e| *e >= 0)
    // Ten years at most: an expiry past year 9999 could not be written as a timestamp that we
    // (or QLAM Core) can read back.
    .map(|e| e.min(MAX_EXPIRES_IN));
    let scope = match v.get("scope") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    };
    Ok(TokenResponse {
        access_token: Secret::new(access_token),
        token_type: str_of("token_type").unwrap_or("Bearer").to_owned(),
        expires_in,
        refresh_token: str_of("refresh_token").map(Secret::new),
        id_token: str_of("id_token").map(Secret::new),
        scope,
    })
}

/// Test fixtures shared by the oauth modules' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::http::HttpResponse;

    /// A response with this status, content type and body.
    pub(crate) fn res(status: u16, ct: &str, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            content_type: Some(ct.into()),
            date: None,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    pub(crate) use crate::oauth::response::fixtures::res;

    #[test]
    fn token_response_parsing() {
        let t = parse_token_response(
            "u",
            &res(
                200,
                "application/json",
                r#"{"access_token":"a","expires_in":"60","token_type":"bearer"}"#,
            ),
        )
        .unwrap();
        assert_eq!(t.expires_in, Some(60));
        assert!(t.refresh_token.is_none());
        let e = parse_token_response(
            "u",
            &res(
                400,
                "application/json",
                r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#,
            ),
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::IdpRefused { code, .. } if code == "invalid_grant"),
            "{e:?}"
        );
        let e = parse_token_response(
            "u",
            &res(502, "text/html", "<html>secret-looking body</html>"),
        )
        .unwrap_err();
        assert!(matches!(e, Error::IdpUnreachable { .. }));
        assert!(!e.to_string().contains("secret-looking"));
        let e = parse_token_response("u", &res(200, "text/html", "<html>")).unwrap_err();
        assert!(
            matches!(e, Error::IdpBadResponse { .. }) && e.to_string().contains("not JSON"),
            "{e}"
        );
        let e = parse_token_response("u", &res(200, "application/json", r#"{"token":"x"}"#))
            .unwrap_err();
        assert!(e.to_string().contains("no access_token"));
    }

    /// Security review item 5: an IdP that echoes what it was sent in `error_description` (or
    /// in a non-standard `error`) must not get it into our errors, slurmd's log or job output.
    #[test]
    fn idp_text_that_could_echo_a_secret_never_reaches_the_error() {
        for body in [
            r#"{"error":"invalid_grant","error_description":"refresh_token rt-ECHOED-4242 is spent"}"#,
            r#"{"error":"invalid_grant rt-ECHOED-4242"}"#,
            r#"{"error":"eyJhbGciOi.ECHOED.x"}"#,
        ] {
            let e = parse_token_response("u", &res(400, "application/json", body)).unwrap_err();
            assert_eq!(e.kind(), "idp_refused", "{e}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("ECHOED"), "{body}: {shown}");
        }
        let e = parse_token_response(
            "u",
            &res(
                400,
                "application/json",
                r#"{"error":"invalid_client","error_description":"x"}"#,
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid_client"), "{e}");
    }

    #[test]
    fn rotation_keeps_old_refresh_token_when_none_is_returned() {
        let prev = TokenResponse {
            access_token: Secret::new("a1"),
            token_type: "Bearer".into(),
            expires_in: Some(60),
            refresh_token: Some(Secret::new("r1")),
            id_token: Some(Secret::new("i1")),
            scope: None,
        }
        .into_token_set(None, Timestamp::now());
        let next = TokenResponse {
            access_token: Secret::new("a2"),
            token_type: "Bearer".into(),
            expires_in: Some(60),
            refresh_token: None,
            id_token: None,
            scope: None,
        }
        .into_token_set(Some(&prev), Timestamp::now());
        assert_eq!(next.refresh_token, Some(Secret::new("r1")));
        let rotated = TokenResponse {
            access_token: Secret::new("a3"),
            token_type: "Bearer".into(),
            expires_in: None,
            refresh_token: Some(Secret::new("r2")),
            id_token: None,
            scope: None,
        }
        .into_token_set(Some(&next), Timestamp::now());
        assert_eq!(rotated.refresh_token, Some(Secret::new("r2")));
    }
}
