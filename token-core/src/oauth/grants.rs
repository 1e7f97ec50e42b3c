//! The grants that need no browser: refresh (RFC 6749 §6, with rotation), client credentials
//! (§4.4), token exchange (RFC 8693), and revocation (RFC 7009) and userinfo.

use super::client::OAuthClient;
use super::error::oauth_error;
use super::json::json_object;
use crate::config::GrantType;
use crate::secret::Secret;
use crate::store::TokenSet;
use crate::{Error, Result};
use serde_json::Value;

impl OAuthClient {
    /// Refresh-token grant. With rotation the answer carries a new refresh token and the one sent
    /// is spent: persist the answer before anything else.
    pub fn refresh(&self, refresh_token: &Secret) -> Result<TokenSet> {
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
    pub fn client_credentials(&self) -> Result<TokenSet> {
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
    ) -> Result<TokenSet> {
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
    ) -> Result<TokenSet> {
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
    pub fn machine_token(&self) -> Result<TokenSet> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;
    use crate::http::HttpResponse;
    use crate::oauth::fixtures::res;
    use std::sync::Mutex;
    use std::time::Duration;

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
}
