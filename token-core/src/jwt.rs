//! Reading (not verifying) JWT claims, for display and expiry hints only.
//!
//! Nothing here decides trust: the identity provider and the resource servers verify tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The claims of a JWT, unverified; `None` if the text is not a JWT with a JSON object payload.
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    if payload.len() > 64 * 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.is_object().then_some(v)
}

/// A human name for the token's subject: `email`, else `preferred_username`, else `sub`.
pub fn subject(token: &str) -> Option<String> {
    let c = unverified_claims(token)?;
    ["email", "preferred_username", "sub"]
        .iter()
        .find_map(|k| c.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
}

/// The `sub` claim.
pub fn sub(token: &str) -> Option<String> {
    unverified_claims(token)?
        .get("sub")?
        .as_str()
        .map(str::to_owned)
}

/// The `exp` claim, in Unix seconds.
pub fn expiry(token: &str) -> Option<i64> {
    unverified_claims(token)?.get("exp")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_claims_of_a_jwt() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":1800000000}"#);
        let t = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        assert_eq!(subject(&t).as_deref(), Some("alice"));
        assert_eq!(expiry(&t), Some(1_800_000_000));
    }

    #[test]
    fn opaque_tokens_have_no_claims() {
        assert!(unverified_claims("opaque-token").is_none());
        assert!(unverified_claims("a.b").is_none());
        assert!(unverified_claims("a.!!!.c").is_none());
    }
}
