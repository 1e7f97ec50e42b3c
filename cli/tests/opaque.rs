//! An identity provider that issues opaque access tokens and no ID token (the test IdP with
//! `IDP_ACCESS_TOKEN_FORMAT=opaque IDP_ID_TOKEN=no`): `login` learns who logged in from userinfo.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_qlam-auth"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.dir.path())
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .env(
            "QLAM_AUTH_SITE_FILE",
            "/nonexistent/qlam-auth-test/site.json",
        )
        .env("SSL_CERT_FILE", &idp.ca)
        .env("SSH_CONNECTION", "192.0.2.10 50022 192.0.2.20 22")
        .args(["login", "--context", USER_CONTEXT, "--no-qr"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let code = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("2. Enter").map(|(_, c)| c.trim().to_owned()))
        .expect("a user code");
    idp.approve("carol", &code);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{rest:?} {err}");
    let out = rest.join("\n");
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
