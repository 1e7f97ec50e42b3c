//! kill -9 during a refresh, against the real test IdP (rotation with reuse detection).
//!
//! A child process (this test binary, `child_refresh`) refreshes one user's expired access token
//! and is SIGKILLed:
//!
//! * at a named fault point (`token_core::faultpoint`: the child blocks there, we kill it), round
//!   robin over the four points of a refresh; and
//! * at a random time after it starts `Broker::obtain`.
//!
//! After every kill the store must be a valid file that holds either the old refresh token or the
//! new one (never a torn file, never deleted), the lock must be free, and we count the trials in
//! which the login is lost (the refresh token in the store is refused by the IdP). A kill after
//! the IdP rotated the refresh token and before the rename put the new one in place loses the
//! login: that window is inherent to rotation without a reuse grace period; it is measured here
//! and discussed in docs/performance.md.
//!
//! Trials: `QLAM_FAULT_TRIALS` (default 200) at the fault points and `QLAM_FAULT_RANDOM_TRIALS`
//! (default 40) at random times; `QLAM_FAULT_WORKERS` (default 3) users work in parallel.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::*;
use token_core::broker::{ObtainOptions, Source};
use token_core::secret::Secret;

const USERS: &str = "f0:f0-pw,f1:f1-pw,f2:f2-pw,f3:f3-pw,f4:f4-pw,f5:f5-pw,f6:f6-pw,f7:f7-pw,\
                     r0:r0-pw,r1:r1-pw,r2:r2-pw,r3:r3-pw";

fn the_idp() -> &'static Idp {
    idp(&[("IDP_ACCESS_TTL", "3600"), ("IDP_USERS", USERS)])
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn opts() -> ObtainOptions {
    ObtainOptions {
        min_valid: Duration::from_secs(60),
        lock_timeout: Duration::from_secs(10),
    }
}

/// The fault points of a refresh, in order, and whether a kill there is expected to lose the
/// login with an IdP that has no reuse grace period.
const POINTS: [(&str, bool); 4] = [
    ("broker.before_refresh", false),
    ("broker.after_response", true),
    ("fsutil.before_rename", false),
    ("fsutil.after_rename", false),
];

/// Child half: refreshes once. Runs only when spawned by a test of this file.
#[test]
#[ignore = "spawned as a child process by the fault tests"]
fn child_refresh() {
    let Ok(home) = std::env::var("QLAM_TEST_CHILD_HOME") else {
        return;
    };
    let paths = token_core::paths::QshPaths::resolve(Path::new(&home), &|_| None);
    let provider = token_core::config::Config::load(&paths)
        .unwrap()
        .provider_with_env(Some(USER_CONTEXT), &|k| std::env::var(k).ok())
        .unwrap();
    let http = token_core::http::HttpSettings {
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
        ca_bundle: Some(std::env::var("QLAM_TEST_CA").unwrap().into()),
        allowed_issuers: None,
        ssl_cert_file: None,
    };
    let broker =
        token_core::broker::Broker::new(&paths, provider, &http, &|k| std::env::var(k).ok())
            .unwrap();
    if std::env::var_os("QLAM_TEST_GATE").is_some() {
        eprintln!("READY");
        let mut b = [0u8; 1];
        let _ = std::io::stdin().read(&mut b);
    }
    match broker.obtain(&opts()) {
        Ok(t) => println!("RESULT ok {:?}", t.source),
        Err(e) => println!("RESULT err {}", e.kind()),
    }
}

/// One user's store, refreshed and killed over and over.
struct Worker {
    home: QshHome,
    user: String,
    logins: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    trials: u32,
    lost: u32,
    kept_old: u32,
    got_new: u32,
    stray_temp_files: u32,
    /// Random-time trials only: the child finished before the kill.
    completed: u32,
}

impl Tally {
    fn add(&mut self, t: &Tally) {
        self.trials += t.trials;
        self.lost += t.lost;
        self.kept_old += t.kept_old;
        self.got_new += t.got_new;
        self.stray_temp_files += t.stray_temp_files;
        self.completed += t.completed;
    }
}

impl Worker {
    fn new(idp: &Idp, user: &str) -> Self {
        let home = QshHome::new(idp);
        home.device_login(idp, user);
        home.expire_access_token(USER_CONTEXT);
        Worker {
            home,
            user: user.to_owned(),
            logins: 1,
        }
    }

    fn key(&self) -> String {
        self.home.provider(USER_CONTEXT).cache_key()
    }

    fn store(&self) -> token_core::store::CredentialStore {
        token_core::store::CredentialStore::new(&self.home.paths)
    }

    fn refresh_token(&self) -> Option<Secret> {
        self.store()
            .load(&self.key())
            .unwrap()
            .expect("the credentials file is there")
            .tokens
            .refresh_token
    }

