//! What IdPs answer, as typed models (serde derives): the token response (RFC 6749 §5.1), the
//! device authorization response (RFC 8628 §3.2), the discovery document (OpenID Connect
//! Discovery §3) and the error response (RFC 6749 §5.2).
//!
//! The wire models are private to `oauth`; the grants return the store's [`TokenSet`] (one
//! token-set type: what the IdP answered, stamped with when the answer arrived). The
//! quirks of real IdPs are each handled in one `deserialize_with` of `super::json`: `expires_in`
//! as a number or a string, `scope` as a space-separated string or a JSON list. Secrets go
//! straight into [`Secret`]. A misfit names the field and what it must be, never the value.

use super::error::oauth_error;
use super::json::{Misfit, decode, nonempty, scope, seconds, secret};
use crate::Result;
use crate::http::HttpResponse;
use crate::secret::Secret;
use crate::store::TokenSet;
use crate::time::Timestamp;
use serde::Deserialize;
use std::borrow::Cow;

/// The token response on the wire (RFC 6749 §5.1). Unknown fields are ignored.
#[derive(Deserialize)]
struct TokenWire {
    #[serde(default, deserialize_with = "secret")]
    access_token: Option<Secret>,
    #[serde(default, deserialize_with = "nonempty")]
    token_type: Option<String>,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<i64>,
    #[serde(default, deserialize_with = "secret")]
    refresh_token: Option<Secret>,
    #[serde(default, deserialize_with = "secret")]
    id_token: Option<Secret>,
    #[serde(default, deserialize_with = "scope")]
    scope: Option<String>,
}

/// An error response on the wire (RFC 6749 §5.2): only `error` is read; `error_description`
/// and `error_uri` never are (an IdP may echo what it was sent).
#[derive(Deserialize)]
pub(super) struct ErrorWire<'a> {
    #[serde(default, borrow)]
    pub(super) error: Option<Cow<'a, str>>,
}

/// The discovery document on the wire (OpenID Connect Discovery 1.0 §3): the fields we use.
#[derive(Deserialize)]
pub(super) struct DiscoveryWire {
    pub(super) issuer: Option<String>,
    pub(super) token_endpoint: Option<String>,
    pub(super) authorization_endpoint: Option<String>,
    pub(super) device_authorization_endpoint: Option<String>,
    pub(super) revocation_endpoint: Option<String>,
    pub(super) userinfo_endpoint: Option<String>,
    pub(super) introspection_endpoint: Option<String>,
    #[serde(default)]
    pub(super) token_endpoint_auth_methods_supported: Vec<String>,
}

/// The device authorization response on the wire (RFC 8628 §3.2).
#[derive(Deserialize)]
pub(super) struct DeviceWire {
    #[serde(default, deserialize_with = "secret")]
    pub(super) device_code: Option<Secret>,
    #[serde(default, deserialize_with = "nonempty")]
    pub(super) user_code: Option<String>,
    #[serde(default, deserialize_with = "nonempty")]
    pub(super) verification_uri: Option<String>,
    /// The draft's spelling, which some IdPs (Google) still send.
    #[serde(default, deserialize_with = "nonempty")]
    pub(super) verification_url: Option<String>,
    #[serde(default, deserialize_with = "nonempty")]
    pub(super) verification_uri_complete: Option<String>,
    #[serde(default, deserialize_with = "seconds")]
    pub(super) expires_in: Option<i64>,
    #[serde(default, deserialize_with = "seconds")]
    pub(super) interval: Option<i64>,
}

/// The longest `expires_in` we take from an IdP: ten years.
pub const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

