//! Test fixtures shared by the oauth modules' tests.

use crate::Result;
use crate::config::{EnvSnapshot, GrantType, ProviderConfig};
use crate::http::{HttpClient, HttpResponse};

/// A response with this status, content type and body.
pub(crate) fn res(status: u16, ct: &str, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        content_type: Some(ct.into()),
        date: None,
        retry_after: None,
        body: body.as_bytes().to_vec(),
    }
}

/// A public client of `issuer` with the device grant.
pub(crate) fn provider(issuer: &str) -> ProviderConfig {
    ProviderConfig {
        context: "c".into(),
        name: "p".into(),
        issuer: issuer.into(),
        client_id: "cid".into(),
        client_secret: None,
        grant_type: GrantType::DeviceCode,
        scope: None,
        audience: None,
        tenant: None,
        subject_token_type: None,
        subject_token: None,
        config_path: "/c.json".into(),
        env: EnvSnapshot::default(),
    }
}

/// A stand-in IdP (in process) that answers every GET with `get` and every POST with
/// `post` (200, JSON): hostile documents that a real server would not send.
#[derive(Debug)]
pub(crate) struct Canned {
    pub(crate) get: String,
    pub(crate) post: String,
}

impl HttpClient for Canned {
    fn get(&self, _url: &str, _headers: &[(&str, &str)]) -> Result<HttpResponse> {
        Ok(res(200, "application/json", &self.get))
    }
    fn post_form(
        &self,
        _url: &str,
        _headers: &[(&str, &str)],
        _form: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        Ok(res(200, "application/json", &self.post))
    }
}
