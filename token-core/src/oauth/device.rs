//! RFC 8628: the device authorization grant.

use super::error::{OAuthErrorCode, oauth_error};
use super::json::{Misfit, decode};
use super::response::DeviceWire;
use super::{OAuthClient, parse_token_response};
use crate::secret::Secret;
use crate::store::TokenSet;
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// What the user is shown: where to go and which code to enter.
#[derive(Debug, Clone)]
pub struct DeviceAuthorization {
    /// The device code (secret: whoever holds it gets the tokens).
    pub device_code: Secret,
    /// The short code the user types.
    pub user_code: String,
    /// Where to type it.
    pub verification_uri: String,
    /// A URL with the code filled in (for a QR code), if the IdP gives one.
    pub verification_uri_complete: Option<String>,
    /// How long the codes are valid.
    pub expires_in: Duration,
    /// The minimum polling interval.
    pub interval: Duration,
}

/// Watches the polling loop: shows progress, and can cancel it.
pub trait DeviceObserver {
    /// Called often (about every 100 ms) while waiting; `remaining` is the code's remaining life.
    fn waiting(&mut self, _elapsed: Duration, _remaining: Duration) {}
    /// The IdP asked us to slow down; the interval is now `interval`.
    fn slowed_down(&mut self, _interval: Duration) {}
    /// Return true to stop waiting (e.g. after Ctrl-C).
    fn cancelled(&mut self) -> bool {
        false
    }
}

/// An observer that only waits.
#[derive(Debug, Default)]
pub struct Quiet;
impl DeviceObserver for Quiet {}

impl OAuthClient {
    /// Starts a device authorization (RFC 8628 §3.1).
    pub fn start_device(&self) -> Result<DeviceAuthorization> {
        let d = self.discovery()?;
        let url = d.device_authorization_endpoint.clone().ok_or_else(|| Error::IdpBadResponse {
            url: self.provider.issuer.clone(),
            detail: "the IdP offers no device authorization endpoint; use `qlam-auth login --browser`".into(),
        })?;
        let mut scope = self.provider.scope.clone().unwrap_or_default();
        if let Some(t) = &self.provider.tenant {
            scope = format!("{scope} organization:{t}").trim().to_owned();
        }
        let mut form = Vec::new();
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        self.audience_form(&mut form);
        let res = self.post_authenticated(&url, &d, form)?;
        if res.status != 200 {
            return Err(oauth_error(&url, &res));
        }
        let what = "the device authorization answer";
        let bad = |m: Misfit| Error::IdpBadResponse {
            url: url.clone(),
            detail: m.describe(what),
        };
        let wire: DeviceWire = decode(&res.body).map_err(bad)?;
        let seconds = |s: Option<i64>, default: i64, max: i64| {
            Duration::from_secs(s.unwrap_or(default).clamp(1, max).unsigned_abs())
        };
        Ok(DeviceAuthorization {
            device_code: wire
                .device_code
                .ok_or_else(|| bad(Misfit::Missing("device_code")))?,
            user_code: wire
                .user_code
                .ok_or_else(|| bad(Misfit::Missing("user_code")))?,
            verification_uri: wire
                .verification_uri
                .or(wire.verification_url)
                .ok_or_else(|| bad(Misfit::Missing("verification_uri")))?,
            verification_uri_complete: wire.verification_uri_complete,
            expires_in: seconds(wire.expires_in, 600, 3600),
            // §3.2: 5 seconds when the IdP does not say.
            interval: seconds(wire.interval, 5, 60),
        })
    }

