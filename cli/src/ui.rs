//! Terminal output: the wait indicator, QR codes, durations, and writing to stdout without
//! panicking on a closed pipe.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Writes `text` to stdout and flushes. A closed stdout (e.g. `| head`) is not an error worth a
/// panic for human output; it is ignored.
pub fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes `parts` to stdout; the error is returned (for machine output such as tokens).
pub fn emit(parts: &[&str]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for p in parts {
        out.write_all(p.as_bytes())?;
    }
    out.flush()
}

/// Prints a warning line on stderr.
pub fn warn(text: &str) {
    eprintln!("qlam-auth: warning: {text}");
}

/// Ctrl-C handling for interactive flows: SIGINT only sets a flag, which the waiting loops poll.
/// A second Ctrl-C (flag already set) ends the process at once with 130.
#[derive(Debug, Clone)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the handlers. If that fails, Ctrl-C keeps its default effect (the process ends),
    /// which is still safe: nothing is written before a login succeeds.
    pub fn install() -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        let sig = signal_hook::consts::SIGINT;
        // Order matters: the conditional shutdown sees the flag as it was before this signal.
        let r = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&flag)));
        if let Err(e) = r {
            log::warn!(target: "qlam_auth", "cannot install the Ctrl-C handler ({e}); Ctrl-C will end the program at once");
        }
        Interrupt(flag)
    }

    /// True once Ctrl-C was pressed.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Defers SIGTERM and SIGHUP for the rest of a short command (`token`). A renewal rotates the
/// refresh token at the IdP before the new one is saved; dying in between loses the login. Slurm
/// ends jobs with SIGTERM and sends SIGKILL only after `KillWait` (30 s by default, longer than a
/// renewal may take), so deferring SIGTERM keeps that window closed for jobs that are cancelled or
/// reach their time limit. SIGINT (Ctrl-C) is left alone for people at a terminal.
#[derive(Debug, Clone)]
pub struct DeferredTermination(Arc<AtomicBool>);

impl DeferredTermination {
    /// Installs the handlers (if that fails, the signals keep their default effect).
    pub fn install() -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
            if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&flag)) {
                log::warn!(target: "qlam_auth", "cannot defer signal {sig} ({e})");
            }
        }
        DeferredTermination(flag)
    }

    /// True once SIGTERM or SIGHUP arrived.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A one-line wait indicator on stderr: spinner, message, redrawn in place. When stderr is not a
/// terminal it prints the first message once and stays quiet after.
#[derive(Debug)]
pub struct Spinner {
    live: bool,
    frame: usize,
    last: Option<Instant>,
    printed: bool,
}

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Spinner {
    /// A spinner on stderr.
    pub fn new() -> Self {
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Spinner {
            live: std::io::stderr().is_terminal() && !dumb,
            frame: 0,
            last: None,
            printed: false,
        }
    }

    /// Shows `msg` (at most ten redraws a second).
    pub fn tick(&mut self, msg: &str) {
        if !self.live {
            if !self.printed {
                eprintln!("{msg}");
                self.printed = true;
            }
            return;
        }
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        self.frame = (self.frame + 1) % FRAMES.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{} {msg}", FRAMES[self.frame]);
        let _ = err.flush();
        self.printed = true;
    }

    /// Prints a line above the spinner.
    pub fn note(&mut self, msg: &str) {
        self.clear();
        eprintln!("{msg}");
    }

    /// Removes the spinner line.
    pub fn clear(&mut self) {
        if self.live && self.printed {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.last = None;
        }
    }
}

impl Default for Spinner {
    fn default() -> Self {
        Self::new()
    }
}

/// A QR code of `data` drawn with Unicode half blocks (two modules per character cell), with
/// its quiet zone. With `color` it is drawn black on white with ANSI colours, which scans on
/// dark and light terminals alike; without, light on dark (the usual terminal background).
pub fn qr_code(data: &str, color: bool) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(data, qrcode::EcLevel::L).ok()?;
    let art = if color {
        code.render::<Dense1x2>().quiet_zone(true).build()
    } else {
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build()
    };
    let mut out = String::new();
    for line in art.lines() {
        if color {
            out.push_str(&format!("  \x1b[30;107m{line}\x1b[0m\n"));
        } else {
            out.push_str(&format!("  {line}\n"));
        }
    }
    Some(out)
}

/// A duration for people: `42 s`, `5 min`, `2 h 15 min`, `23 h`, `14 days`. Rounded down, so
/// a token never looks longer-lived than it is.
pub fn human_duration(secs: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;
    match secs {
        s if s < MIN => format!("{s} s"),
        s if s < HOUR => format!("{} min", s / MIN),
        s if s < 10 * HOUR => match (s % HOUR) / MIN {
            0 => format!("{} h", s / HOUR),
            m => format!("{} h {m} min", s / HOUR),
        },
        s if s < 2 * DAY => format!("{} h", s / HOUR),
        s => format!("{} days", s / DAY),
    }
}

/// Seconds from now to a moment, for people: `in 23 h`, `2 min ago`, `now`.
pub fn relative(secs_from_now: i64) -> String {
    match secs_from_now {
        0 => "now".to_owned(),
        s if s > 0 => format!("in {}", human_duration(s.unsigned_abs())),
        s => format!("{} ago", human_duration(s.unsigned_abs())),
    }
}

/// A countdown `m:ss` (or `h:mm:ss`).
pub fn countdown(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// A timestamp as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(t: token_core::time::Timestamp) -> String {
    let s = token_core::time::Timestamp::from_unix_seconds(t.unix_seconds()).to_python_str();
    match s.strip_suffix("+00:00") {
        Some(base) => format!("{base} UTC"),
        None => s,
    }
}

/// True if stdout is a terminal.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally_and_round_down() {
        assert_eq!(human_duration(0), "0 s");
        assert_eq!(human_duration(59), "59 s");
        assert_eq!(human_duration(90), "1 min");
        assert_eq!(human_duration(3600), "1 h");
        assert_eq!(human_duration(42 * 60 + 59), "42 min");
        assert_eq!(human_duration(2 * 3600), "2 h");
        assert_eq!(human_duration(2 * 3600 + 15 * 60 + 30), "2 h 15 min");
        assert_eq!(human_duration(23 * 3600 + 59 * 60), "23 h");
        assert_eq!(human_duration(15 * 86_400 + 5), "15 days");
        assert_eq!(relative(86_340), "in 23 h");
        assert_eq!(relative(-120), "2 min ago");
        assert_eq!(relative(0), "now");
        assert_eq!(countdown(Duration::from_secs(582)), "9:42");
        assert_eq!(countdown(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn utc_drops_fractions() {
        let t = token_core::time::Timestamp::parse("2026-11-22 10:00:42.5+00:00").unwrap();
        assert_eq!(utc(t), "2026-11-22 10:00:42 UTC");
    }

    #[test]
    fn qr_code_uses_half_blocks_and_is_square() {
        let art = qr_code("https://idp.example/device?user_code=ABCD-EFGH", false).unwrap();
        let lines: Vec<&str> = art.lines().collect();
        let width = lines[0].chars().count() - 2;
        // Two modules per line: height in lines is about half the width in columns.
        assert!(
            lines.len() * 2 >= width && lines.len() * 2 <= width + 2,
            "{art}"
        );
        assert!(art.contains('▀') || art.contains('▄'));
        let colored = qr_code("x", true).unwrap();
        assert!(colored.contains("\x1b[30;107m"));
    }
}
