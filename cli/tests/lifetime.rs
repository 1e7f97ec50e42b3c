//! Token lifetime against the real test IdP with short-lived access tokens (30 s): single
//! flight whatever the lifetime and `--min-valid`, no replay of a refresh token after a 5xx, and
//! one deadline for a whole call. Request counts are read at the IdP (`/_test/stats`).

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;
use token_core::broker::{ObtainOptions, Source};

/// Access tokens of 30 s: shorter than QLAM Core's 300 s expiry margin and than a minute.
const TTL: u64 = 30;

fn the_idp() -> &'static Idp {
    idp(&[("IDP_ACCESS_TTL", "30")])
}

fn qlam_auth(idp: &Idp, home: &Path, config_dir: &str) -> Command {
    let mut c = clean_command(env!("CARGO_BIN_EXE_qlam-auth"), idp, home);
    c.env("QSH_CONFIG_DIR", config_dir);
    c
}

/// Waits (at most a minute) until the clock is between :35 and :50 of a minute: a token issued
/// then looks expired at birth by QLAM Core's rule (created_at truncated to the minute + 30 s).
fn late_in_a_minute() {
    loop {
        let s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 60;
        if (35..50).contains(&s) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `n` concurrent `qlam-auth token --min-valid MIN` on an expired token: how many refresh
/// requests reached the IdP, and the distinct tokens printed.
fn concurrent_tokens(idp: &Idp, home: &QshHome, n: usize, min_valid: u64) -> (u64, Vec<String>) {
    let config_dir = home.paths.config_dir.to_str().unwrap().to_owned();
    home.expire_access_token(USER_CONTEXT);
    late_in_a_minute();
    let before = idp.token_requests("refresh_token");
    let children: Vec<_> = (0..n)
        .map(|_| {
            qlam_auth(idp, home.dir.path(), &config_dir)
                .args(["token", "--min-valid", &min_valid.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut tokens: Vec<String> = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "qlam-auth token --min-valid {min_valid} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        if !tokens.contains(&t) {
            tokens.push(t);
        }
    }
    (idp.token_requests("refresh_token") - before, tokens)
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn thirty_processes_with_thirty_second_tokens_cost_one_refresh_at_any_min_valid() {
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    home.device_login(idp, "carol");
    for min_valid in [0, 600] {
        let (refreshes, tokens) = concurrent_tokens(idp, &home, 30, min_valid);
        println!(
            "--min-valid {min_valid}: {refreshes} refresh(es), {} token(s)",
            tokens.len()
        );
        assert_eq!(
            refreshes, 1,
            "30 processes with --min-valid {min_valid} and {TTL} s tokens: one refresh"
        );
        assert_eq!(tokens.len(), 1, "all 30 printed the same token");
        assert!(idp.accepts(&tokens[0]), "the token works at userinfo");
    }
    // The cap is said where users look: `status`, not as a warning on every call.
    let config_dir = home.paths.config_dir.to_str().unwrap().to_owned();
    let out = qlam_auth(idp, home.dir.path(), &config_dir)
        .args(["token", "--min-valid", "600"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "no warning on every call: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = qlam_auth(idp, home.dir.path(), &config_dir)
        .args(["status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("token lifetime:") && text.contains("capped at 15 s"),
        "status says what the IdP issues and what that caps: {text}"
    );
    let json = qlam_auth(idp, home.dir.path(), &config_dir)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["access_token_lifetime_seconds"], TTL, "{v}");
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn a_5xx_answer_to_a_refresh_is_not_followed_by_a_second_post_of_the_same_refresh_token() {
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    home.device_login(idp, "dave");
    home.expire_access_token(USER_CONTEXT);
    let before = idp.token_requests("refresh_token");
    idp.fault("status500", 3);
    let broker = home.broker(idp, USER_CONTEXT);
    let e = broker.obtain(&ObtainOptions::default()).unwrap_err();
    idp.clear_fault();
    assert_eq!(e.kind(), "idp_unreachable", "{e}");
    assert_eq!(
        idp.token_requests("refresh_token") - before,
        1,
        "the refresh token went to the IdP once: a second POST of a possibly spent refresh \
         token would revoke the login"
    );
    // The login is intact: the next call refreshes with the same, unspent refresh token.
    let got = broker.obtain(&ObtainOptions::default()).unwrap();
    assert_eq!(got.source, Source::Renewed);
    assert!(idp.accepts(got.access_token.expose()));
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn one_deadline_bounds_lock_wait_and_a_hanging_idp_together() {
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    home.device_login(idp, "alice");
    home.expire_access_token(USER_CONTEXT);
    let lock = format!("{}.lock", home.credentials_file(USER_CONTEXT).display());
    // Another process holds the lock for 1.5 s, then the IdP never answers the token request.
    let mut holder = Command::new("bash")
        .args([
            "-c",
            "exec 9>>\"$0\"; flock 9; touch \"$0.held\"; sleep 1.5",
            &lock,
        ])
        .spawn()
        .unwrap();
    let held = Path::new(&format!("{lock}.held")).to_owned();
    let wait_start = Instant::now();
    while !held.exists() {
        assert!(
            wait_start.elapsed() < Duration::from_secs(10),
            "the holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    idp.fault("hang", 1);
    // The HTTP client alone would wait 10 s for the answer (Idp::http_settings).
    let timeout = Duration::from_secs(3);
    let broker = home
        .broker(idp, USER_CONTEXT)
        .with_deadline(Instant::now() + timeout);
    let start = Instant::now();
    let r = broker.obtain(&ObtainOptions {
        min_valid: Duration::from_secs(10),
        lock_timeout: Duration::from_secs(2),
    });
    let took = start.elapsed();
    idp.clear_fault();
    holder.wait().unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.kind(), "idp_unreachable", "{e}");
    let slack = Duration::from_millis(1000);
    println!("lock held 1.5 s + hanging IdP, timeout 3 s: returned after {took:?}");
    assert!(
        took < timeout + slack,
        "the whole call ends within its deadline ({timeout:?}) plus {slack:?}: took {took:?}"
    );
}
