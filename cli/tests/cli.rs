//! The `qlam-auth` binary end to end, as a user runs it: against the real test IdP
//! (tests/idp, oidc-provider over https), with headless device approval and browser logins, and
//! with the real qlam-core 0.10.0 reading and refreshing the same store.
//!
//! Every command runs with a private HOME/QSH_CONFIG_DIR, the IdP's CA in SSL_CERT_FILE, no
//! DISPLAY and SSH_CONNECTION set (as on a login node reached over ssh).

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::*;
use token_core::Error;
use token_core::secret::fingerprint;

/// One IdP user per test, so that revoking one user's grants can't hit another test.
const USERS: &str =
    "alice,bob,carol,dave,erin,frank,grace,heidi,ivan,judy,mallory,niaj,olivia,peggy,trent";

/// The longest any single `qlam-auth` run may take here (a device login polls every second).
const TIMEOUT: Duration = Duration::from_secs(90);

fn the_idp() -> &'static Idp {
    idp(&[("IDP_USERS", USERS), ("IDP_ACCESS_TTL", "3600")])
}

/// `qlam-auth` for `home` (its `.qsh` is the config directory), with a clean environment.
fn qlam_auth(idp: &Idp, home: &QshHome) -> Command {
    let mut c = clean_command(env!("CARGO_BIN_EXE_qlam-auth"), idp, home.dir.path());
    // No site file unless a test writes one.
    c.env("QLAM_AUTH_SITE_FILE", NO_SITE_FILE)
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .env("SSH_CONNECTION", OVER_SSH)
        .env("LANG", "C.UTF-8");
    c
}

