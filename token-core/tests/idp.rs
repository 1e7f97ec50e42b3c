//! token-core against the real test IdP (oidc-provider over https, refresh-token rotation with
//! reuse detection). Every count is read from the IdP's side.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;
use token_core::Error;
use token_core::broker::{ObtainOptions, Source};

fn opts(min_valid_secs: u64) -> ObtainOptions {
    ObtainOptions {
        min_valid: Duration::from_secs(min_valid_secs),
        lock_timeout: Duration::from_secs(30),
    }
}

/// One user per test: a test that revokes its user's grants must not hit another test.
const USERS: &str =
    "alice:alice-pw,bob:bob-pw,carol:carol-pw,dave:dave-pw,erin:erin-pw,frank:frank-pw";

fn the_idp() -> &'static Idp {
    idp(&[("IDP_ACCESS_TTL", "3600"), ("IDP_USERS", USERS)])
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
fn device_login_writes_a_private_qlam_core_store() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "alice");
    let file = home.credentials_file(USER_CONTEXT);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let v: serde_json::Value = serde_json::from_slice(&file_bytes(&file)).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["plugin"], "oauth");
    assert_eq!(v["context"], USER_CONTEXT);
    assert!(v["extra"]["token_data"]["refresh_token"].is_string());
    let got = home.broker(idp, USER_CONTEXT).obtain(&opts(60)).unwrap();
    assert_eq!(got.source, Source::Cache);
    assert_eq!(got.subject.as_deref(), Some("alice@example.org"));
    assert!(idp.accepts(got.access_token.expose()));
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn refresh_rotates_and_an_old_refresh_token_is_refused_without_damage() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "bob");
    let broker = home.broker(idp, USER_CONTEXT);
    let key = broker.provider().cache_key();
    let before = broker.store().load(&key).unwrap().unwrap().tokens;
    home.expire_access_token(USER_CONTEXT);

    let got = broker.obtain(&opts(60)).unwrap();
    assert_eq!(got.source, Source::Renewed);
    let after = broker.store().load(&key).unwrap().unwrap().tokens;
    assert_ne!(
        after.refresh_token, before.refresh_token,
        "the IdP rotates refresh tokens"
    );
    assert_eq!(after.access_token, got.access_token);
    assert!(idp.accepts(got.access_token.expose()));
    // A second call finds the fresh token: no IdP call.
    assert_eq!(broker.obtain(&opts(60)).unwrap().source, Source::Cache);

    // Replaying the spent refresh token is refused (and the IdP revokes the family).
    let oauth = broker.oauth().unwrap();
    let replay = oauth
        .refresh(before.refresh_token.as_ref().unwrap())
        .unwrap_err();
    assert!(
        matches!(&replay, Error::IdpRefused { code, .. } if *code == token_core::oauth::OAuthErrorCode::InvalidGrant),
        "{replay:?}"
    );

    // Our store: asked for a refresh now, it reports the lost login, and keeps the file as it was.
    let file = home.credentials_file(USER_CONTEXT);
    home.expire_access_token(USER_CONTEXT);
    let kept = file_bytes(&file);
    let err = broker.obtain(&opts(60)).unwrap_err();
    assert!(matches!(err, Error::LoginExpired { .. }), "{err:?}");
    assert!(err.to_string().contains("qlam-auth login"), "{err}");
    assert_eq!(
        file_bytes(&file),
        kept,
        "a failed refresh must not touch the store"
    );
}

/// Child half of `concurrent_processes_refresh_once`: runs only when spawned by it.
#[test]
#[ignore = "spawned as a child process by concurrent_processes_refresh_once"]
fn child_obtain() {
    let Ok(dir) = std::env::var("QLAM_TEST_CHILD_HOME") else {
        return;
    };
    let idp = the_idp_for_child();
    let paths = token_core::paths::QshPaths::resolve(std::path::Path::new(&dir), &|_| None);
    let provider = token_core::config::Config::load(&paths)
        .unwrap()
        .provider_with_env(Some(USER_CONTEXT), &|k| std::env::var(k).ok())
        .unwrap();
    let broker =
        token_core::broker::Broker::new(&paths, provider, &idp, &|k| std::env::var(k).ok())
            .unwrap();
    let go = std::path::PathBuf::from(std::env::var("QLAM_TEST_GO").unwrap());
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let threads_before = threads();
    let result = broker.obtain(&opts(60));
    let threads_after = threads();
    match result {
        Ok(t) => println!(
            "RESULT ok {} {:?} {threads_before} {threads_after}",
            t.access_token.fingerprint(),
            t.source
        ),
        Err(e) => println!("RESULT err {}", e.kind()),
    }
}

