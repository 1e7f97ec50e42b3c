//! OAuth 2.0 grants, to the letter of the RFCs, over [`crate::http::HttpClient`].
//!
//! * discovery: OpenID Connect Discovery, cached per process;
//! * [`device`]: RFC 8628 device authorization grant;
//! * [`pkce`]: RFC 6749 authorization code + RFC 7636 PKCE with an RFC 8252 loopback redirect;
//! * refresh (RFC 6749 §6, with rotation), client credentials (§4.4), token exchange (RFC 8693),
//!   revocation (RFC 7009).
//!
//! Error responses are classified by their `error` field only; bodies are never logged or
//! carried in errors (an IdP may echo what it was sent).

pub mod device;
mod form;
pub mod pkce;

pub use form::{percent_decode, percent_encode};

use crate::assertion::{ASSERTION_TYPE, SigningKey};
use crate::config::{GrantType, ProviderConfig, SecretSource, normalize_issuer};
use crate::http::{HttpResponse, SharedHttp};
use crate::secret::Secret;
use crate::store::TokenSet;
use crate::time::Timestamp;
use crate::{Error, Result};
use base64::Engine;
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

/// A successful token response.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: Secret,
    /// Token type (`Bearer`).
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: Option<i64>,
    /// A (new) refresh token.
    pub refresh_token: Option<Secret>,
    /// An ID token.
    pub id_token: Option<Secret>,
    /// Granted scope.
    pub scope: Option<String>,
}

impl TokenResponse {
    /// Builds what the store keeps. With rotation the new refresh token replaces the old one; a
    /// response without one keeps the previous refresh token (and ID token and scope).
    pub fn into_token_set(self, previous: Option<&TokenSet>, now: Timestamp) -> TokenSet {
        TokenSet {
            access_token: self.access_token,
            token_type: self.token_type,
            expires_in: self.expires_in,
            refresh_token: self
                .refresh_token
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            id_token: self
                .id_token
                .or_else(|| previous.and_then(|p| p.id_token.clone())),
            scope: self
                .scope
                .or_else(|| previous.and_then(|p| p.scope.clone())),
            created_at: now,
        }
    }
}

/// One way of authenticating the client.
enum Credential {
    /// A public client: only `client_id`.
    Public,
    /// A shared secret.
    Secret(Secret),
    /// `private_key_jwt`.
    Key(Box<SigningKey>),
}

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

    /// From `QLAM_CLIENT_AUTH_METHOD` (`client_secret_basic` or `client_secret_post`); unset or
    /// anything else: chosen from discovery.
    pub fn from_env() -> Option<Self> {
        std::env::var("QLAM_CLIENT_AUTH_METHOD")
            .ok()
            .and_then(|v| Self::parse(&v))
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
    fn name(self) -> &'static str {
        match self {
            AudienceParam::Audience => "audience",
            AudienceParam::Resource => "resource",
        }
    }

    /// From `QLAM_AUTH_AUDIENCE_PARAM` (`audience` or `resource`); default `audience`.
    pub fn from_env() -> Self {
        match std::env::var("QLAM_AUTH_AUDIENCE_PARAM").as_deref() {
            Ok("resource") => AudienceParam::Resource,
            _ => AudienceParam::Audience,
        }
    }
}

static DISCOVERY_CACHE: Mutex<Option<HashMap<String, (Discovery, Instant)>>> = Mutex::new(None);
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

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
    http: SharedHttp,
    provider: ProviderConfig,
    /// How long a call may take in all, retries included.
    budget: Duration,
    /// Secret transmission; `None` = pick from discovery (basic preferred).
    pub client_auth: Option<ClientAuth>,
    /// Audience parameter name.
    pub audience_param: AudienceParam,
    /// Every request of this client ends by then (the caller's overall deadline, e.g. one
    /// SPANK hook's `timeout=`); `None` = only the HTTP client's own timeouts.
    pub deadline: Option<Instant>,
    allow_http_loopback: bool,
}

