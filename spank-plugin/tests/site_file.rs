//! The site file through the plugin's real backend (token-core) against the real test IdP: a
//! user who never set up is told to run `qlam-auth login`, and a user with no config.json of
//! their own gets the token of the site's context.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use qlam_spank::args::Args;
use qlam_spank::backend::{Backend, Request, TokenCore};
use std::os::unix::fs::PermissionsExt;
use support::*;
use token_core::paths::QshPaths;
use token_core::site::Site;

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn the_site_context_serves_users_without_a_config_of_their_own() {
    if token_core::fsutil::euid() != 0 {
        eprintln!("skipped: needs root (the site file must be root's)");
        return;
    }
    let idp = idp(&[]);
    let _g = shared();
    let site_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(site_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let site_file = site_dir.path().join("site.json");
    let site = serde_json::json!({"default_context": "hpc",
        "contexts": [{"name": "hpc", "issuer": idp.issuer, "client_id": "qlam-cli", "tenant": "t"}],
        "issuers": [idp.issuer]});
    std::fs::write(&site_file, site.to_string()).unwrap();
    std::fs::set_permissions(&site_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (mut args, problems) = Args::parse(&[
        format!("site={}", site_file.display()),
        format!("ca_bundle={}", idp.ca.display()),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    let problems = args.apply_site(Site::load(&args.site_file.clone()));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        args.issuers,
        Some(vec![idp.issuer.clone()]),
        "from the site file"
    );

    let home = tempfile::tempdir().unwrap();
    let env = |_: &str| None;
    let req = Request {
        home: home.path(),
        env: &env,
        context: None,
        args: &args,
    };
    let e = TokenCore.check_login(&req).unwrap_err().to_string();
    assert!(
        e.contains("not logged in") && e.contains("qlam-auth login"),
        "{e}"
    );
    assert!(!e.contains("bad configuration"), "{e}");

    // Logged in (as QLAM Core or another tool could), with no config.json written.
    let paths = QshPaths::resolve(home.path(), &|_| None);
    let provider = token_core::config::Config::load_with_site(&paths, args.site.clone())
        .unwrap()
        .provider_with_env(None, &|_| None)
        .unwrap();
    let broker = token_core::broker::Broker::new(&paths, provider, &idp.http_settings(), &|k| {
        std::env::var(k).ok()
    })
    .unwrap()
    .with_http(idp.http());
    let oauth = broker.oauth().unwrap();
    let auth = oauth.start_device().unwrap();
    idp.approve("alice", &auth.user_code);
    let tokens = oauth
        .poll_device(&auth, &mut token_core::oauth::device::Quiet)
        .unwrap();
    broker.save_login(tokens).unwrap();
    assert!(!paths.config_file.exists());

    TokenCore.check_login(&req).unwrap();
    let got = TokenCore.obtain(&req).unwrap();
    assert!(idp.accepts(got.token.expose()), "a token the IdP accepts");
}