    fn temp_files(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(self.store().dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with('.') && n.ends_with(".tmp")
            })
            .collect()
    }

    fn spawn(&self, idp: &Idp, point: Option<&str>, gate: bool) -> Child {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "child_refresh",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("QLAM_TEST_CHILD_HOME", self.home.dir.path())
        .env("QLAM_TEST_CA", &idp.ca)
        .env_remove(token_core::faultpoint::ENV)
        .env_remove("QLAM_TEST_GATE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if gate { Stdio::piped() } else { Stdio::null() });
        if let Some(p) = point {
            cmd.env(token_core::faultpoint::ENV, p);
        }
        if gate {
            cmd.env("QLAM_TEST_GATE", "1");
        }
        cmd.spawn().unwrap()
    }

    /// After a kill: the store is valid and holds the old or a new refresh token; the lock is
    /// free; the login works or is lost (then we log in again). Leaves an expired access token
    /// with a working refresh token for the next trial.
    fn check_after_kill(&mut self, idp: &Idp, old: &Option<Secret>, t: &mut Tally) -> bool {
        let now = self.refresh_token();
        assert!(now.is_some(), "the store lost its refresh token");
        let kept_old = &now == old;
        if kept_old {
            t.kept_old += 1;
        } else {
            t.got_new += 1;
        }
        // A temp file is complete (written and fsynced before the kill) or partial (killed while
        // writing). The next refresh, under the lock, adopts a complete newer one and removes
        // the rest (`CredentialStore::recover_interrupted_write`).
        t.stray_temp_files += self.temp_files().len() as u32;
        // Force a refresh with whatever refresh token the store holds now.
        self.home.expire_access_token(USER_CONTEXT);
        let lost = match self.home.broker(idp, USER_CONTEXT).obtain(&opts()) {
            Ok(got) => {
                // RenewedByOther: the tokens of an interrupted write were recovered.
                assert!(
                    matches!(got.source, Source::Renewed | Source::RenewedByOther),
                    "{:?}",
                    got.source
                );
                false
            }
            Err(e) if e.needs_login() => true,
            Err(e) => panic!("after a kill, the next refresh failed unexpectedly: {e}"),
        };
        assert!(
            self.home.credentials_file(USER_CONTEXT).exists(),
            "the credentials file must never be deleted"
        );
        assert_eq!(
            self.temp_files(),
            Vec::<std::path::PathBuf>::new(),
            "the next refresh cleans up temp files"
        );
        if lost {
            t.lost += 1;
            self.home.device_login(idp, &self.user);
            self.logins += 1;
        }
        self.home.expire_access_token(USER_CONTEXT);
        t.trials += 1;
        lost
    }

    /// Kills a child at the armed fault point `point`.
    fn fault_point_trial(&mut self, idp: &Idp, point: &str, t: &mut Tally) -> (bool, bool) {
        let old = self.refresh_token();
        let mut child = self.spawn(idp, Some(point), false);
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("FAULTPOINT ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(
            line.as_deref().ok(),
            Some(format!("FAULTPOINT {point}").as_str()),
            "the child did not reach {point}; it said: {out}"
        );
        assert!(!status.success(), "killed at {point}");
        let kept_old = self.refresh_token() == old;
        let lost = self.check_after_kill(idp, &old, t);
        (lost, kept_old)
    }

    /// Kills a child `delay` after releasing it into `Broker::obtain` (or lets it finish).
    fn random_trial(&mut self, idp: &Idp, delay: Duration, t: &mut Tally) -> bool {
        let old = self.refresh_token();
        let mut child = self.spawn(idp, None, true);
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("READY") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "child ended early"
            );
        }
        child.stdin.take().unwrap().write_all(b"g").unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            t.completed += 1;
        }
        self.check_after_kill(idp, &old, t)
    }
}

