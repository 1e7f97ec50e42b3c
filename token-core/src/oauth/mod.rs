//! OAuth 2.0 grants, to the letter of the RFCs, over [`crate::http::HttpClient`].
//!
//! One concern per module:
//! * `discovery`: OpenID Connect Discovery, checked against the issuer, cached per process;
//! * `client`: [`OAuthClient`], client authentication ([`ClientAuth`], `private_key_jwt`, a
//!   second secret during a rotation), the audience parameter ([`AudienceParam`]), deadlines;
//! * `grants`: refresh (RFC 6749 §6, with rotation), client credentials (§4.4), token exchange
//!   (RFC 8693), revocation (RFC 7009), userinfo;
//! * [`device`]: RFC 8628 device authorization grant;
//! * [`pkce`]: RFC 6749 authorization code + RFC 7636 PKCE with an RFC 8252 loopback redirect;
//! * `retry`: which answers may be followed by the same request (never a spent credential);
//! * `response`: serde models of the IdP's answers (token, device, discovery, error);
//! * `json`: reading an answer into its model, naming the field at fault, never the value;
//! * `error`: error answers, classified by their `error` field only.
//!
//! Bodies are never logged or carried in errors (an IdP may echo what it was sent).

mod client;
pub mod device;
mod discovery;
mod error;
#[cfg(test)]
pub(crate) mod fixtures;
mod form;
mod grants;
mod json;
pub mod pkce;
mod response;
mod retry;

pub use client::{
    AUDIENCE_PARAM_VAR, AudienceParam, CLIENT_AUTH_METHOD_VAR, ClientAuth, OAuthClient,
};
pub use discovery::Discovery;
pub use error::OAuthErrorCode;
pub use form::{percent_decode, percent_encode};
pub use response::{MAX_EXPIRES_IN, parse_token_response};