/// What a finished run left.
#[derive(Debug)]
struct Out {
    /// The exit code; `None` if a signal ended the process.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn expect(&self, code: i32, what: &str) -> &Self {
        assert_eq!(self.code, Some(code), "{what}: {self}");
        self
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A running `qlam-auth` whose stdout is read line by line as it streams.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        }));
        Running {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads stdout until `pick` finds what it wants in a line.
    fn wait_for<T>(&mut self, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let got = pick(&line);
                    self.seen.push(line);
                    if let Some(v) = got {
                        return v;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let out = self.finish();
                    panic!("qlam-auth never printed {what} ({e:?}):\n{out}");
                }
            }
        }
    }

    /// Waits (at most [`TIMEOUT`]) for the process to end and collects its output.
    fn finish(&mut self) -> Out {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "qlam-auth did not finish within {TIMEOUT:?}; stdout so far:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let mut stdout = self.seen.join("\n");
        if !self.seen.is_empty() {
            stdout.push('\n');
        }
        Out {
            code: status.code(),
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A no-op once the child was waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `qlam-auth ARGS` to the end.
fn run(idp: &Idp, home: &QshHome, args: &[&str]) -> Out {
    Running::start(qlam_auth(idp, home).args(args)).finish()
}

/// `qlam-auth config init --context lab --issuer <the test IdP> --client-id qlam-cli EXTRA...`.
fn config_init(idp: &Idp, home: &QshHome, extra: &[&str]) -> Out {
    let mut args = vec![
        "config",
        "init",
        "--context",
        USER_CONTEXT,
        "--issuer",
        &idp.issuer,
        "--client-id",
        "qlam-cli",
    ];
    args.extend_from_slice(extra);
    run(idp, home, &args)
}

/// The user code from the device instructions (`  2. Enter  ABCD-EFGH`).
fn user_code(line: &str) -> Option<String> {
    user_code_after(line, "2. Enter")
}

/// Starts `qlam-auth login --context lab --device --no-qr` and returns it with the user code.
fn start_device_login(idp: &Idp, home: &QshHome) -> (Running, String) {
    let mut p = Running::start(qlam_auth(idp, home).args([
        "login",
        "--context",
        USER_CONTEXT,
        "--device",
        "--no-qr",
    ]));
    let code = p.wait_for("a user code", user_code);
    (p, code)
}

/// Logs `user` in with `qlam-auth login --device`, approving headlessly.
fn cli_device_login(idp: &Idp, home: &QshHome, user: &str) -> Out {
    let (mut p, code) = start_device_login(idp, home);
    idp.approve(user, &code);
    p.finish()
}

/// `qlam-auth token --context lab`: the token, after checking that it is the only output line.
fn cli_token(idp: &Idp, home: &QshHome) -> String {
    cli_token_with(idp, home, &[]).0
}

/// `qlam-auth token --context lab EXTRA...`: the token (the only line on stdout), and stderr.
fn cli_token_with(idp: &Idp, home: &QshHome, extra: &[&str]) -> (String, String) {
    let mut args = vec!["token", "--context", USER_CONTEXT];
    args.extend_from_slice(extra);
    let out = run(idp, home, &args);
    out.expect(0, "qlam-auth token");
    let token = out
        .stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no final newline: {out}"));
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "stdout must be exactly one line holding the token: {out}"
    );
    (token.to_owned(), out.stderr)
}

/// `qlam-auth status --context lab --json`.
fn cli_status(idp: &Idp, home: &QshHome) -> (Option<i32>, Value) {
    let out = run(idp, home, &["status", "--context", USER_CONTEXT, "--json"]);
    let v = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    (out.code, v)
}

/// The stored access and refresh tokens of context `lab`.
fn stored_tokens(home: &QshHome) -> token_core::store::TokenSet {
    let store = token_core::store::CredentialStore::new(&home.paths);
    store
        .load(&home.provider(USER_CONTEXT).cache_key())
        .unwrap()
        .expect("a stored login")
        .tokens
}

/// Makes the stored access token of context `lab` expire in `secs` seconds.
fn set_access_token_left(home: &QshHome, secs: i64) {
    home.set_access_token_left(USER_CONTEXT, secs);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The names in a directory (none if it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// Makes the next `count` requests to the IdP's `endpoint` fail as `mode` (tests/idp/README.md).
/// Only under [`exclusive`]; `Idp::clear_fault` ends it.
fn fault_on(idp: &Idp, endpoint: &str, mode: &str, count: u32) {
    let body = json!({"mode": mode, "count": count, "endpoint": endpoint}).to_string();
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "10", "--cacert"])
        .arg(&idp.ca)
        .args(["-H", "content-type: application/json", "-d", &body])
        .arg(format!("{}/_test/fault", idp.issuer))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fault: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Runs `node tests/idp/SCRIPT --ca CA ARGS` (approve.mjs, authorize.mjs): exit code, output.
fn node(script: &str, idp: &Idp, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("node")
        .arg(repo_root().join("tests/idp").join(script))
        .arg("--ca")
        .arg(&idp.ca)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Starts `qlam-auth login --context lab --browser` and returns it with the URL it prints.
fn start_browser_login(idp: &Idp, home: &QshHome) -> (Running, String) {
    let mut p = Running::start(qlam_auth(idp, home).args([
        "login",
        "--context",
        USER_CONTEXT,
        "--browser",
    ]));
    let prefix = format!("{}/", idp.issuer);
    let url = p.wait_for("an authorization URL", |l| {
        let l = l.trim();
        l.starts_with(&prefix).then(|| l.to_owned())
    });
    (p, url)
}

fn email(user: &str) -> String {
    format!("{user}@example.org")
}

// ---------------------------------------------------------------------------------------------

/// Case 1: `config init` writes a config the real qlam-core loads and uses, and an update keeps
/// everything it does not manage.
#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
fn config_init_is_read_by_qlam_core_and_keeps_unknown_fields() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    // Start from nothing: no ~/.qsh at all.
    std::fs::remove_dir_all(&home.paths.config_dir).unwrap();

    let out = config_init(idp, &home, &["--tenant", "test"]);
    out.expect(0, "config init");
    assert!(out.stdout.contains("Added context 'lab'"), "{out}");
    assert!(
        out.stdout.contains("Next: qlam-auth login --context lab"),
        "{out}"
    );
    let file = &home.paths.config_file;
    assert_eq!(mode(file), 0o600);
    assert_eq!(mode(&home.paths.config_dir), 0o700);

    // qlam-core loads it: a structured "not logged in yet", not a config error.
    let fresh = qlam_core(idp, &home, "read", USER_CONTEXT, "qlam");
    assert_eq!(fresh["ok"], false, "{fresh}");
    assert!(fresh.get("error").is_none(), "qlam-core: {fresh}");

    // A login with qlam-auth on that config is the login qlam-core sees.
    cli_device_login(idp, &home, "alice").expect(0, "login");
    let token = cli_token(idp, &home);
    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "qlam");
    assert_eq!(seen["ok"], true, "{seen}");
    assert_eq!(seen["fingerprint"], fingerprint(&token).as_str(), "{seen}");

    // Fields, providers and contexts that qlam-auth does not manage survive an update. (QLAM
    // Core refuses unknown keys in contexts and providers, so these are fields of its schema
    // that qlam-auth does not know; at the top level it accepts anything.)
    let mut cfg: Value = serde_json::from_slice(&file_bytes(file)).unwrap();
    cfg["x_site"] = json!({"motd": "kept", "n": [1, 2, 3]});
    let ctx = &mut cfg["contexts"][0];
    ctx["defaults"]["api_base_url"] = json!("https://api.example.org/");
    ctx["defaults"]["http_client"] = json!({"request_timeout_seconds": 42.0});
    ctx["plugins"] = json!({"tasks": {"qpu_mode": "emulator", "site_specific": 7}});
    ctx["auth_providers"][0]["chain_end"] = json!(true);
    ctx["auth_providers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"provider": "basic", "name": "legacy",
                     "username": "u", "password": "env:LEGACY_PW"}));
    cfg["contexts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "other", "qpu": "sim", "defaults": {}, "auth_providers": []}));
    std::fs::write(file, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "qlam");
    assert_eq!(
        seen["ok"], true,
        "qlam-core takes the hand-edited file: {seen}"
    );

    let out = config_init(
        idp,
        &home,
        &["--scope", "openid email profile offline_access"],
    );
    out.expect(0, "config init (update)");
    assert!(out.stdout.contains("Updated context 'lab'"), "{out}");
    let after: Value = serde_json::from_slice(&file_bytes(file)).unwrap();
    // Exactly one field changed.
    let mut want = cfg.clone();
    want["contexts"][0]["auth_providers"][0]["scope"] =
        json!("openid email profile offline_access");
    assert_eq!(after, want);
    assert_eq!(after["current_context"], USER_CONTEXT);
    assert_eq!(mode(file), 0o600);

    // Both still use the same login (the credentials file name did not change).
    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "qlam");
    assert_eq!(seen["fingerprint"], fingerprint(&token).as_str(), "{seen}");
    assert_eq!(cli_token(idp, &home), token);
}

