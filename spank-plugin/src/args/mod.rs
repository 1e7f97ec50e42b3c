//! The plugin's arguments, from its line in `plugstack.conf`:
//!
//! ```text
//! required /usr/lib/x86_64-linux-gnu/slurm-wlm/qlam_spank.so min_valid=600 issuers=https://idp.example.org/realms/hpc
//! ```
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `min_valid=SECONDS` | 300 | a delivered token is valid for at least this long |
//! | `token_dir=PATH` | `/run/qlam-auth` | absolute; per-job token directories are made under it |
//! | `env_token=yes\|no` | yes | also put the token itself into `QLAM_ACCESS_TOKEN` |
//! | `ca_bundle=PATH` | system roots | absolute; the CAs that TLS to the issuer trusts |
//! | `timeout=SECONDS` | 20 | the bound on one hook, all of it: lock wait, discovery, token request, retries (1..=600) |
//! | `lock_timeout=SECONDS` | half of `timeout` | the part of `timeout` spent waiting for the store lock |
//! | `issuers=URL[,URL...]` | the site file's `issuers` | the only issuers a job may use: a user config pointing elsewhere is refused. With neither set, no token is delivered (the admins are told in slurmd's log, users at submission) |
//! | `site=PATH` | `/etc/qlam-auth/site.json` | absolute; the site file (root's, not writable by others): default contexts, `issuers`, `inject` |
//! | `inject=auto\|requested` | the site file's `inject.automatic`, else `requested` | `auto`: every job of a user with a usable login gets a token without `--qlam-auth` (`--qlam-auth=no` opts out, and so does `QLAM_AUTH_INJECT=no` in the submission environment); a user without a login is never refused for it |
//! | `m2m=NAME:FILE[:GROUP,...]` | none | a site service account (repeatable): `--qlam-auth=NAME` gets its client-credentials token; FILE is root-only (0600 root); the optional groups are the world-readable copy of its allowlist, checked at submission (see [`SiteAccountRef`] and `hooks/site.rs`) |
//! | `renew=yes\|no` | yes | keep the token file valid while the job runs (`qlam-auth job-renewer`, one per job, node and token file) |
//! | `renew_at=F` | 0.5 | renew once this fraction of the token's lifetime has passed (0.5..=0.9) |
//! | `renewer=PATH` | `/usr/local/bin/qlam-auth` | absolute; the `qlam-auth` binary that runs the renewer |
//! | `grants=GRANT[,GRANT...]` | `device_code,authorization_code` | the OAuth grants a user's config may use: machine grants (`client_credentials`, `token_exchange`) only where the site enables them |
//! | `m2m_cache=PATH` | `/var/cache/qlam-auth/m2m` | absolute; root-only token caches of the site accounts, one directory per account (may be on a shared filesystem) |
//! | `exchange=off\|preferred\|required` | off | give jobs a narrow token made by RFC 8693 token exchange of the user's (preferred: fall back to the user's token with a logged reason; required: or fail the job) |
//! | `exchange_audience=A[,A...]` | the provider's audience | the audiences a job token may have; the first is the default |
//! | `exchange_scope=S[,S...]` | the IdP decides | the scopes a job token may have (comma- or space-separated); all of them by default |
//! | `exchange_max_lifetime=SECONDS` | none | the longest a job token may live (it never lives longer than the job's remaining time plus a margin) |
//! | `squeue=PATH\|off` | the first of `/usr/bin/squeue`, `/usr/local/bin/squeue`, `/opt/slurm/bin/squeue` | absolute; with `exchange=`, how the plugin learns the job's end time from slurmctld (`squeue --format=%e`, bounded by 3 s, once per step start); `off`: only `SLURM_JOB_END_TIME` from the job's environment (Slurm 23.02+, and settable by the user) |
//!
//! Slurm runs `job_epilog` without `init`, so every hook parses the arguments again.
//!
//! Nothing here may fail a hook by itself: a failing remote hook drains the node. Problems are
//! reported as [`Problem`]s, which the caller logs. A broken *security* argument (`issuers`,
//! `ca_bundle`, `token_dir`) fails closed: [`Args::misconfigured`] is set, and jobs that ask for a
//! token are refused with a message for the admins, while jobs that do not are unaffected.
//!
//! `mod.rs` holds this table, [`Args`] and the parse; the sub-parsers are beside it: `exchange`
//! (the `exchange*=` keys), `site_account` (`m2m=`, [`SiteAccountRef`], group lists) and
//! `values` (seconds, yes/no, absolute paths, grants, issuers, context names).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use token_core::config::GrantType;

