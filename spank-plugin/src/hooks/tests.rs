//! The policy, tested with a fake Slurm and a fake token-core.

use super::*;
use crate::args::{Args, MAX_CONTEXT_LEN};
use crate::backend::Exchanged;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.c2VjcmV0LXNpZ25hdHVyZQ";
const JOB: u32 = 4242;
const UID: u32 = 1001;
const GID: u32 = 1002;

struct FakeHost {
    ctx: Context,
    step: Option<u32>,
    option: OptionState,
    env: BTreeMap<String, String>,
    set: BTreeMap<String, String>,
    unset: Vec<String>,
    setenv_fails: bool,
    logs: RefCell<Vec<(Level, String)>>,
    /// What slurmctld would say the job's end is, and which squeue was asked.
    slurm_end: Option<u64>,
    squeue_asked: RefCell<Vec<PathBuf>>,
}

impl FakeHost {
    fn new(ctx: Context, option: OptionState) -> Self {
        FakeHost {
            ctx,
            step: Some(0),
            option,
            env: BTreeMap::new(),
            set: BTreeMap::new(),
            unset: Vec::new(),
            setenv_fails: false,
            logs: RefCell::new(Vec::new()),
            slurm_end: None,
            squeue_asked: RefCell::new(Vec::new()),
        }
    }
    fn flag() -> OptionState {
        OptionState::Given(None)
    }
    fn errors(&self) -> Vec<String> {
        self.logs
            .borrow()
            .iter()
            .filter(|(l, _)| *l == Level::Error)
            .map(|(_, m)| m.clone())
            .collect()
    }
    fn all_logs(&self) -> String {
        self.logs
            .borrow()
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Host for FakeHost {
    fn context(&self) -> Context {
        self.ctx
    }
    fn is_remote(&self) -> bool {
        self.ctx == Context::Remote
    }
    fn job_id(&self) -> Option<u32> {
        (self.ctx != Context::Allocator).then_some(JOB)
    }
    fn job_uid(&self) -> Option<Uid> {
        (self.ctx == Context::Remote).then_some(Uid::new(UID))
    }
    fn job_gid(&self) -> Option<Gid> {
        (self.ctx == Context::Remote).then_some(Gid::new(GID))
    }
    fn step_id(&self) -> Option<u32> {
        self.step
    }
    fn process_uid(&self) -> Uid {
        Uid::new(if self.ctx == Context::Remote { 0 } else { UID })
    }
    fn user_home(&self, uid: Uid) -> Option<PathBuf> {
        (uid == Uid::new(UID)).then(|| PathBuf::from("/home/alice"))
    }
    fn getenv(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn setenv(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        if self.setenv_fails {
            return Err(HostError::Slurm {
                code: 3,
                text: "Valid only in remote context".to_owned(),
            });
        }
        self.set.insert(name.to_owned(), value.to_owned());
        Ok(())
    }
    fn unsetenv(&mut self, name: &str) -> Result<(), HostError> {
        self.unset.push(name.to_owned());
        Ok(())
    }
    fn remove_process_env(&mut self, name: &str) {
        self.env.remove(name);
    }
    fn option_value(&self) -> OptionState {
        self.option.clone()
    }
    fn log(&self, level: Level, msg: &str) {
        self.logs.borrow_mut().push((level, msg.to_owned()));
    }
    fn job_end_from_slurm(&self, squeue: &std::path::Path) -> Option<u64> {
        self.squeue_asked.borrow_mut().push(squeue.to_path_buf());
        self.slurm_end
    }
}

#[derive(Default)]
struct FakeBackend {
    login_error: Option<String>,
    prepare_error: Option<String>,
    reusable: bool,
    obtain_error: Option<String>,
    /// The token's `sub` and the config's `client_id` (default `alice`, `qlam-cli`).
    identity: Option<(String, String)>,
    exchange_error: Option<String>,
    /// `obtain` refuses the way the real backend refuses a grant the site does not allow.
    refuses_grant: bool,
    calls: RefCell<Vec<String>>,
}

const JOB_TOKEN: &str = "opaque-job-token-value";

fn provider() -> token_core::config::ProviderConfig {
    let cfg = br#"{"current_context": "c", "contexts": [{"name": "c", "qpu": "q",
        "defaults": {"auth_provider": "p"}, "auth_providers": [{"provider": "oauth", "name": "p",
        "auth_base_url": "https://idp.example", "client_id": "qlam-cli",
        "grant_type": "device_code"}]}]}"#;
    token_core::config::Config::from_bytes(Path::new("/home/alice/.qsh/config.json"), cfg)
        .unwrap()
        .provider_with_env(None, &|_| None)
        .unwrap()
}

impl FakeBackend {
    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
    fn called(&self, prefix: &str) -> bool {
        self.calls.borrow().iter().any(|c| c.starts_with(prefix))
    }
}