    /// Polls the token endpoint (§3.4, §3.5) until the user approves, denies, the code expires, or
    /// the observer cancels. Stops at the first success: polling again would spend the code.
    pub fn poll_device(
        &self,
        auth: &DeviceAuthorization,
        observer: &mut dyn DeviceObserver,
    ) -> Result<TokenSet> {
        let d = self.discovery()?;
        let start = Instant::now();
        let mut interval = auth.interval;
        let mut transient_failures = 0;
        loop {
            // Wait one interval first: the user cannot have approved yet.
            let wake = Instant::now() + interval;
            while Instant::now() < wake {
                if observer.cancelled() {
                    return Err(Error::Aborted {
                        reason: "interrupted".into(),
                    });
                }
                let elapsed = start.elapsed();
                observer.waiting(elapsed, auth.expires_in.saturating_sub(elapsed));
                std::thread::sleep(
                    Duration::from_millis(100).min(wake.saturating_duration_since(Instant::now())),
                );
            }
            if start.elapsed() >= auth.expires_in {
                return Err(Error::Aborted {
                    reason: "the code expired before it was approved: run login again".into(),
                });
            }
            let form = vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
                ),
                ("device_code", auth.device_code.expose().to_owned()),
            ];
            let res = match self.post_authenticated(&d.token_endpoint, &d, form) {
                Ok(r) => r,
                Err(Error::IdpUnreachable { .. }) if transient_failures < 3 => {
                    transient_failures += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match parse_token_response(&d.token_endpoint, &res) {
                Ok(t) => return Ok(t),
                Err(Error::IdpRefused {
                    code: OAuthErrorCode::AuthorizationPending,
                    ..
                }) => {}
                Err(Error::IdpRefused {
                    code: OAuthErrorCode::SlowDown,
                    ..
                }) => {
                    interval += Duration::from_secs(5);
                    observer.slowed_down(interval);
                }
                Err(Error::IdpRefused {
                    code: OAuthErrorCode::ExpiredToken,
                    ..
                }) => {
                    return Err(Error::Aborted {
                        reason: "the code expired before it was approved: run login again".into(),
                    });
                }
                Err(Error::IdpRefused {
                    code: OAuthErrorCode::AccessDenied,
                    ..
                }) => {
                    return Err(Error::Aborted {
                        reason: "the request was denied at the identity provider".into(),
                    });
                }
                Err(Error::IdpUnreachable { .. }) if transient_failures < 3 => {
                    transient_failures += 1
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::oauth::OAuthClient;
    use crate::oauth::fixtures::{Canned, provider};
    use std::sync::Arc;
    use std::time::Duration;

    /// `start_device` against an IdP whose device endpoint answers `answer`.
    fn start(n: usize, answer: &str) -> crate::Result<super::DeviceAuthorization> {
        let issuer = format!("https://device{n}.example");
        let idp = Arc::new(Canned {
            get: format!(
                r#"{{"issuer":"{issuer}","token_endpoint":"{issuer}/t",
                    "device_authorization_endpoint":"{issuer}/d"}}"#
            ),
            post: answer.to_owned(),
        });
        OAuthClient::new(idp, provider(&issuer), Duration::from_secs(5)).start_device()
    }

    #[test]
    fn a_device_authorization_is_read_into_its_model() {
        let a = start(
            0,
            r#"{"device_code":"dc","user_code":"ABCD","verification_url":"https://v",
                "expires_in":"900","interval":null}"#,
        )
        .unwrap();
        assert_eq!(a.device_code.expose(), "dc");
        assert_eq!(
            (a.user_code.as_str(), a.verification_uri.as_str()),
            ("ABCD", "https://v")
        );
        assert_eq!(
            a.expires_in,
            Duration::from_secs(900),
            "expires_in as a string"
        );
        assert_eq!(
            a.interval,
            Duration::from_secs(5),
            "RFC 8628 §3.2's default"
        );
        let a = start(
            1,
            r#"{"device_code":"dc","user_code":"A","verification_uri":"https://v",
                "expires_in":99999,"interval":0}"#,
        )
        .unwrap();
        assert_eq!(
            (a.expires_in, a.interval),
            (Duration::from_secs(3600), Duration::from_secs(1))
        );
    }

    /// A misfit answer names the field, never the value.
    #[test]
    fn a_misfit_device_authorization_names_the_field_never_the_value() {
        let what = "in the device authorization answer";
        for (n, (answer, says)) in [
            (r#"{"user_code":"A","verification_uri":"https://v"}"#, format!("no device_code {what}")),
            (
                r#"{"device_code":"ECHOED","verification_uri":"https://v"}"#,
                format!("no user_code {what}"),
            ),
            (r#"{"device_code":"ECHOED","user_code":"A"}"#, format!("no verification_uri {what}")),
            (
                r#"{"device_code":["ECHOED"],"user_code":"A","verification_uri":"https://v"}"#,
                format!("device_code {what} must be a string"),
            ),
            (
                r#"{"device_code":"ECHOED","user_code":"A","verification_uri":"https://v","interval":[1]}"#,
                format!("interval {what} must be a number of seconds"),
            ),
            ("ECHOED", "the device authorization answer is not JSON".to_owned()),
        ]
        .into_iter()
        .enumerate()
        {
            let e = start(n + 10, answer).unwrap_err();
            assert_eq!(e.kind(), "idp_bad_response", "{answer}: {e}");
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(&says), "{answer}: {shown}");
            assert!(!shown.contains("ECHOED"), "{answer}: {shown}");
        }
    }
}