/// Parses a token endpoint answer (RFC 6749 §5.1/§5.2).
/// `created_at` is now: the moment the answer arrived.
pub fn parse_token_response(url: &str, res: &HttpResponse) -> Result<TokenSet> {
    if res.status != 200 {
        return Err(oauth_error(url, res));
    }
    let what = "the answer";
    let wire: TokenWire = decode(&res.body).map_err(|m| m.into_error(url, res, what))?;
    let access_token = wire
        .access_token
        .ok_or_else(|| Misfit::Missing("access_token").into_error(url, res, what))?;
    Ok(TokenSet {
        access_token,
        token_type: wire.token_type.unwrap_or_else(|| "Bearer".to_owned()),
        // Ten years at most: an expiry past year 9999 could not be written as a timestamp that
        // we (or QLAM Core) can read back.
        expires_in: wire.expires_in.map(|e| e.min(MAX_EXPIRES_IN)),
        refresh_token: wire.refresh_token,
        id_token: wire.id_token,
        scope: wire.scope,
        created_at: Timestamp::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    pub(crate) use crate::oauth::fixtures::res;

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
            matches!(&e, Error::IdpRefused { code, .. } if *code == crate::oauth::OAuthErrorCode::InvalidGrant),
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
        let prev = TokenSet {
            access_token: Secret::new("a1"),
            token_type: "Bearer".into(),
            expires_in: Some(60),
            refresh_token: Some(Secret::new("r1")),
            id_token: Some(Secret::new("i1")),
            scope: None,
            created_at: Timestamp::now(),
        }
        .rotated_from(None);
        let next = TokenSet {
            access_token: Secret::new("a2"),
            token_type: "Bearer".into(),
            expires_in: Some(60),
            refresh_token: None,
            id_token: None,
            scope: None,
            created_at: Timestamp::now(),
        }
        .rotated_from(Some(&prev));
        assert_eq!(next.refresh_token, Some(Secret::new("r1")));
        let rotated = TokenSet {
            access_token: Secret::new("a3"),
            token_type: "Bearer".into(),
            expires_in: None,
            refresh_token: Some(Secret::new("r2")),
            id_token: None,
            scope: None,
            created_at: Timestamp::now(),
        }
        .rotated_from(Some(&next));
        assert_eq!(rotated.refresh_token, Some(Secret::new("r2")));
    }

    fn ok(body: &str) -> Result<TokenSet> {
        parse_token_response("u", &res(200, "application/json", body))
    }

    /// The quirk: `expires_in` as a number or as a string of digits (as some IdPs send it).
    #[test]
    fn expires_in_is_read_as_a_number_or_a_string() {
        for (v, want) in [
            ("60", Some(60)),
            ("\"60\"", Some(60)),
            ("\" 60 \"", Some(60)),
            ("60.9", Some(60)),
            ("null", None),
            ("-5", None),
            ("\"-5\"", None),
            ("\"soon\"", None),
            ("18446744073709551615", Some(MAX_EXPIRES_IN)),
            ("1e300", Some(MAX_EXPIRES_IN)),
        ] {
            let t = ok(&format!(r#"{{"access_token":"a","expires_in":{v}}}"#)).unwrap();
            assert_eq!(t.expires_in, want, "expires_in {v}");
        }
        assert_eq!(ok(r#"{"access_token":"a"}"#).unwrap().expires_in, None);
    }

    /// The quirk: `scope` as RFC 6749's space-separated string or as a JSON list.
    #[test]
    fn scope_is_read_as_a_string_or_a_list() {
        for (v, want) in [
            (r#""openid offline_access""#, Some("openid offline_access")),
            (
                r#"["openid","offline_access"]"#,
                Some("openid offline_access"),
            ),
            ("[]", Some("")),
            ("null", None),
        ] {
            let t = ok(&format!(r#"{{"access_token":"a","scope":{v}}}"#)).unwrap();
            assert_eq!(t.scope.as_deref(), want, "scope {v}");
        }
    }

    /// A field of the wrong type is refused: the message names the field and what it must be,
    /// never the value (an IdP may echo a secret it was sent).
    #[test]
    fn a_misfit_token_response_names_the_field_never_the_value() {
        for (body, field, expected) in [
            (r#"{"access_token":["ECHOED"]}"#, "access_token", "a string"),
            (
                r#"{"access_token":{"ECHOED":1}}"#,
                "access_token",
                "a string",
            ),
            (
                r#"{"access_token":"a","refresh_token":["ECHOED"]}"#,
                "refresh_token",
                "a string",
            ),
            (
                r#"{"access_token":"a","id_token":77777}"#,
                "id_token",
                "a string",
            ),
            (
                r#"{"access_token":"a","token_type":["ECHOED"]}"#,
                "token_type",
                "a string",
            ),
            (
                r#"{"access_token":"a","expires_in":{"ECHOED":1}}"#,
                "expires_in",
                "a number of seconds",
            ),
            (
                r#"{"access_token":"a","expires_in":true}"#,
                "expires_in",
                "a number of seconds",
            ),
            (
                r#"{"access_token":"a","scope":{"ECHOED":1}}"#,
                "scope",
                "a string or a list of strings",
            ),
            (
                r#"{"access_token":"a","scope":["openid",77777]}"#,
                "scope[1]",
                "a string",
            ),
        ] {
            let e = ok(body).unwrap_err();
            assert_eq!(e.kind(), "idp_bad_response", "{body}: {e}");
            let shown = format!("{e} {e:?}");
            assert!(
                shown.contains(&format!("{field} in the answer must be {expected}")),
                "{body}: {shown}"
            );
            for value in ["ECHOED", "77777", "true"] {
                assert!(!shown.contains(value), "{body}: {shown}");
            }
        }
        let e = ok(r#"{"access_token":"ECHOED","access_token":"ECHOED"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("access_token in the answer must be given once"),
            "{e}"
        );
        assert!(!e.to_string().contains("ECHOED"), "{e}");
        for body in [
            r#"{"token_type":"bearer"}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":null}"#,
        ] {
            let e = ok(body).unwrap_err();
            assert!(
                e.to_string().contains("no access_token in the answer"),
                "{body}: {e}"
            );
        }
        for (body, what) in [
            ("[1,2]", "the answer is not a JSON object"),
            (r#""ECHOED""#, "the answer is not a JSON object"),
            (r#"{"access_token":"a"} ECHOED"#, "the answer is not JSON"),
            (r#"{"access_token":"ECHOED"#, "the answer is not JSON"),
        ] {
            let e = ok(body).unwrap_err();
            assert!(e.to_string().contains(what), "{body}: {e}");
            assert!(!format!("{e} {e:?}").contains("ECHOED"), "{body}: {e}");
        }
    }

    /// Empty strings are absent, as they always were: the previous refresh token is kept.
    #[test]
    fn empty_optional_fields_are_absent() {
        let t =
            ok(r#"{"access_token":"a","refresh_token":"","id_token":"","token_type":""}"#).unwrap();
        assert!(t.refresh_token.is_none() && t.id_token.is_none());
        assert_eq!(t.token_type, "Bearer");
    }
}
