//! The value parsers of the plugin arguments: seconds, yes/no, absolute paths, grant and issuer
//! lists, context names. Each returns the problem text; the caller decides whether it fails
//! closed.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use token_core::config::GrantType;

/// `yes`/`no` (also `true`/`false`, `1`/`0`); anything else is a problem that keeps `current`.
pub(super) fn yes_no(value: &str, current: bool) -> Result<bool, String> {
    match value {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err(format!(
            "expected yes or no; keeping {}",
            if current { "yes" } else { "no" }
        )),
    }
}

pub(super) fn seconds(value: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| format!("'{value}' is not a whole number of seconds"))?;
    let d = Duration::from_secs(n);
    if d < min || d > max {
        return Err(format!(
            "{n} s is out of range ({}..={} s)",
            min.as_secs(),
            max.as_secs()
        ));
    }
    Ok(d)
}

/// Longest accepted qsh context name (`--qlam-auth=CONTEXT`, and a site account's name).
pub const MAX_CONTEXT_LEN: usize = 128;

/// A qsh context name: 1 to [`MAX_CONTEXT_LEN`] characters of `A-Z a-z 0-9 . _ - @ +`, not
/// starting with `.` (it names a file in the job's directory).
pub fn is_context_name(value: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-@+".contains(c);
    !value.is_empty()
        && value.len() <= MAX_CONTEXT_LEN
        && !value.starts_with('.')
        && value.chars().all(ok_char)
}

pub(crate) fn absolute_path(value: &str) -> Result<PathBuf, String> {
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(format!("'{value}' is not an absolute path"));
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("'{value}' contains '..'"));
    }
    Ok(p.to_path_buf())
}

pub(super) fn parse_grants(value: &str) -> Result<Vec<GrantType>, String> {
    let mut list = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let g = GrantType::parse(item).ok_or_else(|| {
            format!(
                "'{item}' is not a grant (known: device_code, authorization_code, \
                 client_credentials, token_exchange)"
            )
        })?;
        if !list.contains(&g) {
            list.push(g);
        }
    }
    if list.is_empty() {
        return Err("empty list".to_owned());
    }
    Ok(list)
}

pub(super) fn parse_issuers(value: &str) -> Result<Vec<String>, String> {
    let mut list = Vec::new();
    for item in value.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        list.push(token_core::config::IssuerUrl::parse_explicit(item)?.into_string());
    }
    if list.is_empty() {
        return Err("empty list".to_owned());
    }
    Ok(list)
}
