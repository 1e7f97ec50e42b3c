//! Site service accounts: `--qlam-auth=NAME` gives a job the client-credentials token of a
//! machine client that the site configured, if the job's user is in one of its allowed groups.
//!
//! ```text
//! required .../libqlam_spank.so m2m=qpu-ci:/etc/qlam/m2m/qpu-ci.json:qpu-users,qpu-admins
//! ```
//!
//! The account file (root:root, 0600; read by root in slurmstepd only):
//!
//! ```json
//! { "issuer": "https://login.example.org", "client_id": "qpu-ci",
//!   "client_secret": "..." | "file:/etc/qlam/m2m/qpu-ci.secret" | "private_key_jwt:/etc/qlam/m2m/qpu-ci.pem",
//!   "client_secret_next": "...",            // optional: the next secret during a rotation
//!   "audience": "https://api.example.org", "scope": null,
//!   "allowed_groups": ["qpu-users", "qpu-admins"],
//!   "monthly_budget": 10000, "warn_percent": 80,            // optional
//!   "token_endpoint_auth_method": "client_secret_basic" }   // optional
//! ```
//!
//! Where each check happens, and why:
//! * **Submission** (sbatch, as the user): the account file is unreadable there, by design. The
//!   optional group list after the file in plugstack.conf (world-readable anyway, since sbatch
//!   loads it) lets sbatch refuse a user outside the groups at once. It is a convenience, not
//!   the control: a user controls their own sbatch process.
//! * **The job's node** (slurmstepd, `init_post_opt`, as root): the account file's
//!   `allowed_groups` decide, against the job user's groups from the group database
//!   (`getgrouplist`: primary and supplementary). Only then is the secret read and a token
//!   obtained, as root, through a root-only cache `m2m_cache/NAME` shared by all jobs of the
//!   node (and of all nodes, if on a shared filesystem with working `flock`). A refusal fails
//!   the job in `task_init`, never the node.
//! * **The job** gets the access token only (file and variables, as for user tokens). The
//!   secret, the key and the cache never leave root.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use token_core::config::{EnvSnapshot, GrantType, ProviderConfig, SecretSource, normalize_issuer};
use token_core::m2m::Settings;
use token_core::oauth::ClientAuth;
use token_core::paths::QshPaths;
use token_core::secret::Secret;

/// Default of `m2m_cache`.
pub const DEFAULT_M2M_CACHE: &str = "/var/cache/qlam-auth/m2m";

/// Largest account file we read.
const MAX_ACCOUNT_BYTES: u64 = 64 * 1024;

/// A site account as plugstack.conf names it: `NAME:FILE[:GROUP,GROUP...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAccountRef {
    /// What jobs ask for: `--qlam-auth=NAME`.
    pub name: String,
    /// The root-only account file.
    pub file: PathBuf,
    /// The world-readable copy of the allowlist, for the check at submission.
    pub public_groups: Option<Vec<String>>,
}

impl SiteAccountRef {
    /// Parses `NAME:FILE[:GROUP,...]`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let file = parts
            .next()
            .ok_or_else(|| format!("'{value}': expected NAME:/path/NAME.json[:GROUP,...]"))?;
        crate::hooks::parse_option_value(Some(name))
            .ok()
            .and_then(|r| r.context)
            .ok_or_else(|| {
                format!("'{name}' is not a valid account name (A-Z a-z 0-9 . _ - @ +)")
            })?;
        let file = crate::args::absolute_path(file)?;
        let public_groups = match parts.next() {
            None => None,
            Some(g) => Some(parse_groups(g.split(','))?),
        };
        Ok(SiteAccountRef {
            name: name.to_owned(),
            file,
            public_groups,
        })
    }
}

fn parse_groups<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let groups: Vec<String> = items
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    if groups.is_empty() {
        return Err("the group list is empty".into());
    }
    if let Some(bad) = groups.iter().find(|g| match g.strip_prefix(GID_PREFIX) {
        Some(n) => n.parse::<u32>().is_err(),
        None => !g
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c)),
    }) {
        return Err(format!(
            "'{bad}' is not a group name or {GID_PREFIX}NUMBER (a bare number is a group name)"
        ));
    }
    Ok(groups)
}

