//! Site service accounts through the plugin's real backend (token-core) against the real test
//! IdP: the root-only account file, the shared root-only cache, one token request for many jobs,
//! and a secret rotation. Runs as root (as slurmstepd does); skipped otherwise.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use qlam_spank::args::Args;
use qlam_spank::backend::{Backend, Source, TokenCore};
use std::os::unix::fs::PermissionsExt;
use support::*;

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn site_account_token_from_a_root_only_shared_cache() {
    if token_core::fsutil::euid() != 0 {
        eprintln!("skipped: needs root (the plugin reads site accounts as root)");
        return;
    }
    let idp = idp(&[]);
    let _g = exclusive();
    // Not under /tmp: every directory on the way to m2m_cache must be root-owned and not
    // writable by others (the plugin refuses /tmp's 1777).
    let tmp = tempfile::Builder::new()
        .prefix("qlam-site-idp-")
        .tempdir_in("/run")
        .unwrap();
    let file = tmp.path().join("qpu-ci.json");
    // The first secret is stale: a rotation in progress.
    let account = serde_json::json!({"issuer": idp.issuer, "client_id": "qlam-m2m",
        "client_secret": "retired-secret", "client_secret_next": "m2m-secret",
        "audience": "https://slurm.example/api", "allowed_groups": ["root"], "monthly_budget": 10});
    std::fs::write(&file, account.to_string()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cache = tmp.path().join("m2m-cache");
    let (args, problems) = Args::parse(&[
        format!("m2m=qpu-ci:{}", file.display()),
        format!("m2m_cache={}", cache.display()),
        format!("ca_bundle={}", idp.ca.display()),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    let r = args.site_account(Some("qpu-ci")).unwrap();
    let backend = TokenCore;
    let acct = backend.load_site_account(r).unwrap();
    let before = idp.token_requests("client_credentials");
    let first = backend.obtain_site(r, &acct, &args).unwrap();
    assert_eq!(first.source, Source::Renewed);
    assert_eq!(
        idp.token_requests("client_credentials") - before,
        2,
        "stale secret, then the next"
    );
    for _ in 0..10 {
        let again = backend.obtain_site(r, &acct, &args).unwrap();
        assert_eq!(again.source, Source::Cache);
        assert_eq!(again.token, first.token);
    }
    assert_eq!(idp.token_requests("client_credentials") - before, 2);
    let dir = cache.join("qpu-ci");
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let usage = token_core::budget::read_usage(&dir, &idp.issuer, "qlam-m2m")
        .unwrap()
        .unwrap();
    assert_eq!(usage.requests, 2);
    // A group- or world-readable account file is refused.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = backend.load_site_account(r).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
}
