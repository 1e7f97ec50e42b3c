//! Test support: the real test IdP (tests/idp, oidc-provider over https), temporary qsh homes,
//! headless device approval, and the real qlam-core in a venv.
#![allow(clippy::unwrap_used)] // test support: a panic is a failing test
#![allow(dead_code)] // each test binary uses a different part of this module

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use token_core::broker::Broker;
use token_core::config::{Config, ProviderConfig};
use token_core::http::{HttpSettings, SharedHttp, UreqClient};
use token_core::paths::QshPaths;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A running test IdP. One per test binary; a watchdog stops it when the test process exits.
pub struct Idp {
    pub issuer: String,
    pub ca: PathBuf,
    pub dir: PathBuf,
}

static IDP: OnceLock<Idp> = OnceLock::new();

static IDP_STATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// For tests that read IdP-wide counters or inject faults: no other test of this binary runs
/// against the IdP meanwhile.
pub fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    IDP_STATE.write().unwrap_or_else(|e| e.into_inner())
}

/// For all other tests: they may run together, but not during an exclusive one.
pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    IDP_STATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Starts (once per test binary) the IdP with these `IDP_*` knobs.
pub fn idp(knobs: &[(&str, &str)]) -> &'static Idp {
    IDP.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("qlam-idp-").tempdir().unwrap().keep();
        let start = repo_root().join("tests/idp/start.sh");
        let out = Command::new("bash")
            .arg(&start)
            .arg(&dir)
            .envs(knobs.iter().copied())
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "the test IdP did not start (tests/idp/start.sh; needs node and npm, see README):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ready: Value = serde_json::from_slice(&std::fs::read(dir.join("ready.json")).unwrap()).unwrap();
        // Watchdog: stop the IdP when this test process is gone.
        let stop = repo_root().join("tests/idp/stop.sh");
        let me = std::process::id();
        // `setsid -f` forks the watchdog into its own session and returns at once.
        Command::new("setsid")
            .args(["-f", "bash", "-c", "while kill -0 \"$0\" 2>/dev/null; do sleep 0.3; done; bash \"$1\" \"$2\"; rm -rf \"$2\""])
            .arg(me.to_string())
            .arg(&stop)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        Idp { issuer: ready["issuer"].as_str().unwrap().to_owned(), ca: PathBuf::from(ready["ca"].as_str().unwrap()), dir }
    })
}

impl Idp {
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            ca_bundle: Some(self.ca.clone()),
            allowed_issuers: None,
            ssl_cert_file: None,
        }
    }

    pub fn http(&self) -> SharedHttp {
        Arc::new(UreqClient::new(&self.http_settings()).unwrap())
    }

    fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_test/{path}", self.issuer);
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail-with-body", "--max-time", "10", "--cacert"])
            .arg(&self.ca)
            .args(["-X", method]);
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
        }
        let out = cmd.arg(&url).output().expect("curl runs");
        assert!(
            out.status.success(),
            "{method} {url}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn stats(&self) -> Value {
        self.control("GET", "stats", None)
    }

    /// Token-endpoint requests of one grant type (`refresh_token`, `client_credentials`, ...).
    pub fn token_requests(&self, grant: &str) -> u64 {
        self.stats()["token_requests"][grant].as_u64().unwrap_or(0)
    }

    pub fn errors(&self, code: &str) -> u64 {
        self.stats()["errors"][code].as_u64().unwrap_or(0)
    }

    pub fn fault(&self, mode: &str, count: u32) {
        self.control(
            "POST",
            "fault",
            Some(serde_json::json!({"mode": mode, "count": count, "retry_after": 1})),
        );
    }

    pub fn clear_fault(&self) {
        self.control(
            "POST",
            "fault",
            Some(serde_json::json!({"mode": "html", "count": 0})),
        );
    }

    pub fn revoke_user(&self, sub: &str) {
        self.control("POST", "revoke", Some(serde_json::json!({"sub": sub})));
    }

    /// Approves a device code as `user`, headlessly, through the real login pages.
    pub fn approve(&self, user: &str, user_code: &str) {
        let out = Command::new("node")
            .arg(repo_root().join("tests/idp/approve.mjs"))
            .args(["--issuer", &self.issuer, "--ca"])
            .arg(&self.ca)
            .args([
                "--user",
                user,
                "--password",
                &format!("{user}-pw"),
                "--user-code",
                user_code,
            ])
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "approval failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The HTTP status of `GET <issuer>/<path>` with `token` as the bearer token.
    pub fn bearer_status(&self, path: &str, token: &str) -> String {
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
            .arg(&self.ca)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("{}/{path}", self.issuer))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Is this access token valid at the IdP (its userinfo endpoint accepts it)?
    pub fn accepts(&self, token: &str) -> bool {
        self.bearer_status("me", token) == "200"
    }

    /// Introspection (RFC 7662) of `token`, as the resource server `qlam-introspect`.
    pub fn introspect(&self, token: &str) -> Value {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-u",
                "qlam-introspect:introspect-secret",
                "--cacert",
            ])
            .arg(&self.ca)
            .args(["-d", &format!("token={token}")])
            .arg(format!("{}/token/introspection", self.issuer))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// What a resource server for `audience` says about `token` (the test IdP's
    /// `/_test/resource`): the HTTP status.
    pub fn resource_status(&self, audience: &str, token: &str) -> String {
        self.bearer_status(&format!("_test/resource?audience={audience}"), token)
    }
}

