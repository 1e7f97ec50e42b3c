//! When a request may be sent again, and how long to wait first.

use crate::http::HttpResponse;
use std::time::Duration;

/// True for a request whose credential is spent when the IdP processes it: a refresh token (with
/// rotation and reuse detection), an authorization code, a device code after approval. Sending
/// such a request twice can revoke the whole login.
pub(super) fn spends_what_it_sends(form: &[(&str, &str)]) -> bool {
    form.iter().any(|(k, v)| {
        *k == "grant_type"
            && matches!(
                *v,
                "refresh_token"
                    | "authorization_code"
                    | "urn:ietf:params:oauth:grant-type:device_code"
            )
    })
}

/// Whether an answer may be followed by the same request again.
///
/// The rule: a request that spends its credential is repeated only when the answer proves it was
/// not processed: HTTP 429, or 503 with `Retry-After` (the server's "come back later", sent before
/// any processing). Any other 5xx (or a timeout after the request went out, which never reaches
/// this function) may mean the IdP processed it and rotated the token: repeating it would present
/// a spent refresh token, and reuse detection would revoke the login. Other requests (client
/// credentials, token exchange, revocation) are retried on 429 and any 5xx.
pub(super) fn may_retry(res: &HttpResponse, single_use: bool) -> bool {
    match res.status {
        429 => true,
        503 if single_use => res.retry_after.is_some(),
        500..=599 => !single_use,
        _ => false,
    }
}

pub(super) fn retry_wait(retry_after: Option<&str>, attempt: u32) -> Duration {
    let base = retry_after
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_millis(250 << attempt));
    let jitter = Duration::from_millis(u64::from(
        crate::fsutil::random_suffix().as_bytes()[1] % 100,
    ));
    base.min(Duration::from_secs(5)) + jitter
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::fixtures::res;

    #[test]
    fn a_spent_credential_is_never_sent_again_after_a_5xx() {
        let refresh = [("grant_type", "refresh_token"), ("refresh_token", "r")];
        let device = [("grant_type", "urn:ietf:params:oauth:grant-type:device_code")];
        let cc = [("grant_type", "client_credentials")];
        assert!(spends_what_it_sends(&refresh) && spends_what_it_sends(&device));
        assert!(!spends_what_it_sends(&cc));
        let mut r = res(500, "text/html", "x");
        assert!(
            !may_retry(&r, true),
            "a 500 may have rotated the refresh token"
        );
        assert!(may_retry(&r, false));
        r.status = 502;
        assert!(!may_retry(&r, true));
        r.status = 503;
        assert!(
            !may_retry(&r, true),
            "503 without Retry-After proves nothing"
        );
        r.retry_after = Some("1".into());
        assert!(may_retry(&r, true));
        r.status = 429;
        r.retry_after = None;
        assert!(may_retry(&r, true));
        r.status = 400;
        assert!(!may_retry(&r, false));
    }

    #[test]
    fn retry_after_is_bounded() {
        assert!(retry_wait(Some("3600"), 0) <= Duration::from_millis(5100));
        assert!(retry_wait(None, 0) < Duration::from_millis(400));
    }
}
