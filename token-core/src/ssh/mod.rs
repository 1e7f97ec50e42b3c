//! Short-lived SSH certificates for service accounts: API key -> JWT -> signed certificate.
//!
//! The flow that centres such as CSCS document for CI pipelines and scripts:
//! 1. `POST <token_url>` with `X-API-Key: <key>` answers `{"access_token": "<JWT>", ...}`;
//! 2. `POST <sign_url>` with `Authorization: Bearer <JWT>` and `{"public_key": "<OpenSSH line>"}`
//!    answers `{"sshKey": {"publicKey": "ssh-ed25519-cert-v01@openssh.com AAAA..."}}`, written
//!    to `<key>-cert.pub`.
//!
//! * [`config`]: the `ssh` section of the site file and of the user's `ssh.json`, resolved with
//!   the command line into a [`config::Service`].
//! * [`apikey`]: where the API key comes from (an environment variable or a 0600 file).
//! * [`jwtcache`]: the JWT, cached 0600 for its own short life, and the per-service lock.
//! * [`service`]: the two HTTP calls, with every answer checked (never quoted in an error).
//! * [`cert`]: inspecting `KEY.pub` and `KEY-cert.pub` with the `ssh-key` crate.
//!
//! [`ensure_certificate`] is the single-flight "make sure KEY-cert.pub is valid": a fast path
//! with no lock and no network, then the lock, a re-check, and at most one JWT request and one
//! signing request for any number of processes that start together.

pub mod apikey;
pub mod cert;
pub mod config;
pub mod jwtcache;
pub mod service;

use crate::http::HttpClient;
use crate::secret::Secret;
use crate::time::Timestamp;
use crate::{Error, fsutil};
use cert::CertState;
use config::Service;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What can go wrong while getting or checking a certificate. Messages never hold the API key,
/// the JWT or a response body.
#[derive(Debug)]
#[non_exhaustive]
pub enum SshError {
    /// A token-core error (configuration, permissions, lock timeout).
    Core(Error),
    /// A file could not be read or written, or holds something unusable.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        detail: String,
    },
    /// The token endpoint refused the API key (HTTP 401 or 403).
    ApiKeyRefused {
        /// The token URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The service's name.
        service: String,
    },
    /// The signing endpoint refused a fresh JWT (HTTP 401 or 403).
    TokenRefused {
        /// The sign URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// A service could not be reached, timed out or answered 5xx/429.
    Unavailable {
        /// The URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// A service answered something that is not what the API promises (HTML, garbage, ...).
    BadAnswer {
        /// The URL.
        url: String,
        /// What was wrong (never the body).
        detail: String,
    },
    /// The signing service sent a certificate that must not be used (another key, already
    /// expired, other principals, longer validity than asked). Nothing was written.
    CertRefused {
        /// The sign URL.
        url: String,
        /// What was wrong with it.
        detail: String,
    },
}

impl SshError {
    /// A short, stable name of the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            SshError::Core(e) => e.kind(),
            SshError::File { .. } => "ssh_file",
            SshError::ApiKeyRefused { .. } => "ssh_api_key_refused",
            SshError::TokenRefused { .. } => "ssh_token_refused",
            SshError::Unavailable { .. } => "ssh_service_unavailable",
            SshError::BadAnswer { .. } => "ssh_service_bad_answer",
            SshError::CertRefused { .. } => "ssh_certificate_refused",
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        SshError::File {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

impl From<Error> for SshError {
    fn from(e: Error) -> Self {
        match e {
            // token-core's store message says "log in again", which is wrong here.
            Error::Store { path, detail } => SshError::File { path, detail },
            e => SshError::Core(e),
        }
    }
}

impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshError::Core(e) => write!(f, "{e}"),
            SshError::File { path, detail } => write!(f, "{}: {detail}", path.display()),
            SshError::ApiKeyRefused {
                url,
                status,
                service,
            } => write!(
                f,
                "the API key was refused by {url} (HTTP {status}): it is wrong, expired or \
                 revoked. Rotate it: create a new key for the service account, store it where \
                 service '{service}' reads it (its api_key_env variable or api_key_file), and \
                 revoke the old one (docs/ssh.md, \"Rotating the API key\")"
            ),
            SshError::TokenRefused { url, status } => write!(
                f,
                "the signing service {url} refused a fresh token of this service account \
                 (HTTP {status}): the account may not be allowed to sign SSH keys; ask the \
                 service's admins"
            ),
            SshError::Unavailable { url, detail } => write!(
                f,
                "the service at {url} is not available ({detail}); try again later"
            ),
            SshError::BadAnswer { url, detail } => write!(
                f,
                "the service at {url} sent an invalid answer ({detail}); it may be down or \
                 behind a proxy: try again later, or check the URL in the service config"
            ),
            SshError::CertRefused { url, detail } => write!(
                f,
                "refused the certificate from {url}: {detail}; the existing files were left \
                 untouched (ask the signing service's admins if this persists)"
            ),
        }
    }
}