impl Backend for FakeBackend {
    fn check_login(&self, req: &Request<'_>) -> Result<String, BackendError> {
        self.calls.borrow_mut().push(format!(
            "check_login home={} context={:?} qsh={:?}",
            req.home.display(),
            req.context,
            (req.env)("QSH_CONFIG_DIR")
        ));
        match &self.login_error {
            Some(e) => Err(BackendError::Other(e.clone())),
            None => Ok("context default, subject alice".to_owned()),
        }
    }
    fn prepare_job_dir(
        &self,
        base: &Path,
        job: &str,
        uid: Uid,
        gid: Gid,
    ) -> Result<PathBuf, BackendError> {
        self.calls
            .borrow_mut()
            .push(format!("prepare {} {job} {uid} {gid}", base.display()));
        match &self.prepare_error {
            Some(e) => Err(BackendError::Other(e.clone())),
            None => Ok(base.join(job)),
        }
    }
    fn reuse_token(&self, file: &Path, min_valid: Duration) -> Option<Secret> {
        self.calls
            .borrow_mut()
            .push(format!("reuse {} {}", file.display(), min_valid.as_secs()));
        self.reusable.then(|| Secret::new(TOKEN))
    }
    fn obtain(&self, req: &Request<'_>) -> Result<Delivery, BackendError> {
        self.calls.borrow_mut().push(format!(
            "obtain home={} context={:?} min_valid={}",
            req.home.display(),
            req.context,
            req.args.min_valid.as_secs()
        ));
        if self.refuses_grant {
            return Err(BackendError::GrantNotAllowed(
                "the qsh config uses grant_type token_exchange, which this cluster does not allow"
                    .into(),
            ));
        }
        match &self.obtain_error {
            Some(e) => Err(BackendError::Other(e.clone())),
            None => Ok(Delivery {
                token: Secret::new(TOKEN),
                refreshed: true,
                source: Source::Renewed,
                expires_in: Some(3600),
                lock_wait: Duration::ZERO,
                capped_from: None,
                subject: Some(self.identity.as_ref().map_or("alice", |i| &i.0).to_owned()),
                client_id: self
                    .identity
                    .as_ref()
                    .map_or("qlam-cli", |i| &i.1)
                    .to_owned(),
                elapsed: Duration::from_millis(12),
            }),
        }
    }
    fn write_token(
        &self,
        dir: &Path,
        file_name: &str,
        _token: &Secret,
    ) -> Result<PathBuf, BackendError> {
        self.calls
            .borrow_mut()
            .push(format!("write {} {file_name}", dir.display()));
        Ok(dir.join(file_name))
    }
    fn remove_job_dir(&self, base: &Path, job: &str) -> Result<bool, BackendError> {
        self.calls
            .borrow_mut()
            .push(format!("remove {} {job}", base.display()));
        Ok(true)
    }
    fn exchange(
        &self,
        req: &Request<'_>,
        ex: &token_core::exchange::Request,
        _job: u32,
        _file_name: &str,
    ) -> Result<Exchange, BackendError> {
        self.calls.borrow_mut().push(format!(
            "exchange audience={:?} scope={:?} lifetime={:?}",
            ex.audience,
            ex.scope,
            ex.lifetime.map(|l| l.as_secs())
        ));
        if let Some(e) = &self.exchange_error {
            return Err(BackendError::Other(e.clone()));
        }
        let user = self.obtain(req)?;
        Ok(Exchange {
            subject: user.subject.clone(),
            client_id: user.client_id.clone(),
            user: Some(user),
            job: token_core::exchange::Exchanged {
                token: Secret::new(JOB_TOKEN),
                lifetime: ex.lifetime,
                scope: ex.scope.clone(),
                audience: ex.audience.clone(),
            },
            outlives: false,
            provider: provider(),
        })
    }
    fn write_meta(&self, dir: &Path, file_name: &str, job: &Exchanged) -> Result<(), BackendError> {
        self.calls.borrow_mut().push(format!(
            "meta {} {file_name} {:?}",
            dir.display(),
            job.audience
        ));
        Ok(())
    }
    fn revoke(
        &self,
        tokens: &JobTokens,
        _args: &Args,
        within: Duration,
    ) -> Result<usize, BackendError> {
        self.calls.borrow_mut().push(format!(
            "revoke {} within {} s",
            tokens.tokens.len(),
            within.as_secs()
        ));
        Ok(tokens.tokens.len())
    }
}

/// Plugin arguments: an allowed issuer and a site file that does not exist (hermetic), then `a`.
fn argv(a: &[&str]) -> Vec<String> {
    [ISSUERS_ARG, NO_SITE_ARG]
        .iter()
        .chain(a)
        .map(|s| s.to_string())
        .collect()
}

const ISSUERS_ARG: &str = "issuers=https://idp.example";
const NO_SITE_ARG: &str = "site=/nonexistent/qlam-auth-test/site.json";

/// Runs the remote hooks of one step in order; returns task_init's verdict.
fn run_step(host: &mut FakeHost, backend: &FakeBackend, args: &[String]) -> (State, Verdict) {
    let mut state = State::default();
    assert_eq!(
        init_post_opt(host, backend, &mut state, args),
        Verdict::Continue,
        "remote init_post_opt must never fail"
    );
    assert_eq!(
        user_init(host, backend, &mut state, args),
        Verdict::Continue,
        "user_init must never fail"
    );
    let v = task_init(host, &state);
    (state, v)
}

