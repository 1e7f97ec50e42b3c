//! One escaping function for every line that is logged: values from the user's side (a
//! `QSH_CONFIG` path, a token's `sub`, a config's `client_id`) may hold a newline or a terminal
//! escape, which would otherwise forge a separate line in slurmd's log or repaint a terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// `msg` with every control character written as an escape: `\n`, `\r`, `\t`, `\0`, `\x1b`
/// (other ASCII and C1 controls as `\xNN`), and the Unicode line and paragraph separators and
/// bidirectional overrides as `\u{NNNN}`. Everything else, backslashes included, is unchanged,
/// so an escaped line is always exactly one line.
pub fn escape(msg: &str) -> Cow<'_, str> {
    if !msg.chars().any(needs_escape) {
        return Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x100 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert!(matches!(escape("plain: a/b c\\n"), Cow::Borrowed(_)));
        assert_eq!(
            escape("sub=x\nqlam-auth: job=1 forged\r\t\0\x1b[2J\x7f\u{85}\u{2028}\u{202e}"),
            "sub=x\\nqlam-auth: job=1 forged\\r\\t\\0\\x1b[2J\\x7f\\x85\\u{2028}\\u{202e}"
        );
        assert_eq!(escape("é ü 日本"), "é ü 日本");
    }
}
