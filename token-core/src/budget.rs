//! The monthly budget of client-credentials token requests.
//!
//! Identity providers meter machine tokens (Auth0: a monthly quota per tenant), so each client
//! counts the token requests it really sends, per calendar month (UTC), in a small JSON file
//! beside its credentials cache:
//!
//! ```json
//! {"version": 1, "issuer": "https://idp", "client_id": "svc", "month": "2026-11", "requests": 12,
//!  "previous": {"month": "2026-10", "requests": 950}, "updated_at": "2026-11-22T10:00:00+00:00"}
//! ```
//!
//! One file per (issuer, client id): `budget_<client>_<hash>.json`, mode 0600, replaced
//! atomically under its own lock (`.lock` beside it), which is taken briefly, twice, while the
//! broker holds the credentials lock: once to check the budget before any request, once to add
//! what was sent. Lock order is always credentials lock, then budget lock, so two contexts that
//! share a client never deadlock.
//!
//! What counts: every POST to the token endpoint that got an HTTP answer (successful or not,
//! retries and the second secret of a rotation included), counted by a wrapper around the HTTP
//! client, which also refuses to send a request beyond the limit. Tokens served from the cache
//! cost nothing and are never refused.

use crate::config::{GrantType, ProviderConfig};
use crate::fsutil::{self, Policy};
use crate::http::{HttpClient, HttpResponse, SharedHttp};
use crate::oauth::OAuthClient;
use crate::settings::BudgetPolicy;
use crate::store::TokenSet;
use crate::time::Timestamp;
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long to wait for the budget lock (held only for a read or a write, never across a
/// network call).
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// One client's use in the current month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// `YYYY-MM`, UTC.
    pub month: String,
    /// Token requests sent this month.
    pub requests: u64,
    /// The previous month with use, if any: (`YYYY-MM`, requests).
    pub previous: Option<(String, u64)>,
}

/// The calendar month (UTC) of `t`: `YYYY-MM`.
pub fn month_of(t: Timestamp) -> String {
    t.to_isoformat()[..7].to_owned()
}

/// The budget file name of a client.
pub fn file_name(issuer: &str, client_id: &str) -> String {
    let prefix: String = client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let hash = crate::digest::sha256(format!("{issuer}\n{client_id}").as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("budget_{prefix}_{hex}.json")
}

/// The budget file, as written and read.
#[derive(Debug, Serialize, Deserialize)]
struct LedgerFile {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    client_id: String,
    month: String,
    requests: u64,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    previous: Option<Previous>,
    #[serde(default)]
    updated_at: String,
}

/// `previous`: the last month with use.
#[derive(Debug, Serialize, Deserialize)]
struct Previous {
    month: String,
    requests: u64,
}

/// `previous` is only shown by `status`: a malformed one is dropped, not an error.
fn lenient<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Previous>, D::Error> {
    Ok(Previous::deserialize(Value::deserialize(d)?).ok())
}

fn parse(path: &Path, bytes: &[u8], month: &str) -> Result<Usage> {
    let f: LedgerFile = crate::json::from_slice(bytes).map_err(|r| {
        let what = if r.syntax {
            "not valid JSON".to_owned()
        } else if r.path.is_empty() {
            r.message
        } else {
            format!("field '{}' {}", r.path, r.message)
        };
        Error::store(path, format!("budget file: {what}"))
    })?;
    let prev = f.previous.map(|p| (p.month, p.requests));
    Ok(if f.month == month {
        Usage {
            month: f.month,
            requests: f.requests,
            previous: prev,
        }
    } else {
        // A new month: start at zero, keep the last month for `status`.
        Usage {
            month: month.to_owned(),
            requests: 0,
            previous: Some((f.month, f.requests)),
        }
    })
}

/// Reads a client's use this month from `dir` (no lock: for display). `Ok(None)` if nothing was
/// ever counted there.
pub fn read_usage(dir: &Path, issuer: &str, client_id: &str) -> Result<Option<Usage>> {
    let Some(fd) = fsutil::open_dir(dir, Policy::PRIVATE)? else {
        return Ok(None);
    };
    let name = file_name(issuer, client_id);
    let Some(bytes) =
        fsutil::read_file_at(fsutil::fd(&fd), dir, &name, Policy::PRIVATE, 64 * 1024)?
    else {
        return Ok(None);
    };
    parse(&dir.join(name), &bytes, &month_of(Timestamp::now())).map(Some)
}

/// The budget file of one client in one directory.
struct Ledger<'a> {
    dir: &'a Path,
    name: String,
    issuer: &'a str,
    client_id: &'a str,
    /// At most [`LOCK_TIMEOUT`], and never past the caller's deadline.
    lock_timeout: Duration,
}

