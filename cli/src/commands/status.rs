//! `qlam-auth status`: who is logged in and for how long, per context, offline.

use super::http_settings;
use crate::cli::StatusArgs;
use crate::exit::{self, Failure};
use crate::ui;
use serde_json::{Value, json};
use std::path::PathBuf;
use token_core::Error;
use token_core::broker::{Broker, LoginSummary};
use token_core::budget;
use token_core::config::{GrantType, ProviderConfig};
use token_core::m2m::{self, BudgetPolicy};
use token_core::paths::QshPaths;
use token_core::time::Timestamp;

/// A login without refresh token that ends within this many seconds gets a warning.
const LAPSE_WARNING_SECS: i64 = 3600;

/// What is known about one context.
#[derive(Debug)]
struct ContextStatus {
    context: String,
    current: bool,
    provider: Option<ProviderConfig>,
    credentials: Option<PathBuf>,
    login: Option<LoginSummary>,
    /// Expiry of a stored access token even when the login as a whole is not usable.
    stored_expiry: Option<Timestamp>,
    error: Option<Error>,
    warnings: Vec<String>,
    /// Machine clients: this month's token requests and the budget.
    budget: Option<BudgetStatus>,
}

/// A machine client's use of its monthly budget.
#[derive(Debug)]
struct BudgetStatus {
    month: String,
    used: u64,
    policy: BudgetPolicy,
    file: PathBuf,
}

impl BudgetStatus {
    fn text(&self) -> String {
        match self.policy.limit {
            Some(limit) => format!(
                "{} of {limit} token requests used in {} ({}%, warning from {}%)",
                self.used,
                self.month,
                self.used * 100 / limit.max(1),
                self.policy.warn_percent
            ),
            None => format!(
                "{} token requests used in {} (no monthly budget set: QLAM_TOKEN_BUDGET or \
                 qlam-auth.json)",
                self.used, self.month
            ),
        }
    }
}

impl ContextStatus {
    fn exit_code(&self) -> u8 {
        self.error.as_ref().map_or(exit::OK, exit::code_for)
    }
}

fn inspect(
    paths: &QshPaths,
    provider: token_core::Result<ProviderConfig>,
    name: &str,
    current: bool,
    now: Timestamp,
) -> ContextStatus {
    let mut st = ContextStatus {
        context: name.to_owned(),
        current,
        provider: None,
        credentials: None,
        login: None,
        stored_expiry: None,
        error: None,
        warnings: Vec::new(),
        budget: None,
    };
    let provider = match provider {
        Ok(p) => p,
        Err(e) => {
            st.error = Some(e);
            return st;
        }
    };
    st.provider = Some(provider.clone());
    let broker = match Broker::new(paths, provider.clone(), &http_settings(), &super::env) {
        Ok(b) => b,
        Err(e) => {
            st.error = Some(e);
            return st;
        }
    };
    st.credentials = Some(broker.credentials_path());
    if provider.grant_type == GrantType::ClientCredentials {
        let policy = broker.settings().budget(&provider.client_id);
        let dir = broker.store().dir();
        match budget::read_usage(dir, &provider.issuer, &provider.client_id) {
            Ok(u) => {
                let b = BudgetStatus {
                    month: budget::month_of(now),
                    used: u.map_or(0, |u| u.requests),
                    policy,
                    file: budget::usage_path(dir, &provider),
                };
                match (policy.limit, policy.warn_at()) {
                    (Some(limit), _) if b.used >= limit => st.warnings.push(format!(
                        "the monthly budget is used up: no new token until next month (cached \
                         tokens still work); raise it with QLAM_TOKEN_BUDGET or in {}",
                        token_core::m2m::SETTINGS_FILE
                    )),
                    (_, Some(at)) if b.used >= at => st.warnings.push(format!(
                        "{}% of the monthly token budget is used",
                        b.used * 100 / policy.limit.unwrap_or(1).max(1)
                    )),
                    _ => {}
                }
                st.budget = Some(b);
            }
            Err(e) => st
                .warnings
                .push(format!("cannot read the token budget file: {e}")),
        }
    }
    match broker.check_login() {
        Ok(l) => {
            let left = l.access_expires_at.map(|e| now.seconds_until(e));
            if provider.grant_type.is_user_flow()
                && !l.has_refresh_token
                && left.is_some_and(|s| s < LAPSE_WARNING_SECS)
            {
                st.warnings.push(format!(
                    "this login lapses {} (no refresh token is stored): run `qlam-auth login \
                     --context {name}` before then",
                    ui::relative(left.unwrap_or(0))
                ));
            }
            st.login = Some(l);
        }
        Err(e) => {
            if let Ok(Some(s)) = broker.store().load(&provider.cache_key()) {
                st.stored_expiry = s.tokens.expires_at();
            }
            st.error = Some(e);
        }
    }
    st
}

