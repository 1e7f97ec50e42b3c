//! `qlam-auth config init`: add or update one context's oauth provider in config.json, in QLAM
//! Core's schema, keeping everything else in the file.

use super::context::default_current;
use super::{render, write_config};
use crate::cli::{GrantArg, InitArgs};
use crate::exit::{self, Failure};
use crate::ui;
use token_core::config::model::{AuthProvider, Context, Defaults, ProviderEntry, value};
use token_core::config::{Config, ConfigSource, QshConfig, normalize_issuer};

/// What [`merge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// A new context was added (else an existing one was updated).
    pub new_context: bool,
    /// A new provider was added to the context (else one was updated).
    pub new_provider: bool,
    /// `current_context` was set to this context.
    pub made_current: bool,
    /// The current context, after the merge.
    pub current: Option<String>,
}

fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks the arguments and returns the provider fields they set. Options that were not given
/// are absent (an existing provider keeps its value; a new one gets `null`); an empty value
/// (`--audience ''`) becomes `null`.
pub fn provider_entry(args: &InitArgs) -> Result<AuthProvider, String> {
    let issuer = normalize_issuer(&args.issuer, crate::commands::http_loopback())
        .map_err(|m| format!("--issuer: {m}"))?;
    let non_empty = |flag: &str, v: &str| {
        if v.trim().is_empty() {
            Err(format!("{flag} must not be empty"))
        } else {
            Ok(())
        }
    };
    non_empty("--client-id", &args.client_id)?;
    non_empty("--context", &args.context)?;
    non_empty("--provider-name", &args.provider_name)?;
    if let Some(var) = args.client_secret_env.as_deref().filter(|v| !v.is_empty())
        && !is_env_var_name(var)
    {
        return Err(format!(
            "--client-secret-env takes the NAME of an environment variable (e.g. QLAM_CLIENT_SECRET), \
             not '{var}'; never put the secret itself on the command line"
        ));
    }
    let set = |v: &str| Some(Some(v.to_owned()));
    // Given: set, or `null` when empty; not given: absent.
    let or_null = |v: &Option<String>, f: &dyn Fn(&str) -> String| {
        v.as_deref().map(|v| (!v.is_empty()).then(|| f(v)))
    };
    Ok(AuthProvider {
        provider: set("oauth"),
        name: set(&args.provider_name),
        auth_base_url: set(&issuer),
        client_id: set(&args.client_id),
        grant_type: args.grant.map(|g| Some(g.as_str().to_owned())),
        client_secret: or_null(&args.client_secret_env, &|v| format!("env:{v}")),
        scope: or_null(&args.scope, &str::to_owned),
        audience: or_null(&args.audience, &str::to_owned),
        tenant: or_null(&args.tenant, &str::to_owned),
        ..AuthProvider::default()
    })
}

/// A new provider: every field QLAM Core knows, `null` where not given.
fn fresh_provider(given: AuthProvider) -> ProviderEntry {
    let mut p = ProviderEntry::from(AuthProvider {
        client_secret: Some(None),
        scope: Some(None),
        audience: Some(None),
        tenant: Some(None),
        grant_type: Some(Some(GrantArg::DeviceCode.as_str().to_owned())),
        ..AuthProvider::default()
    });
    p.overlay(given);
    p
}

