//! The two calls of the flow. Every answer is checked; no body is ever quoted in an error or a
//! log (services echo what they were sent, and the answers carry tokens and certificates).

use super::{SshError, SshResult};
use crate::Error;
use crate::http::{HttpClient, HttpResponse};
use crate::secret::Secret;
use serde::Deserialize;

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignAnswer {
    ssh_key: SignedKey,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedKey {
    public_key: String,
}

fn transport(e: Error) -> SshError {
    match e {
        Error::IdpUnreachable { url, detail } => SshError::Unavailable { url, detail },
        Error::IdpBadResponse { url, detail } => SshError::BadAnswer { url, detail },
        e => SshError::Core(e),
    }
}

/// Classifies a non-2xx status, or a 2xx that is not JSON.
fn check_status(url: &str, res: &HttpResponse) -> SshResult<()> {
    match res.status {
        200..=299 => {}
        429 => {
            return Err(SshError::Unavailable {
                url: url.to_owned(),
                detail: "HTTP 429: too many requests".to_owned(),
            });
        }
        s @ 500..=599 => {
            return Err(SshError::Unavailable {
                url: url.to_owned(),
                detail: format!("HTTP {s}"),
            });
        }
        s => {
            return Err(SshError::BadAnswer {
                url: url.to_owned(),
                detail: format!("HTTP {s}"),
            });
        }
    }
    if !res.is_json() {
        let what = match res.content_type.as_deref() {
            Some(ct) if ct.to_ascii_lowercase().contains("html") => {
                "an HTML page, not JSON (a login page or a proxy's error page?)".to_owned()
            }
            Some(ct) => format!(
                "content type '{}', not JSON",
                ct.chars()
                    .take(60)
                    .filter(|c| !c.is_control())
                    .collect::<String>()
            ),
            None => "no content type, not JSON".to_owned(),
        };
        return Err(SshError::BadAnswer {
            url: url.to_owned(),
            detail: what,
        });
    }
    Ok(())
}

/// `POST token_url` with `X-API-Key`: the JWT and its expiry (the `exp` claim, else
/// `expires_in`), if known.
pub fn request_jwt(
    http: &dyn HttpClient,
    url: &str,
    api_key: &Secret,
    service: &str,
) -> SshResult<(Secret, Option<i64>)> {
    log::info!(
        "ssh: asking {url} for a token (API key {})",
        api_key.fingerprint()
    );
    let res = http
        .post_bytes(url, &[("X-API-Key", api_key.expose())], None, b"")
        .map_err(transport)?;
    if matches!(res.status, 401 | 403) {
        return Err(SshError::ApiKeyRefused {
            url: url.to_owned(),
            status: res.status,
            service: service.to_owned(),
        });
    }
    check_status(url, &res)?;
    let answer: TokenAnswer =
        serde_json::from_slice(&res.body).map_err(|e| SshError::BadAnswer {
            url: url.to_owned(),
            // serde's message names the field and position, never the value.
            detail: format!(
                "not the expected {{\"access_token\": ...}} object ({})",
                e.classify_name()
            ),
        })?;
    let jwt = Secret::new(answer.access_token);
    if jwt.is_empty() || !jwt.expose().chars().all(|c| c.is_ascii_graphic()) {
        return Err(SshError::BadAnswer {
            url: url.to_owned(),
            detail: "the access_token is empty or not printable ASCII".to_owned(),
        });
    }
    let now = crate::time::Timestamp::now().unix_seconds();
    let exp = crate::jwt::expiry(jwt.expose()).or_else(|| answer.expires_in.map(|s| now + s));
    log::debug!(
        "ssh: got token {} (expires in {} s)",
        jwt.fingerprint(),
        exp.map_or("?".to_owned(), |e| (e - now).to_string())
    );
    Ok((jwt, exp))
}

/// `POST sign_url` with the JWT and the public key: the certificate line, unchecked (the
/// caller checks it with [`super::cert::vet_new`]).
pub fn request_certificate(
    http: &dyn HttpClient,
    url: &str,
    jwt: &Secret,
    public_key_line: &str,
) -> SshResult<String> {
    log::info!("ssh: asking {url} to sign the public key");
    let body = serde_json::json!({ "public_key": public_key_line }).to_string();
    let auth = Secret::new(format!("Bearer {}", jwt.expose()));
    let res = http
        .post_bytes(
            url,
            &[("Authorization", auth.expose())],
            Some("application/json"),
            body.as_bytes(),
        )
        .map_err(transport)?;
    drop(auth);
    if matches!(res.status, 401 | 403) {
        return Err(SshError::TokenRefused {
            url: url.to_owned(),
            status: res.status,
        });
    }
    check_status(url, &res)?;
    let answer: SignAnswer =
        serde_json::from_slice(&res.body).map_err(|e| SshError::BadAnswer {
            url: url.to_owned(),
            detail: format!(
                "not the expected {{\"sshKey\": {{\"publicKey\": ...}}}} object ({})",
                e.classify_name()
            ),
        })?;
    Ok(answer.ssh_key.public_key)
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "a field is missing or of the wrong type",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    /// Answers every POST with one canned response (a fake for what a real server cannot be
    /// made to send on demand in a unit test; tests/ssh/run.sh does the same against a real one).
    #[derive(Debug)]
    struct Canned(u16, Option<&'static str>, &'static [u8]);

    impl HttpClient for Canned {
        fn get(&self, url: &str, _: &[(&str, &str)]) -> Result<HttpResponse> {
            self.post_bytes(url, &[], None, b"")
        }
        fn post_form(
            &self,
            url: &str,
            _: &[(&str, &str)],
            _: &[(&str, &str)],
        ) -> Result<HttpResponse> {
            self.post_bytes(url, &[], None, b"")
        }
        fn post_bytes(
            &self,
            _: &str,
            _: &[(&str, &str)],
            _: Option<&str>,
            _: &[u8],
        ) -> Result<HttpResponse> {
            Ok(HttpResponse {
                status: self.0,
                content_type: self.1.map(str::to_owned),
                date: None,
                retry_after: None,
                body: self.2.to_vec(),
            })
        }
    }

    const ECHO: &[u8] = br#"{"error": "bad key qsa_ECHOED_SECRET", "access_token": 7}"#;

    fn jwt_error(c: Canned) -> SshError {
        request_jwt(
            &c,
            "https://t.example/token",
            &Secret::new("qsa_ECHOED_SECRET"),
            "svc",
        )
        .unwrap_err()
    }

    #[test]
    fn answers_are_classified_and_never_quoted() {
        let cases: Vec<(SshError, &str)> = vec![
            (
                jwt_error(Canned(401, Some("application/json"), ECHO)),
                "ssh_api_key_refused",
            ),
            (jwt_error(Canned(403, None, ECHO)), "ssh_api_key_refused"),
            (
                jwt_error(Canned(500, Some("application/json"), ECHO)),
                "ssh_service_unavailable",
            ),
            (
                jwt_error(Canned(429, Some("application/json"), ECHO)),
                "ssh_service_unavailable",
            ),
            (
                jwt_error(Canned(200, Some("text/html"), ECHO)),
                "ssh_service_bad_answer",
            ),
            (
                jwt_error(Canned(200, Some("application/json"), ECHO)),
                "ssh_service_bad_answer",
            ),
            (
                jwt_error(Canned(404, Some("application/json"), ECHO)),
                "ssh_service_bad_answer",
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            assert!(!e.to_string().contains("ECHOED"), "{e}");
        }
        let e = request_certificate(
            &Canned(401, None, ECHO),
            "https://s.example/sign",
            &Secret::new("jwt"),
            "ssh-ed25519 AAAA",
        )
        .unwrap_err();
        assert_eq!(e.kind(), "ssh_token_refused");
    }

    #[test]
    fn a_good_answer_gives_the_token_and_its_expiry() {
        let c = Canned(
            200,
            Some("application/json"),
            br#"{"access_token": "abc", "expires_in": 60}"#,
        );
        let (jwt, exp) = request_jwt(&c, "https://t", &Secret::new("k"), "svc").expect("ok");
        assert_eq!(jwt.expose(), "abc");
        assert!(exp.is_some());
        let c = Canned(
            200,
            Some("application/json"),
            br#"{"sshKey": {"publicKey": "cert"}}"#,
        );
        let cert = request_certificate(&c, "https://s", &Secret::new("j"), "k").expect("ok");
        assert_eq!(cert, "cert");
    }
}
