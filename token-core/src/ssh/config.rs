//! Which SSH signing services exist: the `ssh` section of the site file
//! (`/etc/qlam-auth/site.json`, root-owned) and of the user's `~/.config/qlam-auth/ssh.json`
//! (user fields override site fields, service by service), plus the command line.
//!
//! ```json
//! {"ssh": {"services": {"cscs": {"token_url": "https://.../token", "sign_url": "https://.../sign",
//!          "key": "~/.ssh/qlam-sa", "duration": "1m", "api_key_env": "QLAM_API_KEY",
//!          "api_key_file": null, "principals": ["svc-ci"]}},
//!          "default_service": "cscs"}}
//! ```
//!
//! Only the `ssh` key of each file is read here (other top-level keys belong to other parts of
//! the site file); inside it, unknown fields are errors, so a typo is never silently ignored.

use super::apikey::ApiKeySource;
use crate::{Error, Result, fsutil};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The site file (one for the whole site, see [`crate::site`]).
pub use crate::site::DEFAULT_SITE_FILE as SITE_FILE;
/// The environment variable the CLI reads to find another site file.
pub use crate::site::ENV_SITE_FILE;
/// The API key's environment variable when the service names none.
pub const DEFAULT_API_KEY_ENV: &str = "QLAM_API_KEY";
/// The key when the service names none.
pub const DEFAULT_KEY: &str = "~/.ssh/qlam-sa";
const MAX_FILE: u64 = 1024 * 1024;

/// The `ssh` section of a file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    /// The services by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceEntry>,
    /// The service used without `--service`.
    #[serde(default)]
    pub default_service: Option<String>,
}

/// One service as written in a file; every field is optional so that a user file can override
/// just one of them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// `POST` with `X-API-Key` gives `{"access_token": JWT}`.
    pub token_url: Option<String>,
    /// `POST` with the JWT and `{"public_key": ...}` gives the certificate.
    pub sign_url: Option<String>,
    /// The private key's path (`~/` is the home directory); only `KEY.pub` is read.
    pub key: Option<String>,
    /// The validity the service is expected to grant, e.g. `1m`.
    pub duration: Option<String>,
    /// The environment variable that holds the API key.
    pub api_key_env: Option<String>,
    /// A 0600 file that holds the API key (wins over `api_key_env`).
    pub api_key_file: Option<String>,
    /// The principals the certificate must carry, exactly (unset: not checked).
    pub principals: Option<Vec<String>>,
}

impl ServiceEntry {
    fn overlay(&mut self, top: &ServiceEntry) {
        fn set<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
            if b.is_some() {
                a.clone_from(b);
            }
        }
        set(&mut self.token_url, &top.token_url);
        set(&mut self.sign_url, &top.sign_url);
        set(&mut self.key, &top.key);
        set(&mut self.duration, &top.duration);
        set(&mut self.api_key_env, &top.api_key_env);
        set(&mut self.api_key_file, &top.api_key_file);
        set(&mut self.principals, &top.principals);
    }
}

#[derive(Deserialize)]
struct FileTop {
    #[serde(default)]
    ssh: Option<SshSection>,
}

/// The sections that were found, for `qlam-auth ssh config` and the error messages.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    /// Site and user merged.
    pub section: SshSection,
    /// The files that were read.
    pub sources: Vec<PathBuf>,
}

/// Reads the `ssh` sections of the site file and of the user file (either may be absent) and
/// merges them: a user field overrides the site's field of the same service.
///
/// The site file must be owned by root and not writable by group or others (it says which
/// URLs receive the API key); the user file must be the user's (or root's), same mode rule.
pub fn load(site_file: &Path, user_file: Option<&Path>) -> Result<Loaded> {
    let mut out = Loaded::default();
    if let Some(site) = read_section(site_file, true)? {
        out.section = site;
        out.sources.push(site_file.to_owned());
    }
    if let Some(path) = user_file
        && let Some(user) = read_section(path, false)?
    {
        for (name, entry) in user.services {
            out.section
                .services
                .entry(name)
                .or_default()
                .overlay(&entry);
        }
        if user.default_service.is_some() {
            out.section.default_service = user.default_service;
        }
        out.sources.push(path.to_owned());
    }
    Ok(out)
}

/// The user file: `$XDG_CONFIG_HOME/qlam-auth/ssh.json`, else `~/.config/qlam-auth/ssh.json`.
pub fn user_file(home: &Path, xdg_config_home: Option<&str>) -> PathBuf {
    match xdg_config_home.filter(|s| s.starts_with('/')) {
        Some(x) => Path::new(x).join("qlam-auth/ssh.json"),
        None => home.join(".config/qlam-auth/ssh.json"),
    }
}

