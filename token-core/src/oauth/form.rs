//! Percent-encoding for URLs and forms (RFC 3986 unreserved characters kept), with the
//! `percent-encoding` crate (servo's, already in the tree through ureq's URL handling).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes everything but `A-Z a-z 0-9 - . _ ~`.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// Decodes `%XX` and `+` (as in query strings). `None` on bad escapes or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    // The crate leaves a bad escape as it is; we refuse it.
    let escapes_ok = s
        .split('%')
        .skip(1)
        .all(|rest| rest.len() >= 2 && rest.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit));
    if !escapes_ok {
        return None;
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in ["a b&c=d/é", "", "~-._", "%"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    /// The spellings the hand-written encoder had: upper-case hex, `+` read as a space, `%2B`
    /// as a plus, and a bad escape anywhere refused.
    #[test]
    fn same_spelling_as_before() {
        assert_eq!(percent_encode("a b+c:d/é~"), "a%20b%2Bc%3Ad%2F%C3%A9~");
        assert_eq!(percent_decode("a+b%2Bc").as_deref(), Some("a b+c"));
        assert_eq!(percent_decode("%C3%A9%41").as_deref(), Some("éA"));
        assert_eq!(percent_decode("ok%%41"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }
}
