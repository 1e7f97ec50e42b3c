//! `qlam-auth token --audience/--scope/--lifetime` against the real test IdP: the printed token
//! is an exchanged one (RFC 8693) that only the asked audience accepts, and a refusal names the
//! reason without printing any token.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use std::process::{Command, Output, Stdio};
use support::*;

const API: &str = "https://slurm.example/api";
const STORAGE: &str = "https://storage.example/data";

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn qlam_auth(idp: &Idp, home: &QshHome, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qlam-auth"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.dir.path())
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .env("SSL_CERT_FILE", &idp.ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn resource_status(idp: &Idp, audience: &str, token: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(&idp.ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{}/_test/resource?audience={audience}", idp.issuer))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn token_with_audience_and_scope_prints_a_narrow_exchanged_token() {
    let idp = idp(&[]);
    let _g = exclusive(); // counts token-exchange requests at the IdP
    let home = QshHome::new(idp);
    home.device_login(idp, "alice");
    let own = qlam_auth(idp, &home, &["token"]);
    assert!(own.status.success(), "{}", text(&own));
    let own = String::from_utf8(own.stdout).unwrap();

    let before = idp.token_requests("token-exchange");
    let out = qlam_auth(
        idp,
        &home,
        &[
            "-v",
            "token",
            "--audience",
            STORAGE,
            "--scope",
            "storage.read",
            "--lifetime",
            "90",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(idp.token_requests("token-exchange") - before, 1);
    let job = String::from_utf8(out.stdout.clone()).unwrap();
    let job = job.trim_end();
    assert_ne!(job, own.trim_end());
    assert_eq!(resource_status(idp, STORAGE, job), "200");
    assert_eq!(
        resource_status(idp, API, job),
        "401",
        "refused for another audience"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audience https://storage.example/data, scope storage.read, lifetime 90 s"),
        "{}",
        text(&out)
    );
    assert!(
        !err.contains(job) && !err.contains(own.trim_end()),
        "no token on stderr"
    );
}

#[test]
fn a_refused_exchange_says_why_and_prints_no_token() {
    let idp = idp(&[]);
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "dave");
    let out = qlam_auth(
        idp,
        &home,
        &["token", "--audience", STORAGE, "--scope", "storage.admin"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token exchange failed") && err.contains("invalid_scope"),
        "{}",
        text(&out)
    );
}
