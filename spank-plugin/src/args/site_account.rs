//! `m2m=NAME:FILE[:GROUP,...]`: a site service account as plugstack.conf names it, and the
//! group lists of its allowlist.

#![forbid(unsafe_code)]

use super::values::{absolute_path, is_context_name};
use std::path::PathBuf;

/// Default of `m2m_cache`.
pub const DEFAULT_M2M_CACHE: &str = "/var/cache/qlam-auth/m2m";

/// Prefix of a numeric group id in a group list (`gid:2024`); anything else is a group name,
/// digits included.
pub const GID_PREFIX: &str = "gid:";

/// A site account as plugstack.conf names it: `NAME:FILE[:GROUP,GROUP...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAccountRef {
    /// What jobs ask for: `--qlam-auth=NAME`.
    pub name: String,
    /// The root-only account file.
    pub file: PathBuf,
    /// The world-readable copy of the allowlist, for the check at submission.
    pub public_groups: Option<Vec<String>>,
}

impl SiteAccountRef {
    /// Parses `NAME:FILE[:GROUP,...]`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let file = parts
            .next()
            .ok_or_else(|| format!("'{value}': expected NAME:/path/NAME.json[:GROUP,...]"))?;
        if !is_context_name(name) {
            return Err(format!(
                "'{name}' is not a valid account name (A-Z a-z 0-9 . _ - @ +)"
            ));
        }
        let file = absolute_path(file)?;
        let public_groups = match parts.next() {
            None => None,
            Some(g) => Some(parse_groups(g.split(','))?),
        };
        Ok(SiteAccountRef {
            name: name.to_owned(),
            file,
            public_groups,
        })
    }
}

pub(crate) fn parse_groups<'a>(
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, String> {
    let groups: Vec<String> = items
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    if groups.is_empty() {
        return Err("the group list is empty".into());
    }
    if let Some(bad) = groups.iter().find(|g| match g.strip_prefix(GID_PREFIX) {
        Some(n) => n.parse::<u32>().is_err(),
        None => !g
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c)),
    }) {
        return Err(format!(
            "'{bad}' is not a group name or {GID_PREFIX}NUMBER (a bare number is a group name)"
        ));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn plugstack_spelling() {
        let r = SiteAccountRef::parse("qpu-ci:/etc/qlam/m2m/qpu-ci.json:qpu,admins").unwrap();
        assert_eq!(r.name, "qpu-ci");
        assert_eq!(r.file, Path::new("/etc/qlam/m2m/qpu-ci.json"));
        assert_eq!(r.public_groups, Some(vec!["qpu".into(), "admins".into()]));
        assert_eq!(
            SiteAccountRef::parse("a:/x.json").unwrap().public_groups,
            None
        );
        for bad in [
            "a",
            "a:rel.json",
            "../a:/x.json",
            "a:/x.json:",
            "a:/x.json:bad group",
        ] {
            assert!(SiteAccountRef::parse(bad).is_err(), "{bad}");
        }
    }

    /// Security review item 6 (the plugstack half; the membership half is in `hooks/site.rs`):
    /// both spellings, a group name of digits and `gid:N`, are accepted in plugstack.conf.
    #[test]
    fn a_bare_number_is_a_group_name_not_a_gid() {
        let r = SiteAccountRef::parse("a:/x.json:2024,gid:2024").unwrap();
        assert_eq!(
            r.public_groups,
            Some(vec!["2024".into(), "gid:2024".into()])
        );
        for bad in [
            "a:/x.json:gid:",
            "a:/x.json:gid:x1",
            "a:/x.json:gid:99999999999",
        ] {
            assert!(SiteAccountRef::parse(bad).is_err(), "{bad}");
        }
    }
}
