//! Logging into Slurm's log: the plugin's own lines ([`slurm_log`]) and token-core's `log`
//! records ([`install_log_bridge`]), one escaped line each, through a fixed `"%s"` format.

use std::ffi::CString;
use std::sync::Once;

use crate::hooks::Level;
use crate::sys;

#[derive(Debug, Clone, Copy)]
pub(super) enum SlurmLevel {
    Error,
    Info,
    Verbose,
    Debug,
    Debug2,
}

impl From<Level> for SlurmLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Error => SlurmLevel::Error,
            Level::Info => SlurmLevel::Info,
            Level::Verbose => SlurmLevel::Verbose,
            Level::Debug => SlurmLevel::Debug,
        }
    }
}

/// The line that `slurm_log` hands to Slurm for `msg`: always exactly one line, because
/// messages carry values from the user's side (paths, `sub`, `client_id`): control characters
/// are escaped (`\n`, `\x1b`, ...; `token_core::logsafe`).
pub fn log_line(msg: &str) -> String {
    format!(
        "{}: {}",
        crate::logtarget::PLUGIN,
        crate::backend::escape_for_log(msg)
    )
}

/// Logs one line through Slurm, with a fixed `"%s"` format (a `%` in the text is never read as
/// a conversion).
pub(super) fn slurm_log(level: SlurmLevel, msg: &str) {
    let Ok(line) = CString::new(log_line(msg)) else {
        return;
    };
    let fmt = c"%s".as_ptr();
    // SAFETY: the format is the literal "%s", which reads exactly one `char *` argument, and
    // that argument is a valid C string living across the call.
    unsafe {
        match level {
            SlurmLevel::Error => sys::slurm_error(fmt, line.as_ptr()),
            SlurmLevel::Info => sys::slurm_info(fmt, line.as_ptr()),
            SlurmLevel::Verbose => sys::slurm_verbose(fmt, line.as_ptr()),
            SlurmLevel::Debug => sys::slurm_debug(fmt, line.as_ptr()),
            SlurmLevel::Debug2 => sys::slurm_debug2(fmt, line.as_ptr()),
        }
    }
}

/// Routes token-core's `log` records into Slurm's log. Warnings and errors go to info level:
/// the hook that receives the error reports it itself, at the level the context calls for.
struct SlurmLogBridge;

impl log::Log for SlurmLogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Debug
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error | log::Level::Warn => SlurmLevel::Info,
            log::Level::Info => SlurmLevel::Verbose,
            log::Level::Debug => SlurmLevel::Debug,
            log::Level::Trace => SlurmLevel::Debug2,
        };
        slurm_log(level, &format!("[{}] {}", record.target(), record.args()));
    }

    fn flush(&self) {}
}

static LOG_BRIDGE: SlurmLogBridge = SlurmLogBridge;

pub(super) fn install_log_bridge() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if a logger is already set in this copy of `log`, which is ours alone.
        if log::set_logger(&LOG_BRIDGE).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    });
}
