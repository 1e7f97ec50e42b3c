//! Reading `KEY.pub` and `KEY-cert.pub` with the `ssh-key` crate (no hand parsing of OpenSSH
//! formats) and deciding whether a certificate may be used: right key, a user certificate,
//! valid now and for long enough, with the principals and validity that were asked for.

use super::{KeyFiles, SshError, SshResult};
use crate::fsutil;
use ssh_key::certificate::CertType;
use ssh_key::{Certificate, HashAlg, PublicKey};
use std::os::fd::BorrowedFd;

const MAX_KEY_FILE: u64 = 64 * 1024;
/// A new certificate may start this much in the future (clock skew with the service).
pub const SKEW: u64 = 30;
/// A new certificate may outlive the asked duration by this much (rounding, clock skew).
pub const DURATION_SLACK: u64 = 30;

/// The state of `KEY-cert.pub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    /// There is no certificate file.
    Missing,
    /// The file is not an OpenSSH certificate (or not a user certificate).
    Unreadable {
        /// Why.
        detail: String,
    },
    /// It certifies another public key than `KEY.pub`.
    OtherKey {
        /// The certified key's SHA256 fingerprint.
        certified: String,
        /// `KEY.pub`'s fingerprint.
        key: String,
    },
    /// It is not valid yet.
    NotYetValid {
        /// Seconds until it is.
        in_secs: u64,
    },
    /// It has expired.
    Expired {
        /// Seconds since.
        ago: u64,
    },
    /// It is valid, but for less than the minimum asked.
    ExpiresSoon {
        /// Seconds left.
        remaining: u64,
    },
    /// Its principals are not the ones the service config asks for.
    OtherPrincipals {
        /// What it carries.
        principals: Vec<String>,
    },
    /// It is valid long enough.
    Valid {
        /// Seconds left.
        remaining: u64,
        /// Its principals.
        principals: Vec<String>,
        /// Its key id.
        key_id: String,
        /// Its serial.
        serial: u64,
    },
}

