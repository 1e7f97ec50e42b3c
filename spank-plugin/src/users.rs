//! Users and groups: the [`Uid`] and [`Gid`] newtypes where the plugin decides whom to trust,
//! and the lookups in the password and group databases (getpwuid_r, getgrnam_r,
//! getgrouplist), all through one buffer-growing loop, `grow`.
//!
//! A job's user comes from Slurm (`S_JOB_UID`), never from an environment variable; a user's
//! home comes from the password database, never from `$HOME` (the submitter's, possibly
//! forged). After sudo-rs `src/system/interface.rs`: ids are types, so a gid cannot be passed
//! where a uid is meant.
//!
//! The unsafe code here is the libc calls; each block says why it is sound.

use std::ffi::{CStr, CString, OsStr, c_char, c_int};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;

/// A user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uid(u32);

/// A group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gid(u32);

impl Uid {
    /// root.
    pub const ROOT: Uid = Uid(0);

    /// The user with id `id`.
    pub const fn new(id: u32) -> Self {
        Uid(id)
    }

    /// The number, for a system call.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// True for root, whom the plugin never starts a user's process as.
    pub const fn is_root(self) -> bool {
        self.0 == 0
    }
}

impl Gid {
    /// The group with id `id`.
    pub const fn new(id: u32) -> Self {
        Gid(id)
    }