/// Case 2: A device login: the code streams out, the login is stored privately, `status` and
/// qlam-core agree on who is logged in and with which token.
#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
fn device_login_is_stored_and_seen_by_status_and_qlam_core() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    let (mut p, code) = start_device_login(idp, &home);
    assert!(
        p.seen
            .iter()
            .any(|l| l.contains(&format!("1. Open   {}", idp.issuer))),
        "the verification URL is shown: {:?}",
        p.seen
    );
    idp.approve("bob", &code);
    let out = p.finish();
    out.expect(0, "login");
    assert!(
        out.stdout
            .contains("Logged in to context 'lab' as bob@example.org."),
        "{out}"
    );

    let file = home.credentials_file(USER_CONTEXT);
    assert!(file.is_file(), "{}", file.display());
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let stored = stored_tokens(&home);
    assert!(stored.refresh_token.is_some());
    for secret in [Some(&stored.access_token), stored.refresh_token.as_ref()] {
        let s = secret.unwrap().expose();
        assert!(
            !out.stdout.contains(s) && !out.stderr.contains(s),
            "login printed a token"
        );
    }

    let (code, st) = cli_status(idp, &home);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["logged_in"], true, "{st}");
    assert_eq!(st["subject"], email("bob"), "{st}");
    assert_eq!(st["refresh_token"], true, "{st}");
    assert_eq!(st["credentials_path"], file.display().to_string());
    assert!(
        st["access_token_expires_in_seconds"].as_i64().unwrap() > 3000,
        "{st}"
    );

    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "testidp");
    assert_eq!(seen["ok"], true, "{seen}");
    assert_eq!(
        seen["fingerprint"],
        stored.access_token.fingerprint().as_str(),
        "{seen}"
    );
    assert_eq!(seen["has_refresh_token"], true, "{seen}");
    // ...and it is the token that `qlam-auth token` prints.
    assert_eq!(
        seen["fingerprint"],
        fingerprint(&cli_token(idp, &home)).as_str()
    );
}

/// Case 3: A browser login (authorization code + PKCE to the loopback listener).
#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
fn browser_login_through_the_loopback_listener() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    let (mut p, url) = start_browser_login(idp, &home);
    let port = url
        .split_once("redirect_uri=http%3A%2F%2F127.0.0.1%3A")
        .and_then(|(_, rest)| rest.split_once("%2F"))
        .map(|(port, _)| port.to_owned())
        .unwrap_or_else(|| panic!("the redirect goes to a loopback port: {url}"));
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    // No display, over ssh: it says which port to forward.
    p.wait_for("the ssh port-forwarding hint", |l| {
        l.contains(&format!("ssh -L {port}:127.0.0.1:{port}"))
            .then_some(())
    });
    let (code, said) = node(
        "authorize.mjs",
        idp,
        &["--user", "carol", "--password", "carol-pw", "--url", &url],
    );
    assert_eq!(code, Some(0), "authorize.mjs: {said}");
    let out = p.finish();
    out.expect(0, "login --browser");
    assert!(
        out.stdout
            .contains("Logged in to context 'lab' as carol@example.org."),
        "{out}"
    );
    let file = home.credentials_file(USER_CONTEXT);
    assert_eq!(mode(&file), 0o600);
    let stored = stored_tokens(&home);
    assert!(stored.refresh_token.is_some(), "offline_access was granted");
    let (code, st) = cli_status(idp, &home);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["subject"], email("carol"), "{st}");
    let token = cli_token(idp, &home);
    assert!(idp.accepts(&token));
    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "testidp");
    assert_eq!(seen["fingerprint"], fingerprint(&token).as_str(), "{seen}");
}

