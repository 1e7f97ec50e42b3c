//! A blocking HTTPS client that never starts a thread.
//!
//! ureq (rustls, ring) with: a resolver that looks names up on the calling thread (ureq's own
//! spawns a thread to time out `getaddrinfo`, which would outlive the call inside a forking
//! slurmstepd), redirects off, connect and total timeouts on every request, a cap on body size,
//! and trust anchors from the system bundle plus `SSL_CERT_FILE` plus an optional site bundle.
//!
//! The [`HttpClient`] trait lets unit tests use an in-process fake; integration tests use the
//! real client against the real test IdP.

use crate::{Error, Result};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Largest response body we read.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// System trust anchors (Debian's ca-certificates bundle), the first of [`SYSTEM_CA_BUNDLES`].
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where Linux distributions keep the system CA bundle, in the order they are tried (the list Go's
/// `crypto/x509` uses): the first that exists is read.
pub const SYSTEM_CA_BUNDLES: [&str; 6] = [
    // Debian, Ubuntu, Gentoo, Arch (ca-certificates).
    SYSTEM_CA_BUNDLE,
    // Fedora, RHEL 6.
    "/etc/pki/tls/certs/ca-bundle.crt",
    // openSUSE, SLES.
    "/etc/ssl/ca-bundle.pem",
    // OpenELEC.
    "/etc/pki/tls/cacert.pem",
    // RHEL 7+, Rocky, Alma, CentOS (ca-trust).
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    // Alpine.
    "/etc/ssl/cert.pem",
];

/// The system CA bundle under `root` (`/` on a real system): the first of
/// [`SYSTEM_CA_BUNDLES`] that is a file.
pub fn system_ca_bundle(root: &std::path::Path) -> Option<PathBuf> {
    SYSTEM_CA_BUNDLES
        .iter()
        .map(|p| root.join(p.trim_start_matches('/')))
        .find(|p| p.is_file())
}

/// How to reach identity providers.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Bound on one whole request (connect, TLS, send, receive).
    pub timeout: Duration,
    /// Bound on establishing the connection.
    pub connect_timeout: Duration,
    /// An extra CA bundle (PEM) to trust, besides the system roots and `SSL_CERT_FILE`.
    pub ca_bundle: Option<PathBuf>,
    /// If set, only these issuers may be used (exact match after normalization).
    pub allowed_issuers: Option<Vec<String>>,
    /// `SSL_CERT_FILE` as the caller read it (see [`HttpSettings::with_env`]): one more CA
    /// bundle to trust. Never read here: the library does not look at its process environment.
    pub ssl_cert_file: Option<PathBuf>,
}

impl HttpSettings {
    /// These settings with `SSL_CERT_FILE` (unset or empty: none) taken through `lookup`. The CLI
    /// passes its process environment; the plugin the daemon's (the admin's), never a job's,
    /// which would let a user choose whom the plugin trusts.
    pub fn with_env(mut self, lookup: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Self {
        self.ssl_cert_file = lookup("SSL_CERT_FILE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        self
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            ca_bundle: None,
            allowed_issuers: None,
            ssl_cert_file: None,
        }
    }
}

/// A response, with the few headers we use.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// `Date`, if any (for clock-skew checks).
    pub date: Option<String>,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// The body (at most [`MAX_BODY_BYTES`]).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// True if the content type says JSON.
    pub fn is_json(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
    }
}

