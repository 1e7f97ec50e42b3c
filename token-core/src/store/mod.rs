//! QLAM Core's v1 credentials files, read and written compatibly.
//!
//! One file per (context, provider): `<config dir>/credentials/cache_<prefix>_<sha256>.json`,
//! mode 0600 in a 0700 directory. The tokens live in `extra.token_data`; `data` holds the access
//! token again (base64 of `{"token": ...}`), and `expires_at` is the access token's expiry
//! (`token_data.created_at` truncated to the minute, plus `expires_in`).
//!
//! Reading refuses symlinks, foreign owners, group/world access and oversized files. Writing is
//! atomic and durable ([`crate::fsutil::atomic_write_at`]). Concurrency is handled by the caller
//! holding the [`crate::lock`] for the same file; QLAM Core itself takes no lock, so
//! [`CredentialStore::save_if_unchanged`] refuses to overwrite a file that changed since it was
//! read.
//!
//! This module is the store (file naming, directories, load/save, lock); the file format is in
//! `format`, the token set in `tokens`, the refused-login marker in `refused` and the recovery of
//! an interrupted write in `recover`.

use crate::fsutil::{self, FileId, Policy};
use crate::lock::StoreLock;
use crate::paths::QshPaths;
use crate::time::Timestamp;
use crate::{Error, Result};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

mod format;
mod recover;
mod refused;
mod tokens;

pub use format::{parse_credentials, render_credentials};
pub use tokens::TokenSet;

/// Suffix of the marker of a refused refresh token, beside its credentials file.
pub const REFUSED_SUFFIX: &str = ".refused";

/// Largest credentials file we read.
pub const MAX_CREDENTIALS_BYTES: u64 = 256 * 1024;

/// The config directory may be read by others but not changed by them.
const CONFIG_DIR_POLICY: Policy = Policy {
    forbidden_mode: 0o022,
    allow_root_owner: false,
};

/// Tokens read from the store, with what is needed to tell later whether the file changed.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The tokens.
    pub tokens: TokenSet,
    /// The file's identity when read.
    pub file_id: Option<FileId>,
    /// The file's path.
    pub path: PathBuf,
}

/// What [`CredentialStore::save_if_unchanged`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The new tokens are in place.
    Saved,
    /// Someone else replaced the file since it was read; it was left alone.
    ChangedMeanwhile,
}

/// The credentials directory of one user.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    config_dir: PathBuf,
    credentials_dir: PathBuf,
}

/// QLAM Core's file name for a cache key.
pub fn cache_file_name(cache_key: &str) -> String {
    let mut sanitized = String::with_capacity(cache_key.len());
    let mut in_run = false;
    for c in cache_key.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            sanitized.push(c);
            in_run = false;
        } else if !in_run {
            sanitized.push('_');
            in_run = true;
        }
    }
    let trimmed = sanitized.trim_matches(|c| c == '.' || c == '_');
    let prefix: String = if trimmed.is_empty() {
        "default".into()
    } else {
        trimmed.chars().take(64).collect()
    };
    let hash = crate::digest::sha256(cache_key.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("cache_{prefix}_{hex}.json")
}

impl CredentialStore {
    /// The store under `paths.credentials_dir`.
    pub fn new(paths: &QshPaths) -> Self {
        CredentialStore {
            config_dir: paths.config_dir.clone(),
            credentials_dir: paths.credentials_dir.clone(),
        }
    }

    /// The credentials directory.
    pub fn dir(&self) -> &Path {
        &self.credentials_dir
    }

    /// The file that holds `cache_key`'s credentials.
    pub fn path_for(&self, cache_key: &str) -> PathBuf {
        self.credentials_dir.join(cache_file_name(cache_key))
    }

    fn open_dir(&self) -> Result<Option<OwnedFd>> {
        if fsutil::open_dir(&self.config_dir, CONFIG_DIR_POLICY)?.is_none() {
            return Ok(None);
        }
        fsutil::open_dir(&self.credentials_dir, Policy::PRIVATE)
    }

