//! The per-credentials-file lock that makes refreshes single-flight.
//!
//! An exclusive `flock` (std's `File::lock`) on `<credentials file>.lock`, a private regular
//! file that is never deleted (deleting lock files reintroduces the race). The kernel frees the
//! lock when its holder dies, however it dies. On NFS, Linux emulates `flock` with POSIX byte
//! range locks, which the server shares across clients; Lustre needs the `flock` mount option;
//! `local_lock=flock` or `local_lock=all` on an NFS mount makes the lock node-local
//! (see docs/architecture.md).

use crate::fsutil::{self, Policy};
use crate::{Error, Result};
use rustix::fs::{FileType, Mode, OFlags};
use std::fs::{File, TryLockError};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    path: PathBuf,
    waited: Duration,
}

impl StoreLock {
    /// How long it took to get the lock.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock too; unlocking first makes it immediate even
        // if a forked child still shares the descriptor.
        let _ = self.file.unlock();
    }
}

/// Opens (creating 0600) the lock file `name` in `dir` and locks it exclusively, waiting at most
/// `timeout`. Between polls it asks `done_elsewhere`: when that says the work the lock was wanted
/// for has been done by the holder (e.g. the token was refreshed), it stops waiting and returns
/// `Ok(None)`. Many waiters thus leave as soon as the one refresh lands, instead of queueing for
/// the lock one after another only to find there is nothing left to do.
pub fn acquire(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    timeout: Duration,
    on_wait: &mut dyn FnMut(Duration),
    done_elsewhere: &mut dyn FnMut() -> bool,
) -> Result<Option<StoreLock>> {
    let path = dir_path.join(name);
    let flags = OFlags::RDWR
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NONBLOCK
        | OFlags::NOCTTY;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| Error::store_io(&path, "cannot open lock file", &e.into()))?;
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| Error::store_io(&path, "cannot stat lock file", &e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::store(&path, "the lock file is not a regular file"));
    }
    fsutil::check_stat(&st, &path, Policy::PRIVATE, false)?;
    let file = File::from(fd);
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    let mut next_report = Duration::from_secs(1);
    loop {
        match file.try_lock() {
            Ok(()) => {
                return Ok(Some(StoreLock {
                    file,
                    path,
                    waited: start.elapsed(),
                }));
            }
            Err(TryLockError::WouldBlock) => {
                if done_elsewhere() {
                    return Ok(None);
                }
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::store(
                    &path,
                    format!(
                        "cannot lock ({e}); the filesystem may not support locks (see `qlam-auth doctor`)"
                    ),
                ));
            }
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::LockTimeout { path, waited });
        }
        if waited >= next_report {
            on_wait(waited);
            next_report += Duration::from_secs(1);
        }
        // Polling keeps the wait bounded without a helper thread or a signal (the plugin runs
        // inside slurmstepd); a little jitter keeps many waiters from waking in step.
        let jitter = Duration::from_micros(u64::from(fsutil::random_suffix().as_bytes()[0]) * 20);
        std::thread::sleep((pause + jitter).min(timeout.saturating_sub(waited)));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
