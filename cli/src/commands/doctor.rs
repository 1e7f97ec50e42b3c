//! `qlam-auth doctor`: check everything a login and the Slurm plugin depend on, and say how to
//! fix what is wrong.

use super::http_settings;
use crate::cli::DoctorArgs;
use crate::exit::{self, Failure};
use crate::ui;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use token_core::Error;
use token_core::broker::Broker;
use token_core::config::{Config, GrantType, ProviderConfig};
use token_core::fsutil::{self, Policy};
use token_core::http::{HttpClient, UreqClient};
use token_core::paths::QshPaths;
use token_core::time::Timestamp;

/// Clock skew beyond which tokens may be refused as "not yet valid" or expire early.
const MAX_SKEW_SECS: i64 = 30;
/// Discovery slower than this makes logins and job starts slow.
const SLOW_IDP: Duration = Duration::from_secs(2);
/// The plugin's shared object, as plugstack.conf names it.
const PLUGIN_SO: &str = "libqlam_spank.so";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// For information only.
    Info,
    /// Works, but may cause trouble.
    Warn,
    /// Broken.
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One result.
#[derive(Debug, Clone)]
pub struct Check {
    level: Level,
    what: &'static str,
    detail: String,
    fix: Option<String>,
}

fn check(level: Level, what: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level,
        what,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    fn from_error(what: &'static str, e: &Error) -> Self {
        match e {
            // The message would repeat the fix; show it once, on its own line.
            Error::InsecurePermissions { path, detail, fix } => check(
                Level::Fail,
                what,
                format!("refusing {}: {detail}", path.display()),
            )
            .fix(fix.clone()),
            _ => check(Level::Fail, what, e.to_string()),
        }
    }
}

/// Runs `doctor`.
pub fn run(args: &DoctorArgs) -> Result<(), Failure> {
    let mut checks = Vec::new();
    let paths = super::qsh_paths()?;
    let provider = check_config(&paths, args.context.as_deref(), &mut checks);
    check_dirs(&paths, &mut checks);
    match &provider {
        Some(p) => match Broker::new(&paths, p.clone(), &http_settings(), &super::env) {
            Ok(broker) => {
                check_login(&broker, &mut checks);
                check_idp(&broker, &mut checks);
                check_lock(&broker, &mut checks);
            }
            Err(e) => checks.push(Check::from_error("issuer", &e)),
        },
        None => checks.push(check(
            Level::Info,
            "identity provider",
            "skipped: no usable provider in the config",
        )),
    }
    check_filesystem(&paths.credentials_dir, &mut checks);
    checks.push(check_plugstack());

    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    if args.json {
        let list: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "level": c.level.label().to_ascii_lowercase(),
                    "check": c.what,
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        let v = serde_json::json!({
            "context": provider.as_ref().map(|p| p.context.clone()),
            "ok": fails == 0,
            "checks": list,
        });
        let text = serde_json::to_string_pretty(&v)
            .map_err(|e| Failure::msg(e.to_string(), exit::OTHER))?;
        ui::say(&format!("{text}\n"));
        return if fails > 0 {
            Err(Failure::Reported(exit::OTHER))
        } else {
            Ok(())
        };
    }
    let mut out = format!(
        "qlam-auth doctor{}\n",
        provider
            .as_ref()
            .map(|p| format!(" — context '{}'", p.context))
            .unwrap_or_default()
    );
    for c in &checks {
        out.push_str(&format!(
            "  {:<5} {}: {}\n",
            c.level.label(),
            c.what,
            c.detail
        ));
        if let Some(f) = &c.fix {
            out.push_str(&format!("        fix: {f}\n"));
        }
    }
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
    out.push_str(&match (fails, warns) {
        (0, 0) => "All checks passed.\n".to_owned(),
        (0, w) => format!("No failures; {w} warning(s).\n"),
        (f, w) => format!("{f} check(s) FAILED, {w} warning(s): fix the FAILs first.\n"),
    });
    ui::say(&out);
    if fails > 0 {
        Err(Failure::Reported(exit::OTHER))
    } else {
        Ok(())
    }
}