impl std::error::Error for SshError {}

/// Result with [`SshError`].
pub type SshResult<T> = std::result::Result<T, SshError>;

/// How [`ensure_certificate`] runs.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// The certificate must stay valid at least this long; otherwise a new one is fetched.
    pub min_valid: Duration,
    /// The longest wait for another process that is renewing the same certificate.
    pub lock_timeout: Duration,
    /// Where JWTs and locks are kept (`$XDG_CACHE_HOME/qlam-auth/ssh`).
    pub cache_dir: PathBuf,
    /// Renew even if the certificate is still valid.
    pub force: bool,
}

/// What [`ensure_certificate`] did.
#[derive(Debug, Clone)]
pub enum SignOutcome {
    /// The certificate was already valid long enough: nothing was sent anywhere.
    AlreadyValid {
        /// The certificate file.
        cert_path: PathBuf,
        /// Seconds of validity left.
        remaining: u64,
    },
    /// A new certificate was fetched, checked and written.
    Renewed {
        /// The certificate file.
        cert_path: PathBuf,
        /// Seconds of validity left.
        remaining: u64,
        /// Things the user should know (e.g. a shorter validity than asked).
        warnings: Vec<String>,
        /// True if the JWT came from the cache (no API-key request was made).
        jwt_from_cache: bool,
    },
}

/// `KEY.pub` and `KEY-cert.pub` of a private-key path.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// The directory that holds them.
    pub dir: PathBuf,
    /// The private key's file name (never read).
    pub key_name: String,
    /// `<key>.pub`.
    pub pub_name: String,
    /// `<key>-cert.pub`.
    pub cert_name: String,
}

impl KeyFiles {
    /// Splits a key path.
    pub fn of(key: &Path) -> SshResult<Self> {
        let key_name = key
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                SshError::file(
                    key,
                    "this is not a key file name (expected e.g. ~/.ssh/qlam-sa)",
                )
            })?
            .to_owned();
        let dir = match key.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Ok(KeyFiles {
            dir,
            pub_name: format!("{key_name}.pub"),
            cert_name: format!("{key_name}-cert.pub"),
            key_name,
        })
    }

    /// The public key's path.
    pub fn pub_path(&self) -> PathBuf {
        self.dir.join(&self.pub_name)
    }

    /// The certificate's path.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(&self.cert_name)
    }
}

/// Inspects `KEY-cert.pub` against `KEY.pub` without any network call (`qlam-auth ssh check`).
/// Errors are for an unusable public key; every state of the certificate is a [`CertState`].
pub fn check_certificate(key: &Path, min_valid: Duration) -> SshResult<CertState> {
    let files = KeyFiles::of(key)?;
    let dir = open_key_dir(&files)?;
    let public = cert::read_public_key(fsutil::fd(&dir), &files)?;
    Ok(cert::read_and_assess(
        fsutil::fd(&dir),
        &files,
        &public,
        now(),
        min_valid.as_secs(),
        None,
    ))
}

fn now() -> u64 {
    u64::try_from(Timestamp::now().unix_seconds()).unwrap_or(0)
}

fn open_key_dir(files: &KeyFiles) -> SshResult<std::os::fd::OwnedFd> {
    fsutil::open_dir(&files.dir, fsutil::Policy::NOT_WRITABLE_BY_OTHERS)?.ok_or_else(|| {
        SshError::Core(Error::config(
            files.pub_path(),
            "",
            format!(
                "no such directory {}: create the key with `ssh-keygen -t ed25519 -N '' -f {}`",
                files.dir.display(),
                files.dir.join(&files.key_name).display()
            ),
        ))
    })
}

