//! OpenID Connect Discovery: the IdP's endpoints, checked against the configured issuer and
//! cached per process for an hour.

use super::client::OAuthClient;
use super::json::{Misfit, bad, decode};
use super::response::DiscoveryWire;
use crate::config::normalize_issuer;
use crate::{Error, Result};
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
        let doc: DiscoveryWire = decode(&res.body).map_err(|m| match m {
            Misfit::NotJson | Misfit::NotObject => m.into_error(&url, &res, "the answer"),
            m => Error::IdpBadResponse {
                url: url.clone(),
                detail: m.describe("discovery"),
            },
        })?;
        let missing = |field| Error::IdpBadResponse {
            url: url.clone(),
            detail: Misfit::Missing(field).describe("discovery"),
        };
        let issuer = doc.issuer.ok_or_else(|| missing("issuer"))?;
        if issuer.trim_end_matches('/') != self.provider.issuer {
            return Err(wrong(format!(
                "the identity provider there calls itself '{}' (use that URL if it is yours)",
                shown_issuer(&issuer)
            )));
        }
        let check = |k: &str, e: Option<String>| -> Result<Option<String>> {
            match e {
                None => Ok(None),
                Some(e) => normalize_issuer(&e, self.allow_http_loopback)
                    .map(|_| Some(e))
                    .map_err(|m| Error::IdpBadResponse {
                        url: url.clone(),
                        detail: format!("{k}: {m}"),
                    }),
            }
        };
        let token_endpoint = check("token_endpoint", doc.token_endpoint)?
            .ok_or_else(|| missing("token_endpoint"))?;
        Ok(Discovery {
            issuer,
            token_endpoint,
            authorization_endpoint: check("authorization_endpoint", doc.authorization_endpoint)?,
            device_authorization_endpoint: check(
                "device_authorization_endpoint",
                doc.device_authorization_endpoint,
            )?,
            revocation_endpoint: check("revocation_endpoint", doc.revocation_endpoint)?,
            userinfo_endpoint: check("userinfo_endpoint", doc.userinfo_endpoint)?,
            introspection_endpoint: check("introspection_endpoint", doc.introspection_endpoint)?,
            token_endpoint_auth_methods: doc.token_endpoint_auth_methods_supported,
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

#[cfg(test)]
mod tests {
    use crate::oauth::OAuthClient;
    use crate::oauth::fixtures::{Canned, provider};
    use std::sync::Arc;
    use std::time::Duration;

    /// Discovery of `issuer` (each test its own: the cache is per process) answered by `doc`.
    fn discover(issuer: &str, doc: &str) -> crate::Result<crate::oauth::Discovery> {
        let idp = Arc::new(Canned {
            get: doc.to_owned(),
            post: String::new(),
        });
        OAuthClient::new(idp, provider(issuer), Duration::from_secs(5)).discovery()
    }

    #[test]
    fn a_discovery_document_is_read_into_its_model() {
        let d = discover(
            "https://good.example",
            r#"{"issuer":"https://good.example/","token_endpoint":"https://good.example/t",
                "device_authorization_endpoint":"https://good.example/d","extra":[1,{"x":2}],
                "token_endpoint_auth_methods_supported":["client_secret_post"]}"#,
        )
        .unwrap();
        assert_eq!(d.token_endpoint, "https://good.example/t");
        assert_eq!(
            d.device_authorization_endpoint.as_deref(),
            Some("https://good.example/d")
        );
        assert_eq!(d.revocation_endpoint, None);
        assert_eq!(d.token_endpoint_auth_methods, ["client_secret_post"]);
    }

    /// A misfit document names the field, never the value.
    #[test]
    fn a_misfit_discovery_document_names_the_field_never_the_value() {
        for (n, (doc, says)) in [
            (
                r#"{"token_endpoint":"https://x/t"}"#,
                "no issuer in discovery",
            ),
            (
                r#"{"issuer":"https://misfit1.example"}"#,
                "no token_endpoint in discovery",
            ),
            (
                r#"{"issuer":["ECHOED"]}"#,
                "issuer in discovery must be a string",
            ),
            (
                r#"{"issuer":"https://misfit3.example","token_endpoint":{"ECHOED":1}}"#,
                "token_endpoint in discovery must be a string",
            ),
            (
                r#"{"issuer":"https://misfit4.example","token_endpoint":"https://x/t",
                    "token_endpoint_auth_methods_supported":"ECHOED"}"#,
                "token_endpoint_auth_methods_supported in discovery must be a list",
            ),
            (r#"["ECHOED"]"#, "the answer is not a JSON object"),
            ("<html>ECHOED", "the answer is not JSON"),
        ]
        .into_iter()
        .enumerate()
        {
            let e = discover(&format!("https://misfit{n}.example"), doc).unwrap_err();
            assert_eq!(e.kind(), "idp_bad_response", "{doc}: {e}");
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(says), "{doc}: {shown}");
            assert!(!shown.contains("ECHOED"), "{doc}: {shown}");
        }
    }

    /// Plain-http endpoints (loopback only) only for an issuer that is plain http itself, which
    /// the config allowed only with QLAM_AUTH_ALLOW_HTTP_LOOPBACK=1: no environment read here.
    #[test]
    fn plain_http_endpoints_only_for_a_plain_http_issuer() {
        let doc = |issuer: &str| {
            format!(r#"{{"issuer":"{issuer}","token_endpoint":"http://127.0.0.1:9/token"}}"#)
        };
        let d = discover("http://127.0.0.1:9", &doc("http://127.0.0.1:9")).unwrap();
        assert_eq!(d.token_endpoint, "http://127.0.0.1:9/token");
        let e = discover("https://tls.example", &doc("https://tls.example")).unwrap_err();
        assert!(e.to_string().contains("token_endpoint: "), "{e}");
        assert!(e.to_string().contains("plain http"), "{e}");
    }
}