mod exchange;
mod site_account;
mod values;

pub(crate) use site_account::parse_groups;
pub use site_account::{DEFAULT_M2M_CACHE, GID_PREFIX, SiteAccountRef};
pub(crate) use values::absolute_path;
pub use values::{MAX_CONTEXT_LEN, is_context_name};
use values::{parse_grants, parse_issuers, seconds, yes_no};

/// Default of `min_valid`.
pub const DEFAULT_MIN_VALID: Duration = Duration::from_secs(300);
/// Default of `token_dir`.
pub const DEFAULT_TOKEN_DIR: &str = "/run/qlam-auth";
/// Default of `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest accepted `timeout`: Slurm's own launch timeouts are not much longer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest accepted `min_valid` (one week).
pub const MAX_MIN_VALID: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default of `grants`: user logins, which put a person's own login behind the token.
pub const DEFAULT_GRANTS: [GrantType; 2] = [GrantType::DeviceCode, GrantType::AuthorizationCode];

/// The parsed plugin arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// A delivered token stays valid for at least this long.
    pub min_valid: Duration,
    /// Base directory of the per-job token directories.
    pub token_dir: PathBuf,
    /// Put the token itself into `QLAM_ACCESS_TOKEN` as well as into the file.
    pub env_token: bool,
    /// CA bundle for TLS to the issuer; `None` = system roots.
    pub ca_bundle: Option<PathBuf>,
    /// Bound on lock waiting plus network in one hook.
    pub timeout: Duration,
    /// Explicit `lock_timeout`, if given; see [`Args::lock_timeout`].
    pub lock_timeout: Option<Duration>,
    /// The allowed issuers; `None` = any issuer the user's config names.
    pub issuers: Option<Vec<String>>,
    /// The grants a user's config may use (`grants=`); default: user logins only.
    pub grants: Vec<GrantType>,
    /// Site service accounts (`m2m=`).
    pub site_accounts: Vec<SiteAccountRef>,
    /// Base directory of the site accounts' token caches.
    pub m2m_cache: PathBuf,
    /// Set when a security-relevant argument is broken: jobs asking for a token are refused with
    /// this message (for the site admins), instead of running with a weaker setting.
    pub misconfigured: Option<String>,
    /// `renew=no` turns off renewal of the token file while the job runs.
    pub renew: bool,
    /// `renew_at=F`: renew once this fraction of the token's lifetime has passed (0.5 to 0.9).
    pub renew_at: f64,
    /// `renewer=PATH`: the `qlam-auth` binary that runs `qlam-auth job-renewer`.
    pub renewer: PathBuf,
    /// The site file's path (`site=`).
    pub site_file: PathBuf,
    /// Automatic injection from `inject=` (`None`: the site file decides, else off).
    pub inject: Option<bool>,
    /// The site file, once [`Args::apply_site`] loaded it.
    pub site: Option<token_core::site::Site>,
    /// `exchange*=`: the site's policy for narrow job tokens.
    pub exchange: token_core::exchange::Policy,
    /// `squeue=PATH|off`: how the job's end time is asked of slurmctld.
    pub squeue: Squeue,
}

/// `squeue=`: where the job's end time comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Squeue {
    /// The first `squeue` of [`slurm_jobinfo::DEFAULT_SQUEUE`] that exists.
    #[default]
    Auto,
    /// This `squeue`.
    Path(PathBuf),
    /// Do not ask slurmctld: only the job's `SLURM_JOB_END_TIME`.
    Off,
}

/// Default of `renewer`.
pub const DEFAULT_RENEWER: &str = "/usr/local/bin/qlam-auth";

