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
use token_core::{deliver, jwt};

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
        let config = Config::load(&paths).map_err(|e| e.to_string())?;
        let provider = config
            .provider_with_env(req.context, req.env)
            .map_err(|e| e.to_string())?;
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
    if let Some(ca) = &args.ca_bundle {
        v.extend(["--ca-bundle".into(), ca.clone().into()]);
    }
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
        let v = token_core::renew::read_status(dir, file_name)?;
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
        let existed = base.join(job).symlink_metadata().is_ok();
        deliver::remove_job_dir(base, job).map_err(|e| e.to_string())?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
