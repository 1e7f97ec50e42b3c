//! The local files: the site file, the config and its effective settings, the config and
//! credentials directories.

use super::report::{Check, Level, check};
use crate::commands;
use token_core::config::{Config, ProviderConfig};
use token_core::fsutil::{self, Policy};
use token_core::paths::QshPaths;

pub fn check_config(
    paths: &QshPaths,
    context: Option<&str>,
    checks: &mut Vec<Check>,
) -> Option<ProviderConfig> {
    let site = match token_core::site::Site::load(commands::site_file()) {
        Ok(Some(site)) => {
            checks.push(check(
                Level::Info,
                "site file",
                format!(
                    "{}: {} context(s), default {}, allowed issuers {}, automatic injection {}",
                    site.path.display(),
                    site.contexts.len(),
                    site.default_context.as_deref().unwrap_or("none"),
                    site.issuers
                        .as_ref()
                        .map_or("not set".to_owned(), |i| i.join(", ")),
                    if site.inject.automatic { "on" } else { "off" }
                ),
            ));
            Some(site)
        }
        Ok(None) => {
            checks.push(check(
                Level::Info,
                "site file",
                format!("{}: none (not needed)", commands::site_file().display()),
            ));
            None
        }
        Err(e) => {
            checks.push(Check::from_error("site file", &e));
            None
        }
    };
    let config = match Config::load_with_site(paths, site)
        .map(|c| c.with_http_loopback(super::super::http_loopback()))
    {
        Ok(c) => {
            if let Ok(rows) = commands::config::effective_settings(&c, context) {
                let text: Vec<String> = rows
                    .iter()
                    .map(|(k, v, o)| format!("{k} {v} ({})", o.as_str()))
                    .collect();
                checks.push(check(Level::Info, "settings", text.join(", ")));
            }
            Ok(c)
        }
        Err(e) => Err(e),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::from_error("config", &e));
            return None;
        }
    };
    match config.provider_with_env(context, &super::super::env) {
        Ok(p) => {
            checks.push(check(
                Level::Ok,
                "config",
                format!(
                    "{}: context '{}' uses provider '{}' ({}) at {}, client '{}'",
                    p.config_path.display(),
                    p.context,
                    p.name,
                    p.grant_type.as_str(),
                    p.issuer,
                    p.client_id
                ),
            ));
            if !p.grant_type.is_user_flow()
                && let Err(e) = p.resolve_secret()
            {
                checks.push(Check::from_error("client secret", &e));
            }
            Some(p)
        }
        Err(e) => {
            checks.push(Check::from_error("config", &e));
            None
        }
    }
}

pub fn check_dirs(paths: &QshPaths, checks: &mut Vec<Check>) {
    let config_dir_policy = Policy::CONFIG_DIR;
    for (what, dir, policy) in [
        ("config directory", &paths.config_dir, config_dir_policy),
        (
            "credentials directory",
            &paths.credentials_dir,
            Policy::PRIVATE,
        ),
    ] {
        checks.push(match fsutil::open_dir(dir, policy) {
            Ok(Some(_)) => check(
                Level::Ok,
                what,
                format!("{} is yours and not open to others", dir.display()),
            ),
            Ok(None) => check(
                Level::Info,
                what,
                format!(
                    "{} does not exist yet (the first login creates it)",
                    dir.display()
                ),
            ),
            Err(e) => Check::from_error(what, &e),
        });
    }
}
