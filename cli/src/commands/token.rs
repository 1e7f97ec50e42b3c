//! `qlam-auth token`: print a valid access token, and only that, on stdout.

use super::select;
use crate::cli::TokenArgs;
use crate::exit::{self, Failure};
use crate::ui;
use std::time::Duration;
use token_core::broker::ObtainOptions;
use token_core::time::Timestamp;

/// Runs `token`.
pub fn run(args: &TokenArgs) -> Result<(), Failure> {
    let sel = select(args.context.as_deref())?;
    let opts = ObtainOptions {
        min_valid: Duration::from_secs(args.min_valid),
        ..ObtainOptions::default()
    };
    let got = sel.broker.obtain(&opts)?;
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
        && Timestamp::now().seconds_until(e) < i64::try_from(args.min_valid).unwrap_or(i64::MAX)
    {
        ui::warn(&format!(
            "the identity provider's tokens last less than --min-valid {} s, so every call \
             renews the token; ask for less (e.g. --min-valid {})",
            args.min_valid,
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
