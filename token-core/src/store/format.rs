//! QLAM Core's v1 credentials file format: the serde read model, the byte-for-byte write model
//! and the timestamp spellings.

use super::TokenSet;
use crate::secret::Secret;
use crate::time::Timestamp;
use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::Value;
use std::path::Path;
use zeroize::Zeroizing;

// The read model mirrors the write model below ([`FileOut`]); what QLAM Core may leave out or
// set to null is optional. The top-level timestamps are only checked: the tokens' own
// `created_at` is what counts.

#[derive(Deserialize)]
struct FileIn {
    #[serde(default, deserialize_with = "timestamp")]
    created_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "timestamp")]
    updated_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "timestamp")]
    expires_at: Option<Timestamp>,
    #[serde(default)]
    extra: Option<ExtraIn>,
}

#[derive(Deserialize)]
struct ExtraIn {
    #[serde(default)]
    token_data: Option<TokenDataIn>,
}

#[derive(Deserialize)]
struct TokenDataIn {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<i64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default, deserialize_with = "timestamp")]
    created_at: Option<Timestamp>,
}

/// A timestamp in either of Python's spellings (`str(datetime)` or `isoformat()`), or null.
fn timestamp<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Timestamp>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| Timestamp::parse(&s).ok_or_else(|| de::Error::custom("is not a timestamp")))
        .transpose()
}

/// `expires_in`: a whole number, or (as Python may write it) a float, truncated; or null.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)
        .map_err(|_| de::Error::custom("is not a number"))?
        .map(|n| {
            n.as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .ok_or_else(|| de::Error::custom("is not a number"))
        })
        .transpose()
}

/// Parses a credentials file. `Ok(None)` if it holds no `extra.token_data`.
pub fn parse_credentials(path: &Path, bytes: &[u8]) -> Result<Option<TokenSet>> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|_| Error::store(path, "the file is not valid JSON"))?;
    if !v.is_object() {
        return Err(Error::store(path, "the file is not a JSON object"));
    }
    // The version first: another version may have another shape.
    if v.get("version").and_then(Value::as_u64) != Some(1) {
        return Err(Error::store(path, "unknown format version (expected 1)"));
    }
    let file: FileIn = crate::json::from_value("", &v)
        .map_err(|r| Error::store(path, format!("field '{}' {}", r.path, r.message)))?;
    // Only checked (a bad one is refused above); the tokens' own `created_at` is what counts.
    let _checked = (file.created_at, file.expires_at);
    let Some(td) = file.extra.and_then(|e| e.token_data) else {
        return Ok(None);
    };
    let access = td
        .access_token
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::store(path, "extra.token_data has no access_token"))?;
    let created_at = td
        .created_at
        .or(file.updated_at)
        .ok_or_else(|| Error::store(path, "no created_at for the token"))?;
    let secret = |s: Option<String>| s.filter(|s| !s.is_empty()).map(Secret::new);
    Ok(Some(TokenSet {
        access_token: Secret::new(access),
        token_type: td.token_type.unwrap_or_else(|| "Bearer".to_owned()),
        expires_in: td.expires_in,
        refresh_token: secret(td.refresh_token),
        id_token: secret(td.id_token),
        scope: td.scope,
        created_at,
    }))
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u8,
    plugin: &'a str,
    context: &'a str,
    created_at: String,
    updated_at: String,
    expires_at: Option<String>,
    data: String,
    extra: ExtraOut<'a>,
}

#[derive(Serialize)]
struct ExtraOut<'a> {
    token_data: TokenDataOut<'a>,
}

#[derive(Serialize)]
struct TokenDataOut<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_in: Option<i64>,
    refresh_token: Option<&'a str>,
    id_token: Option<&'a str>,
    scope: Option<&'a str>,
    created_at: String,
}

