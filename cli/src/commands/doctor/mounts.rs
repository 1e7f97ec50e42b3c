//! Whether the credentials directory's filesystem shares `flock` among the nodes.

use super::report::{Check, Level, check};
use std::path::{Path, PathBuf};

/// One line of /proc/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// Undoes /proc/mounts' octal escapes (`\040` for a space).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (longest mount point that is a prefix of it); later lines win
/// over earlier ones with the same mount point, as the kernel stacks them.
pub fn find_mount(mounts: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let mp = PathBuf::from(unescape_mount(f[1]));
        if !path.starts_with(&mp) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| mp.components().count() >= b.mount_point.components().count());
        if longer {
            best = Some(Mount {
                mount_point: mp,
                fs_type: f[2].to_owned(),
                options: f[3].split(',').map(str::to_owned).collect(),
            });
        }
    }
    best
}

/// Whether `flock` on this filesystem is shared by all nodes that see it.
pub fn classify_mount(m: &Mount) -> (Level, String, Option<String>) {
    let has = |o: &str| m.options.iter().any(|x| x == o);
    let at = m.mount_point.display();
    match m.fs_type.as_str() {
        "nfs" | "nfs4" => {
            if has("local_lock=flock") || has("local_lock=all") || has("nolock") {
                let opt = m
                    .options
                    .iter()
                    .find(|o| o.starts_with("local_lock=") || *o == "nolock")
                    .cloned()
                    .unwrap_or_default();
                (
                    Level::Warn,
                    format!(
                        "{at} is NFS mounted with {opt}: locks are local to each node, so jobs on \
                         different nodes may refresh at once and lose the login"
                    ),
                    Some("ask your admins to mount it without local_lock=flock/all (and without nolock), or set QSH_CONFIG_DIR to a directory on a filesystem with shared locks".into()),
                )
            } else {
                (
                    Level::Ok,
                    format!(
                        "{at} is NFS ({}): flock is shared across nodes through the server",
                        m.fs_type
                    ),
                    None,
                )
            }
        }
        "lustre" => {
            if has("flock") {
                (
                    Level::Ok,
                    format!("{at} is Lustre mounted with flock: locks are cluster-wide"),
                    None,
                )
            } else {
                let how = if has("localflock") {
                    "localflock: locks are local to each node"
                } else {
                    "without the flock option: locking fails or is node-local"
                };
                (
                    Level::Warn,
                    format!("{at} is Lustre mounted {how}"),
                    Some("ask your admins to mount Lustre with -o flock, or set QSH_CONFIG_DIR to a directory with shared locks".into()),
                )
            }
        }
        "gpfs" => (
            Level::Ok,
            format!("{at} is GPFS (Spectrum Scale): flock is cluster-wide"),
            None,
        ),
        other => (
            Level::Ok,
            format!("{at} is {other}: locks work among processes that see this filesystem"),
            None,
        ),
    }
}

pub fn check_filesystem(credentials_dir: &Path, checks: &mut Vec<Check>) {
    // The nearest existing ancestor (the directory may not exist before the first login).
    let mut p = credentials_dir;
    let existing = loop {
        if let Ok(c) = std::fs::canonicalize(p) {
            break Some(c);
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break None,
        }
    };
    let Some(existing) = existing else {
        checks.push(check(
            Level::Info,
            "filesystem",
            "no part of the credentials path exists yet",
        ));
        return;
    };
    let mounts = match std::fs::read_to_string("/proc/mounts") {
        Ok(m) => m,
        Err(e) => {
            checks.push(check(
                Level::Info,
                "filesystem",
                format!("cannot read /proc/mounts ({e}); not checked"),
            ));
            return;
        }
    };
    checks.push(match find_mount(&mounts, &existing) {
        Some(m) => {
            let (level, detail, fix) = classify_mount(&m);
            let c = check(level, "filesystem", detail);
            match fix {
                Some(f) => c.fix(f),
                None => c,
            }
        }
        None => check(
            Level::Info,
            "filesystem",
            format!("no mount found for {}", existing.display()),
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
/dev/sda1 / ext4 rw,relatime 0 0
server:/home /home nfs4 rw,vers=4.2,local_lock=none 0 0
server:/scratch /scratch nfs rw,vers=3,local_lock=flock 0 0
mgs@tcp:/fs /lus lustre rw,localflock 0 0
mgs@tcp:/fs2 /lus2 lustre rw,flock 0 0
gpfs0 /gpfs gpfs rw 0 0
tmpfs /home/my\\040dir tmpfs rw 0 0
";

    fn at(p: &str) -> (Level, String) {
        let m = find_mount(MOUNTS, Path::new(p)).unwrap();
        let (l, d, _) = classify_mount(&m);
        (l, d)
    }

    #[test]
    fn mounts_are_found_and_judged() {
        assert_eq!(at("/home/alice/.qsh/credentials").0, Level::Ok);
        assert!(at("/home/alice/.qsh").1.contains("NFS"));
        let (l, d) = at("/scratch/alice/.qsh");
        assert_eq!(l, Level::Warn);
        assert!(d.contains("local_lock=flock"), "{d}");
        assert_eq!(at("/lus/a").0, Level::Warn);
        assert_eq!(at("/lus2/a").0, Level::Ok);
        assert!(at("/gpfs/u/a").1.contains("GPFS"));
        assert!(at("/etc").1.contains("ext4"));
        assert!(at("/home/my dir/x").1.contains("tmpfs"));
        // /lus2 is not inside /lus.
        assert!(
            find_mount(MOUNTS, Path::new("/lus2/x"))
                .unwrap()
                .options
                .contains(&"flock".to_owned())
        );
    }
}