/// A private qsh config directory with one context.
pub struct QshHome {
    pub dir: tempfile::TempDir,
    pub paths: QshPaths,
}

pub const USER_CONTEXT: &str = "lab";
pub const M2M_CONTEXT: &str = "pipeline";

impl QshHome {
    pub fn new(idp: &Idp) -> Self {
        let config = serde_json::json!({
            "current_context": USER_CONTEXT,
            "contexts": [
                {"name": USER_CONTEXT, "qpu": "test",
                 "defaults": {"auth_provider": "testidp"},
                 "auth_providers": [{"provider": "oauth", "name": "testidp", "auth_base_url": idp.issuer,
                    "client_id": "qlam-cli", "client_secret": null, "grant_type": "device_code",
                    "scope": null, "audience": null, "tenant": "test"}]},
                {"name": M2M_CONTEXT, "qpu": "test",
                 "defaults": {"auth_provider": "svc"},
                 "auth_providers": [{"provider": "oauth", "name": "svc", "auth_base_url": idp.issuer,
                    "client_id": "qlam-m2m", "client_secret": "m2m-secret", "grant_type": "client_credentials",
                    "audience": "https://slurm.example/api"}]}
            ]
        });
        let (dir, paths) = private_qsh_home("qsh-", &config);
        QshHome { dir, paths }
    }

    pub fn provider(&self, context: &str) -> ProviderConfig {
        Config::load(&self.paths)
            .unwrap()
            .provider_with_env(Some(context), &|k| std::env::var(k).ok())
            .unwrap()
    }

    pub fn broker(&self, idp: &Idp, context: &str) -> Broker {
        Broker::new(
            &self.paths,
            self.provider(context),
            &idp.http_settings(),
            &|k| std::env::var(k).ok(),
        )
        .unwrap()
        .with_http(idp.http())
    }

    pub fn credentials_file(&self, context: &str) -> PathBuf {
        self.broker_path(context)
    }

    fn broker_path(&self, context: &str) -> PathBuf {
        token_core::store::CredentialStore::new(&self.paths)
            .path_for(&self.provider(context).cache_key())
    }

    /// Logs `user` in with the device flow, approving headlessly.
    pub fn device_login(&self, idp: &Idp, user: &str) {
        let broker = self.broker(idp, USER_CONTEXT);
        let oauth = broker.oauth().unwrap();
        let auth = oauth.start_device().unwrap();
        idp.approve(user, &auth.user_code);
        let tokens = oauth
            .poll_device(&auth, &mut token_core::oauth::device::Quiet)
            .unwrap();
        broker.save_login(tokens).unwrap();
    }

    /// Makes the stored access token look old: issued two hours ago, valid one hour.
    pub fn expire_access_token(&self, context: &str) {
        self.set_access_token_left(context, -3600);
    }

    /// Makes the stored access token of `context` expire in `secs` seconds (valid one hour).
    pub fn set_access_token_left(&self, context: &str, secs: i64) {
        let store = token_core::store::CredentialStore::new(&self.paths);
        set_access_token_left(&store, &self.provider(context).cache_key(), context, secs);
    }
}

/// A private qsh home in a new temporary directory (`prefix...`): `.qsh/` (0700) holding
/// `config.json` (0600) with `config`.
pub fn private_qsh_home(prefix: &str, config: &Value) -> (tempfile::TempDir, QshPaths) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let config_dir = dir.path().join(".qsh");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::set_permissions(&config_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = config_dir.join("config.json");
    std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let paths = QshPaths::resolve(dir.path(), &|_| None);
    (dir, paths)
}

/// Makes the access token stored under `key` expire in `secs` seconds: issued `3600 - secs`
/// seconds ago, valid one hour.
pub fn set_access_token_left(
    store: &token_core::store::CredentialStore,
    key: &str,
    context: &str,
    secs: i64,
) {
    let mut t = store.load(key).unwrap().unwrap().tokens;
    t.created_at = token_core::time::Timestamp::now().plus_seconds(secs - 3600);
    t.expires_in = Some(3600);
    store.save(key, context, &t).unwrap();
}

