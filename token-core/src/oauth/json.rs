//! Reading IdP answers into their serde models: [`decode`] names the field at fault and what it
//! must be, never its value (serde's own text quotes the value, and an IdP may echo a secret it
//! was sent), and the `deserialize_with` functions for the quirks of real IdPs.

use crate::http::HttpResponse;
use crate::secret::Secret;
use crate::{Error, Result};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, SeqAccess, Visitor};
use std::fmt;

/// Why a JSON answer does not fit its model. Never carries a value from the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Misfit {
    /// Not JSON at all (or trailing garbage).
    NotJson,
    /// JSON, but not an object.
    NotObject,
    /// A required field is absent (or empty).
    Missing(&'static str),
    /// `field` has the wrong form; `expected` says what it must be.
    Wrong {
        /// The JSON path of the field.
        field: String,
        /// What it must be, e.g. "a string".
        expected: String,
    },
}

impl Misfit {
    /// `what` (e.g. "the answer", "discovery") with the misfit, as an error detail.
    pub(super) fn describe(&self, what: &str) -> String {
        match self {
            Misfit::NotJson => format!("{what} is not JSON"),
            Misfit::NotObject => format!("{what} is not a JSON object"),
            Misfit::Missing(f) => format!("no {f} in {what}"),
            Misfit::Wrong { field, expected } => format!("{field} in {what} must be {expected}"),
        }
    }

    /// The misfit as [`Error::IdpBadResponse`] for `res` from `url`, with its status and
    /// content type.
    pub(super) fn into_error(self, url: &str, res: &HttpResponse, what: &str) -> Error {
        bad(url, res, &self.describe(what))
    }
}

/// Parses `body` as a `T`. On failure, says which field is at fault and what it must be, never
/// what it holds: serde's own text quotes the value, so only its "expected" part is kept.
pub(super) fn decode<T: DeserializeOwned>(body: &[u8]) -> std::result::Result<T, Misfit> {
    // A derived struct also reads a JSON list (field by field): only an object is an answer.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Misfit::NotObject,
                Err(_) => Misfit::NotJson,
            },
        );
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let inner = e.inner();
        if !inner.is_data() {
            return Misfit::NotJson;
        }
        let path = e.path().to_string();
        let text = inner.to_string();
        let text = text.split(" at line ").next().unwrap_or("");
        let expected = text.rsplit_once(", expected ").map(|(_, x)| x);
        // Only a field we model can be repeated or misfit: its name is ours, not the IdP's.
        if let Some(f) = text
            .strip_prefix("duplicate field `")
            .and_then(|r| r.split('`').next())
        {
            return Misfit::Wrong {
                field: if path == "." { f.to_owned() } else { path },
                expected: "given once".to_owned(),
            };
        }
        if path == "." {
            return Misfit::NotObject;
        }
        let expected = match expected {
            Some(x) if x.starts_with("struct ") || x == "a map" => "an object".to_owned(),
            Some("a sequence") => "a list".to_owned(),
            // What a visitor expects holds no value; keep it only if it has no quotes, to be
            // sure (an unknown variant's list of expected ones has).
            Some(x) if !x.contains(['`', '"', '\'']) => x.to_owned(),
            _ => "of another form".to_owned(),
        };
        Misfit::Wrong {
            field: path,
            expected,
        }
    })?;
    // Trailing characters are a syntax error, as serde_json::from_slice reports them.
    de.end().map_err(|_| Misfit::NotJson)?;
    Ok(v)
}

/// A JSON object whose fields are open-ended (userinfo claims).
pub(super) fn json_object(url: &str, res: &HttpResponse) -> Result<serde_json::Value> {
    decode::<serde_json::Map<String, serde_json::Value>>(&res.body)
        .map(serde_json::Value::Object)
        .map_err(|m| m.into_error(url, res, "the answer"))
}

pub(super) fn bad(url: &str, res: &HttpResponse, what: &str) -> Error {
    Error::IdpBadResponse {
        url: url.to_owned(),
        detail: format!(
            "{what}: HTTP {}, content type {}",
            res.status,
            res.content_type.as_deref().unwrap_or("none")
        ),
    }
}

/// `deserialize_with` for a secret: a string, straight into a [`Secret`]; an empty string or
/// `null` is none.
pub(super) fn secret<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Secret>, D::Error> {
    Ok(nonempty(d)?.map(Secret::new))
}

/// `deserialize_with` for a string where empty means absent.
pub(super) fn nonempty<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// `deserialize_with` for a lifetime in seconds (`expires_in`, `interval`): a number (a
/// fraction is cut off) or, as some IdPs send it, a string of digits. A negative number, or a
/// string that is no number, is none (the lifetime is unknown), as it always was.
pub(super) fn seconds<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<i64>, D::Error> {
    struct Seconds;
    impl<'de> Visitor<'de> for Seconds {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number of seconds")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
            Ok((v >= 0).then_some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
            Ok(Some(i64::try_from(v).unwrap_or(i64::MAX)))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
            // `as` saturates (and maps NaN to 0), as the old reading did.
            Ok(Some(v as i64).filter(|v| *v >= 0))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            Ok(v.trim().parse::<i64>().ok().filter(|v| *v >= 0))
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_any(Seconds)
        }
    }
    d.deserialize_option(Seconds)
}

/// `deserialize_with` for `scope`: RFC 6749 §3.3's space-separated string, or the JSON list of
/// strings some IdPs send, joined with spaces.
pub(super) fn scope<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    struct Scope;
    impl<'de> Visitor<'de> for Scope {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_seq<A: SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut words: Vec<String> = Vec::new();
            while let Some(w) = seq.next_element::<String>()? {
                words.push(w);
            }
            Ok(Some(words.join(" ")))
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_any(Scope)
        }
    }
    d.deserialize_option(Scope)
}