impl Default for Args {
    fn default() -> Self {
        Args {
            min_valid: DEFAULT_MIN_VALID,
            token_dir: PathBuf::from(DEFAULT_TOKEN_DIR),
            env_token: true,
            ca_bundle: None,
            timeout: DEFAULT_TIMEOUT,
            lock_timeout: None,
            issuers: None,
            grants: DEFAULT_GRANTS.to_vec(),
            site_accounts: Vec::new(),
            m2m_cache: PathBuf::from(DEFAULT_M2M_CACHE),
            misconfigured: None,
            renew: true,
            renew_at: token_core::renew::DEFAULT_RENEW_AT,
            renewer: PathBuf::from(DEFAULT_RENEWER),
            site_file: PathBuf::from(token_core::site::DEFAULT_SITE_FILE),
            inject: None,
            site: None,
            exchange: token_core::exchange::Policy::default(),
            squeue: Squeue::Auto,
        }
    }
}

/// A problem found in the arguments, to be logged by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);
impl Args {
    /// Parses the plugin arguments. Never fails: unknown arguments and bad values are returned
    /// as problems, bad values of ordinary settings keep their default, bad security settings
    /// set [`Args::misconfigured`].
    pub fn parse<S: AsRef<str>>(argv: &[S]) -> (Args, Vec<Problem>) {
        let mut args = Args::default();
        let mut problems = Vec::new();
        for raw in argv {
            let raw = raw.as_ref();
            let Some((key, value)) = raw.split_once('=') else {
                problems.push(Problem(format!(
                    "ignoring plugin argument '{raw}': expected KEY=VALUE"
                )));
                continue;
            };
            if let Err(msg) = args.apply(key, value) {
                problems.push(Problem(format!("plugin argument '{raw}': {msg}")));
            }
        }
        if let Some(lock) = args.lock_timeout
            && lock > args.timeout
        {
            problems.push(Problem(format!(
                "lock_timeout ({} s) is longer than timeout ({} s); using {} s",
                lock.as_secs(),
                args.timeout.as_secs(),
                args.timeout.as_secs()
            )));
            args.lock_timeout = Some(args.timeout);
        }
        (args, problems)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        if self.apply_exchange(key, value)? {
            return Ok(());
        }
        match key {
            "min_valid" => {
                self.min_valid = seconds(value, Duration::ZERO, MAX_MIN_VALID)
                    .map_err(|e| format!("{e}; keeping {} s", self.min_valid.as_secs()))?;
            }
            "timeout" => {
                self.timeout = seconds(value, Duration::from_secs(1), MAX_TIMEOUT)
                    .map_err(|e| format!("{e}; keeping {} s", self.timeout.as_secs()))?;
            }
            "lock_timeout" => {
                self.lock_timeout = Some(
                    seconds(value, Duration::ZERO, MAX_TIMEOUT)
                        .map_err(|e| format!("{e}; using half of timeout"))?,
                );
            }
            "env_token" => self.env_token = yes_no(value, self.env_token)?,
            "token_dir" => match absolute_path(value) {
                Ok(p) => self.token_dir = p,
                Err(e) => return Err(self.fail_closed(format!("token_dir: {e}"))),
            },
            "ca_bundle" => match absolute_path(value) {
                Ok(p) => self.ca_bundle = Some(p),
                Err(e) => return Err(self.fail_closed(format!("ca_bundle: {e}"))),
            },
            "m2m" => match SiteAccountRef::parse(value) {
                Ok(a) if self.site_accounts.iter().any(|b| b.name == a.name) => {
                    return Err(self.fail_closed(format!("m2m: '{}' is listed twice", a.name)));
                }
                Ok(a) => self.site_accounts.push(a),
                Err(e) => return Err(self.fail_closed(format!("m2m: {e}"))),
            },
            "m2m_cache" => match absolute_path(value) {
                Ok(p) => self.m2m_cache = p,
                Err(e) => return Err(self.fail_closed(format!("m2m_cache: {e}"))),
            },
            "renew" => self.renew = yes_no(value, self.renew).map_err(|e| format!("renew: {e}"))?,
            "renew_at" => {
                let (lo, hi) = token_core::renew::RENEW_AT_RANGE;
                match value.parse::<f64>() {
                    Ok(f) if (lo..=hi).contains(&f) => self.renew_at = f,
                    _ => {
                        return Err(format!(
                            "renew_at: expected a fraction of the token lifetime from {lo} to \
                             {hi}; keeping {}",
                            self.renew_at
                        ));
                    }
                }
            }
            "renewer" => match absolute_path(value) {
                Ok(p) => self.renewer = p,
                Err(e) => {
                    return Err(format!("renewer: {e}; keeping {}", self.renewer.display()));
                }
            },
            "squeue" if value == "off" => self.squeue = Squeue::Off,
            "squeue" => match absolute_path(value) {
                Ok(p) => self.squeue = Squeue::Path(p),
                Err(e) => return Err(format!("squeue: {e}; asking the default squeue")),
            },
            "site" => match absolute_path(value) {
                Ok(p) => self.site_file = p,
                Err(e) => return Err(self.fail_closed(format!("site: {e}"))),
            },
            "inject" => {
                self.inject = match value {
                    "auto" | "yes" => Some(true),
                    "requested" | "no" => Some(false),
                    _ => return Err("expected auto or requested; the site file decides".into()),
                };
            }
            "grants" => match parse_grants(value) {
                Ok(list) => self.grants = list,
                Err(e) => return Err(self.fail_closed(format!("grants: {e}"))),
            },
            "issuers" => match parse_issuers(value) {
                Ok(list) => self.issuers = Some(list),
                Err(e) => return Err(self.fail_closed(format!("issuers: {e}"))),
            },
            _ => {
                return Err(format!(
                    "unknown argument '{key}' (known: min_valid, token_dir, env_token, ca_bundle, \
                     timeout, lock_timeout, issuers, grants, site, inject, m2m, m2m_cache, renew, renew_at, \
                     renewer, exchange, exchange_audience, exchange_scope, exchange_max_lifetime, squeue); ignored"
                ));
            }
        }
        Ok(())
    }