/// Renders a credentials file exactly as QLAM Core 0.10 writes it (`json.dump(indent=2)`).
pub fn render_credentials(
    context: &str,
    t: &TokenSet,
    now: Timestamp,
) -> Result<Zeroizing<Vec<u8>>> {
    let data_json = Zeroizing::new(format!(
        "{{\"token\": {}}}",
        serde_json::to_string(t.access_token.expose())
            .map_err(|e| Error::store("", e.to_string()))?
    ));
    let out = FileOut {
        version: 1,
        plugin: "oauth",
        context,
        created_at: now.to_python_str(),
        updated_at: now.to_python_str(),
        expires_at: t.expires_at().map(|e| e.to_python_str()),
        data: STANDARD.encode(data_json.as_bytes()),
        extra: ExtraOut {
            token_data: TokenDataOut {
                access_token: t.access_token.expose(),
                token_type: &t.token_type,
                expires_in: t.expires_in,
                refresh_token: t.refresh_token.as_ref().map(Secret::expose),
                id_token: t.id_token.as_ref().map(Secret::expose),
                scope: t.scope.as_deref(),
                created_at: t.created_at.to_isoformat(),
            },
        },
    };
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"  ");
    let mut ser = serde_json::Serializer::with_formatter(&mut *buf, fmt);
    out.serialize(&mut ser)
        .map_err(|e| Error::store("", e.to_string()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tokens::sample;

    #[test]
    fn render_then_parse_round_trips() {
        let now = Timestamp::parse("2026-11-22 10:00:43+00:00").unwrap();
        let bytes = render_credentials("prod", &sample(), now).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.contains("\"expires_at\": \"2026-11-23 10:00:00+00:00\""),
            "{text}"
        );
        assert!(
            text.contains("\"created_at\": \"2026-11-22 10:00:43+00:00\""),
            "{text}"
        );
        assert!(
            text.contains("\"created_at\": \"2026-11-22T10:00:42.500000+00:00\""),
            "{text}"
        );
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 8);
        let data = STANDARD.decode(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(String::from_utf8(data).unwrap(), "{\"token\": \"at\\\"1\"}");
        let back = parse_credentials(Path::new("x"), &bytes).unwrap().unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn parse_refuses_garbage_with_a_clear_error() {
        for (bad, want) in [
            (&b"not json"[..], "not valid JSON"),
            (b"[]", "not a JSON object"),
            (b"{\"version\": 2}", "version"),
            (
                b"{\"version\":1,\"updated_at\":\"yesterday\"}",
                "not a timestamp",
            ),
            (
                b"{\"version\":1,\"extra\":{\"token_data\":{\"access_token\":5}}}",
                "must be a string",
            ),
        ] {
            let e = parse_credentials(Path::new("/c.json"), bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("/c.json"), "{e}");
        }
        let none = parse_credentials(Path::new("x"), b"{\"version\":1,\"extra\":null}").unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn refusals_name_the_json_path_never_the_value() {
        for (bad, field, want) in [
            (
                &br#"{"version":1,"extra":{"token_data":{"access_token":"at","refresh_token":987654}}}"#[..],
                "extra.token_data.refresh_token",
                "must be a string",
            ),
            (
                br#"{"version":1,"extra":{"token_data":{"access_token":"at","expires_in":"987654"}}}"#,
                "extra.token_data.expires_in",
                "is not a number",
            ),
            (
                br#"{"version":1,"extra":{"token_data":"987654"}}"#,
                "extra.token_data",
                "must be an object",
            ),
            (
                br#"{"version":1,"expires_at":"987654"}"#,
                "expires_at",
                "is not a timestamp",
            ),
        ] {
            let e = parse_credentials(Path::new("/c.json"), bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("'{field}' {want}")), "{e}");
            assert!(!e.contains("987654"), "{e}");
        }
        // Python's float seconds are truncated.
        let t = parse_credentials(
            Path::new("x"),
            br#"{"version":1,"extra":{"token_data":{"access_token":"at","expires_in":59.9,
                "created_at":"2026-11-22T10:00:00+00:00"}}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.expires_in, Some(59));
    }
}
