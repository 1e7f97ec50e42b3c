//! `qlam-auth config init`, `config show` and `use-context`: the user's config.json in QLAM
//! Core's schema, keeping everything else in the file.
//!
//! `mod.rs` renders and writes the file; `init` adds or updates one context's oauth provider,
//! `show` lists the effective settings and where they come from, `context` switches the current
//! context (copying a site context into the user's file when needed).

use crate::exit::{self, Failure};
use std::path::Path;
use token_core::config::QshConfig;
use token_core::fsutil::{self, Policy};

mod context;
mod init;
mod show;

pub use context::{adopt_site_context, use_context};
pub use init::init;
pub use show::{effective_settings, show};

/// The directory holding config.json may be readable by others, never writable (as the store
/// requires of `~/.qsh`).
const CONFIG_DIR_POLICY: Policy = Policy::CONFIG_DIR;

/// Renders the config as QLAM Core writes it (2-space indent) plus a final newline.
pub fn render(root: &QshConfig) -> Vec<u8> {
    root.render()
}

fn write_config(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Failure::msg(
            format!("{} is not a file name", path.display()),
            exit::CONFIG,
        )
    })?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        let target = std::fs::canonicalize(path)
            .map_or_else(|_| "its target".to_owned(), |t| t.display().to_string());
        return Err(Failure::msg(
            format!(
                "{} is a symbolic link; not replacing it: edit {target} instead (set QSH_CONFIG to it)",
                path.display()
            ),
            exit::CONFIG,
        ));
    }
    let dir_fd = fsutil::create_dir_all_private(dir, CONFIG_DIR_POLICY)?;
    fsutil::atomic_write_at(fsutil::fd(&dir_fd), dir, name, bytes, 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_private_file_in_private_dir() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("qsh");
        let path = dir.join("config.json");
        write_config(&path, b"{}\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        write_config(&path, b"{\"a\":1}\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
    }
}
