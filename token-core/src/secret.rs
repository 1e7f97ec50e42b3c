//! Secrets: tokens and client secrets.
//!
//! A [`Secret`] has no `Display`, a redacted `Debug` (a short fingerprint) and is zeroized on drop.
//! Its text is reachable only through [`Secret::expose`], which the HTTP and serialization edges
//! call.

use std::fmt;
use zeroize::Zeroizing;

/// A secret string (access token, refresh token, ID token, client secret, device code).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Zeroizing::new(s.into()))
    }

    /// The secret text. Call only where it must leave the process (HTTP, file, environment).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, stable, non-reversible fingerprint safe for logs: `sha256:` and 12 hex digits.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.expose())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The log-safe fingerprint of any secret text.
pub fn fingerprint(text: &str) -> String {
    let digest = crate::digest::sha256(text.as_bytes());
    let mut s = String::from("sha256:");
    for b in &digest[..6] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new("eyJhbGciOiJFUzI1NiJ9.payload.sig");
        let shown = format!("{s:?}");
        assert!(!shown.contains("payload"), "{shown}");
        assert!(shown.starts_with("Secret(sha256:"), "{shown}");
        assert_eq!(s.fingerprint().len(), "sha256:".len() + 12);
    }

    #[test]
    fn fingerprints_differ_for_different_secrets() {
        assert_ne!(
            Secret::new("a").fingerprint(),
            Secret::new("b").fingerprint()
        );
    }
}
