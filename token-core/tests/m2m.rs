//! Machine-to-machine tokens against the real test IdP: private_key_jwt (ES256, RS256), secret
//! rotation, the monthly budget, and the token source's 401 retry. Every count is read from the
//! IdP's side (`/_test/stats`).
//!
//! This binary's IdP issues opaque access tokens (`IDP_ACCESS_TOKEN_FORMAT=opaque`) so that a
//! token can be revoked and a resource server can see it (introspection).

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

mod support;

use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use support::*;
use token_core::Error;
use token_core::broker::{Broker, ObtainOptions, Source};
use token_core::http::HttpClient;
use token_core::m2m::Settings;
use token_core::paths::QshPaths;
use token_core::tokensource::TokenSource;

const API: &str = "https://slurm.example/api";

fn the_idp() -> &'static Idp {
    idp(&[
        ("IDP_ACCESS_TOKEN_FORMAT", "opaque"),
        ("IDP_CC_TTL", "3600"),
    ])
}

fn opts() -> ObtainOptions {
    ObtainOptions {
        min_valid: Duration::from_secs(60),
        lock_timeout: Duration::from_secs(30),
    }
}

/// A private qsh home whose config has one client-credentials context `ctx` with this
/// `client_secret` spelling.
struct M2mHome {
    dir: tempfile::TempDir,
    paths: QshPaths,
}

impl M2mHome {
    fn new(idp: &Idp, client_id: &str, client_secret: &str) -> Self {
        let config = json!({
            "current_context": "ctx",
            "contexts": [{"name": "ctx", "qpu": "test",
                "defaults": {"auth_provider": "svc"},
                "auth_providers": [{"provider": "oauth", "name": "svc", "auth_base_url": idp.issuer,
                    "client_id": client_id, "client_secret": client_secret,
                    "grant_type": "client_credentials", "scope": null, "audience": API, "tenant": null}]}]
        });
        let (dir, paths) = private_qsh_home("qsh-m2m-", &config);
        M2mHome { dir, paths }
    }

    fn broker(&self, idp: &Idp) -> Broker {
        let provider = token_core::config::Config::load(&self.paths)
            .unwrap()
            .provider_with_env(Some("ctx"), &|k| std::env::var(k).ok())
            .unwrap();
        Broker::new(&self.paths, provider, &idp.http_settings(), &|k| {
            std::env::var(k).ok()
        })
        .unwrap()
        .with_http(idp.http())
    }

    fn private_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// Makes the stored token look expired (so the next obtain renews).
    fn expire(&self, broker: &Broker) {
        set_access_token_left(broker.store(), &broker.provider().cache_key(), "ctx", -3600);
    }
}

fn cc(idp: &Idp) -> u64 {
    idp.token_requests("client_credentials")
}

