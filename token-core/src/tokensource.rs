//! A token source for Rust services: a cached machine (or user) token that is renewed under the
//! store lock only when needed, and a helper that sends a request with it and, when the resource
//! server answers 401, renews once and retries once.
//!
//! ```no_run
//! use token_core::http::{HttpSettings, UreqClient};
//! use token_core::tokensource::TokenSource;
//! # fn main() -> token_core::Result<()> {
//! // QLAM_CLIENT_ID, QLAM_CLIENT_SECRET, QLAM_AUDIENCE, AUTH_BASE_URL, or a qsh context:
//! let source = TokenSource::select(None, &HttpSettings::default())?;
//! let api = UreqClient::new(&HttpSettings::default())?;
//! let res = source.get(&api, "https://api.example/v1/jobs", &[])?;
//! # Ok(()) }
//! ```
//!
//! The 401 rule: the token that was refused is compared with the stored one under the lock; if
//! another process or thread already replaced it, that newer token is used and no request goes to
//! the IdP; otherwise one new token is fetched. A second 401 is returned to the caller as is: the
//! problem is then not the token's age (wrong audience, missing permission).
#![forbid(unsafe_code)]

use crate::Result;
use crate::broker::{Broker, ObtainOptions, Obtained};
use crate::http::{HttpClient, HttpResponse, HttpSettings};
use crate::secret::Secret;

/// A cached access token for one context.
#[derive(Debug)]
pub struct TokenSource {
    broker: Broker,
    opts: ObtainOptions,
}

impl TokenSource {
    /// A source over `broker`, renewing tokens that have less than 5 minutes left.
    pub fn new(broker: Broker) -> Self {
        TokenSource {
            broker,
            opts: ObtainOptions::default(),
        }
    }

    /// The source for `context` (or environment mode), chosen as `qlam-auth token` does (without
    /// a site file).
    pub fn select(context: Option<&str>, http: &HttpSettings) -> Result<Self> {
        // A service's own process: its environment is the one that counts.
        let env = |k: &str| std::env::var(k).ok();
        let paths = crate::paths::QshPaths::from_env(&env, std::env::home_dir())?;
        crate::m2m::select_broker(context, &paths, &env, http, None).map(Self::new)
    }

    /// Changes how fresh tokens must be and how long to wait for the lock.
    pub fn with_options(mut self, opts: ObtainOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The broker behind this source.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// A valid access token (from the cache when possible).
    pub fn token(&self) -> Result<Secret> {
        self.obtain().map(|o| o.access_token)
    }

    /// A valid access token with what is known about it.
    pub fn obtain(&self) -> Result<Obtained> {
        self.broker.obtain(&self.opts)
    }

    /// A new token after `rejected` was refused by a resource server, unless the stored token
    /// already changed since it was used.
    pub fn replace(&self, rejected: &Secret) -> Result<Obtained> {
        self.broker.obtain_replacing(rejected, &self.opts)
    }

    /// Calls `request` with an `Authorization` header value (`Bearer ...`); on HTTP 401 replaces
    /// the token once and calls it once more.
    pub fn send(&self, request: &dyn Fn(&str) -> Result<HttpResponse>) -> Result<HttpResponse> {
        let token = self.token()?;
        let res = request(&bearer(&token))?;
        if res.status != 401 {
            return Ok(res);
        }
        let fresh = self.replace(&token)?;
        log::info!(
            target: "qlam_auth",
            "the resource server refused token {} (HTTP 401); retrying once with {} ({:?})",
            token.fingerprint(),
            fresh.access_token.fingerprint(),
            fresh.source
        );
        request(&bearer(&fresh.access_token))
    }

    /// GET `url` with the token (see [`TokenSource::send`]).
    pub fn get(
        &self,
        http: &dyn HttpClient,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        self.send(&|auth| {
            let mut h: Vec<(&str, &str)> = headers.to_vec();
            h.push(("Authorization", auth));
            http.get(url, &h)
        })
    }

    /// POST a form to `url` with the token (see [`TokenSource::send`]).
    pub fn post_form(
        &self,
        http: &dyn HttpClient,
        url: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        self.send(&|auth| {
            let mut h: Vec<(&str, &str)> = headers.to_vec();
            h.push(("Authorization", auth));
            http.post_form(url, &h, form)
        })
    }
}

fn bearer(token: &Secret) -> String {
    format!("Bearer {}", token.expose())
}