/// Security review item 4: any local user can reach the loopback listener. A callback without
/// this login's `state` (even with `error=`) is answered and ignored, a connection that sends
/// nothing does not hold up the others, and the authorization URL (with `state` and the PKCE
/// challenge) is never on a command line: xdg-open gets a private page that forwards to it.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn browser_login_acts_only_on_its_own_state_and_keeps_the_url_off_command_lines() {
    use std::io::Write;
    use std::net::TcpStream;
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    let rec = tempfile::tempdir().unwrap();
    let (bin, run) = (rec.path().join("bin"), rec.path().join("run"));
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(&run).unwrap();
    chmod(&run, 0o700);
    // A stand-in for the desktop's launcher: records what it was given (the browser itself is
    // played by authorize.mjs below).
    let xdg_open = bin.join("xdg-open");
    std::fs::write(
        &xdg_open,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$REC/argv\"\nstat -c %a \"$1\" > \"$REC/mode\"\ncat \"$1\" > \"$REC/page\"\n",
    )
    .unwrap();
    chmod(&xdg_open, 0o755);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut p = Running::start(
        qlam_auth(idp, &home)
            .args(["login", "--context", USER_CONTEXT, "--browser"])
            .env("PATH", path)
            .env_remove("SSH_CONNECTION")
            .env("DISPLAY", ":99")
            .env("XDG_RUNTIME_DIR", &run)
            .env("REC", rec.path()),
    );
    let prefix = format!("{}/", idp.issuer);
    let url = p.wait_for("an authorization URL", |l| {
        let l = l.trim();
        l.starts_with(&prefix).then(|| l.to_owned())
    });
    let port: u16 = url
        .split_once("redirect_uri=http%3A%2F%2F127.0.0.1%3A")
        .and_then(|(_, rest)| rest.split_once("%2F"))
        .and_then(|(port, _)| port.parse().ok())
        .unwrap_or_else(|| panic!("the redirect goes to a loopback port: {url}"));

    // Another local user: one connection that sends nothing, then forged callbacks.
    let _stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for forged in [
        "/callback?error=access_denied&state=forged",
        "/callback?error=access_denied",
        "/callback?code=forged-code&state=",
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A bound, not a sleep: the answer must come while the stalled connection is open.
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(c, "GET {forged} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        let got = c.read_to_string(&mut answer);
        assert!(got.is_ok(), "{forged}: no answer within 2 s: {got:?}");
        assert!(answer.contains("does not match"), "{forged}: {answer}");
    }

    let (code, said) = node(
        "authorize.mjs",
        idp,
        &["--user", "trent", "--password", "trent-pw", "--url", &url],
    );
    assert_eq!(code, Some(0), "authorize.mjs: {said}");
    let out = p.finish();
    out.expect(0, "login --browser, after the forged callbacks");
    assert!(
        out.stdout
            .contains("Logged in to context 'lab' as trent@example.org."),
        "{out}"
    );

    let argv = std::fs::read_to_string(rec.path().join("argv"))
        .unwrap_or_else(|e| panic!("xdg-open was not run ({e}): {out}"));
    assert!(
        !argv.contains("state=") && !argv.contains("code_challenge"),
        "the URL is on xdg-open's command line: {argv}"
    );
    let page_path = Path::new(argv.trim());
    assert!(page_path.starts_with(&run), "{argv}");
    let page_mode = std::fs::read_to_string(rec.path().join("mode")).unwrap();
    assert_eq!(page_mode.trim(), "600");
    let page = std::fs::read_to_string(rec.path().join("page")).unwrap();
    assert!(page.contains(&url.replace('&', "&amp;")), "{page}");
    assert!(
        !page_path.exists(),
        "the page is removed when the login ends"
    );
}

