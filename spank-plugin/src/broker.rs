//! [`Backend`] made of token-core: the only module of the plugin that calls token-core.
//!
//! Every call is synchronous and starts no thread (token-core's HTTP client is blocking), so
//! nothing outlives the hook that made it. Time is bounded by the plugin's `timeout` argument:
//! `lock_timeout` for the store lock, the rest for the network.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use token_core::broker::{Broker, ObtainOptions, Obtained, Source};
use token_core::config::{Config, ProviderConfig};
use token_core::http::HttpSettings;
use token_core::paths::QshPaths;
use token_core::secret::Secret;
use token_core::time::Timestamp;
use token_core::{deliver, fsutil, jwt};

use crate::args::Args;
use crate::hooks::{Backend, Delivery, Exchange, JobTokens, RenewerSpec, Request};

/// The production [`Backend`].
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenCore;

impl TokenCore {
    /// A broker for the user's provider of the requested context. token-core refuses an issuer
    /// outside the site's `issuers` list here, before anything is read from the store.
    fn broker(req: &Request<'_>) -> Result<(Broker, ProviderConfig), String> {
        let paths = QshPaths::resolve(req.home, req.env);
        let config =
            Config::load_with_site(&paths, req.args.site.clone()).map_err(|e| e.to_string())?;
        let provider = config
            .provider_with_env(req.context, req.env)
            .map_err(|e| e.to_string())?;
        // At submission (sbatch fails with the fix) and in the job (task_init fails the job).
        req.args.check_grant(provider.grant_type)?;
        // plugstack timeout= bounds the whole hook: lock wait, discovery, request and retries.
        let broker = Broker::new(&paths, provider.clone(), &http_settings(req.args))
            .map_err(|e| e.to_string())?
            .with_deadline(Instant::now() + req.args.timeout);
        Ok((broker, provider))
    }
}

/// How fresh the token must be and how long to wait for another job's refresh.
fn obtain_options(args: &Args) -> ObtainOptions {
    ObtainOptions {
        min_valid: args.min_valid,
        lock_timeout: args.lock_timeout(),
    }
}

/// What the hooks log and deliver, from what token-core obtained.
fn delivery(got: Obtained, subject: Option<String>) -> Delivery {
    let now = Timestamp::now().unix_seconds();
    Delivery {
        token: got.access_token,
        refreshed: got.refreshed,
        source: match got.source {
            Source::Cache => "cache",
            Source::RenewedByOther => "renewed_by_other",
            Source::Renewed => "renewed",
            Source::Stale => "stale",
        },
        expires_in: got.expires_at.map(|t| t.unix_seconds().saturating_sub(now)),
        subject,
        client_id: got.client_id,
        elapsed: got.elapsed,
        lock_wait: got.lock_wait,
        capped_from: got.capped_from,
    }
}

/// The arguments of `qlam-auth job-renewer` for `spec` (no secret among them: every local user
/// can read a process's arguments).
pub fn renewer_args(spec: &RenewerSpec, args: &Args) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        "job-renewer".into(),
        "--job".into(),
        spec.job.to_string().into(),
        "--dir".into(),
        spec.dir.clone().into(),
        "--file".into(),
        spec.file_name.clone().into(),
        "--home".into(),
        spec.home.clone().into(),
        "--renew-at".into(),
        args.renew_at.to_string().into(),
        "--timeout".into(),
        args.timeout.as_secs().to_string().into(),
        "--lock-timeout".into(),
        args.lock_timeout().as_secs().to_string().into(),
    ];
    if let Some(c) = &spec.context {
        v.extend(["--context".into(), c.clone().into()]);
    }
    if let Some(e) = spec.end_time {
        v.extend(["--end-time".into(), e.to_string().into()]);
    }
    let squeue = match &args.squeue {
        crate::args::Squeue::Off => None,
        crate::args::Squeue::Path(p) => Some(p.clone()),
        crate::args::Squeue::Auto => slurm_jobinfo::squeue_path(None),
    };
    if let Some(q) = squeue {
        v.extend(["--squeue".into(), q.into()]);
    }
    if let Some(ca) = &args.ca_bundle {
        v.extend(["--ca-bundle".into(), ca.clone().into()]);
    }
    v.extend(["--site-file".into(), args.site_file.clone().into()]);
    for i in args.issuers.iter().flatten() {
        v.extend(["--issuer".into(), i.clone().into()]);
    }
    if let Some(ex) = &spec.exchange {
        v.push("--exchange".into());
        if let Some(a) = &ex.audience {
            v.extend(["--exchange-audience".into(), a.clone().into()]);
        }
        if let Some(s) = &ex.scope {
            v.extend(["--exchange-scope".into(), s.clone().into()]);
        }
        if let Some(l) = ex.lifetime {
            v.extend([
                "--exchange-max-lifetime".into(),
                l.as_secs().to_string().into(),
            ]);
        }
    }
    v
}