/// Threads of this process, from /proc: the plugin must leave none behind in slurmstepd.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn the_idp_for_child() -> token_core::http::HttpSettings {
    token_core::http::HttpSettings {
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
        ca_bundle: Some(std::env::var("QLAM_TEST_CA").unwrap().into()),
        allowed_issuers: None,
        ssl_cert_file: None,
    }
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn twenty_concurrent_processes_cause_one_refresh() {
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    home.device_login(idp, "carol");
    home.expire_access_token(USER_CONTEXT);
    let go = home.dir.path().join("go");
    let before = idp.token_requests("refresh_token");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..20)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "child_obtain",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("QLAM_TEST_CHILD_HOME", home.dir.path())
                .env("QLAM_TEST_CA", &idp.ca)
                .env("QLAM_TEST_GO", &go)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // let them all reach the start line
    std::fs::write(&go, "").unwrap();
    let mut fingerprints = Vec::new();
    let mut sources = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("child printed no result: {text}"));
        let parts: Vec<&str> = std::iter::once("RESULT")
            .chain(line.split_whitespace())
            .collect();
        assert_eq!(parts[1], "ok", "{line}");
        fingerprints.push(parts[2].to_owned());
        sources.push(parts[3].to_owned());
        assert_eq!(
            parts[4], parts[5],
            "a thread outlived the call into token-core: {line}"
        );
    }
    let refreshes = idp.token_requests("refresh_token") - before;
    println!("20 processes: {refreshes} refresh request(s) at the IdP; sources {sources:?}");
    assert_eq!(refreshes, 1, "exactly one refresh reaches the IdP");
    assert!(
        fingerprints.iter().all(|f| f == &fingerprints[0]),
        "all got the same token: {fingerprints:?}"
    );
    assert_eq!(sources.iter().filter(|s| *s == "Renewed").count(), 1);
    let token = home.broker(idp, USER_CONTEXT).obtain(&opts(60)).unwrap();
    assert_eq!(token.access_token.fingerprint(), fingerprints[0]);
    assert!(idp.accepts(token.access_token.expose()));
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn client_credentials_token_is_cached() {
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    let broker = home.broker(idp, M2M_CONTEXT);
    let before = idp.token_requests("client_credentials");
    let first = broker.obtain(&opts(60)).unwrap();
    assert_eq!(first.source, Source::Renewed);
    for _ in 0..5 {
        let again = broker.obtain(&opts(60)).unwrap();
        assert_eq!(again.source, Source::Cache);
        assert_eq!(again.access_token, first.access_token);
    }
    assert_eq!(idp.token_requests("client_credentials") - before, 1);
    let claims = token_core::jwt::unverified_claims(first.access_token.expose()).unwrap();
    assert_eq!(claims["aud"], "https://slurm.example/api");
    assert_eq!(mode(&home.credentials_file(M2M_CONTEXT)), 0o600);
}

/// Stores with hostile or broken contents: a typed error, the file left exactly as it was.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn hostile_store_files_are_refused_and_left_alone() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "dave");
    let file = home.credentials_file(USER_CONTEXT);
    let good = file_bytes(&file);
    let broker = home.broker(idp, USER_CONTEXT);
    let set_mode =
        |m: u32| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m)).unwrap();

    std::fs::write(&file, b"{ not json").unwrap();
    let e = broker.obtain(&opts(60)).unwrap_err();
    assert!(
        matches!(e, Error::Store { .. }) && e.to_string().contains("not valid JSON"),
        "{e}"
    );
    assert_eq!(file_bytes(&file), b"{ not json");

    std::fs::write(&file, &good).unwrap();
    set_mode(0o644);
    let e = broker.obtain(&opts(60)).unwrap_err();
    assert!(
        matches!(e, Error::InsecurePermissions { .. }) && e.to_string().contains("chmod 600"),
        "{e}"
    );
    set_mode(0o600);

    let huge = vec![b' '; 300 * 1024];
    std::fs::write(&file, &huge).unwrap();
    let e = broker.obtain(&opts(60)).unwrap_err();
    assert!(e.to_string().contains("more than the"), "{e}");
    assert_eq!(file_bytes(&file).len(), huge.len());

    // A symlink in place of the file, pointing at a valid store elsewhere: refused, not followed.
    let elsewhere = home.dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, &good).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    let e = broker.obtain(&opts(60)).unwrap_err();
    assert!(
        matches!(e, Error::InsecurePermissions { .. }) && e.to_string().contains("symbolic link"),
        "{e}"
    );
    assert!(
        std::fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::fs::remove_file(&file).unwrap();

    // A file owned by someone else (needs root to set up).
    std::fs::write(&file, &good).unwrap();
    set_mode(0o600);
    if token_core::fsutil::euid() == 0 {
        std::os::unix::fs::chown(&file, Some(1), Some(1)).unwrap();
        let e = broker.obtain(&opts(60)).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 1"), "{e}");
        std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
    }
    // A group-readable credentials directory.
    let dir = file.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let e = broker.obtain(&opts(60)).unwrap_err();
    assert!(e.to_string().contains("chmod 700"), "{e}");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(broker.obtain(&opts(60)).unwrap().source, Source::Cache);
    assert_eq!(file_bytes(&file), good);
}