/// Case 4: `token` prints the token and nothing else; an expired token is refreshed exactly once,
/// and qlam-core reads and refreshes what was written.
#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
fn token_prints_one_line_and_refreshes_once_for_qlam_core_too() {
    let idp = the_idp();
    let home = QshHome::new(idp);
    let first = {
        let _g = shared();
        home.device_login(idp, "dave");
        let first = cli_token(idp, &home);
        assert!(idp.accepts(&first), "the IdP accepts the printed token");
        assert_eq!(first, stored_tokens(&home).access_token.expose());
        first
    };

    home.expire_access_token(USER_CONTEXT);
    let renewed = {
        let _g = exclusive();
        let before = idp.token_requests("refresh_token");
        // Even at the most verbose, no token reaches the terminal.
        let (renewed, log) = cli_token_with(idp, &home, &["-vvv"]);
        let again = cli_token(idp, &home);
        let refreshes = idp.token_requests("refresh_token") - before;
        assert_eq!(refreshes, 1, "one refresh for an expired token, none after");
        assert_eq!(again, renewed, "the renewed token is reused");
        let stored = stored_tokens(&home);
        assert!(
            log.contains(&fingerprint(&renewed)),
            "-vvv names the token by its fingerprint: {log}"
        );
        for secret in [
            Some(&stored.access_token),
            stored.refresh_token.as_ref(),
            stored.id_token.as_ref(),
        ] {
            assert!(
                !log.contains(secret.unwrap().expose()),
                "a token in the log: {log}"
            );
        }
        renewed
    };
    let _g = shared();
    assert_ne!(renewed, first);
    assert!(idp.accepts(&renewed));

    // qlam-core reads what qlam-auth wrote, and can refresh with the rotated refresh token.
    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "testidp");
    assert_eq!(
        seen["fingerprint"],
        fingerprint(&renewed).as_str(),
        "{seen}"
    );
    let theirs = qlam_core(idp, &home, "refresh", USER_CONTEXT, "testidp");
    assert_eq!(theirs["ok"], true, "{theirs}");
    assert_eq!(theirs["refreshed"], true, "{theirs}");
    assert_ne!(theirs["fingerprint"], fingerprint(&renewed).as_str());
    // ...and qlam-auth then uses qlam-core's token.
    let after = cli_token(idp, &home);
    assert_eq!(theirs["fingerprint"], fingerprint(&after).as_str());
    assert!(idp.accepts(&after));
}

/// Case 5: A login made by qlam-core's own device flow is used by `qlam-auth token`.
#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
fn a_qlam_core_login_is_used_by_token() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    qlam_core_device_login(idp, &home, "erin");
    let seen = qlam_core(idp, &home, "read", USER_CONTEXT, "testidp");
    assert_eq!(seen["ok"], true, "{seen}");
    let token = cli_token(idp, &home);
    assert_eq!(seen["fingerprint"], fingerprint(&token).as_str(), "{seen}");
    assert!(idp.accepts(&token));
    let (code, st) = cli_status(idp, &home);
    assert_eq!(code, Some(0), "{st}");
    // qlam-core's device flow stores no ID token: the subject is the access token's `sub`.
    assert_eq!(st["subject"], "erin", "{st}");
}