/// The HTTP settings the site's arguments give.
pub fn http_settings(args: &Args) -> HttpSettings {
    HttpSettings {
        timeout: args.http_timeout(),
        connect_timeout: args.connect_timeout(),
        ca_bundle: args.ca_bundle.clone(),
        allowed_issuers: args.issuers.clone(),
    }
}

impl Backend for TokenCore {
    fn check_login(&self, req: &Request<'_>) -> Result<String, String> {
        let (broker, provider) = Self::broker(req)?;
        let login = broker.check_login().map_err(|e| e.to_string())?;
        let now = Timestamp::now();
        let access = match login.access_expires_at {
            Some(t) if t.unix_seconds() > now.unix_seconds() => {
                format!("valid for {} s", t.unix_seconds() - now.unix_seconds())
            }
            Some(_) => "expired".to_owned(),
            None => "expiry unknown".to_owned(),
        };
        Ok(format!(
            "context '{}', provider '{}', issuer {}, client_id {}, subject {}, access token {access}, \
             refresh token {}",
            provider.context,
            provider.name,
            provider.issuer,
            provider.client_id,
            login.subject.as_deref().unwrap_or("-"),
            if login.has_refresh_token {
                "stored"
            } else {
                "none"
            }
        ))
    }

    fn prepare_job_dir(
        &self,
        base: &Path,
        job: &str,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, String> {
        // As root: nothing is created under a directory that another user could change.
        fsutil::check_root_owned_ancestors(base).map_err(|e| format!("token_dir: {e}"))?;
        deliver::prepare_job_dir(base, job, uid, gid).map_err(|e| e.to_string())
    }

    fn reuse_token(&self, file: &Path, min_valid: Duration) -> Option<Secret> {
        // Any problem (missing, unreadable, not a JWT, no exp) means "get a fresh one".
        let token = deliver::read_token_file(file).ok()??;
        // An exchanged (possibly opaque) token: its record beside it says when it expires.
        let recorded = || {
            let (dir, name) = (file.parent()?, file.file_name()?.to_str()?);
            let meta = token_core::exchange::read_meta(dir, name)?;
            meta.describes(&token).then_some(meta.expires_at).flatten()
        };
        let exp = jwt::unverified_claims(token.expose())
            .and_then(|c| c.get("exp")?.as_i64())
            .or_else(recorded)?;
        let min_valid = i64::try_from(min_valid.as_secs()).ok()?;
        (exp >= Timestamp::now().unix_seconds().saturating_add(min_valid)).then_some(token)
    }

    fn obtain(&self, req: &Request<'_>) -> Result<Delivery, String> {
        let (broker, _) = Self::broker(req)?;
        let got = broker
            .obtain(&obtain_options(req.args))
            .map_err(|e| e.to_string())?;
        // The `sub` claim: slurmd's log is no place for e-mail addresses.
        let subject = token_core::jwt::sub(got.access_token.expose()).or(got.subject.clone());
        Ok(delivery(got, subject))
    }

    fn exchange(
        &self,
        req: &Request<'_>,
        ex: &token_core::exchange::Request,
        job: u32,
        file_name: &str,
    ) -> Result<Exchange, String> {
        let (broker, provider) = Self::broker(req)?;
        let paths = QshPaths::resolve(req.home, req.env);
        let opts = obtain_options(req.args);
        let mut user = None;
        let (token, subject, _) = token_core::jobcache::JobCache::new(&paths)
            .get_or_exchange(
                job,
                file_name,
                ex,
                opts.min_valid,
                opts.lock_timeout,
                &mut || {
                    let (u, x) = token_core::exchange::job_token(&broker, &opts, ex)?;
                    // The `sub` claim: slurmd's log is no place for e-mail addresses.
                    let subject =
                        token_core::jwt::sub(u.access_token.expose()).or(u.subject.clone());
                    user = Some(delivery(u, subject.clone()));
                    Ok((x, subject))
                },
            )
            .map_err(|e| e.to_string())?;
        Ok(Exchange {
            user,
            subject,
            client_id: provider.client_id.clone(),
            outlives: token.outlives(ex),
            job: token,
            provider,
        })
    }

    fn write_meta(
        &self,
        dir: &Path,
        file_name: &str,
        meta: &token_core::exchange::Meta,
    ) -> Result<(), String> {
        token_core::exchange::write_meta(dir, file_name, meta).map_err(|e| e.to_string())
    }

    fn revoke(&self, tokens: &JobTokens, args: &Args, within: Duration) -> Result<usize, String> {
        let Some(provider) = tokens.provider.clone() else {
            return Ok(0);
        };
        let http = HttpSettings {
            timeout: within,
            connect_timeout: within.min(args.connect_timeout()),
            ..http_settings(args)
        };
        let client: token_core::http::SharedHttp = std::sync::Arc::new(
            token_core::http::UreqClient::new(&http).map_err(|e| e.to_string())?,
        );
        let oauth = token_core::oauth::OAuthClient::new(client, provider, within)
            .with_deadline(Some(Instant::now() + within));
        let mut revoked = 0;
        for t in &tokens.tokens {
            if !oauth.revoke(t, "access_token").map_err(|e| e.to_string())? {
                return Ok(0);
            }
            revoked += 1;
        }
        Ok(revoked)
    }

    fn write_token(&self, dir: &Path, file_name: &str, token: &Secret) -> Result<PathBuf, String> {
        deliver::write_token_file(dir, file_name, token).map_err(|e| e.to_string())
    }

    fn start_renewer(&self, spec: &RenewerSpec, args: &Args) -> Result<bool, String> {
        use token_core::renew::lock_file_name;
        // Cheap check first: a renewer of this file already holds its lock.
        let dir = token_core::fsutil::open_dir(&spec.dir, token_core::fsutil::Policy::PRIVATE)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the job token directory does not exist".to_owned())?;
        match token_core::lock::acquire(
            token_core::fsutil::fd(&dir),
            &spec.dir,
            &lock_file_name(&spec.file_name),
            Duration::ZERO,
            &mut |_| {},
            &mut || false,
        ) {
            Ok(_free) => {}
            Err(token_core::Error::LockTimeout { .. }) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        }
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), spec.home.clone().into()),
            ("LC_ALL".into(), "C".into()),
        ];
        env.extend(spec.config_env.iter().map(|(k, v)| (k.into(), v.into())));
        // The daemon's own SLURM_CONF (root's), for the renewer's squeue; never the job's.
        if let Some(conf) = std::env::var_os("SLURM_CONF").filter(|c| !c.is_empty()) {
            env.push(("SLURM_CONF".into(), conf));
        }
        crate::spawn::detached(&crate::spawn::Spawn {
            program: args.renewer.clone(),
            args: renewer_args(spec, args),
            env,
            uid: spec.uid,
            gid: spec.gid,
        })
        .map_err(|e| format!("{}: {e}", args.renewer.display()))?;
        Ok(true)
    }

    fn renewal_status(&self, dir: &Path, file_name: &str) -> Option<(String, Option<String>)> {
        // As root (every step's `exit`): the file is the user's, in the user's directory.
        let v = status_of(&dir.join(token_core::renew::status_file_name(file_name)))?;
        Some((
            v.get("state")?.as_str()?.to_owned(),
            v.get("last_error")
                .and_then(|e| e.as_str())
                .map(str::to_owned),
        ))
    }

    fn load_site_account(
        &self,
        account: &crate::site::SiteAccountRef,
    ) -> Result<crate::site::SiteAccount, String> {
        crate::site::load(account)
    }

    fn obtain_site(
        &self,
        account: &crate::site::SiteAccountRef,
        acct: &crate::site::SiteAccount,
        args: &Args,
    ) -> Result<Delivery, String> {
        fsutil::check_root_owned_ancestors(&args.m2m_cache)
            .map_err(|e| format!("m2m_cache: {e}"))?;
        let paths = crate::site::cache_paths(&args.m2m_cache, &account.name);
        let provider = acct.provider(&account.name, &account.file);
        let broker = Broker::new(&paths, provider, &http_settings(args))
            .map_err(|e| e.to_string())?
            .with_settings(acct.settings());
        let got = broker
            .obtain(&obtain_options(args))
            .map_err(|e| e.to_string())?;
        Ok(delivery(got, None))
    }

    fn remove_job_dir(&self, base: &Path, job: &str) -> Result<bool, String> {
        fsutil::check_root_owned_ancestors(base).map_err(|e| format!("token_dir: {e}"))?;
        let dir = base.join(job);
        if dir.symlink_metadata().is_ok() {
            // A renewer still writing its status file would make the removal fail (a file
            // appears after the directory was emptied): stop it first, bounded.
            stop_renewers(&dir, job, RENEWER_STOP_WAIT);
        }
        let done = match deliver::remove_job_dir(base, job) {
            Ok(done) => done,
            // One more try, for a renewer that was not ours to stop in time.
            Err(first) => {
                std::thread::sleep(Duration::from_millis(100));
                deliver::remove_job_dir(base, job).map_err(|_| first.to_string())?
            }
        };
        Ok(done != deliver::Cleanup::Absent)
    }
}

