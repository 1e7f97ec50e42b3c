//! qlam-spank: the Slurm SPANK plugin behind `sbatch --qlam-auth`.
//!
//! A job submitted with `--qlam-auth[=CONTEXT]` gets a valid OAuth access token, obtained on the
//! compute node from the submitting user's qlam-auth / qsh login, in a private per-job file
//! (`QLAM_TOKEN_FILE`, `BEARER_TOKEN_FILE`) and, unless the site says `env_token=no`, in
//! `QLAM_ACCESS_TOKEN`.
//!
//! Layout, in layers (each uses only those below it):
//! * [`ffi`]: the symbols Slurm loads, a panic-catching dispatcher, [`ffi::SpankHandle`] (the
//!   safe wrapper of a `spank_t`) and the log bridge into Slurm's log.
//! * [`hooks`]: the policy, one module per concern, written against the [`hooks::Host`] and
//!   [`backend::Backend`] traits so it is tested without Slurm and without an IdP.
//! * [`backend`]: the [`backend::Backend`] trait and [`backend::TokenCore`], its implementation:
//!   the only module that calls token-core (config, store, OAuth, job files, site accounts).
//! * [`args`]: the plugin arguments from `plugstack.conf`.
//! * [`users`]: [`users::Uid`], [`users::Gid`] and the password/group database lookups.
//! * [`spawn`]: starts the token renewer (`qlam-auth job-renewer`) detached, as the job's user.
//! * [`sys`]: the bindgen binding of `spank.h` (generated).
//! * [`logtarget`]: the log targets (token-core's constants).
//!
//! Unsafe code is denied crate-wide and allowed, with a reason, on `sys`, `ffi`, `users` and
//! `spawn` only; every other module forbids it.
#![deny(unsafe_code)]

pub mod args;
pub mod backend;
#[allow(unsafe_code)] // The exported C ABI of a SPANK plugin and the calls into Slurm.
pub mod ffi;
pub mod hooks;
#[allow(unsafe_code)] // fork/exec of the token renewer: async-signal-safe calls in the child.
pub mod spawn;
#[allow(unsafe_code)] // bindgen output: extern declarations of Slurm's C functions.
pub mod sys;
#[allow(unsafe_code)] // getpwuid_r, getgrnam_r, getgrouplist: the password and group databases.
pub mod users;

pub use token_core::logtarget;

/// The plugin's name as Slurm knows it (`plugin_name`).
///
/// Slurm builds the environment variable that carries an option into the job from it, replacing
/// every character that is not alphanumeric with `_`:
/// `SLURM_SPANK__SLURM_SPANK_OPTION_<plugin_name>_<option>`. An underscore keeps that name the
/// same with or without the replacement.
pub const PLUGIN_NAME: &str = "qlam_auth";

/// The option the plugin adds to sbatch, salloc and srun.
pub const OPTION_NAME: &str = "qlam-auth";

/// The job environment variable through which the option reaches the remote side when the job
/// was submitted with `--export=NONE` (or `--export=VARS`); the value is the option's argument,
/// or the literal `(null)` for the bare flag.
pub const OPTION_ENV: &str = "SLURM_SPANK__SLURM_SPANK_OPTION_qlam_auth_qlam_auth";
