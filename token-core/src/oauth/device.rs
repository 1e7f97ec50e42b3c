//! RFC 8628: the device authorization grant.

use super::error::oauth_error;
use super::{OAuthClient, TokenResponse, parse_token_response};
use crate::secret::Secret;
use crate::{Error, Result};
use serde_json::Value;
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
        let v: Value = serde_json::from_slice(&res.body).map_err(|_| Error::IdpBadResponse {
            url: url.clone(),
            detail: "the device authorization answer is not JSON".into(),
        })?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        let missing = |k: &str| Error::IdpBadResponse {
            url: url.clone(),
            detail: format!("no {k} in the device authorization answer"),
        };
        Ok(DeviceAuthorization {
            device_code: Secret::new(s("device_code").ok_or_else(|| missing("device_code"))?),
            user_code: s("user_code").ok_or_else(|| missing("user_code"))?,
            verification_uri: s("verification_uri")
                .or_else(|| s("verification_url"))
                .ok_or_else(|| missing("verification_uri"))?,
            verification_uri_complete: s("verification_uri_complete"),
            expires_in: Duration::from_secs(n("expires_in").unwrap_or(600).clamp(1, 3600)),
            // §3.2: 5 seconds when the IdP does not say.
            interval: Duration::from_secs(n("interval").unwrap_or(5).clamp(1, 60)),
        })
    }

    /// Polls the token endpoint (§3.4, §3.5) until the user approves, denies, the code expires, or
    /// the observer cancels. Stops at the first success: polling again would spend the code.
    pub fn poll_device(
        &self,
        auth: &DeviceAuthorization,
        observer: &mut dyn DeviceObserver,
    ) -> Result<TokenResponse> {
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
                Err(Error::IdpRefused { code, .. }) if code == "authorization_pending" => {}
                Err(Error::IdpRefused { code, .. }) if code == "slow_down" => {
                    interval += Duration::from_secs(5);
                    observer.slowed_down(interval);
                }
                Err(Error::IdpRefused { code, .. }) if code == "expired_token" => {
                    return Err(Error::Aborted {
                        reason: "the code expired before it was approved: run login again".into(),
                    });
                }
                Err(Error::IdpRefused { code, .. }) if code == "access_denied" => {
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