/// How long the removal of a job directory waits for its renewers to end.
pub const RENEWER_STOP_WAIT: Duration = Duration::from_secs(3);

/// As root, before `dir` is removed: SIGTERM to every renewer that wrote a status file in it
/// (the pid in `<file>.status`, checked against /proc: a `job-renewer` of this job), then wait
/// at most `wait` for all of them to end. Returns how many were stopped.
pub fn stop_renewers(dir: &Path, job: &str, wait: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut pids = Vec::new();
    for e in entries.flatten().take(64) {
        let name = e.file_name();
        if !name.to_string_lossy().ends_with(".status") {
            continue;
        }
        let pid = status_of(&e.path())
            .and_then(|v| v.get("pid").and_then(|p| p.as_u64()))
            .and_then(|p| u32::try_from(p).ok());
        if let Some(pid) = pid.filter(|p| is_renewer_of(*p, job))
            && crate::spawn::terminate(pid)
        {
            pids.push(pid);
        }
    }
    let until = Instant::now() + wait;
    while pids.iter().any(|p| alive(*p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.len()
}

/// A renewer's status file, read by root in the user's job directory: never following a link,
/// never blocking on a FIFO, at most 64 KiB; `None` if absent or not JSON. Nothing in it is
/// trusted beyond a pid that is then checked against /proc, and text for the log.
fn status_of(path: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// True if `pid` runs `qlam-auth job-renewer --job JOB ...`.
fn is_renewer_of(pid: u32, job: &str) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    args.contains(&&b"job-renewer"[..])
        && args
            .windows(2)
            .any(|w| w[0] == b"--job" && w[1] == job.as_bytes())
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review item 7: root creates nothing under a `token_dir` (or `m2m_cache`) that
    /// has a directory on the way which another user could change.
    #[test]
    fn job_directories_are_not_made_under_a_directory_others_can_change() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let base = shared.join("qlam-auth");
        let me = fsutil::euid();
        let e = TokenCore.prepare_job_dir(&base, "7", me, 0).unwrap_err();
        assert!(e.contains("token_dir") && e.contains("other users"), "{e}");
        assert!(!base.exists(), "nothing was created");
        assert!(TokenCore.remove_job_dir(&base, "7").is_err());
    }

    /// A user config whose current context uses `grant`, in a fresh home directory.
    fn home_with_grant(grant: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        let qsh = home.path().join(".qsh");
        std::fs::create_dir(&qsh).unwrap();
        let config = serde_json::json!({
            "current_context": "c",
            "contexts": [{"name": "c", "qpu": "q",
                "defaults": {"auth_provider": "p"},
                "auth_providers": [{"provider": "oauth", "name": "p",
                    "auth_base_url": "https://idp.example", "client_id": "cid",
                    "client_secret": "env:SVC_SECRET", "grant_type": grant,
                    "subject_token": "env:SUBJECT"}]}]
        });
        std::fs::write(qsh.join("config.json"), config.to_string()).unwrap();
        home
    }

    /// Security review item 1: a user's config may use only the grants the site enables; by
    /// default only user logins, so a job cannot make the plugin send a machine credential
    /// (or anything from the daemon's side) to an issuer of the user's choosing.
    #[test]
    fn machine_grants_are_refused_unless_the_site_enables_them() {
        let job_env = |k: &str| match k {
            "SVC_SECRET" | "SUBJECT" => Some("x".to_owned()),
            _ => None,
        };
        for grant in ["client_credentials", "token_exchange"] {
            let home = home_with_grant(grant);
            let (args, problems) = Args::parse::<&str>(&[]);
            assert!(problems.is_empty());
            let req = Request {
                home: home.path(),
                env: &job_env,
                context: None,
                args: &args,
            };
            let e = TokenCore.check_login(&req).unwrap_err();
            assert!(e.contains(grant) && e.contains("grants="), "{e}");
            let e = TokenCore.obtain(&req).unwrap_err();
            assert!(e.contains(grant) && e.contains("grants="), "{e}");

            let arg = format!("grants=device_code,{grant}");
            let (args, problems) = Args::parse(&[arg.as_str()]);
            assert!(problems.is_empty(), "{problems:?}");
            let req = Request { args: &args, ..req };
            assert!(TokenCore.check_login(&req).is_ok());
        }
        // User logins are allowed by default (here: not logged in, which is another error).
        let home = home_with_grant("device_code");
        let (args, _) = Args::parse::<&str>(&[]);
        let req = Request {
            home: home.path(),
            env: &job_env,
            context: None,
            args: &args,
        };
        let e = TokenCore.check_login(&req).unwrap_err();
        assert!(!e.contains("grants="), "{e}");
    }

    #[test]
    fn the_renewers_of_a_job_are_stopped_before_its_directory_goes_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        // Looks like `qlam-auth job-renewer --job JOB` in /proc/PID/cmdline; ends by itself
        // after 30 s at the latest.
        let fake = |job: &str| {
            std::process::Command::new("sh")
                .args([
                    "-c",
                    "for i in $(seq 600); do sleep 0.05; done",
                    "job-renewer",
                    "--job",
                    job,
                ])
                .spawn()
                .unwrap()
        };
        let write = |name: &str, pid: u32| {
            std::fs::write(
                tmp.path().join(name),
                format!("{{\"state\":\"ok\",\"pid\":{pid}}}"),
            )
            .unwrap()
        };
        let mut renewer = fake("42");
        let mut other = fake("7");
        write("token.status", renewer.id());
        // A status file naming a process that is not a renewer of this job: left alone.
        write("token-x.status", std::process::id());
        write("token-y.status", other.id());
        let started = Instant::now();
        let stopped = stop_renewers(tmp.path(), "42", Duration::from_secs(3));
        let took = started.elapsed();
        let renewer_gone = !alive(renewer.id());
        let other_alive = alive(other.id());
        for c in [&mut renewer, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(stopped, 1, "only the renewer of job 42 is stopped");
        assert!(renewer_gone, "it has ended");
        assert!(took < Duration::from_secs(3), "within the bound: {took:?}");
        assert!(other_alive, "another job's renewer is not ours to stop");
    }

    #[test]
    fn http_settings_follow_the_arguments() {
        let (args, _) = Args::parse(&[
            "timeout=30",
            "lock_timeout=10",
            "ca_bundle=/etc/ca.pem",
            "issuers=https://idp.example",
        ]);
        let http = http_settings(&args);
        assert_eq!(http.timeout, Duration::from_secs(20));
        assert_eq!(http.connect_timeout, Duration::from_secs(5));
        assert_eq!(http.ca_bundle, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            http.allowed_issuers,
            Some(vec!["https://idp.example".to_owned()])
        );
    }
}