/// A program run as a user runs it, with a clean environment: only `PATH`, `HOME`, the IdP's
/// CA in `SSL_CERT_FILE`, and stdin from /dev/null. Callers add the rest.
pub fn clean_command(program: &str, idp: &Idp, home: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("SSL_CERT_FILE", &idp.ca)
        .stdin(Stdio::null());
    c
}

/// `QLAM_AUTH_SITE_FILE` for a test without a site file (hermetic: /etc/qlam-auth is the
/// machine's).
pub const NO_SITE_FILE: &str = "/nonexistent/qlam-auth-test/site.json";

/// `SSH_CONNECTION` as on a login node reached over ssh.
pub const OVER_SSH: &str = "192.0.2.10 50022 192.0.2.20 22";

/// A finished run's exit code and both outputs, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The user code in a line of device-login instructions: what follows `marker`.
pub fn user_code_after(line: &str, marker: &str) -> Option<String> {
    line.split_once(marker)
        .map(|(_, c)| c.trim().to_owned())
        .filter(|c| !c.is_empty())
}

/// Drives a spawned device login (stdout piped; stderr piped or not): reads stdout up to the user
/// code after `marker`, approves it as `user`, and waits. Returns the exit status, all of stdout
/// and stderr (empty when it was not piped).
pub fn approve_device_login(
    idp: &Idp,
    mut child: std::process::Child,
    marker: &str,
    user: &str,
) -> (std::process::ExitStatus, String, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let code = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            seen.push_str(&l);
            seen.push('\n');
            user_code_after(&l, marker)
        })
        .unwrap_or_else(|| panic!("no user code in: {seen}"));
    idp.approve(user, &code);
    for l in lines.map_while(Result::ok) {
        seen.push_str(&l);
        seen.push('\n');
    }
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut err).unwrap();
    }
    let status = child.wait().unwrap();
    (status, seen, err)
}

/// A venv with the real qlam-core 0.10.0 from PyPI (made once, under target/).
pub fn qlam_core_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = repo_root().join("target/qlam-core-venv");
        let py = venv.join("bin/python");
        let marker = venv.join(".qlam-core-0.10.0");
        if !marker.exists() {
            let script = format!(
                "set -e; exec 9>'{v}.lock'; flock 9; [ -e '{m}' ] && exit 0; rm -rf '{v}'; /usr/bin/python3 -m venv '{v}'; \
                 '{v}/bin/pip' install -q --disable-pip-version-check qlam-core==0.10.0; touch '{m}'",
                v = venv.display(),
                m = marker.display()
            );
            let out = Command::new("bash").args(["-c", &script]).output().unwrap();
            assert!(out.status.success(), "could not install qlam-core 0.10.0 into a venv: {}", String::from_utf8_lossy(&out.stderr));
        }
        py
    })
    .clone()
}

/// Runs the qlam-core driver (tests/interop/qlam_core_driver.py) for `home`.
pub fn qlam_core(idp: &Idp, home: &QshHome, verb: &str, context: &str, provider: &str) -> Value {
    qlam_core_in(idp, &home.paths, home.dir.path(), verb, context, provider)
}

/// The qlam-core driver for the qsh files in `paths`, with `$HOME` = `home`.
pub fn qlam_core_in(
    idp: &Idp,
    paths: &QshPaths,
    home: &Path,
    verb: &str,
    context: &str,
    provider: &str,
) -> Value {
    let out = qlam_core_command(idp, paths, home)
        .args([verb, context, provider])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "qlam-core printed no result: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

fn qlam_core_command(idp: &Idp, paths: &QshPaths, home: &Path) -> Command {
    let mut cmd = Command::new(qlam_core_python());
    cmd.arg("-u")
        .arg(repo_root().join("tests/interop/qlam_core_driver.py"))
        .env("QSH_CONFIG_DIR", &paths.config_dir)
        .env("SSL_CERT_FILE", &idp.ca)
        .env("REQUESTS_CA_BUNDLE", &idp.ca)
        .env("HOME", home);
    cmd
}

/// qlam-core's own device flow for `home`'s `lab` context, approved headlessly as `user`.
pub fn qlam_core_device_login(idp: &Idp, home: &QshHome, user: &str) {
    let child = qlam_core_command(idp, &home.paths, home.dir.path())
        .args(["login", USER_CONTEXT, "testidp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, out, _) = approve_device_login(idp, child, "Enter code:", user);
    assert!(status.success(), "qlam-core login failed: {out}");
}

pub fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}
