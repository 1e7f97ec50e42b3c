//! The service account's JWT, cached for its own short life, and the per-service lock.
//!
//! `<cache_dir>/<service>.jwt` (0600, in a 0700 directory), replaced atomically; the lock is
//! `<cache_dir>/<service>.lock` (never deleted), held while a certificate is being renewed so
//! that processes that start together cost one JWT request and one signing request.

use super::SshResult;
use crate::lock::{self, StoreLock};
use crate::secret::Secret;
use crate::{fsutil, jwt};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A cached JWT is used only while it has at least this many seconds left.
pub const JWT_MIN_LEFT: i64 = 15;

/// The cache directory of one service.
#[derive(Debug)]
pub struct JwtCache {
    dir: OwnedFd,
    dir_path: PathBuf,
    service: String,
}

impl JwtCache {
    /// Opens (creating 0700) the cache directory.
    pub fn open(dir: &Path, service: &str) -> SshResult<Self> {
        let fd = fsutil::create_dir_all_private(dir, fsutil::Policy::PRIVATE)?;
        Ok(JwtCache {
            dir: fd,
            dir_path: dir.to_owned(),
            service: service.to_owned(),
        })
    }

    fn jwt_name(&self) -> String {
        format!("{}.jwt", self.service)
    }

    /// Takes the service's lock; `Ok(None)` if `done_elsewhere` said the work was done while
    /// we waited.
    pub fn lock(
        &self,
        timeout: Duration,
        done_elsewhere: &mut dyn FnMut() -> bool,
    ) -> SshResult<Option<StoreLock>> {
        let name = format!("{}.lock", self.service);
        let mut on_wait = |w: Duration| {
            log::info!(
                "ssh: waiting for {} ({:.0} s): another process is renewing the certificate",
                self.dir_path.join(&name).display(),
                w.as_secs_f64()
            );
        };
        Ok(lock::acquire(
            fsutil::fd(&self.dir),
            &self.dir_path,
            &name,
            timeout,
            &mut on_wait,
            done_elsewhere,
        )?)
    }

    /// The cached JWT, if it has at least [`JWT_MIN_LEFT`] seconds left.
    pub fn load(&self, now: u64) -> SshResult<Option<Secret>> {
        let Some(bytes) = fsutil::read_file_at(
            fsutil::fd(&self.dir),
            &self.dir_path,
            &self.jwt_name(),
            fsutil::Policy::PRIVATE,
            64 * 1024,
        )?
        else {
            return Ok(None);
        };
        let text = Secret::new(String::from_utf8_lossy(&bytes).trim().to_owned());
        let left = jwt::expiry(text.expose()).map(|exp| exp - now as i64);
        match left {
            Some(left) if left >= JWT_MIN_LEFT => {
                log::debug!("ssh: cached token {} ({left} s left)", text.fingerprint());
                Ok(Some(text))
            }
            _ => Ok(None),
        }
    }

    /// Saves the JWT if it lives long enough to be worth it.
    pub fn save(&self, jwt: &Secret, exp: i64, now: u64) -> SshResult<()> {
        if exp - (now as i64) < JWT_MIN_LEFT {
            return Ok(());
        }
        fsutil::atomic_write_at(
            fsutil::fd(&self.dir),
            &self.dir_path,
            &self.jwt_name(),
            jwt.expose().as_bytes(),
            0o600,
        )?;
        Ok(())
    }

    /// Forgets the cached JWT.
    pub fn remove(&self) -> SshResult<()> {
        fsutil::remove_at(fsutil::fd(&self.dir), &self.dir_path, &self.jwt_name())?;
        Ok(())
    }
}