/// The requests the OAuth code makes.
pub trait HttpClient: std::fmt::Debug {
    /// GET `url`.
    fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse>;
    /// POST `form` (application/x-www-form-urlencoded) to `url`.
    fn post_form(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Result<HttpResponse>;
    /// GET `url`, ending within `timeout` (if given) even when the client's own timeout is
    /// longer: what remains of the caller's deadline. Clients without per-request timeouts
    /// (test fakes) may ignore it.
    fn get_within(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        _timeout: Option<Duration>,
    ) -> Result<HttpResponse> {
        self.get(url, headers)
    }
    /// POST `form` to `url`, ending within `timeout` (if given); see [`HttpClient::get_within`].
    fn post_form_within(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
        _timeout: Option<Duration>,
    ) -> Result<HttpResponse> {
        self.post_form(url, headers, form)
    }

    /// POST `body` as `content_type` (none: an empty body without a type) to `url`. Used by the
    /// SSH certificate flow (`crate::ssh`), whose services speak JSON, not forms. Clients that
    /// only speak OAuth (test fakes) need not implement it.
    fn post_bytes(
        &self,
        url: &str,
        _headers: &[(&str, &str)],
        _content_type: Option<&str>,
        _body: &[u8],
    ) -> Result<HttpResponse> {
        Err(Error::IdpUnreachable {
            url: url.to_owned(),
            detail: "this HTTP client cannot POST a JSON body".to_owned(),
        })
    }
}

/// Resolves on the calling thread. DNS time is bounded by the resolver's own settings
/// (`/etc/resolv.conf` `timeout:`/`attempts:`), not by us; sites that care use an IP address or
/// `/etc/hosts` for the issuer.
#[derive(Debug)]
struct SameThreadResolver;

impl Resolver for SameThreadResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let mut out = self.empty();
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| {
                // getaddrinfo's EAI_NONAME / EAI_NODATA (the C locale's gai_strerror text: Rust
                // never calls setlocale): the name does not exist, which is not an outage.
                let text = e.to_string();
                if text.contains("Name or service not known")
                    || text.contains("No address associated with hostname")
                {
                    ureq::Error::HostNotFound
                } else {
                    ureq::Error::Io(e)
                }
            })?
            .collect();
        for a in addrs.into_iter().take(16) {
            out.push(a);
        }
        if out.is_empty() {
            Err(ureq::Error::HostNotFound)
        } else {
            Ok(out)
        }
    }
}

/// The real client.
#[derive(Debug, Clone)]
pub struct UreqClient {
    agent: ureq::Agent,
    timeout: Duration,
}

fn load_pem_file(
    path: &std::path::Path,
    out: &mut Vec<ureq::tls::Certificate<'static>>,
) -> std::io::Result<usize> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::os::unix::fs::OpenOptionsExt::custom_flags(
            std::fs::OpenOptions::new().read(true),
            rustix::fs::OFlags::NOCTTY.bits() as i32,
        )
        .open(path)?,
        &mut bytes,
    )?;
    let mut n = 0;
    for item in ureq::tls::parse_pem(&bytes) {
        if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
            out.push(c);
            n += 1;
        }
    }
    Ok(n)
}

impl UreqClient {
    /// Builds a client. Fails if a configured CA bundle cannot be read.
    pub fn new(settings: &HttpSettings) -> Result<Self> {
        let mut roots = Vec::new();
        // The system bundle may be absent in minimal containers; that is fine if another is given.
        if let Some(system) = system_ca_bundle(std::path::Path::new("/")) {
            let _ = load_pem_file(&system, &mut roots);
        }
        let extra = settings.ca_bundle.iter().chain(&settings.ssl_cert_file);
        for p in extra {
            match load_pem_file(p, &mut roots) {
                Ok(n) if n > 0 => {}
                Ok(_) => {
                    return Err(Error::config(
                        p,
                        "",
                        "this CA bundle holds no PEM certificate",
                    ));
                }
                Err(e) => {
                    return Err(Error::config(
                        p,
                        "",
                        format!("cannot read this CA bundle: {e}"),
                    ));
                }
            }
        }
        if roots.is_empty() {
            return Err(Error::config(
                SYSTEM_CA_BUNDLE,
                "",
                format!(
                    "no trusted CA certificates: none of {} exists; install ca-certificates \
                     or set SSL_CERT_FILE",
                    SYSTEM_CA_BUNDLES.join(", ")
                ),
            ));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .build();
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .timeout_connect(Some(settings.connect_timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("qlam-auth/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        let agent =
            ureq::Agent::with_parts(config, DefaultConnector::default(), SameThreadResolver);
        Ok(UreqClient {
            agent,
            timeout: settings.timeout,
        })
    }

    /// `timeout` if it is shorter than the client's own (at least 1 ms: ureq treats zero as
    /// "no time at all" only for some phases).
    fn shorter(&self, timeout: Option<Duration>) -> Option<Duration> {
        timeout
            .filter(|t| *t < self.timeout)
            .map(|t| t.max(Duration::from_millis(1)))
    }

    fn finish(
        &self,
        url: &str,
        res: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<HttpResponse> {
        let mut res = res.map_err(|e| transport_error(url, &e))?;
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, date, retry_after) = (
            header("content-type"),
            header("date"),
            header("retry-after"),
        );
        let status = res.status().as_u16();
        let body = res
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => Error::IdpBadResponse {
                    url: url.to_owned(),
                    detail: format!("the answer is larger than {MAX_BODY_BYTES} bytes"),
                },
                e => transport_error(url, &e),
            })?;
        Ok(HttpResponse {
            status,
            content_type,
            date,
            retry_after,
            body,
        })
    }
}

fn transport_error(url: &str, e: &ureq::Error) -> Error {
    let detail = match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::Io(io) => format!("{}", io.kind()),
        ureq::Error::Tls(t) => format!("TLS: {t}"),
        ureq::Error::Rustls(t) => format!("TLS: {t}"),
        other => other.to_string(),
    };
    Error::IdpUnreachable {
        url: url.to_owned(),
        detail,
    }
}

impl HttpClient for UreqClient {
    fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
        self.get_within(url, headers, None)
    }

