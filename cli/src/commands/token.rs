//! `qlam-auth token`: print a valid access token, and only that, on stdout.

use super::select;
use crate::cli::TokenArgs;
use crate::exit::{self, Failure};
use crate::ui;
use std::time::Duration;
use token_core::broker::{ObtainOptions, Source};
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
    // Written in two parts so that no copy of the token is made.
    ui::emit(&[got.access_token.expose(), "\n"]).map_err(|e| {
        Failure::msg(
            format!("could not write the token to stdout ({e}); check where the output goes"),
            exit::OTHER,
        )
    })
}