fn check_config(
    paths: &QshPaths,
    context: Option<&str>,
    checks: &mut Vec<Check>,
) -> Option<ProviderConfig> {
    let site = match token_core::site::Site::load(super::site_file()) {
        Ok(Some(site)) => {
            checks.push(check(
                Level::Info,
                "site file",
                format!(
                    "{}: {} context(s), default {}, allowed issuers {}, automatic injection {}",
                    site.path.display(),
                    site.contexts.len(),
                    site.default_context.as_deref().unwrap_or("none"),
                    site.issuers
                        .as_ref()
                        .map_or("not set".to_owned(), |i| i.join(", ")),
                    if site.inject.automatic { "on" } else { "off" }
                ),
            ));
            Some(site)
        }
        Ok(None) => {
            checks.push(check(
                Level::Info,
                "site file",
                format!("{}: none (not needed)", super::site_file().display()),
            ));
            None
        }
        Err(e) => {
            checks.push(Check::from_error("site file", &e));
            None
        }
    };
    let config = match Config::load_with_site(paths, site)
        .map(|c| c.with_http_loopback(super::http_loopback()))
    {
        Ok(c) => {
            if let Ok(rows) = super::config::effective_settings(&c, context) {
                let text: Vec<String> = rows
                    .iter()
                    .map(|(k, v, o)| format!("{k} {v} ({})", o.as_str()))
                    .collect();
                checks.push(check(Level::Info, "settings", text.join(", ")));
            }
            Ok(c)
        }
        Err(e) => Err(e),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::from_error("config", &e));
            return None;
        }
    };
    match config.provider_with_env(context, &super::env) {
        Ok(p) => {
            checks.push(check(
                Level::Ok,
                "config",
                format!(
                    "{}: context '{}' uses provider '{}' ({}) at {}, client '{}'",
                    p.config_path.display(),
                    p.context,
                    p.name,
                    p.grant_type.as_str(),
                    p.issuer,
                    p.client_id
                ),
            ));
            if !p.grant_type.is_user_flow()
                && let Err(e) = p.resolve_secret()
            {
                checks.push(Check::from_error("client secret", &e));
            }
            Some(p)
        }
        Err(e) => {
            checks.push(Check::from_error("config", &e));
            None
        }
    }
}

fn check_dirs(paths: &QshPaths, checks: &mut Vec<Check>) {
    let config_dir_policy = Policy::CONFIG_DIR;
    for (what, dir, policy) in [
        ("config directory", &paths.config_dir, config_dir_policy),
        (
            "credentials directory",
            &paths.credentials_dir,
            Policy::PRIVATE,
        ),
    ] {
        checks.push(match fsutil::open_dir(dir, policy) {
            Ok(Some(_)) => check(
                Level::Ok,
                what,
                format!("{} is yours and not open to others", dir.display()),
            ),
            Ok(None) => check(
                Level::Info,
                what,
                format!(
                    "{} does not exist yet (the first login creates it)",
                    dir.display()
                ),
            ),
            Err(e) => Check::from_error(what, &e),
        });
    }
}

fn check_login(broker: &Broker, checks: &mut Vec<Check>) {
    let now = Timestamp::now();
    checks.push(match broker.check_login() {
        Ok(l) => {
            let expiry = l
                .access_expires_at
                .map_or("no expiry known".to_owned(), |e| {
                    format!(
                        "access token expires {}",
                        ui::relative(now.seconds_until(e))
                    )
                });
            check(
                Level::Ok,
                "credentials",
                format!(
                    "{}: {}{expiry}, refresh token {}",
                    l.path.display(),
                    l.subject
                        .map(|s| format!("logged in as {s}, "))
                        .unwrap_or_default(),
                    if l.has_refresh_token {
                        "stored"
                    } else {
                        "none"
                    }
                ),
            )
        }
        Err(e @ (Error::NotLoggedIn { .. } | Error::LoginExpired { .. })) => {
            check(Level::Warn, "credentials", e.to_string())
        }
        Err(e) => Check::from_error("credentials", &e),
    });
}

