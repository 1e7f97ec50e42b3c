//! `qlam-auth token`: print a valid access token, and only that, on stdout.

use super::select;
use crate::cli::TokenArgs;
use crate::exit::{self, Failure};
use crate::ui;
use std::time::Duration;
use token_core::broker::{Broker, ObtainOptions, Source};
use token_core::exchange::{Exchanged, Policy};
use token_core::secret::Secret;
use token_core::time::Timestamp;

/// `--min-valid` when not given.
const DEFAULT_MIN_VALID: u64 = 300;

/// Runs `token`.
pub fn run(args: &TokenArgs) -> Result<(), Failure> {
    let sel = select(args.context.as_deref())?;
    let min_valid = args.min_valid.unwrap_or(DEFAULT_MIN_VALID);
    let opts = ObtainOptions {
        min_valid: Duration::from_secs(min_valid),
        ..ObtainOptions::default()
    };
    let term = ui::DeferredTermination::install();
    let got = sel.broker.obtain(&opts);
    if term.requested() {
        return Err(Failure::msg(
            "terminated (SIGTERM or SIGHUP) while the token was being renewed; the renewal was \
             finished and saved first, and no token is printed",
            exit::TERMINATED,
        ));
    }
    let got = got?;
    // A stale token (renewal failed; still valid, but for less than asked) is good enough for
    // the default, not for a lifetime the caller asked for: `TOKEN=$(qlam-auth token
    // --min-valid 3600) || exit` must never go on with a token that lapses within the hour.
    if got.source == Source::Stale && args.min_valid.is_some() {
        let (why, code) = if got.lock_wait >= opts.lock_timeout {
            (
                "another process holds the credentials lock",
                exit::LOCK_TIMEOUT,
            )
        } else {
            (
                "the identity provider could not be reached",
                exit::IDP_UNAVAILABLE,
            )
        };
        let left = got
            .expires_at
            .map_or(0, |e| Timestamp::now().seconds_until(e).max(0));
        return Err(Failure::msg(
            format!(
                "could not renew the token ({why}); the stored one is valid for only {}, less than \
                 --min-valid {min_valid}: try again later, or ask for less",
                ui::human_duration(left.unsigned_abs())
            ),
            code,
        ));
    }
    log::info!(
        target: "qlam_auth",
        "token {} for {} (client {}): {:?}, expires {}, {} ms (lock wait {} ms)",
        got.access_token.fingerprint(),
        got.subject.as_deref().unwrap_or("?"),
        got.client_id,
        got.source,
        got.expires_at.map_or("never (unknown)".into(), ui::utc),
        got.elapsed.as_millis(),
        got.lock_wait.as_millis()
    );
    if got.refreshed
        && let Some(e) = got.expires_at
        && Timestamp::now().seconds_until(e) < i64::try_from(min_valid).unwrap_or(i64::MAX)
    {
        ui::warn(&format!(
            "the identity provider's tokens last less than --min-valid {} s, so every call \
             renews the token; ask for less (e.g. --min-valid {})",
            min_valid,
            (Timestamp::now().seconds_until(e) / 2).max(0)
        ));
    }
    let printed = if args.audience.is_some() || args.scope.is_some() || args.lifetime.is_some() {
        exchange(&sel.broker, args, &got.access_token)?
    } else {
        got.access_token
    };
    // Written in two parts so that no copy of the token is made.
    ui::emit(&[printed.expose(), "\n"]).map_err(|e| {
        Failure::msg(
            format!("could not write the token to stdout ({e}); check where the output goes"),
            exit::OTHER,
        )
    })
}

/// Trades the user's token for a narrow one (RFC 8693). No site policy applies here (plugstack
/// is the site's, for jobs): the identity provider's own policy decides.
fn exchange(broker: &Broker, args: &TokenArgs, subject: &Secret) -> Result<Secret, Failure> {
    let req = Policy::default()
        .resolve(
            args.audience.as_deref(),
            args.scope.as_deref(),
            args.lifetime.map(Duration::from_secs),
        )
        .map_err(|m| Failure::msg(m, exit::USAGE))?;
    let res = broker
        .oauth()?
        .exchange_access_token(subject, &req)
        .map_err(|e| {
            let code = exit::code_for(&e);
            Failure::msg(
                format!(
                    "token exchange failed: {e} (does the identity provider offer the \
                     token-exchange grant to this client, and allow this audience and scope?)"
                ),
                code,
            )
        })?;
    let job = Exchanged::from_response(res, &req);
    log::info!(
        target: "qlam_auth",
        "exchanged token {} for token {}: audience {}, scope {}, lifetime {}",
        subject.fingerprint(),
        job.token.fingerprint(),
        job.audience.as_deref().unwrap_or("(the provider's)"),
        job.scope.as_deref().unwrap_or("-"),
        job.lifetime.map_or("unknown".to_owned(), |l| format!("{} s", l.as_secs()))
    );
    if job.outlives(&req) {
        ui::warn(&format!(
            "the identity provider gave a token that lives {}, longer than --lifetime {}",
            job.lifetime
                .map_or("an unknown time".to_owned(), |l| format!(
                    "{} s",
                    l.as_secs()
                )),
            args.lifetime.unwrap_or(0)
        ));
    }
    Ok(job.token)
}
