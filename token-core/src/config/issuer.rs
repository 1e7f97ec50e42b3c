//! Issuer URLs: one normalization, https only (plain http for a loopback host in development).

/// Normalizes an issuer: adds `https://` to a bare host, strips one trailing `/`, refuses
/// anything but https (plain http only for a loopback host, and only if `allow_http_loopback`).
pub fn normalize_issuer(
    raw: &str,
    allow_http_loopback: bool,
) -> std::result::Result<String, String> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("https://{raw}")
    };
    let url = with_scheme.trim_end_matches('/').to_owned();
    let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Only printable ASCII: whitespace or control characters in an issuer are never legitimate
    // and would be refused later by the HTTP stack with a less helpful message.
    let printable = url.chars().all(|c| c.is_ascii_graphic());
    if !printable || host.is_empty() || rest.contains(['?', '#']) || host.contains('@') {
        return Err(format!(
            "'{raw}' is not an issuer URL (expected https://host[:port][/path])"
        ));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(url),
        "http" if allow_http_loopback && is_loopback_host(host) => Ok(url),
        "http" => Err(format!(
            "'{raw}' uses plain http; identity providers must be reached over https"
        )),
        _ => Err(format!("'{raw}' is not an https URL")),
    }
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

/// `QLAM_AUTH_ALLOW_HTTP_LOOPBACK=1` permits `http://127.0.0.1...` issuers (development only).
pub fn allow_http_loopback_from_env() -> bool {
    std::env::var("QLAM_AUTH_ALLOW_HTTP_LOOPBACK").is_ok_and(|v| v == "1")
}