fn fix_of(e: &Error) -> Option<String> {
    match e {
        Error::InsecurePermissions { fix, .. } => Some(fix.clone()),
        Error::NotLoggedIn { context, .. } | Error::LoginExpired { context, .. } => {
            Some(format!("qlam-auth login --context {context}"))
        }
        _ => None,
    }
}

fn to_json(st: &ContextStatus, now: Timestamp) -> Value {
    let p = st.provider.as_ref();
    let l = st.login.as_ref();
    let expiry = l.and_then(|l| l.access_expires_at).or(st.stored_expiry);
    json!({
        "context": st.context,
        "current": st.current,
        "provider": p.map(|p| p.name.clone()),
        "issuer": p.map(|p| p.issuer.clone()),
        "client_id": p.map(|p| p.client_id.clone()),
        "grant_type": p.map(|p| p.grant_type.as_str()),
        "logged_in": st.error.is_none(),
        "subject": l.and_then(|l| l.subject.clone()),
        "scope": l.and_then(|l| l.scope.clone()),
        "access_token_expires_at": expiry.map(|e| e.to_isoformat()),
        "access_token_expires_in_seconds": expiry.map(|e| now.seconds_until(e)),
        "refresh_token": l.map(|l| l.has_refresh_token),
        "access_token_lifetime_seconds": l.and_then(|l| l.lifetime).map(|d| d.as_secs()),
        "credentials_path": st.credentials.as_ref().map(|p| p.display().to_string()),
        "error": st.error.as_ref().map(|e| json!({
            "kind": e.kind(),
            "message": e.to_string(),
            "exit_code": exit::code_for(e),
            "fix": fix_of(e),
        })),
        "warnings": st.warnings,
        "token_budget": st.budget.as_ref().map(|b| json!({
            "month": b.month,
            "used": b.used,
            "limit": b.policy.limit,
            "warn_percent": b.policy.warn_percent,
            "file": b.file.display().to_string(),
        })),
    })
}

fn expiry_text(now: Timestamp, e: Timestamp) -> String {
    let left = now.seconds_until(e);
    let verb = if left > 0 { "expires" } else { "expired" };
    format!("{verb} {} ({})", ui::relative(left), ui::utc(e))
}

fn to_text(st: &ContextStatus, now: Timestamp) -> String {
    let mut s = format!(
        "Context '{}'{}\n",
        st.context,
        if st.current { " (current)" } else { "" }
    );
    let row = |s: &mut String, k: &str, v: &str| s.push_str(&format!("  {k:<15}{v}\n"));
    if let Some(p) = &st.provider {
        row(
            &mut s,
            "provider:",
            &format!(
                "{} ({}) at {}, client {}",
                p.name,
                p.grant_type.as_str(),
                p.issuer,
                p.client_id
            ),
        );
    }
    let user_flow = st
        .provider
        .as_ref()
        .is_none_or(|p| p.grant_type.is_user_flow());
    match &st.login {
        Some(l) => {
            let who = match (&l.subject, user_flow) {
                (Some(s), _) => s.clone(),
                (None, true) => "(unknown: no ID token was stored)".into(),
                (None, false) => "(machine client: tokens are fetched on demand)".into(),
            };
            row(&mut s, "logged in as:", &who);
            let access = match l.access_expires_at {
                Some(e) if now.seconds_until(e) > 0 => expiry_text(now, e),
                Some(e) => format!(
                    "{}{}",
                    expiry_text(now, e),
                    if l.has_refresh_token {
                        "; renewed with the refresh token on next use"
                    } else {
                        ""
                    }
                ),
                None if l.subject.is_none() && !user_flow => "none stored yet".into(),
                None => "no expiry known".into(),
            };
            row(&mut s, "access token:", &access);
            if let Some(life) = l.lifetime {
                row(&mut s, "token lifetime:", &lifetime_text(life));
            }
            if user_flow {
                row(
                    &mut s,
                    "refresh token:",
                    if l.has_refresh_token { "yes" } else { "no" },
                );
            }
            row(&mut s, "credentials:", &l.path.display().to_string());
        }
        None => {
            let who = match &st.error {
                Some(Error::NotLoggedIn { .. } | Error::LoginExpired { .. }) => "no one",
                _ => "unknown (see the problem below)",
            };
            row(&mut s, "logged in as:", who);
            if let Some(e) = st.stored_expiry {
                row(&mut s, "access token:", &expiry_text(now, e));
            }
            if let Some(p) = &st.credentials {
                row(&mut s, "credentials:", &p.display().to_string());
            }
        }
    }
    if let Some(b) = &st.budget {
        row(&mut s, "token budget:", &b.text());
    }
    match &st.error {
        None => row(&mut s, "problems:", "none"),
        Some(e) => row(&mut s, "problem:", &e.to_string()),
    }
    for w in &st.warnings {
        row(&mut s, "warning:", w);
    }
    s
}

