//! Whether Slurm's plugstack on this machine loads the qlam SPANK plugin.

use super::report::{Check, Level, check};
use std::path::PathBuf;

/// The plugin's shared object, as plugstack.conf names it.
const PLUGIN_SO: &str = "libqlam_spank.so";

/// Lines of plugstack files that load the plugin (comments skipped).
pub fn plugin_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains(PLUGIN_SO))
        .map(str::to_owned)
        .collect()
}

pub fn check_plugstack() -> Check {
    let mut dirs = vec![PathBuf::from("/etc/slurm")];
    if let Some(conf) = std::env::var_os("SLURM_CONF").map(PathBuf::from)
        && let Some(d) = conf.parent()
        && !dirs.iter().any(|x| x == d)
    {
        dirs.insert(0, d.to_owned());
    }
    let mut files = Vec::new();
    for d in &dirs {
        files.push(d.join("plugstack.conf"));
        if let Ok(rd) = std::fs::read_dir(d.join("plugstack.conf.d")) {
            let mut confs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            confs.sort();
            files.extend(confs);
        }
    }
    let mut read_any = false;
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        read_any = true;
        if let Some(line) = plugin_lines(&text).first() {
            return check(
                Level::Ok,
                "slurm plugin",
                format!("{}: `{line}`", f.display()),
            );
        }
    }
    if !read_any && !dirs.iter().any(|d| d.exists()) {
        return check(
            Level::Info,
            "slurm plugin",
            "no Slurm configuration on this machine (/etc/slurm); not checked",
        );
    }
    check(
        Level::Warn,
        "slurm plugin",
        format!(
            "{PLUGIN_SO} is not listed in {}: jobs started here will not get tokens from qlam-auth",
            files.first().map_or("plugstack.conf".into(), |f| f.display().to_string())
        ),
    )
    .fix("ask your admins to add the qlam SPANK plugin (see plugstack.conf.example and docs/admin.md)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugstack_lines_skip_comments() {
        let text = "# optional /usr/lib/slurm/libqlam_spank.so\nrequired /usr/lib/slurm/libqlam_spank.so issuer=x\n";
        assert_eq!(
            plugin_lines(text),
            vec!["required /usr/lib/slurm/libqlam_spank.so issuer=x".to_owned()]
        );
        assert!(plugin_lines("optional other.so").is_empty());
    }
}