    /// Records a broken security setting; returns the problem text.
    fn fail_closed(&mut self, what: String) -> String {
        let msg = format!(
            "{what}; jobs asking for --qlam-auth are refused until plugstack.conf is fixed"
        );
        self.misconfigured.get_or_insert_with(|| {
            format!(
                "the qlam-auth plugin is misconfigured on this cluster ({what}); \
                 please tell your site admins"
            )
        });
        msg
    }

    /// Applies the site file as [`token_core::site::Site::load`] returned it: its `issuers` unless
    /// plugstack set `issuers=`, its `inject` unless plugstack set `inject=`. A site file that
    /// cannot be used, or no allowed issuers at all, fails closed. Returns problems for the log.
    pub fn apply_site(
        &mut self,
        loaded: token_core::Result<Option<token_core::site::Site>>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        match loaded {
            Err(e) => problems.push(Problem(self.fail_closed(format!("site file: {e}")))),
            Ok(Some(site)) => {
                if self.issuers.is_none() {
                    self.issuers = site.issuers.clone();
                }
                if self.inject.is_none() {
                    self.inject = Some(site.inject.automatic);
                }
                self.site = Some(site);
            }
            Ok(None) => {}
        }
        if self.issuers.is_none() && self.misconfigured.is_none() {
            problems.push(Problem(self.fail_closed(format!(
                "no allowed issuers: set issuers=https://... in plugstack.conf or \"issuers\" in \
                 the site file {}",
                self.site_file.display()
            ))));
        }
        problems
    }

    /// Whether jobs that did not ask get a token anyway (plugstack `inject=`, else the site file).
    pub fn inject_automatically(&self) -> bool {
        self.inject.unwrap_or(false)
    }

    /// Refuses a user config's grant that the site did not enable (`grants=`), with the fix.
    pub fn check_grant(&self, grant: GrantType) -> Result<(), String> {
        if self.grants.contains(&grant) {
            return Ok(());
        }
        let enabled: Vec<&str> = self.grants.iter().map(GrantType::as_str).collect();
        Err(format!(
            "the qsh config uses grant_type {}, which this cluster does not allow in jobs \
             (plugstack.conf grants={}); log in with device_code or authorization_code \
             (`qlam-auth login`), or ask your site admins to add {} to grants=",
            grant.as_str(),
            enabled.join(","),
            grant.as_str()
        ))
    }