/// The content of a root-only account file.
#[derive(Clone)]
pub struct SiteAccount {
    issuer: String,
    client_id: String,
    secret: SecretSource,
    literal: Option<Secret>,
    literal_next: Option<Secret>,
    audience: Option<String>,
    scope: Option<String>,
    /// Groups whose members may use the account (names, or numeric gids).
    pub allowed_groups: Vec<String>,
    monthly_budget: Option<u64>,
    warn_percent: Option<u8>,
    client_auth: Option<ClientAuth>,
}

impl std::fmt::Debug for SiteAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteAccount")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("allowed_groups", &self.allowed_groups)
            .finish_non_exhaustive()
    }
}

/// Reads and parses the account file, as root: it must be a regular file of root's, mode 0600
/// or stricter (checked on the open descriptor).
pub fn load(r: &SiteAccountRef) -> Result<SiteAccount, String> {
    let bytes = token_core::fsutil::read_file_following(
        &r.file,
        token_core::fsutil::Policy::PRIVATE,
        MAX_ACCOUNT_BYTES,
    )
    .map_err(|e| e.to_string())?
    .ok_or_else(|| format!("the account file {} does not exist", r.file.display()))?;
    let bytes = zeroize::Zeroizing::new(bytes);
    parse(&r.file, &bytes)
}

/// A parsed account file: its strings (the secret among them) are wiped when it is dropped.
struct WipedJson(serde_json::Value);

/// Wipes every string in `v` (object keys are names, not secrets).
fn wipe_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => zeroize::Zeroize::zeroize(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_json),
        _ => {}
    }
}

impl Drop for WipedJson {
    fn drop(&mut self) {
        wipe_json(&mut self.0);
    }
}

/// Parses an account file's content; `path` is for messages. Errors never quote a secret.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<SiteAccount, String> {
    let at = |what: &str| format!("{}: {what}", path.display());
    let v = WipedJson(serde_json::from_slice(bytes).map_err(|_| at("not valid JSON"))?);
    let obj = v.0.as_object().ok_or_else(|| at("not a JSON object"))?;
    let known = [
        "issuer",
        "client_id",
        "client_secret",
        "client_secret_next",
        "audience",
        "scope",
        "allowed_groups",
        "monthly_budget",
        "warn_percent",
        "token_endpoint_auth_method",
    ];
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(at(&format!(
            "unknown key '{k}' (known: {})",
            known.join(", ")
        )));
    }
    let s = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                Ok(Some(s.trim().to_owned()))
            }
            Some(_) => Err(at(&format!("'{k}' must be a non-empty string"))),
        }
    };
    let need = |k: &str| s(k)?.ok_or_else(|| at(&format!("'{k}' is required")));
    let issuer =
        normalize_issuer(&need("issuer")?, false).map_err(|m| at(&format!("issuer: {m}")))?;
    let client_id = need("client_id")?;
    let raw_secret = zeroize::Zeroizing::new(need("client_secret")?);
    let secret = SecretSource::parse(&raw_secret);
    let literal = match &secret {
        SecretSource::Env(_) => {
            return Err(at(
                "client_secret: env: is not allowed here (the environment is the job's); use the secret, file:/path or private_key_jwt:/path",
            ));
        }
        SecretSource::Literal(s) => Some(s.clone()),
        _ => None,
    };
    let literal_next = s("client_secret_next")?.map(Secret::new);
    if literal_next.is_some() && literal.is_none() {
        return Err(at(
            "client_secret_next needs a literal client_secret (with file:, put the next secret on the file's second line)",
        ));
    }
    let allowed_groups = match obj.get("allowed_groups") {
        Some(serde_json::Value::Array(a)) => parse_groups(a.iter().filter_map(|g| g.as_str()))
            .map_err(|e| at(&format!("allowed_groups: {e}")))?,
        _ => {
            return Err(at(
                "'allowed_groups' (a non-empty list of group names) is required",
            ));
        }
    };
    let monthly_budget = match obj.get("monthly_budget") {
        None | Some(serde_json::Value::Null) => None,
        Some(n) => Some(
            n.as_u64()
                .ok_or_else(|| at("monthly_budget must be a whole number"))?,
        ),
    };
    let warn_percent = match obj.get("warn_percent") {
        None | Some(serde_json::Value::Null) => None,
        Some(n) => Some(
            n.as_u64()
                .and_then(|p| u8::try_from(p).ok())
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| at("warn_percent must be 1 to 100"))?,
        ),
    };
    let client_auth = match s("token_endpoint_auth_method")? {
        None => None,
        Some(m) => Some(ClientAuth::parse(&m).ok_or_else(|| {
            at("token_endpoint_auth_method must be client_secret_basic or client_secret_post")
        })?),
    };
    Ok(SiteAccount {
        issuer,
        client_id,
        secret,
        literal,
        literal_next,
        audience: s("audience")?,
        scope: s("scope")?,
        allowed_groups,
        monthly_budget,
        warn_percent,
        client_auth,
    })
}