impl OAuthClient {
    /// A client for `provider`; each call (retries included) stays within `budget`.
    pub fn new(http: SharedHttp, provider: ProviderConfig, budget: Duration) -> Self {
        OAuthClient {
            http,
            provider,
            budget,
            client_auth: ClientAuth::from_env(),
            audience_param: AudienceParam::from_env(),
            deadline: None,
            allow_http_loopback: crate::config::allow_http_loopback_from_env(),
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
                && matches!(oauth_error(url, &res), Error::IdpRefused { ref code, .. } if code == "invalid_client");
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
    fn token_request(&self, form: Vec<(&str, String)>) -> Result<TokenResponse> {
        let d = self.discovery()?;
        let res = self.post_authenticated(&d.token_endpoint, &d, form)?;
        parse_token_response(&d.token_endpoint, &res)
    }

    fn audience_form(&self, form: &mut Vec<(&'static str, String)>) {
        if let Some(a) = &self.provider.audience {
            form.push((self.audience_param.name(), a.clone()));
        }
    }

    /// Refresh-token grant. With rotation the answer carries a new refresh token and the one sent
    /// is spent: persist the answer before anything else.
    pub fn refresh(&self, refresh_token: &Secret) -> Result<TokenResponse> {
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
        ];
        if let Some(t) = &self.provider.tenant {
            form.push(("organization", t.clone()));
        }
        self.token_request(form)
    }

    /// Client-credentials grant.
    pub fn client_credentials(&self) -> Result<TokenResponse> {
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        self.audience_form(&mut form);
        if let Some(s) = &self.provider.scope {
            form.push(("scope", s.clone()));
        }
        self.token_request(form)
    }

    /// Token exchange (RFC 8693): trade `subject_token` of `subject_token_type` for an access token.
    pub fn token_exchange(
        &self,
        subject_token: &Secret,
        subject_token_type: &str,
    ) -> Result<TokenResponse> {
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            ),
            ("subject_token", subject_token.expose().to_owned()),
            ("subject_token_type", subject_token_type.to_owned()),
        ];
        self.audience_form(&mut form);
        if let Some(s) = &self.provider.scope {
            form.push(("scope", s.clone()));
        }
        self.token_request(form)
    }

    /// A job token (RFC 8693): trades the user's access token `subject` for an access token
    /// with the audience, scope and (as the `requested_lifetime` extension) lifetime of `req`.
    /// Without an audience in `req`, the provider's own `audience` is asked for.
    pub fn exchange_access_token(
        &self,
        subject: &Secret,
        req: &crate::exchange::Request,
    ) -> Result<TokenResponse> {
        use crate::exchange::{ACCESS_TOKEN_TYPE, GRANT_TYPE};
        let mut form = vec![
            ("grant_type", GRANT_TYPE.to_owned()),
            ("subject_token", subject.expose().to_owned()),
            ("subject_token_type", ACCESS_TOKEN_TYPE.to_owned()),
            ("requested_token_type", ACCESS_TOKEN_TYPE.to_owned()),
        ];
        match &req.audience {
            Some(a) => form.push((self.audience_param.name(), a.clone())),
            None => self.audience_form(&mut form),
        }
        if let Some(s) = &req.scope {
            form.push(("scope", s.clone()));
        }
        if let Some(l) = req.lifetime {
            form.push(("requested_lifetime", l.as_secs().max(1).to_string()));
        }
        self.token_request(form)
    }

    /// The token for a non-interactive grant (client credentials, token exchange).
    pub fn machine_token(&self) -> Result<TokenResponse> {
        match self.provider.grant_type {
            GrantType::ClientCredentials => self.client_credentials(),
            GrantType::TokenExchange => {
                let p = &self.provider;
                let var = p
                    .subject_token
                    .as_deref()
                    .and_then(|s| s.strip_prefix("env:"))
                    .ok_or_else(|| {
                        Error::config(
                            &p.config_path,
                            "subject_token",
                            "token_exchange needs subject_token: env:VARIABLE",
                        )
                    })?;
                // The caller's environment (the job's, in the plugin), captured by
                // `ProviderConfig::with_env`: never this process's (slurmstepd's, as root).
                let subject = p
                    .env
                    .get(var)
                    .filter(|v| !v.expose().is_empty())
                    .ok_or_else(|| {
                        Error::config(
                            &p.config_path,
                            "subject_token",
                            format!("${var} is unset or empty"),
                        )
                    })?;
                let ty = p
                    .subject_token_type
                    .as_deref()
                    .unwrap_or("urn:ietf:params:oauth:token-type:jwt");
                self.token_exchange(&subject, ty)
            }
            g => Err(Error::config(
                &self.provider.config_path,
                "grant_type",
                format!("{} needs an interactive login", g.as_str()),
            )),
        }
    }