#[test]
fn allocator_without_option_does_nothing() {
    let mut host = FakeHost::new(Context::Allocator, OptionState::NotGiven);
    let backend = FakeBackend::default();
    let mut state = State::default();
    assert_eq!(
        init_post_opt(&mut host, &backend, &mut state, &argv(&[])),
        Verdict::Continue
    );
    assert!(backend.calls().is_empty());
    assert!(host.set.is_empty());
}

#[test]
fn allocator_checks_login_and_never_sets_env() {
    for ctx in [Context::Allocator, Context::Local] {
        let mut host = FakeHost::new(ctx, OptionState::Given(Some("prod".to_owned())));
        host.env.insert(
            "QSH_CONFIG_DIR".to_owned(),
            "/home/alice/.qsh-test".to_owned(),
        );
        let backend = FakeBackend::default();
        let mut state = State::default();
        assert_eq!(
            init_post_opt(&mut host, &backend, &mut state, &argv(&[])),
            Verdict::Continue
        );
        assert_eq!(
            backend.calls(),
            vec![
                r#"check_login home=/home/alice context=Some("prod") qsh=Some("/home/alice/.qsh-test")"#
            ]
        );
        // The later hooks of sbatch/srun never deliver either.
        assert_eq!(
            user_init(&mut host, &backend, &mut state, &argv(&[])),
            Verdict::Continue
        );
        assert_eq!(task_init(&mut host, &state), Verdict::Continue);
        assert!(host.set.is_empty(), "{ctx:?}: {:?}", host.set);
        assert!(host.unset.is_empty());
        assert_eq!(backend.calls().len(), 1);
    }
}

#[test]
fn allocator_refuses_a_user_without_login() {
    let mut host = FakeHost::new(Context::Allocator, FakeHost::flag());
    let backend = FakeBackend {
        login_error: Some("not logged in for context 'default': run `qlam-auth login`".to_owned()),
        ..Default::default()
    };
    let mut state = State::default();
    assert_eq!(
        init_post_opt(&mut host, &backend, &mut state, &argv(&[])),
        Verdict::Fail
    );
    let errors = host.errors();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("qlam-auth login"), "{errors:?}");
    assert!(host.set.is_empty());
}

#[test]
fn allocator_refuses_a_bad_context_name() {
    let mut host = FakeHost::new(
        Context::Allocator,
        OptionState::Given(Some("../etc".to_owned())),
    );
    let backend = FakeBackend::default();
    assert_eq!(
        init_post_opt(&mut host, &backend, &mut State::default(), &argv(&[])),
        Verdict::Fail
    );
    assert!(backend.calls().is_empty());
}

#[test]
fn remote_delivers_file_and_env() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let backend = FakeBackend::default();
    let (state, v) = run_step(&mut host, &backend, &argv(&["min_valid=900"]));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(state.failure, None);
    assert_eq!(
        backend.calls(),
        vec![
            "prepare /run/qlam-auth 4242 1001 1002",
            "reuse /run/qlam-auth/4242/token 900",
            "obtain home=/home/alice context=None min_valid=900",
            "write /run/qlam-auth/4242 token",
        ]
    );
    assert_eq!(
        host.set.get(ENV_TOKEN_FILE).map(String::as_str),
        Some("/run/qlam-auth/4242/token")
    );
    assert_eq!(
        host.set.get(ENV_BEARER_TOKEN_FILE).map(String::as_str),
        Some("/run/qlam-auth/4242/token")
    );
    assert_eq!(
        host.set.get(ENV_ACCESS_TOKEN).map(String::as_str),
        Some(TOKEN)
    );
    assert_eq!(host.unset, vec![ENV_BEARER_TOKEN]);
    let logs = host.all_logs();
    assert!(
        logs.contains("job=4242 step=0 uid=1001 token=sha256:"),
        "{logs}"
    );
    assert!(
        logs.contains("subject=alice client_id=qlam-cli reused=no refreshed=yes"),
        "{logs}"
    );
    assert!(
        !logs.contains(TOKEN) && !logs.contains("c2VjcmV0"),
        "a log line holds the token: {logs}"
    );
}

#[test]
fn env_token_no_keeps_the_token_out_of_the_environment() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let backend = FakeBackend::default();
    let (_, v) = run_step(&mut host, &backend, &argv(&["env_token=no"]));
    assert_eq!(v, Verdict::Continue);
    assert!(host.set.contains_key(ENV_TOKEN_FILE));
    assert!(!host.set.contains_key(ENV_ACCESS_TOKEN));
    assert!(host.set.values().all(|v| v != TOKEN));
    assert!(host.unset.contains(&ENV_ACCESS_TOKEN.to_owned()));
}

#[test]
fn later_step_reuses_the_job_token() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let backend = FakeBackend {
        reusable: true,
        ..Default::default()
    };
    let (_, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Continue);
    assert!(!backend.called("obtain"));
    assert!(!backend.called("write"));
    assert_eq!(
        host.set.get(ENV_ACCESS_TOKEN).map(String::as_str),
        Some(TOKEN)
    );
    assert!(host.all_logs().contains("reused=yes"));
}