/// The names under which a literal secret and its successor reach token-core (they are looked
/// up in the account, never in an environment).
const LITERAL: &str = "client_secret";

impl SiteAccount {
    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// token-core's view of the account: context `name`, provider `site`.
    pub fn provider(&self, name: &str, file: &Path) -> ProviderConfig {
        let secret = match &self.secret {
            SecretSource::Literal(_) => SecretSource::Env(LITERAL.to_owned()),
            other => other.clone(),
        };
        let next_name = format!("{LITERAL}{}", token_core::config::NEXT_SECRET_SUFFIX);
        let lookup = |k: &str| -> Option<String> {
            if k == LITERAL {
                self.literal.as_ref().map(|s| s.expose().to_owned())
            } else if k == next_name {
                self.literal_next.as_ref().map(|s| s.expose().to_owned())
            } else {
                None
            }
        };
        ProviderConfig {
            context: name.to_owned(),
            name: "site".to_owned(),
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: Some(secret),
            grant_type: GrantType::ClientCredentials,
            scope: self.scope.clone(),
            audience: self.audience.clone(),
            tenant: None,
            subject_token_type: None,
            subject_token: None,
            config_path: file.to_owned(),
            env: EnvSnapshot::default(),
        }
        .with_env(&lookup)
    }

    /// The budget and client authentication of the account.
    pub fn settings(&self) -> Settings {
        let s = Settings::with_budget(self.monthly_budget, self.warn_percent);
        match self.client_auth {
            None => s,
            Some(a) => s.with_client_auth(a),
        }
    }
}

/// The root-only cache of account `name` under `base`.
pub fn cache_paths(base: &Path, name: &str) -> QshPaths {
    let dir = base.join(name);
    QshPaths {
        config_file: dir.join("config.json"),
        config_dir: dir.clone(),
        credentials_dir: dir,
    }
}

/// Prefix of a numeric group id in a group list (`gid:2024`); anything else is a group name,
/// digits included.
pub const GID_PREFIX: &str = "gid:";

/// Is a user with these group ids in one of `allowed` (names resolved by `gid_of`; a number
/// only as `gid:N`)?
pub fn member_of(
    allowed: &[String],
    user_gids: &[Gid],
    gid_of: &dyn Fn(&str) -> Option<Gid>,
) -> bool {
    allowed.iter().any(|g| {
        match g.strip_prefix(GID_PREFIX) {
            Some(n) => n.parse::<u32>().ok().map(Gid::new),
            None => gid_of(g),
        }
        .is_some_and(|gid| user_gids.contains(&gid))
    })
}

// ---------------------------------------------------------------------------------------------
// The policy, called from the hooks.

use crate::args::Args;
use crate::hooks::{Backend, Host, Level, SiteToken, State, Verdict};
use crate::users::Gid;

fn not_member(name: &str) -> String {
    format!(
        "you are not allowed to use the site service account '{name}' (--qlam-auth={name}): \
         ask your site admins to add you to one of its groups"
    )
}