fn workers(idp: &Idp, prefix: char, n: usize) -> Vec<Mutex<Worker>> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| s.spawn(move || Mutex::new(Worker::new(idp, &format!("{prefix}{i}")))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// At least 200 kills spread over the four fault points.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn kill_minus_nine_at_each_fault_point_never_corrupts_the_store() {
    let idp = the_idp();
    let trials = env_usize("QLAM_FAULT_TRIALS", 200);
    let n_workers = env_usize("QLAM_FAULT_WORKERS", 3).clamp(1, 8);
    let start = Instant::now();
    let ws = workers(idp, 'f', n_workers);
    let next = AtomicUsize::new(0);
    let tallies: Mutex<[Tally; 4]> = Mutex::new([Tally::default(); 4]);
    std::thread::scope(|s| {
        for w in &ws {
            let (next, tallies) = (&next, &tallies);
            s.spawn(move || {
                let mut w = w.lock().unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= trials {
                        break;
                    }
                    let (point, expect_lost) = POINTS[i % POINTS.len()];
                    let mut t = Tally::default();
                    let (lost, kept_old) = w.fault_point_trial(idp, point, &mut t);
                    // The store holds the old refresh token unless the rename happened.
                    assert_eq!(kept_old, point != "fsutil.after_rename", "{point}");
                    if !expect_lost {
                        assert!(!lost, "a kill at {point} lost the login");
                    }
                    let mut all = tallies.lock().unwrap();
                    all[i % POINTS.len()].add(&t);
                }
            });
        }
    });
    let all = tallies.into_inner().unwrap();
    println!(
        "kill -9 at fault points: {trials} trials, {n_workers} workers, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!(
        "| fault point | trials | store valid | old RT kept | new RT in place | stray temp files | login lost |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((name, _), t) in POINTS.iter().zip(all.iter()) {
        println!(
            "| `{name}` | {} | {} | {} | {} | {} | {} |",
            t.trials, t.trials, t.kept_old, t.got_new, t.stray_temp_files, t.lost
        );
        assert_eq!(t.kept_old + t.got_new, t.trials);
    }
    let total: u32 = all.iter().map(|t| t.trials).sum();
    assert_eq!(total as usize, trials);
    // Points 0, 2 and 3 never lose a login (asserted per trial above: at point 2 the complete
    // temp file is adopted by the next refresh). At point 1 the IdP has rotated the refresh token
    // and nothing of the answer is on disk yet: with reuse detection the next refresh is
    // refused. That is the inherent window; count it.
    assert_eq!(
        all[1].lost, all[1].trials,
        "a kill between the IdP's answer and the temp file's fsync keeps only the spent refresh \
         token; if this now survives, the window has been closed: update docs/performance.md"
    );
    assert_eq!(
        all[2].stray_temp_files, all[2].trials,
        "killed before the rename: one temp file left"
    );
}

/// Kills at random times during `Broker::obtain`: what fraction of kills lose the login.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn kill_minus_nine_at_random_times_never_corrupts_the_store() {
    let idp = the_idp();
    let trials = env_usize("QLAM_FAULT_RANDOM_TRIALS", 40);
    if trials == 0 {
        return;
    }
    let n_workers = env_usize("QLAM_FAULT_WORKERS", 3).clamp(1, 4);
    let start = Instant::now();
    let ws = workers(idp, 'r', n_workers);
    // Calibrate: how long does a whole refresh take in a fresh process, from release to exit?
    let mut full = Vec::new();
    {
        let mut w = ws[0].lock().unwrap();
        for _ in 0..5 {
            let mut t = Tally::default();
            let mut child = w.spawn(idp, None, true);
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            let mut line = String::new();
            while !line.starts_with("READY") {
                line.clear();
                assert!(stderr.read_line(&mut line).unwrap() > 0);
            }
            let released = Instant::now();
            child.stdin.take().unwrap().write_all(b"g").unwrap();
            let st = child.wait().unwrap();
            assert!(st.success());
            full.push(released.elapsed());
            // The store now holds a new refresh token; check it and prepare the next run.
            let _ = w.check_after_kill(idp, &None, &mut t);
        }
    }
    full.sort();
    // Uniform over 1.5 x the median: most kills land inside the refresh, some after it.
    let span = full[full.len() / 2].mul_f64(1.5);
    let seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    println!(
        "random kills: refresh in a fresh process takes {:?}; kills uniform in [0, {span:?}]; seed {seed}",
        full
    );
    let rng = Mutex::new(seed);
    let next = AtomicUsize::new(0);
    let total = Mutex::new(Tally::default());
    std::thread::scope(|s| {
        for w in &ws {
            let (next, total, rng) = (&next, &total, &rng);
            s.spawn(move || {
                let mut w = w.lock().unwrap();
                while next.fetch_add(1, Ordering::SeqCst) < trials {
                    let r = {
                        let mut x = rng.lock().unwrap();
                        *x ^= *x << 13;
                        *x ^= *x >> 7;
                        *x ^= *x << 17;
                        *x
                    };
                    let delay = span.mul_f64((r % 10_000) as f64 / 10_000.0);
                    let mut t = Tally::default();
                    w.random_trial(idp, delay, &mut t);
                    total.lock().unwrap().add(&t);
                }
            });
        }
    });
    let t = total.into_inner().unwrap();
    let killed = t.trials - t.completed;
    println!(
        "random kills: {} trials in {:.1} s: {} finished before the kill, {killed} killed: old RT kept {}, new RT in place {}, stray temp files {}, logins lost {}",
        t.trials,
        start.elapsed().as_secs_f64(),
        t.completed,
        t.kept_old,
        t.got_new,
        t.stray_temp_files,
        t.lost
    );
    println!(
        "random kills: estimated loss window = lost/trials x span = {:.1} ms",
        span.as_secs_f64() * 1000.0 * f64::from(t.lost) / f64::from(t.trials.max(1))
    );
    assert_eq!(t.kept_old + t.got_new, t.trials);
    // Most kills must not lose the login: the window is a small part of a refresh.
    assert!(t.lost * 2 <= t.trials, "{t:?}");
}
