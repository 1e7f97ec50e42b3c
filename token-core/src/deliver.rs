//! Handing a token to a job: a private per-job directory and token file.
//!
//! Layout: `<base>/<job id>/token`. `<base>` belongs to root (0711); the job directory belongs to
//! the job's user (0700); the file is 0600 and replaced atomically, so a reader sees the old or
//! the new token, never half of one. Pre-created files and symlinks are refused or removed
//! without being followed.

use crate::fsutil::{self, Policy};
use crate::secret::Secret;
use crate::{Error, Result};
use rustix::fs::{AtFlags, Mode, OFlags};
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
    let mkdir = || match rustix::fs::mkdirat(&basefd, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(Error::store_io(
            &path,
            "cannot create the job token directory",
            &e.into(),
        )),
    };
    let open = || {
        rustix::fs::openat(
            &basefd,
            name,
            OFlags::RDONLY
                | OFlags::DIRECTORY
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC
                | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| {
            Error::store_io(
                &path,
                "cannot open the job token directory (not a real directory?)",
                &e.into(),
            )
        })
    };
    let stat = |fd: &OwnedFd| {
        rustix::fs::fstat(fd).map_err(|e| Error::store_io(&path, "cannot stat", &e.into()))
    };
    let mut created = mkdir()?;
    let mut fd = open()?;
    let mut st = stat(&fd)?;
    if !created && st.st_uid != uid && st.st_uid != fsutil::euid() {
        // Left over by an earlier job with this id, of another user (its cleanup was cut
        // short): move it aside (a later cleanup removes it) and start afresh.
        drop(fd);
        let name_c = std::ffi::CString::new(name).map_err(|_| Error::store(&path, "bad name"))?;
        move_aside(basefd.as_fd(), &path, &name_c)?;
        created = mkdir()?;
        fd = open()?;
        st = stat(&fd)?;
    }
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

/// Bounds on the work one cleanup may do. The job's user decides what is in the job directory
/// (any names, any depth, any number of entries): cleanup must neither fail on it nor run long,
/// since it runs in slurmd's epilog.
#[derive(Debug, Clone, Copy)]
pub struct CleanupLimits {
    /// Most entries (files, directories) removed or moved in one call.
    pub max_entries: u64,
    /// Most time spent in one call.
    pub max_time: std::time::Duration,
}

impl Default for CleanupLimits {
    /// 100 000 entries or 2 s, whichever comes first: the bound on the epilog's cleanup.
    fn default() -> Self {
        CleanupLimits {
            max_entries: 100_000,
            max_time: std::time::Duration::from_secs(2),
        }
    }
}

/// What a cleanup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing was there.
    Absent,
    /// Removed completely.
    Removed,
    /// The limits were reached: what is left was moved aside (`<base>/.trash-...`), so the job
    /// id is free again; later cleanups in the same base finish it.
    MovedAside,
}

/// Prefix of directories moved aside, in `<base>`.
const TRASH_PREFIX: &str = ".trash-";

/// As root: removes `<base>/<name>` and everything in it, never following a symlink and never
/// leaving the filesystem, within the default [`CleanupLimits`]. Absent is fine.
pub fn remove_job_dir(base: &Path, name: &str) -> Result<Cleanup> {
    remove_job_dir_within(base, name, CleanupLimits::default())
}

/// [`remove_job_dir`] with explicit limits. Leftovers moved aside by earlier calls are removed
/// too, with what is left of the limits.
pub fn remove_job_dir_within(base: &Path, name: &str, limits: CleanupLimits) -> Result<Cleanup> {
    remove_job_dir_inner(base, name, limits).map_err(delivery)
}