/// Adds or updates `args.context` and its provider in `root` (a parsed config.json), keeping
/// every other context, provider and field.
pub fn merge(root: &mut QshConfig, args: &InitArgs) -> Result<Merged, String> {
    let entry = provider_entry(args)?;
    let pos = root.contexts.iter().position(|c| c.name == args.context);
    let new_context = pos.is_none();
    let idx = match pos {
        Some(i) => i,
        None => {
            root.contexts.push(Context {
                name: args.context.clone(),
                qpu: Some(Some(args.qpu.clone().unwrap_or_else(|| "default".into()))),
                defaults: Some(Some(Defaults::default())),
                auth_providers: Some(Some(Vec::new())),
                ..Context::default()
            });
            root.contexts.len() - 1
        }
    };
    let ctx = &mut root.contexts[idx];
    if let Some(q) = &args.qpu {
        ctx.qpu = Some(Some(q.clone()));
    }
    ctx.defaults
        .get_or_insert(None)
        .get_or_insert_with(Defaults::default)
        .auth_provider = Some(Some(args.provider_name.clone()));
    let providers = ctx
        .auth_providers
        .get_or_insert(None)
        .get_or_insert_with(Vec::new);
    let pidx = providers
        .iter()
        .position(|p| p.name() == Some(args.provider_name.as_str()));
    let new_provider = pidx.is_none();
    let at = |j: usize| format!("contexts[{idx}].auth_providers[{j}]");
    match pidx {
        Some(j) => {
            let p = &mut providers[j];
            let kind = p.kind().unwrap_or("?");
            if kind != "oauth" {
                return Err(format!(
                    "context '{}' already has a '{kind}' provider named '{}': choose another \
                     --provider-name",
                    args.context, args.provider_name
                ));
            }
            if !p.0.is_object() {
                return Err("a provider entry is not an object".into());
            }
            p.overlay(entry);
            check_secret(p, &at(j))?;
        }
        None => {
            let p = fresh_provider(entry);
            check_secret(&p, &at(providers.len()))?;
            providers.push(p);
        }
    }
    let made_current = default_current(root, &args.context);
    Ok(Merged {
        new_context,
        new_provider,
        made_current,
        current: root.current().map(str::to_owned),
    })
}

fn check_secret(p: &ProviderEntry, at: &str) -> Result<(), String> {
    let p = p
        .typed(&ConfigSource::CommandLine, at)
        .map_err(|e| match e {
            token_core::Error::Config { field, message, .. } => format!("{field} {message}"),
            other => other.to_string(),
        })?;
    if value(&p.grant_type).map(String::as_str) == Some(GrantArg::ClientCredentials.as_str())
        && value(&p.client_secret).is_none()
    {
        return Err(
            "--grant client_credentials needs --client-secret-env VAR (the variable that will hold \
             the client secret)"
                .into(),
        );
    }
    Ok(())
}

