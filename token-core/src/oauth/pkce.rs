//! Authorization code + PKCE (RFC 7636, S256) with a loopback redirect (RFC 8252 §7.3).

use super::{OAuthClient, TokenResponse, percent_decode, percent_encode};
use crate::secret::Secret;
use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A pending browser login.
#[derive(Debug)]
pub struct AuthorizationRequest {
    /// Open this in a browser.
    pub url: String,
    /// Where the IdP sends the browser back.
    pub redirect_uri: String,
    state: String,
    verifier: Secret,
    listener: TcpListener,
}

fn random_b64(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| Error::Aborted {
        reason: format!("no randomness from the kernel: {e}"),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(&b))
}

/// The S256 code challenge of a verifier.
pub fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl OAuthClient {
    /// Prepares a browser login: binds a loopback port and builds the authorization URL.
    pub fn start_authorization(&self) -> Result<AuthorizationRequest> {
        let d = self.discovery()?;
        let endpoint = d
            .authorization_endpoint
            .clone()
            .ok_or_else(|| Error::IdpBadResponse {
                url: self.provider.issuer.clone(),
                detail: "the IdP offers no authorization endpoint; use `qlam-auth login --device`"
                    .into(),
            })?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Error::Aborted {
            reason: format!("cannot listen on a loopback port: {e}"),
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::Aborted {
                reason: e.to_string(),
            })?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let state = random_b64(16)?;
        let verifier = Secret::new(random_b64(32)?);
        let mut params = vec![
            ("response_type", "code".to_owned()),
            ("client_id", self.provider.client_id.clone()),
            ("redirect_uri", redirect_uri.clone()),
            ("state", state.clone()),
            ("code_challenge", code_challenge(verifier.expose())),
            ("code_challenge_method", "S256".to_owned()),
        ];
        if let Some(s) = &self.provider.scope {
            params.push(("scope", s.clone()));
        }
        if let Some(a) = &self.provider.audience {
            params.push((self.audience_param.name(), a.clone()));
        }
        if let Some(t) = &self.provider.tenant {
            params.push(("organization", t.clone()));
        }
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        Ok(AuthorizationRequest {
            url: format!("{endpoint}{sep}{}", query.join("&")),
            redirect_uri,
            state,
            verifier,
            listener,
        })
    }

    /// Waits (at most `timeout`, or until `cancelled()`) for the browser to come back, then
    /// exchanges the code.
    pub fn finish_authorization(
        &self,
        req: AuthorizationRequest,
        timeout: Duration,
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<TokenResponse> {
        req.listener
            .set_nonblocking(true)
            .map_err(|e| Error::Aborted {
                reason: e.to_string(),
            })?;
        let deadline = Instant::now() + timeout;
        let code = loop {
            if cancelled() {
                return Err(Error::Aborted {
                    reason: "interrupted".into(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Aborted {
                    reason: "no answer from the browser in time".into(),
                });
            }
            match req.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(code) = handle_callback(stream, &req.state)? {
                        break code;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    return Err(Error::Aborted {
                        reason: format!("loopback listener failed: {e}"),
                    });
                }
            }
        };
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.expose().to_owned()),
            ("redirect_uri", req.redirect_uri.clone()),
            ("code_verifier", req.verifier.expose().to_owned()),
        ];
        self.token_request(form)
    }
}

/// Reads one HTTP request; returns the code if it is the right callback.
fn handle_callback(mut stream: TcpStream, state: &str) -> Result<Option<Secret>> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(
        stream
            .try_clone()
            .map_err(|e| Error::Aborted {
                reason: e.to_string(),
            })?
            .take(8192),
    );
    if reader.read_line(&mut line).is_err() {
        return Ok(None);
    }
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let Some(query) = target.strip_prefix("/callback?") else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return Ok(None);
    };
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).unwrap_or_default();
        match k {
            "code" => code = Some(Secret::new(v)),
            "state" => got_state = Some(v),
            "error" => error = Some(v),
            _ => {}
        }
    }
    let (ok, page) = match (&error, got_state.as_deref() == Some(state), &code) {
        (Some(_), _, _) => (
            false,
            "Login failed at the identity provider. You can close this tab.",
        ),
        (None, true, Some(_)) => (
            true,
            "Logged in. You can close this tab and return to the terminal.",
        ),
        _ => (
            false,
            "This login link does not match; start `qlam-auth login` again.",
        ),
    };
    let body = format!("<!doctype html><title>qlam-auth</title><p>{page}</p>");
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Some(e) = error {
        let e: String = e
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(80)
            .collect();
        return Err(Error::Aborted {
            reason: format!("the identity provider answered {e}"),
        });
    }
    Ok(if ok { code } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
