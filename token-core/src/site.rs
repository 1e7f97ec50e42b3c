//! The site file, `/etc/qlam-auth/site.json`: what an admin sets up once for every user of a
//! cluster.
//!
//! ```json
//! {
//!   "default_context": "hpc",
//!   "contexts": [
//!     { "name": "hpc", "issuer": "https://login.example.org", "client_id": "qlam-cli",
//!       "audience": "https://api.example.org", "tenant": "example", "scope": null,
//!       "grant": "device_code" }
//!   ],
//!   "issuers": ["https://login.example.org"],
//!   "inject": { "automatic": true }
//! }
//! ```
//!
//! * `contexts` are the site's default contexts. A user's `~/.qsh/config.json` wins for a
//!   context of the same name; `qlam-auth login` writes the context it logs in to into the user's
//!   config.json in QLAM Core's format, so that QLAM Shell and QLAM Core see the same login.
//! * `issuers`: the allowed issuers that the Slurm plugin enforces when plugstack has no `issuers=`.
//! * `inject.automatic`: every job of a user with a usable login gets a token without
//!   `--qlam-auth` (plugstack `inject=` overrides it; users opt out per job or in their
//!   environment).
//! * `ssh`: owned by the SSH-certificate feature; kept opaque here.
//!
//! The file must belong to root and not be writable by group or others, and so must its
//! directory: it decides where users send their credentials. Its path comes from the caller
//! (`QLAM_AUTH_SITE_FILE` in the CLI, `site=` in plugstack); nothing here reads the environment.
#![forbid(unsafe_code)]

use crate::config::{GrantType, normalize_issuer};
use crate::{Error, Result};
use rustix::fs::{FileType, Mode, OFlags};
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the site file is unless told otherwise.
pub const DEFAULT_SITE_FILE: &str = "/etc/qlam-auth/site.json";
/// The environment variable the CLI reads to find another site file.
pub const ENV_SITE_FILE: &str = "QLAM_AUTH_SITE_FILE";
/// The provider name of a site context unless it names one (part of the credentials file name).
pub const DEFAULT_PROVIDER_NAME: &str = "qlam";
/// Largest site file we read.
pub const MAX_SITE_BYTES: u64 = 256 * 1024;

/// One of the site's default contexts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteContext {
    /// The qsh context name.
    pub name: String,
    /// The identity provider (https).
    pub issuer: String,
    /// The OAuth client id registered for qlam-auth.
    pub client_id: String,
    /// The API audience.
    #[serde(default)]
    pub audience: Option<String>,
    /// The Auth0 organization / tenant (QLAM Core needs one for device_code).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The scope (unset: QLAM Core's default for logins).
    #[serde(default)]
    pub scope: Option<String>,
    /// `device_code` (default) or `authorization_code`.
    #[serde(default)]
    pub grant: Option<String>,
    /// The provider's name in config.json (default `qlam`).
    #[serde(default)]
    pub provider_name: Option<String>,
    /// The context's QPU in config.json (default `default`).
    #[serde(default)]
    pub qpu: Option<String>,
}

/// `inject`: automatic injection into jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    /// Every job of a user with a usable login gets a token, without `--qlam-auth`.
    #[serde(default)]
    pub automatic: bool,
}

/// The site file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    #[serde(default)]
    default_context: Option<String>,
    #[serde(default)]
    contexts: Vec<SiteContext>,
    #[serde(default)]
    issuers: Option<Vec<String>>,
    #[serde(default)]
    inject: Option<Inject>,
    #[serde(default)]
    ssh: Option<Value>,
}

/// A loaded, checked site file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The file it came from.
    pub path: PathBuf,
    /// The default context (a name in `contexts`).
    pub default_context: Option<String>,
    /// The site's contexts, issuers normalized.
    pub contexts: Vec<SiteContext>,
    /// The allowed issuers (normalized), if the file lists them.
    pub issuers: Option<Vec<String>>,
    /// Automatic injection.
    pub inject: Inject,
    /// The `ssh` section, uninterpreted.
    pub ssh: Option<Value>,
}

fn site_err(path: &Path, field: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::Config {
        path: crate::config::ConfigSource::SiteFile(path.to_owned()),
        field: field.into(),
        message: format!("{}; the site file is the admins' to fix", msg.into()),
    }
}

