//! `qlam-auth logout`: revoke the refresh token and delete the stored login; if revocation
//! fails, keep the login (the token stays valid at the IdP) unless `--local`.

use super::select;
use crate::cli::LogoutArgs;
use crate::exit::Failure;
use crate::ui;
use token_core::broker::Revocation;

/// Runs `logout`.
pub fn run(args: &LogoutArgs) -> Result<(), Failure> {
    let sel = select(args.context.as_deref())?;
    let path = sel.broker.credentials_path();
    let outcome = sel.broker.logout(!args.no_revoke)?;
    let removed = outcome.removed;
    let mut revoked = "";
    match outcome.revocation {
        Revocation::Failed(e) => {
            let code = crate::exit::code_for(&e);
            return Err(Failure::msg(
                format!(
                    "could not revoke the login at the identity provider ({e}); the credentials \
                     in {} are kept, because the refresh token is still valid there: run \
                     `qlam-auth logout` again when the identity provider is reachable, or \
                     `qlam-auth logout --local` to delete them here only",
                    path.display()
                ),
                if code == crate::exit::OK {
                    crate::exit::OTHER
                } else {
                    code
                },
            ));
        }
        Revocation::NotSupported => {
            revoked = " (the identity provider offers no revocation: the refresh token stays valid there until it expires)";
        }
        Revocation::Revoked => revoked = " and revoked the refresh token at the identity provider",
        _ if args.no_revoke => revoked = " (not revoked at the identity provider: --no-revoke)",
        _ => {}
    }
    let ctx = &sel.provider.context;
    let text = if removed {
        format!(
            "Logged out of context '{ctx}': deleted {}{revoked}.\n",
            path.display()
        )
    } else {
        format!(
            "No login was stored for context '{ctx}' ({} does not exist); nothing to do.\n",
            path.display()
        )
    };
    ui::say(&text);
    Ok(())
}
