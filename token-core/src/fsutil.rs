//! Careful file work: open without following symlinks, check owner and mode on the opened
//! descriptor, cap sizes, and replace files atomically and durably.
//!
//! Every check is made on an open descriptor (`fstat`), never on a path, so a file cannot be
//! swapped between check and use. Files inside a directory are reached with `openat` relative to
//! the directory's descriptor, so the directory cannot be swapped either. The race that remains:
//! a path's *parent* components (e.g. `/home/alice`) are resolved normally; they are owned by the
//! user or root on any sane system.

use crate::{Error, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The effective uid of this process (in the plugin: the job user's).
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// What ownership and mode a file or directory must have.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Mode bits that must not be set (e.g. `0o077` for private, `0o022` for not writable by others).
    pub forbidden_mode: u32,
    /// Also accept files owned by root (for config files an admin may have placed).
    pub allow_root_owner: bool,
}

impl Policy {
    /// Only the user may access it (credentials).
    pub const PRIVATE: Policy = Policy {
        forbidden_mode: 0o077,
        allow_root_owner: false,
    };
    /// The qsh config directory: the user's own, not changeable by others (may be readable).
    pub const CONFIG_DIR: Policy = Policy {
        forbidden_mode: 0o022,
        allow_root_owner: false,
    };
    /// Only the user may change it (config).
    pub const NOT_WRITABLE_BY_OTHERS: Policy = Policy {
        forbidden_mode: 0o022,
        allow_root_owner: true,
    };
}

/// Checks an open descriptor's owner and mode against `policy`; `path` is for messages only.
pub fn check_stat(st: &Stat, path: &Path, policy: Policy, is_dir: bool) -> Result<()> {
    let me = euid();
    let owner = st.st_uid;
    if owner != me && !(policy.allow_root_owner && owner == 0) {
        return Err(Error::InsecurePermissions {
            path: path.to_owned(),
            detail: format!("it belongs to uid {owner}, not to you (uid {me})"),
            fix: format!(
                "rm -r '{}' (as its owner) and log in again, or point QSH_CONFIG_DIR elsewhere",
                path.display()
            ),
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & policy.forbidden_mode != 0 {
        let want = if is_dir { 0o700 } else { 0o600 };
        let want = if policy.forbidden_mode == 0o022 {
            want | (mode & 0o055 & !0o022)
        } else {
            want
        };
        return Err(Error::InsecurePermissions {
            path: path.to_owned(),
            detail: format!(
                "its mode is {mode:04o}, which lets other users {}",
                if mode & 0o022 != 0 {
                    "change it"
                } else {
                    "read it"
                }
            ),
            fix: format!("chmod {want:o} '{}'", path.display()),
        });
    }
    Ok(())
}

fn io_err(e: rustix::io::Errno) -> std::io::Error {
    e.into()
}

/// Opens a directory without following a symlink in its last component and checks it.
/// `Ok(None)` if it does not exist.
pub fn open_dir(path: &Path, policy: Policy) -> Result<Option<OwnedFd>> {
    let flags =
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
            return Err(not_a_plain(path, "directory"));
        }
        Err(e) => return Err(Error::store_io(path, "cannot open directory", &io_err(e))),
    };
    let st =
        rustix::fs::fstat(&fd).map_err(|e| Error::store_io(path, "cannot stat", &io_err(e)))?;
    check_stat(&st, path, policy, true)?;
    Ok(Some(fd))
}

fn not_a_plain(path: &Path, what: &str) -> Error {
    Error::InsecurePermissions {
        path: path.to_owned(),
        detail: format!("it is a symbolic link or not a {what}"),
        fix: format!(
            "replace '{}' with a real {what} (mv it away, then log in again)",
            path.display()
        ),
    }
}

/// Opens (creating with mode 0700 if missing) a private directory `name` inside `parent`.
pub fn open_or_create_dir_at(
    parent: BorrowedFd<'_>,
    parent_path: &Path,
    name: &str,
    policy: Policy,
) -> Result<OwnedFd> {
    let path = parent_path.join(name);
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => {
            return Err(Error::store_io(
                &path,
                "cannot create directory",
                &io_err(e),
            ));
        }
    }
    let flags =
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::openat(parent, name, flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => not_a_plain(&path, "directory"),
        e => Error::store_io(&path, "cannot open directory", &io_err(e)),
    })?;
    let st =
        rustix::fs::fstat(&fd).map_err(|e| Error::store_io(&path, "cannot stat", &io_err(e)))?;
    check_stat(&st, &path, policy, true)?;
    Ok(fd)
}