fn insecure(path: &Path, detail: String, is_dir: bool) -> Error {
    Error::InsecurePermissions {
        path: path.to_owned(),
        detail: format!(
            "{detail}; the site file decides where users send their credentials, so it and its \
             directory must belong to root and be writable by root only"
        ),
        fix: format!(
            "chown root:root '{p}' && chmod {m} '{p}' (as root)",
            p = path.display(),
            m = if is_dir { "755" } else { "644" }
        ),
    }
}

fn check_owner(st: &rustix::fs::Stat, path: &Path, is_dir: bool) -> Result<()> {
    if st.st_uid != 0 {
        return Err(insecure(
            path,
            format!("it belongs to uid {}, not to root", st.st_uid),
            is_dir,
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(insecure(
            path,
            format!("its mode is {mode:04o}, which lets others change it"),
            is_dir,
        ));
    }
    Ok(())
}

impl Site {
    /// Reads and checks the site file at `path`. `Ok(None)` if there is none (or its directory
    /// does not exist). The directory and the file must belong to root and be writable by root
    /// only; the file is opened relative to the checked directory without following a symlink.
    pub fn load(path: &Path) -> Result<Option<Site>> {
        let io = |what: &str, e: rustix::io::Errno| {
            Error::store_io(path, what, &std::io::Error::from(e))
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| site_err(path, "", "is not a file name"))?;
        let dflags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dfd = match rustix::fs::open(dir, dflags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io("cannot open the site file's directory", e)),
        };
        let fflags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&dfd, name, fflags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(insecure(path, "it is a symbolic link".to_owned(), false));
            }
            Err(e) => return Err(io("cannot open the site file", e)),
        };
        let dst = rustix::fs::fstat(&dfd).map_err(|e| io("cannot stat", e))?;
        check_owner(&dst, dir, true)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io("cannot stat", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(site_err(path, "", "is not a regular file"));
        }
        check_owner(&st, path, false)?;
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_SITE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::store_io(path, "cannot read", &e))?;
        if bytes.len() as u64 > MAX_SITE_BYTES {
            return Err(site_err(
                path,
                "",
                format!("is larger than {MAX_SITE_BYTES} bytes"),
            ));
        }
        Self::from_bytes(path, &bytes).map(Some)
    }

    /// Parses and checks site file content that came from `path`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Site> {
        let f: SiteFile = crate::json::from_slice(bytes).map_err(|r| {
            let message = if r.syntax {
                format!("not a valid site file ({})", r.message)
            } else {
                r.message
            };
            site_err(
                path,
                r.path,
                format!("{message}; see docs/admin.md for the fields"),
            )
        })?;
        let mut contexts = Vec::with_capacity(f.contexts.len());
        for (i, c) in f.contexts.into_iter().enumerate() {
            let at = |k: &str| format!("contexts[{i}].{k}");
            if c.name.trim().is_empty() {
                return Err(site_err(path, at("name"), "must not be empty"));
            }
            if contexts.iter().any(|o: &SiteContext| o.name == c.name) {
                return Err(site_err(
                    path,
                    at("name"),
                    format!("'{}' is listed twice", c.name),
                ));
            }
            if c.client_id.trim().is_empty() {
                return Err(site_err(path, at("client_id"), "must not be empty"));
            }
            let issuer =
                normalize_issuer(&c.issuer, false).map_err(|m| site_err(path, at("issuer"), m))?;
            if let Some(g) = &c.grant {
                match GrantType::parse(g) {
                    Some(g) if g.is_user_flow() => {}
                    _ => {
                        return Err(site_err(
                            path,
                            at("grant"),
                            format!("'{g}' is not device_code or authorization_code"),
                        ));
                    }
                }
            }
            contexts.push(SiteContext { issuer, ..c });
        }
        if let Some(d) = &f.default_context
            && !contexts.iter().any(|c| &c.name == d)
        {
            return Err(site_err(
                path,
                "default_context",
                format!("names '{d}', which is not one of the site's contexts"),
            ));
        }
        let issuers = f
            .issuers
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        normalize_issuer(s, false)
                            .map_err(|m| site_err(path, format!("issuers[{i}]"), m))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(Site {
            path: path.to_owned(),
            default_context: f
                .default_context
                .or_else(|| (contexts.len() == 1).then(|| contexts[0].name.clone())),
            contexts,
            issuers,
            inject: f.inject.unwrap_or_default(),
            ssh: f.ssh,
        })
    }

    /// The site context named `name`.
    pub fn context(&self, name: &str) -> Option<&SiteContext> {
        self.contexts.iter().find(|c| c.name == name)
    }
}