/// The IdP's access-token lifetime, and what it means for `--min-valid` and plugstack
/// `min_valid=` (said here once, not as a warning on every call).
fn lifetime_text(life: std::time::Duration) -> String {
    let secs = life.as_secs();
    format!(
        "{} as the identity provider issues them; a --min-valid (or plugstack min_valid=) of \
         {secs} s or more is capped at {} s",
        ui::human_duration(secs),
        secs / 2
    )
}

/// Runs `status`.
pub fn run(args: &StatusArgs) -> Result<(), Failure> {
    let paths = super::qsh_paths()?;
    let env = |k: &str| std::env::var(k).ok();
    let config_exists = paths.config_file.exists();
    let config = if config_exists {
        Some(super::load_config(&paths)?)
    } else {
        None
    };
    let has_env_context = config
        .as_ref()
        .is_some_and(|c| c.context_names().iter().any(|n| n == m2m::ENV_CONTEXT));
    let env_mode = !args.all
        && m2m::wants_env_mode(
            args.context.as_deref(),
            config_exists,
            has_env_context,
            &env,
        );
    let now = Timestamp::now();
    if env_mode {
        let st = match m2m::env_context(&paths, &env) {
            Ok((cache, provider)) => inspect(&cache, Ok(provider), m2m::ENV_CONTEXT, true, now),
            Err(e) => inspect(&paths, Err(e), m2m::ENV_CONTEXT, true, now),
        };
        return report(args, &[st], now);
    }
    let config = match config {
        Some(c) => c,
        None => super::load_config(&paths)?, // says what is missing
    };
    let names = if args.all {
        config.context_names()
    } else {
        let name = match args.context.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => c.to_owned(),
            None => config
                .current_context()
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                // provider(None) explains what to do when no context is current.
                .ok_or_else(|| {
                    config
                        .provider_with_env(None, &super::env)
                        .err()
                        .map_or_else(
                            || {
                                Failure::msg(
                                    "no current context: pass --context NAME",
                                    exit::CONFIG,
                                )
                            },
                            Failure::from,
                        )
                })?,
        };
        vec![name]
    };
    if names.is_empty() {
        return Err(Failure::msg(
            format!(
                "{} lists no context: add one with `qlam-auth config init --issuer URL --client-id ID`",
                config.path().display()
            ),
            exit::CONFIG,
        ));
    }
    let all: Vec<ContextStatus> = names
        .iter()
        .map(|n| {
            let current = config.current_context() == Some(n.as_str());
            inspect(
                &paths,
                config.provider_with_env(Some(n), &super::env),
                n,
                current,
                now,
            )
        })
        .collect();
    report(args, &all, now)
}

fn report(args: &StatusArgs, all: &[ContextStatus], now: Timestamp) -> Result<(), Failure> {
    let code = all
        .iter()
        .map(ContextStatus::exit_code)
        .find(|c| *c != exit::OK);
    if args.json {
        let v = if args.all {
            Value::Array(all.iter().map(|s| to_json(s, now)).collect())
        } else {
            to_json(&all[0], now)
        };
        let text = serde_json::to_string_pretty(&v)
            .map_err(|e| Failure::msg(e.to_string(), exit::OTHER))?;
        ui::say(&format!("{text}\n"));
    } else {
        let text: Vec<String> = all.iter().map(|s| to_text(s, now)).collect();
        ui::say(&text.join("\n"));
    }
    match code {
        None => Ok(()),
        Some(c) => Err(Failure::Reported(c)),
    }
}
