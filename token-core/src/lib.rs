//! token-core: the heart of qlam-auth, with no Slurm in it.
//!
//! * [`paths`] and [`config`] read `~/.qsh` exactly as QLAM Core 0.10 does.
//! * [`store`] reads and writes QLAM Core's v1 credentials files: locked, atomic, durable and
//!   permission-checked; [`lock`] is the per-credentials-file lock.
//! * [`oauth`] speaks the OAuth 2.0 grants (device code, authorization code + PKCE, refresh with
//!   rotation, client credentials, token exchange, revocation) over [`http`], a blocking client
//!   that never starts a thread.
//! * [`broker`] is the single-flight "give me a valid access token" that every front end uses.
//! * [`deliver`] writes tokens into private per-job files; [`exchange`] is the site policy for
//!   narrow per-job tokens (RFC 8693 token exchange).
//! * [`site`] is the site file (`/etc/qlam-auth/site.json`): default contexts, allowed issuers,
//!   automatic injection.
//! * [`m2m`], [`budget`], [`assertion`] and [`tokensource`]: machine-to-machine tokens (settings,
//!   environment mode, monthly budgets, `private_key_jwt`, and a token source for Rust services).
//!
//! Secrets live in [`secret::Secret`], which never prints and zeroizes on drop.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod assertion;
pub mod broker;
pub mod budget;
pub mod config;
pub mod deliver;
pub mod digest;
mod error;
pub mod exchange;
pub mod faultpoint;
pub mod fsutil;
pub mod http;
pub mod jobcache;
pub mod json;
pub mod jwt;
pub mod lock;
pub mod logsafe;
pub mod logtarget;
pub mod m2m;
pub mod oauth;
pub mod paths;
pub mod renew;
pub mod secret;
pub mod settings;
pub mod site;
pub mod ssh;
pub mod store;
pub mod time;
pub mod tokensource;

pub use error::{Error, Result};
