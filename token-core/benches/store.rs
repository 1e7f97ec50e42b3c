//! The store's read path (what every job start pays on the fast path), and the durable write
//! (the length of the window in which a kill -9 after a rotation loses the login).
//!
//!     cargo bench -p token-core --bench store
//!
//! Numbers and their meaning: docs/performance.md.

#![allow(clippy::unwrap_used)] // benchmark set-up: a panic is a broken benchmark
#![allow(missing_docs)] // criterion_main! generates an undocumented main

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use token_core::paths::QshPaths;
use token_core::secret::Secret;
use token_core::store::{CredentialStore, TokenSet, parse_credentials, render_credentials};
use token_core::time::Timestamp;

/// A token set of realistic size: ES256 JWT access and ID tokens (~0.8 kB each), a 43-character
/// opaque refresh token, QLAM Core's default scope.
fn realistic_tokens() -> TokenSet {
    let jwt = |n: usize| {
        format!(
            "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.{}.{}",
            "x".repeat(n),
            "s".repeat(86)
        )
    };
    TokenSet {
        access_token: Secret::new(jwt(640)),
        token_type: "Bearer".into(),
        expires_in: Some(86_400),
        refresh_token: Some(Secret::new("r".repeat(43))),
        id_token: Some(Secret::new(jwt(700))),
        scope: Some("openid email profile offline_access organization:test".into()),
        created_at: Timestamp::now(),
    }
}

fn bench_store(c: &mut Criterion) {
    let home = tempfile::tempdir().unwrap();
    let config_dir = home.path().join(".qsh");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::set_permissions(&config_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let paths = QshPaths::resolve(home.path(), &|_| None);
    let store = CredentialStore::new(&paths);
    let key = "oauth_lab_testidp";
    let tokens = realistic_tokens();
    let file = store.save(key, "lab", &tokens).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    eprintln!("credentials file: {} bytes", bytes.len());

    let mut g = c.benchmark_group("store");
    g.bench_function("load (open, fstat checks, read, parse)", |b| {
        b.iter(|| black_box(store.load(black_box(key)).unwrap().unwrap()))
    });
    g.bench_function("parse_credentials (bytes in memory)", |b| {
        b.iter(|| black_box(parse_credentials(Path::new("x"), black_box(&bytes)).unwrap()))
    });
    g.bench_function("render_credentials", |b| {
        let now = Timestamp::now();
        b.iter(|| black_box(render_credentials("lab", black_box(&tokens), now).unwrap()))
    });
    g.sample_size(30);
    g.bench_function("save (temp file, fsync, rename, fsync dir)", |b| {
        b.iter(|| black_box(store.save(key, "lab", black_box(&tokens)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
