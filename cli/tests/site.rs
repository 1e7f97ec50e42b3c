//! A cluster set up once: the site file (`QLAM_AUTH_SITE_FILE`), as a user meets it. Against the
//! real test IdP, with the real qlam-core 0.10.0 reading what the first login wrote.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

#[path = "../../token-core/tests/support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;
use token_core::secret::fingerprint;

fn the_idp() -> &'static Idp {
    idp(&[("IDP_USERS", "alice,bob"), ("IDP_ACCESS_TTL", "3600")])
}

/// A site file in a root-owned 0755 directory, 0644: as an admin would install it.
struct SiteFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SiteFile {
    fn new(content: &Value) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("qlam-site-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("site.json");
        std::fs::write(&path, serde_json::to_vec_pretty(content).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        SiteFile { _dir: dir, path }
    }
}

/// The site of a cluster: one context `hpc` at the test IdP, QLAM Core's tenant included.
fn site_for(idp: &Idp) -> Value {
    json!({
        "default_context": "hpc",
        "contexts": [{"name": "hpc", "issuer": idp.issuer, "client_id": "qlam-cli",
                      "tenant": "test", "grant": "device_code"}],
        "issuers": [idp.issuer],
    })
}

/// `qlam-auth` for a user whose home is `home`, with the site file `site`, a clean environment.
fn qlam_auth(idp: &Idp, home: &Path, site: &Path) -> Command {
    let mut c = clean_command(env!("CARGO_BIN_EXE_qlam-auth"), idp, home);
    c.env("QLAM_AUTH_SITE_FILE", site)
        .env("SSH_CONNECTION", OVER_SSH);
    c
}

fn run(idp: &Idp, home: &Path, site: &Path, args: &[&str]) -> Output {
    qlam_auth(idp, home, site).args(args).output().unwrap()
}

/// `qlam-auth login --no-qr` with no other flag, approved headlessly as `user`.
fn first_login(idp: &Idp, home: &Path, site: &Path, user: &str) -> (i32, String) {
    let child = qlam_auth(idp, home, site)
        .args(["login", "--no-qr"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, out, err) = approve_device_login(idp, child, "2. Enter", user);
    (status.code().unwrap_or(-1), format!("{out}{err}"))
}

#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
fn a_first_login_with_only_the_site_file_is_read_by_qlam_core() {
    let idp = the_idp();
    let _g = shared();
    let home = tempfile::Builder::new().prefix("qsh-").tempdir().unwrap();
    let site = SiteFile::new(&site_for(idp));
    let qsh = home.path().join(".qsh");

    // Never set up: every command says to log in, not "bad configuration".
    for cmd in [&["status"][..], &["token"]] {
        let o = run(idp, home.path(), &site.path, cmd);
        assert_eq!(o.status.code(), Some(3), "{cmd:?}: {}", output_text(&o));
        let t = output_text(&o);
        assert!(t.contains("qlam-auth login"), "{cmd:?}: {t}");
        assert!(!t.contains("bad configuration"), "{cmd:?}: {t}");
    }
    assert!(!qsh.exists(), "nothing written before the login");

    let o = run(idp, home.path(), &site.path, &["config", "show"]);
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for want in ["hpc", "(site file)", &idp.issuer, "qlam-cli"] {
        assert!(t.contains(want), "config show names {want}: {t}");
    }

    let o = run(idp, home.path(), &site.path, &["doctor", "--json"]);
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(&o)));
    let settings = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "settings")
        .unwrap_or_else(|| panic!("doctor prints the settings: {v}"));
    let d = settings["detail"].as_str().unwrap();
    assert!(d.contains("client_id qlam-cli (site file)"), "{d}");

    let (code, out) = first_login(idp, home.path(), &site.path, "alice");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Logged in to context 'hpc'"), "{out}");
    let config = qsh.join("config.json");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(written["current_context"], "hpc", "{written}");

    // QLAM Core reads that config and the login as they are.
    let paths = token_core::paths::QshPaths::resolve(home.path(), &|_| None);
    let seen = qlam_core_in(idp, &paths, home.path(), "read", "hpc", "qlam");
    assert_eq!(seen["ok"], true, "{seen}");
    let o = run(idp, home.path(), &site.path, &["token"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let token = String::from_utf8(o.stdout).unwrap();
    assert_eq!(seen["fingerprint"], fingerprint(token.trim()).as_str());

    // Without the site file now, the user's own config carries on.
    let o = run(
        idp,
        home.path(),
        Path::new("/nonexistent/site.json"),
        &["status"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn a_site_file_others_can_change_is_refused_with_the_fix() {
    let idp = the_idp();
    let home = tempfile::Builder::new().prefix("qsh-").tempdir().unwrap();
    let site = SiteFile::new(&site_for(idp));
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    chmod(&site.path, 0o664);
    let o = run(idp, home.path(), &site.path, &["status"]);
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(8), "{t}");
    assert!(t.contains("chmod 644") && t.contains("site.json"), "{t}");
    chmod(&site.path, 0o644);
    std::os::unix::fs::chown(&site.path, Some(65534), Some(65534)).unwrap();
    let o = run(idp, home.path(), &site.path, &["login"]);
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(8), "{t}");
    assert!(t.contains("chown root:root"), "{t}");
    std::os::unix::fs::chown(&site.path, Some(0), Some(0)).unwrap();
    chmod(site.path.parent().unwrap(), 0o777);
    let o = run(idp, home.path(), &site.path, &["doctor", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "doctor fails: {}",
        output_text(&o)
    );
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(&o)));
    assert_eq!(v["ok"], false, "{v}");
    let site_check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "site file")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(site_check["level"], "fail", "{v}");
    assert!(
        site_check["fix"]
            .as_str()
            .unwrap_or("")
            .contains("chmod 755"),
        "the directory too: {v}"
    );
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn precedence_command_line_then_user_config_then_site_file() {
    let idp = the_idp();
    let home = QshHome::new(idp); // its config.json defines `lab` (client qlam-cli), current
    let site = SiteFile::new(&json!({
        "default_context": "lab",
        "contexts": [
            {"name": "lab", "issuer": "https://other.example", "client_id": "site-client"},
            {"name": "extra", "issuer": idp.issuer, "client_id": "site-extra", "tenant": "t"}],
        "issuers": [idp.issuer],
    }));
    let show = |args: &[&str]| {
        let mut a = vec!["config", "show", "--json"];
        a.extend_from_slice(args);
        let o = qlam_auth(idp, home.dir.path(), &site.path)
            .env("QSH_CONFIG_DIR", &home.paths.config_dir)
            .args(&a)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let v = show(&[]);
    let s = &v["settings"];
    assert_eq!(s["context"]["value"], "lab");
    assert_eq!(s["context"]["origin"], "user config");
    assert_eq!(
        s["client_id"]["value"], "qlam-cli",
        "the user's file wins: {v}"
    );
    assert_eq!(s["client_id"]["origin"], "user config");
    let v = show(&["--context", "extra"]);
    let s = &v["settings"];
    assert_eq!(s["context"]["origin"], "command line");
    assert_eq!(s["client_id"]["value"], "site-extra");
    assert_eq!(s["issuer"]["origin"], "site file");

    // A typo'd context: "did you mean".
    let o = qlam_auth(idp, home.dir.path(), &site.path)
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .args(["use-context", "extar"])
        .output()
        .unwrap();
    let t = output_text(&o);
    assert_ne!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("did you mean 'extra'"), "{t}");
    // use-context copies the site's context into the user's file and makes it current.
    let o = qlam_auth(idp, home.dir.path(), &site.path)
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .args(["use-context", "extra"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(&home.paths.config_file).unwrap()).unwrap();
    assert_eq!(cfg["current_context"], "extra");
    assert_eq!(cfg["contexts"].as_array().unwrap().len(), 3, "{cfg}");
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn pipeline_variables_beside_a_config_are_ignored_with_a_warning() {
    let idp = the_idp();
    let home = QshHome::new(idp);
    let o = qlam_auth(idp, home.dir.path(), Path::new("/nonexistent/site.json"))
        .env("QSH_CONFIG_DIR", &home.paths.config_dir)
        .env("QLAM_CLIENT_ID", "qlam-m2m")
        .env("QLAM_CLIENT_SECRET", "m2m-secret")
        .env("AUTH_BASE_URL", &idp.issuer)
        .args(["token"])
        .output()
        .unwrap();
    let t = output_text(&o);
    // The config's current context (never logged in) is what `token` used...
    assert_eq!(o.status.code(), Some(3), "{t}");
    // ...and the user is told that the variables were not, and how to use them.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("QLAM_CLIENT_ID") && err.contains("ignored") && err.contains("--context env"),
        "{t}"
    );
    assert!(!t.contains("m2m-secret"));
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn a_wrong_issuer_url_is_a_config_error_naming_the_url_and_what_is_there() {
    let idp = the_idp();
    let _g = shared();
    let home = tempfile::Builder::new().prefix("qsh-").tempdir().unwrap();
    let no_site = Path::new("/nonexistent/site.json");
    let port = idp.issuer.rsplit(':').next().unwrap();
    let cases = [
        (format!("{}/nope", idp.issuer), "404"),
        // The same server under another name: it calls itself https://127.0.0.1:PORT.
        (format!("https://localhost:{port}"), "calls itself"),
        ("https://no-such-host.invalid".to_owned(), "unknown host"),
    ];
    for (issuer, found) in &cases {
        let o = run(
            idp,
            home.path(),
            no_site,
            &[
                "config",
                "init",
                "--issuer",
                issuer,
                "--client-id",
                "qlam-cli",
            ],
        );
        let t = output_text(&o);
        assert_eq!(o.status.code(), Some(11), "{issuer}: {t}");
        assert!(
            t.contains(issuer.as_str()) && t.contains(found),
            "{issuer}: {t}"
        );
        assert!(t.contains("--issuer"), "the fix is named: {t}");
        assert!(
            !home.path().join(".qsh/config.json").exists(),
            "nothing written"
        );
    }
    // --offline writes without looking; then `login` finds out, with the same exit code.
    let (issuer, _) = &cases[0];
    let o = run(
        idp,
        home.path(),
        no_site,
        &[
            "config",
            "init",
            "--offline",
            "--issuer",
            issuer,
            "--client-id",
            "qlam-cli",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let o = run(idp, home.path(), no_site, &["login", "--no-qr"]);
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(11), "{t}");
    assert!(t.contains("404"), "{t}");
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn a_login_the_idp_refused_is_reported_by_status_and_doctor_offline() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "bob");
    home.expire_access_token(USER_CONTEXT);
    let no_site = Path::new("/nonexistent/site.json");
    let cmd = |args: &[&str]| {
        qlam_auth(idp, home.dir.path(), no_site)
            .env("QSH_CONFIG_DIR", &home.paths.config_dir)
            .args(args)
            .output()
            .unwrap()
    };
    // Before anything was tried, a stored refresh token looks usable.
    let o = cmd(&["status", "--context", USER_CONTEXT]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    idp.revoke_user("bob");
    let o = cmd(&["token", "--context", USER_CONTEXT]);
    assert_eq!(o.status.code(), Some(4), "{}", output_text(&o));
    // From now on status and doctor say so, without asking the IdP again.
    let o = cmd(&["status", "--context", USER_CONTEXT]);
    let t = output_text(&o);
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(
        t.contains("expired or was revoked") && t.contains("qlam-auth login"),
        "{t}"
    );
    assert!(
        !t.contains("problems:      none") && !t.contains("problems: none"),
        "{t}"
    );
    let o = cmd(&["doctor", "--context", USER_CONTEXT, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["level"] != "ok"
                && c["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("expired or was revoked")),
        "{v}"
    );
    // A new login makes the marker moot.
    home.device_login(idp, "bob");
    let o = cmd(&["status", "--context", USER_CONTEXT]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
}
