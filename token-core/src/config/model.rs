//! `~/.qsh/config.json` as QLAM Core 0.10 writes it, as serde types.
//!
//! Only the fields qlam-auth interprets are named; every other key, at every level, is kept in
//! an `extra` map, and a field that was absent stays absent (and a `null` stays `null`), so
//! that a file rewritten by `qlam-auth config init` still loads in QLAM Core unchanged.

use super::ConfigSource;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// A field that may be absent (`None`), `null` (`Some(None)`) or set: a rewrite keeps which.
pub type Field<T> = Option<Option<T>>;

/// Deserializes a present field (`null` or a value) as `Some`; with `#[serde(default)]` an
/// absent one stays `None`.
fn present<'de, D, T>(d: D) -> std::result::Result<Field<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The value of a [`Field`], if it is set.
pub fn value<T>(f: &Field<T>) -> Option<&T> {
    f.as_ref().and_then(Option::as_ref)
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QshConfig {
    /// The context used when none is named.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Field<String>,
    /// The contexts, in file order.
    pub contexts: Vec<Context>,
    /// Keys qlam-auth does not interpret, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One context (`contexts[i]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Its name (part of the credentials cache key).
    pub name: String,
    /// The QPU (QLAM Core's; qlam-auth only writes it).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub qpu: Field<String>,
    /// Defaults, among them the provider to use.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub defaults: Field<Defaults>,
    /// The auth providers, of every kind (`oauth`, `basic`, `token`).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_providers: Field<Vec<ProviderEntry>>,
    /// Keys qlam-auth does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `contexts[i].defaults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Defaults {
    /// The name of the provider to use.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_provider: Field<String>,
    /// Keys qlam-auth does not interpret (`api_base_url` ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `auth_providers`, kept as it is: the kinds other than `oauth` (`basic`,
/// `token`) are QLAM Core's and have fields of their own, so an entry is read as an
/// [`AuthProvider`] only when it is the oauth provider being used (as before: a broken provider
/// that is not used does not stop the others).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderEntry(pub Value);

impl ProviderEntry {
    /// `provider`, if it is a string.
    pub fn kind(&self) -> Option<&str> {
        self.0.get("provider").and_then(Value::as_str)
    }

    /// `name`, if it is a string.
    pub fn name(&self) -> Option<&str> {
        self.0.get("name").and_then(Value::as_str)
    }

    /// True for an `oauth` provider.
    pub fn is_oauth(&self) -> bool {
        self.kind() == Some("oauth")
    }

    /// The entry as an [`AuthProvider`]; a failure names `source` and the JSON path (`at` is
    /// where the entry is, e.g. `contexts[0].auth_providers[1]`).
    pub fn typed(&self, source: &ConfigSource, at: &str) -> Result<AuthProvider> {
        from_value(source, at, &self.0)
    }
}

impl From<AuthProvider> for ProviderEntry {
    fn from(p: AuthProvider) -> Self {
        // A struct of strings and maps always serializes.
        ProviderEntry(serde_json::to_value(p).unwrap_or(Value::Null))
    }
}

/// An oauth entry of `auth_providers`, typed. The fields of other kinds stay in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthProvider {
    /// The kind: `oauth`, `basic`, `token`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider: Field<String>,
    /// Its name.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Field<String>,
    /// The issuer.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_base_url: Field<String>,
    /// The OAuth client id.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_id: Field<String>,
    /// A secret source spelling: `env:VAR`, `file:/path`, `private_key_jwt:/path` or a literal.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_secret: Field<String>,
    /// `device_code`, `authorization_code`, `client_credentials` or `token_exchange`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub grant_type: Field<String>,
    /// The scope to request.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub scope: Field<String>,
    /// The API audience.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub audience: Field<String>,
    /// The Auth0 organization.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub tenant: Field<String>,
    /// Token exchange: the subject token type.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject_token_type: Field<String>,
    /// Token exchange: `env:VAR` holding the subject token.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject_token: Field<String>,
    /// Keys qlam-auth does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ProviderEntry {
    /// Sets every field that `given` has (its absent fields leave this entry's as they are);
    /// the entry's other keys are kept.
    pub fn overlay(&mut self, given: AuthProvider) {
        if let (Value::Object(mine), Value::Object(new)) =
            (&mut self.0, ProviderEntry::from(given).0)
        {
            mine.extend(new);
        }
    }
}

impl Context {
    /// `defaults.auth_provider`, if set.
    pub fn default_provider(&self) -> Option<&str> {
        value(&self.defaults)
            .and_then(|d| value(&d.auth_provider))
            .map(String::as_str)
    }

    /// The providers (none if the list is absent or `null`).
    pub fn providers(&self) -> &[ProviderEntry] {
        value(&self.auth_providers).map_or(&[], Vec::as_slice)
    }
}

impl QshConfig {
    /// `current_context`, if set and not empty.
    pub fn current(&self) -> Option<&str> {
        value(&self.current_context)
            .map(String::as_str)
            .filter(|c| !c.is_empty())
    }

    /// The context named `name`, with its index.
    pub fn context(&self, name: &str) -> Option<(usize, &Context)> {
        self.contexts
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }

    /// Renders the file as QLAM Core writes it (2-space indent, keys in order) plus a final
    /// newline.
    pub fn render(&self) -> Vec<u8> {
        // Through a Value: its map sorts the keys, as the files written so far have them.
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        // A Value always serializes.
        let mut bytes = serde_json::to_vec_pretty(&v).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Parses `bytes` as a `T`; a failure is [`Error::Config`] naming `path` (the file, for the
/// message) and the JSON path of the bad field, never its value.
pub fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    crate::json::from_slice(bytes).map_err(|r| {
        let message = match (r.path.as_str(), r.message.as_str()) {
            ("", "must be an object") => "must be a JSON object".to_owned(),
            ("contexts", "is missing") => "missing: the config must list its contexts".to_owned(),
            _ => r.message,
        };
        Error::config(path, r.path, message)
    })
}

/// Reads `v` (found at `at` in `source`) as a `T`, as [`parse`] does.
pub fn from_value<T: DeserializeOwned>(source: &ConfigSource, at: &str, v: &Value) -> Result<T> {
    crate::json::from_value(at, v).map_err(|r| Error::config(source, r.path, r.message))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;
    use serde_json::json;

    fn err(v: &str) -> String {
        parse::<QshConfig>(Path::new("/t/config.json"), v.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_keys_and_absent_fields_round_trip() {
        let v = json!({
            "telemetry": {"enabled": false},
            "contexts": [
                {"name": "prod", "qpu": "aquila", "colour": [1, 2],
                 "defaults": {"api_base_url": "https://api.example", "auth_provider": "quera"},
                 "auth_providers": [
                    {"provider": "basic", "name": "b", "username": "u", "password": "p"},
                    {"provider": "oauth", "name": "quera", "auth_base_url": "https://i.example",
                     "client_id": "c", "client_secret": null, "grant_type": "device_code",
                     "scope": null, "audience": null, "tenant": null, "x-ours": {"a": null}}]},
                {"name": "dev", "defaults": null},
                {"name": "bare"}
            ]
        });
        let m: QshConfig = parse(Path::new("c"), v.to_string().as_bytes()).unwrap();
        assert_eq!(m.current_context, None, "absent stays absent");
        assert_eq!(m.contexts[1].defaults, Some(None), "null stays null");
        assert_eq!(m.contexts[0].default_provider(), Some("quera"));
        assert_eq!(serde_json::to_value(&m).unwrap(), v);
        let back: Value = serde_json::from_slice(&m.render()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn refusals_name_the_json_path_never_the_value() {
        let m: QshConfig = parse(
            Path::new("c"),
            br#"{"contexts": [{"name": "p", "auth_providers": [{}, {"client_id": "s3cr3t", "client_secret": 424242}]}]}"#,
        )
        .unwrap();
        let source = ConfigSource::File("/t/config.json".into());
        let e = m.contexts[0].providers()[1]
            .typed(&source, "contexts[0].auth_providers[1]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/t/config.json")
                && e.contains("contexts[0].auth_providers[1].client_secret")
                && e.contains("must be a string"),
            "{e}"
        );
        assert!(!e.contains("424242") && !e.contains("s3cr3t"), "{e}");
        let e = err(r#"{"contexts": [{"qpu": "hunter2"}]}"#);
        assert!(
            e.contains("contexts[0].name") && e.contains("missing"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = err(r#"{"contexts": [{"name": "p", "defaults": "topsecret"}]}"#);
        assert!(
            e.contains("contexts[0].defaults") && e.contains("must be an object"),
            "{e}"
        );
        assert!(!e.contains("topsecret"), "{e}");
        let e = err(r#"{"contexts": {"name": "p"}}"#);
        assert!(
            e.contains("contexts") && e.contains("must be a list"),
            "{e}"
        );
        let e = err(r#"{"current_context": "p"}"#);
        assert!(e.contains("must list its contexts"), "{e}");
        let e = err(r#"["contexts"]"#);
        assert!(e.contains("must be a JSON object"), "{e}");
        let e = err(r#"{"contexts": []} x"#);
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