    fn open_or_create_dir(&self) -> Result<OwnedFd> {
        let parent = fsutil::create_dir_all_private(&self.config_dir, CONFIG_DIR_POLICY)?;
        let name = self
            .credentials_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::store(&self.credentials_dir, "not a valid directory name"))?;
        if self.credentials_dir.parent() == Some(self.config_dir.as_path()) {
            fsutil::open_or_create_dir_at(
                fsutil::fd(&parent),
                &self.config_dir,
                name,
                Policy::PRIVATE,
            )
        } else {
            fsutil::create_dir_all_private(&self.credentials_dir, Policy::PRIVATE)
        }
    }

    /// Reads `cache_key`'s tokens. `Ok(None)` when there is no file, or a file without token data
    /// (QLAM Core treats that as "not logged in" too).
    pub fn load(&self, cache_key: &str) -> Result<Option<Stored>> {
        let Some(dir) = self.open_dir()? else {
            return Ok(None);
        };
        let name = cache_file_name(cache_key);
        let path = self.credentials_dir.join(&name);
        let file_id = fsutil::file_id_at(fsutil::fd(&dir), &name);
        let Some(bytes) = fsutil::read_file_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &name,
            Policy::PRIVATE,
            MAX_CREDENTIALS_BYTES,
        )?
        else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        Ok(parse_credentials(&path, &bytes)?.map(|tokens| Stored {
            tokens,
            file_id,
            path,
        }))
    }

    /// Writes `tokens` for `cache_key` (atomically, durably, 0600), creating the directories.
    pub fn save(&self, cache_key: &str, context: &str, tokens: &TokenSet) -> Result<PathBuf> {
        let dir = self.open_or_create_dir()?;
        let bytes = render_credentials(context, tokens, Timestamp::now())?;
        fsutil::atomic_write_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &cache_file_name(cache_key),
            &bytes,
            0o600,
        )
    }

    /// Writes `tokens` only if the file is still the one read as `expected` (`None`: absent).
    /// Meant to be called under the store lock; the check-then-rename window that remains is
    /// against writers that take no lock (QLAM Core).
    pub fn save_if_unchanged(
        &self,
        cache_key: &str,
        context: &str,
        tokens: &TokenSet,
        expected: Option<FileId>,
    ) -> Result<SaveOutcome> {
        let dir = self.open_or_create_dir()?;
        let name = cache_file_name(cache_key);
        if fsutil::file_id_at(fsutil::fd(&dir), &name) != expected {
            return Ok(SaveOutcome::ChangedMeanwhile);
        }
        let bytes = render_credentials(context, tokens, Timestamp::now())?;
        fsutil::atomic_write_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &name,
            &bytes,
            0o600,
        )?;
        Ok(SaveOutcome::Saved)
    }

    /// Deletes `cache_key`'s credentials. `Ok(false)` if there were none.
    pub fn remove(&self, cache_key: &str) -> Result<bool> {
        let Some(dir) = self.open_dir()? else {
            return Ok(false);
        };
        fsutil::remove_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &cache_file_name(cache_key),
        )
    }

    /// Takes the exclusive lock for `cache_key` (a `.lock` file beside the credentials file),
    /// waiting at most `timeout`; `on_wait` is called about once a second while waiting.
    pub fn lock(
        &self,
        cache_key: &str,
        timeout: Duration,
        on_wait: &mut dyn FnMut(Duration),
    ) -> Result<StoreLock> {
        self.lock_unless(cache_key, timeout, on_wait, &mut || false)?
            .ok_or_else(|| {
                Error::store(
                    &self.credentials_dir,
                    "the lock wait ended without the lock",
                )
            })
    }

    /// As [`CredentialStore::lock`], but stops waiting with `Ok(None)` as soon as
    /// `done_elsewhere` (asked between polls) says the holder did the work.
    pub fn lock_unless(
        &self,
        cache_key: &str,
        timeout: Duration,
        on_wait: &mut dyn FnMut(Duration),
        done_elsewhere: &mut dyn FnMut() -> bool,
    ) -> Result<Option<StoreLock>> {
        let dir = self.open_or_create_dir()?;
        let name = format!("{}.lock", cache_file_name(cache_key));
        crate::lock::acquire(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &name,
            timeout,
            on_wait,
            done_elsewhere,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_matches_qlam_core() {
        // Values computed with qlam_core 0.10 CredentialsCache._get_cache_file_path.
        assert_eq!(
            cache_file_name("oauth_dev/us_main"),
            format!(
                "cache_oauth_dev_us_main_{}.json",
                hex_sha("oauth_dev/us_main")
            )
        );
        assert!(cache_file_name("..//..").starts_with("cache_default_"));
        let long = "x".repeat(100);
        assert!(cache_file_name(&long).starts_with(&format!("cache_{}_", "x".repeat(64))));
        assert!(cache_file_name("a  b!!c").starts_with("cache_a_b_c_"));
    }

    fn hex_sha(s: &str) -> String {
        crate::digest::sha256(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