/// Is this opaque access token active (introspection as the resource server `qlam-introspect`)?
fn active(idp: &Idp, http: &dyn HttpClient, token: &str) -> bool {
    let basic = base64_basic("qlam-introspect", "introspect-secret");
    let res = http
        .post_form(
            &format!("{}/token/introspection", idp.issuer),
            &[("Authorization", &basic)],
            &[("token", token)],
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    v["active"] == true
}

fn base64_basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

#[test]
#[ignore = "needs node (the test IdP) and PyPI (qlam-core): run by tests/run-all.sh"]
fn private_key_jwt_es256_and_rs256_and_qlam_core_loads_the_config() {
    let idp = the_idp();
    let _g = exclusive();
    for (file, alg) in [
        ("m2m-jwt-es256.pem", "ES256"),
        ("m2m-jwt-rs256.pem", "RS256"),
    ] {
        let key = idp.dir.join(file);
        let home = M2mHome::new(
            idp,
            "qlam-m2m-jwt",
            &format!("private_key_jwt:{}", key.display()),
        );
        let broker = home.broker(idp);
        broker.check_login().unwrap();
        let before = cc(idp);
        let got = broker.obtain(&opts()).unwrap();
        assert_eq!(got.source, Source::Renewed, "{alg}");
        assert_eq!(cc(idp) - before, 1, "{alg}: one token request");
        assert!(
            active(idp, &*idp.http(), got.access_token.expose()),
            "{alg}"
        );
        // Cached afterwards.
        assert_eq!(broker.obtain(&opts()).unwrap().source, Source::Cache);
        assert_eq!(cc(idp) - before, 1);
        // QLAM Core loads this config (private_key_jwt lives inside client_secret) and reads
        // the cached token we wrote.
        let q = qlam_core_in(idp, &home.paths, home.dir.path(), "read", "ctx", "svc");
        assert_eq!(q["ok"], true, "{alg}: {q}");
        assert_eq!(q["fingerprint"], got.access_token.fingerprint(), "{alg}");
    }
    // A key the IdP does not know: invalid_client, with the fix in the message.
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home = M2mHome::new(
        idp,
        "qlam-m2m-jwt",
        &format!("private_key_jwt:{}", other.display()),
    );
    let e = home.broker(idp).obtain(&opts()).unwrap_err();
    assert!(
        matches!(&e, Error::IdpRefused { code, .. } if *code == token_core::oauth::OAuthErrorCode::InvalidClient),
        "{e:?}"
    );
    // A key file others can read is refused before anything is sent.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = home.broker(idp).check_login().unwrap_err();
    assert!(matches!(e, Error::InsecurePermissions { .. }), "{e:?}");
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn rotation_tries_the_next_secret_on_invalid_client() {
    let idp = the_idp();
    let _g = exclusive();
    // A secret file whose first line is stale and whose second is the current secret.
    let home = M2mHome::new(idp, "qlam-m2m", "file:PLACEHOLDER");
    let secret_file = home.private_file("secret", "old-secret\nm2m-secret\n");
    let cfg = home.paths.config_file.clone();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("PLACEHOLDER", secret_file.to_str().unwrap()),
    )
    .unwrap();
    let broker = home.broker(idp);
    let (before, refused) = (cc(idp), idp.errors("invalid_client"));
    let got = broker.obtain(&opts()).unwrap();
    assert_eq!(got.source, Source::Renewed);
    assert_eq!(
        idp.errors("invalid_client") - refused,
        1,
        "the stale secret was refused once"
    );
    assert_eq!(
        cc(idp) - before,
        2,
        "two requests: stale secret, then the next one"
    );
    assert!(active(idp, &*idp.http(), got.access_token.expose()));
    let usage = token_core::budget::read_usage(broker.store().dir(), &idp.issuer, "qlam-m2m")
        .unwrap()
        .unwrap();
    assert_eq!(usage.requests, 2, "both requests are charged to the budget");

    // Both wrong: the IdP's invalid_client is reported, after exactly two tries.
    std::fs::write(&secret_file, "old-secret\nalso-wrong\n").unwrap();
    home.expire(&broker);
    let before = cc(idp);
    let e = broker.obtain(&opts()).unwrap_err();
    assert!(
        matches!(&e, Error::IdpRefused { code, .. } if *code == token_core::oauth::OAuthErrorCode::InvalidClient),
        "{e:?}"
    );
    assert!(e.to_string().contains("client_secret"), "{e}");
    assert_eq!(cc(idp) - before, 2);

    // env:VAR with VAR_NEXT, and client_secret_post chosen in qlam-auth.json.
    let home = M2mHome::new(idp, "qlam-m2m-post", "env:PIPE_SECRET");
    let settings = home.paths.config_dir.join("qlam-auth.json");
    std::fs::write(
        &settings,
        r#"{"clients": {"qlam-m2m-post": {"token_endpoint_auth_method": "client_secret_post"}}}"#,
    )
    .unwrap();
    let provider = token_core::config::Config::load(&home.paths)
        .unwrap()
        .provider_with_env(Some("ctx"), &|k| match k {
            "PIPE_SECRET" => Some("retired".into()),
            "PIPE_SECRET_NEXT" => Some("m2m-post-secret".into()),
            _ => None,
        })
        .unwrap();
    let broker = Broker::new(&home.paths, provider, &idp.http_settings(), &|k| {
        std::env::var(k).ok()
    })
    .unwrap()
    .with_http(idp.http());
    let before = cc(idp);
    let got = broker.obtain(&opts()).unwrap();
    assert_eq!(cc(idp) - before, 2);
    assert!(active(idp, &*idp.http(), got.access_token.expose()));
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn budget_warns_then_refuses_and_counts_only_real_requests() {
    let idp = the_idp();
    let _g = exclusive();
    let home = M2mHome::new(idp, "qlam-m2m", "m2m-secret");
    let broker = home
        .broker(idp)
        .with_settings(Settings::with_budget(Some(3), Some(60)));
    let dir = broker.store().dir().to_owned();
    let usage = || {
        token_core::budget::read_usage(&dir, &idp.issuer, "qlam-m2m")
            .unwrap()
            .map_or(0, |u| u.requests)
    };
    let before = cc(idp);
    for round in 1..=3u64 {
        let got = broker.obtain(&opts()).unwrap();
        assert_eq!(got.source, Source::Renewed);
        // Cache hits cost nothing.
        for _ in 0..3 {
            assert_eq!(broker.obtain(&opts()).unwrap().source, Source::Cache);
        }
        assert_eq!(usage(), round);
        assert_eq!(cc(idp) - before, round);
        home.expire(&broker);
    }
    // The fourth real request would exceed the budget of 3: refused, nothing sent.
    let e = broker.obtain(&opts()).unwrap_err();
    assert!(
        matches!(e, Error::BudgetExhausted { limit: 3, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("budget of 3"), "{e}");
    assert_eq!(
        cc(idp) - before,
        3,
        "no request beyond the budget reaches the IdP"
    );
    assert_eq!(usage(), 3);
    // The budget file is private and names the month.
    let file = token_core::budget::usage_path(&dir, broker.provider());
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        v["month"],
        token_core::budget::month_of(token_core::time::Timestamp::now())
    );
    assert_eq!(v["client_id"], "qlam-m2m");
    // Raising the budget (QLAM_TOKEN_BUDGET / qlam-auth.json) lets it go on.
    let broker = home
        .broker(idp)
        .with_settings(Settings::with_budget(Some(4), None));
    broker.obtain(&opts()).unwrap();
    assert_eq!(usage(), 4);
}

/// A tiny resource server on 127.0.0.1 (plain HTTP, test only): 200 for a token the IdP says is
/// active (introspection), else 401. Counts requests.
fn resource_server(idp: &'static Idp) -> (String, Arc<AtomicU32>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/jobs", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        let http = idp.http();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut token = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line
                    .strip_prefix("Authorization: Bearer ")
                    .or_else(|| line.strip_prefix("authorization: Bearer "))
                {
                    token = v.trim().to_owned();
                }
            }
            h.fetch_add(1, Ordering::SeqCst);
            let ok = !token.is_empty() && active(idp, &*http, &token);
            let (status, body) = if ok {
                ("200 OK", "{\"ok\":true}")
            } else {
                ("401 Unauthorized", "{\"error\":\"invalid_token\"}")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn token_source_retries_once_after_a_401_and_only_if_the_token_did_not_change() {
    let idp = the_idp();
    let _g = exclusive();
    let (url, hits) = resource_server(idp);
    let home = M2mHome::new(idp, "qlam-m2m", "m2m-secret");
    let source = TokenSource::new(home.broker(idp)).with_options(opts());
    let http = token_core::http::UreqClient::new(&idp.http_settings()).unwrap();
    let before = cc(idp);
    let t1 = source.token().unwrap();
    assert_eq!(source.get(&http, &url, &[]).unwrap().status, 200);
    assert_eq!(cc(idp) - before, 1);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The IdP revokes the token (its client revokes it): the resource says 401; the source gets
    // one new token and retries once.
    let oauth = source.broker().oauth().unwrap();
    assert!(oauth.revoke(&t1, "access_token").unwrap());
    assert!(!active(idp, &http, t1.expose()));
    let res = source.get(&http, &url, &[]).unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 3, "one 401, one retry");
    assert_eq!(cc(idp) - before, 2, "exactly one new token");
    let t2 = source.token().unwrap();
    assert_ne!(t2, t1);

    // Another user of the same cache reports the old token as refused: the cache already holds
    // a newer one, so no request goes to the IdP.
    let other = TokenSource::new(home.broker(idp)).with_options(opts());
    let again = other.replace(&t1).unwrap();
    assert_eq!(again.source, Source::RenewedByOther);
    assert_eq!(again.access_token, t2);
    assert_eq!(cc(idp) - before, 2);

    // A token the resource refuses even when new (here: every token, the server's
    // introspection is pointed at a revoked one): one retry only, then the 401 is returned.
    let res = source
        .send(&|_auth| {
            http.get(
                &url,
                &[("Authorization", &format!("Bearer {}", t1.expose()))],
            )
        })
        .unwrap();
    assert_eq!(res.status, 401);
    assert_eq!(cc(idp) - before, 3, "one renewal for the one retry");
}