impl Ledger<'_> {
    /// Runs `f` on the current use under the budget lock; writes back what it returns.
    fn update<T>(&self, f: impl FnOnce(&mut Usage) -> T) -> Result<T> {
        let fd = fsutil::create_dir_all_private(self.dir, Policy::PRIVATE)?;
        let _lock = crate::lock::acquire(
            fsutil::fd(&fd),
            self.dir,
            &format!("{}.lock", self.name),
            self.lock_timeout,
            &mut |_| {},
            &mut || false,
        )?
        .ok_or_else(|| Error::store(self.dir, "the budget lock wait ended without the lock"))?;
        let month = month_of(Timestamp::now());
        let mut usage = match fsutil::read_file_at(
            fsutil::fd(&fd),
            self.dir,
            &self.name,
            Policy::PRIVATE,
            64 * 1024,
        )? {
            Some(b) => parse(&self.dir.join(&self.name), &b, &month)?,
            None => Usage {
                month,
                requests: 0,
                previous: None,
            },
        };
        let before = usage.clone();
        let out = f(&mut usage);
        if usage != before {
            let file = LedgerFile {
                version: 1,
                issuer: self.issuer.to_owned(),
                client_id: self.client_id.to_owned(),
                month: usage.month.clone(),
                requests: usage.requests,
                previous: usage
                    .previous
                    .clone()
                    .map(|(month, requests)| Previous { month, requests }),
                updated_at: Timestamp::now().to_isoformat(),
            };
            // Through a Value, whose map sorts the keys as the files written so far have them.
            let v =
                serde_json::to_value(&file).map_err(|e| Error::store(self.dir, e.to_string()))?;
            let mut bytes =
                serde_json::to_vec_pretty(&v).map_err(|e| Error::store(self.dir, e.to_string()))?;
            bytes.push(b'\n');
            fsutil::atomic_write_at(fsutil::fd(&fd), self.dir, &self.name, &bytes, 0o600)?;
        }
        Ok(out)
    }
}

/// Counts token requests (POSTs with a `grant_type`) that got an answer, and refuses to send
/// more than `allowed`.
#[derive(Debug)]
struct Counting {
    inner: SharedHttp,
    sent: Arc<AtomicU64>,
    allowed: Option<u64>,
    client_id: String,
    limit: u64,
}

impl HttpClient for Counting {
    fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
        self.inner.get(url, headers)
    }

    fn get_within(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Option<std::time::Duration>,
    ) -> Result<HttpResponse> {
        self.inner.get_within(url, headers, timeout)
    }

    fn post_form(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        self.post_form_within(url, headers, form, None)
    }

    fn post_form_within(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
        timeout: Option<std::time::Duration>,
    ) -> Result<HttpResponse> {
        if !form.iter().any(|(k, _)| *k == "grant_type") {
            return self.inner.post_form_within(url, headers, form, timeout);
        }
        if let Some(allowed) = self.allowed
            && self.sent.load(Ordering::SeqCst) >= allowed
        {
            return Err(Error::BudgetExhausted {
                client_id: self.client_id.clone(),
                limit: self.limit,
            });
        }
        let res = self.inner.post_form_within(url, headers, form, timeout);
        if res.is_ok() {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
        res
    }
}