    /// The site service account named `name`, if the site configured one.
    pub fn site_account(&self, name: Option<&str>) -> Option<&SiteAccountRef> {
        let name = name?;
        self.site_accounts.iter().find(|a| a.name == name)
    }

    /// The `squeue` that tells the job's end (`squeue=`), if any: the configured one, the first
    /// default that exists, or none with `squeue=off`.
    pub fn squeue_path(&self) -> Option<PathBuf> {
        match &self.squeue {
            Squeue::Off => None,
            Squeue::Path(p) => Some(p.clone()),
            Squeue::Auto => slurm_jobinfo::default_squeue(),
        }
    }

    /// The time one hook may wait for the store lock: `lock_timeout`, or half of `timeout`.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
            .unwrap_or(self.timeout / 2)
            .min(self.timeout)
    }

    /// The time left for the network once the lock wait is accounted for (at least 1 s).
    pub fn http_timeout(&self) -> Duration {
        self.timeout
            .saturating_sub(self.lock_timeout())
            .max(Duration::from_secs(1))
    }

    /// The TCP/TLS connect timeout: 5 s at most, and never more than the HTTP timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.http_timeout().min(Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(argv: &[&str]) -> (Args, Vec<Problem>) {
        Args::parse(argv)
    }

    #[test]
    fn defaults() {
        let (a, p) = parse(&[]);
        assert!(p.is_empty());
        assert_eq!(a, Args::default());
        assert_eq!(a.min_valid, Duration::from_secs(300));
        assert_eq!(a.token_dir, PathBuf::from("/run/qlam-auth"));
        assert!(a.env_token);
        assert_eq!(a.timeout, Duration::from_secs(20));
        assert_eq!(a.lock_timeout(), Duration::from_secs(10));
        assert_eq!(a.http_timeout(), Duration::from_secs(10));
        assert_eq!(a.connect_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn all_arguments() {
        let (a, p) = parse(&[
            "min_valid=900",
            "token_dir=/var/run/tok",
            "env_token=no",
            "ca_bundle=/etc/ssl/site.pem",
            "timeout=30",
            "lock_timeout=5",
            "issuers=https://a.example/realms/x/,https://b.example",
        ]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(a.min_valid, Duration::from_secs(900));
        assert_eq!(a.token_dir, PathBuf::from("/var/run/tok"));
        assert!(!a.env_token);
        assert_eq!(a.ca_bundle, Some(PathBuf::from("/etc/ssl/site.pem")));
        assert_eq!(a.lock_timeout(), Duration::from_secs(5));
        assert_eq!(a.http_timeout(), Duration::from_secs(25));
        assert_eq!(
            a.issuers,
            Some(vec![
                "https://a.example/realms/x".to_owned(),
                "https://b.example".to_owned()
            ])
        );
        assert_eq!(a.misconfigured, None);
    }

    #[test]
    fn unknown_and_malformed_arguments_are_reported_not_fatal() {
        let (a, p) = parse(&["colour=blue", "verbose"]);
        assert_eq!(p.len(), 2);
        assert!(p[0].0.contains("unknown argument 'colour'"), "{p:?}");
        assert!(p[1].0.contains("expected KEY=VALUE"), "{p:?}");
        assert_eq!(a, Args::default());
    }

    #[test]
    fn bad_numbers_keep_defaults() {
        let (a, p) = parse(&[
            "min_valid=ten",
            "timeout=0",
            "timeout=100000",
            "env_token=maybe",
        ]);
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(a.min_valid, DEFAULT_MIN_VALID);
        assert_eq!(a.timeout, DEFAULT_TIMEOUT);
        assert!(a.env_token);
        assert_eq!(a.misconfigured, None);
    }

    #[test]
    fn squeue_is_a_path_or_off() {
        assert_eq!(parse(&[]).0.squeue, Squeue::Auto);
        let (a, p) = parse(&["squeue=/opt/slurm/bin/squeue"]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            a.squeue,
            Squeue::Path(PathBuf::from("/opt/slurm/bin/squeue"))
        );
        assert_eq!(parse(&["squeue=off"]).0.squeue, Squeue::Off);
        let (a, p) = parse(&["squeue=bin/squeue"]);
        assert_eq!(a.squeue, Squeue::Auto);
        assert_eq!(p.len(), 1, "a relative squeue is reported: {p:?}");
        assert!(a.misconfigured.is_none(), "and it does not refuse jobs");
    }

    #[test]
    fn grants_default_to_user_logins() {
        let (a, _) = parse(&[]);
        assert!(a.check_grant(GrantType::DeviceCode).is_ok());
        assert!(a.check_grant(GrantType::AuthorizationCode).is_ok());
        let e = a.check_grant(GrantType::TokenExchange).unwrap_err();
        assert!(e.contains("grants=device_code,authorization_code"), "{e}");
        assert!(a.check_grant(GrantType::ClientCredentials).is_err());
        let (a, p) = parse(&["grants=client_credentials, token_exchange"]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            a.grants,
            vec![GrantType::ClientCredentials, GrantType::TokenExchange]
        );
        assert!(a.check_grant(GrantType::DeviceCode).is_err());
    }

    #[test]
    fn lock_timeout_is_clamped_to_timeout() {
        let (a, p) = parse(&["timeout=10", "lock_timeout=60"]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(a.lock_timeout(), Duration::from_secs(10));
        assert_eq!(a.http_timeout(), Duration::from_secs(1));
    }

    #[test]
    fn issuers_and_inject_come_from_the_site_file_unless_plugstack_sets_them() {
        let site = |issuers: &str, auto: bool| {
            token_core::site::Site::from_bytes(
                Path::new("/etc/qlam-auth/site.json"),
                format!(r#"{{"issuers": [{issuers}], "inject": {{"automatic": {auto}}}}}"#)
                    .as_bytes(),
            )
            .map(Some)
        };
        let (mut a, _) = parse(&[]);
        assert!(
            a.apply_site(site(r#""https://site.example""#, true))
                .is_empty()
        );
        assert_eq!(a.issuers, Some(vec!["https://site.example".to_owned()]));
        assert!(a.inject_automatically() && a.misconfigured.is_none());

        let (mut a, _) = parse(&["issuers=https://plug.example", "inject=requested"]);
        assert!(
            a.apply_site(site(r#""https://site.example""#, true))
                .is_empty()
        );
        assert_eq!(a.issuers, Some(vec!["https://plug.example".to_owned()]));
        assert!(!a.inject_automatically());

        // Neither: refused, with the fix for the admins.
        let (mut a, _) = parse(&[]);
        let p = a.apply_site(Ok(None));
        assert!(
            p[0].0.contains("issuers=") && p[0].0.contains("site file"),
            "{p:?}"
        );
        let m = a.misconfigured.clone().unwrap_or_default();
        assert!(
            m.contains("no allowed issuers") && m.contains("site admins"),
            "{m}"
        );
        assert!(!a.inject_automatically());

        // A site file others could change: refused too.
        let (mut a, _) = parse(&["issuers=https://plug.example"]);
        let bad = Err(token_core::Error::InsecurePermissions {
            path: "/etc/qlam-auth/site.json".into(),
            detail: "mode 0666".into(),
            fix: "chmod 644".into(),
        });
        assert_eq!(a.apply_site(bad).len(), 1);
        assert!(a.misconfigured.is_some());
    }

    #[test]
    fn broken_security_settings_fail_closed() {
        for bad in [
            "exchange=maybe",
            "exchange_audience=,",
            "exchange_scope=",
            "exchange_max_lifetime=5",
            "issuers=http://plain.example",
            "issuers=",
            "issuers=https://",
            "ca_bundle=relative.pem",
            "token_dir=run/x",
            "token_dir=/run/../etc",
            "grants=",
            "grants=device_code,password",
        ] {
            let (a, p) = parse(&[bad]);
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            let m = a.misconfigured.unwrap_or_default();
            assert!(m.contains("misconfigured"), "{bad}: {m}");
        }
    }
}