fn check_idp(broker: &Broker, checks: &mut Vec<Check>) {
    let p = broker.provider();
    let url = format!("{}/.well-known/openid-configuration", p.issuer);
    let client = match UreqClient::new(&http_settings()) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::from_error("identity provider", &e));
            return;
        }
    };
    let sent = Timestamp::now();
    let start = Instant::now();
    let res = client.get(&url, &[]);
    let took = start.elapsed();
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::from_error("identity provider", &e).fix(
                "check the network (proxy? firewall?) and auth_base_url; `curl -v URL` shows more",
            ));
            return;
        }
    };
    let ms = took.as_millis();
    if res.status != 200 {
        checks.push(
            check(
                Level::Fail,
                "identity provider",
                format!("{url} answered HTTP {} in {ms} ms", res.status),
            )
            .fix("check auth_base_url in the config: OIDC discovery must answer under it"),
        );
        return;
    }
    // The full validation (issuer, https endpoints) is token-core's.
    match broker.oauth().and_then(|o| o.discovery()) {
        Ok(d) => {
            let level = if took > SLOW_IDP {
                Level::Warn
            } else {
                Level::Ok
            };
            let mut missing = Vec::new();
            if p.grant_type == GrantType::DeviceCode && d.device_authorization_endpoint.is_none() {
                missing.push("no device endpoint: use `qlam-auth login --browser`");
            }
            if d.revocation_endpoint.is_none() {
                missing.push("no revocation endpoint: logout only deletes local credentials");
            }
            let extra = if missing.is_empty() {
                String::new()
            } else {
                format!(" ({})", missing.join("; "))
            };
            checks.push(check(
                level,
                "identity provider",
                format!("discovery at {url} answered in {ms} ms{extra}"),
            ));
        }
        Err(e) => checks.push(Check::from_error("identity provider", &e)),
    }
    // Local time at the middle of the request, against the server's Date (1 s resolution).
    let local = sent.unix_seconds() + i64::try_from(took.as_secs() / 2).unwrap_or(0);
    checks.push(match res.date.as_deref().and_then(Timestamp::parse_http_date).map(|t| t.unix_seconds()) {
        Some(server) => {
            let skew = local - server;
            if skew.abs() > MAX_SKEW_SECS {
                check(
                    Level::Warn,
                    "clock",
                    format!(
                        "this machine's clock is {} s {} the identity provider's",
                        skew.abs(),
                        if skew > 0 { "ahead of" } else { "behind" }
                    ),
                )
                .fix("synchronize the clock (ask your admins; `timedatectl` or `chronyc tracking` shows the state)")
            } else {
                check(
                    Level::Ok,
                    "clock",
                    format!("within {} s of the identity provider's", skew.abs().max(1)),
                )
            }
        }
        None => check(
            Level::Info,
            "clock",
            "the identity provider sent no usable Date header; skew not checked",
        ),
    });
}

fn check_lock(broker: &Broker, checks: &mut Vec<Check>) {
    let key = broker.provider().cache_key();
    let start = Instant::now();
    checks.push(
        match broker
            .store()
            .lock(&key, Duration::from_secs(5), &mut |_| {})
        {
            Ok(lock) => {
                let path = lock.path().display().to_string();
                drop(lock);
                check(
                    Level::Ok,
                    "locking",
                    format!(
                        "took and released {path} in {} ms",
                        start.elapsed().as_millis()
                    ),
                )
            }
            Err(Error::LockTimeout { path, waited }) => check(
                Level::Warn,
                "locking",
                format!(
                    "another process has held {} for more than {} s",
                    path.display(),
                    waited.as_secs()
                ),
            )
            .fix("wait for it (a refresh takes a second or two); if it persists, look for a hung qlam-auth or job process holding it (`fuser` on the lock file)"),
            Err(e) => Check::from_error("locking", &e),
        },
    );
}

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

fn check_filesystem(credentials_dir: &Path, checks: &mut Vec<Check>) {
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

/// Lines of plugstack files that load the plugin (comments skipped).
pub fn plugin_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains(PLUGIN_SO))
        .map(str::to_owned)
        .collect()
}

fn check_plugstack() -> Check {
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
