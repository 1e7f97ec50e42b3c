//! A narrow job token by RFC 8693 token exchange of the user's (plugstack `exchange=`): what
//! the user asks (`QLAM_AUTH_AUDIENCE`, `QLAM_AUTH_SCOPE`) within the site's policy, and the
//! delivery of the exchanged token.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use super::env::{self, export};
use super::renewal::{END_TIME_MARGIN, job_end, renewal};
use super::{
    Backend, ENV_WANT_AUDIENCE, ENV_WANT_SCOPE, Exchange, Host, Level, Requested, State, Uid,
    step_name,
};
use crate::args::Args;
use crate::backend::{ExchangeMode, ExchangeRequest, source_name};

/// What the user asks of the job token (`QLAM_AUTH_AUDIENCE`, `QLAM_AUTH_SCOPE` in the
/// submission environment), within the site's policy: `None` when the site does not exchange
/// tokens. `needed` is how long the job still needs a token. Asking for more than the site
/// allows, or for a narrow token where the site makes none, is an error that says what to do.
pub fn exchange_request(
    host: &dyn Host,
    args: &Args,
    needed: Option<Duration>,
) -> Result<Option<ExchangeRequest>, String> {
    let want = |s| env::get(host, s).filter(|v: &String| !v.trim().is_empty());
    let (audience, scope) = (want(env::WANT_AUDIENCE), want(env::WANT_SCOPE));
    if args.exchange.mode == ExchangeMode::Off {
        if audience.is_some() || scope.is_some() {
            return Err(format!(
                "{ENV_WANT_AUDIENCE}/{ENV_WANT_SCOPE} ask for a narrow job token, but this \
                 cluster does not make them (plugstack exchange=off): unset them, or ask your \
                 site admins"
            ));
        }
        return Ok(None);
    }
    args.exchange
        .resolve(audience.as_deref(), scope.as_deref(), needed)
        .map(Some)
        .map_err(|m| format!("{m} ({ENV_WANT_AUDIENCE}, {ENV_WANT_SCOPE})"))
}

/// The margin beyond the job's end of a job token's lifetime: [`END_TIME_MARGIN`] and half a
/// minute more, so that a later step, which needs the token until the end plus
/// [`END_TIME_MARGIN`], still reuses it.
pub const EXCHANGE_MARGIN: Duration = Duration::from_secs(END_TIME_MARGIN.as_secs() + 30);

/// How long this job still needs a token: until its end ([`job_end`]) plus [`EXCHANGE_MARGIN`].
pub(super) fn job_remaining(host: &dyn Host, args: &Args) -> Option<Duration> {
    let end = job_end(host, args)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Some(Duration::from_secs(end.saturating_sub(now)) + EXCHANGE_MARGIN)
}

/// Writes and exports an exchanged job token, starts its renewer, logs the audit line (job,
/// subject, client id, audience, fingerprints; never a token) and keeps the token for `exit`.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
pub(super) fn deliver_exchanged(
    host: &mut dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    args: &Args,
    req: &Requested,
    dir: &Path,
    x: Exchange,
    ex: &ExchangeRequest,
    started: Instant,
) -> Result<(), String> {
    let (job, uid) = (
        host.job_id().unwrap_or(0),
        host.job_uid().unwrap_or(Uid::ROOT),
    );
    let file_name = req.file_name();
    let path = backend
        .write_token(dir, &file_name, &x.job.token)
        .map_err(|msg| format!("could not write the job's token file: {msg}"))?;
    if let Err(msg) = backend.write_meta(dir, &file_name, &x.job) {
        host.log(Level::Error, &format!("job={job}: could not record the job token's expiry ({msg}); later steps exchange again"));
    }
    export(host, args, &path, &x.job.token)?;
    state.job_tokens.provider = Some(x.provider);
    state.job_tokens.tokens.push(x.job.token.clone());
    renewal(host, backend, args, dir, &file_name, req, uid, Some(ex));
    let (user_token, user_source, lock_wait) = match &x.user {
        Some(u) => (
            u.token.fingerprint(),
            source_name(u.source),
            u.lock_wait.as_millis(),
        ),
        None => ("-".to_owned(), "job_cache", 0),
    };
    host.log(
        Level::Info,
        &format!(
            "job={job} step={} uid={uid} token={} exchanged={} subject={} client_id={} \
             audience={} scope={} expires_in_s={} user_token={user_token} \
             user_source={user_source} lock_wait_ms={lock_wait} elapsed_ms={}",
            step_name(host.step_id()),
            x.job.token.fingerprint(),
            if x.user.is_some() { "yes" } else { "cached" },
            x.subject.as_deref().unwrap_or("-"),
            x.client_id,
            x.job.audience.as_deref().unwrap_or("-"),
            x.job
                .scope
                .as_deref()
                .map_or("-".to_owned(), |s| s.replace(' ', ",")),
            x.job
                .lifetime
                .map_or("-".to_owned(), |l| l.as_secs().to_string()),
            started.elapsed().as_millis(),
        ),
    );
    if x.outlives {
        host.log(
            Level::Error,
            &format!(
                "job={job}: the identity provider issued a job token that lives {} s, longer \
                 than the {} s asked for (it ignores requested_lifetime)",
                x.job
                    .lifetime
                    .map_or("an unknown number of".to_owned(), |l| l
                        .as_secs()
                        .to_string()),
                ex.lifetime.map_or(0, |l| l.as_secs())
            ),
        );
    }
    Ok(())
}
