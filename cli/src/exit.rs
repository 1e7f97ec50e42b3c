//! Exit codes and the CLI's failure type. The mapping from token-core errors to exit codes lives
//! in [`code_for`], and nowhere else.

use std::fmt;
use token_core::Error;

/// Success.
pub const OK: u8 = 0;
/// Anything not covered below (a denied or timed-out login, unwritable output, doctor FAILs).
pub const OTHER: u8 = 1;
/// Bad command line (clap uses 2 itself).
pub const USAGE: u8 = 2;
/// Not logged in.
pub const NOT_LOGGED_IN: u8 = 3;
/// The login expired or was revoked.
pub const LOGIN_EXPIRED: u8 = 4;
/// The identity provider could not be reached or answered nonsense.
pub const IDP_UNAVAILABLE: u8 = 5;
/// The identity provider refused the request.
pub const IDP_REFUSED: u8 = 6;
/// Bad configuration.
pub const CONFIG: u8 = 7;
/// Credentials store or permissions.
pub const STORE: u8 = 8;
/// Gave up waiting for the store lock.
pub const LOCK_TIMEOUT: u8 = 9;
/// Monthly token budget used up.
pub const BUDGET: u8 = 10;
/// The issuer URL leads nowhere (404 at discovery, unknown host, another issuer's name).
pub const WRONG_ISSUER: u8 = 11;
/// ssh: the signing service's token endpoint refused the API key (401/403).
pub const SSH_KEY_REFUSED: u8 = 20;
/// ssh check: no certificate.
pub const SSH_NO_CERT: u8 = 21;
/// ssh check: expired, not yet valid, or lapsing within --min-valid.
pub const SSH_CERT_EXPIRED: u8 = 22;
/// ssh check: for another key, other principals, or unreadable.
pub const SSH_CERT_MISMATCH: u8 = 23;
/// ssh sign: the certificate the service sent was refused; nothing was written.
pub const SSH_CERT_REFUSED: u8 = 24;
/// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;
/// Terminated (SIGTERM or SIGHUP) while a token was being renewed: the renewal was finished and
/// saved first, the token not printed (128 + SIGTERM).
pub const TERMINATED: u8 = 143;

/// The exit code for a token-core error.
pub fn code_for(e: &Error) -> u8 {
    match e {
        Error::NotLoggedIn { .. } => NOT_LOGGED_IN,
        Error::LoginExpired { .. } => LOGIN_EXPIRED,
        Error::IdpUnreachable { .. } | Error::IdpBadResponse { .. } => IDP_UNAVAILABLE,
        Error::IdpRefused { .. } => IDP_REFUSED,
        Error::Config { .. } => CONFIG,
        Error::WrongIssuer { .. } => WRONG_ISSUER,
        Error::InsecurePermissions { .. } | Error::Store { .. } => STORE,
        Error::LockTimeout { .. } => LOCK_TIMEOUT,
        Error::BudgetExhausted { .. } => BUDGET,
        // A login that was denied, whose code expired, or that could not start.
        Error::Aborted { .. } => OTHER,
        // token_core::Error is non_exhaustive: a kind added later is reported, not hidden.
        _ => OTHER,
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// An error from token-core.
    Core(Error),
    /// The user pressed Ctrl-C.
    Interrupted,
    /// A failure of the CLI itself, with its message (which says what to do) and exit code.
    Message {
        /// What went wrong and what to do.
        message: String,
        /// The exit code.
        code: u8,
    },
    /// Already reported on stdout/stderr; just exit with this code.
    Reported(u8),
}

impl Failure {
    /// A CLI failure with a message.
    pub fn msg(message: impl Into<String>, code: u8) -> Self {
        Failure::Message {
            message: message.into(),
            code,
        }
    }

    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Core(e) => code_for(e),
            Failure::Interrupted => INTERRUPTED,
            Failure::Message { code, .. } => *code,
            Failure::Reported(code) => *code,
        }
    }

    /// True if nothing more needs to be printed.
    pub fn is_reported(&self) -> bool {
        matches!(self, Failure::Reported(_))
    }
}