    /// Revokes a token (RFC 7009). `Ok(false)` if the IdP has no revocation endpoint.
    pub fn revoke(&self, token: &Secret, hint: &str) -> Result<bool> {
        let d = self.discovery()?;
        let Some(url) = d.revocation_endpoint.clone() else {
            return Ok(false);
        };
        let form = vec![
            ("token", token.expose().to_owned()),
            ("token_type_hint", hint.to_owned()),
        ];
        let res = self.post_authenticated(&url, &d, form)?;
        // RFC 7009 §2.2: 200 also for tokens that were already invalid.
        match res.status {
            200 => Ok(true),
            _ => Err(oauth_error(&url, &res)),
        }
    }

    /// The userinfo claims for an access token.
    pub fn userinfo(&self, access_token: &Secret) -> Result<Value> {
        let d = self.discovery()?;
        let url = d
            .userinfo_endpoint
            .clone()
            .ok_or_else(|| Error::IdpBadResponse {
                url: self.provider.issuer.clone(),
                detail: "the IdP has no userinfo endpoint".into(),
            })?;
        let auth = format!("Bearer {}", access_token.expose());
        let res = self
            .http
            .get_within(&url, &[("Authorization", &auth)], self.remaining(&url)?)?;
        if res.status != 200 {
            return Err(oauth_error(&url, &res));
        }
        json_object(&url, &res)
    }
}

/// True for a request whose credential is spent when the IdP processes it: a refresh token (with
/// rotation and reuse detection), an authorization code, a device code after approval. Sending
/// such a request twice can revoke the whole login.
fn spends_what_it_sends(form: &[(&str, &str)]) -> bool {
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
fn may_retry(res: &HttpResponse, single_use: bool) -> bool {
    match res.status {
        429 => true,
        503 if single_use => res.retry_after.is_some(),
        500..=599 => !single_use,
        _ => false,
    }
}

fn retry_wait(retry_after: Option<&str>, attempt: u32) -> Duration {
    let base = retry_after
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_millis(250 << attempt));
    let jitter = Duration::from_millis(u64::from(
        crate::fsutil::random_suffix().as_bytes()[1] % 100,
    ));
    base.min(Duration::from_secs(5)) + jitter
}

fn json_object(url: &str, res: &HttpResponse) -> Result<Value> {
    let v: Value =
        serde_json::from_slice(&res.body).map_err(|_| bad(url, res, "the answer is not JSON"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(bad(url, res, "the answer is not a JSON object"))
    }
}

fn bad(url: &str, res: &HttpResponse, what: &str) -> Error {
    Error::IdpBadResponse {
        url: url.to_owned(),
        detail: format!(
            "{what}: HTTP {}, content type {}",
            res.status,
            res.content_type.as_deref().unwrap_or("none")
        ),
    }
}

/// Keeps printable ASCII, at most 160 characters: error descriptions are the IdP's text.
/// The OAuth `error` code as we show it: only an RFC 6749-style code (`a-z`, `_`, at most 40
/// characters) is kept, anything else is replaced, so that an IdP that echoes what it was sent
/// cannot get it into our errors. `error_description` is never read, for the same reason.
/// The issuer name a discovery document states, for a message: printable ASCII only, at most
/// 200 characters. (A GET of discovery sends nothing that could be echoed back.)
fn shown_issuer(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect()
}

fn clean_code(s: &str) -> String {
    if !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        s.to_owned()
    } else {
        "non_standard_error".to_owned()
    }
}

