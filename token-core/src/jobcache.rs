//! One job token per job, not per node: a cache of exchanged job tokens in the user's qsh
//! directory (`<config_dir>/qlam-auth-jobs/<job>-<token file>.json`, 0600 in a 0700
//! directory), under a lock beside each entry. The user's home is the one place every node of a
//! job reaches (a shared filesystem, with the same `flock` requirements as the credentials
//! store), and `user_init` and the renewer run as the user, so they can read and lock it; root
//! never touches it.
//!
//! [`JobCache::get_or_exchange`] is single flight: the first caller for a job exchanges, the
//! others wait for the lock and take its token. An entry is removed by the renewer when the job
//! has ended on a node ([`JobCache::remove`]); entries whose token has expired are pruned
//! whenever a new one is written, so a job without a renewer leaves nothing behind for long.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::exchange::{Exchanged, Request};
use crate::fsutil::{self, Policy};
use crate::paths::QshPaths;
use crate::secret::Secret;
use crate::time::Timestamp;
use crate::{Error, Result};

/// The directory name under the qsh config directory.
pub const DIR_NAME: &str = "qlam-auth-jobs";

/// What one entry holds.
#[derive(Serialize, Deserialize)]
struct Entry {
    token: String,
    expires_at: Option<i64>,
    lifetime: Option<u64>,
    audience: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    subject: Option<String>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

/// Where a cached job token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// Another step or node of the job exchanged it.
    Cache,
    /// This call exchanged it.
    Exchanged,
}

/// The job-token cache of one user.
#[derive(Debug, Clone)]
pub struct JobCache {
    dir: PathBuf,
}

/// The entry name for `job` and its token file `file_name`.
fn key(job: u32, file_name: &str) -> Result<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._-@+".contains(c);
    if file_name.is_empty() || file_name.starts_with('.') || !file_name.chars().all(ok) {
        return Err(Error::store(
            Path::new(file_name),
            "not a token file name of a job",
        ));
    }
    Ok(format!("{job}-{file_name}"))
}

