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
        let key = files.dir.join(&files.key_name);
        // Only whether the private key exists is looked at, never its content.
        let fix = if key.exists() {
            format!(
                "write it from the private key with `ssh-keygen -y -f {k} > {k}.pub`",
                k = key.display()
            )
        } else {
            format!(
                "create the key pair with `ssh-keygen -t ed25519 -N '' -f {}`",
                key.display()
            )
        };
        SshError::Core(crate::Error::config(
            &path,
            "",
            format!(
                "there is no public key: {fix} (only {} is read and sent, never the private key)",
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
    /// The certificate re-encoded from what was checked (one line, no newline): exactly this
    /// is written, never the service's raw text.
    pub line: String,
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
    let line = cert
        .to_openssh()
        .map_err(|e| format!("it cannot be encoded again ({e})"))?;
    Ok((
        Vetted {
            remaining,
            serial: cert.serial(),
            line,
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made once with ssh-keygen: key A's certificate (serial 7, principals qassh and ci, valid
    // 2030-01-01 00:00:00 to 00:10:00 UTC), key B, and a host certificate of key B.
    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINbisrrkIBt7WdDLj+cdWQJLZt8rL3LyxG04YyADOZ04 a";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPZGh9IQ4FLvi3pcunzZabd+U7PDVoejNTuo90r+MOA1 b";
    const A_CERT: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIBBkfWlRCkMijm+U12V9UW75CcMTMaT0d+lE0yQDNIhuAAAAINbisrrkIBt7WdDLj+cdWQJLZt8rL3LyxG04YyADOZ04AAAAAAAAAAcAAAABAAAACWZpeHR1cmUtYQAAAA8AAAAFcWFzc2gAAAACY2kAAAAAcNvYgAAAAABw29rYAAAAAAAAAIIAAAAVcGVybWl0LVgxMS1mb3J3YXJkaW5nAAAAAAAAABdwZXJtaXQtYWdlbnQtZm9yd2FyZGluZwAAAAAAAAAWcGVybWl0LXBvcnQtZm9yd2FyZGluZwAAAAAAAAAKcGVybWl0LXB0eQAAAAAAAAAOcGVybWl0LXVzZXItcmMAAAAAAAAAAAAAADMAAAALc3NoLWVkMjU1MTkAAAAgN70yxfemaZwx83frN0n7GrebgMVGFcP0CCOVCMERdKYAAABTAAAAC3NzaC1lZDI1NTE5AAAAQEpvOjCFfYfT2irbGE/Z0FOuf3a9cZTqGD9NUiixMJvJb04o8aX5tVU4D1hbiKcC2z/icAZHRi3IaGsKz4WK2QA= a";
    const HOST_CERT: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIK+2oTlCcH3jTCA1steuylfLNsF4FS2A4KWnuoTqeqEnAAAAIPZGh9IQ4FLvi3pcunzZabd+U7PDVoejNTuo90r+MOA1AAAAAAAAAAAAAAACAAAABGhvc3QAAAANAAAACWguZXhhbXBsZQAAAABw29iAAAAAAHDb2tgAAAAAAAAAAAAAAAAAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIDe9MsX3pmmcMfN36zdJ+xq3m4DFRhXD9AgjlQjBEXSmAAAAUwAAAAtzc2gtZWQyNTUxOQAAAEB2tgINZOwg/0pBAhGu5z1wnsuDrRDv9k6nig2HUkkUl7PteYMbwXgjg+Wvzm5nauflCyGNl2OeMDU7j+lDqHMP b";
    const START: u64 = 1_893_456_000;
    const END: u64 = START + 600;

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).expect("public key")
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn want(p: Option<&[String]>, duration: Option<u64>) -> Want<'_> {
        Want {
            min_valid: 10,
            duration,
            principals: p,
        }
    }

    #[test]
    fn assess_tells_every_state() {
        let cert = parse_certificate(A_CERT).expect("cert");
        let (a, b) = (key(A), key(B));
        let p = names(&["ci", "qassh"]);
        assert!(matches!(
            assess(&cert, &a, START + 100, 10, Some(&p)),
            CertState::Valid {
                remaining: 500,
                serial: 7,
                ..
            }
        ));
        assert!(matches!(
            assess(&cert, &b, START + 100, 10, None),
            CertState::OtherKey { .. }
        ));
        assert_eq!(
            assess(&cert, &a, START - 5, 10, None),
            CertState::NotYetValid { in_secs: 5 }
        );
        assert_eq!(
            assess(&cert, &a, END, 10, None),
            CertState::Expired { ago: 0 }
        );
        assert_eq!(
            assess(&cert, &a, END - 5, 10, None),
            CertState::ExpiresSoon { remaining: 5 }
        );
        assert!(matches!(
            assess(&cert, &a, START + 100, 10, Some(&names(&["qassh"]))),
            CertState::OtherPrincipals { .. }
        ));
    }

    #[test]
    fn a_host_certificate_or_garbage_is_not_a_user_certificate() {
        assert!(
            parse_certificate(HOST_CERT)
                .unwrap_err()
                .contains("host certificate")
        );
        assert!(parse_certificate("ssh-ed25519-cert-v01@openssh.com AAAA garbage").is_err());
        assert!(parse_certificate(A).is_err());
    }

    #[test]
    fn vet_new_refuses_what_was_not_asked_for() {
        let (a, b) = (key(A), key(B));
        let p = names(&["qassh", "ci"]);
        let (ok, warnings) =
            vet_new(A_CERT, &a, START + 10, &want(Some(&p), Some(600))).expect("ok");
        assert_eq!((ok.remaining, ok.serial), (590, 7));
        assert_eq!(ok.line, A_CERT, "what is written is what was checked");
        assert!(warnings.is_empty(), "{warnings:?}");
        let e = vet_new(A_CERT, &b, START, &want(None, None)).unwrap_err();
        assert!(e.contains("another key"), "{e}");
        let e = vet_new(A_CERT, &a, END + 1, &want(None, None)).unwrap_err();
        assert!(e.contains("already expired"), "{e}");
        let e = vet_new(A_CERT, &a, START - SKEW - 1, &want(None, None)).unwrap_err();
        assert!(e.contains("only becomes valid"), "{e}");
        let e = vet_new(A_CERT, &a, START, &want(Some(&names(&["root"])), None)).unwrap_err();
        assert!(e.contains("principals are [qassh, ci]"), "{e}");
        let e = vet_new(A_CERT, &a, START, &want(None, Some(60))).unwrap_err();
        assert!(e.contains("longer than the 1m asked"), "{e}");
        let e = vet_new(A_CERT, &a, END - 5, &want(None, None)).unwrap_err();
        assert!(e.contains("--min-valid"), "{e}");
    }

    #[test]
    fn a_shorter_validity_than_asked_is_a_warning_not_an_error() {
        let (_, warnings) = vet_new(A_CERT, &key(A), START, &want(None, Some(3600))).expect("ok");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("granted 10m, less than the 1h asked"),
            "{warnings:?}"
        );
    }
}