/// Turns a non-success answer into an error: an OAuth error object if there is one, else a
/// description of what came back (status, content type), never the body.
pub(crate) fn oauth_error(url: &str, res: &HttpResponse) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(&res.body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str);
    match code {
        // Rate limiting is "busy, try later" (retryable, and a still-valid stored token may be
        // used meanwhile), never "refused: check your config", whatever the body says.
        _ if res.status == 429 => Error::IdpUnreachable {
            url: url.to_owned(),
            detail: "HTTP 429 (rate limited: try again later)".to_owned(),
        },
        Some(code) if (400..500).contains(&res.status) => Error::IdpRefused {
            url: url.to_owned(),
            code: clean_code(code),
        },
        _ if res.status == 429 || res.status >= 500 => Error::IdpUnreachable {
            url: url.to_owned(),
            detail: format!("HTTP {} (busy or failing, try again later)", res.status),
        },
        _ => bad(url, res, "unexpected answer"),
    }
}

/// The longest `expires_in` we take from an IdP: ten years.
pub const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

/// Parses a token endpoint answer (RFC 6749 §5.1/§5.2).
pub fn parse_token_response(url: &str, res: &HttpResponse) -> Result<TokenResponse> {
    if res.status != 200 {
        return Err(oauth_error(url, res));
    }
    let v = json_object(url, res)?;
    let str_of = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let access_token =
        str_of("access_token").ok_or_else(|| bad(url, res, "no access_token in the answer"))?;
    let expires_in = match v.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    }
    .filter(|e| *e >= 0)
    // Ten years at most: an expiry past year 9999 could not be written as a timestamp that we
    // (or QLAM Core) can read back.
    .map(|e| e.min(MAX_EXPIRES_IN));
    let scope = match v.get("scope") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    };
    Ok(TokenResponse {
        access_token: Secret::new(access_token),
        token_type: str_of("token_type").unwrap_or("Bearer").to_owned(),
        expires_in,
        refresh_token: str_of("refresh_token").map(Secret::new),
        id_token: str_of("id_token").map(Secret::new),
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(status: u16, ct: &str, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            content_type: Some(ct.into()),
            date: None,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn token_response_parsing() {
        let t = parse_token_response(
            "u",
            &res(
                200,
                "application/json",
                r#"{"access_token":"a","expires_in":"60","token_type":"bearer"}"#,
            ),
        )
        .unwrap();
        assert_eq!(t.expires_in, Some(60));
        assert!(t.refresh_token.is_none());
        let e = parse_token_response(
            "u",
            &res(
                400,
                "application/json",
                r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#,
            ),
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::IdpRefused { code, .. } if code == "invalid_grant"),
            "{e:?}"
        );
        let e = parse_token_response(
            "u",
            &res(502, "text/html", "<html>secret-looking body</html>"),
        )
        .unwrap_err();
        assert!(matches!(e, Error::IdpUnreachable { .. }));
        assert!(!e.to_string().contains("secret-looking"));
        let e = parse_token_response("u", &res(200, "text/html", "<html>")).unwrap_err();
        assert!(
            matches!(e, Error::IdpBadResponse { .. }) && e.to_string().contains("not JSON"),
            "{e}"
        );
        let e = parse_token_response("u", &res(200, "application/json", r#"{"token":"x"}"#))
            .unwrap_err();
        assert!(e.to_string().contains("no access_token"));
    }

    /// Security review item 5: an IdP that echoes what it was sent in `error_description` (or
    /// in a non-standard `error`) must not get it into our errors, slurmd's log or job output.
    #[test]
    fn idp_text_that_could_echo_a_secret_never_reaches_the_error() {
        for body in [
            r#"{"error":"invalid_grant","error_description":"refresh_token rt-ECHOED-4242 is spent"}"#,
            r#"{"error":"invalid_grant rt-ECHOED-4242"}"#,
            r#"{"error":"eyJhbGciOi.ECHOED.x"}"#,
        ] {
            let e = parse_token_response("u", &res(400, "application/json", body)).unwrap_err();
            assert_eq!(e.kind(), "idp_refused", "{e}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("ECHOED"), "{body}: {shown}");
        }
        let e = parse_token_response(
            "u",
            &res(
                400,
                "application/json",
                r#"{"error":"invalid_client","error_description":"x"}"#,
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid_client"), "{e}");
    }

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

    /// A stand-in IdP (in process) that records the forms it is sent: what is checked here is
    /// which value we send, which a real server cannot tell us apart from.
    #[derive(Debug, Default)]
    struct RecordingIdp {
        forms: Mutex<Vec<Vec<(String, String)>>>,
    }

    impl crate::http::HttpClient for RecordingIdp {
        fn get(&self, _url: &str, _headers: &[(&str, &str)]) -> Result<HttpResponse> {
            Ok(res(
                200,
                "application/json",
                r#"{"issuer":"https://idp.example","token_endpoint":"https://idp.example/token"}"#,
            ))
        }
        fn post_form(
            &self,
            _url: &str,
            _headers: &[(&str, &str)],
            form: &[(&str, &str)],
        ) -> Result<HttpResponse> {
            let form = form.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
            self.forms.lock().unwrap().push(form.collect());
            Ok(res(
                200,
                "application/json",
                r#"{"access_token":"exchanged","expires_in":60}"#,
            ))
        }
    }

    use std::sync::Arc;

    fn exchange_provider(lookup: &dyn Fn(&str) -> Option<String>) -> ProviderConfig {
        ProviderConfig {
            context: "c".into(),
            name: "p".into(),
            issuer: "https://idp.example".into(),
            client_id: "cid".into(),
            client_secret: None,
            grant_type: GrantType::TokenExchange,
            scope: None,
            audience: None,
            tenant: None,
            subject_token_type: None,
            // PATH is set in every test process: the stand-in for a daemon's own variable.
            subject_token: Some("env:PATH".into()),
            config_path: "/c.json".into(),
            env: crate::config::EnvSnapshot::default(),
        }
        .with_env(lookup)
    }

    /// Security review item 1: `subject_token: env:VAR` is the caller's (the job's) variable,
    /// never the variable of the process that runs the code (slurmstepd, as root).
    #[test]
    fn token_exchange_reads_the_callers_environment_never_the_process_one() {
        assert!(std::env::var_os("PATH").is_some());
        let idp = Arc::new(RecordingIdp::default());
        let client = OAuthClient::new(
            idp.clone(),
            exchange_provider(&|_| None),
            Duration::from_secs(5),
        );
        let e = client.machine_token().unwrap_err();
        assert_eq!(e.kind(), "bad_config", "{e}");
        assert!(e.to_string().contains("$PATH is unset"), "{e}");
        assert!(idp.forms.lock().unwrap().is_empty(), "nothing may be sent");

        let job_env = |k: &str| (k == "PATH").then(|| "job-subject-token".to_owned());
        let client = OAuthClient::new(
            idp.clone(),
            exchange_provider(&job_env),
            Duration::from_secs(5),
        );
        client.machine_token().unwrap();
        let forms = idp.forms.lock().unwrap();
        let sent = forms[0].iter().find(|(k, _)| k == "subject_token");
        assert_eq!(sent.map(|(_, v)| v.as_str()), Some("job-subject-token"));
    }

    #[test]
    fn rate_limiting_is_busy_not_refused() {
        let e = parse_token_response(
            "u",
            &res(429, "application/json", r#"{"error":"too_many_requests"}"#),
        )
        .unwrap_err();
        assert_eq!(e.kind(), "idp_unreachable", "{e}");
    }

    #[test]
    fn rotation_keeps_old_refresh_token_when_none_is_returned() {
        let prev = TokenResponse {
            access_token: Secret::new("a1"),
            token_type: "Bearer".into(),
            expires_in: Some(60),
            refresh_token: Some(Secret::new("r1")),
            id_token: Some(Secret::new("i1")),
            scope: None,
        }
        .into_token_set(None, Timestamp::now());
        let next = TokenResponse {
            access_token: Secret::new("a2"),
            token_type: "Bearer".into(),
            expires_in: Some(60),
            refresh_token: None,
            id_token: None,
            scope: None,
        }
        .into_token_set(Some(&prev), Timestamp::now());
        assert_eq!(next.refresh_token, Some(Secret::new("r1")));
        let rotated = TokenResponse {
            access_token: Secret::new("a3"),
            token_type: "Bearer".into(),
            expires_in: None,
            refresh_token: Some(Secret::new("r2")),
            id_token: None,
            scope: None,
        }
        .into_token_set(Some(&next), Timestamp::now());
        assert_eq!(rotated.refresh_token, Some(Secret::new("r2")));
    }

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