/// Makes sure `service.key`'s certificate is valid for at least `opts.min_valid`, fetching a
/// new one if not (at most one JWT request and one signing request however many processes ask
/// at once). `env` reads the API key's environment variable (the CLI passes the process
/// environment; token-core never reads it by itself).
pub fn ensure_certificate(
    http: &dyn HttpClient,
    service: &Service,
    opts: &SignOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> SshResult<SignOutcome> {
    let files = KeyFiles::of(&service.key)?;
    let dir = open_key_dir(&files)?;
    let dirfd = fsutil::fd(&dir);
    let public = cert::read_public_key(dirfd, &files)?;
    let min = opts.min_valid.as_secs();
    let principals = service.principals.as_deref();
    let usable = |state: &CertState| matches!(state, CertState::Valid { .. });
    // The certificate on disk, if it is valid for `min_valid` with the asked principals.
    let already_valid =
        || match cert::read_and_assess(dirfd, &files, &public, now(), min, principals) {
            CertState::Valid { remaining, .. } => Some(SignOutcome::AlreadyValid {
                cert_path: files.cert_path(),
                remaining,
            }),
            _ => None,
        };

    // 1. Fast path: no lock, no network.
    if !opts.force
        && let Some(valid) = already_valid()
    {
        return Ok(valid);
    }

    // 2. The per-service lock; while waiting, leave as soon as the holder's certificate landed.
    let cache = jwtcache::JwtCache::open(&opts.cache_dir, &service.name)?;
    let force = opts.force;
    let lock = cache.lock(opts.lock_timeout, &mut || {
        !force
            && usable(&cert::read_and_assess(
                dirfd,
                &files,
                &public,
                now(),
                min,
                principals,
            ))
    })?;
    let Some(_lock) = lock else {
        if let Some(valid) = already_valid() {
            return Ok(valid);
        }
        return Err(SshError::file(
            files.cert_path(),
            "another process renewed the certificate but it is not valid any more; run the \
             command again",
        ));
    };
    // 3. Re-check under the lock: another process may have renewed it meanwhile.
    if !opts.force
        && let Some(valid) = already_valid()
    {
        return Ok(valid);
    }

    // 4. A JWT (cached for its own life), then the certificate; a cached JWT the signing
    //    service refuses is dropped and replaced once.
    let public_line = public.to_openssh().map_err(|e| {
        SshError::file(
            files.pub_path(),
            format!("cannot encode the public key ({e})"),
        )
    })?;
    let mut from_cache = true;
    let mut jwt = match cache.load(now())? {
        Some(j) => j,
        None => {
            from_cache = false;
            fresh_jwt(http, service, &cache, env)?
        }
    };
    let text = match service::request_certificate(http, &service.sign_url, &jwt, &public_line) {
        Err(SshError::TokenRefused { .. }) if from_cache => {
            log::info!("ssh: the cached token was refused; getting a new one");
            cache.remove()?;
            from_cache = false;
            jwt = fresh_jwt(http, service, &cache, env)?;
            service::request_certificate(http, &service.sign_url, &jwt, &public_line)?
        }
        other => other?,
    };
    drop(jwt);

    // 5. Check it before it replaces anything.
    let want = cert::Want {
        min_valid: min,
        duration: service.duration.map(|d| d.as_secs()),
        principals,
    };
    let (checked, warnings) =
        cert::vet_new(&text, &public, now(), &want).map_err(|detail| SshError::CertRefused {
            url: service.sign_url.clone(),
            detail,
        })?;
    let mut line = checked.line.clone();
    line.push('\n');
    fsutil::atomic_write_at(dirfd, &files.dir, &files.cert_name, line.as_bytes(), 0o644)?;
    log::info!(
        "ssh: wrote {} (serial {}, valid {} s more)",
        files.cert_path().display(),
        checked.serial,
        checked.remaining
    );
    Ok(SignOutcome::Renewed {
        cert_path: files.cert_path(),
        remaining: checked.remaining,
        warnings,
        jwt_from_cache: from_cache,
    })
}

fn fresh_jwt(
    http: &dyn HttpClient,
    service: &Service,
    cache: &jwtcache::JwtCache,
    env: &dyn Fn(&str) -> Option<String>,
) -> SshResult<Secret> {
    let api_key = service.api_key.read(&service.name, env)?;
    let (jwt, exp) = service::request_jwt(http, &service.token_url, &api_key, &service.name)?;
    drop(api_key);
    if let Some(exp) = exp {
        cache.save(&jwt, exp, now())?;
    }
    Ok(jwt)
}