#[test]
fn remote_without_option_does_nothing() {
    let mut host = FakeHost::new(Context::Remote, OptionState::NotGiven);
    let backend = FakeBackend::default();
    let (state, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(state, State::default());
    assert!(backend.calls().is_empty());
    assert!(host.set.is_empty());
}

#[test]
fn export_none_flag_is_read_from_the_job_environment() {
    let mut host = FakeHost::new(Context::Remote, OptionState::NotGiven);
    host.env
        .insert(crate::OPTION_ENV.to_owned(), "(null)".to_owned());
    let backend = FakeBackend::default();
    let (_, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Continue);
    assert!(
        backend.called("obtain home=/home/alice context=None"),
        "{:?}",
        backend.calls()
    );
    assert!(host.set.contains_key(ENV_TOKEN_FILE));
}

#[test]
fn export_none_value_selects_the_context_and_its_own_file() {
    let mut host = FakeHost::new(Context::Remote, OptionState::NotGiven);
    host.env
        .insert(crate::OPTION_ENV.to_owned(), "prod".to_owned());
    let backend = FakeBackend::default();
    let (_, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Continue);
    assert!(
        backend.called(r#"obtain home=/home/alice context=Some("prod")"#),
        "{:?}",
        backend.calls()
    );
    assert_eq!(
        host.set.get(ENV_TOKEN_FILE).map(String::as_str),
        Some("/run/qlam-auth/4242/token-prod")
    );
}

#[test]
fn remote_empty_value_means_current_context() {
    // 22.05 passes "" to the remote side for a bare `--qlam-auth`.
    let mut host = FakeHost::new(Context::Remote, OptionState::Given(Some(String::new())));
    let backend = FakeBackend::default();
    let (_, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Continue);
    assert!(backend.called("obtain home=/home/alice context=None"));
}

#[test]
fn obtain_failure_is_remembered_and_fails_only_task_init() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let backend = FakeBackend {
        obtain_error: Some(
            "the login for context 'default' has expired: run `qlam-auth login`".to_owned(),
        ),
        ..Default::default()
    };
    let (state, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Fail);
    let msg = state.failure.unwrap_or_default();
    assert!(
        msg.contains("could not get a token") && msg.contains("qlam-auth login"),
        "{msg}"
    );
    assert!(host.set.is_empty());
    // Logged as an error once, by task_init (into the job's output).
    assert_eq!(host.errors().len(), 1);
    assert!(host.all_logs().contains("job will fail in task_init"));
}

#[test]
fn prepare_failure_skips_delivery_and_fails_the_job() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let backend = FakeBackend {
        prepare_error: Some("refusing /run/qlam-auth/4242: a symlink".to_owned()),
        ..Default::default()
    };
    let (state, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Fail);
    assert!(!backend.called("obtain"));
    assert!(state.failure.unwrap_or_default().contains("site admins"));
    assert!(host.set.is_empty());
}

#[test]
fn setenv_failure_is_remembered() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    host.setenv_fails = true;
    let backend = FakeBackend::default();
    let (state, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Fail);
    assert!(
        state
            .failure
            .unwrap_or_default()
            .contains("QLAM_TOKEN_FILE")
    );
}

#[test]
fn misconfigured_plugin_refuses_token_jobs_only() {
    let bad = argv(&["issuers=http://insecure.example", "bogus=1"]);
    // A job without the option is not affected and nothing fails.
    let mut host = FakeHost::new(Context::Remote, OptionState::NotGiven);
    let backend = FakeBackend::default();
    let (_, v) = run_step(&mut host, &backend, &bad);
    assert_eq!(v, Verdict::Continue);
    assert!(backend.calls().is_empty());
    // A job with it fails in task_init, never in a hook that drains the node.
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let (state, v) = run_step(&mut host, &backend, &bad);
    assert_eq!(v, Verdict::Fail);
    assert!(state.failure.unwrap_or_default().contains("misconfigured"));
    assert!(backend.calls().is_empty());
    // And sbatch refuses it up front.
    let mut host = FakeHost::new(Context::Allocator, FakeHost::flag());
    assert_eq!(
        init_post_opt(&mut host, &backend, &mut State::default(), &bad),
        Verdict::Fail
    );
}

#[test]
fn epilog_always_cleans_and_never_fails() {
    let mut host = FakeHost::new(Context::JobScript, OptionState::NotGiven);
    let backend = FakeBackend::default();
    assert_eq!(
        job_epilog(&mut host, &backend, &argv(&["token_dir=/var/run/qt"])),
        Verdict::Continue
    );
    assert_eq!(backend.calls(), vec!["remove /var/run/qt 4242"]);
}