fn remove_job_dir_inner(base: &Path, name: &str, limits: CleanupLimits) -> Result<Cleanup> {
    valid_name(name)?;
    let Some(basefd) = open_base(base, false)? else {
        return Ok(Cleanup::Absent);
    };
    let mut budget = Budget::new(limits);
    let path = base.join(name);
    let name_c = std::ffi::CString::new(name).map_err(|_| Error::store(&path, "bad name"))?;
    let outcome = match remove_tree_at(basefd.as_fd(), &path, &name_c, &mut budget)? {
        Tree::Absent => Cleanup::Absent,
        Tree::Removed => Cleanup::Removed,
        Tree::OutOfBudget => {
            move_aside(basefd.as_fd(), &path, &name_c)?;
            log::warn!(
                "{}: cleanup limits reached ({} entries or {} ms); the rest was moved aside and \
                 is removed by later cleanups",
                path.display(),
                limits.max_entries,
                limits.max_time.as_millis()
            );
            return Ok(Cleanup::MovedAside);
        }
    };
    // Leftovers of earlier calls, with what is left of the budget.
    for trash in trash_entries(basefd.as_fd(), base)? {
        if budget.exhausted() {
            break;
        }
        let p = base.join(trash.to_string_lossy().as_ref());
        if let Err(e) = remove_tree_at(basefd.as_fd(), &p, &trash, &mut budget) {
            log::warn!("{e}");
        }
    }
    Ok(outcome)
}

/// Moves `<base>/<name>` to a fresh `<base>/.trash-<name>-<random>` (as root, in the root-only
/// base), so that the name is free for a new job.
fn move_aside(basefd: BorrowedFd<'_>, path: &Path, name: &std::ffi::CStr) -> Result<()> {
    let mut last = rustix::io::Errno::EXIST;
    for _ in 0..8 {
        let trash = format!(
            "{TRASH_PREFIX}{}-{}",
            name.to_string_lossy(),
            fsutil::random_suffix()
        );
        match rustix::fs::renameat_with(
            basefd,
            name,
            basefd,
            trash.as_str(),
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => {
                last = e;
                break;
            }
        }
    }
    Err(Error::store_io(
        path,
        "cannot move the job token directory aside",
        &last.into(),
    ))
}

fn trash_entries(basefd: BorrowedFd<'_>, base: &Path) -> Result<Vec<std::ffi::CString>> {
    let err = |e: rustix::io::Errno| Error::store_io(base, "cannot read", &e.into());
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(basefd).map_err(err)? {
        let entry = entry.map_err(err)?;
        if entry
            .file_name()
            .to_bytes()
            .starts_with(TRASH_PREFIX.as_bytes())
        {
            out.push(entry.file_name().to_owned());
        }
    }
    Ok(out)
}

/// Work left in one cleanup.
#[derive(Debug)]
struct Budget {
    entries_left: u64,
    deadline: std::time::Instant,
}

