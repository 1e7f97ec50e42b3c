//! A small stderr logger for the `log` facade. token-core never logs a token; third-party crates
//! (HTTP, TLS) are held at `info` at most, because their trace output can include request bodies.

use log::{Level, LevelFilter, Log, Metadata, Record};

#[derive(Debug)]
struct StderrLogger {
    ours: LevelFilter,
    others: LevelFilter,
    /// Show lock waits (target [`LOCK_WAIT`]) without -v: stderr is a terminal.
    lock_wait: bool,
}

/// token-core's target for "waiting for another process's renewal".
pub const LOCK_WAIT: &str = "qlam_auth::lock_wait";

fn is_ours(target: &str) -> bool {
    ["qlam_auth", "token_core"]
        .iter()
        .any(|t| target == *t || target.starts_with(&format!("{t}::")))
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        if self.lock_wait && m.target() == LOCK_WAIT && m.level() <= Level::Info {
            return true;
        }
        let max = if is_ours(m.target()) {
            self.ours
        } else {
            self.others
        };
        m.level() <= max
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        if r.target() == LOCK_WAIT {
            eprintln!(
                "qlam-auth: {}",
                token_core::logsafe::escape(&r.args().to_string())
            );
        } else {
            eprintln!("{}", line(r.level(), r.target(), &r.args().to_string()));
        }
    }

    fn flush(&self) {}
}

/// The line written for one record: always one line, since messages carry values from files
/// and the environment (a `QSH_CONFIG` path, a token's `sub`, a `client_id`).
fn line(level: Level, target: &str, msg: &str) -> String {
    let name = match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    let msg = token_core::logsafe::escape(msg);
    if level <= Level::Warn {
        format!("qlam-auth: {name}: {msg}")
    } else {
        format!("qlam-auth: {name} [{target}]: {msg}")
    }
}

/// Levels for `-v` counts: 0 warnings, 1 info, 2 debug, 3+ trace.
pub fn levels(verbose: u8) -> (LevelFilter, LevelFilter) {
    let ours = match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    (ours, ours.min(LevelFilter::Info))
}

/// Installs the logger (once).
pub fn init(verbose: u8) {
    let (ours, others) = levels(verbose);
    static LOGGER: std::sync::OnceLock<StderrLogger> = std::sync::OnceLock::new();
    let lock_wait = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logger = LOGGER.get_or_init(|| StderrLogger {
        ours,
        others,
        lock_wait,
    });
    if log::set_logger(logger).is_ok() {
        let max = ours.max(others);
        log::set_max_level(if lock_wait {
            max.max(LevelFilter::Info)
        } else {
            max
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_party_crates_never_trace() {
        assert_eq!(levels(0), (LevelFilter::Warn, LevelFilter::Warn));
        assert_eq!(levels(3), (LevelFilter::Trace, LevelFilter::Info));
        assert!(is_ours("qlam_auth") && is_ours("token_core::broker"));
        assert!(!is_ours("ureq_proto::util") && !is_ours("qlam_authx"));
    }

    /// Security review item 3: a newline in a logged value never starts a forged line.
    #[test]
    fn logged_values_cannot_forge_lines() {
        let msg = "reading QSH_CONFIG=/tmp/x\nqlam-auth: error: forged\x1b[2K sub=a\rb";
        for level in [Level::Warn, Level::Debug] {
            let l = line(level, "token_core::config", msg);
            assert!(!l.contains(['\n', '\r', '\x1b']), "{l:?}");
            assert!(
                l.contains("/tmp/x\\nqlam-auth: error: forged\\x1b[2K"),
                "{l:?}"
            );
        }
    }
}
