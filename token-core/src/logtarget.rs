//! Log targets (`log::Record::target`) shared by token-core and the programs around it, so that
//! a site can route or filter them by name.
//!
//! The SPANK plugin writes every line into Slurm's log as `qlam-auth: <message>`; a record of
//! another target is written `qlam-auth: [<target>] <message>`, so that the security lines can
//! be found with `grep 'qlam-auth: \[qlam-auth::security\]'`.
#![forbid(unsafe_code)]

/// The SPANK plugin's own lines: the prefix of every line it writes into Slurm's log.
pub const PLUGIN: &str = "qlam-auth";

/// Refusals a site admin audits: an issuer outside the allowlist, a grant the site does not
/// allow, a site service account refused to a user, a file or directory with unsafe owner or
/// permissions, a hostile file (a symlink or FIFO where a file must be).
pub const SECURITY: &str = "qlam-auth::security";
