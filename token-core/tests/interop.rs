//! Interop with the real QLAM Core (qlam-core 0.10.0 from PyPI, in a venv the test makes):
//! a login made by either side is used and refreshed by the other.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;
use token_core::broker::{ObtainOptions, Source};

fn opts() -> ObtainOptions {
    ObtainOptions {
        min_valid: Duration::from_secs(60),
        lock_timeout: Duration::from_secs(30),
    }
}

fn the_idp() -> &'static Idp {
    idp(&[("IDP_USERS", "alice:alice-pw,bob:bob-pw")])
}

/// qlam-core's own device flow, approved headlessly.
fn qlam_core_device_login(idp: &Idp, home: &QshHome, user: &str) {
    let mut child = Command::new(qlam_core_python())
        .arg("-u")
        .arg(repo_root().join("tests/interop/qlam_core_driver.py"))
        .args(["login", USER_CONTEXT, "testidp"])
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .env("SSL_CERT_FILE", &idp.ca)
        .env("REQUESTS_CA_BUNDLE", &idp.ca)
        .env("HOME", home.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let code = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split_once("Enter code:")
                .map(|(_, c)| c.trim().to_owned())
        })
        .expect("qlam-core printed a user code");
    idp.approve(user, &code);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let last = rest
        .iter()
        .rev()
        .find(|l| l.starts_with('{'))
        .cloned()
        .unwrap_or_default();
    assert!(status.success(), "qlam-core login failed: {last}");
}

#[test]
fn a_qlam_core_login_is_used_and_refreshed_by_token_core_and_back() {
    let idp = the_idp();
    let home = QshHome::new(idp);
    qlam_core_device_login(idp, &home, "alice");

    // token-core reads qlam-core's store as it is.
    let broker = home.broker(idp, USER_CONTEXT);
    let first = broker.obtain(&opts()).unwrap();
    assert_eq!(first.source, Source::Cache);
    assert!(idp.accepts(first.access_token.expose()));

    // token-core refreshes it (rotation) and writes it back in qlam-core's format.
    home.expire_access_token(USER_CONTEXT);
    let ours = broker.obtain(&opts()).unwrap();
    assert_eq!(ours.source, Source::Renewed);
    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "testidp");
    assert_eq!(seen["ok"], true, "{seen}");
    assert_eq!(
        seen["fingerprint"],
        ours.access_token.fingerprint().as_str(),
        "{seen}"
    );
    assert_eq!(seen["has_refresh_token"], true);

    // qlam-core can still refresh with the refresh token we stored (it was rotated by us).
    let theirs = qlam_core(idp, &home, "refresh", USER_CONTEXT, "testidp");
    assert_eq!(theirs["ok"], true, "{theirs}");
    assert_eq!(theirs["refreshed"], true, "{theirs}");
    assert_ne!(
        theirs["fingerprint"],
        ours.access_token.fingerprint().as_str()
    );

    // ...and token-core uses what qlam-core wrote.
    let again = broker.obtain(&opts()).unwrap();
    assert_eq!(again.source, Source::Cache);
    assert_eq!(
        theirs["fingerprint"],
        again.access_token.fingerprint().as_str()
    );
    assert!(idp.accepts(again.access_token.expose()));
}

#[test]
fn a_token_core_login_is_read_and_refreshed_by_qlam_core() {
    let idp = the_idp();
    let home = QshHome::new(idp);
    home.device_login(idp, "bob");
    let ours = home.broker(idp, USER_CONTEXT).obtain(&opts()).unwrap();
    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "testidp");
    assert_eq!(
        seen["fingerprint"],
        ours.access_token.fingerprint().as_str(),
        "{seen}"
    );
    let refreshed = qlam_core(idp, &home, "refresh", USER_CONTEXT, "testidp");
    assert_eq!(refreshed["refreshed"], true, "{refreshed}");
    let after = home.broker(idp, USER_CONTEXT).obtain(&opts()).unwrap();
    assert_eq!(
        refreshed["fingerprint"],
        after.access_token.fingerprint().as_str()
    );
}