/// Ctrl-C: SIGINT to the process.
fn interrupt(p: &Running) {
    let kill = Command::new("kill")
        .args(["-INT", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// SIGINT to a running `qlam-auth login --device` once it shows the code; its result.
fn interrupted_login(idp: &Idp, home: &QshHome) -> Out {
    let (mut p, _code) = start_device_login(idp, home);
    interrupt(&p);
    p.finish()
}

/// Case 6: Ctrl-C while waiting for the device approval: exit 130, nothing stored, and an earlier
/// login left exactly as it was.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn ctrl_c_during_the_device_wait_stores_nothing() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    let out = interrupted_login(idp, &home);
    out.expect(130, "Ctrl-C");
    assert!(out.stderr.contains("interrupted"), "{out}");
    let left = names_in(&home.paths.credentials_dir);
    assert!(
        left.iter().all(|n| n.ends_with(".lock")),
        "no credentials after Ctrl-C: {left:?}"
    );
    run(idp, &home, &["token", "--context", USER_CONTEXT]).expect(3, "still not logged in");

    // With an earlier login: it is left byte for byte, and still works.
    home.device_login(idp, "frank");
    let file = home.credentials_file(USER_CONTEXT);
    let before = file_bytes(&file);
    let names_before = names_in(&home.paths.credentials_dir);
    interrupted_login(idp, &home).expect(130, "Ctrl-C with a stored login");
    assert_eq!(file_bytes(&file), before, "the earlier login is untouched");
    assert_eq!(mode(&file), 0o600);
    let mut names_after = names_in(&home.paths.credentials_dir);
    let mut names_before = names_before;
    names_after.sort();
    names_before.sort();
    assert_eq!(names_after, names_before, "no stray files");

    // The same while waiting for the browser.
    let (mut p, _url) = start_browser_login(idp, &home);
    interrupt(&p);
    let out = p.finish();
    out.expect(130, "Ctrl-C during the browser wait");
    assert_eq!(file_bytes(&file), before, "the earlier login is untouched");
    assert!(idp.accepts(&cli_token(idp, &home)));
}

/// Case 7: The documented exit codes, each with a message that says what to do.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn exit_codes_say_what_is_wrong() {
    let idp = the_idp();
    let _g = shared();

    // 3: not logged in.
    let home = QshHome::new(idp);
    let out = run(idp, &home, &["token", "--context", USER_CONTEXT]);
    out.expect(3, "not logged in");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("qlam-auth login"), "{out}");
    let (code, st) = cli_status(idp, &home);
    assert_eq!(code, Some(3), "{st}");
    assert_eq!(st["logged_in"], false);

    // 1: the login was denied at the IdP; nothing is stored.
    let (mut p, code) = start_device_login(idp, &home);
    let (rc, said) = node(
        "approve.mjs",
        idp,
        &[
            "--issuer",
            &idp.issuer,
            "--user-code",
            &code,
            "--user",
            "peggy",
            "--password",
            "peggy-pw",
            "--deny",
        ],
    );
    assert_eq!(rc, Some(0), "approve.mjs --deny: {said}");
    let out = p.finish();
    out.expect(1, "denied login");
    assert!(out.stderr.contains("denied"), "{out}");
    assert!(!home.credentials_file(USER_CONTEXT).exists());

    // 7: a machine context needs no login, and says what to do instead.
    let out = run(idp, &home, &["login", "--context", M2M_CONTEXT]);
    out.expect(7, "login on a client_credentials context");
    assert!(
        out.stderr.contains("qlam-auth token --context pipeline"),
        "{out}"
    );

    // 6: the IdP refuses the client (a wrong client secret in a machine context).
    let mut cfg: Value = serde_json::from_slice(&file_bytes(&home.paths.config_file)).unwrap();
    cfg["contexts"][1]["auth_providers"][0]["client_secret"] = json!("not-the-secret");
    std::fs::write(&home.paths.config_file, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = run(idp, &home, &["token", "--context", M2M_CONTEXT]);
    out.expect(6, "wrong client secret");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains("invalid_client") && out.stderr.contains("client_secret"),
        "{out}"
    );

    // 4: the login was revoked at the IdP and the access token has expired.
    let home = QshHome::new(idp);
    home.device_login(idp, "grace");
    idp.revoke_user("grace");
    home.expire_access_token(USER_CONTEXT);
    let out = run(idp, &home, &["token", "--context", USER_CONTEXT]);
    out.expect(4, "revoked login");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("qlam-auth login"), "{out}");

    // 7: a config file that is not JSON.
    let home = QshHome::new(idp);
    std::fs::write(
        &home.paths.config_file,
        b"{\"current_context\": \"lab\", \"contexts\": [",
    )
    .unwrap();
    for args in [
        &["token", "--context", USER_CONTEXT][..],
        &["status", "--context", USER_CONTEXT],
        &["login", "--context", USER_CONTEXT, "--device"],
    ] {
        let out = run(idp, &home, args);
        out.expect(7, &format!("broken config: {args:?}"));
        assert!(out.stderr.contains("config.json"), "{out}");
    }

    // 8: a credentials file others can read.
    let home = QshHome::new(idp);
    home.device_login(idp, "heidi");
    let file = home.credentials_file(USER_CONTEXT);
    chmod(&file, 0o640);
    let out = run(idp, &home, &["token", "--context", USER_CONTEXT]);
    out.expect(8, "group-readable credentials");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr
            .contains(&format!("chmod 600 '{}'", file.display())),
        "{out}"
    );
    chmod(&file, 0o600);
    assert!(idp.accepts(&cli_token(idp, &home)), "the fix works");

    // 8 as well for a damaged file; logging in again repairs it.
    std::fs::write(&file, b"{\"version\": 1, \"extra\": {\"token_data\": ").unwrap();
    let out = run(idp, &home, &["token", "--context", USER_CONTEXT]);
    out.expect(8, "damaged credentials");
    assert!(
        out.stderr.contains("log in again with `qlam-auth login`"),
        "{out}"
    );
    cli_device_login(idp, &home, "heidi").expect(0, "login over a damaged file");
    assert!(idp.accepts(&cli_token(idp, &home)));
}

