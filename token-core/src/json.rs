//! Reading JSON formats through serde with errors that name the JSON path of the bad field and
//! never its value (serde's own messages quote it: "invalid type: integer `7`, expected a
//! string"), so no secret from a file can reach a message or a log.
//!
//! A `deserialize_with` function that refuses a value says why with a custom message starting
//! with "is " or "must " (and no value in it); it is passed through.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A refusal: the JSON path (empty for the whole document) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where, e.g. `contexts[0].auth_providers[1].client_id`; empty for the whole document.
    pub path: String,
    /// What is wrong, e.g. "must be a string".
    pub message: String,
    /// True if the input is not JSON at all (then `message` gives the line and column).
    pub syntax: bool,
}

/// Parses `bytes` as one JSON document holding a `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(&mut *de).map_err(|e| describe(&e, ""))?;
    // Trailing characters are a syntax error, as serde_json::from_slice reports them.
    de.end().map_err(|e| syntax(&e))?;
    Ok(v)
}

/// Reads `v` (found at `base` in its document) as a `T`.
pub fn from_value<T: DeserializeOwned>(base: &str, v: &Value) -> Result<T, Refusal> {
    serde_path_to_error::deserialize(v).map_err(|e| describe(&e, base))
}

fn syntax(e: &serde_json::Error) -> Refusal {
    Refusal {
        path: String::new(),
        message: format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        syntax: true,
    }
}

fn describe(e: &serde_path_to_error::Error<serde_json::Error>, base: &str) -> Refusal {
    let inner = e.inner();
    if !inner.is_data() {
        return syntax(inner);
    }
    let below = e.path().to_string();
    let at = match (base, below.as_str()) {
        (b, ".") => b.to_owned(),
        ("", p) => p.to_owned(),
        (b, p) if p.starts_with('[') => format!("{b}{p}"),
        (b, p) => format!("{b}.{p}"),
    };
    let join = |f: &str| {
        if at.is_empty() {
            f.to_owned()
        } else {
            format!("{at}.{f}")
        }
    };
    let refusal = |path: String, message: &str| Refusal {
        path,
        message: message.to_owned(),
        syntax: false,
    };
    let text = inner.to_string();
    let text = text.split(" at line ").next().unwrap_or("");
    if let Some(f) = text
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return refusal(join(f), "is missing");
    }
    // Only a field the model names can be repeated: its name is ours, not the input's.
    if let Some(f) = text
        .strip_prefix("duplicate field `")
        .and_then(|r| r.split('`').next())
    {
        let path = if below == "." { join(f) } else { at };
        return refusal(path, "must be given once");
    }
    // `deny_unknown_fields`: the path already ends with the key (structure, not a value).
    if text.starts_with("unknown field `") {
        return refusal(at, "is not a known field");
    }
    if text.starts_with("is ") || text.starts_with("must ") {
        return refusal(at, text);
    }
    let expected = text.rsplit_once(", expected ").map(|(_, x)| x);
    let message = match expected {
        Some(x) if x.starts_with("struct ") || x == "a map" => "must be an object".to_owned(),
        Some("a sequence") => "must be a list".to_owned(),
        // What a visitor expects holds no value; keep it only if it has no quotes, to be sure
        // (an unknown variant's list of expected ones has).
        Some(x) if !x.contains(['`', '"', '\'']) => format!("must be {x}"),
        _ => "has a value of the wrong form".to_owned(),
    };
    Refusal {
        path: at,
        message,
        syntax: false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // read only to be refused
    struct Doc {
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read only to be refused
    struct Strict {
        name: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // read only to be refused
    struct Item {
        name: String,
        #[serde(default, deserialize_with = "even")]
        n: u64,
    }

    fn even<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let n = u64::deserialize(d)?;
        if n % 2 == 0 {
            Ok(n)
        } else {
            Err(serde::de::Error::custom("must be even"))
        }
    }

    #[test]
    fn paths_without_values() {
        let e = from_slice::<Doc>(br#"{"items": [{"name": "a"}, {"name": 9999}]}"#).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("items[1].name", "must be a string")
        );
        let e = from_slice::<Doc>(br#"{"items": [{"n": 2}]}"#).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("items[0].name", "is missing")
        );
        let e = from_slice::<Doc>(br#"{"items": [{"name": "a", "n": 7777}]}"#).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("items[0].n", "must be even")
        );
        let e = from_slice::<Doc>(br#"{"items": {"secret": 1}}"#).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("items", "must be a list")
        );
        let e = from_slice::<Strict>(br#"{"colour": 1}"#).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("colour", "is not a known field")
        );
        let e = from_slice::<Strict>(br#"{"name": "a", "name": "b"}"#).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("name", "must be given once")
        );
        let e = from_slice::<Doc>(b"{\"items\": []} trailing").unwrap_err();
        assert!(e.syntax && e.message.contains("not valid JSON"), "{e:?}");
        let v = serde_json::json!({"name": "s3cr3t-v4lue", "n": "s3cr3t-v4lue"});
        let e = from_value::<Item>("items[4]", &v).unwrap_err();
        assert_eq!(e.path, "items[4].n");
        assert!(!format!("{e:?}").contains("s3cr3t"), "{e:?}");
    }
}