impl JobCache {
    /// The cache in `paths.config_dir`.
    pub fn new(paths: &QshPaths) -> Self {
        JobCache {
            dir: paths.config_dir.join(DIR_NAME),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The job's token for `file_name` if the cache holds one for `req`'s audience and scope
    /// that is valid for `min_valid`; otherwise `exchange()` is called (under the entry's lock,
    /// waiting at most `lock_timeout` for another caller; a waiter leaves as soon as the
    /// holder's token lands) and its token is cached. `exchange` returns the job token and the
    /// user's subject (kept for the audit line of later callers); so does this.
    pub fn get_or_exchange(
        &self,
        job: u32,
        file_name: &str,
        req: &Request,
        min_valid: Duration,
        lock_timeout: Duration,
        exchange: &mut dyn FnMut() -> Result<(Exchanged, Option<String>)>,
    ) -> Result<(Exchanged, Option<String>, From)> {
        let key = key(job, file_name)?;
        let dir = fsutil::create_dir_all_private(&self.dir, Policy::PRIVATE)?;
        let fresh = |e: &Entry| {
            e.audience == req.audience
                && (req.scope.is_none() || e.scope == req.scope)
                && e.expires_at.is_some_and(|x| {
                    Timestamp::now().seconds_until(Timestamp::from_unix_seconds(x))
                        >= i64::try_from(min_valid.as_secs()).unwrap_or(i64::MAX)
                })
        };
        let cached = |this: &Self| this.read(&dir, &key).filter(|e| fresh(e));
        if let Some(e) = cached(self) {
            return Ok((to_exchanged(&e), e.subject.clone(), From::Cache));
        }
        let lock = crate::lock::acquire(
            fsutil::fd(&dir),
            &self.dir,
            &format!(".{key}.lock"),
            lock_timeout,
            &mut |_| {},
            &mut || cached(self).is_some(),
        )?;
        if let Some(e) = cached(self) {
            return Ok((to_exchanged(&e), e.subject.clone(), From::Cache));
        }
        if lock.is_none() {
            return Err(Error::LockTimeout {
                path: self.dir.join(format!(".{key}.lock")),
                waited: lock_timeout,
            });
        }
        let (x, subject) = exchange()?;
        let meta = crate::exchange::Meta::of(&x, Timestamp::now());
        let entry = Entry {
            token: x.token.expose().to_owned(),
            expires_at: meta.expires_at,
            lifetime: meta.lifetime,
            audience: meta.audience,
            scope: meta.scope,
            subject: subject.clone(),
        };
        let bytes = Zeroizing::new(serde_json::to_vec(&entry).map_err(|e| {
            Error::store(&self.dir, format!("cannot encode a job token entry: {e}"))
        })?);
        fsutil::atomic_write_at(
            fsutil::fd(&dir),
            &self.dir,
            &format!("{key}.json"),
            &bytes,
            0o600,
        )?;
        self.prune(&dir, &key);
        drop(lock);
        Ok((x, subject, From::Exchanged))
    }

    /// Removes the job's entry for `file_name` (the job has ended); `Ok(false)` if none.
    pub fn remove(&self, job: u32, file_name: &str) -> Result<bool> {
        let key = key(job, file_name)?;
        let Some(dir) = fsutil::open_dir(&self.dir, Policy::PRIVATE)? else {
            return Ok(false);
        };
        let removed = fsutil::remove_at(fsutil::fd(&dir), &self.dir, &format!("{key}.json"))?;
        let _ = fsutil::remove_at(fsutil::fd(&dir), &self.dir, &format!(".{key}.lock"));
        Ok(removed)
    }

    fn read(&self, dir: &std::os::fd::OwnedFd, key: &str) -> Option<Entry> {
        let bytes = fsutil::read_file_at(
            fsutil::fd(dir),
            &self.dir,
            &format!("{key}.json"),
            Policy::PRIVATE,
            64 * 1024,
        )
        .ok()??;
        let bytes = Zeroizing::new(bytes);
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes the entries (and their locks) of other jobs whose token has expired.
    fn prune(&self, dir: &std::os::fd::OwnedFd, keep: &str) {
        let Ok(list) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = Timestamp::now().unix_seconds();
        for name in list
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
        {
            let Some(k) = name.strip_suffix(".json") else {
                continue;
            };
            if k == keep || k.starts_with('.') {
                continue;
            }
            if self
                .read(dir, k)
                .is_some_and(|e| e.expires_at.is_some_and(|x| x <= now))
            {
                let _ = fsutil::remove_at(fsutil::fd(dir), &self.dir, &name);
                let _ = fsutil::remove_at(fsutil::fd(dir), &self.dir, &format!(".{k}.lock"));
            }
        }
    }
}

/// A cached token, with what is left of its life as its lifetime (so that its expiry, now plus
/// the lifetime, stays what it was).
fn to_exchanged(e: &Entry) -> Exchanged {
    let now = Timestamp::now().unix_seconds();
    Exchanged {
        token: Secret::new(e.token.clone()),
        lifetime: e
            .expires_at
            .map(|x| Duration::from_secs(x.saturating_sub(now).max(0) as u64))
            .or(e.lifetime.map(Duration::from_secs)),
        scope: e.scope.clone(),
        audience: e.audience.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cache() -> (tempfile::TempDir, JobCache) {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let paths = QshPaths::resolve(d.path(), &|_| None);
        std::fs::create_dir(&paths.config_dir).unwrap();
        std::fs::set_permissions(&paths.config_dir, std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let c = JobCache::new(&paths);
        (d, c)
    }

    fn req(aud: &str) -> Request {
        Request {
            audience: Some(aud.into()),
            scope: Some("read".into()),
            lifetime: Some(Duration::from_secs(600)),
        }
    }

    fn token(t: &str, life: u64) -> Exchanged {
        Exchanged {
            token: Secret::new(t),
            lifetime: Some(Duration::from_secs(life)),
            scope: Some("read".into()),
            audience: Some("https://a".into()),
        }
    }

    #[test]
    fn the_second_step_takes_the_first_ones_token() {
        let (_d, c) = cache();
        let mut calls = 0;
        let r = req("https://a");
        let mut ex = || {
            calls += 1;
            Ok((token("tok-1", 600), Some("alice".to_owned())))
        };
        let a = c
            .get_or_exchange(
                7,
                "token",
                &r,
                Duration::from_secs(60),
                Duration::ZERO,
                &mut ex,
            )
            .unwrap();
        let b = c
            .get_or_exchange(
                7,
                "token",
                &r,
                Duration::from_secs(60),
                Duration::ZERO,
                &mut ex,
            )
            .unwrap();
        assert_eq!((a.2, b.2), (From::Exchanged, From::Cache));
        assert_eq!(b.0.token.expose(), "tok-1");
        assert_eq!(b.1.as_deref(), Some("alice"));
        let left = b.0.lifetime.unwrap().as_secs();
        assert!(
            (599..=600).contains(&left),
            "a cached token keeps its expiry: {left}"
        );
        assert_eq!(calls, 1);
        let mode = std::fs::metadata(c.dir().join("7-token.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another audience, or a token too short for min_valid: a new exchange.
        let other = req("https://b");
        let mut ex2 = || Ok((token("tok-2", 600), None));
        assert_eq!(
            c.get_or_exchange(
                7,
                "token",
                &other,
                Duration::from_secs(60),
                Duration::ZERO,
                &mut ex2
            )
            .unwrap()
            .2,
            From::Exchanged
        );
        assert!(c.remove(7, "token").unwrap());
        assert!(!c.remove(7, "token").unwrap());
    }

    #[test]
    fn expired_entries_of_other_jobs_are_pruned() {
        let (_d, c) = cache();
        let r = req("https://a");
        // Lifetime 0: expired as soon as it is written.
        c.get_or_exchange(1, "token", &r, Duration::ZERO, Duration::ZERO, &mut || {
            Ok((token("old", 0), None))
        })
        .unwrap();
        c.get_or_exchange(2, "token", &r, Duration::ZERO, Duration::ZERO, &mut || {
            Ok((token("new", 600), None))
        })
        .unwrap();
        assert!(!c.dir().join("1-token.json").exists());
        assert!(c.dir().join("2-token.json").exists());
    }

    #[test]
    fn names_are_checked() {
        assert!(key(1, "../x").is_err());
        assert!(key(1, ".hidden").is_err());
        assert_eq!(key(3, "token-prod").unwrap(), "3-token-prod");
    }
}
