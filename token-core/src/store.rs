//! QLAM Core's v1 credentials files, read and written compatibly.
//!
//! One file per (context, provider): `<config dir>/credentials/cache_<prefix>_<sha256>.json`,
//! mode 0600 in a 0700 directory. The tokens live in `extra.token_data`; `data` holds the access
//! token again (base64 of `{"token": ...}`), and `expires_at` is the access token's expiry
//! (`token_data.created_at` truncated to the minute, plus `expires_in`).
//!
//! Reading refuses symlinks, foreign owners, group/world access and oversized files. Writing is
//! atomic and durable ([`crate::fsutil::atomic_write_at`]). Concurrency is handled by the caller
//! holding the [`crate::lock`] for the same file; QLAM Core itself takes no lock, so
//! [`CredentialStore::save_if_unchanged`] refuses to overwrite a file that changed since it was
//! read.

use crate::fsutil::{self, FileId, Policy};
use crate::lock::StoreLock;
use crate::paths::QshPaths;
use crate::secret::Secret;
use crate::time::Timestamp;
use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::Value;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// Suffix of the marker of a refused refresh token, beside its credentials file.
pub const REFUSED_SUFFIX: &str = ".refused";

/// Largest credentials file we read.
pub const MAX_CREDENTIALS_BYTES: u64 = 256 * 1024;

/// The config directory may be read by others but not changed by them.
const CONFIG_DIR_POLICY: Policy = Policy {
    forbidden_mode: 0o022,
    allow_root_owner: false,
};

/// A set of tokens from one token response, as QLAM Core's `TokenData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// Usually `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds from `created_at`, if the IdP said.
    pub expires_in: Option<i64>,
    /// The refresh token, if any.
    pub refresh_token: Option<Secret>,
    /// The ID token, if any.
    pub id_token: Option<Secret>,
    /// Granted scope.
    pub scope: Option<String>,
    /// When the response was received.
    pub created_at: Timestamp,
}

impl TokenSet {
    /// Expiry of the access token by QLAM Core's rule (`created_at` truncated to the minute, plus
    /// `expires_in`): what the file's `expires_at` says. `None` = unknown. Our own decisions use
    /// [`TokenSet::exact_expires_at`] instead: this rule can make a short-lived token look expired
    /// at birth.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_in
            .map(|s| self.created_at.truncated_to_minute().plus_seconds(s))
    }

    /// The access token's real expiry: `created_at` (with its fraction) plus `expires_in`, or the
    /// JWT `exp` claim when the access token is a JWT that has one; the earlier of the two when
    /// both are known (a token is used past neither). `None` = unknown (treated as not
    /// expiring, as QLAM Core does).
    pub fn exact_expires_at(&self) -> Option<Timestamp> {
        let by_answer = self.expires_in.map(|s| self.created_at.plus_seconds(s));
        let by_claim =
            crate::jwt::expiry(self.access_token.expose()).map(Timestamp::from_unix_seconds);
        match (by_answer, by_claim) {
            (Some(a), Some(c)) => Some(if a.seconds_until(c) < 0 { c } else { a }),
            (a, c) => a.or(c),
        }
    }

    /// How long the identity provider made this access token live (`expires_in`, else the JWT's
    /// `exp - iat`): the most validity a renewal can give. `None` = unknown.
    pub fn lifetime(&self) -> Option<Duration> {
        let secs = self.expires_in.or_else(|| {
            let c = crate::jwt::unverified_claims(self.access_token.expose())?;
            Some(c.get("exp")?.as_i64()? - c.get("iat")?.as_i64()?)
        })?;
        u64::try_from(secs).ok().map(Duration::from_secs)
    }

    /// Seconds of validity left at `now` by the exact expiry (`None` if unknown).
    pub fn seconds_left(&self, now: Timestamp) -> Option<i64> {
        self.exact_expires_at().map(|e| now.seconds_until(e))
    }

    /// True if the access token is valid for at least `min_valid` more at `now` (exact expiry).
    pub fn valid_for(&self, now: Timestamp, min_valid: Duration) -> bool {
        match self.seconds_left(now) {
            None => true,
            Some(left) => left >= i64::try_from(min_valid.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The validity a caller can get from this IdP. A request the IdP's tokens can meet
    /// (`min_valid` below their lifetime) is kept as it is. A request for the whole lifetime or
    /// more, which no token meets once it is a second old, is capped at half the lifetime: asked
    /// as it is, every call would renew, one after another under the lock, and still not get it.
    pub fn achievable(&self, min_valid: Duration) -> Duration {
        match self.lifetime() {
            Some(l) if min_valid >= l => l / 2,
            _ => min_valid,
        }
    }
}

/// Tokens read from the store, with what is needed to tell later whether the file changed.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The tokens.
    pub tokens: TokenSet,
    /// The file's identity when read.
    pub file_id: Option<FileId>,
    /// The file's path.
    pub path: PathBuf,
}

/// What [`CredentialStore::save_if_unchanged`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The new tokens are in place.
    Saved,
    /// Someone else replaced the file since it was read; it was left alone.
    ChangedMeanwhile,
}