fn read_section(path: &Path, root_only: bool) -> Result<Option<SshSection>> {
    let bytes = if root_only {
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::config(path, "", format!("cannot open it: {e}"))),
        };
        let md = f
            .metadata()
            .map_err(|e| Error::config(path, "", format!("cannot stat it: {e}")))?;
        if !md.is_file() {
            return Err(Error::config(path, "", "it is not a regular file"));
        }
        let mode = md.mode() & 0o7777;
        if md.uid() != 0 || mode & 0o022 != 0 {
            return Err(Error::InsecurePermissions {
                path: path.to_owned(),
                detail: format!(
                    "the site file must belong to root and not be writable by others (it is \
                     owned by uid {} with mode {mode:04o})",
                    md.uid()
                ),
                fix: format!(
                    "chown root:root '{p}' && chmod 644 '{p}' (as root); or point {ENV_SITE_FILE} \
                     at a root-owned copy",
                    p = path.display()
                ),
            });
        }
        if md.len() > MAX_FILE {
            return Err(Error::config(path, "", "the file is larger than 1 MiB"));
        }
        let mut buf = Vec::new();
        f.by_ref()
            .take(MAX_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::config(path, "", format!("cannot read it: {e}")))?;
        buf
    } else {
        match fsutil::read_file_following(path, fsutil::Policy::NOT_WRITABLE_BY_OTHERS, MAX_FILE)
            .map_err(|e| match e {
                Error::Store { path, detail } => Error::config(path, "", detail),
                e => e,
            })? {
            Some(b) => b,
            None => return Ok(None),
        }
    };
    let top: FileTop = serde_json::from_slice(&bytes).map_err(|e| {
        Error::config(
            path,
            "ssh",
            format!("not valid here ({e}); see docs/ssh.md for the format"),
        )
    })?;
    Ok(top.ssh)
}

/// What the command line says (each field overrides the config).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--service`.
    pub service: Option<String>,
    /// `--token-url`.
    pub token_url: Option<String>,
    /// `--sign-url`.
    pub sign_url: Option<String>,
    /// `-f KEY`.
    pub key: Option<PathBuf>,
    /// `--duration`.
    pub duration: Option<String>,
    /// `--api-key-env`.
    pub api_key_env: Option<String>,
    /// `--api-key-file`.
    pub api_key_file: Option<PathBuf>,
    /// `--principal` (repeatable).
    pub principals: Vec<String>,
}

/// One service, resolved.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its name (for the cache and lock file names, and messages).
    pub name: String,
    /// The token URL.
    pub token_url: String,
    /// The sign URL.
    pub sign_url: String,
    /// The private key's path (never read; `KEY.pub` is).
    pub key: PathBuf,
    /// The validity expected from the service.
    pub duration: Option<Duration>,
    /// Where the API key comes from.
    pub api_key: ApiKeySource,
    /// The principals the certificate must carry (exactly), if set.
    pub principals: Option<Vec<String>>,
}

/// The config files' names, for messages.
fn origin_of(loaded: &Loaded) -> PathBuf {
    match loaded.sources.as_slice() {
        [] => PathBuf::from("(no ssh config file)"),
        [one] => one.clone(),
        many => PathBuf::from(
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" + "),
        ),
    }
}

/// Picks the configured service: `--service`, else `default_service`, else the only one.
/// `Ok(None)` if none applies (with both URLs on the command line, the config is not used
/// unless `--service` is given). An unknown `--service` or `default_service` is an error.
pub fn select(loaded: &Loaded, o: &Overrides) -> Result<Option<(String, ServiceEntry)>> {
    let section = &loaded.section;
    let origin = origin_of(loaded);
    let adhoc = o.token_url.is_some() && o.sign_url.is_some();
    let name = match (&o.service, &section.default_service) {
        (Some(n), _) => n.clone(),
        (None, Some(n)) if !adhoc => n.clone(),
        (None, _) if !adhoc && section.services.len() == 1 => {
            section.services.keys().next().cloned().unwrap_or_default()
        }
        _ => return Ok(None),
    };
    let Some(e) = section.services.get(&name) else {
        let known: Vec<&str> = section.services.keys().map(String::as_str).collect();
        return Err(Error::config(
            &origin,
            format!("ssh.services.{name}"),
            if known.is_empty() {
                format!(
                    "no SSH service '{name}' is configured: pass --token-url and --sign-url, \
                     or add it to the site file's \"ssh\" section (docs/ssh.md)"
                )
            } else {
                format!(
                    "no SSH service '{name}'; the configured ones are: {}",
                    known.join(", ")
                )
            },
        ));
    };
    check_name(&name, &origin)?;
    Ok(Some((name, e.clone())))
}