/// The machine token of `oauth`'s provider, charged to its budget in `dir` (the credentials
/// directory). Call with the credentials lock held. Grants other than client credentials are
/// not metered.
pub fn machine_token(oauth: OAuthClient, dir: &Path, policy: BudgetPolicy) -> Result<TokenSet> {
    let provider: ProviderConfig = oauth.provider().clone();
    if provider.grant_type != GrantType::ClientCredentials {
        return oauth.machine_token();
    }
    let lock_timeout = oauth
        .remaining(&provider.issuer)?
        .map_or(LOCK_TIMEOUT, |left| left.min(LOCK_TIMEOUT));
    let ledger = Ledger {
        dir,
        name: file_name(&provider.issuer, &provider.client_id),
        issuer: &provider.issuer,
        client_id: &provider.client_id,
        lock_timeout,
    };
    let used = ledger.update(|u| u.requests)?;
    let allowed = policy.limit.map(|l| l.saturating_sub(used));
    if allowed == Some(0) {
        log::warn!(target: "qlam_auth", "client '{}': monthly budget of {} token requests used up; no request sent", provider.client_id, policy.limit.unwrap_or(0));
        return Err(Error::BudgetExhausted {
            client_id: provider.client_id.clone(),
            limit: policy.limit.unwrap_or(0),
        });
    }
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let client_id = provider.client_id.clone();
    let limit = policy.limit.unwrap_or(0);
    let oauth = oauth.map_http(move |inner| {
        Arc::new(Counting {
            inner,
            sent: counter,
            allowed,
            client_id,
            limit,
        })
    });
    let result = oauth.machine_token();
    let sent = sent.load(Ordering::SeqCst);
    if sent > 0 {
        match ledger.update(|u| {
            u.requests += sent;
            u.requests
        }) {
            Ok(total) => warn_if_needed(&provider.client_id, &ledger_month(), total, policy),
            // The token (if any) is good; losing one count is better than losing the token.
            Err(e) => {
                log::error!(target: "qlam_auth", "could not record {sent} token request(s) in the budget file: {e}")
            }
        }
    }
    result
}

fn ledger_month() -> String {
    month_of(Timestamp::now())
}

fn warn_if_needed(client_id: &str, month: &str, total: u64, policy: BudgetPolicy) {
    if let (Some(limit), Some(at)) = (policy.limit, policy.warn_at())
        && total >= at
    {
        log::warn!(
            target: "qlam_auth",
            "client '{client_id}': {total} of {limit} token requests used in {month} ({}%); raise the budget or cache tokens longer",
            total * 100 / limit.max(1)
        );
    }
}

/// The budget file path of a provider in a credentials directory (for `status`).
pub fn usage_path(dir: &Path, provider: &ProviderConfig) -> PathBuf {
    dir.join(file_name(&provider.issuer, &provider.client_id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn months_roll_over() {
        let t = Timestamp::parse("2026-11-30T23:59:59+00:00").unwrap();
        assert_eq!(month_of(t), "2026-11");
        let u = parse(
            Path::new("b"),
            br#"{"month":"2026-10","requests":950}"#,
            "2026-11",
        )
        .unwrap();
        assert_eq!(u.requests, 0);
        assert_eq!(u.previous, Some(("2026-10".into(), 950)));
        let e = parse(Path::new("/b.json"), b"[]", "2026-11")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/b.json"), "{e}");
    }

    #[test]
    fn refusals_name_the_field_never_the_value() {
        let e = parse(
            Path::new("/b.json"),
            br#"{"month": 202611, "requests": 3}"#,
            "2026-11",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'month' must be a string"), "{e}");
        assert!(!e.contains("202611"), "{e}");
        let e = parse(Path::new("/b.json"), br#"{"month": "2026-11"}"#, "2026-11")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'requests' is missing"), "{e}");
        // A malformed `previous` is only dropped.
        let u = parse(
            Path::new("b"),
            br#"{"month": "2026-11", "requests": 3, "previous": {"month": 1}}"#,
            "2026-11",
        )
        .unwrap();
        assert_eq!((u.requests, u.previous), (3, None));
    }

    #[test]
    fn ledger_counts_atomically_and_privately() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("creds");
        let l = Ledger {
            dir: &dir,
            name: file_name("https://idp", "svc"),
            issuer: "https://idp",
            client_id: "svc",
            lock_timeout: LOCK_TIMEOUT,
        };
        assert_eq!(l.update(|u| u.requests).unwrap(), 0);
        assert!(
            read_usage(&dir, "https://idp", "svc").unwrap().is_none(),
            "reading writes nothing"
        );
        l.update(|u| u.requests += 3).unwrap();
        let u = read_usage(&dir, "https://idp", "svc").unwrap().unwrap();
        assert_eq!(u.requests, 3);
        let meta = std::fs::metadata(dir.join(&l.name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
