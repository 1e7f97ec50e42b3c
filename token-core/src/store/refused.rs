//! The refused-login marker: `<credentials file>.refused`, beside the credentials.

use super::{CredentialStore, REFUSED_SUFFIX, cache_file_name};
use crate::Result;
use crate::fsutil::{self, Policy};
use crate::secret::Secret;

impl CredentialStore {
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
}
