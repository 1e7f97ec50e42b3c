//! Named fault points for crash tests (`tests/faults.rs`): places where a test kills the
//! process with SIGKILL to prove that a crash there leaves the store usable.
//!
//! The points exist only in builds with the `fault-points` feature, which the tests and
//! benchmarks turn on (token-core's and the CLI's dev-dependencies) and release builds leave off:
//! there [`hit`] is an empty function.
//!
//! [`hit`] is inert unless the environment variable [`ENV`] (`QLAM_AUTH_FAULT_POINT`) equals the
//! point's name. Then, and only then, it prints `FAULTPOINT <name>` on stderr and sleeps, so the
//! test can kill the process at exactly that point. It never changes what the code does next: the
//! variable can delay a call (at most [`MAX_HOLD`], after which the code goes on as if nothing had
//! happened), never skip a check or make anything succeed. Set in slurmstepd's own environment it
//! would only stall refreshes; a job's environment is not slurmstepd's and cannot reach it.
//!
//! The points, in the order a refresh meets them:
//!
//! | name | where |
//! |---|---|
//! | `broker.before_refresh` | lock held, store re-read, refresh request not yet sent |
//! | `broker.after_response` | the IdP answered (and rotated the refresh token); nothing saved yet |
//! | `fsutil.before_rename` | new file written and fsynced under its temporary name; not yet renamed |
//! | `fsutil.after_rename` | new file in place; the directory not yet fsynced |

use std::time::Duration;

/// The environment variable that arms one fault point by name.
pub const ENV: &str = "QLAM_AUTH_FAULT_POINT";

/// How long an armed point holds the process before letting it go on.
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// Optionally shortens the hold (milliseconds, at most [`MAX_HOLD`]): for tests that send a
/// signal at the point and then let the process go on.
pub const HOLD_ENV: &str = "QLAM_AUTH_FAULT_HOLD_MS";

/// A fault point: a no-op unless built with the `fault-points` feature and
/// `QLAM_AUTH_FAULT_POINT` is `name` (see the module docs).
#[cfg(not(feature = "fault-points"))]
pub fn hit(_name: &str) {}

/// A fault point: a no-op unless built with the `fault-points` feature and
/// `QLAM_AUTH_FAULT_POINT` is `name` (see the module docs).
#[cfg(feature = "fault-points")]
pub fn hit(name: &str) {
    match std::env::var_os(ENV) {
        Some(v) if v == name => {}
        _ => return,
    }
    eprintln!("FAULTPOINT {name}");
    let hold = std::env::var(HOLD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(MAX_HOLD, |ms| Duration::from_millis(ms).min(MAX_HOLD));
    let start = std::time::Instant::now();
    while start.elapsed() < hold {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unarmed_points_return_at_once() {
        // The variable is not set by the test harness; another name must not match either.
        let start = std::time::Instant::now();
        if std::env::var_os(ENV).is_none() {
            hit("broker.before_refresh");
        }
        hit("no.such.point.armed.by.anyone");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
