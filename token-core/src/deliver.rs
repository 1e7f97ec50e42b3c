//! Handing a token to a job: a private per-job directory and token file.
//!
//! Layout: `<base>/<job id>/token`. `<base>` belongs to root (0711); the job directory belongs to
//! the job's user (0700); the file is 0600 and replaced atomically, so a reader sees the old or
//! the new token, never half of one. Pre-created files and symlinks are refused or removed
//! without being followed.

use crate::fsutil::{self, Policy};
use crate::secret::Secret;
use crate::{Error, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Re-labels store-level errors as delivery errors (their message must not send the user to
/// `qlam-auth login` for a node problem).
fn delivery(e: Error) -> Error {
    match e {
        Error::Store { path, detail } => Error::Delivery { path, detail },
        Error::InsecurePermissions { path, detail, fix } => Error::Delivery {
            path,
            detail: format!("{detail} (fix: {fix})"),
        },
        e => e,
    }
}

fn valid_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::store(name, "not a valid file name"));
    }
    Ok(())
}

fn open_base(base: &Path, create: bool) -> Result<Option<OwnedFd>> {
    // The base is shared by all users' jobs: only its owner (root, in the plugin) may write it.
    let policy = Policy {
        forbidden_mode: 0o022,
        allow_root_owner: false,
    };
    if create && fsutil::open_dir(base, policy)?.is_none() {
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o711);
        match b.recursive(true).create(base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::store_io(
                    base,
                    "cannot create the token directory",
                    &e,
                ));
            }
        }
    }
    fsutil::open_dir(base, policy)
}

/// As root: makes `<base>/<name>` a directory owned by `uid:gid`, mode 0700 (creating `<base>`
/// as root 0711 if needed). An existing one is accepted only if it is a real directory owned by
/// `uid`.
pub fn prepare_job_dir(base: &Path, name: &str, uid: u32, gid: u32) -> Result<PathBuf> {
    prepare_job_dir_inner(base, name, uid, gid).map_err(delivery)
}

fn prepare_job_dir_inner(base: &Path, name: &str, uid: u32, gid: u32) -> Result<PathBuf> {
    valid_name(name)?;
    let path = base.join(name);
    let basefd =
        open_base(base, true)?.ok_or_else(|| Error::store(base, "the token directory vanished"))?;
    let created = match rustix::fs::mkdirat(&basefd, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(rustix::io::Errno::EXIST) => false,
        Err(e) => {
            return Err(Error::store_io(
                &path,
                "cannot create the job token directory",
                &e.into(),
            ));
        }
    };
    let fd = rustix::fs::openat(
        &basefd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::store_io(
            &path,
            "cannot open the job token directory (not a real directory?)",
            &e.into(),
        )
    })?;
    let st =
        rustix::fs::fstat(&fd).map_err(|e| Error::store_io(&path, "cannot stat", &e.into()))?;
    if created || st.st_uid == fsutil::euid() {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| {
            Error::store_io(
                &path,
                "cannot hand the job token directory to the job's user",
                &e.into(),
            )
        })?;
    } else if st.st_uid != uid {
        return Err(Error::store(
            &path,
            format!(
                "it belongs to uid {}, not to the job's user {uid}",
                st.st_uid
            ),
        ));
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))
        .map_err(|e| Error::store_io(&path, "cannot chmod", &e.into()))?;
    Ok(path)
}

/// As the job's user: writes `token` (and a newline) to `<dir>/<file_name>`, mode 0600, atomically.
/// `dir` must be a private directory of this user.
pub fn write_token_file(dir: &Path, file_name: &str, token: &Secret) -> Result<PathBuf> {
    write_token_file_inner(dir, file_name, token).map_err(delivery)
}

fn write_token_file_inner(dir: &Path, file_name: &str, token: &Secret) -> Result<PathBuf> {
    valid_name(file_name)?;
    let fd = fsutil::open_dir(dir, Policy::PRIVATE)?
        .ok_or_else(|| Error::store(dir, "the job token directory does not exist"))?;
    let mut content = zeroize::Zeroizing::new(Vec::with_capacity(token.expose().len() + 1));
    content.extend_from_slice(token.expose().as_bytes());
    content.push(b'\n');
    fsutil::atomic_write_at(fd.as_fd(), dir, file_name, &content, 0o600)
}