impl Budget {
    fn new(limits: CleanupLimits) -> Self {
        Budget {
            entries_left: limits.max_entries,
            deadline: std::time::Instant::now() + limits.max_time,
        }
    }
    fn exhausted(&self) -> bool {
        self.entries_left == 0 || std::time::Instant::now() >= self.deadline
    }
    /// Takes one entry's worth of work; false when there is none left.
    fn take(&mut self) -> bool {
        if self.exhausted() {
            return false;
        }
        self.entries_left -= 1;
        true
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Tree {
    Absent,
    Removed,
    OutOfBudget,
}

/// Names read from a directory per pass: memory stays bounded whatever the directory holds.
const BATCH: usize = 1024;

fn open_subdir(parent: BorrowedFd<'_>, name: &std::ffi::CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
}

/// Up to [`BATCH`] entry names of `dir` (raw bytes: any name a user can create), without `.`
/// and `..`.
fn read_batch(dir: &mut rustix::fs::Dir) -> rustix::io::Result<Vec<std::ffi::CString>> {
    dir.rewind();
    let mut names = Vec::new();
    for entry in dir.by_ref() {
        let n = entry?.file_name().to_owned();
        if n.as_bytes() != b"." && n.as_bytes() != b".." {
            names.push(n);
            if names.len() == BATCH {
                break;
            }
        }
    }
    Ok(names)
}

/// Removes the tree `name` in `parent` without recursion and with two directories open at a
/// time, whatever its depth: every file is unlinked where it is, and every subdirectory of a
/// subdirectory is first moved up into the top directory (a rename within one filesystem),
/// so the tree gets flatter with each step. Symlinks are removed, never followed; a directory
/// on another filesystem (a mount point) is refused, not entered.
fn remove_tree_at(
    parent: BorrowedFd<'_>,
    path: &Path,
    name: &std::ffi::CStr,
    budget: &mut Budget,
) -> Result<Tree> {
    let err = |e: rustix::io::Errno| Error::store_io(path, "cannot remove", &e.into());
    let top = match open_subdir(parent, name) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Tree::Absent),
        // A symlink or a file where the directory should be: remove the entry itself.
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) => Ok(Tree::Removed),
                Err(rustix::io::Errno::NOENT) => Ok(Tree::Absent),
                Err(e) => Err(err(e)),
            };
        }
        Err(e) => return Err(err(e)),
    };
    let dev = rustix::fs::fstat(&top).map_err(err)?.st_dev;
    let mut top_dir = rustix::fs::Dir::read_from(&top).map_err(err)?;
    let mut moved = 0u64;
    loop {
        let names = read_batch(&mut top_dir).map_err(err)?;
        if names.is_empty() {
            break;
        }
        for n in names {
            if !budget.take() {
                return Ok(Tree::OutOfBudget);
            }
            match rustix::fs::unlinkat(&top, n.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => continue,
                // Linux answers EISDIR for a directory (POSIX allows EPERM).
                Err(rustix::io::Errno::ISDIR | rustix::io::Errno::PERM) => {}
                Err(e) => return Err(err(e)),
            }
            let sub = match open_subdir(top.as_fd(), &n) {
                Ok(fd) => fd,
                // Gone or replaced meanwhile: the next pass takes whatever is there.
                Err(
                    rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP,
                ) => {
                    continue;
                }
                Err(e) => return Err(err(e)),
            };
            if rustix::fs::fstat(&sub).map_err(err)?.st_dev != dev {
                return Err(Error::store(
                    path,
                    "it holds a mount point; unmount it, then remove the directory",
                ));
            }
            let mut sub_dir = rustix::fs::Dir::read_from(&sub).map_err(err)?;
            loop {
                let inner = read_batch(&mut sub_dir).map_err(err)?;
                if inner.is_empty() {
                    break;
                }
                for m in inner {
                    if !budget.take() {
                        return Ok(Tree::OutOfBudget);
                    }
                    match rustix::fs::unlinkat(&sub, m.as_c_str(), AtFlags::empty()) {
                        Ok(()) | Err(rustix::io::Errno::NOENT) => continue,
                        Err(rustix::io::Errno::ISDIR | rustix::io::Errno::PERM) => {}
                        Err(e) => return Err(err(e)),
                    }
                    // A directory two levels down: move it up into the top directory.
                    moved += 1;
                    let up = format!(".qlam-rm-{moved}-{}", fsutil::random_suffix());
                    match rustix::fs::renameat_with(
                        &sub,
                        m.as_c_str(),
                        &top,
                        up.as_str(),
                        rustix::fs::RenameFlags::NOREPLACE,
                    ) {
                        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => return Err(err(e)),
                    }
                }
            }
            match rustix::fs::unlinkat(&top, n.as_c_str(), AtFlags::REMOVEDIR) {
                // ENOTEMPTY: something appeared meanwhile; the next pass takes it again.
                Ok(()) | Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTEMPTY) => {}
                Err(e) => return Err(err(e)),
            }
        }
    }
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(Tree::Removed),
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

    /// Security review item 2: whatever the job's user leaves in the job directory, cleanup
    /// removes it: names that are not UTF-8, any depth, symlinks (not followed), FIFOs.
    #[test]
    fn cleanup_removes_raw_byte_names_and_any_depth() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("tokens");
        let me = fsutil::euid();
        let gid = rustix::process::getegid().as_raw();
        let dir = prepare_job_dir(&base, "43", me, gid).unwrap();
        let raw = |b: &[u8]| dir.join(std::ffi::OsStr::from_bytes(b));
        std::fs::write(raw(b"junk\xff"), "x").unwrap();
        std::fs::create_dir(raw(b"d\xfe\n")).unwrap();
        std::fs::write(
            raw(b"d\xfe\n").join(std::ffi::OsStr::from_bytes(b"f\xff")),
            "x",
        )
        .unwrap();
        let mut deep = dir.join("deep");
        for i in 0..40 {
            deep.push(format!("l{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("bottom"), "x").unwrap();
        let precious = tmp.path().join("precious");
        std::fs::create_dir(&precious).unwrap();
        std::fs::write(precious.join("keep"), "keep").unwrap();
        std::os::unix::fs::symlink(&precious, deep.join("link")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            deep.join("fifo"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        remove_job_dir(&base, "43").unwrap();
        assert!(!dir.exists(), "the job directory is gone");
        assert_eq!(
            std::fs::read_to_string(precious.join("keep")).unwrap(),
            "keep"
        );
        assert_eq!(
            std::fs::read_dir(&base).unwrap().count(),
            0,
            "nothing left in the base"
        );
    }

    /// Security review item 2: a job id reused for another user (the first job's directory
    /// was left behind) must not fail the new job. Needs root (a directory of another uid).
    #[test]
    fn a_job_id_left_behind_by_another_user_is_taken_over() {
        if fsutil::euid() != 0 {
            eprintln!("skipped: needs root to own directories as other users");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("tokens");
        let dir = prepare_job_dir(&base, "9", 60001, 60001).unwrap();
        std::fs::write(dir.join("left-behind"), "old").unwrap();
        let dir = prepare_job_dir(&base, "9", 60002, 60002).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (60002, 0o700));
        assert!(
            !dir.join("left-behind").exists(),
            "the new user sees nothing of the old"
        );
        // The next cleanup in this base removes the old directory as well.
        remove_job_dir(&base, "9").unwrap();
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
    }

    /// Security review item 2: a job directory with more than cleanup may do in one call (an
    /// epilog that runs long drains the node) is cut short at the limit, moved aside so the
    /// job id is free, and finished by later cleanups in the same base.
    #[test]
    fn cleanup_work_is_bounded_and_later_cleanups_finish_it() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("tokens");
        let me = fsutil::euid();
        let gid = rustix::process::getegid().as_raw();
        let dir = prepare_job_dir(&base, "44", me, gid).unwrap();
        for i in 0..3000 {
            std::fs::write(dir.join(format!("f{i}")), "").unwrap();
        }
        std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
        let limits = CleanupLimits {
            max_entries: 500,
            max_time: std::time::Duration::from_secs(60),
        };
        let count = |p: &Path| std::fs::read_dir(p).unwrap().count();
        assert_eq!(
            remove_job_dir_within(&base, "44", limits).unwrap(),
            Cleanup::MovedAside
        );
        assert!(!dir.exists(), "the job id is free again");
        let trash: Vec<_> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(trash.len(), 1, "{trash:?}");
        let left = count(&trash[0]);
        assert!(
            (2500..=2501).contains(&left),
            "500 entries removed, not more: {left} left"
        );
        // No time at all: not one entry is removed, the directory is moved aside at once.
        let d45 = prepare_job_dir(&base, "45", me, gid).unwrap();
        std::fs::write(d45.join("token"), "t").unwrap();
        let none = CleanupLimits {
            max_entries: u64::MAX,
            max_time: std::time::Duration::ZERO,
        };
        assert_eq!(
            remove_job_dir_within(&base, "45", none).unwrap(),
            Cleanup::MovedAside
        );
        assert_eq!(count(&base), 2);
        // The next job's cleanup, with the default limits, removes the leftovers too.
        prepare_job_dir(&base, "46", me, gid).unwrap();
        assert_eq!(remove_job_dir(&base, "46").unwrap(), Cleanup::Removed);
        assert_eq!(count(&base), 0);
    }
}
