//! The login, the identity provider (discovery, clock skew) and the store's lock.

use super::report::{Check, Level, check};
use crate::commands::http_settings;
use crate::ui;
use std::time::{Duration, Instant};
use token_core::Error;
use token_core::broker::Broker;
use token_core::config::GrantType;
use token_core::http::{HttpClient, UreqClient};
use token_core::time::Timestamp;

/// Clock skew beyond which tokens may be refused as "not yet valid" or expire early.
const MAX_SKEW_SECS: i64 = 30;
/// Discovery slower than this makes logins and job starts slow.
const SLOW_IDP: Duration = Duration::from_secs(2);

pub fn check_login(broker: &Broker, checks: &mut Vec<Check>) {
    let now = Timestamp::now();
    checks.push(match broker.check_login() {
        Ok(l) => {
            let expiry = l
                .access_expires_at
                .map_or("no expiry known".to_owned(), |e| {
                    format!(
                        "access token expires {}",
                        ui::relative(now.seconds_until(e))
                    )
                });
            check(
                Level::Ok,
                "credentials",
                format!(
                    "{}: {}{expiry}, refresh token {}",
                    l.path.display(),
                    l.subject
                        .map(|s| format!("logged in as {s}, "))
                        .unwrap_or_default(),
                    if l.has_refresh_token {
                        "stored"
                    } else {
                        "none"
                    }
                ),
            )
        }
        Err(e @ (Error::NotLoggedIn { .. } | Error::LoginExpired { .. })) => {
            check(Level::Warn, "credentials", e.to_string())
        }
        Err(e) => Check::from_error("credentials", &e),
    });
}

pub fn check_idp(broker: &Broker, checks: &mut Vec<Check>) {
    let p = broker.provider();
    let url = format!("{}/.well-known/openid-configuration", p.issuer);
    let client = match UreqClient::new(&http_settings()) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::from_error("identity provider", &e));
            return;
        }
    };
    let sent = Timestamp::now();
    let start = Instant::now();
    let res = client.get(&url, &[]);
    let took = start.elapsed();
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::from_error("identity provider", &e).fix(
                "check the network (proxy? firewall?) and auth_base_url; `curl -v URL` shows more",
            ));
            return;
        }
    };
    let ms = took.as_millis();
    if res.status != 200 {
        checks.push(
            check(
                Level::Fail,
                "identity provider",
                format!("{url} answered HTTP {} in {ms} ms", res.status),
            )
            .fix("check auth_base_url in the config: OIDC discovery must answer under it"),
        );
        return;
    }
    // The full validation (issuer, https endpoints) is token-core's.
    match broker.oauth().and_then(|o| o.discovery()) {
        Ok(d) => {
            let level = if took > SLOW_IDP {
                Level::Warn
            } else {
                Level::Ok
            };
            let mut missing = Vec::new();
            if p.grant_type == GrantType::DeviceCode && d.device_authorization_endpoint.is_none() {
                missing.push("no device endpoint: use `qlam-auth login --browser`");
            }
            if d.revocation_endpoint.is_none() {
                missing.push("no revocation endpoint: logout only deletes local credentials");
            }
            let extra = if missing.is_empty() {
                String::new()
            } else {
                format!(" ({})", missing.join("; "))
            };
            checks.push(check(
                level,
                "identity provider",
                format!("discovery at {url} answered in {ms} ms{extra}"),
            ));
        }
        Err(e) => checks.push(Check::from_error("identity provider", &e)),
    }
    // Local time at the middle of the request, against the server's Date (1 s resolution).
    let local = sent.unix_seconds() + i64::try_from(took.as_secs() / 2).unwrap_or(0);
    checks.push(match res.date.as_deref().and_then(Timestamp::parse_http_date).map(|t| t.unix_seconds()) {
        Some(server) => {
            let skew = local - server;
            if skew.abs() > MAX_SKEW_SECS {
                check(
                    Level::Warn,
                    "clock",
                    format!(
                        "this machine's clock is {} s {} the identity provider's",
                        skew.abs(),
                        if skew > 0 { "ahead of" } else { "behind" }
                    ),
                )
                .fix("synchronize the clock (ask your admins; `timedatectl` or `chronyc tracking` shows the state)")
            } else {
                check(
                    Level::Ok,
                    "clock",
                    format!("within {} s of the identity provider's", skew.abs().max(1)),
                )
            }
        }
        None => check(
            Level::Info,
            "clock",
            "the identity provider sent no usable Date header; skew not checked",
        ),
    });
}

pub fn check_lock(broker: &Broker, checks: &mut Vec<Check>) {
    let key = broker.provider().cache_key();
    let start = Instant::now();
    checks.push(
        match broker
            .store()
            .lock(&key, Duration::from_secs(5), &mut |_| {})
        {
            Ok(lock) => {
                let path = lock.path().display().to_string();
                drop(lock);
                check(
                    Level::Ok,
                    "locking",
                    format!(
                        "took and released {path} in {} ms",
                        start.elapsed().as_millis()
                    ),
                )
            }
            Err(Error::LockTimeout { path, waited }) => check(
                Level::Warn,
                "locking",
                format!(
                    "another process has held {} for more than {} s",
                    path.display(),
                    waited.as_secs()
                ),
            )
            .fix("wait for it (a refresh takes a second or two); if it persists, look for a hung qlam-auth or job process holding it (`fuser` on the lock file)"),
            Err(e) => Check::from_error("locking", &e),
        },
    );
}
