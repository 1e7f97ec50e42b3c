//! Interop with the real QLAM Core (qlam-core 0.10.0 from PyPI, in a venv the test makes):
//! a login made by either side is used and refreshed by the other.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

mod support;

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

#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
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
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
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
