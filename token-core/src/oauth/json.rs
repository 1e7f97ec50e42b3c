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
    /// `field` does not fit: `problem` says how (`crate::json`'s message, e.g. "must be a
    /// string").
    Wrong {
        /// The JSON path of the field.
        field: String,
        /// What is wrong with it, e.g. "must be a string".
        problem: String,
    },
}

impl Misfit {
    /// `what` (e.g. "the answer", "discovery") with the misfit, as an error detail.
    pub(super) fn describe(&self, what: &str) -> String {
        match self {
            Misfit::NotJson => format!("{what} is not JSON"),
            Misfit::NotObject => format!("{what} is not a JSON object"),
            Misfit::Missing(f) => format!("no {f} in {what}"),
            Misfit::Wrong { field, problem } => format!("{field} in {what} {problem}"),
        }
    }

    /// The misfit as [`Error::IdpBadResponse`] for `res` from `url`, with its status and
    /// content type.
    pub(super) fn into_error(self, url: &str, res: &HttpResponse, what: &str) -> Error {
        bad(url, res, &self.describe(what))
    }
}

/// Parses `body` as a `T` through [`crate::json`], which names the field at fault and never
/// what it holds. Only a JSON object is an answer (a derived struct also reads a list).
pub(super) fn decode<T: DeserializeOwned>(body: &[u8]) -> std::result::Result<T, Misfit> {
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Misfit::NotObject,
                Err(_) => Misfit::NotJson,
            },
        );
    }
    crate::json::from_slice(body).map_err(|r| match r {
        r if r.syntax => Misfit::NotJson,
        r if r.path.is_empty() => Misfit::NotObject,
        r => Misfit::Wrong {
            field: r.path,
            problem: r.message,
        },
    })
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

/// A visitor of a field that may be `null`: `null` is none (the default value), any other value
/// goes to the inner visitor, whose `expecting` names what the field must be.
struct Nullable<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Nullable<V>
where
    V::Value: Default,
{
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(V::Value::default())
    }
    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(V::Value::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self.0)
    }
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
    }
    d.deserialize_option(Nullable(Seconds))
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
    }
    d.deserialize_option(Nullable(Scope))
}