/// A broken IdP: the refresh fails with a typed error within the time bound; the store is
/// untouched. (Faults are injected into the real server: see tests/idp/README.md.)
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn misbehaving_idp_gives_typed_errors_and_keeps_the_store() {
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    home.device_login(idp, "erin");
    home.expire_access_token(USER_CONTEXT);
    let file = home.credentials_file(USER_CONTEXT);
    let kept = file_bytes(&file);
    let mut settings = idp.http_settings();
    settings.timeout = Duration::from_secs(3);
    let broker = token_core::broker::Broker::new(
        &home.paths,
        home.provider(USER_CONTEXT),
        &settings,
        &|k| std::env::var(k).ok(),
    )
    .unwrap();
    // Make the stored access token truly expired so that no stale fallback applies.
    let store = token_core::store::CredentialStore::new(&home.paths);
    let key = home.provider(USER_CONTEXT).cache_key();
    let mut t = store.load(&key).unwrap().unwrap().tokens;
    t.expires_in = Some(60);
    store.save(&key, USER_CONTEXT, &t).unwrap();
    let kept_expired = file_bytes(&file);
    assert_ne!(kept, kept_expired);

    for (fault, want) in [
        ("html", "idp_unreachable"),
        ("garbage", "idp_bad_response"),
        ("status500", "idp_unreachable"),
        ("hang", "idp_unreachable"),
        ("status429", "idp_unreachable"),
    ] {
        // More faults than the client may retry: it must give up, not hammer the IdP.
        idp.fault(fault, 10);
        let requests_before = idp.token_requests("refresh_token");
        let start = Instant::now();
        let e = broker.obtain(&opts(60)).unwrap_err();
        let took = start.elapsed();
        let requests = idp.token_requests("refresh_token") - requests_before;
        idp.clear_fault();
        assert!(
            (1..=3).contains(&requests),
            "{fault}: {requests} token requests (at most 1 + 2 retries)"
        );
        assert_eq!(e.kind(), want, "{fault}: {e}");
        assert!(
            took < Duration::from_secs(8),
            "{fault}: took {took:?}, beyond the 3 s budget plus retries"
        );
        assert!(
            !e.to_string().contains("<html"),
            "{fault}: the body leaked into the message: {e}"
        );
        assert_eq!(
            file_bytes(&file),
            kept_expired,
            "{fault}: the store changed"
        );
    }
    // The IdP is healthy again: the same login still works.
    assert_eq!(broker.obtain(&opts(60)).unwrap().source, Source::Renewed);
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn revoked_login_is_reported_as_expired() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "frank");
    home.expire_access_token(USER_CONTEXT);
    idp.revoke_user("frank");
    let e = home
        .broker(idp, USER_CONTEXT)
        .obtain(&opts(60))
        .unwrap_err();
    assert!(e.needs_login(), "{e:?}");
    assert!(
        home.credentials_file(USER_CONTEXT).exists(),
        "credentials are never deleted on failure"
    );
}

/// A lock holder that hangs (e.g. stuck on a slow IdP) makes others wait at most lock_timeout and
/// fail with a clear error; when the holder is killed (-9), the kernel frees the lock.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn hung_lock_holder_bounds_the_wait_and_a_killed_holder_frees_the_lock() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "alice");
    home.expire_access_token(USER_CONTEXT);
    let lock = format!("{}.lock", home.credentials_file(USER_CONTEXT).display());
    // One process holds the lock (bash execs into sleep, keeping fd 9 and with it the lock).
    let mut holder = Command::new("bash")
        .args(["-c", "exec 9>>\"$0\"; flock 9; exec sleep 300", &lock])
        .spawn()
        .unwrap();
    let broker = home.broker(idp, USER_CONTEXT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("flock")
        .args(["-n", &lock, "true"])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let bounded = ObtainOptions {
        min_valid: Duration::from_secs(60),
        lock_timeout: Duration::from_millis(1500),
    };
    let start = Instant::now();
    let e = broker.obtain(&bounded).unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(e, Error::LockTimeout { .. }), "{e:?}");
    assert!(
        e.to_string().contains("waiting for the credentials lock"),
        "{e}"
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );

    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    let got = broker.obtain(&bounded).unwrap();
    assert_eq!(got.source, Source::Renewed);
}
