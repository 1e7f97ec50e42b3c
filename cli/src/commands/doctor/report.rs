//! The result of one check, and the report `doctor` prints (text or `--json`).

use crate::exit::{self, Failure};
use crate::ui;
use token_core::Error;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// For information only.
    Info,
    /// Works, but may cause trouble.
    Warn,
    /// Broken.
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One result.
#[derive(Debug, Clone)]
pub struct Check {
    level: Level,
    what: &'static str,
    detail: String,
    fix: Option<String>,
}

pub fn check(level: Level, what: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level,
        what,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub fn from_error(what: &'static str, e: &Error) -> Self {
        match e {
            // The message would repeat the fix; show it once, on its own line.
            Error::InsecurePermissions { path, detail, fix } => check(
                Level::Fail,
                what,
                format!("refusing {}: {detail}", path.display()),
            )
            .fix(fix.clone()),
            _ => check(Level::Fail, what, e.to_string()),
        }
    }
}

/// Prints the checks (for `context`, if one was found) and fails if any check failed.
pub fn print(checks: &[Check], context: Option<&str>, json: bool) -> Result<(), Failure> {
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
    if json {
        let list: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "level": c.level.label().to_ascii_lowercase(),
                    "check": c.what,
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        let v = serde_json::json!({
            "context": context,
            "ok": fails == 0,
            "checks": list,
        });
        let text = serde_json::to_string_pretty(&v)
            .map_err(|e| Failure::msg(e.to_string(), exit::OTHER))?;
        ui::say(&format!("{text}\n"));
    } else {
        let mut out = format!(
            "qlam-auth doctor{}\n",
            context
                .map(|c| format!(" — context '{c}'"))
                .unwrap_or_default()
        );
        for c in checks {
            out.push_str(&format!(
                "  {:<5} {}: {}\n",
                c.level.label(),
                c.what,
                c.detail
            ));
            if let Some(f) = &c.fix {
                out.push_str(&format!("        fix: {f}\n"));
            }
        }
        out.push_str(&match (fails, warns) {
            (0, 0) => "All checks passed.\n".to_owned(),
            (0, w) => format!("No failures; {w} warning(s).\n"),
            (f, w) => format!("{f} check(s) FAILED, {w} warning(s): fix the FAILs first.\n"),
        });
        ui::say(&out);
    }
    if fails > 0 {
        Err(Failure::Reported(exit::OTHER))
    } else {
        Ok(())
    }
}
