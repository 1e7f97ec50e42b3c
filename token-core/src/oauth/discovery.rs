//! OpenID Connect Discovery: the IdP's endpoints, checked against the configured issuer and
//! cached per process for an hour.

use super::client::OAuthClient;
use super::response::{bad, json_object};
use crate::config::normalize_issuer;
use crate::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The endpoints of an identity provider.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The issuer, as the IdP states it.
    pub issuer: String,
    /// Token endpoint.
    pub token_endpoint: String,
    /// Authorization endpoint (browser login).
    pub authorization_endpoint: Option<String>,
    /// Device authorization endpoint (RFC 8628).
    pub device_authorization_endpoint: Option<String>,
    /// Revocation endpoint (RFC 7009).
    pub revocation_endpoint: Option<String>,
    /// Userinfo endpoint.
    pub userinfo_endpoint: Option<String>,
    /// Introspection endpoint (RFC 7662).
    pub introspection_endpoint: Option<String>,
    /// Client authentication methods the token endpoint accepts.
    pub token_endpoint_auth_methods: Vec<String>,
}

static DISCOVERY_CACHE: Mutex<Option<HashMap<String, (Discovery, Instant)>>> = Mutex::new(None);
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

impl OAuthClient {
    /// The IdP's endpoints (OIDC discovery), cached in this process for an hour.
    pub fn discovery(&self) -> Result<Discovery> {
        let key = self.provider.issuer.clone();
        {
            let cache = DISCOVERY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((d, at)) = cache.as_ref().and_then(|c| c.get(&key))
                && at.elapsed() < DISCOVERY_TTL
            {
                return Ok(d.clone());
            }
        }
        let d = self.fetch_discovery()?;
        let mut cache = DISCOVERY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get_or_insert_with(HashMap::new)
            .insert(key, (d.clone(), Instant::now()));
        Ok(d)
    }

    fn fetch_discovery(&self) -> Result<Discovery> {
        let url = format!("{}/.well-known/openid-configuration", self.provider.issuer);
        let wrong = |found: String| Error::WrongIssuer {
            issuer: self.provider.issuer.clone(),
            found,
        };
        let res = match self.http.get_within(&url, &[], self.remaining(&url)?) {
            Err(Error::IdpUnreachable { detail, .. }) if detail == "host not found" => {
                return Err(wrong(
                    "its host name does not resolve (unknown host)".into(),
                ));
            }
            r => r?,
        };
        // 404/410 (and other 4xx but 429): nothing serves OpenID discovery at that URL.
        if matches!(res.status, 400..=499) && res.status != 429 {
            return Err(wrong(format!(
                "{url} answered HTTP {}: no OpenID Connect discovery there",
                res.status
            )));
        }
        if res.status != 200 {
            return Err(bad(&url, &res, "discovery failed"));
        }
        let v = json_object(&url, &res)?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let issuer = s("issuer").ok_or_else(|| Error::IdpBadResponse {
            url: url.clone(),
            detail: "no issuer in discovery".into(),
        })?;
        if issuer.trim_end_matches('/') != self.provider.issuer {
            return Err(wrong(format!(
                "the identity provider there calls itself '{}' (use that URL if it is yours)",
                shown_issuer(&issuer)
            )));
        }
        let check = |k: &str| -> Result<Option<String>> {
            match s(k) {
                None => Ok(None),
                Some(e) => normalize_issuer(&e, self.allow_http_loopback)
                    .map(|_| Some(e))
                    .map_err(|m| Error::IdpBadResponse {
                        url: url.clone(),
                        detail: format!("{k}: {m}"),
                    }),
            }
        };
        let token_endpoint = check("token_endpoint")?.ok_or_else(|| Error::IdpBadResponse {
            url: url.clone(),
            detail: "no token_endpoint in discovery".into(),
        })?;
        let methods = v
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Discovery {
            issuer,
            token_endpoint,
            authorization_endpoint: check("authorization_endpoint")?,
            device_authorization_endpoint: check("device_authorization_endpoint")?,
            revocation_endpoint: check("revocation_endpoint")?,
            userinfo_endpoint: check("userinfo_endpoint")?,
            introspection_endpoint: check("introspection_endpoint")?,
            token_endpoint_auth_methods: methods,
        })
    }
}

/// The issuer name a discovery document states, for a message: printable ASCII only, at most
/// 200 characters. (A GET of discovery sends nothing that could be echoed back.)
fn shown_issuer(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect()
}
