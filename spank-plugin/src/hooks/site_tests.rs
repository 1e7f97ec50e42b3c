//! The site-account policy through the real hooks, with a fake Slurm and a fake token-core.

use super::*;
use crate::args::{Args, SiteAccountRef};
use crate::backend::SiteAccount;
use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

const UID: u32 = 1001;
const QPU_GID: u32 = 700;
const SECRET: &str = "site-secret-never-in-a-job";
const TOKEN: &str = "m2m-access-token-for-the-job";

struct Fake {
    ctx: Context,
    groups: Vec<u32>,
    set: BTreeMap<String, String>,
    logs: RefCell<Vec<(Level, String)>>,
}

impl Fake {
    fn new(ctx: Context, groups: &[u32]) -> Self {
        Fake {
            ctx,
            groups: groups.to_vec(),
            set: BTreeMap::new(),
            logs: RefCell::new(Vec::new()),
        }
    }
    fn logs(&self) -> String {
        let l = self.logs.borrow();
        l.iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

use std::collections::BTreeMap;

impl Host for Fake {
    fn context(&self) -> Context {
        self.ctx
    }
    fn is_remote(&self) -> bool {
        self.ctx == Context::Remote
    }
    fn job_id(&self) -> Option<u32> {
        (self.ctx == Context::Remote).then_some(77)
    }
    fn job_uid(&self) -> Option<Uid> {
        (self.ctx == Context::Remote).then_some(Uid::new(UID))
    }
    fn job_gid(&self) -> Option<Gid> {
        (self.ctx == Context::Remote).then_some(Gid::new(UID))
    }
    fn step_id(&self) -> Option<u32> {
        Some(BATCH_STEP)
    }
    fn process_uid(&self) -> Uid {
        Uid::new(if self.ctx == Context::Remote { 0 } else { UID })
    }
    fn user_home(&self, _uid: Uid) -> Option<PathBuf> {
        Some(PathBuf::from("/home/alice"))
    }
    fn getenv(&self, _name: &str) -> Option<String> {
        None
    }
    fn setenv(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.set.insert(name.to_owned(), value.to_owned());
        Ok(())
    }
    fn unsetenv(&mut self, _name: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn remove_process_env(&mut self, _name: &str) {}
    fn option_value(&self) -> OptionState {
        OptionState::Given(Some("qpu-ci".to_owned()))
    }
    fn log(&self, level: Level, msg: &str) {
        self.logs.borrow_mut().push((level, msg.to_owned()));
    }
    fn user_groups(&self, uid: Uid) -> Option<Vec<Gid>> {
        (uid == Uid::new(UID)).then(|| self.groups.iter().copied().map(Gid::new).collect())
    }
    fn group_id(&self, name: &str) -> Option<Gid> {
        (name == "qpu").then_some(Gid::new(QPU_GID))
    }
}

#[derive(Default)]
struct FakeSite {
    calls: RefCell<Vec<String>>,
}

impl Backend for FakeSite {
    fn check_login(&self, _req: &Request<'_>) -> Result<String, BackendError> {
        self.calls.borrow_mut().push("check_login".into());
        Err(BackendError::Other(
            "the user's own login must not be consulted".into(),
        ))
    }
    fn prepare_job_dir(
        &self,
        base: &Path,
        job: &str,
        _: Uid,
        _: Gid,
    ) -> Result<PathBuf, BackendError> {
        Ok(base.join(job))
    }
    fn reuse_token(&self, _file: &Path, _min_valid: Duration) -> Option<Secret> {
        None
    }
    fn obtain(&self, _req: &Request<'_>) -> Result<Delivery, BackendError> {
        self.calls.borrow_mut().push("obtain".into());
        Err(BackendError::Other(
            "the user's own login must not be consulted".into(),
        ))
    }
    fn write_token(
        &self,
        dir: &Path,
        file_name: &str,
        token: &Secret,
    ) -> Result<PathBuf, BackendError> {
        self.calls
            .borrow_mut()
            .push(format!("write {file_name} {}", token.expose()));
        Ok(dir.join(file_name))
    }
    fn remove_job_dir(&self, _base: &Path, _job: &str) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn load_site_account(&self, account: &SiteAccountRef) -> Result<SiteAccount, BackendError> {
        self.calls
            .borrow_mut()
            .push(format!("load {}", account.file.display()));
        SiteAccount::parse(
            &account.file,
            format!(
                r#"{{"issuer":"idp.example","client_id":"qpu-ci","client_secret":"{SECRET}","allowed_groups":["qpu"]}}"#
            )
            .as_bytes(),
        )
    }
    fn obtain_site(
        &self,
        account: &SiteAccountRef,
        acct: &SiteAccount,
        args: &Args,
    ) -> Result<Delivery, BackendError> {
        self.calls.borrow_mut().push(format!(
            "obtain_site {} {} cache={}",
            account.name,
            acct.client_id(),
            args.m2m_cache.display()
        ));
        Ok(Delivery {
            token: Secret::new(TOKEN),
            refreshed: false,
            source: Source::Cache,
            expires_in: Some(3000),
            subject: None,
            client_id: acct.client_id().to_owned(),
            elapsed: Duration::from_millis(3),
            lock_wait: Duration::ZERO,
            capped_from: None,
        })
    }
}

fn argv(public: bool) -> Vec<String> {
    let m2m = if public {
        "m2m=qpu-ci:/etc/qlam/m2m/qpu-ci.json:qpu"
    } else {
        "m2m=qpu-ci:/etc/qlam/m2m/qpu-ci.json"
    };
    vec![
        m2m.to_owned(),
        "token_dir=/run/qlam-auth".to_owned(),
        "issuers=https://idp.example".to_owned(),
        "site=/nonexistent/qlam-auth-test/site.json".to_owned(),
    ]
}

fn job(groups: &[u32]) -> (Fake, FakeSite, Verdict) {
    let mut host = Fake::new(Context::Remote, groups);
    let backend = FakeSite::default();
    let mut state = State::default();
    let args = argv(false);
    init_post_opt(&mut host, &backend, &mut state, &args);
    user_init(&mut host, &backend, &mut state, &args);
    let v = task_init(&mut host, &state);
    (host, backend, v)
}

#[test]
fn submission_checks_the_public_group_list_only() {
    let backend = FakeSite::default();
    let mut state = State::default();
    let mut member = Fake::new(Context::Allocator, &[UID, QPU_GID]);
    assert_eq!(
        init_post_opt(&mut member, &backend, &mut state, &argv(true)),
        Verdict::Continue
    );
    let mut other = Fake::new(Context::Allocator, &[UID]);
    assert_eq!(
        init_post_opt(&mut other, &backend, &mut state, &argv(true)),
        Verdict::Fail
    );
    assert!(
        other
            .logs()
            .contains("not allowed to use the site service account 'qpu-ci'")
    );
    // Without a public list, sbatch lets it through (the node decides).
    assert_eq!(
        init_post_opt(&mut other, &backend, &mut state, &argv(false)),
        Verdict::Continue
    );
    // Never the user's login, never the account file (unreadable to the user).
    assert!(
        backend.calls.borrow().is_empty(),
        "{:?}",
        backend.calls.borrow()
    );
}

#[test]
fn a_member_gets_the_token_and_never_the_secret() {
    let (host, backend, v) = job(&[UID, QPU_GID]);
    assert_eq!(v, Verdict::Continue, "{}", host.logs());
    let calls = backend.calls.borrow().clone();
    assert_eq!(
        calls,
        [
            "load /etc/qlam/m2m/qpu-ci.json",
            "obtain_site qpu-ci qpu-ci cache=/var/cache/qlam-auth/m2m",
            &format!("write token-qpu-ci {TOKEN}"),
        ]
    );
    assert_eq!(
        host.set.get("QLAM_ACCESS_TOKEN").map(String::as_str),
        Some(TOKEN)
    );
    assert_eq!(
        host.set.get("QLAM_TOKEN_FILE").map(String::as_str),
        Some("/run/qlam-auth/77/token-qpu-ci")
    );
    let everything = format!("{}{:?}", host.logs(), host.set);
    assert!(!everything.contains(SECRET));
    assert!(
        !host.logs().contains(TOKEN),
        "the log holds fingerprints only"
    );
    assert!(
        host.logs().contains("site_account=qpu-ci client_id=qpu-ci"),
        "{}",
        host.logs()
    );
}

#[test]
fn a_non_member_fails_the_job_not_the_node_and_costs_no_token() {
    let (host, backend, v) = job(&[UID]);
    assert_eq!(v, Verdict::Fail);
    let calls = backend.calls.borrow().clone();
    assert_eq!(
        calls,
        ["load /etc/qlam/m2m/qpu-ci.json"],
        "no token was obtained"
    );
    assert!(host.set.is_empty());
    assert!(
        host.logs()
            .contains("not allowed to use the site service account"),
        "{}",
        host.logs()
    );
}

/// The node's refusal of a site account is a security line (for the admins' audit).
#[test]
fn a_refused_site_account_is_logged_under_the_security_target() {
    let (host, _, v) = job(&[UID]);
    assert_eq!(v, Verdict::Fail);
    assert!(
        host.logs()
            .contains("[qlam-auth::security] job=77 uid=1001 refused the site account 'qpu-ci'"),
        "{}",
        host.logs()
    );
    let (host, _, _) = job(&[UID, QPU_GID]);
    assert!(
        !host.logs().contains("qlam-auth::security"),
        "{}",
        host.logs()
    );
}