/// The key and the principals to check (`qlam-auth ssh check`): `-f`, else the selected
/// service's key, else the default key; no URL is needed.
pub fn key_and_principals(
    loaded: &Loaded,
    o: &Overrides,
    home: &Path,
) -> Result<(PathBuf, Option<Vec<String>>)> {
    let entry = select(loaded, o)?.map(|(_, e)| e).unwrap_or_default();
    let key = match (&o.key, &entry.key) {
        (Some(k), _) => k.clone(),
        (None, Some(k)) => expand_home(k, home),
        (None, None) => expand_home(DEFAULT_KEY, home),
    };
    let principals = if o.principals.is_empty() {
        entry.principals
    } else {
        Some(o.principals.clone())
    };
    Ok((key, principals))
}

/// Picks the service (see [`select`]; with neither, the command line's URLs alone) and fills
/// it in from the command line.
pub fn resolve(loaded: &Loaded, o: &Overrides, home: &Path) -> Result<Service> {
    let section = &loaded.section;
    let origin = origin_of(loaded);
    let (name, mut entry) = match select(loaded, o)? {
        Some(found) => found,
        None if o.token_url.is_some() && o.sign_url.is_some() => {
            // A stable name per URL pair, for the cache and the lock.
            let urls = format!(
                "{}\n{}",
                o.token_url.as_deref().unwrap_or_default(),
                o.sign_url.as_deref().unwrap_or_default()
            );
            let fp = crate::secret::fingerprint(&urls);
            (
                format!("url-{}", &fp["sha256:".len()..]),
                ServiceEntry::default(),
            )
        }
        None => {
            return Err(Error::config(
                &origin,
                "ssh.default_service",
                if section.services.is_empty() {
                    "no SSH signing service is configured: pass --token-url URL --sign-url URL, \
                     or ask your site to add one to the \"ssh\" section of \
                     /etc/qlam-auth/site.json (docs/ssh.md)"
                        .to_owned()
                } else {
                    format!(
                        "several SSH services are configured and none is the default: pass \
                         --service NAME (one of: {})",
                        section
                            .services
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            ));
        }
    };
    let field = |f: &str| format!("ssh.services.{name}.{f}");
    let token_url = o
        .token_url
        .clone()
        .or(entry.token_url.take())
        .ok_or_else(|| {
            Error::config(
                &origin,
                field("token_url"),
                "missing: set it, or pass --token-url URL",
            )
        })?;
    let sign_url = o
        .sign_url
        .clone()
        .or(entry.sign_url.take())
        .ok_or_else(|| {
            Error::config(
                &origin,
                field("sign_url"),
                "missing: set it, or pass --sign-url URL",
            )
        })?;
    for (f, url) in [("token_url", &token_url), ("sign_url", &sign_url)] {
        check_url(url).map_err(|m| Error::config(&origin, field(f), m))?;
    }
    let key = match (&o.key, &entry.key) {
        (Some(k), _) => k.clone(),
        (None, Some(k)) => expand_home(k, home),
        (None, None) => expand_home(DEFAULT_KEY, home),
    };
    let duration_text = o.duration.clone().or(entry.duration.take());
    let duration = match duration_text {
        Some(t) => Some(parse_duration(&t).map_err(|m| {
            Error::config(
                if o.duration.is_some() {
                    Path::new("--duration")
                } else {
                    origin.as_path()
                },
                if o.duration.is_some() {
                    String::new()
                } else {
                    field("duration")
                },
                m,
            )
        })?),
        None => None,
    };
    let api_key = if let Some(f) = &o.api_key_file {
        ApiKeySource::File(f.clone())
    } else if let Some(v) = &o.api_key_env {
        ApiKeySource::Env(v.clone())
    } else if let Some(f) = &entry.api_key_file {
        ApiKeySource::File(expand_home(f, home))
    } else {
        ApiKeySource::Env(
            entry
                .api_key_env
                .clone()
                .unwrap_or_else(|| DEFAULT_API_KEY_ENV.to_owned()),
        )
    };
    if let ApiKeySource::Env(v) = &api_key
        && (v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(Error::config(
            &origin,
            field("api_key_env"),
            "not an environment variable name (letters, digits and _ only); it names the \
                 variable that holds the key, it is not the key",
        ));
    }
    let principals = if o.principals.is_empty() {
        entry.principals.take()
    } else {
        Some(o.principals.clone())
    };
    if principals
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.iter().any(String::is_empty))
    {
        return Err(Error::config(
            &origin,
            field("principals"),
            "must be a non-empty list of names",
        ));
    }
    Ok(Service {
        name,
        token_url,
        sign_url,
        key,
        duration,
        api_key,
        principals,
    })
}

fn check_name(name: &str, origin: &Path) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            origin,
            format!("ssh.services.{name}"),
            "a service name is 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
        ))
    }
}

