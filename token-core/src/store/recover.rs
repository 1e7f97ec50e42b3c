//! Recovery of a write interrupted between its fsync and its rename.

use super::{CredentialStore, MAX_CREDENTIALS_BYTES, cache_file_name, parse_credentials};
use crate::fsutil::{self, Policy};
use crate::time::Timestamp;
use crate::{Error, Result};
use zeroize::Zeroizing;

impl CredentialStore {
    /// Call with the lock held, before spending the stored refresh token. A writer killed after
    /// it wrote and fsynced its temp file (`.<file>.<random>.tmp`) but before the rename leaves
    /// the newest tokens there, while the file still holds a refresh token the IdP has already
    /// rotated away: using that one would be refused and, with reuse detection, revoke the login.
    /// The newest complete temp file that is newer (by `token_data.created_at`) than the stored
    /// tokens is moved into place; every other temp file of this key is removed. Returns true if
    /// a temp file was adopted.
    pub fn recover_interrupted_write(&self, cache_key: &str) -> Result<bool> {
        let Some(dir) = self.open_dir()? else {
            return Ok(false);
        };
        let name = cache_file_name(cache_key);
        let prefix = format!(".{name}.");
        let mut temps = Vec::new();
        let entries = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| Error::store_io(&self.credentials_dir, "cannot list", &e.into()))?;
        for entry in entries.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.ends_with(".tmp") {
                temps.push(n);
            }
        }
        if temps.is_empty() {
            return Ok(false);
        }
        let current = self.load(cache_key)?.map(|s| s.tokens.created_at);
        let mut best: Option<(Timestamp, String)> = None;
        for t in &temps {
            let path = self.credentials_dir.join(t);
            let read = fsutil::read_file_at(
                fsutil::fd(&dir),
                &self.credentials_dir,
                t,
                Policy::PRIVATE,
                MAX_CREDENTIALS_BYTES,
            );
            // A partial (killed while writing) or foreign temp file is simply not a candidate.
            if let Ok(Some(bytes)) = read
                && let Ok(Some(tokens)) = parse_credentials(&path, &Zeroizing::new(bytes))
                && current.is_none_or(|c| tokens.created_at > c)
                && best.as_ref().is_none_or(|(b, _)| tokens.created_at > *b)
            {
                best = Some((tokens.created_at, t.clone()));
            }
        }
        let adopted = match &best {
            Some((_, t)) => {
                rustix::fs::renameat(&dir, t.as_str(), &dir, name.as_str()).map_err(|e| {
                    Error::store_io(
                        self.credentials_dir.join(t),
                        "cannot move into place",
                        &e.into(),
                    )
                })?;
                log::warn!(
                    target: "qlam_auth",
                    "recovered the tokens of an interrupted write ({t}) into {}",
                    self.credentials_dir.join(&name).display()
                );
                true
            }
            None => false,
        };
        for t in temps
            .iter()
            .filter(|t| best.as_ref().is_none_or(|(_, b)| b != *t))
        {
            fsutil::remove_at(fsutil::fd(&dir), &self.credentials_dir, t)?;
        }
        if adopted {
            rustix::fs::fsync(&dir).map_err(|e| {
                Error::store_io(&self.credentials_dir, "cannot sync directory", &e.into())
            })?;
        }
        Ok(adopted)
    }
}