#[test]
fn batch_step_exit_cleans_other_steps_do_not() {
    let backend = FakeBackend::default();
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    host.step = Some(3);
    assert_eq!(
        exit(&mut host, &backend, &State::default(), &argv(&[])),
        Verdict::Continue
    );
    assert!(backend.calls().is_empty());
    host.step = Some(BATCH_STEP);
    assert_eq!(
        exit(&mut host, &backend, &State::default(), &argv(&[])),
        Verdict::Continue
    );
    assert_eq!(backend.calls(), vec!["remove /run/qlam-auth 4242"]);
    let mut sbatch = FakeHost::new(Context::Allocator, FakeHost::flag());
    sbatch.step = Some(BATCH_STEP);
    assert_eq!(
        exit(&mut sbatch, &backend, &State::default(), &argv(&[])),
        Verdict::Continue
    );
    assert_eq!(backend.calls().len(), 1);
}

#[test]
fn option_callback_validates_and_records() {
    let log = |_: Level, _: &str| {};
    let mut state = State::default();
    assert_eq!(
        option_callback(&log, &mut state, Some("bad name")),
        Verdict::Fail
    );
    assert_eq!(state.option_from_callback, None);
    assert_eq!(option_callback(&log, &mut state, None), Verdict::Continue);
    assert_eq!(state.option_from_callback, Some(None));
    // The recorded value stands in when spank_option_getopt does not report the option.
    let mut host = FakeHost::new(Context::Remote, OptionState::NotGiven);
    let backend = FakeBackend::default();
    assert_eq!(
        init_post_opt(&mut host, &backend, &mut state, &argv(&[])),
        Verdict::Continue
    );
    assert!(backend.called("prepare"));
}

#[test]
fn relative_config_dir_is_refused_at_submission_and_in_the_job() {
    let mut host = FakeHost::new(Context::Allocator, FakeHost::flag());
    host.env
        .insert("QSH_CONFIG_DIR".to_owned(), "qsh-test".to_owned());
    let backend = FakeBackend::default();
    assert_eq!(
        init_post_opt(&mut host, &backend, &mut State::default(), &argv(&[])),
        Verdict::Fail
    );
    assert!(
        host.errors()[0].contains("realpath qsh-test"),
        "{:?}",
        host.errors()
    );
    assert!(backend.calls().is_empty());

    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    host.env
        .insert("QSH_CONFIG".to_owned(), "conf.json".to_owned());
    let (state, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Fail);
    assert!(
        state
            .failure
            .unwrap_or_default()
            .contains("QSH_CONFIG=conf.json")
    );
    assert!(!backend.called("obtain"));
}