/// Case 4b: With the IdP failing: exit 5, except that without --min-valid a stored token that is
/// still valid is printed (with a warning); with --min-valid nothing that lapses sooner is.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn an_unreachable_idp_gives_exit_5_unless_the_stored_token_will_do() {
    let idp = the_idp();
    let home = QshHome::new(idp);
    {
        let _g = shared();
        home.device_login(idp, "niaj");
    }
    let stored = stored_tokens(&home).access_token;
    let _g = exclusive();
    fault_on(idp, "token", "html", 100);
    let runs = [
        // (seconds left, extra args, exit code, token printed, on stderr)
        (
            3500,
            &["--min-valid", "3550"][..],
            5,
            false,
            "could not be reached",
        ),
        (120, &[][..], 0, true, "using the stored one"),
        (120, &["--min-valid", "60"][..], 0, true, ""), // valid long enough: no IdP call
        (
            120,
            &["--min-valid", "300"][..],
            5,
            false,
            "could not be reached",
        ),
        (-60, &[][..], 5, false, "could not be reached"),
    ];
    let mut outs = Vec::new();
    for (left, extra, ..) in runs {
        set_access_token_left(&home, left);
        let mut args = vec!["token", "--context", USER_CONTEXT];
        args.extend_from_slice(extra);
        outs.push(run(idp, &home, &args));
    }
    idp.clear_fault();
    for ((left, extra, code, printed, said), out) in runs.iter().zip(&outs) {
        let what = format!("{left} s left, {extra:?}");
        out.expect(*code, &what);
        let want = if *printed {
            format!("{}\n", stored.expose())
        } else {
            String::new()
        };
        assert_eq!(out.stdout, want, "{what}: {out}");
        assert!(out.stderr.contains(said), "{what}: {out}");
    }
    assert!(outs[0].stderr.contains("--min-valid 3550"), "{}", outs[0]);
    // The IdP is back: renewed.
    let token = cli_token(idp, &home);
    assert_ne!(token, stored.expose());
    assert!(idp.accepts(&token));
}

/// Case 8: `logout` revokes the refresh token at the IdP and deletes the stored login.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn logout_revokes_and_deletes() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    cli_device_login(idp, &home, "ivan").expect(0, "login");
    let file = home.credentials_file(USER_CONTEXT);
    let old_rt = stored_tokens(&home).refresh_token.expect("a refresh token");

    let out = run(idp, &home, &["logout", "--context", USER_CONTEXT]);
    out.expect(0, "logout");
    assert!(out.stdout.contains("revoked the refresh token"), "{out}");
    assert!(!file.exists(), "the credentials file is gone");

    let oauth = home.broker(idp, USER_CONTEXT).oauth().unwrap();
    let err = oauth.refresh(&old_rt).unwrap_err();
    assert!(
        matches!(&err, Error::IdpRefused { code, .. } if *code == token_core::oauth::OAuthErrorCode::InvalidGrant),
        "the old refresh token must be dead: {err:?}"
    );
    run(idp, &home, &["token", "--context", USER_CONTEXT]).expect(3, "logged out");
    // Again: nothing to do, still success.
    let out = run(idp, &home, &["logout", "--context", USER_CONTEXT]);
    out.expect(0, "second logout");
    assert!(out.stdout.contains("nothing to do"), "{out}");
}

/// Case 8b: When the IdP can't revoke, `logout` still deletes the login and warns that the refresh
/// token stays valid at the IdP (which is true); `--no-revoke` only deletes.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn logout_keeps_the_login_when_revocation_fails_unless_local() {
    let idp = the_idp();
    let home = QshHome::new(idp);
    {
        let _g = shared();
        home.device_login(idp, "mallory");
    }
    let file = home.credentials_file(USER_CONTEXT);
    let old_rt = stored_tokens(&home).refresh_token.expect("a refresh token");
    {
        let _g = exclusive();
        fault_on(idp, "revocation", "html", 20);
        let out = run(idp, &home, &["logout", "--context", USER_CONTEXT]);
        idp.clear_fault();
        assert_ne!(
            out.code,
            Some(0),
            "logout with a failing revocation endpoint: {out}"
        );
        assert!(
            out.stderr.contains("could not revoke")
                && out.stderr.contains("kept")
                && out.stderr.contains("--local"),
            "{out}"
        );
        assert!(!out.stdout.contains("revoked the refresh token"), "{out}");
    }
    let _g = shared();
    assert!(
        file.exists(),
        "the credentials are kept, for a later revocation"
    );
    assert_eq!(stored_tokens(&home).refresh_token, Some(old_rt.clone()));
    let oauth = home.broker(idp, USER_CONTEXT).oauth().unwrap();
    assert!(
        oauth.refresh(&old_rt).is_ok(),
        "the refresh token is still valid at the IdP"
    );

    home.device_login(idp, "mallory");
    let old_rt = stored_tokens(&home).refresh_token.unwrap();
    let out = run(
        idp,
        &home,
        &["logout", "--context", USER_CONTEXT, "--local"],
    );
    out.expect(0, "logout --local");
    assert!(out.stdout.contains("not revoked"), "{out}");
    assert!(!file.exists());
    assert!(
        oauth.refresh(&old_rt).is_ok(),
        "--no-revoke leaves it valid"
    );
}