/// Runs `config init`.
pub fn init(args: &InitArgs) -> Result<(), Failure> {
    let paths = crate::commands::qsh_paths()?;
    let exists = paths.config_file.try_exists().map_err(|e| {
        Failure::msg(
            format!("cannot look at {}: {e}", paths.config_file.display()),
            exit::CONFIG,
        )
    })?;
    let mut config = if exists {
        Config::load(&paths)?.with_http_loopback(crate::commands::http_loopback())
    } else {
        Config::empty(&paths.config_file)
    };
    let merged = merge(config.model_mut(), args).map_err(|m| {
        let code = if m.starts_with("--") {
            exit::USAGE
        } else {
            exit::CONFIG
        };
        let m = if code == exit::CONFIG {
            format!(
                "{}: {m}; fix the file by hand or move it away and run this again",
                paths.config_file.display()
            )
        } else {
            m
        };
        Failure::msg(m, code)
    })?;
    let bytes = render(config.model());
    // Read it back as token-core (and so the plugin and `token`) will, before writing anything.
    let check = Config::from_bytes(&paths.config_file, &bytes)?
        .with_http_loopback(crate::commands::http_loopback());
    let provider = check.provider_with_env(Some(&args.context), &crate::commands::env)?;
    if provider.grant_type == token_core::config::GrantType::DeviceCode && provider.tenant.is_none()
    {
        ui::warn(
            "QLAM Shell (qsh) and QLAM Core refuse a device_code provider without a tenant, even \
             just to read the login: pass --tenant ORG if you use them with this context",
        );
    }
    if !args.offline {
        // The issuer must be an identity provider that calls itself by that name.
        let broker = token_core::broker::Broker::new(
            &paths,
            provider.clone(),
            &crate::commands::http_settings(),
            &crate::commands::env,
        )?;
        broker.oauth()?.discovery()?;
    }
    write_config(&paths.config_file, &bytes)?;
    let mut s = format!(
        "{} context '{}' in {}:\n  provider '{}' ({}) at {}, client '{}'\n",
        if merged.new_context {
            "Added"
        } else {
            "Updated"
        },
        args.context,
        paths.config_file.display(),
        provider.name,
        provider.grant_type.as_str(),
        provider.issuer,
        provider.client_id
    );
    if merged.made_current {
        s.push_str(&format!(
            "  '{}' is now the current context\n",
            args.context
        ));
    } else if merged.current.as_deref() != Some(args.context.as_str()) {
        s.push_str(&format!(
            "  the current context stays '{}': use --context {} with the other commands, or `qlam-auth use-context {}`\n",
            merged.current.as_deref().unwrap_or("?"),
            args.context,
            args.context
        ));
    }
    if provider.grant_type.is_user_flow() {
        s.push_str(&format!(
            "Next: qlam-auth login --context {}\n",
            args.context
        ));
    } else {
        s.push_str(&format!(
            "Next: export {} and run qlam-auth token --context {}\n",
            args.client_secret_env
                .as_deref()
                .unwrap_or("THE_SECRET_VARIABLE"),
            args.context
        ));
    }
    ui::say(&s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, ConfigCommand};
    use clap::Parser;
    use serde_json::{Value, json};
    use std::path::Path;

    /// The config as JSON, as the file holds it.
    trait ModelJson {
        fn model_json(&self) -> Value;
    }

    impl ModelJson for Config {
        fn model_json(&self) -> Value {
            serde_json::to_value(self.model()).unwrap()
        }
    }

    /// [`super::merge`] on a config given as JSON (as the file holds it).
    fn merge(root: &mut Value, a: &InitArgs) -> Result<Merged, String> {
        let mut m: QshConfig = serde_json::from_value(root.clone()).map_err(|e| e.to_string())?;
        let r = super::merge(&mut m, a)?;
        *root = serde_json::to_value(&m).unwrap();
        Ok(r)
    }

    fn render(root: &Value) -> Result<Vec<u8>, String> {
        let m: QshConfig = serde_json::from_value(root.clone()).map_err(|e| e.to_string())?;
        Ok(super::render(&m))
    }

    fn args(extra: &[&str]) -> InitArgs {
        let mut argv = vec![
            "qlam-auth",
            "config",
            "init",
            "--issuer",
            "idp.example:8443/",
            "--client-id",
            "qlam-cli",
        ];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).command {
            Command::Config(ConfigCommand::Init(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_file_has_qlam_core_shape() {
        let mut root = Config::empty(Path::new("/t/config.json")).model_json();
        let m = merge(
            &mut root,
            &args(&["--audience", "https://api.example", "--tenant", "t1"]),
        )
        .unwrap();
        assert!(m.new_context && m.new_provider && m.made_current);
        let want = json!({
            "current_context": "default",
            "contexts": [{
                "name": "default", "qpu": "default",
                "defaults": {"auth_provider": "qlam"},
                "auth_providers": [{
                    "provider": "oauth", "name": "qlam",
                    "auth_base_url": "https://idp.example:8443",
                    "client_id": "qlam-cli", "client_secret": null,
                    "grant_type": "device_code", "scope": null,
                    "audience": "https://api.example", "tenant": "t1"}]}]
        });
        assert_eq!(root, want);
        // token-core reads back what we wrote.
        let bytes = render(&root).unwrap();
        let cfg = Config::from_bytes(Path::new("/t/config.json"), &bytes).unwrap();
        let p = cfg.provider_with_env(None, &|_| None).unwrap();
        assert_eq!(p.cache_key(), "oauth_default_qlam");
        assert_eq!(p.audience.as_deref(), Some("https://api.example"));
    }

    #[test]
    fn keeps_unknown_fields_and_other_contexts() {
        let mut root = json!({
            "current_context": "prod",
            "telemetry": {"enabled": false},
            "contexts": [
                {"name": "prod", "qpu": "aquila",
                 "defaults": {"api_base_url": "https://api.example", "auth_provider": "quera"},
                 "auth_providers": [
                    {"provider": "basic", "name": "b", "username": "u", "password": "p"},
                    {"provider": "oauth", "name": "quera", "auth_base_url": "https://old.example",
                     "client_id": "old", "client_secret": null, "grant_type": "device_code",
                     "scope": null, "audience": null, "tenant": null}]},
                {"name": "dev", "qpu": "sim", "auth_providers": []}
            ]
        });
        let before = root.clone();
        let m = merge(&mut root, &args(&["--context", "new"])).unwrap();
        assert!(m.new_context && !m.made_current);
        assert_eq!(m.current.as_deref(), Some("prod"));
        assert_eq!(root["telemetry"], before["telemetry"]);
        assert_eq!(root["contexts"][0], before["contexts"][0]);
        assert_eq!(root["contexts"][1], before["contexts"][1]);
        assert_eq!(root["contexts"][2]["name"], "new");
    }

    #[test]
    fn updates_an_existing_context_in_place() {
        let mut root = json!({
            "current_context": "prod",
            "contexts": [
                {"name": "prod", "qpu": "aquila",
                 "defaults": {"api_base_url": "https://api.example", "auth_provider": "b"},
                 "auth_providers": [
                    {"provider": "basic", "name": "b", "username": "u", "password": "p"},
                    {"provider": "oauth", "name": "quera", "auth_base_url": "https://old.example",
                     "client_id": "old", "client_secret": null, "grant_type": "device_code",
                     "scope": null, "audience": "https://api.example", "tenant": null}]}]
        });
        let m = merge(
            &mut root,
            &args(&[
                "--context",
                "prod",
                "--provider-name",
                "quera",
                "--grant",
                "client_credentials",
                "--client-secret-env",
                "SVC_SECRET",
            ]),
        )
        .unwrap();
        assert!(!m.new_context && !m.new_provider && !m.made_current);
        let ctx = &root["contexts"][0];
        assert_eq!(ctx["qpu"], "aquila", "qpu kept when not given");
        assert_eq!(ctx["defaults"]["api_base_url"], "https://api.example");
        assert_eq!(ctx["defaults"]["auth_provider"], "quera");
        assert_eq!(ctx["auth_providers"].as_array().unwrap().len(), 2);
        assert_eq!(ctx["auth_providers"][0]["provider"], "basic");
        let p = &ctx["auth_providers"][1];
        assert_eq!(p["auth_base_url"], "https://idp.example:8443");
        assert_eq!(p["client_id"], "qlam-cli");
        assert_eq!(p["client_secret"], "env:SVC_SECRET");
        assert_eq!(p["grant_type"], "client_credentials");
        assert_eq!(p["audience"], "https://api.example", "not given: kept");
        let bytes = render(&root).unwrap();
        let cfg = Config::from_bytes(Path::new("/t/c.json"), &bytes).unwrap();
        assert_eq!(
            cfg.provider_with_env(None, &|_| None).unwrap().client_id,
            "qlam-cli"
        );
    }

    #[test]
    fn empty_values_clear_fields() {
        let mut root = Config::empty(Path::new("/t/c.json")).model_json();
        merge(
            &mut root,
            &args(&["--audience", "https://a", "--scope", "openid"]),
        )
        .unwrap();
        merge(&mut root, &args(&["--audience", ""])).unwrap();
        let p = &root["contexts"][0]["auth_providers"][0];
        assert_eq!(p["audience"], Value::Null);
        assert_eq!(p["scope"], "openid");
        assert_eq!(p["grant_type"], "device_code");
    }

    #[test]
    fn refuses_bad_arguments_and_name_clashes() {
        let mut root = Config::empty(Path::new("/t/c.json")).model_json();
        let e = merge(&mut root, &args(&["--grant", "client_credentials"])).unwrap_err();
        assert!(e.contains("--client-secret-env"), "{e}");
        let e = merge(&mut root, &args(&["--client-secret-env", "s3cr3t-value!"])).unwrap_err();
        assert!(e.contains("NAME of an environment variable"), "{e}");
        let mut http = args(&[]);
        http.issuer = "http://idp.example".into();
        assert!(merge(&mut root, &http).unwrap_err().contains("plain http"));
        let mut clash = json!({"contexts": [{"name": "default",
            "auth_providers": [{"provider": "basic", "name": "qlam"}]}]});
        let e = merge(&mut clash, &args(&[])).unwrap_err();
        assert!(e.contains("'basic' provider named 'qlam'"), "{e}");
        assert!(merge(&mut json!([]), &args(&[])).is_err());
    }
}
