//! Error answers of an IdP, classified by their `error` field only: the body is never logged
//! or carried in errors (an IdP may echo what it was sent).

use super::response::bad;
use crate::Error;
use crate::http::HttpResponse;
use serde_json::Value;

/// The OAuth `error` code as we show it: only an RFC 6749-style code (`a-z`, `_`, at most 40
/// characters) is kept, anything else is replaced, so that an IdP that echoes what it was sent
/// cannot get it into our errors. `error_description` is never read, for the same reason.
fn clean_code(s: &str) -> String {
    if !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        s.to_owned()
    } else {
        "non_standard_error".to_owned()
    }
}

/// Turns a non-success answer into an error: an OAuth error object if there is one, else a
/// description of what came back (status, content type), never the body.
pub(crate) fn oauth_error(url: &str, res: &HttpResponse) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(&res.body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str);
    match code {
        // Rate limiting is "busy, try later" (retryable, and a still-valid stored token may be
        // used meanwhile), never "refused: check your config", whatever the body says.
        _ if res.status == 429 => Error::IdpUnreachable {
            url: url.to_owned(),
            detail: "HTTP 429 (rate limited: try again later)".to_owned(),
        },
        Some(code) if (400..500).contains(&res.status) => Error::IdpRefused {
            url: url.to_owned(),
            code: clean_code(code),
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
    use crate::oauth::parse_token_response;
    use crate::oauth::response::fixtures::res;

    #[test]
    fn rate_limiting_is_busy_not_refused() {
        let e = parse_token_response(
            "u",
            &res(429, "application/json", r#"{"error":"too_many_requests"}"#),
        )
        .unwrap_err();
        assert_eq!(e.kind(), "idp_unreachable", "{e}");
    }
}