/// As the job's user: reads a token file written by [`write_token_file`]; `Ok(None)` if absent.
pub fn read_token_file(path: &Path) -> Result<Option<Secret>> {
    read_token_file_inner(path).map_err(delivery)
}

fn read_token_file_inner(path: &Path) -> Result<Option<Secret>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(Error::store(path, "not a file path"));
    };
    let Some(fd) = fsutil::open_dir(dir, Policy::PRIVATE)? else {
        return Ok(None);
    };
    let Some(bytes) = fsutil::read_file_at(fd.as_fd(), dir, name, Policy::PRIVATE, 64 * 1024)?
    else {
        return Ok(None);
    };
    let bytes = zeroize::Zeroizing::new(bytes);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::store(path, "the token file is not UTF-8"))?
        .trim();
    Ok((!text.is_empty()).then(|| Secret::new(text)))
}

/// As root: removes `<base>/<name>` and everything in it, never following a symlink. Absent is
/// fine.
pub fn remove_job_dir(base: &Path, name: &str) -> Result<()> {
    remove_job_dir_inner(base, name).map_err(delivery)
}

fn remove_job_dir_inner(base: &Path, name: &str) -> Result<()> {
    valid_name(name)?;
    let Some(basefd) = open_base(base, false)? else {
        return Ok(());
    };
    remove_tree_at(basefd.as_fd(), &base.join(name), name, 0)
}

fn remove_tree_at(parent: BorrowedFd<'_>, path: &Path, name: &str, depth: u32) -> Result<()> {
    let err = |e: rustix::io::Errno| Error::store_io(path, "cannot remove", &e.into());
    let fd = match rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        // A symlink or a file where the directory should be: remove the entry itself.
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(err);
        }
        Err(e) => return Err(err(e)),
    };
    if depth > 16 {
        return Err(Error::store(path, "nested too deeply"));
    }
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd).map_err(err)? {
        let entry = entry.map_err(err)?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            names.push((n, entry.file_type()));
        }
    }
    for (n, ty) in names {
        if ty == FileType::Directory {
            remove_tree_at(fd.as_fd(), &path.join(&n), &n, depth + 1)?;
        } else {
            match rustix::fs::unlinkat(&fd, n.as_str(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(rustix::io::Errno::ISDIR) => {
                    remove_tree_at(fd.as_fd(), &path.join(&n), &n, depth + 1)?
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_remove_as_the_same_user() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("tokens");
        let me = fsutil::euid();
        let gid = rustix::process::getegid().as_raw();
        let dir = prepare_job_dir(&base, "42", me, gid).unwrap();
        let f = write_token_file(&dir, "token", &Secret::new("tok")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(read_token_file(&f).unwrap(), Some(Secret::new("tok")));
        // Hostile content inside the job dir: a symlink to something precious and a subdir.
        let precious = tmp.path().join("precious");
        std::fs::write(&precious, "keep").unwrap();
        std::os::unix::fs::symlink(&precious, dir.join("link")).unwrap();
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        remove_job_dir(&base, "42").unwrap();
        assert!(!dir.exists());
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
        remove_job_dir(&base, "42").unwrap();
    }

    #[test]
    fn refuses_symlinked_job_dir_and_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("tokens");
        std::fs::create_dir(&base).unwrap();
        std::os::unix::fs::symlink(tmp.path(), base.join("7")).unwrap();
        let me = fsutil::euid();
        assert!(prepare_job_dir(&base, "7", me, 0).is_err());
        assert!(prepare_job_dir(&base, "../x", me, 0).is_err());
        // Cleanup removes the link, not what it points to.
        remove_job_dir(&base, "7").unwrap();
        assert!(tmp.path().exists() && !base.join("7").exists());
    }
}
