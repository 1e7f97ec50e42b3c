//! `qlam-auth token` and `status` for machine clients, against the real test IdP: 200
//! concurrent processes, environment mode without any config file, and the monthly budget.
//! Request counts are read at the IdP (`/_test/stats`).

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

const API: &str = "https://slurm.example/api";

fn the_idp() -> &'static Idp {
    idp(&[("IDP_CC_TTL", "3600")])
}

/// `qlam-auth` with a clean environment: HOME, the IdP's CA, and `vars`.
fn qlam_auth(idp: &Idp, home: &Path, vars: &[(&str, &str)]) -> Command {
    let mut c = clean_command(env!("CARGO_BIN_EXE_qlam-auth"), idp, home);
    // No site file unless a test writes one.
    c.env("QLAM_AUTH_SITE_FILE", NO_SITE_FILE)
        .envs(vars.iter().copied());
    c
}

fn cc(idp: &Idp) -> u64 {
    idp.token_requests("client_credentials")
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn two_hundred_concurrent_token_processes_cost_one_token_request() {
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    let config_dir = home.paths.config_dir.to_str().unwrap().to_owned();
    let before = cc(idp);
    let children: Vec<_> = (0..200)
        .map(|_| {
            qlam_auth(idp, home.dir.path(), &[("QSH_CONFIG_DIR", &config_dir)])
                .args(["-v", "token", "--context", M2M_CONTEXT])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut tokens = Vec::new();
    let mut sources = std::collections::BTreeMap::<String, u32>::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        tokens.push(String::from_utf8(out.stdout).unwrap());
        let err = String::from_utf8_lossy(&out.stderr);
        for s in ["Renewed", "RenewedByOther", "Cache", "Stale"] {
            if err.contains(&format!("): {s},")) {
                *sources.entry(s.to_owned()).or_default() += 1;
            }
        }
    }
    let requests = cc(idp) - before;
    println!(
        "200 processes: {requests} client_credentials request(s) at the IdP; sources {sources:?}"
    );
    assert_eq!(requests, 1, "exactly one token request reaches the IdP");
    assert!(tokens.iter().all(|t| t == &tokens[0] && t.len() > 20));
    assert_eq!(sources.get("Renewed"), Some(&1), "{sources:?}");
    // The budget file says the same, and `status` shows it.
    let out = qlam_auth(
        idp,
        home.dir.path(),
        &[
            ("QSH_CONFIG_DIR", &config_dir),
            ("QLAM_TOKEN_BUDGET", "1000"),
        ],
    )
    .args(["status", "--context", M2M_CONTEXT])
    .output()
    .unwrap();
    let month = token_core::budget::month_of(token_core::time::Timestamp::now());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("1 of 1000 token requests used in {month}")),
        "{}",
        output_text(&out)
    );
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn environment_mode_needs_no_config_file_and_shares_a_cache() {
    let idp = the_idp();
    let _g = exclusive();
    let home = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().join("m2m-cache");
    let host = idp.issuer.trim_start_matches("https://").to_owned(); // "a host", not a URL
    let cache_s = cache.to_str().unwrap().to_owned();
    let vars = [
        ("QLAM_CLIENT_ID", "qlam-m2m"),
        ("QLAM_CLIENT_SECRET", "m2m-secret"),
        ("QLAM_AUDIENCE", API),
        ("AUTH_BASE_URL", host.as_str()),
        ("QLAM_TOKEN_CACHE", cache_s.as_str()),
    ];
    let before = cc(idp);
    let first = qlam_auth(idp, home.path(), &vars)
        .arg("token")
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", output_text(&first));
    // Another "pipeline" (another HOME) with the same variables uses the shared cache.
    let other_home = tempfile::tempdir().unwrap();
    let second = qlam_auth(idp, other_home.path(), &vars)
        .arg("token")
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", output_text(&second));
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(cc(idp) - before, 1);
    assert!(
        !home.path().join(".qsh").exists(),
        "nothing written to ~/.qsh"
    );
    let files: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("cache_oauth_env_qlam-m2m-")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.starts_with("budget_qlam-m2m_")),
        "{files:?}"
    );
    let status = qlam_auth(idp, home.path(), &vars)
        .arg("status")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}", output_text(&status));
    assert!(
        s.contains("Context 'env'") && s.contains("token requests used in"),
        "{s}"
    );

    // Without QLAM_TOKEN_CACHE the cache is ~/.qsh/credentials; a missing variable is named.
    let out = qlam_auth(idp, home.path(), &vars[..4])
        .arg("token")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(home.path().join(".qsh/credentials").is_dir());
    let out = qlam_auth(idp, home.path(), &vars[..1])
        .arg("token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AUTH_BASE_URL"),
        "{}",
        output_text(&out)
    );
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn budget_warns_at_the_threshold_and_refuses_beyond_the_limit() {
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    let config_dir = home.paths.config_dir.to_str().unwrap().to_owned();
    let vars = [
        ("QSH_CONFIG_DIR", config_dir.as_str()),
        ("QLAM_TOKEN_BUDGET", "3"),
        ("QLAM_TOKEN_BUDGET_WARN_PERCENT", "60"),
    ];
    // The cached token is made to look expired before each call: every call is a real request.
    // (A --min-valid beyond the token lifetime no longer forces one: it is capped.)
    let token = || {
        if home.credentials_file(M2M_CONTEXT).exists() {
            home.expire_access_token(M2M_CONTEXT);
        }
        qlam_auth(idp, home.dir.path(), &vars)
            .args(["token", "--context", M2M_CONTEXT])
            .output()
            .unwrap()
    };
    let before = cc(idp);
    let month = token_core::budget::month_of(token_core::time::Timestamp::now());
    let one = token();
    assert!(one.status.success(), "{}", output_text(&one));
    assert!(
        !String::from_utf8_lossy(&one.stderr).contains("token requests used"),
        "{}",
        output_text(&one)
    );
    let two = token();
    assert!(two.status.success(), "{}", output_text(&two));
    assert!(
        String::from_utf8_lossy(&two.stderr)
            .contains(&format!("2 of 3 token requests used in {month}")),
        "warning at 60%: {}",
        output_text(&two)
    );
    let three = token();
    assert!(three.status.success(), "{}", output_text(&three));
    // The fresh token of the third call is put back after the refused fourth.
    let fresh = std::fs::read(home.credentials_file(M2M_CONTEXT)).unwrap();
    let four = token();
    std::fs::write(home.credentials_file(M2M_CONTEXT), fresh).unwrap();
    assert_eq!(four.status.code(), Some(10), "{}", output_text(&four));
    assert!(
        String::from_utf8_lossy(&four.stderr).contains("budget of 3"),
        "{}",
        output_text(&four)
    );
    assert_eq!(cc(idp) - before, 3, "the refused call sent nothing");
    // A cached token is still handed out when it is fresh enough.
    let cached = qlam_auth(idp, home.dir.path(), &vars)
        .args(["token", "--context", M2M_CONTEXT])
        .output()
        .unwrap();
    assert!(cached.status.success(), "{}", output_text(&cached));
    assert_eq!(cc(idp) - before, 3);
    let status = qlam_auth(idp, home.dir.path(), &vars)
        .args(["status", "--context", M2M_CONTEXT, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["token_budget"]["used"], 3, "{v}");
    assert_eq!(v["token_budget"]["limit"], 3, "{v}");
    assert!(v["warnings"].to_string().contains("used up"), "{v}");
}