/// Creates `path` (and missing parents, mode 0700) and opens it as a checked directory.
pub fn create_dir_all_private(path: &Path, policy: Policy) -> Result<OwnedFd> {
    if let Some(fd) = open_dir(path, policy)? {
        return Ok(fd);
    }
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .recursive(true)
        .create(path)
        .map_err(|e| Error::store_io(path, "cannot create directory", &e))?;
    open_dir(path, policy)?
        .ok_or_else(|| Error::store(path, "directory vanished right after it was created"))
}

/// Reads a regular file `name` in `dir` without following a symlink; checks it with `policy`
/// and refuses files larger than `max` bytes. `Ok(None)` if it does not exist.
pub fn read_file_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    policy: Policy,
    max: u64,
) -> Result<Option<Vec<u8>>> {
    let path = dir_path.join(name);
    // O_NONBLOCK: a FIFO planted in place of the file must not hang us.
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => return Err(not_a_plain(&path, "file")),
        Err(e) => return Err(Error::store_io(&path, "cannot open", &io_err(e))),
    };
    read_checked(fd, &path, policy, max).map(Some)
}

/// Reads a file by path, following symlinks (for config files), with checks on the target.
pub fn read_file_following(path: &Path, policy: Policy, max: u64) -> Result<Option<Vec<u8>>> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(Error::store_io(path, "cannot open", &io_err(e))),
    };
    read_checked(fd, path, policy, max).map(Some)
}

fn read_checked(fd: OwnedFd, path: &Path, policy: Policy, max: u64) -> Result<Vec<u8>> {
    let st =
        rustix::fs::fstat(&fd).map_err(|e| Error::store_io(path, "cannot stat", &io_err(e)))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(not_a_plain(path, "regular file"));
    }
    check_stat(&st, path, policy, false)?;
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > max {
        return Err(Error::store(
            path,
            format!("the file is {size} bytes, more than the {max} allowed"),
        ));
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // The size can grow after fstat: read at most max + 1 bytes to notice.
    File::from(fd)
        .take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::store_io(path, "cannot read", &e))?;
    if buf.len() as u64 > max {
        return Err(Error::store(
            path,
            format!("the file grew beyond the {max} bytes allowed"),
        ));
    }
    Ok(buf)
}

/// Identity of a file as seen when it was read: device, inode, size, mtime. Used to tell
/// whether someone replaced it since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
}

/// The [`FileId`] of `name` in `dir` (without following symlinks), `None` if absent.
pub fn file_id_at(dir: BorrowedFd<'_>, name: &str) -> Option<FileId> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    Some(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size,
        mtime: (st.st_mtime, st.st_mtime_nsec as i64),
    })
}

/// Replaces `name` in `dir` atomically and durably: a new temp file (`O_CREAT|O_EXCL`, `mode`)
/// in the same directory, write, fsync, rename over `name`, fsync the directory. A crash at any
/// point leaves either the old or the new complete file (plus, at worst, a stray temp file).
pub fn atomic_write_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<PathBuf> {
    let path = dir_path.join(name);
    let mut last_err = None;
    for _ in 0..8 {
        let tmp = format!(".{name}.{}.tmp", random_suffix());
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => {
                last_err = Some(io_err(e));
                break;
            }
        };
        let result = write_sync_rename(fd, dir, &tmp, name, bytes, mode);
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
            return Err(Error::store_io(&path, "cannot write", &e));
        }
        rustix::fs::fsync(dir)
            .map_err(|e| Error::store_io(dir_path, "cannot sync directory", &io_err(e)))?;
        return Ok(path);
    }
    let e =
        last_err.unwrap_or_else(|| std::io::Error::other("could not find a free temporary name"));
    Err(Error::store_io(&path, "cannot create a temporary file", &e))
}

