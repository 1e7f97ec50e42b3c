//! The OAuth client of one provider: client authentication (a secret by HTTP Basic or in the
//! form, `private_key_jwt`, a second secret during a rotation), the audience parameter, the
//! caller's deadline, and the POST that every grant goes through.

use super::discovery::Discovery;
use super::error::{OAuthErrorCode, oauth_error};
use super::percent_encode;
use super::response::parse_token_response;
use super::retry::{may_retry, retry_wait, spends_what_it_sends};
use crate::assertion::{ASSERTION_TYPE, SigningKey};
use crate::config::{EnvSnapshot, ProviderConfig, SecretSource};
use crate::http::{HttpResponse, SharedHttp};
use crate::secret::Secret;
use crate::store::TokenSet;
use crate::time::Timestamp;
use crate::{Error, Result};
use base64::Engine;
use std::time::{Duration, Instant};

/// One way of authenticating the client.
enum Credential {
    /// A public client: only `client_id`.
    Public,
    /// A shared secret.
    Secret(Secret),
    /// `private_key_jwt`.
    Key(Box<SigningKey>),
}

/// The variable that fixes how the client secret is sent ([`ClientAuth`]).
pub const CLIENT_AUTH_METHOD_VAR: &str = "QLAM_CLIENT_AUTH_METHOD";

/// The variable that names the audience parameter ([`AudienceParam`]).
pub const AUDIENCE_PARAM_VAR: &str = "QLAM_AUTH_AUDIENCE_PARAM";

/// How the client secret is sent to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`), the RFC's default.
    Basic,
    /// In the form body (`client_secret_post`).
    Post,
}

impl ClientAuth {
    /// Parses `client_secret_basic` / `client_secret_post`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret_basic" => Some(ClientAuth::Basic),
            "client_secret_post" => Some(ClientAuth::Post),
            _ => None,
        }
    }

    /// From [`CLIENT_AUTH_METHOD_VAR`] (`client_secret_basic` or `client_secret_post`) in
    /// `env`, the caller's environment as the provider captured it; unset or anything else:
    /// chosen from discovery.
    pub fn from_env(env: &EnvSnapshot) -> Option<Self> {
        env.get(CLIENT_AUTH_METHOD_VAR)
            .and_then(|v| Self::parse(v.expose()))
    }
}

/// The parameter that names the API a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudienceParam {
    /// `audience=` (Auth0, the IdP behind QLAM).
    Audience,
    /// `resource=` (RFC 8707).
    Resource,
}

impl AudienceParam {
    pub(super) fn name(self) -> &'static str {
        match self {
            AudienceParam::Audience => "audience",
            AudienceParam::Resource => "resource",
        }
    }

    /// From [`AUDIENCE_PARAM_VAR`] (`audience` or `resource`) in `env`, the caller's
    /// environment as the provider captured it; default `audience`.
    pub fn from_env(env: &EnvSnapshot) -> Self {
        match env.get(AUDIENCE_PARAM_VAR) {
            Some(v) if v.expose() == "resource" => AudienceParam::Resource,
            _ => AudienceParam::Audience,
        }
    }
}

/// Form fields on their way to the IdP. They carry refresh tokens, codes, client secrets and
/// assertions: every value is wiped when the form is dropped (`docs/security.md`).
struct WipedForm<'a>(Vec<(&'a str, String)>);