/// The credentials directory of one user.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    config_dir: PathBuf,
    credentials_dir: PathBuf,
}

/// QLAM Core's file name for a cache key.
pub fn cache_file_name(cache_key: &str) -> String {
    let mut sanitized = String::with_capacity(cache_key.len());
    let mut in_run = false;
    for c in cache_key.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            sanitized.push(c);
            in_run = false;
        } else if !in_run {
            sanitized.push('_');
            in_run = true;
        }
    }
    let trimmed = sanitized.trim_matches(|c| c == '.' || c == '_');
    let prefix: String = if trimmed.is_empty() {
        "default".into()
    } else {
        trimmed.chars().take(64).collect()
    };
    let hash = crate::digest::sha256(cache_key.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("cache_{prefix}_{hex}.json")
}

impl CredentialStore {
    /// The store under `paths.credentials_dir`.
    pub fn new(paths: &QshPaths) -> Self {
        CredentialStore {
            config_dir: paths.config_dir.clone(),
            credentials_dir: paths.credentials_dir.clone(),
        }
    }

    /// The credentials directory.
    pub fn dir(&self) -> &Path {
        &self.credentials_dir
    }

    /// The file that holds `cache_key`'s credentials.
    pub fn path_for(&self, cache_key: &str) -> PathBuf {
        self.credentials_dir.join(cache_file_name(cache_key))
    }

    fn open_dir(&self) -> Result<Option<OwnedFd>> {
        if fsutil::open_dir(&self.config_dir, CONFIG_DIR_POLICY)?.is_none() {
            return Ok(None);
        }
        fsutil::open_dir(&self.credentials_dir, Policy::PRIVATE)
    }