    /// The number, for a system call.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The real uid of this process (the submitting user in sbatch, salloc and srun).
pub fn real_uid() -> Uid {
    // SAFETY: getuid has no preconditions and cannot fail.
    Uid(unsafe { libc::getuid() })
}

/// What one attempt of a lookup with a caller-sized buffer says.
enum Attempt<T> {
    /// Found (or definitely not found: `None`).
    Done(Option<T>),
    /// The buffer was too small; `Some(n)`: the call said it needs `n` entries.
    TooSmall(Option<usize>),
}

/// The one retry loop of the lookups: calls `attempt` with a buffer of `initial` entries,
/// growing it (to what the call asked for, else four times) while it is too small, up to
/// `max` entries; `None` past that.
fn grow<B: Clone + Default, T>(
    initial: usize,
    max: usize,
    mut attempt: impl FnMut(&mut [B]) -> Attempt<T>,
) -> Option<T> {
    let mut buf = vec![B::default(); initial];
    loop {
        match attempt(&mut buf) {
            Attempt::Done(found) => return found,
            Attempt::TooSmall(needed) => {
                let next = needed
                    .filter(|n| *n > buf.len())
                    .unwrap_or(buf.len().checked_mul(4)?);
                if buf.len() >= max || next > max {
                    return None;
                }
                buf.resize(next, B::default());
            }
        }
    }
}

/// What the return code of a `get*_r` call says when it is not a success: too small a buffer
/// (`ERANGE`), or no entry (any other error, or no result).
fn failed_attempt<T>(rc: c_int, no_result: bool) -> Option<Attempt<T>> {
    if rc == libc::ERANGE {
        Some(Attempt::TooSmall(None))
    } else if rc != 0 || no_result {
        Some(Attempt::Done(None))
    } else {
        None
    }
}

/// Copies a C string that may be NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
unsafe fn copy_c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated (this function's contract).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Looks `uid` up in the password database and hands the entry to `read`, which must copy what
/// it needs: the entry's strings live in a buffer that is freed when this returns.
fn with_passwd<T>(uid: Uid, read: impl FnOnce(&libc::passwd) -> Option<T>) -> Option<T> {
    let mut read = Some(read);
    grow(4096, 1 << 20, |buf: &mut [c_char]| {
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = ptr::null_mut();
        // SAFETY: `pwd` is writable storage for one passwd, `buf` is writable for `buf.len()`
        // bytes, `result` is a valid out-pointer; getpwuid_r is thread-safe and writes only
        // into these.
        let rc = unsafe {
            libc::getpwuid_r(
                uid.0,
                pwd.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if let Some(failed) = failed_attempt(rc, result.is_null()) {
            return failed;
        }
        // SAFETY: on success `result` points to `pwd`, now initialised, whose strings point into
        // `buf`, which outlives this borrow.
        let entry = unsafe { &*result };
        Attempt::Done(read.take().and_then(|r| r(entry)))
    })
}

/// The home directory of `uid` from the password database, never `$HOME`; only an absolute one.
pub fn home_dir(uid: Uid) -> Option<PathBuf> {
    with_passwd(uid, |pw| {
        // SAFETY: `pw_dir` is NULL or a C string inside the live getpwuid_r buffer.
        let dir = unsafe { copy_c_string(pw.pw_dir) }?;
        let dir = PathBuf::from(OsStr::from_bytes(dir.as_bytes()));
        dir.is_absolute().then_some(dir)
    })
}

/// The login name and primary group of `uid` from the password database.
fn name_and_gid(uid: Uid) -> Option<(CString, Gid)> {
    with_passwd(uid, |pw| {
        // SAFETY: `pw_name` is NULL or a C string inside the live getpwuid_r buffer; copied at once.
        let name = unsafe { copy_c_string(pw.pw_name) }?;
        Some((CString::new(name).ok()?, Gid(pw.pw_gid)))
    })
}

/// The groups of `uid`: its primary group and every group that lists it (getgrouplist).
pub fn groups(uid: Uid) -> Option<Vec<Gid>> {
    let (name, gid) = name_and_gid(uid)?;
    grow(64, 65_536, |groups: &mut [libc::gid_t]| {
        let Ok(mut count) = c_int::try_from(groups.len()) else {
            return Attempt::Done(None);
        };
        // SAFETY: `name` is a C string; `groups` is writable for `count` entries and `count` is
        // a valid in/out pointer; getgrouplist writes at most `count` entries and sets `count`.
        let rc =
            unsafe { libc::getgrouplist(name.as_ptr(), gid.0, groups.as_mut_ptr(), &mut count) };
        let count = usize::try_from(count).ok();
        if rc >= 0 {
            let n = count.unwrap_or(0).min(groups.len());
            return Attempt::Done(Some(groups[..n].iter().copied().map(Gid).collect()));
        }
        // Too small: glibc reports the number needed in `count`.
        Attempt::TooSmall(count)
    })
}

/// The id of the group `name` (getgrnam_r).
pub fn group_by_name(name: &str) -> Option<Gid> {
    let name = CString::new(name).ok()?;
    grow(4096, 1 << 22, |buf: &mut [c_char]| {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = ptr::null_mut();
        // SAFETY: `name` is a C string; `grp`, `buf` (for `buf.len()` bytes) and `result` are
        // valid, writable and outlive the call; getgrnam_r writes only into them.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if let Some(failed) = failed_attempt(rc, result.is_null()) {
            return failed;
        }
        // SAFETY: on success `result` points to `grp`, now initialised.
        Attempt::Done(Some(Gid(unsafe { (*result).gr_gid })))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_from_the_group_database() {
        let root = groups(Uid::ROOT).unwrap_or_default();
        assert!(root.contains(&Gid::new(0)), "{root:?}");
        assert_eq!(group_by_name("root"), Some(Gid::new(0)));
        assert_eq!(group_by_name("no-such-group-qlam"), None);
    }

    #[test]
    fn home_of_root_comes_from_the_password_database() {
        assert_eq!(home_dir(Uid::ROOT), Some(PathBuf::from("/root")));
    }

    #[test]
    fn the_buffer_grows_to_what_the_call_asks_and_stops_at_the_bound() {
        let mut sizes = Vec::new();
        let got = grow(4, 1000, |b: &mut [u8]| {
            sizes.push(b.len());
            match b.len() {
                4 => Attempt::TooSmall(None),
                16 => Attempt::TooSmall(Some(100)),
                n => Attempt::Done(Some(n)),
            }
        });
        assert_eq!(got, Some(100));
        assert_eq!(sizes, [4, 16, 100]);
        let mut calls = 0;
        let never = grow(4, 64, |_: &mut [u8]| -> Attempt<()> {
            calls += 1;
            Attempt::TooSmall(None)
        });
        assert_eq!(never, None);
        assert_eq!(calls, 3, "4, 16, 64, then the bound");
    }
}
