//! [`TokenCore`]: the [`Backend`] made of token-core (config, store, OAuth, job files).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use token_core::broker::{Broker, ObtainOptions, Obtained};
use token_core::config::{Config, ProviderConfig};
use token_core::http::HttpSettings;
use token_core::paths::QshPaths;
use token_core::secret::Secret;
use token_core::time::Timestamp;
use token_core::{deliver, fsutil, jwt};

use super::renewer::{RENEWER_STOP_WAIT, renewer_args, status_of, stop_renewers};
use super::site_account::{SiteAccount, cache_paths};
use super::{
    Backend, BackendError, Delivery, Exchange, Exchanged, JobTokens, RenewerSpec, Request,
    daemon_env, daemon_var,
};
use crate::args::{Args, SiteAccountRef};
use crate::users::{Gid, Uid};

/// The production [`Backend`].
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenCore;

impl TokenCore {
    /// A broker for the user's provider of the requested context. token-core refuses an issuer
    /// outside the site's `issuers` list here, before anything is read from the store.
    fn broker(req: &Request<'_>) -> Result<(Broker, ProviderConfig), BackendError> {
        let paths = QshPaths::resolve(req.home, req.env);
        // The job's environment for its paths and `env:` references; slurmd's (the daemon's)
        // for what only the site may set: plain http to a loopback issuer, budget overrides.
        let config = Config::load_with_site(&paths, req.args.site.clone())?
            .with_http_loopback(token_core::config::allow_http_loopback(&daemon_env));
        let provider = config.provider_with_env(req.context, req.env)?;
        // At submission (sbatch fails with the fix) and in the job (task_init fails the job).
        req.args
            .check_grant(provider.grant_type)
            .map_err(BackendError::GrantNotAllowed)?;
        // plugstack timeout= bounds the whole hook: lock wait, discovery, request and retries.
        let http = http_settings(req.args);
        Broker::check_issuer(&provider, &http).map_err(BackendError::IssuerNotAllowed)?;
        let broker = Broker::new(&paths, provider.clone(), &http, &daemon_env)?
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
        source: got.source,
        expires_in: got.expires_at.map(|t| t.unix_seconds().saturating_sub(now)),
        subject,
        client_id: got.client_id,
        elapsed: got.elapsed,
        lock_wait: got.lock_wait,
        capped_from: got.capped_from,
    }
}

/// The HTTP settings the site's arguments give, plus `SSL_CERT_FILE` from the daemon's own
/// environment (the admin's), never the job's: a user must not choose whom the plugin trusts.
pub fn http_settings(args: &Args) -> HttpSettings {
    HttpSettings {
        timeout: args.http_timeout(),
        connect_timeout: args.connect_timeout(),
        ca_bundle: args.ca_bundle.clone(),
        allowed_issuers: args.issuers.clone(),
        ssl_cert_file: None,
    }
    .with_env(&daemon_var)
}