/// Reads and parses `KEY.pub`.
pub fn read_public_key(dir: BorrowedFd<'_>, files: &KeyFiles) -> SshResult<PublicKey> {
    let path = files.pub_path();
    let bytes = fsutil::read_file_at(
        dir,
        &files.dir,
        &files.pub_name,
        fsutil::Policy::NOT_WRITABLE_BY_OTHERS,
        MAX_KEY_FILE,
    )?
    .ok_or_else(|| {
        SshError::Core(crate::Error::config(
            &path,
            "",
            format!(
                "there is no public key: create the key pair with `ssh-keygen -t ed25519 -N '' \
                 -f {}` (only {} is read and sent, never the private key)",
                files.dir.join(&files.key_name).display(),
                files.pub_name
            ),
        ))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    PublicKey::from_openssh(text.trim()).map_err(|e| {
        SshError::file(
            &path,
            format!(
                "this is not an OpenSSH public key ({e}); it should be one line like \
                 `ssh-ed25519 AAAA... comment`, as ssh-keygen writes it"
            ),
        )
    })
}

/// Parses one certificate line.
pub fn parse_certificate(text: &str) -> Result<Certificate, String> {
    let cert = Certificate::from_openssh(text.trim())
        .map_err(|e| format!("it is not an OpenSSH certificate ({e})"))?;
    if cert.cert_type() != CertType::User {
        return Err("it is a host certificate, not a user certificate".to_owned());
    }
    Ok(cert)
}

/// Reads `KEY-cert.pub` and assesses it (never an error: every problem is a state).
pub fn read_and_assess(
    dir: BorrowedFd<'_>,
    files: &KeyFiles,
    key: &PublicKey,
    now: u64,
    min_valid: u64,
    principals: Option<&[String]>,
) -> CertState {
    let bytes = match fsutil::read_file_at(
        dir,
        &files.dir,
        &files.cert_name,
        fsutil::Policy::NOT_WRITABLE_BY_OTHERS,
        MAX_KEY_FILE,
    ) {
        Ok(Some(b)) => b,
        Ok(None) => return CertState::Missing,
        Err(e) => {
            return CertState::Unreadable {
                detail: e.to_string(),
            };
        }
    };
    match parse_certificate(&String::from_utf8_lossy(&bytes)) {
        Ok(cert) => assess(&cert, key, now, min_valid, principals),
        Err(detail) => CertState::Unreadable { detail },
    }
}

fn fp(k: &ssh_key::public::KeyData) -> String {
    k.fingerprint(HashAlg::Sha256).to_string()
}

/// Assesses a parsed certificate.
pub fn assess(
    cert: &Certificate,
    key: &PublicKey,
    now: u64,
    min_valid: u64,
    principals: Option<&[String]>,
) -> CertState {
    if cert.public_key() != key.key_data() {
        return CertState::OtherKey {
            certified: fp(cert.public_key()),
            key: fp(key.key_data()),
        };
    }
    if cert.valid_after() > now {
        return CertState::NotYetValid {
            in_secs: cert.valid_after() - now,
        };
    }
    if cert.valid_before() <= now {
        return CertState::Expired {
            ago: now - cert.valid_before(),
        };
    }
    if let Some(want) = principals
        && !same_set(cert.valid_principals(), want)
    {
        return CertState::OtherPrincipals {
            principals: cert.valid_principals().to_vec(),
        };
    }
    let remaining = cert.valid_before() - now;
    if remaining < min_valid.max(1) {
        return CertState::ExpiresSoon { remaining };
    }
    CertState::Valid {
        remaining,
        principals: cert.valid_principals().to_vec(),
        key_id: cert.key_id().to_owned(),
        serial: cert.serial(),
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

/// What a new certificate must satisfy.
#[derive(Debug, Clone)]
pub struct Want<'a> {
    /// Valid for at least this long from now.
    pub min_valid: u64,
    /// The validity asked for, if any: longer is refused, shorter is a warning.
    pub duration: Option<u64>,
    /// Exactly these principals, if set.
    pub principals: Option<&'a [String]>,
}

/// A new certificate that passed [`vet_new`].
#[derive(Debug, Clone)]
pub struct Vetted {
    /// Seconds left.
    pub remaining: u64,
    /// Its serial.
    pub serial: u64,
}

fn fmt_secs(s: u64) -> String {
    super::config::format_duration(s)
}

/// Checks a certificate the signing service just sent. `Err` says why it must not be used;
/// the warnings are for things to report but not refuse (a shorter validity than asked).
pub fn vet_new(
    text: &str,
    key: &PublicKey,
    now: u64,
    want: &Want<'_>,
) -> Result<(Vetted, Vec<String>), String> {
    let cert = parse_certificate(text)?;
    let mut warnings = Vec::new();
    if cert.public_key() != key.key_data() {
        return Err(format!(
            "it certifies another key ({}), not this one ({})",
            fp(cert.public_key()),
            fp(key.key_data())
        ));
    }
    if cert.valid_before() <= now {
        return Err(format!(
            "it has already expired ({} ago)",
            fmt_secs(now - cert.valid_before())
        ));
    }
    if cert.valid_after() > now + SKEW {
        return Err(format!(
            "it only becomes valid in {} (check the clocks here and at the service)",
            fmt_secs(cert.valid_after() - now)
        ));
    }
    if let Some(p) = want.principals
        && !same_set(cert.valid_principals(), p)
    {
        return Err(format!(
            "its principals are [{}], not the [{}] asked for",
            cert.valid_principals().join(", "),
            p.join(", ")
        ));
    }
    let remaining = cert.valid_before() - now;
    if let Some(d) = want.duration {
        if remaining > d + DURATION_SLACK {
            return Err(format!(
                "it is valid for {} more, longer than the {} asked for (set --duration or the \
                 service's \"duration\" to what the service grants)",
                fmt_secs(remaining),
                fmt_secs(d)
            ));
        }
        if remaining + DURATION_SLACK < d {
            warnings.push(format!(
                "the service granted {}, less than the {} asked for: the certificate is used, \
                 and renewed whenever it runs out (lower --duration or the service's \
                 \"duration\" to silence this)",
                fmt_secs(remaining),
                fmt_secs(d)
            ));
        }
    }
    if remaining < want.min_valid {
        return Err(format!(
            "it is valid for only {} more, less than the --min-valid {} (lower --min-valid)",
            fmt_secs(remaining),
            fmt_secs(want.min_valid)
        ));
    }
    Ok((
        Vetted {
            remaining,
            serial: cert.serial(),
        },
        warnings,
    ))
}
