//! Issuer URLs: one type, one parser, https only (plain http for a loopback host, in
//! development, when the caller allows it).

use std::fmt;

/// A normalized issuer URL: `https://host[:port][/path]`, no trailing slash, printable ASCII,
/// no user info, query or fragment (or `http://` with a loopback host, when allowed). Parsed
/// once where an issuer enters (config, site file, plugstack `issuers=`), compared as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerUrl(String);

impl IssuerUrl {
    /// Parses an issuer as a config names it: adds `https://` to a bare host, strips trailing
    /// `/`, refuses anything but https (plain http only for a loopback host, and only if
    /// `allow_http_loopback`). The error says what is wrong and what is expected.
    pub fn parse(raw: &str, allow_http_loopback: bool) -> Result<Self, String> {
        let raw = raw.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("https://{raw}")
        };
        let url = with_scheme.trim_end_matches('/').to_owned();
        let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        // Only printable ASCII: whitespace or control characters in an issuer are never
        // legitimate and would be refused later by the HTTP stack with a less helpful message.
        let printable = url.chars().all(|c| c.is_ascii_graphic());
        if !printable || host.is_empty() || rest.contains(['?', '#']) || host.contains('@') {
            return Err(format!(
                "'{raw}' is not an issuer URL (expected https://host[:port][/path])"
            ));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "https" => Ok(IssuerUrl(url)),
            "http" if allow_http_loopback && is_loopback_host(host) => Ok(IssuerUrl(url)),
            "http" => Err(format!(
                "'{raw}' uses plain http; identity providers must be reached over https"
            )),
            _ => Err(format!("'{raw}' is not an https URL")),
        }
    }

    /// Parses an issuer where it must be spelled out in full (an allow-list: plugstack
    /// `issuers=`): `https://` is required, never added; otherwise as [`IssuerUrl::parse`]
    /// without plain http.
    pub fn parse_explicit(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if !raw.starts_with("https://") {
            return Err(format!("'{raw}' is not an https:// URL"));
        }
        Self::parse(raw, false)
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL, as a `String`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for IssuerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IssuerUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for IssuerUrl {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for IssuerUrl {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// [`IssuerUrl::parse`], as a `String` (for callers that keep issuers as text).
pub fn normalize_issuer(raw: &str, allow_http_loopback: bool) -> Result<String, String> {
    IssuerUrl::parse(raw, allow_http_loopback).map(IssuerUrl::into_string)
}

fn is_loopback_host(hostport: &str) -> bool {
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `QLAM_AUTH_ALLOW_HTTP_LOOPBACK=1` in `env` permits `http://127.0.0.1...` issuers
/// (development only). `env` is the environment of the process that decides: the CLI's, or
/// the Slurm daemon's in the plugin (never a job's).
pub fn allow_http_loopback(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("QLAM_AUTH_ALLOW_HTTP_LOOPBACK").is_some_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn explicit_issuers_need_the_scheme() {
        assert_eq!(
            IssuerUrl::parse_explicit("https://a.example/realms/x/").unwrap(),
            *"https://a.example/realms/x"
        );
        for bad in [
            "a.example",
            "http://a.example",
            "https://",
            "https://a b",
            "https:///x",
        ] {
            assert!(IssuerUrl::parse_explicit(bad).is_err(), "{bad}");
        }
        assert!(IssuerUrl::parse("a.example", false).is_ok());
    }
}