impl WipedForm<'_> {
    fn wipe(&mut self) {
        for (_, v) in &mut self.0 {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

impl Drop for WipedForm<'_> {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// Talks to one provider's IdP.
#[derive(Debug)]
pub struct OAuthClient {
    pub(super) http: SharedHttp,
    pub(super) provider: ProviderConfig,
    /// How long a call may take in all, retries included.
    pub(super) budget: Duration,
    /// Secret transmission; `None` = pick from discovery (basic preferred).
    pub client_auth: Option<ClientAuth>,
    /// Audience parameter name.
    pub audience_param: AudienceParam,
    /// Every request of this client ends by then (the caller's overall deadline, e.g. one
    /// SPANK hook's `timeout=`); `None` = only the HTTP client's own timeouts.
    pub deadline: Option<Instant>,
    pub(super) allow_http_loopback: bool,
}

impl OAuthClient {
    /// A client for `provider`; each call (retries included) stays within `budget`.
    ///
    /// The client authentication method and the audience parameter come from the environment
    /// the provider captured ([`ProviderConfig::with_env`]), never from this process's own:
    /// the CLI's process environment; in the plugin, the job's for a user's own provider and
    /// none for a site account (the site file fixes its method). `client_auth` may be set
    /// afterwards (qlam-auth.json, the site file).
    pub fn new(http: SharedHttp, provider: ProviderConfig, budget: Duration) -> Self {
        OAuthClient {
            // Endpoints on plain http (loopback only) only for an issuer that is: the config
            // accepted one only with QLAM_AUTH_ALLOW_HTTP_LOOPBACK=1 where it was read.
            allow_http_loopback: provider.issuer.starts_with("http://"),
            client_auth: ClientAuth::from_env(&provider.env),
            audience_param: AudienceParam::from_env(&provider.env),
            http,
            provider,
            budget,
            deadline: None,
        }
    }

    /// The provider.
    pub fn provider(&self) -> &ProviderConfig {
        &self.provider
    }

    /// Ends every later request of this client by `deadline` (kept if an earlier one is set).
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = match (self.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }

    /// What is left of the deadline, or an error naming `url` when nothing is left.
    pub fn remaining(&self, url: &str) -> Result<Option<Duration>> {
        match self.deadline {
            None => Ok(None),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left < Duration::from_millis(10) {
                    Err(Error::IdpUnreachable {
                        url: url.to_owned(),
                        detail: "not asked: the time allowed for this call is used up".to_owned(),
                    })
                } else {
                    Ok(Some(left))
                }
            }
        }
    }

    /// Replaces the HTTP client by one made from it (e.g. a counting wrapper).
    pub fn map_http(mut self, f: impl FnOnce(SharedHttp) -> SharedHttp) -> Self {
        self.http = f(self.http);
        self
    }

    fn client_auth(&self, d: &Discovery) -> ClientAuth {
        self.client_auth.unwrap_or_else(|| {
            let has = |m: &str| d.token_endpoint_auth_methods.iter().any(|x| x == m);
            if !has("client_secret_basic") && has("client_secret_post") {
                ClientAuth::Post
            } else {
                ClientAuth::Basic
            }
        })
    }

    /// How this client proves who it is: none (public client), its secret(s) (the second only
    /// during a rotation), or a private key (`private_key_jwt`).
    fn credentials(&self) -> Result<Vec<Credential>> {
        let p = &self.provider;
        match &p.client_secret {
            None => Ok(vec![Credential::Public]),
            Some(SecretSource::PrivateKeyJwt(path)) => {
                Ok(vec![Credential::Key(Box::new(SigningKey::load(path)?))])
            }
            Some(src) => Ok(src
                .resolve_all(&p.config_path, "client_secret", &p.env)?
                .into_iter()
                .map(Credential::Secret)
                .collect()),
        }
    }

    /// POSTs a form to `url` with client authentication, retrying 429/5xx within the budget.
    /// With two secrets configured (a rotation), an `invalid_client` answer to the first is
    /// followed by one try with the second.
    pub(crate) fn post_authenticated(
        &self,
        url: &str,
        d: &Discovery,
        form: Vec<(&str, String)>,
    ) -> Result<HttpResponse> {
        let form = WipedForm(form);
        let creds = self.credentials()?;
        let last = creds.len() - 1;
        for (i, cred) in creds.iter().enumerate() {
            let res = self.post_with(url, d, form.0.clone(), cred)?;
            let refused = matches!(res.status, 400 | 401)
                && matches!(
                    oauth_error(url, &res),
                    Error::IdpRefused {
                        code: OAuthErrorCode::InvalidClient,
                        ..
                    }
                );
            if refused && i < last {
                log::warn!(target: "qlam_auth", "client '{}': the identity provider refused the current secret (invalid_client); trying the next one", self.provider.client_id);
                continue;
            }
            if i > 0 && !refused {
                log::warn!(target: "qlam_auth", "client '{}': the next secret was accepted and the current one refused: finish the rotation (make the next secret the only one)", self.provider.client_id);
            }
            return Ok(res);
        }
        unreachable!("credentials() returns at least one credential")
    }

    fn post_with(
        &self,
        url: &str,
        d: &Discovery,
        form: Vec<(&str, String)>,
        cred: &Credential,
    ) -> Result<HttpResponse> {
        // Both carry secrets (refresh tokens, codes, client secrets): wiped when dropped.
        let mut form = WipedForm(form);
        let mut headers: Vec<(&str, zeroize::Zeroizing<String>)> = Vec::new();
        match (cred, self.client_auth(d)) {
            (Credential::Secret(s), ClientAuth::Basic) => {
                let raw = zeroize::Zeroizing::new(format!(
                    "{}:{}",
                    percent_encode(&self.provider.client_id),
                    percent_encode(s.expose())
                ));
                let basic = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()),
                );
                headers.push((
                    "Authorization",
                    zeroize::Zeroizing::new(format!("Basic {}", basic.as_str())),
                ));
            }
            (Credential::Secret(s), ClientAuth::Post) => {
                form.0.push(("client_id", self.provider.client_id.clone()));
                form.0.push(("client_secret", s.expose().to_owned()));
            }
            (Credential::Key(k), _) => {
                // OIDC Core §9: the audience is the token endpoint.
                let jwt = k.assertion(
                    &self.provider.client_id,
                    &d.token_endpoint,
                    Timestamp::now().unix_seconds(),
                )?;
                form.0.push(("client_id", self.provider.client_id.clone()));
                form.0
                    .push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                form.0.push(("client_assertion", jwt.expose().to_owned()));
            }
            (Credential::Public, _) => form.0.push(("client_id", self.provider.client_id.clone())),
        }
        let form_ref: Vec<(&str, &str)> = form.0.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let header_ref: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let start = Instant::now();
        let single_use = spends_what_it_sends(&form_ref);
        let mut attempt = 0u32;
        loop {
            let res =
                self.http
                    .post_form_within(url, &header_ref, &form_ref, self.remaining(url)?)?;
            if !may_retry(&res, single_use) || attempt >= 2 {
                return Ok(res);
            }
            let wait = retry_wait(res.retry_after.as_deref(), attempt);
            let left = self
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            if start.elapsed() + wait >= self.budget / 2 || left.is_some_and(|l| wait >= l / 2) {
                return Ok(res);
            }
            log::warn!(target: "qlam_auth", "{url} answered HTTP {}; retrying in {} ms", res.status, wait.as_millis());
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    /// POSTs a token request and parses the answer.
    pub(super) fn token_request(&self, form: Vec<(&str, String)>) -> Result<TokenSet> {
        let d = self.discovery()?;
        let res = self.post_authenticated(&d.token_endpoint, &d, form)?;
        parse_token_response(&d.token_endpoint, &res)
    }

    pub(super) fn audience_form(&self, form: &mut Vec<(&'static str, String)>) {
        if let Some(a) = &self.provider.audience {
            form.push((self.audience_param.name(), a.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review item 7: the form copies that carry secrets are wiped (the drop path).
    #[test]
    fn forms_are_wiped() {
        let mut f = WipedForm(vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", "rt-secret".to_owned()),
        ]);
        let capacity = f.0[1].1.capacity();
        f.wipe();
        assert!(f.0.iter().all(|(_, v)| v.is_empty()));
        assert_eq!(
            f.0[1].1.capacity(),
            capacity,
            "wiped in place, not reallocated"
        );
    }

    /// The client authentication method and the audience parameter are the caller's (the
    /// job's, in the plugin), as the provider captured them: never this process's.
    #[test]
    fn the_request_shape_comes_from_the_callers_environment() {
        use crate::oauth::fixtures::{Canned, provider};
        let http: SharedHttp = std::sync::Arc::new(Canned {
            get: String::new(),
            post: String::new(),
        });
        let job = |k: &str| match k {
            AUDIENCE_PARAM_VAR => Some("resource".to_owned()),
            CLIENT_AUTH_METHOD_VAR => Some("client_secret_post".to_owned()),
            _ => None,
        };
        let p = provider("https://x.example").with_env(&job);
        let c = OAuthClient::new(http.clone(), p, Duration::from_secs(1));
        assert_eq!(c.audience_param, AudienceParam::Resource);
        assert_eq!(c.client_auth, Some(ClientAuth::Post));
        let p = provider("https://x.example").with_env(&|_| None);
        let c = OAuthClient::new(http, p, Duration::from_secs(1));
        assert_eq!(
            (c.audience_param, c.client_auth),
            (AudienceParam::Audience, None)
        );
    }
}
