//! Authorization code + PKCE (RFC 7636, S256) with a loopback redirect (RFC 8252 §7.3).

use super::{OAuthClient, percent_decode, percent_encode};
use crate::secret::Secret;
use crate::store::TokenSet;
use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::io::{Read, Write};
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
    URL_SAFE_NO_PAD.encode(crate::digest::sha256(verifier.as_bytes()))
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
    ///
    /// Any local user can connect to the loopback port: only a request with this login's
    /// `state` is acted on (a wrong or missing `state` is answered and ignored, even with
    /// `error=`), and connections are served side by side without threads, each with a short
    /// deadline, so one that stalls cannot hold up the browser's.
    pub fn finish_authorization(
        &self,
        req: AuthorizationRequest,
        timeout: Duration,
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<TokenSet> {
        req.listener
            .set_nonblocking(true)
            .map_err(|e| Error::Aborted {
                reason: e.to_string(),
            })?;
        let deadline = Instant::now() + timeout;
        let mut conns: Vec<Pending> = Vec::new();
        let code = 'wait: loop {
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
            let mut busy = false;
            loop {
                match req.listener.accept() {
                    Ok((stream, _)) => {
                        busy = true;
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        if conns.len() >= MAX_CONNECTIONS {
                            conns.remove(0);
                        }
                        conns.push(Pending {
                            stream,
                            buf: Vec::new(),
                            until: Instant::now() + CONNECTION_TIMEOUT,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::Aborted {
                            reason: format!("loopback listener failed: {e}"),
                        });
                    }
                }
            }
            let mut i = 0;
            while i < conns.len() {
                match conns[i].poll() {
                    Poll::Waiting if Instant::now() < conns[i].until => i += 1,
                    Poll::Waiting | Poll::Gone => {
                        conns.swap_remove(i);
                    }
                    Poll::Line(line) => {
                        busy = true;
                        let c = conns.swap_remove(i);
                        if let Some(code) = handle_callback(c.stream, &line, &req.state)? {
                            break 'wait code;
                        }
                    }
                }
            }
            if !busy {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        drop(conns);
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.expose().to_owned()),
            ("redirect_uri", req.redirect_uri.clone()),
            ("code_verifier", req.verifier.expose().to_owned()),
        ];
        self.token_request(form)
    }
}

/// Connections served at once; a new one beyond this pushes out the oldest.
const MAX_CONNECTIONS: usize = 16;
/// How long a connection may take to send its request line.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request line read.
const MAX_REQUEST_LINE: usize = 8192;

/// A loopback connection whose request line has not fully arrived.
struct Pending {
    stream: TcpStream,
    buf: Vec<u8>,
    until: Instant,
}

enum Poll {
    Waiting,
    Gone,
    Line(String),
}

impl Pending {
    /// Reads what has arrived, without blocking.
    fn poll(&mut self) -> Poll {
        let mut chunk = [0u8; 2048];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Poll::Gone,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                        return match std::str::from_utf8(&self.buf[..end]) {
                            Ok(l) => Poll::Line(l.trim_end().to_owned()),
                            Err(_) => Poll::Gone,
                        };
                    }
                    if self.buf.len() > MAX_REQUEST_LINE {
                        return Poll::Gone;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Poll::Waiting,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Poll::Gone,
            }
        }
    }
}

/// Answers one request (its request line: `GET /callback?... HTTP/1.1`); returns the code if it
/// is this login's callback. An `error=` ends the login only with the right `state`.
fn handle_callback(mut stream: TcpStream, line: &str, state: &str) -> Result<Option<Secret>> {
    // The answer is small; a client that does not read cannot hold us for long.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
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
    let ours = got_state.as_deref() == Some(state);
    let (page, outcome) = match (ours, &error, code) {
        (true, Some(_), _) => (
            "Login failed at the identity provider. You can close this tab.",
            Outcome::Failed,
        ),
        (true, None, Some(code)) => (
            "Logged in. You can close this tab and return to the terminal.",
            Outcome::Code(code),
        ),
        _ => (
            "This login link does not match; start `qlam-auth login` again.",
            Outcome::Ignored,
        ),
    };
    let body = format!("<!doctype html><title>qlam-auth</title><p>{page}</p>");
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    match outcome {
        Outcome::Code(code) => Ok(Some(code)),
        Outcome::Ignored => {
            log::info!(target: "qlam_auth", "ignored a request to the loopback listener without this login's state");
            Ok(None)
        }
        Outcome::Failed => {
            // Only an RFC-style code, never free text (it could carry what was sent).
            let e = error.unwrap_or_default();
            let e = if !e.is_empty()
                && e.len() <= 40
                && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                e
            } else {
                "non_standard_error".to_owned()
            };
            Err(Error::Aborted {
                reason: format!("the identity provider answered {e}"),
            })
        }
    }
}

enum Outcome {
    Code(Secret),
    Ignored,
    Failed,
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