/// Allocator context, as the submitting user: refuse users outside the account's public group
/// list right away. Without a public list the job is checked on its node.
pub fn submit_check(host: &dyn Host, account: &SiteAccountRef) -> Verdict {
    let Some(groups) = &account.public_groups else {
        host.log(
            Level::Verbose,
            &format!(
                "site account '{}': group membership is checked when the job starts",
                account.name
            ),
        );
        return Verdict::Continue;
    };
    let uid = host.process_uid();
    let mine = host.user_groups(uid).unwrap_or_default();
    if member_of(groups, &mine, &|g| host.group_id(g)) {
        host.log(
            Level::Verbose,
            &format!("site account '{}': group check passed", account.name),
        );
        Verdict::Continue
    } else {
        host.log(Level::Error, &not_member(&account.name));
        Verdict::Fail
    }
}

/// Remote `init_post_opt`, as root: check the job user's groups against the account file, then
/// obtain the account's token (shared root-only cache) and keep it for `user_init`, which writes
/// it into the job's directory as the user. Never fails the hook: problems are remembered.
pub fn fetch(
    host: &dyn Host,
    backend: &dyn Backend,
    state: &mut State,
    args: &Args,
    account: &SiteAccountRef,
) {
    let (Some(job), Some(uid)) = (host.job_id(), host.job_uid()) else {
        return state.remember(
            host,
            "Slurm did not provide the job id and uid; please tell your site admins".into(),
        );
    };
    let acct = match backend.load_site_account(account) {
        Ok(a) => a,
        Err(msg) => {
            host.log(
                Level::Error,
                &format!("job={job} site account '{}': {msg}", account.name),
            );
            return state.remember(
                host,
                format!("the site service account '{}' is misconfigured on this node; please tell your site admins", account.name),
            );
        }
    };
    let groups = host.user_groups(uid).unwrap_or_default();
    if !member_of(&acct.allowed_groups, &groups, &|g| host.group_id(g)) {
        host.log(
            Level::Info,
            &format!(
                "job={job} uid={uid} refused the site account '{}' (not in {})",
                account.name,
                acct.allowed_groups.join(",")
            ),
        );
        return state.remember(host, not_member(&account.name));
    }
    let args = crate::hooks::needed_validity(host, args);
    match backend.obtain_site(account, &acct, &args) {
        Ok(d) => {
            let expires_in = d
                .expires_in
                .map_or_else(|| "-".to_owned(), |s| s.to_string());
            state.site_token = Some(SiteToken {
                token: d.token,
                log: format!(
                    "site_account={} client_id={} refreshed={} source={} expires_in_s={expires_in} lock_wait_ms={} elapsed_ms={}",
                    account.name,
                    d.client_id,
                    if d.refreshed { "yes" } else { "no" },
                    d.source,
                    d.lock_wait.as_millis(),
                    d.elapsed.as_millis()
                ),
            });
        }
        Err(msg) => state.remember(
            host,
            format!(
                "this job could not get a token for the site account '{}': {msg}",
                account.name
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn plugstack_spelling() {
        let r = SiteAccountRef::parse("qpu-ci:/etc/qlam/m2m/qpu-ci.json:qpu,admins").unwrap();
        assert_eq!(r.name, "qpu-ci");
        assert_eq!(r.file, Path::new("/etc/qlam/m2m/qpu-ci.json"));
        assert_eq!(r.public_groups, Some(vec!["qpu".into(), "admins".into()]));
        assert_eq!(
            SiteAccountRef::parse("a:/x.json").unwrap().public_groups,
            None
        );
        for bad in [
            "a",
            "a:rel.json",
            "../a:/x.json",
            "a:/x.json:",
            "a:/x.json:bad group",
        ] {
            assert!(SiteAccountRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn account_file() {
        let a = parse(
            Path::new("/etc/qlam/m2m/ci.json"),
            br#"{"issuer": "idp.example", "client_id": "ci", "client_secret": "s3cret",
                 "client_secret_next": "n3xt", "audience": "https://api", "allowed_groups": ["qpu"],
                 "monthly_budget": 100}"#,
        )
        .unwrap();
        assert!(!format!("{a:?}").contains("s3cret"));
        let p = a.provider("ci", Path::new("/etc/qlam/m2m/ci.json"));
        assert_eq!(p.issuer, "https://idp.example");
        assert_eq!(p.cache_key(), "oauth_ci_site");
        let secrets = p
            .client_secret
            .as_ref()
            .unwrap()
            .resolve_all(&p.config_path, "client_secret", &p.env)
            .unwrap();
        assert_eq!(
            secrets.iter().map(|s| s.expose()).collect::<Vec<_>>(),
            ["s3cret", "n3xt"]
        );
        assert_eq!(a.settings().budget("ci").limit, Some(100));
        for (bad, want) in [
            (
                r#"{"issuer":"idp","client_id":"c","client_secret":"env:X","allowed_groups":["g"]}"#,
                "env:",
            ),
            (
                r#"{"issuer":"idp","client_id":"c","client_secret":"s"}"#,
                "allowed_groups",
            ),
            (
                r#"{"issuer":"idp","client_id":"c","client_secret":"s","allowed_groups":["g"],"x":1}"#,
                "unknown key 'x'",
            ),
            (
                r#"{"issuer":"http://idp","client_id":"c","client_secret":"s","allowed_groups":["g"]}"#,
                "http",
            ),
        ] {
            let e = parse(Path::new("/f.json"), bad.as_bytes()).unwrap_err();
            assert!(
                e.contains(want) && e.contains("/f.json") && !e.contains("\"s\""),
                "{e}"
            );
        }
    }

    /// Security review item 7: the parsed account file's copy of the secret is wiped.
    #[test]
    fn parsed_account_json_is_wiped() {
        let mut v = serde_json::json!({"client_secret": "s3cret", "x": [{"y": "n3xt"}], "n": 1});
        wipe_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"client_secret": "", "x": [{"y": ""}], "n": 1})
        );
    }

    fn gids(ids: &[u32]) -> Vec<Gid> {
        ids.iter().copied().map(Gid::new).collect()
    }

    #[test]
    fn group_membership() {
        let gid_of = |n: &str| match n {
            "qpu" => Some(Gid::new(500)),
            "admins" => Some(Gid::new(501)),
            _ => None,
        };
        // A number needs the explicit `gid:` prefix (this test used a bare "1234" before).
        let allowed = vec!["qpu".to_owned(), "gid:1234".to_owned()];
        assert!(member_of(&allowed, &gids(&[100, 500]), &gid_of));
        assert!(member_of(&allowed, &gids(&[1234]), &gid_of));
        assert!(!member_of(&allowed, &gids(&[100, 501]), &gid_of));
        assert!(!member_of(
            &["nosuchgroup".to_owned()],
            &gids(&[100]),
            &gid_of
        ));
    }

    /// Security review item 6: a bare number is a group NAME. A group literally named `2024`
    /// (gid 777) must not match GID 2024, which may be some user's personal group.
    #[test]
    fn a_bare_number_is_a_group_name_not_a_gid() {
        let gid_of = |n: &str| (n == "2024").then_some(Gid::new(777));
        let allowed = vec!["2024".to_owned()];
        assert!(!member_of(&allowed, &gids(&[2024]), &gid_of));
        assert!(member_of(&allowed, &gids(&[777]), &gid_of));
        assert!(member_of(&["gid:2024".to_owned()], &gids(&[2024]), &gid_of));
        assert!(!member_of(&["gid:2024".to_owned()], &gids(&[777]), &gid_of));
        // Both spellings are accepted in the account file and in plugstack.conf.
        let r = SiteAccountRef::parse("a:/x.json:2024,gid:2024").unwrap();
        assert_eq!(
            r.public_groups,
            Some(vec!["2024".into(), "gid:2024".into()])
        );
        for bad in [
            "a:/x.json:gid:",
            "a:/x.json:gid:x1",
            "a:/x.json:gid:99999999999",
        ] {
            assert!(SiteAccountRef::parse(bad).is_err(), "{bad}");
        }
    }
}