impl Backend for TokenCore {
    fn check_login(&self, req: &Request<'_>) -> Result<String, BackendError> {
        let (broker, provider) = Self::broker(req)?;
        let login = broker.check_login()?;
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
        uid: Uid,
        gid: Gid,
    ) -> Result<PathBuf, BackendError> {
        // As root: nothing is created under a directory that another user could change.
        root_owned("token_dir", base)?;
        Ok(deliver::prepare_job_dir(base, job, uid.get(), gid.get())?)
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

    fn obtain(&self, req: &Request<'_>) -> Result<Delivery, BackendError> {
        let (broker, _) = Self::broker(req)?;
        let got = broker.obtain(&obtain_options(req.args))?;
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
    ) -> Result<Exchange, BackendError> {
        let (broker, provider) = Self::broker(req)?;
        let paths = QshPaths::resolve(req.home, req.env);
        let opts = obtain_options(req.args);
        let mut user = None;
        let (token, subject, _) = token_core::jobcache::JobCache::new(&paths).get_or_exchange(
            job,
            file_name,
            ex,
            opts.min_valid,
            opts.lock_timeout,
            &mut || {
                let (u, x) = token_core::exchange::job_token(&broker, &opts, ex)?;
                // The `sub` claim: slurmd's log is no place for e-mail addresses.
                let subject = token_core::jwt::sub(u.access_token.expose()).or(u.subject.clone());
                user = Some(delivery(u, subject.clone()));
                Ok((x, subject))
            },
        )?;
        Ok(Exchange {
            user,
            subject,
            client_id: provider.client_id.clone(),
            outlives: token.outlives(ex),
            job: token,
            provider,
        })
    }

    fn write_meta(&self, dir: &Path, file_name: &str, job: &Exchanged) -> Result<(), BackendError> {
        let meta = token_core::exchange::Meta::of(job, Timestamp::now());
        Ok(token_core::exchange::write_meta(dir, file_name, &meta)?)
    }

    fn revoke(
        &self,
        tokens: &JobTokens,
        args: &Args,
        within: Duration,
    ) -> Result<usize, BackendError> {
        let Some(provider) = tokens.provider.clone() else {
            return Ok(0);
        };
        let http = HttpSettings {
            timeout: within,
            connect_timeout: within.min(args.connect_timeout()),
            ..http_settings(args)
        };
        let client: token_core::http::SharedHttp =
            std::sync::Arc::new(token_core::http::UreqClient::new(&http)?);
        let oauth = token_core::oauth::OAuthClient::new(client, provider, within)
            .with_deadline(Some(Instant::now() + within));
        let mut revoked = 0;
        for t in &tokens.tokens {
            if !oauth.revoke(t, "access_token")? {
                return Ok(0);
            }
            revoked += 1;
        }
        Ok(revoked)
    }

    fn write_token(
        &self,
        dir: &Path,
        file_name: &str,
        token: &Secret,
    ) -> Result<PathBuf, BackendError> {
        Ok(deliver::write_token_file(dir, file_name, token)?)
    }

    fn start_renewer(&self, spec: &RenewerSpec, args: &Args) -> Result<bool, BackendError> {
        use token_core::renew::lock_file_name;
        // Cheap check first: a renewer of this file already holds its lock.
        let dir = token_core::fsutil::open_dir(&spec.dir, token_core::fsutil::Policy::PRIVATE)?
            .ok_or(BackendError::NoJobDir)?;
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
            Err(e) => return Err(e.into()),
        }
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), spec.home.clone().into()),
            ("LC_ALL".into(), "C".into()),
        ];
        env.extend(spec.config_env.iter().map(|(k, v)| (k.into(), v.into())));
        // The daemon's own SLURM_CONF (root's), for the renewer's squeue; never the job's.
        if let Some(conf) = daemon_var("SLURM_CONF").filter(|c| !c.is_empty()) {
            env.push(("SLURM_CONF".into(), conf));
        }
        crate::spawn::detached(&crate::spawn::Spawn {
            program: args.renewer.clone(),
            args: renewer_args(spec, args),
            env,
            uid: spec.uid,
            gid: spec.gid,
        })
        .map_err(|source| BackendError::Renewer {
            program: args.renewer.clone(),
            source,
        })?;
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

    fn load_site_account(&self, account: &SiteAccountRef) -> Result<SiteAccount, BackendError> {
        SiteAccount::load(account)
    }

    fn obtain_site(
        &self,
        account: &SiteAccountRef,
        acct: &SiteAccount,
        args: &Args,
    ) -> Result<Delivery, BackendError> {
        root_owned("m2m_cache", &args.m2m_cache)?;
        let paths = cache_paths(&args.m2m_cache, &account.name);
        let provider = acct.provider(&account.name, &account.file);
        let http = http_settings(args);
        Broker::check_issuer(&provider, &http).map_err(BackendError::IssuerNotAllowed)?;
        let broker =
            Broker::new(&paths, provider, &http, &daemon_env)?.with_settings(acct.settings());
        let got = broker.obtain(&obtain_options(args))?;
        Ok(delivery(got, None))
    }

    fn remove_job_dir(&self, base: &Path, job: &str) -> Result<bool, BackendError> {
        root_owned("token_dir", base)?;
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
                deliver::remove_job_dir(base, job).map_err(|_| first)?
            }
        };
        Ok(done != deliver::Cleanup::Absent)
    }
}

/// As root: every directory on the way to `dir` (plugstack `setting`) must be root's and not
/// writable by others before anything is created or removed under it.
fn root_owned(setting: &'static str, dir: &Path) -> Result<(), BackendError> {
    fsutil::check_root_owned_ancestors(dir)
        .map_err(|source| BackendError::UnsafeDirectory { setting, source })
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
        let e = TokenCore
            .prepare_job_dir(&base, "7", Uid::new(me), Gid::new(0))
            .unwrap_err();
        assert!(matches!(e, BackendError::UnsafeDirectory { .. }) && e.is_security());
        let e = e.to_string();
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
            let e = TokenCore.check_login(&req).unwrap_err().to_string();
            assert!(e.contains(grant) && e.contains("grants="), "{e}");
            let e = TokenCore.obtain(&req).unwrap_err().to_string();
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
        let e = TokenCore.check_login(&req).unwrap_err().to_string();
        assert!(!e.contains("grants="), "{e}");
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
