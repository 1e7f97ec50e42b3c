//! The one error type of token-core. Every message says what to do next.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while getting a token. Messages never contain a secret and never
/// contain a response body from a token endpoint.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No credentials are stored for this context: the user must log in.
    NotLoggedIn {
        /// The qsh context.
        context: String,
        /// Where the credentials file was expected.
        path: PathBuf,
    },
    /// The stored login can no longer be used (refresh token expired, revoked or missing).
    LoginExpired {
        /// The qsh context.
        context: String,
        /// Why, in a few words (e.g. the OAuth error code `invalid_grant`).
        reason: String,
    },
    /// The identity provider could not be reached or did not answer in time.
    IdpUnreachable {
        /// The URL that was called.
        url: String,
        /// What failed (connect, TLS, timeout ...).
        detail: String,
    },
    /// The identity provider answered with an OAuth error.
    IdpRefused {
        /// The URL that was called.
        url: String,
        /// The OAuth `error` code, e.g. `invalid_client` (a non-standard code is replaced; the
        /// `error_description` is never kept: IdPs echo what they were sent).
        code: crate::oauth::OAuthErrorCode,
    },
    /// The identity provider answered with something that is not a valid OAuth response.
    IdpBadResponse {
        /// The URL that was called.
        url: String,
        /// What was wrong with it (never the body itself).
        detail: String,
    },
    /// The configured issuer URL does not lead to the identity provider it names: nothing
    /// answers discovery there (HTTP 404, an unknown host), or what answers calls itself by
    /// another issuer. A configuration error, not an outage.
    WrongIssuer {
        /// The configured issuer.
        issuer: String,
        /// What was found there, in a few words (never a response body).
        found: String,
    },
    /// The configuration is missing or wrong.
    Config {
        /// Where the problem is: a file, the environment, the command line.
        path: crate::config::ConfigSource,
        /// The field, as a JSON path, e.g. `contexts[0].auth_providers[1].client_id`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A file or directory has an owner or mode we must refuse.
    InsecurePermissions {
        /// The offending path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
        /// The command that fixes it.
        fix: String,
    },
    /// The credentials store holds something unusable, or could not be read or written.
    Store {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The token could not be handed to the job (per-job directory or file): a node problem.
    Delivery {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Another process held the store lock for longer than we may wait.
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The user interrupted an interactive flow, or the device code expired or was denied.
    Aborted {
        /// Why.
        reason: String,
    },
    /// A monthly budget of token requests would be exceeded.
    BudgetExhausted {
        /// The client id.
        client_id: String,
        /// The limit.
        limit: u64,
    },
}

impl Error {
    /// A short, stable name of the kind of error, for logs and exit codes.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotLoggedIn { .. } => "not_logged_in",
            Error::LoginExpired { .. } => "login_expired",
            Error::IdpUnreachable { .. } => "idp_unreachable",
            Error::IdpRefused { .. } => "idp_refused",
            Error::IdpBadResponse { .. } => "idp_bad_response",
            Error::WrongIssuer { .. } => "wrong_issuer",
            Error::Config { .. } => "bad_config",
            Error::InsecurePermissions { .. } => "insecure_permissions",
            Error::Store { .. } => "store",
            Error::Delivery { .. } => "delivery",
            Error::LockTimeout { .. } => "lock_timeout",
            Error::Aborted { .. } => "aborted",
            Error::BudgetExhausted { .. } => "budget_exhausted",
        }
    }

    /// True when the user (not the site, not the network) must act: log in again.
    pub fn needs_login(&self) -> bool {
        matches!(self, Error::NotLoggedIn { .. } | Error::LoginExpired { .. })
    }

    pub(crate) fn config(
        path: impl Into<crate::config::ConfigSource>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            path: path.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn store(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Store {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn store_io(path: impl Into<PathBuf>, what: &str, err: &std::io::Error) -> Self {
        Error::Store {
            path: path.into(),
            detail: format!("{what}: {err}"),
        }
    }
}

fn login_hint(context: &str) -> String {
    format!("run `qlam-auth login --context {context}` (or `qsh auth login`)")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotLoggedIn { context, path } => write!(
                f,
                "not logged in for context '{context}' (no credentials at {}): {}",
                path.display(),
                login_hint(context)
            ),
            Error::LoginExpired { context, reason } => write!(
                f,
                "the login for context '{context}' has expired or was revoked ({reason}): {}",
                login_hint(context)
            ),
            Error::IdpUnreachable { url, detail } => write!(
                f,
                "the identity provider at {url} could not be reached ({detail}); check the network \
                 and the issuer URL, then try again"
            ),
            Error::IdpRefused { url, code } => {
                write!(
                    f,
                    "the identity provider at {url} refused the request: {code}"
                )?;
                use crate::oauth::OAuthErrorCode as C;
                match code {
                    C::InvalidClient | C::UnauthorizedClient => {
                        write!(f, "; check client_id and client_secret in the qsh config")
                    }
                    C::InvalidTarget | C::InvalidScope => {
                        write!(f, "; check audience and scope in the qsh config")
                    }
                    _ => Ok(()),
                }
            }
            Error::IdpBadResponse { url, detail } => write!(
                f,
                "the identity provider at {url} sent an invalid answer ({detail}); it may be down \
                 or behind a proxy: try again later or ask your site admins"
            ),
            Error::WrongIssuer { issuer, found } => write!(
                f,
                "the issuer URL {issuer} is wrong: {found}; check it with your site admins (the \
                 URL must be the identity provider's issuer, where \
                 {issuer}/.well-known/openid-configuration answers), then fix it with \
                 `qlam-auth config init --issuer URL --client-id ID` (or in the site file)"
            ),
            Error::Config {
                path,
                field,
                message,
            } => {
                write!(f, "bad configuration in {}", path.display())?;
                if !field.is_empty() {
                    write!(f, " at {field}")?;
                }
                write!(f, ": {message}")
            }
            Error::InsecurePermissions { path, detail, fix } => {
                write!(
                    f,
                    "refusing {}: {detail}; fix it with: {fix}",
                    path.display()
                )
            }
            Error::Store { path, detail } => write!(
                f,
                "credentials store problem at {}: {detail}; if the file is damaged, log in again \
                 with `qlam-auth login`",
                path.display()
            ),
            Error::Delivery { path, detail } => write!(
                f,
                "cannot hand the token to the job at {}: {detail}; this is a problem of the node, \
                 not of your login: tell your site admins (docs/admin.md, token_dir)",
                path.display()
            ),
            Error::LockTimeout { path, waited } => write!(
                f,
                "gave up after {:.1} s waiting for the credentials lock {} (another process is \
                 refreshing the token, or hangs); try again, and check `qlam-auth doctor` if it \
                 persists",
                waited.as_secs_f64(),
                path.display()
            ),
            Error::Aborted { reason } => write!(f, "login aborted: {reason}"),
            Error::BudgetExhausted { client_id, limit } => write!(
                f,
                "the monthly budget of {limit} token requests for client '{client_id}' is used up; \
                 wait for next month or raise the budget"
            ),
        }
    }
}

impl std::error::Error for Error {}