/// The exit code for an SSH-certificate error.
pub fn ssh_code_for(e: &token_core::ssh::SshError) -> u8 {
    use token_core::ssh::SshError;
    match e {
        SshError::Core(e) => code_for(e),
        SshError::File { .. } => STORE,
        SshError::ApiKeyRefused { .. } => SSH_KEY_REFUSED,
        SshError::TokenRefused { .. } => IDP_REFUSED,
        SshError::Unavailable { .. } | SshError::BadAnswer { .. } => IDP_UNAVAILABLE,
        SshError::CertRefused { .. } => SSH_CERT_REFUSED,
        _ => OTHER,
    }
}

impl From<token_core::ssh::SshError> for Failure {
    fn from(e: token_core::ssh::SshError) -> Self {
        let code = ssh_code_for(&e);
        match e {
            token_core::ssh::SshError::Core(e) => Failure::Core(e),
            e => Failure::msg(e.to_string(), code),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Core(e) => write!(f, "{e}"),
            Failure::Interrupted => {
                write!(
                    f,
                    "interrupted; nothing was changed (run the command again when ready)"
                )
            }
            Failure::Message { message, .. } => f.write_str(message),
            Failure::Reported(code) => write!(f, "exit status {code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn all_errors() -> Vec<(Error, u8)> {
        vec![
            (
                Error::NotLoggedIn {
                    context: "c".into(),
                    path: PathBuf::from("/x"),
                },
                3,
            ),
            (
                Error::LoginExpired {
                    context: "c".into(),
                    reason: "invalid_grant".into(),
                },
                4,
            ),
            (
                Error::IdpUnreachable {
                    url: "u".into(),
                    detail: "timeout".into(),
                },
                5,
            ),
            (
                Error::IdpBadResponse {
                    url: "u".into(),
                    detail: "not JSON".into(),
                },
                5,
            ),
            (
                Error::IdpRefused {
                    url: "u".into(),
                    code: token_core::oauth::OAuthErrorCode::InvalidClient,
                },
                6,
            ),
            (
                Error::Config {
                    path: PathBuf::from("/c").into(),
                    field: "f".into(),
                    message: "m".into(),
                },
                7,
            ),
            (
                Error::InsecurePermissions {
                    path: PathBuf::from("/c"),
                    detail: "d".into(),
                    fix: "chmod 600 /c".into(),
                },
                8,
            ),
            (
                Error::Store {
                    path: PathBuf::from("/c"),
                    detail: "d".into(),
                },
                8,
            ),
            (
                Error::LockTimeout {
                    path: PathBuf::from("/l"),
                    waited: Duration::from_secs(30),
                },
                9,
            ),
            (
                Error::BudgetExhausted {
                    client_id: "svc".into(),
                    limit: 1000,
                },
                10,
            ),
            (
                Error::WrongIssuer {
                    issuer: "https://x".into(),
                    found: "HTTP 404".into(),
                },
                11,
            ),
            (
                Error::Aborted {
                    reason: "denied".into(),
                },
                1,
            ),
        ]
    }

    #[test]
    fn every_error_kind_has_its_documented_code() {
        for (e, want) in all_errors() {
            assert_eq!(code_for(&e), want, "{}", e.kind());
            assert_eq!(Failure::from(e).code(), want);
        }
        assert_eq!(Failure::Interrupted.code(), 130);
        assert_eq!(Failure::msg("x", USAGE).code(), 2);
    }

    #[test]
    fn help_table_lists_every_code() {
        for (_, code) in all_errors() {
            let line = format!("\n  {code:<4} ");
            assert!(crate::cli::EXIT_CODES.contains(&line), "{code} missing");
        }
        for code in [
            OK,
            USAGE,
            INTERRUPTED,
            TERMINATED,
            SSH_KEY_REFUSED,
            SSH_NO_CERT,
            SSH_CERT_EXPIRED,
            SSH_CERT_MISMATCH,
            SSH_CERT_REFUSED,
        ] {
            let line = format!("\n  {code:<4} ");
            assert!(crate::cli::EXIT_CODES.contains(&line), "{code} missing");
        }
    }
}