fn check_url(url: &str) -> std::result::Result<(), String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        "must be an https:// URL (the API key and the token travel over it)".to_owned()
    })?;
    if rest.is_empty()
        || rest.starts_with('/')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("is not a valid https:// URL".to_owned());
    }
    Ok(())
}

/// `~/x` -> `HOME/x`; anything else as it is.
pub fn expand_home(p: &str, home: &Path) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if p == "~" => home.to_owned(),
        None => PathBuf::from(p),
    }
}

/// `90`, `90s`, `10m`, `2h`, `1d` -> a duration (at least 1 s, at most 30 days).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: write e.g. 60s, 1m, 2h or 1d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "'{text}' is not a duration: write e.g. 60s, 1m, 2h or 1d"
            ));
        }
    };
    let secs = n.saturating_mul(mult);
    if secs == 0 || secs > 30 * 86_400 {
        return Err(format!("'{text}' is out of range (1 s to 30 days)"));
    }
    Ok(Duration::from_secs(secs))
}

/// Prints a duration the way `parse_duration` reads it (`1m`, `90s`, `2h`).
pub fn format_duration(secs: u64) -> String {
    if secs >= 86_400 && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(json: &str) -> Loaded {
        let top: FileTop = serde_json::from_str(json).expect("json");
        Loaded {
            section: top.ssh.unwrap_or_default(),
            sources: vec![PathBuf::from("/etc/qlam-auth/site.json")],
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m").ok(), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h").ok(), Some(Duration::from_secs(7200)));
        for bad in ["", "m", "1x", "-1m", "0s", "1.5m", "100d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(60), "1m");
        assert_eq!(format_duration(90), "90s");
    }

    #[test]
    fn other_top_level_keys_are_ignored_but_typos_in_ssh_are_not() {
        let l = loaded(
            r#"{"contexts": [1, 2], "ssh": {"services": {"a": {"token_url": "https://t", "sign_url": "https://s"}}}}"#,
        );
        let s = resolve(&l, &Overrides::default(), Path::new("/home/u")).expect("resolve");
        assert_eq!(s.name, "a");
        assert_eq!(s.key, PathBuf::from("/home/u/.ssh/qlam-sa"));
        assert!(matches!(&s.api_key, ApiKeySource::Env(v) if v == "QLAM_API_KEY"));
        let e =
            serde_json::from_str::<FileTop>(r#"{"ssh": {"services": {"a": {"sign_ur": "x"}}}}"#);
        assert!(e.is_err());
    }

    #[test]
    fn user_fields_override_site_fields() {
        let mut l = loaded(
            r#"{"ssh": {"services": {"a": {"token_url": "https://t", "sign_url": "https://s", "duration": "1m"}}}}"#,
        );
        let user: FileTop =
            serde_json::from_str(r#"{"ssh": {"services": {"a": {"key": "~/.ssh/mine"}}}}"#)
                .expect("json");
        for (n, e) in user.ssh.expect("ssh").services {
            l.section.services.entry(n).or_default().overlay(&e);
        }
        let s = resolve(&l, &Overrides::default(), Path::new("/h")).expect("resolve");
        assert_eq!(s.key, PathBuf::from("/h/.ssh/mine"));
        assert_eq!(s.duration, Some(Duration::from_secs(60)));
        assert_eq!(s.token_url, "https://t");
    }

    #[test]
    fn flags_alone_are_enough_and_http_is_refused() {
        let o = Overrides {
            token_url: Some("https://t.example/token".into()),
            sign_url: Some("https://s.example/sign".into()),
            ..Overrides::default()
        };
        let s = resolve(&Loaded::default(), &o, Path::new("/h")).expect("resolve");
        assert!(s.name.starts_with("url-"), "{}", s.name);
        let o = Overrides {
            sign_url: Some("http://s.example/sign".into()),
            ..o
        };
        let e = resolve(&Loaded::default(), &o, Path::new("/h")).unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
        let e = resolve(&Loaded::default(), &Overrides::default(), Path::new("/h")).unwrap_err();
        assert!(e.to_string().contains("--token-url"), "{e}");
    }

    #[test]
    fn api_key_env_must_be_a_name_not_a_key() {
        let l = loaded(
            r#"{"ssh": {"services": {"a": {"token_url": "https://t", "sign_url": "https://s", "api_key_env": "sk-live abc"}}}}"#,
        );
        let e = resolve(&l, &Overrides::default(), Path::new("/h")).unwrap_err();
        assert!(!e.to_string().contains("sk-live"), "{e}");
    }
}
