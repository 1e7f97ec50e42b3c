//! `qlam-auth config show`: each effective setting and where it comes from.

use crate::cli::ShowArgs;
use crate::exit::{self, Failure};
use crate::ui;
use serde_json::{Map, json};
use token_core::config::Config;

/// Each effective setting of `context` (default: the current one), with where it comes from
/// (`config show` and `doctor`).
pub fn effective_settings(
    config: &Config,
    context: Option<&str>,
) -> Result<Vec<(&'static str, String, token_core::config::Origin)>, Failure> {
    use token_core::config::Origin;
    let (name, name_origin) = match context.filter(|c| !c.is_empty()) {
        Some(c) => (Some(c.to_owned()), Some(Origin::CommandLine)),
        None => (
            config.current_context().map(str::to_owned),
            config.current_context_origin(),
        ),
    };
    let provider = config.provider_with_env(name.as_deref(), &crate::commands::env)?;
    let ctx_origin = if config.user_has_context(&provider.context) {
        Origin::UserConfig
    } else {
        Origin::SiteFile
    };
    // An unset scope is QLAM Core's default for logins.
    let scope_origin = if provider.scope.as_deref() == Some(token_core::config::DEFAULT_USER_SCOPE)
    {
        Origin::Default
    } else {
        ctx_origin
    };
    Ok(vec![
        (
            "context",
            provider.context.clone(),
            name_origin.unwrap_or(Origin::Default),
        ),
        ("provider", provider.name.clone(), ctx_origin),
        ("issuer", provider.issuer.clone(), ctx_origin),
        ("client_id", provider.client_id.clone(), ctx_origin),
        ("grant", provider.grant_type.as_str().to_owned(), ctx_origin),
        (
            "audience",
            provider.audience.clone().unwrap_or_else(|| "-".into()),
            ctx_origin,
        ),
        (
            "tenant",
            provider.tenant.clone().unwrap_or_else(|| "-".into()),
            ctx_origin,
        ),
        (
            "scope",
            provider.scope.clone().unwrap_or_else(|| "-".into()),
            scope_origin,
        ),
    ])
}

/// Runs `config show`.
pub fn show(args: &ShowArgs) -> Result<(), Failure> {
    let paths = crate::commands::qsh_paths()?;
    let site_path = crate::commands::site_file();
    let config = crate::commands::load_config(&paths)?;
    let rows = effective_settings(&config, args.context.as_deref())?;
    let present = |b: bool| if b { "present" } else { "absent" };
    let site_present = config.site().is_some();
    if args.json {
        let mut settings = Map::new();
        for (k, v, o) in &rows {
            settings.insert((*k).to_owned(), json!({"value": v, "origin": o.as_str()}));
        }
        let v = json!({
            "site_file": {"path": site_path.display().to_string(), "present": site_present},
            "user_config": {"path": paths.config_file.display().to_string(),
                            "present": config.user_file_exists()},
            "contexts": config.context_names(),
            "settings": settings,
        });
        let text = serde_json::to_string_pretty(&v)
            .map_err(|e| Failure::msg(e.to_string(), exit::OTHER))?;
        ui::say(&format!("{text}\n"));
        return Ok(());
    }
    let mut s = format!(
        "site file:    {} ({})\nuser config:  {} ({})\ncontexts:     {}\n\n",
        site_path.display(),
        present(site_present),
        paths.config_file.display(),
        present(config.user_file_exists()),
        config.context_names().join(", ")
    );
    for (k, v, o) in &rows {
        s.push_str(&format!("  {k:<10} {v:<40} ({})\n", o.as_str()));
    }
    s.push_str("\nPrecedence: command line > user config > site file.\n");
    ui::say(&s);
    Ok(())
}