impl SiteContext {
    /// The provider's name in config.json.
    pub fn provider_name(&self) -> &str {
        self.provider_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_PROVIDER_NAME)
    }

    /// This context as a config.json context in QLAM Core's schema (every provider field QLAM
    /// Core knows, `null` where the site gives none).
    pub fn to_qsh_context(&self) -> crate::config::model::Context {
        use crate::config::model::{AuthProvider, Context, Defaults, ProviderEntry};
        let set = |v: &str| Some(Some(v.to_owned()));
        let opt = |v: &Option<String>| Some(v.clone());
        Context {
            name: self.name.clone(),
            qpu: set(self.qpu.as_deref().unwrap_or("default")),
            defaults: Some(Some(Defaults {
                auth_provider: set(self.provider_name()),
                ..Defaults::default()
            })),
            auth_providers: Some(Some(vec![ProviderEntry::from(AuthProvider {
                provider: set("oauth"),
                name: set(self.provider_name()),
                auth_base_url: set(&self.issuer),
                client_id: set(&self.client_id),
                client_secret: Some(None),
                grant_type: set(self.grant.as_deref().unwrap_or("device_code")),
                scope: opt(&self.scope),
                audience: opt(&self.audience),
                tenant: opt(&self.tenant),
                ..AuthProvider::default()
            })])),
            extra: serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SAMPLE: &str = include_str!("../../site.json.example");

    fn parse(s: &str) -> Result<Site> {
        Site::from_bytes(Path::new("/etc/qlam-auth/site.json"), s.as_bytes())
    }

    #[test]
    fn the_sample_in_the_repo_is_valid() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.default_context.as_deref(), Some("hpc"));
        assert!(s.issuers.as_ref().is_some_and(|i| !i.is_empty()));
        let ctx = serde_json::to_value(s.context("hpc").unwrap().to_qsh_context()).unwrap();
        assert_eq!(ctx["auth_providers"][0]["provider"], "oauth");
    }

    #[test]
    fn checks_fields_and_keeps_ssh_opaque() {
        let s = parse(
            r#"{"contexts": [{"name": "a", "issuer": "idp.example/", "client_id": "c"}],
                "ssh": {"anything": [1, 2]}}"#,
        )
        .unwrap();
        assert_eq!(s.default_context.as_deref(), Some("a"), "the only context");
        assert_eq!(s.contexts[0].issuer, "https://idp.example");
        assert!(s.ssh.is_some() && !s.inject.automatic && s.issuers.is_none());
        let e = parse(r#"{"contexts": [], "colour": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && e.contains("docs/admin.md"), "{e}");
        let e = parse(r#"{"contexts": [{"name": "a", "issuer": 12345, "client_id": "c"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("contexts[0].issuer") && e.contains("must be a string"),
            "{e}"
        );
        assert!(!e.contains("12345"), "{e}");
        let e = parse(r#"{"default_context": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_context") && e.contains("'x'"), "{e}");
        let e = parse(r#"{"issuers": ["http://idp.example"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("issuers[0]") && e.contains("plain http"), "{e}");
        let e = parse(
            r#"{"contexts": [{"name": "a", "issuer": "i.example", "client_id": "c",
                "grant": "client_credentials"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("contexts[0].grant"), "{e}");
    }

    #[test]
    fn refuses_a_file_others_can_change() {
        // Runs as root in CI (the file is then root's); skipped where it cannot be set up.
        if crate::fsutil::euid() != 0 {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("site.json");
        assert_eq!(Site::load(&file).unwrap(), None, "absent: no site file");
        std::fs::write(&file, SAMPLE).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Site::load(&file).unwrap().is_some());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = Site::load(&file).unwrap_err().to_string();
        assert!(e.contains("chmod 644") && e.contains("0664"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let e = Site::load(&file).unwrap_err().to_string();
        assert!(e.contains("chown root:root") && e.contains("65534"), "{e}");
        std::os::unix::fs::chown(&file, Some(0), None).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Site::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("chmod 755") && e.contains(&format!("refusing {}:", tmp.path().display())),
            "{e}"
        );
    }
}
