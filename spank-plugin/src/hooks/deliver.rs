//! `user_init` (slurmstepd, effective uid = the job's user): obtain the token, write the job's
//! token file and put it into the job's environment. Never fails the hook.
#![forbid(unsafe_code)]

use std::time::Instant;

use super::env::{self, export};
use super::exchange::{deliver_exchanged, exchange_request, job_remaining};
use super::option::{job_request, parse_args};
use super::renewal::{needed_validity, renewal};
use super::submit::check_config_env;
use super::{
    Backend, Context, Host, Level, Request, Requested, Source, State, Verdict, audited, step_name,
};
use crate::args::Args;
use crate::backend::{ExchangeMode, source_name};

/// `slurm_spank_user_init` (remote, effective uid = the job's user): obtain the token, write the
/// job's token file, export its path. Never fails the hook.
pub fn user_init(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    argv: &[String],
) -> Verdict {
    if host.context() != Context::Remote {
        return Verdict::Continue;
    }
    let args = parse_args(host, argv, Level::Debug);
    let (req, auto) = match job_request(host, state, &args) {
        None => return Verdict::Continue,
        Some((Ok(r), auto)) => (r, auto),
        Some((Err(msg), _)) => {
            state.remember(host, msg);
            return Verdict::Continue;
        }
    };
    if state.failure.is_some() {
        return Verdict::Continue; // reported by task_init
    }
    if auto && (args.misconfigured.is_some() || state.job_dir.is_none()) {
        return Verdict::Continue;
    }
    match deliver(host, backend, state, &args, &req) {
        Ok(()) => {}
        // Automatic injection never fails a job: it runs without a token.
        Err(msg) if auto => host.log(
            Level::Info,
            &format!("no automatic token for this job: {msg}"),
        ),
        Err(msg) => state.remember(host, msg),
    }
    Verdict::Continue
}

fn deliver(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    args: &Args,
    req: &Requested,
) -> Result<(), String> {
    let started = Instant::now();
    let (Some(job), Some(uid)) = (host.job_id(), host.job_uid()) else {
        return Err(
            "Slurm did not provide the job id and uid; please tell your site admins".to_owned(),
        );
    };
    let dir = state
        .job_dir
        .clone()
        .unwrap_or_else(|| args.token_dir.join(job.to_string()));
    let file_name = req.file_name();
    let step = step_name(host.step_id());
    if args.site_account(req.context.as_deref()).is_some() {
        // Obtained as root in init_post_opt; the user's side only writes it.
        let site = state.site_token.as_ref().ok_or_else(|| {
            "internal error: the site account's token was not obtained; please tell your site admins"
                .to_owned()
        })?;
        let path = backend
            .write_token(&dir, &file_name, &site.token)
            .map_err(|msg| format!("could not write the job's token file: {msg}"))?;
        export(host, args, &path, &site.token)?;
        host.log(
            Level::Info,
            &format!(
                "job={job} step={step} uid={uid} token={} {} elapsed_ms={}",
                site.token.fingerprint(),
                site.log,
                started.elapsed().as_millis()
            ),
        );
        return Ok(());
    }
    let args = &needed_validity(&*host, args);
    let exchange = exchange_request(&*host, args, job_remaining(&*host, args))?;

    if let Some(token) = backend.reuse_token(&dir.join(&file_name), args.min_valid) {
        let path = dir.join(&file_name);
        export(host, args, &path, &token)?;
        renewal(
            host,
            backend,
            args,
            &dir,
            &file_name,
            req,
            uid,
            exchange.as_ref(),
        );
        host.log(
            Level::Info,
            &format!(
                "job={job} step={step} uid={uid} token={} reused=yes refreshed=no elapsed_ms={}",
                token.fingerprint(),
                started.elapsed().as_millis()
            ),
        );
        return Ok(());
    }

    let home = host.user_home(uid).ok_or_else(|| {
        format!("cannot find the home directory of uid {uid} in the password database")
    })?;
    check_config_env(&*host)?;
    let job_env = |name: &str| env::job_var(&*host, name);
    let request = Request {
        home: &home,
        env: &job_env,
        context: req.context.as_deref(),
        args,
    };
    if let Some(ex) = &exchange {
        match backend.exchange(&request, ex, job, &file_name) {
            Ok(x) => {
                return deliver_exchanged(host, backend, state, args, req, &dir, x, ex, started);
            }
            Err(e) if args.exchange.mode == ExchangeMode::Required => {
                return Err(audited(
                    &*host,
                    &e,
                    format!(
                        "this job could not get its job token (token exchange is required on \
                         this cluster): {e}"
                    ),
                ));
            }
            Err(e) => {
                let line = audited(
                    &*host,
                    &e,
                    format!(
                        "job={job}: token exchange failed ({e}); the job gets the user's own \
                         token (exchange=preferred)"
                    ),
                );
                host.log(Level::Error, &line);
            }
        }
    }
    let got = backend
        .obtain(&request)
        .map_err(|e| audited(&*host, &e, format!("this job could not get a token: {e}")))?;
    let path = backend
        .write_token(&dir, &file_name, &got.token)
        .map_err(|msg| format!("could not write the job's token file: {msg}"))?;
    export(host, args, &path, &got.token)?;
    renewal(host, backend, args, &dir, &file_name, req, uid, None);
    let expires_in = got
        .expires_in
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    host.log(
        Level::Info,
        &format!(
            "job={job} step={step} uid={uid} token={} subject={} client_id={} reused=no \
             refreshed={} source={} expires_in_s={expires_in} lock_wait_ms={} elapsed_ms={}{}",
            got.token.fingerprint(),
            got.subject.as_deref().unwrap_or("-"),
            got.client_id,
            if got.refreshed { "yes" } else { "no" },
            source_name(got.source),
            got.lock_wait.as_millis(),
            got.elapsed.max(started.elapsed()).as_millis(),
            got.capped_from.map_or_else(String::new, |c| format!(
                " min_valid_capped_from_s={} (the identity provider's tokens live shorter)",
                c.as_secs()
            )),
        ),
    );
    if got.source == Source::Stale {
        host.log(
            Level::Error,
            &format!(
                "job={job}: the identity provider could not be reached; the job got a token that \
                 expires in {expires_in} s, less than min_valid ({} s)",
                args.min_valid.as_secs()
            ),
        );
    }
    Ok(())
}