    fn open_or_create_dir(&self) -> Result<OwnedFd> {
        let parent = fsutil::create_dir_all_private(&self.config_dir, CONFIG_DIR_POLICY)?;
        let name = self
            .credentials_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::store(&self.credentials_dir, "not a valid directory name"))?;
        if self.credentials_dir.parent() == Some(self.config_dir.as_path()) {
            fsutil::open_or_create_dir_at(
                fsutil::fd(&parent),
                &self.config_dir,
                name,
                Policy::PRIVATE,
            )
        } else {
            fsutil::create_dir_all_private(&self.credentials_dir, Policy::PRIVATE)
        }
    }

    /// Records that the identity provider refused `refresh_token` (`invalid_grant`): a marker
    /// file `<credentials file>.refused` beside the credentials, holding only the token's
    /// fingerprint. QLAM Core reads its files by name and ignores it. It stays true only while
    /// that refresh token is the stored one: a new login (by any tool) makes it moot.
    pub fn mark_refused(&self, cache_key: &str, refresh_token: &Secret) -> Result<()> {
        let Some(dir) = self.open_dir()? else {
            return Ok(());
        };
        let name = format!("{}{REFUSED_SUFFIX}", cache_file_name(cache_key));
        let body = format!("{}\n", refresh_token.fingerprint());
        fsutil::atomic_write_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &name,
            body.as_bytes(),
            0o600,
        )
        .map(|_| ())
    }

    /// True if the identity provider already refused `refresh_token` (see
    /// [`CredentialStore::mark_refused`]).
    pub fn was_refused(&self, cache_key: &str, refresh_token: &Secret) -> bool {
        let Ok(Some(dir)) = self.open_dir() else {
            return false;
        };
        let name = format!("{}{REFUSED_SUFFIX}", cache_file_name(cache_key));
        matches!(
            fsutil::read_file_at(fsutil::fd(&dir), &self.credentials_dir, &name, Policy::PRIVATE, 256),
            Ok(Some(b)) if b.trim_ascii() == refresh_token.fingerprint().as_bytes()
        )
    }

    /// Reads `cache_key`'s tokens. `Ok(None)` when there is no file, or a file without token data
    /// (QLAM Core treats that as "not logged in" too).
    pub fn load(&self, cache_key: &str) -> Result<Option<Stored>> {
        let Some(dir) = self.open_dir()? else {
            return Ok(None);
        };
        let name = cache_file_name(cache_key);
        let path = self.credentials_dir.join(&name);
        let file_id = fsutil::file_id_at(fsutil::fd(&dir), &name);
        let Some(bytes) = fsutil::read_file_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &name,
            Policy::PRIVATE,
            MAX_CREDENTIALS_BYTES,
        )?
        else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        Ok(parse_credentials(&path, &bytes)?.map(|tokens| Stored {
            tokens,
            file_id,
            path,
        }))
    }

    /// Writes `tokens` for `cache_key` (atomically, durably, 0600), creating the directories.
    pub fn save(&self, cache_key: &str, context: &str, tokens: &TokenSet) -> Result<PathBuf> {
        let dir = self.open_or_create_dir()?;
        let bytes = render_credentials(context, tokens, Timestamp::now())?;
        fsutil::atomic_write_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &cache_file_name(cache_key),
            &bytes,
            0o600,
        )
    }

    /// Writes `tokens` only if the file is still the one read as `expected` (`None`: absent).
    /// Meant to be called under the store lock; the check-then-rename window that remains is
    /// against writers that take no lock (QLAM Core).
    pub fn save_if_unchanged(
        &self,
        cache_key: &str,
        context: &str,
        tokens: &TokenSet,
        expected: Option<FileId>,
    ) -> Result<SaveOutcome> {
        let dir = self.open_or_create_dir()?;
        let name = cache_file_name(cache_key);
        if fsutil::file_id_at(fsutil::fd(&dir), &name) != expected {
            return Ok(SaveOutcome::ChangedMeanwhile);
        }
        let bytes = render_credentials(context, tokens, Timestamp::now())?;
        fsutil::atomic_write_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &name,
            &bytes,
            0o600,
        )?;
        Ok(SaveOutcome::Saved)
    }

    /// Call with the lock held, before spending the stored refresh token. A writer killed after
    /// it wrote and fsynced its temp file (`.<file>.<random>.tmp`) but before the rename leaves
    /// the newest tokens there, while the file still holds a refresh token the IdP has already
    /// rotated away: using that one would be refused and, with reuse detection, revoke the login.
    /// The newest complete temp file that is newer (by `token_data.created_at`) than the stored
    /// tokens is moved into place; every other temp file of this key is removed. Returns true if
    /// a temp file was adopted.
    pub fn recover_interrupted_write(&self, cache_key: &str) -> Result<bool> {
        let Some(dir) = self.open_dir()? else {
            return Ok(false);
        };
        let name = cache_file_name(cache_key);
        let prefix = format!(".{name}.");
        let mut temps = Vec::new();
        let entries = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| Error::store_io(&self.credentials_dir, "cannot list", &e.into()))?;
        for entry in entries.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.ends_with(".tmp") {
                temps.push(n);
            }
        }
        if temps.is_empty() {
            return Ok(false);
        }
        let current = self.load(cache_key)?.map(|s| s.tokens.created_at);
        let mut best: Option<(Timestamp, String)> = None;
        for t in &temps {
            let path = self.credentials_dir.join(t);
            let read = fsutil::read_file_at(
                fsutil::fd(&dir),
                &self.credentials_dir,
                t,
                Policy::PRIVATE,
                MAX_CREDENTIALS_BYTES,
            );
            // A partial (killed while writing) or foreign temp file is simply not a candidate.
            if let Ok(Some(bytes)) = read
                && let Ok(Some(tokens)) = parse_credentials(&path, &Zeroizing::new(bytes))
                && current.is_none_or(|c| tokens.created_at > c)
                && best.as_ref().is_none_or(|(b, _)| tokens.created_at > *b)
            {
                best = Some((tokens.created_at, t.clone()));
            }
        }
        let adopted = match &best {
            Some((_, t)) => {
                rustix::fs::renameat(&dir, t.as_str(), &dir, name.as_str()).map_err(|e| {
                    Error::store_io(
                        self.credentials_dir.join(t),
                        "cannot move into place",
                        &e.into(),
                    )
                })?;
                log::warn!(
                    target: "qlam_auth",
                    "recovered the tokens of an interrupted write ({t}) into {}",
                    self.credentials_dir.join(&name).display()
                );
                true
            }
            None => false,
        };
        for t in temps
            .iter()
            .filter(|t| best.as_ref().is_none_or(|(_, b)| b != *t))
        {
            fsutil::remove_at(fsutil::fd(&dir), &self.credentials_dir, t)?;
        }
        if adopted {
            rustix::fs::fsync(&dir).map_err(|e| {
                Error::store_io(&self.credentials_dir, "cannot sync directory", &e.into())
            })?;
        }
        Ok(adopted)
    }

    /// Deletes `cache_key`'s credentials. `Ok(false)` if there were none.
    pub fn remove(&self, cache_key: &str) -> Result<bool> {
        let Some(dir) = self.open_dir()? else {
            return Ok(false);
        };
        fsutil::remove_at(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &cache_file_name(cache_key),
        )
    }

    /// Takes the exclusive lock for `cache_key` (a `.lock` file beside the credentials file),
    /// waiting at most `timeout`; `on_wait` is called about once a second while waiting.
    pub fn lock(
        &self,
        cache_key: &str,
        timeout: Duration,
        on_wait: &mut dyn FnMut(Duration),
    ) -> Result<StoreLock> {
        self.lock_unless(cache_key, timeout, on_wait, &mut || false)?
            .ok_or_else(|| {
                Error::store(
                    &self.credentials_dir,
                    "the lock wait ended without the lock",
                )
            })
    }

    /// As [`CredentialStore::lock`], but stops waiting with `Ok(None)` as soon as
    /// `done_elsewhere` (asked between polls) says the holder did the work.
    pub fn lock_unless(
        &self,
        cache_key: &str,
        timeout: Duration,
        on_wait: &mut dyn FnMut(Duration),
        done_elsewhere: &mut dyn FnMut() -> bool,
    ) -> Result<Option<StoreLock>> {
        let dir = self.open_or_create_dir()?;
        let name = format!("{}.lock", cache_file_name(cache_key));
        crate::lock::acquire(
            fsutil::fd(&dir),
            &self.credentials_dir,
            &name,
            timeout,
            on_wait,
            done_elsewhere,
        )
    }
}

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

    #[test]
    fn file_name_matches_qlam_core() {
        // Values computed with qlam_core 0.10 CredentialsCache._get_cache_file_path.
        assert_eq!(
            cache_file_name("oauth_dev/us_main"),
            format!(
                "cache_oauth_dev_us_main_{}.json",
                hex_sha("oauth_dev/us_main")
            )
        );
        assert!(cache_file_name("..//..").starts_with("cache_default_"));
        let long = "x".repeat(100);
        assert!(cache_file_name(&long).starts_with(&format!("cache_{}_", "x".repeat(64))));
        assert!(cache_file_name("a  b!!c").starts_with("cache_a_b_c_"));
    }

    fn hex_sha(s: &str) -> String {
        crate::digest::sha256(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn sample() -> TokenSet {
        TokenSet {
            access_token: Secret::new("at\"1"),
            token_type: "Bearer".into(),
            expires_in: Some(86_400),
            refresh_token: Some(Secret::new("rt1")),
            id_token: None,
            scope: Some("openid offline_access".into()),
            created_at: Timestamp::parse("2026-11-22T10:00:42.5+00:00").unwrap(),
        }
    }

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

    #[test]
    fn the_file_keeps_qlam_cores_rule_and_decisions_use_the_exact_expiry() {
        let t = sample();
        // sample(): created 10:00:42.5 with 86400 s: QLAM Core's rule truncates to the minute,
        // the exact expiry keeps the seconds and their fraction.
        let file_exp = t.expires_at().unwrap();
        let exact = t.exact_expires_at().unwrap();
        assert_eq!(file_exp.to_python_str(), "2026-11-23 10:00:00+00:00");
        assert_eq!(file_exp.seconds_until(exact), 42);
        assert!(t.valid_for(exact.plus_seconds(-300), Duration::from_secs(300)));
        assert!(!t.valid_for(exact.plus_seconds(-299), Duration::from_secs(300)));
    }

    #[test]
    fn a_short_token_created_late_in_a_minute_is_not_expired_at_birth() {
        let created = Timestamp::parse("2026-11-22T10:00:55.000000+00:00").unwrap();
        let t = TokenSet {
            expires_in: Some(30),
            created_at: created,
            ..sample()
        };
        // QLAM Core's rule: 10:00:00 + 30 s, already past at birth.
        assert!(t.expires_at().unwrap().seconds_until(created) > 0);
        assert!(t.valid_for(created.plus_seconds(1), Duration::ZERO));
        assert!(t.valid_for(created, Duration::from_secs(29)));
    }

    #[test]
    fn the_jwt_exp_counts_and_requests_beyond_the_lifetime_are_capped_at_half() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","iat":1800000000,"exp":1800000300}"#);
        let t = TokenSet {
            access_token: Secret::new(format!("e30.{claims}.sig")),
            expires_in: None,
            ..sample()
        };
        assert_eq!(t.exact_expires_at().unwrap().unix_seconds(), 1_800_000_300);
        assert_eq!(t.lifetime(), Some(Duration::from_secs(300)));
        assert_eq!(
            t.achievable(Duration::from_secs(600)),
            Duration::from_secs(150)
        );
        assert_eq!(
            t.achievable(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        let opaque = TokenSet {
            expires_in: Some(300),
            ..sample()
        };
        assert_eq!(
            opaque.achievable(Duration::from_secs(600)),
            Duration::from_secs(150)
        );
        // Both known: the earlier one.
        let both = TokenSet {
            expires_in: Some(60),
            created_at: Timestamp::from_unix_seconds(1_800_000_000),
            ..t.clone()
        };
        assert_eq!(
            both.exact_expires_at().unwrap().unix_seconds(),
            1_800_000_060
        );
    }
}