    fn post_form(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        self.post_form_within(url, headers, form, None)
    }

    fn get_within(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<HttpResponse> {
        let mut req = self.agent.get(url).header("Accept", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = self.shorter(timeout) {
            req = req.config().timeout_global(Some(t)).build();
        }
        self.finish(url, req.call())
    }

    fn post_form_within(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<HttpResponse> {
        let mut req = self.agent.post(url).header("Accept", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = self.shorter(timeout) {
            req = req.config().timeout_global(Some(t)).build();
        }
        let res = req.send_form(form.iter().copied());
        self.finish(url, res)
    }

    fn post_bytes(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<HttpResponse> {
        let mut req = self.agent.post(url).header("Accept", "application/json");
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = if body.is_empty() {
            req.send_empty()
        } else {
            req.send(body)
        };
        self.finish(url, res)
    }
}

/// Shared handle to a client.
pub type SharedHttp = Arc<dyn HttpClient + Send + Sync>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    /// A PEM certificate to plant: this machine's own bundle (the test runs on Debian).
    fn some_pem() -> Vec<u8> {
        std::fs::read(SYSTEM_CA_BUNDLE).unwrap()
    }

    fn plant(root: &std::path::Path, path: &str) -> PathBuf {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, some_pem()).unwrap();
        p
    }

    #[test]
    fn the_system_bundle_is_found_on_rhel_and_suse_layouts() {
        for path in [
            "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL, Rocky, Alma
            "/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
            "/etc/ssl/ca-bundle.pem",                            // SUSE
        ] {
            let root = tempfile::tempdir().unwrap();
            let planted = plant(root.path(), path);
            assert_eq!(
                system_ca_bundle(root.path()),
                Some(planted.clone()),
                "{path}"
            );
            let mut certs = Vec::new();
            assert!(load_pem_file(&planted, &mut certs).unwrap() > 0, "{path}");
        }
        let root = tempfile::tempdir().unwrap();
        assert_eq!(system_ca_bundle(root.path()), None);
        plant(
            root.path(),
            "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        );
        let debian = plant(root.path(), SYSTEM_CA_BUNDLE);
        assert_eq!(
            system_ca_bundle(root.path()),
            Some(debian),
            "Debian's first"
        );
    }

    /// `SSL_CERT_FILE` is what the caller passes (its environment, read by the caller), and
    /// a bundle there that holds no certificate is refused by name.
    #[test]
    fn ssl_cert_file_is_the_callers_setting() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here").unwrap();
        let settings = HttpSettings::default()
            .with_env(&|k| (k == "SSL_CERT_FILE").then(|| empty.clone().into_os_string()));
        assert_eq!(settings.ssl_cert_file.as_deref(), Some(empty.as_path()));
        let e = UreqClient::new(&settings).unwrap_err();
        assert!(e.to_string().contains("empty.pem"), "{e}");
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let unset = HttpSettings::default().with_env(&|_| Some("".into()));
        assert_eq!(unset.ssl_cert_file, None, "empty is unset");
        UreqClient::new(&unset).unwrap();
    }
}
