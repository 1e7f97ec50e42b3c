//! `qlam-auth use-context`, and copying a site context into the user's config.json.

use super::{render, write_config};
use crate::exit::Failure;
use crate::ui;
use token_core::config::{Config, QshConfig};
use token_core::paths::QshPaths;

/// Sets `current_context` to `context` if it is unset; true if it did.
pub(super) fn default_current(root: &mut QshConfig, context: &str) -> bool {
    let unset = root.current().is_none();
    if unset {
        root.current_context = Some(Some(context.to_owned()));
    }
    unset
}

/// Copies the site's context `context` into the user's config.json (created if missing) in QLAM
/// Core's format, so that QLAM Shell and QLAM Core find the login that qlam-auth stores; makes it
/// the current context if none is set. Returns the file written, or `None` if the user's file
/// already defines that context (it wins over the site's).
pub fn adopt_site_context(
    paths: &QshPaths,
    config: &Config,
    context: &str,
) -> Result<Option<std::path::PathBuf>, Failure> {
    if config.user_has_context(context) {
        return Ok(None);
    }
    let Some(site_ctx) = config.site().and_then(|s| s.context(context)) else {
        return Ok(None);
    };
    let mut root = if config.user_file_exists() {
        config.model().clone()
    } else {
        Config::empty(&paths.config_file).model().clone()
    };
    root.contexts.push(site_ctx.to_qsh_context());
    default_current(&mut root, context);
    let bytes = render(&root);
    Config::from_bytes(&paths.config_file, &bytes)?
        .with_http_loopback(crate::commands::http_loopback())
        .provider_with_env(Some(context), &crate::commands::env)?;
    write_config(&paths.config_file, &bytes)?;
    Ok(Some(paths.config_file.clone()))
}

/// Runs `use-context NAME`.
pub fn use_context(name: &str) -> Result<(), Failure> {
    let paths = crate::commands::qsh_paths()?;
    let config = crate::commands::load_config(&paths)?;
    // Says "did you mean" for a typo.
    config.provider_with_env(Some(name), &crate::commands::env)?;
    let adopted = adopt_site_context(&paths, &config, name)?;
    let config = crate::commands::load_config(&paths)?;
    if config.user_file_exists() {
        let mut root = config.model().clone();
        root.current_context = Some(Some(name.to_owned()));
        let bytes = render(&root);
        Config::from_bytes(&paths.config_file, &bytes)?
            .with_http_loopback(crate::commands::http_loopback());
        write_config(&paths.config_file, &bytes)?;
    }
    let mut s = format!(
        "The current context is now '{name}' ({}).\n",
        paths.config_file.display()
    );
    if adopted.is_some() {
        s.push_str(&format!(
            "  (copied from the site file {})\n",
            crate::commands::site_file().display()
        ));
    }
    ui::say(&s);
    Ok(())
}
