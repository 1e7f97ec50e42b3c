//! The worker of the fan-in benchmark (bench/fanin.sh), and its set-up and check steps.
//!
//!     obtain login --home DIR --ca CA.pem --user NAME   device login, approved headlessly
//!                                                       (node tests/idp/approve.mjs)
//!     obtain expire --home DIR                          make the stored access token 1 h old
//!     obtain run --home DIR --ca CA.pem --gate FIFO --ready FILE
//!                                                       wait at the gate, Broker::obtain, print JSON
//!     obtain check --home DIR --ca CA.pem               is the login still usable? (expires the
//!                                                       access token and refreshes once)
//!
//! The context is `lab` in `DIR/.qsh/config.json`. `run` prints one JSON line:
//! `{"ok":true,"source":"Renewed","elapsed_us":..,"lock_wait_us":..,"done_unix_ns":..}` or
//! `{"ok":false,"error":"login_expired",...}`; never a token.
//!
//! Build: `cargo build --release -p token-core --examples`.

use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use token_core::broker::{Broker, ObtainOptions};
use token_core::config::Config;
use token_core::http::HttpSettings;
use token_core::paths::QshPaths;
use token_core::store::CredentialStore;
use token_core::time::Timestamp;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const CONTEXT: &str = "lab";

struct Args {
    verb: String,
    home: PathBuf,
    ca: Option<PathBuf>,
    user: Option<String>,
    gate: Option<PathBuf>,
    ready: Option<PathBuf>,
}

fn args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let verb = it
        .next()
        .ok_or("usage: obtain login|expire|run|check --home DIR ...")?;
    let mut a = Args {
        verb,
        home: PathBuf::new(),
        ca: None,
        user: None,
        gate: None,
        ready: None,
    };
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--home" => a.home = v.into(),
            "--ca" => a.ca = Some(v.into()),
            "--user" => a.user = Some(v),
            "--gate" => a.gate = Some(v.into()),
            "--ready" => a.ready = Some(v.into()),
            _ => return Err(format!("unknown option {k}").into()),
        }
    }
    Ok(a)
}

fn broker(a: &Args) -> Res<Broker> {
    let paths = QshPaths::resolve(&a.home, &|_| None);
    let provider =
        Config::load(&paths)?.provider_with_env(Some(CONTEXT), &|k| std::env::var(k).ok())?;
    let http = HttpSettings {
        ca_bundle: a.ca.clone(),
        ..HttpSettings::default()
    };
    Ok(Broker::new(&paths, provider, &http, &|k| {
        std::env::var(k).ok()
    })?)
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn login(a: &Args) -> Res<()> {
    let b = broker(a)?;
    let oauth = b.oauth()?;
    let auth = oauth.start_device()?;
    let approve = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/idp/approve.mjs");
    let ca = a.ca.as_ref().ok_or("--ca is required")?;
    let user = a.user.as_deref().ok_or("--user is required")?;
    let st = std::process::Command::new("node")
        .arg(approve)
        .arg("--issuer")
        .arg(&b.provider().issuer)
        .arg("--ca")
        .arg(ca)
        .args([
            "--user",
            user,
            "--password",
            &format!("{user}-pw"),
            "--user-code",
            &auth.user_code,
        ])
        .status()?;
    if !st.success() {
        return Err("approve.mjs failed".into());
    }
    let tokens = oauth.poll_device(&auth, &mut token_core::oauth::device::Quiet)?;
    b.save_login(tokens)?;
    Ok(())
}

fn expire(a: &Args) -> Res<()> {
    let paths = QshPaths::resolve(&a.home, &|_| None);
    let key = Config::load(&paths)?
        .provider_with_env(Some(CONTEXT), &|k| std::env::var(k).ok())?
        .cache_key();
    let store = CredentialStore::new(&paths);
    let mut t = store.load(&key)?.ok_or("not logged in")?.tokens;
    t.created_at = Timestamp::now().plus_seconds(-7200);
    t.expires_in = Some(3600);
    store.save(&key, CONTEXT, &t)?;
    Ok(())
}

fn run(a: &Args) -> Res<()> {
    let b = broker(a)?;
    let opts = ObtainOptions {
        lock_timeout: Duration::from_secs(120),
        ..ObtainOptions::default()
    };
    let ready = a.ready.as_ref().ok_or("--ready is required")?;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(ready)?
        .write_all(b".")?;
    // Opening a FIFO for reading blocks until the harness opens it for writing: every worker is
    // released by the same open(2), with no polling.
    let gate = a.gate.as_ref().ok_or("--gate is required")?;
    drop(std::fs::File::open(gate)?);
    let start = Instant::now();
    let out = match b.obtain(&opts) {
        Ok(t) => json!({
            "ok": true,
            "source": format!("{:?}", t.source),
            "elapsed_us": start.elapsed().as_micros() as u64,
            "lock_wait_us": t.lock_wait.as_micros() as u64,
            "done_unix_ns": unix_ns().to_string(),
        }),
        Err(e) => json!({
            "ok": false,
            "error": e.kind(),
            "elapsed_us": start.elapsed().as_micros() as u64,
            "done_unix_ns": unix_ns().to_string(),
        }),
    };
    println!("{out}");
    Ok(())
}

fn check(a: &Args) -> Res<()> {
    let b = broker(a)?;
    let file = b.credentials_path();
    let mut out = json!({"file": file.exists()});
    match b.store().load(&b.provider().cache_key()) {
        Ok(Some(s)) => {
            out["parses"] = true.into();
            out["has_refresh_token"] = s.tokens.refresh_token.is_some().into();
            expire(a)?;
            match b.obtain(&ObtainOptions::default()) {
                Ok(t) => {
                    out["refresh_works"] = t.refreshed.into();
                }
                Err(e) => {
                    out["refresh_works"] = false.into();
                    out["error"] = e.kind().into();
                }
            }
        }
        Ok(None) => out["parses"] = false.into(),
        Err(e) => {
            out["parses"] = false.into();
            out["error"] = e.kind().into();
        }
    }
    println!("{out}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let r = args().and_then(|a| match a.verb.as_str() {
        "login" => login(&a),
        "expire" => expire(&a),
        "run" => run(&a),
        "check" => check(&a),
        v => Err(format!("unknown verb {v}").into()),
    });
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("obtain: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