/// Case 9: `doctor` passes on a healthy setup and names the problem and its fix otherwise.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn doctor_passes_when_healthy_and_explains_a_group_writable_qsh() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "judy");
    let out = run(idp, &home, &["doctor", "--context", USER_CONTEXT]);
    out.expect(0, "doctor on a healthy setup");
    assert!(!out.stdout.contains("FAIL"), "{out}");
    assert!(out.stdout.contains("ok    config:"), "{out}");
    assert!(
        out.stdout.contains("ok    credentials:") && out.stdout.contains("judy@example.org"),
        "{out}"
    );
    // (ok, or warn when discovery took over 2 s on a busy machine)
    assert!(
        out.stdout.contains("identity provider: discovery at"),
        "{out}"
    );

    let qsh = home.paths.config_dir.clone();
    // umask 002 makes directories like this one.
    chmod(&qsh, 0o775);
    let out = run(idp, &home, &["doctor", "--context", USER_CONTEXT]);
    out.expect(1, "doctor with a group-writable ~/.qsh");
    let line = out
        .stdout
        .lines()
        .position(|l| l.contains("FAIL  config directory"))
        .unwrap_or_else(|| panic!("no FAIL for the config directory: {out}"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[line].contains(&qsh.display().to_string()), "{out}");
    assert!(lines[line].contains("change it"), "{out}");
    assert_eq!(
        lines[line + 1].trim(),
        format!("fix: chmod 755 '{}'", qsh.display()),
        "{out}"
    );
    // The fix it gives works.
    chmod(&qsh, 0o700);
    run(idp, &home, &["doctor", "--context", USER_CONTEXT]).expect(0, "doctor after the fix");
}

/// SIGTERM, what Slurm sends a cancelled or timed-out job, arriving right after the IdP rotated
/// the refresh token and before the answer was saved (held there by a fault point): `token`
/// finishes and saves the renewal first, prints no token and exits 143, and the login survives.
/// Without the deferral the process would die in that window with only the spent refresh token
/// on disk.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn sigterm_during_a_renewal_does_not_lose_the_login() {
    let idp = the_idp();
    let home = QshHome::new(idp);
    let _g = shared();
    home.device_login(idp, "olivia");
    home.expire_access_token(USER_CONTEXT);
    let before = stored_tokens(&home).refresh_token;
    let mut child = qlam_auth(idp, &home)
        .arg("token")
        .env(token_core::faultpoint::ENV, "broker.after_response")
        .env(token_core::faultpoint::HOLD_ENV, "1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("FAULTPOINT") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "qlam-auth token ended before the fault point"
        );
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "stderr: {rest}");
    assert!(out.stdout.is_empty(), "no token is printed after SIGTERM");
    assert!(rest.contains("terminated"), "{rest}");
    let after = stored_tokens(&home).refresh_token;
    assert!(
        after.is_some() && after != before,
        "the rotated refresh token was saved"
    );
    // The login still works: a forced renewal with the saved refresh token succeeds.
    home.expire_access_token(USER_CONTEXT);
    let token = cli_token(idp, &home);
    assert!(idp.accepts(&token));
}

/// A lock wait on a terminal says what it waits for (after about a second), without -v.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn a_lock_wait_on_a_terminal_says_what_it_waits_for() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "olivia");
    set_access_token_left(&home, -60);
    let lock = format!("{}.lock", home.credentials_file(USER_CONTEXT).display());
    // Another process holds the store lock for 3 s (as a slow renewal would).
    let (tx, rx) = mpsc::channel();
    let mut holder = Command::new("flock")
        .args(["-x", &lock, "-c", "echo locked; sleep 3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    std::thread::spawn(move || {
        let mut l = String::new();
        let _ = out.read_line(&mut l);
        let _ = tx.send(l);
    });
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap().trim(), "locked");
    // `script` gives qlam-auth a terminal for stderr.
    let inner = format!(
        "{} token --context {USER_CONTEXT} >/dev/null",
        env!("CARGO_BIN_EXE_qlam-auth")
    );
    let o = qlam_auth(idp, &home)
        .env_remove("SSH_CONNECTION")
        .program_from("script", &["-qfec", &inner, "/dev/null"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let _ = holder.wait();
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("waiting for another process")
            && text.contains(&lock)
            && text.contains(USER_CONTEXT),
        "{text}"
    );
    // Without a terminal (a script), nothing is said unless -v.
    let quiet = run(idp, &home, &["token", "--context", USER_CONTEXT]);
    assert!(!quiet.stderr.contains("waiting"), "{quiet}");
}

/// Runs another program with `Command`'s environment (a test helper).
trait ProgramFrom {
    fn program_from(&mut self, program: &str, args: &[&str]) -> std::process::Output;
}

impl ProgramFrom for Command {
    fn program_from(&mut self, program: &str, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(program);
        c.args(args).env_clear();
        for (k, v) in self.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.stdin(Stdio::null()).output().unwrap()
    }
}
