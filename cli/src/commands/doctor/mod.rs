//! `qlam-auth doctor`: check everything a login and the Slurm plugin depend on, and say how to
//! fix what is wrong. One module per concern: the local files (`files`), the login and the
//! identity provider (`idp`), the filesystem's locks (`mounts`), the Slurm plugin
//! (`plugstack`); `report` holds the result type and prints it.

mod files;
mod idp;
mod mounts;
mod plugstack;
mod report;

use super::http_settings;
use crate::cli::DoctorArgs;
use crate::exit::Failure;
use report::{Check, Level, check};
use token_core::broker::Broker;

/// Runs `doctor`.
pub fn run(args: &DoctorArgs) -> Result<(), Failure> {
    let mut checks = Vec::new();
    let paths = super::qsh_paths()?;
    let provider = files::check_config(&paths, args.context.as_deref(), &mut checks);
    files::check_dirs(&paths, &mut checks);
    match &provider {
        Some(p) => match Broker::new(&paths, p.clone(), &http_settings(), &super::env) {
            Ok(broker) => {
                idp::check_login(&broker, &mut checks);
                idp::check_idp(&broker, &mut checks);
                idp::check_lock(&broker, &mut checks);
            }
            Err(e) => checks.push(Check::from_error("issuer", &e)),
        },
        None => checks.push(check(
            Level::Info,
            "identity provider",
            "skipped: no usable provider in the config",
        )),
    }
    mounts::check_filesystem(&paths.credentials_dir, &mut checks);
    checks.push(plugstack::check_plugstack());
    report::print(
        &checks,
        provider.as_ref().map(|p| p.context.as_str()),
        args.json,
    )
}
