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

fn qlam_auth(idp: &Idp, home: &QshHome, args: &[&str]) -> Output {
    clean_command(env!("CARGO_BIN_EXE_qlam-auth"), idp, home.dir.path())
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn token_with_audience_and_scope_prints_a_narrow_exchanged_token() {
    let idp = idp(&[]);
    let _g = exclusive(); // counts token-exchange requests at the IdP
    let home = QshHome::new(idp);
    home.device_login(idp, "alice");
    let own = qlam_auth(idp, &home, &["token"]);
    assert!(own.status.success(), "{}", output_text(&own));
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
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(idp.token_requests("token-exchange") - before, 1);
    let job = String::from_utf8(out.stdout.clone()).unwrap();
    let job = job.trim_end();
    assert_ne!(job, own.trim_end());
    assert_eq!(idp.resource_status(STORAGE, job), "200");
    assert_eq!(
        idp.resource_status(API, job),
        "401",
        "refused for another audience"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audience https://storage.example/data, scope storage.read, lifetime 90 s"),
        "{}",
        output_text(&out)
    );
    assert!(
        !err.contains(job) && !err.contains(own.trim_end()),
        "no token on stderr"
    );
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
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
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(out.stdout.is_empty(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token exchange failed") && err.contains("invalid_scope"),
        "{}",
        output_text(&out)
    );
}

/// Introspection as the resource server `qlam-introspect`: is the token active?
fn active(idp: &Idp, token: &str) -> bool {
    idp.introspect(token)["active"] == true
}

/// Polls `f` every 100 ms until it is true or `within` has passed; true if it became true.
fn within(within: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    f()
}

/// `job-renewer --exchange` (what the plugin starts with plugstack exchange=): keeps a job token
/// in the file by exchanging again near expiry (never the user's own token), and revokes every
/// job token it saw when the job has ended.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn job_renewer_renews_the_job_token_by_exchange_and_revokes_them_at_the_end() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;
    use token_core::exchange::{Exchanged, Meta, write_meta};
    let idp = idp(&[]);
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "bob");
    let first = qlam_auth(
        idp,
        &home,
        &[
            "token",
            "--audience",
            STORAGE,
            "--scope",
            "storage.read",
            "--lifetime",
            "20",
        ],
    );
    assert!(first.status.success(), "{}", output_text(&first));
    let first = String::from_utf8(first.stdout)
        .unwrap()
        .trim_end()
        .to_owned();
    // The job directory as the plugin leaves it: the token file and its record.
    let jobdir = tempfile::Builder::new()
        .prefix("qlam-job-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(jobdir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = jobdir.path().join("token");
    std::fs::write(&file, format!("{first}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let x = Exchanged {
        token: token_core::secret::Secret::new(first.clone()),
        lifetime: Some(Duration::from_secs(20)),
        scope: Some("storage.read".into()),
        audience: Some(STORAGE.into()),
    };
    write_meta(
        jobdir.path(),
        "token",
        &Meta::of(&x, token_core::time::Timestamp::now()),
    )
    .unwrap();

    let mut job = Command::new("sleep").arg("60").spawn().unwrap();
    let mut renewer = Command::new(env!("CARGO_BIN_EXE_qlam-auth"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.dir.path())
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .env("SSL_CERT_FILE", &idp.ca)
        .args([
            "-v",
            "job-renewer",
            "--job",
            "7",
            "--file",
            "token",
            "--dir",
        ])
        .arg(jobdir.path())
        .arg("--home")
        .arg(home.dir.path())
        .args(["--watch-pid", &job.id().to_string()])
        .args([
            "--exchange",
            "--exchange-audience",
            STORAGE,
            "--exchange-scope",
            "storage.read",
        ])
        .args(["--exchange-max-lifetime", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(jobdir.path().join("renewer.log")).unwrap())
        .spawn()
        .unwrap();
    let read = || {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    };
    // Renewal at half of 20 s, once the file's token has less than 9 s left: well within 30 s.
    assert!(
        within(Duration::from_secs(30), || read() != first),
        "the job token was not renewed"
    );
    let second = read();
    assert_eq!(idp.resource_status(STORAGE, &second), "200");
    assert_eq!(
        idp.resource_status(API, &second),
        "401",
        "still a job token, not the user's"
    );
    // The job ends: the renewer stops within a few seconds and revokes what it saw.
    job.kill().unwrap();
    job.wait().unwrap();
    assert!(
        within(Duration::from_secs(15), || renewer
            .try_wait()
            .unwrap()
            .is_some()),
        "the renewer did not stop after the job ended"
    );
    assert!(
        !active(idp, &second),
        "the renewed job token was not revoked"
    );
    assert!(!active(idp, &first));
    let log = std::fs::read_to_string(jobdir.path().join("renewer.log")).unwrap();
    assert!(log.contains("job 7 ended: revoked 2 job token(s)"), "{log}");
    assert!(
        !log.contains(&first) && !log.contains(&second),
        "a token in the renewer's log"
    );
}