#[test]
fn option_values() {
    assert_eq!(parse_option_value(None), Ok(Requested { context: None }));
    assert_eq!(
        parse_option_value(Some("(null)")),
        Ok(Requested { context: None })
    );
    assert_eq!(
        parse_option_value(Some("")),
        Ok(Requested { context: None })
    );
    assert_eq!(
        parse_option_value(Some("lab-2.prod@site+x")),
        Ok(Requested {
            context: Some("lab-2.prod@site+x".to_owned())
        })
    );
    for bad in [
        ".hidden",
        "a/b",
        "a b",
        "x\n",
        &"c".repeat(MAX_CONTEXT_LEN + 1),
    ] {
        assert!(parse_option_value(Some(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn a_job_submitting_a_job_does_not_pass_its_token_on() {
    for option in [OptionState::NotGiven, OptionState::Given(None)] {
        let mut host = FakeHost::new(Context::Allocator, option);
        host.env
            .insert("QLAM_TOKEN_FILE".into(), "/run/qlam-auth/41/token".into());
        host.env
            .insert("BEARER_TOKEN_FILE".into(), "/run/qlam-auth/41/token".into());
        host.env.insert("QLAM_ACCESS_TOKEN".into(), "tok".into());
        host.env.insert("OTHER".into(), "x".into());
        let mut state = State::default();
        let _ = init_post_opt(&mut host, &FakeBackend::default(), &mut state, &argv(&[]));
        for v in TOKEN_VARS {
            assert!(!host.env.contains_key(v), "{v} travelled into the new job");
        }
        assert!(host.env.contains_key("OTHER"));
    }
    // A user's own BEARER_TOKEN_FILE, outside token_dir, is theirs to pass on.
    let mut host = FakeHost::new(Context::Allocator, OptionState::NotGiven);
    host.env
        .insert("BEARER_TOKEN_FILE".into(), "/home/u/tok".into());
    let _ = init_post_opt(
        &mut host,
        &FakeBackend::default(),
        &mut State::default(),
        &argv(&[]),
    );
    assert_eq!(
        host.env.get("BEARER_TOKEN_FILE").map(String::as_str),
        Some("/home/u/tok")
    );
    // srun inside the job (local context) keeps them: its steps belong to the same job.
    let mut host = FakeHost::new(Context::Local, OptionState::NotGiven);
    host.env
        .insert("QLAM_TOKEN_FILE".into(), "/run/qlam-auth/41/token".into());
    let _ = init_post_opt(
        &mut host,
        &FakeBackend::default(),
        &mut State::default(),
        &argv(&[]),
    );
    assert!(host.env.contains_key("QLAM_TOKEN_FILE"));
}

#[test]
fn a_short_job_needs_its_token_only_until_its_end() {
    let args = Args {
        min_valid: Duration::from_secs(3600),
        ..Args::default()
    };
    let mut host = FakeHost::new(Context::Remote, OptionState::Given(None));
    assert_eq!(
        needed_validity(&host, &args).min_valid,
        Duration::from_secs(3600)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    host.env
        .insert("SLURM_JOB_END_TIME".into(), (now + 600).to_string());
    let got = needed_validity(&host, &args).min_valid;
    assert!(
        got <= Duration::from_secs(600) + END_TIME_MARGIN && got > END_TIME_MARGIN,
        "{got:?}"
    );
    // A job that runs longer than min_valid: min_valid stands.
    host.env
        .insert("SLURM_JOB_END_TIME".into(), (now + 86_400).to_string());
    assert_eq!(
        needed_validity(&host, &args).min_valid,
        Duration::from_secs(3600)
    );
    // Garbage is ignored.
    host.env.insert("SLURM_JOB_END_TIME".into(), "soon".into());
    assert_eq!(
        needed_validity(&host, &args).min_valid,
        Duration::from_secs(3600)
    );
}

/// Slurm 22.05 does not set `SLURM_JOB_END_TIME`, and a user can set it: with token exchange
/// slurmctld's end time (through `squeue=`) wins; the variable is the fallback; `squeue=off`
/// asks nobody, and neither does a plugin without exchange.
#[test]
fn the_job_end_comes_from_slurmctld_before_the_jobs_environment() {
    use crate::args::Squeue;
    let mut host = FakeHost::new(Context::Remote, OptionState::Given(None));
    let squeue = PathBuf::from("/opt/site/bin/squeue");
    let exchange = token_core::exchange::Policy {
        mode: token_core::exchange::Mode::Required,
        ..Default::default()
    };
    let args = Args {
        squeue: Squeue::Path(squeue.clone()),
        exchange: exchange.clone(),
        ..Args::default()
    };
    host.env
        .insert("SLURM_JOB_END_TIME".into(), "4000000000".into());
    host.slurm_end = Some(1_800_000_000);
    assert_eq!(
        job_end(&host, &args),
        Some(1_800_000_000),
        "slurmctld's value"
    );
    assert_eq!(*host.squeue_asked.borrow(), vec![squeue.clone()]);
    host.slurm_end = None;
    assert_eq!(
        job_end(&host, &args),
        Some(4_000_000_000),
        "the variable when squeue fails"
    );
    let off = Args {
        squeue: Squeue::Off,
        exchange,
        ..Args::default()
    };
    host.slurm_end = Some(1_800_000_000);
    host.squeue_asked.borrow_mut().clear();
    assert_eq!(job_end(&host, &off), Some(4_000_000_000));
    assert!(
        host.squeue_asked.borrow().is_empty(),
        "squeue=off runs no squeue"
    );
    let no_exchange = Args {
        squeue: Squeue::Path(squeue.clone()),
        ..Args::default()
    };
    assert_eq!(job_end(&host, &no_exchange), Some(4_000_000_000));
    assert!(
        host.squeue_asked.borrow().is_empty(),
        "without exchange no step start asks slurmctld"
    );
    host.env.remove("SLURM_JOB_END_TIME");
    assert_eq!(job_end(&host, &off), None);
}

#[test]
fn automatic_injection_gives_a_token_without_the_flag() {
    let mut host = FakeHost::new(Context::Remote, OptionState::NotGiven);
    let backend = FakeBackend::default();
    let (_, v) = run_step(&mut host, &backend, &argv(&["inject=auto"]));
    assert_eq!(v, Verdict::Continue);
    assert!(backend.called("obtain"), "{:?}", backend.calls());
    assert!(host.set.contains_key(ENV_TOKEN_FILE));
    // --qlam-auth=no opts the job out.
    let mut host = FakeHost::new(Context::Remote, OptionState::Given(Some("no".into())));
    let backend = FakeBackend::default();
    let (_, v) = run_step(&mut host, &backend, &argv(&["inject=auto"]));
    assert_eq!(v, Verdict::Continue);
    assert!(backend.calls().is_empty(), "{:?}", backend.calls());
    assert!(host.set.is_empty());
}

#[test]
fn the_users_environment_sets_their_default() {
    for (site, user, wanted) in [
        ("inject=auto", "no", false),
        ("inject=requested", "yes", true),
        ("inject=requested", "", false),
    ] {
        let mut host = FakeHost::new(Context::Remote, OptionState::NotGiven);
        if !user.is_empty() {
            host.env.insert(ENV_INJECT.to_owned(), user.to_owned());
        }
        let backend = FakeBackend::default();
        run_step(&mut host, &backend, &argv(&[site]));
        assert_eq!(backend.called("obtain"), wanted, "{site} {user}");
    }
}

#[test]
fn automatic_injection_never_refuses_a_user_without_login() {
    let no_login = || FakeBackend {
        login_error: Some("not logged in for context 'default': run `qlam-auth login`".into()),
        obtain_error: Some("not logged in for context 'default': run `qlam-auth login`".into()),
        ..Default::default()
    };
    let mut sbatch = FakeHost::new(Context::Allocator, OptionState::NotGiven);
    let backend = no_login();
    assert_eq!(
        init_post_opt(
            &mut sbatch,
            &backend,
            &mut State::default(),
            &argv(&["inject=auto"])
        ),
        Verdict::Continue
    );
    assert!(backend.called("check_login"), "the login is looked at");
    assert!(sbatch.errors().is_empty(), "{:?}", sbatch.errors());
    let mut host = FakeHost::new(Context::Remote, OptionState::NotGiven);
    let backend = no_login();
    let (state, v) = run_step(&mut host, &backend, &argv(&["inject=auto"]));
    assert_eq!(v, Verdict::Continue, "the job runs, without a token");
    assert_eq!(state.failure, None);
    assert!(!host.set.contains_key(ENV_TOKEN_FILE));
    // With the flag, the same user is refused at submission.
    let mut sbatch = FakeHost::new(Context::Allocator, FakeHost::flag());
    assert_eq!(
        init_post_opt(
            &mut sbatch,
            &no_login(),
            &mut State::default(),
            &argv(&["inject=auto"])
        ),
        Verdict::Fail
    );
}

#[test]
fn without_allowed_issuers_no_token_is_delivered() {
    let none = [NO_SITE_ARG.to_owned()];
    let mut sbatch = FakeHost::new(Context::Allocator, FakeHost::flag());
    let backend = FakeBackend::default();
    assert_eq!(
        init_post_opt(&mut sbatch, &backend, &mut State::default(), &none),
        Verdict::Fail
    );
    let e = sbatch.errors().join("\n");
    assert!(e.contains("site admins") && e.contains("issuers"), "{e}");
    assert!(backend.calls().is_empty());
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let (_, v) = run_step(&mut host, &backend, &none);
    assert_eq!(v, Verdict::Fail, "the job fails, the node stays up");
    assert!(!backend.called("obtain"));
    assert!(
        host.errors()
            .iter()
            .any(|m| m.contains("plugstack.conf") && m.contains("issuers=")),
        "the admins read the fix in slurmd's log: {:?}",
        host.errors()
    );
    // A job that did not ask is not refused.
    let mut sbatch = FakeHost::new(Context::Allocator, OptionState::NotGiven);
    let auto = [NO_SITE_ARG.to_owned(), "inject=auto".to_owned()];
    assert_eq!(
        init_post_opt(&mut sbatch, &backend, &mut State::default(), &auto),
        Verdict::Continue
    );
}
/// Security review item 3: values from the user's side (a `QSH_CONFIG` path, the token's `sub`,
/// the config's `client_id`) cannot forge a line in slurmd's log: every line the plugin hands to
/// Slurm has its control characters escaped.
#[test]
fn user_values_with_newlines_never_forge_log_lines() {
    let forged = "x\nqlam-auth: job=1 uid=0 token=sha256:000000000000 forged\x1b[2K";
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let backend = FakeBackend {
        identity: Some((forged.to_owned(), forged.to_owned())),
        ..FakeBackend::default()
    };
    let (_, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Continue);
    let mut lines = host.logs.borrow().clone();
    assert!(
        lines.iter().any(|(_, m)| m.contains("subject=x\n")),
        "{lines:?}"
    );

    let mut host = FakeHost::new(Context::Allocator, FakeHost::flag());
    host.env.insert("QSH_CONFIG".to_owned(), forged.to_owned());
    let mut state = State::default();
    let v = init_post_opt(&mut host, &FakeBackend::default(), &mut state, &argv(&[]));
    assert_eq!(v, Verdict::Fail, "a relative QSH_CONFIG is refused");
    lines.extend(host.logs.borrow().iter().cloned());
    assert!(
        lines.iter().any(|(_, m)| m.contains("QSH_CONFIG=x\n")),
        "{lines:?}"
    );

    for (_, msg) in &lines {
        let line = crate::ffi::log_line(msg);
        assert!(!line.contains(['\n', '\r', '\x1b']), "{line:?}");
        if msg.contains('\n') {
            assert!(line.contains("x\\nqlam-auth: job=1"), "{line:?}");
        }
    }
}

const SITE_EXCHANGE: [&str; 4] = [
    "exchange=required",
    "exchange_audience=https://storage.example,https://api.example",
    "exchange_scope=read,write",
    "exchange_max_lifetime=3600",
];

#[test]
fn a_scope_beyond_the_sites_is_refused_at_submission() {
    let mut host = FakeHost::new(Context::Allocator, FakeHost::flag());
    host.env
        .insert(ENV_WANT_SCOPE.to_owned(), "read admin".to_owned());
    let backend = FakeBackend::default();
    let v = init_post_opt(
        &mut host,
        &backend,
        &mut State::default(),
        &argv(&SITE_EXCHANGE),
    );
    assert_eq!(v, Verdict::Fail);
    let e = host.errors().join("\n");
    assert!(
        e.contains("'admin' is not allowed") && e.contains("allowed: read write"),
        "{e}"
    );
    assert!(e.contains(ENV_WANT_SCOPE), "{e}");
    assert!(!backend.called("check_login"));
    // Asking for a narrow token where the site makes none is refused too.
    let mut host = FakeHost::new(Context::Allocator, FakeHost::flag());
    host.env
        .insert(ENV_WANT_AUDIENCE.to_owned(), "https://x".to_owned());
    let v = init_post_opt(&mut host, &backend, &mut State::default(), &argv(&[]));
    assert_eq!(v, Verdict::Fail);
    assert!(host.errors().join("\n").contains("exchange=off"));
}

#[test]
fn the_job_gets_the_exchanged_token_logged_by_fingerprint_and_revoked_at_the_end() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    host.step = Some(BATCH_STEP);
    host.env
        .insert(ENV_WANT_SCOPE.to_owned(), "read".to_owned());
    let backend = FakeBackend::default();
    let (state, v) = run_step(&mut host, &backend, &argv(&SITE_EXCHANGE));
    assert_eq!(v, Verdict::Continue, "{:?}", state.failure);
    assert!(backend.called(
        r#"exchange audience=Some("https://storage.example") scope=Some("read") lifetime=Some(3600)"#
    ), "{:?}", backend.calls());
    assert!(backend.called(r#"meta /run/qlam-auth/4242 token Some("https://storage.example")"#));
    assert_eq!(
        host.set.get(ENV_ACCESS_TOKEN).map(String::as_str),
        Some(JOB_TOKEN)
    );
    let logs = host.all_logs();
    assert!(
        logs.contains("exchanged=yes subject=alice client_id=qlam-cli audience=https://storage.example scope=read"),
        "{logs}"
    );
    assert!(!logs.contains(JOB_TOKEN) && !logs.contains(TOKEN), "{logs}");
    assert_eq!(state.job_tokens.tokens.len(), 1);
    assert_eq!(
        exit(&mut host, &backend, &state, &argv(&SITE_EXCHANGE)),
        Verdict::Continue
    );
    assert!(
        backend.called("revoke 1 within 5 s"),
        "{:?}",
        backend.calls()
    );
    assert!(
        host.all_logs()
            .contains("job=4242 revoked 1 job token(s): sha256:")
    );
}

#[test]
fn the_job_token_lives_no_longer_than_the_job() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    host.env
        .insert("SLURM_JOB_END_TIME".to_owned(), end.to_string());
    let backend = FakeBackend::default();
    let (_, v) = run_step(&mut host, &backend, &argv(&SITE_EXCHANGE));
    assert_eq!(v, Verdict::Continue);
    let call = backend
        .calls()
        .into_iter()
        .find(|c| c.starts_with("exchange"))
        .unwrap();
    let secs: u64 = call
        .rsplit("lifetime=Some(")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    // 600 s left plus the margin, never the site's 3600 s.
    assert!(
        (600..=600 + EXCHANGE_MARGIN.as_secs()).contains(&secs),
        "{call}"
    );
}

#[test]
fn without_the_grant_required_fails_the_job_and_preferred_falls_back() {
    let no_grant = "the identity provider refused the request: unsupported_grant_type".to_owned();
    let backend = FakeBackend {
        exchange_error: Some(no_grant.clone()),
        ..Default::default()
    };
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let (state, v) = run_step(&mut host, &backend, &argv(&SITE_EXCHANGE));
    assert_eq!(v, Verdict::Fail, "only the job fails, in task_init");
    let f = state.failure.unwrap();
    assert!(
        f.contains("token exchange is required") && f.contains("unsupported_grant_type"),
        "{f}"
    );
    assert!(!host.set.contains_key(ENV_ACCESS_TOKEN));

    let mut preferred = SITE_EXCHANGE.to_vec();
    preferred[0] = "exchange=preferred";
    let backend = FakeBackend {
        exchange_error: Some(no_grant),
        ..Default::default()
    };
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let (state, v) = run_step(&mut host, &backend, &argv(&preferred));
    assert_eq!(v, Verdict::Continue);
    assert!(
        state.job_tokens.tokens.is_empty(),
        "the user's token is never revoked"
    );
    assert_eq!(
        host.set.get(ENV_ACCESS_TOKEN).map(String::as_str),
        Some(TOKEN)
    );
    let e = host.errors().join("\n");
    assert!(
        e.contains("token exchange failed") && e.contains("exchange=preferred"),
        "{e}"
    );
}

/// A refusal a site admin audits (here: a grant the site does not allow) is logged under the
/// security target too, with the job and its user; an ordinary failure (not logged in) is not.
#[test]
fn refusals_are_logged_under_the_security_target() {
    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let backend = FakeBackend {
        refuses_grant: true,
        ..FakeBackend::default()
    };
    let (_, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Fail, "only the job fails");
    let logs = host.all_logs();
    assert!(
        logs.contains(
            "[qlam-auth::security] job=4242 uid=1001 refused: the qsh config uses grant_type \
             token_exchange"
        ),
        "{logs}"
    );

    let mut host = FakeHost::new(Context::Remote, FakeHost::flag());
    let backend = FakeBackend {
        obtain_error: Some("not logged in for context 'default': run `qlam-auth login`".into()),
        ..FakeBackend::default()
    };
    let (_, v) = run_step(&mut host, &backend, &argv(&[]));
    assert_eq!(v, Verdict::Fail);
    assert!(
        !host.all_logs().contains("qlam-auth::security"),
        "{}",
        host.all_logs()
    );
}