fn write_sync_rename(
    fd: OwnedFd,
    dir: BorrowedFd<'_>,
    tmp: &str,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    // The umask may have narrowed the mode; never widen beyond `mode`.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(io_err)?;
    let mut f = File::from(fd);
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    crate::faultpoint::hit("fsutil.before_rename");
    rustix::fs::renameat(dir, tmp, dir, name).map_err(io_err)?;
    crate::faultpoint::hit("fsutil.after_rename");
    Ok(())
}

/// Removes `name` from `dir` (not following symlinks); absent is fine.
pub fn remove_at(dir: BorrowedFd<'_>, dir_path: &Path, name: &str) -> Result<bool> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => {
            rustix::fs::fsync(dir)
                .map_err(|e| Error::store_io(dir_path, "cannot sync directory", &io_err(e)))?;
            Ok(true)
        }
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(Error::store_io(
            dir_path.join(name),
            "cannot remove",
            &io_err(e),
        )),
    }
}

/// 16 random hex digits.
pub fn random_suffix() -> String {
    let mut b = [0u8; 8];
    // getrandom reads the kernel CSPRNG; if even that fails, fall back to time and pid so that a
    // temp name is still unlikely to collide (names are only used with O_EXCL).
    if getrandom::fill(&mut b).is_err() {
        let t = crate::time::Timestamp::now().unix_seconds() as u64
            ^ u64::from(std::process::id()) << 32;
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Before root creates anything under the absolute `path`: every existing component, from `/`
/// on, must be a real directory (not a symlink), owned by root and not writable by group or
/// others, so that no other user can swap a directory on the way. The first missing component
/// ends the walk (root creates the rest itself).
pub fn check_root_owned_ancestors(path: &Path) -> Result<()> {
    use std::path::Component;
    if !path.is_absolute() {
        return Err(Error::store(path, "not an absolute path"));
    }
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut at = PathBuf::from("/");
    let mut fd = rustix::fs::open("/", flags | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| Error::store_io("/", "cannot open", &io_err(e)))?;
    check_trusted_dir(&fd, &at)?;
    for c in path.components() {
        let name = match c {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(n) => n,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::store(path, "contains '..'"));
            }
        };
        at.push(name);
        fd = match rustix::fs::openat(&fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::store_io(&at, "cannot open", &io_err(e))),
        };
        check_trusted_dir(&fd, &at)?;
    }
    Ok(())
}

fn check_trusted_dir(fd: &OwnedFd, path: &Path) -> Result<()> {
    let st = rustix::fs::fstat(fd).map_err(|e| Error::store_io(path, "cannot stat", &io_err(e)))?;
    let fix = format!(
        "make every directory of the path a real directory owned by root and not writable by \
         others (chown root '{0}'; chmod go-w '{0}'), or choose another path",
        path.display()
    );
    let detail = if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        "it is a symbolic link or not a directory".to_owned()
    } else if st.st_uid != 0 {
        format!("it belongs to uid {}, not to root", st.st_uid)
    } else if st.st_mode & 0o022 != 0 {
        format!(
            "its mode is {:04o}: other users can replace what is in it",
            st.st_mode & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(Error::InsecurePermissions {
        path: path.to_owned(),
        detail,
        fix,
    })
}

/// Borrow helper so callers can pass `&OwnedFd`.
pub fn fd(f: &OwnedFd) -> BorrowedFd<'_> {
    f.as_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review item 7: a directory on the way to `token_dir` / `m2m_cache` that another
    /// user could change is refused before root creates anything under it.
    #[test]
    fn root_owned_ancestors() {
        // Root-owned system directories, then missing components: fine.
        check_root_owned_ancestors(Path::new("/usr/share/qlam-auth-test-missing/x")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        // /tmp itself is world-writable (sticky or not: an entry can be planted there first).
        let e = check_root_owned_ancestors(&tmp.path().join("tokens")).unwrap_err();
        assert_eq!(e.kind(), "insecure_permissions", "{e}");
        assert!(e.to_string().contains("other users can replace"), "{e}");
        assert!(check_root_owned_ancestors(Path::new("relative/x")).is_err());
        assert!(check_root_owned_ancestors(Path::new("/usr/../tmp/x")).is_err());
        // A symlink on the way (to a root-owned directory) is refused too.
        let e = check_root_owned_ancestors(Path::new("/proc/self/root/usr/x")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
