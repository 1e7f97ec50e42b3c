//! An identity provider that issues opaque access tokens and no ID token (the test IdP with
//! `IDP_ACCESS_TOKEN_FORMAT=opaque IDP_ID_TOKEN=no`): `login` learns who logged in from userinfo.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use support::*;

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn login_names_the_user_from_userinfo_when_there_is_no_id_token() {
    let idp = idp(&[
        ("IDP_USERS", "carol"),
        ("IDP_ACCESS_TOKEN_FORMAT", "opaque"),
        ("IDP_ID_TOKEN", "no"),
    ]);
    let home = QshHome::new(idp);
    let child = clean_command(env!("CARGO_BIN_EXE_qlam-auth"), idp, home.dir.path())
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .env("QLAM_AUTH_SITE_FILE", NO_SITE_FILE)
        .env("SSH_CONNECTION", OVER_SSH)
        .args(["login", "--context", USER_CONTEXT, "--no-qr"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, out, err) = approve_device_login(idp, child, "2. Enter", "carol");
    assert!(status.success(), "{out} {err}");
    let stored = token_core::store::CredentialStore::new(&home.paths)
        .load(&home.provider(USER_CONTEXT).cache_key())
        .unwrap()
        .unwrap()
        .tokens;
    assert!(stored.id_token.is_none(), "the IdP sent no ID token");
    assert!(
        token_core::jwt::unverified_claims(stored.access_token.expose()).is_none(),
        "the access token is opaque"
    );
    assert!(
        out.contains("Logged in to context 'lab' as carol@example.org"),
        "{out}\n{err}"
    );
}
