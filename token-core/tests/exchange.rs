//! RFC 8693 token exchange against the real test IdP (tests/idp registers the grant): a narrow
//! job token from the user's login, checked by a resource that looks at the audience, by
//! introspection and after RFC 7009 revocation; and the machine-to-machine `token_exchange`
//! config path with its subject token from the caller's environment.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;
use token_core::Error;
use token_core::broker::{Broker, ObtainOptions};
use token_core::exchange::{Exchanged, Mode, Policy};
use token_core::paths::QshPaths;

const API: &str = "https://slurm.example/api";
const STORAGE: &str = "https://storage.example/data";

fn the_idp() -> &'static Idp {
    idp(&[("IDP_EXCHANGE_TTL", "3600")])
}

fn opts() -> ObtainOptions {
    ObtainOptions {
        min_valid: Duration::from_secs(60),
        lock_timeout: Duration::from_secs(30),
    }
}

fn site() -> Policy {
    Policy {
        mode: Mode::Required,
        audiences: vec![STORAGE.into(), API.into()],
        scopes: vec!["storage.read".into(), "storage.write".into()],
        max_lifetime: Some(Duration::from_secs(600)),
    }
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn a_job_token_has_exactly_the_audience_scope_and_lifetime_asked_and_dies_when_revoked() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "alice");
    let broker = home.broker(idp, USER_CONTEXT);
    let user = broker.obtain(&opts()).unwrap().access_token;

    let req = site()
        .resolve(None, Some("storage.read"), Some(Duration::from_secs(120)))
        .unwrap();
    let oauth = broker.oauth().unwrap();
    let job = Exchanged::from_response(oauth.exchange_access_token(&user, &req).unwrap(), &req);
    assert_ne!(job.token.expose(), user.expose());
    assert_eq!(job.scope.as_deref(), Some("storage.read"));
    assert_eq!(job.lifetime, Some(Duration::from_secs(120)));
    assert!(!job.outlives(&req));

    // A resource for the job's audience takes it; one for another audience refuses it.
    assert_eq!(idp.resource_status(STORAGE, job.token.expose()), "200");
    assert_eq!(idp.resource_status(API, job.token.expose()), "401");
    let v = idp.introspect(job.token.expose());
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["aud"], STORAGE);
    assert_eq!(v["scope"], "storage.read");
    assert_eq!(v["sub"], "alice");
    assert!(
        v["exp"].as_i64().unwrap() - v["iat"].as_i64().unwrap() <= 120,
        "{v}"
    );

    // RFC 7009: the job token dies; the user's login does not.
    assert!(oauth.revoke(&job.token, "access_token").unwrap());
    assert_eq!(idp.introspect(job.token.expose())["active"], false);
    assert_eq!(idp.resource_status(STORAGE, job.token.expose()), "401");
    assert!(
        idp.accepts(user.expose()),
        "the user's own token still works"
    );
    let again = broker.obtain(&opts()).unwrap();
    assert_eq!(again.access_token.expose(), user.expose());
}

#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn the_idp_refuses_a_scope_beyond_its_own_policy_without_quoting_a_token() {
    let idp = the_idp();
    let _g = shared();
    let home = QshHome::new(idp);
    home.device_login(idp, "bob");
    let broker = home.broker(idp, USER_CONTEXT);
    let user = broker.obtain(&opts()).unwrap().access_token;
    // An open site policy passes the request on; the IdP's own policy refuses it.
    let req = Policy::default()
        .resolve(Some(STORAGE), Some("storage.admin"), None)
        .unwrap();
    let err = broker
        .oauth()
        .unwrap()
        .exchange_access_token(&user, &req)
        .unwrap_err();
    assert!(
        matches!(&err, Error::IdpRefused { code, .. } if *code == token_core::oauth::OAuthErrorCode::InvalidScope),
        "{err:?}"
    );
    assert!(!err.to_string().contains(user.expose()));
}

/// A qsh home with one `token_exchange` context whose subject token is `env:JOB_SUBJECT`.
fn exchange_home(idp: &Idp) -> (tempfile::TempDir, QshPaths) {
    let config = json!({
        "current_context": "te",
        "contexts": [{"name": "te", "qpu": "test", "defaults": {"auth_provider": "te"},
            "auth_providers": [{"provider": "oauth", "name": "te", "auth_base_url": idp.issuer,
                "client_id": "qlam-cli", "grant_type": "token_exchange",
                "subject_token": "env:JOB_SUBJECT",
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "audience": STORAGE, "scope": "storage.read"}]}]
    });
    private_qsh_home("qsh-te-", &config)
}

/// Regression (issue 9 item 4): the subject token comes from the environment the caller hands
/// over (a job's), not from this process's environment, which has no JOB_SUBJECT at all.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn m2m_token_exchange_takes_its_subject_token_from_the_callers_environment() {
    let idp = the_idp();
    let _g = shared();
    assert!(std::env::var_os("JOB_SUBJECT").is_none());
    let home = QshHome::new(idp);
    home.device_login(idp, "carol");
    let user = home
        .broker(idp, USER_CONTEXT)
        .obtain(&opts())
        .unwrap()
        .access_token;

    let (_dir, paths) = exchange_home(idp);
    let subject = user.expose().to_owned();
    let provider = token_core::config::Config::load(&paths)
        .unwrap()
        .provider_with_env(Some("te"), &|k| {
            (k == "JOB_SUBJECT").then(|| subject.clone())
        })
        .unwrap();
    let broker = Broker::new(&paths, provider, &idp.http_settings(), &|k| {
        std::env::var(k).ok()
    })
    .unwrap()
    .with_http(idp.http());
    let got = broker.obtain(&opts()).unwrap();
    assert_eq!(
        idp.resource_status(STORAGE, got.access_token.expose()),
        "200"
    );
    assert_eq!(idp.introspect(got.access_token.expose())["sub"], "carol");

    // Without the variable in the caller's environment: the fix is in the message.
    let provider = token_core::config::Config::load(&paths)
        .unwrap()
        .provider_with_env(Some("te"), &|_| None)
        .unwrap();
    let err = Broker::new(&paths, provider, &idp.http_settings(), &|k| {
        std::env::var(k).ok()
    })
    .unwrap()
    .with_http(idp.http())
    .oauth()
    .unwrap()
    .machine_token()
    .unwrap_err();
    assert!(
        err.to_string().contains("$JOB_SUBJECT is unset or empty"),
        "{err}"
    );
}

/// Single flight per job, not per node: eight "nodes" of one job start at once and ask the
/// job's cache in the user's home; one exchange reaches the IdP and all get its token.
#[test]
#[ignore = "needs node (the test IdP): run by tests/run-all.sh"]
fn eight_nodes_of_one_job_cost_one_exchange() {
    use token_core::jobcache::{From, JobCache};
    let idp = the_idp();
    let _g = exclusive();
    let home = QshHome::new(idp);
    home.device_login(idp, "dave");
    let req = site()
        .resolve(None, None, Some(Duration::from_secs(300)))
        .unwrap();
    let successes = |idp: &Idp| {
        idp.stats()["successes"]["token-exchange"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = successes(idp);
    let results: Vec<(String, From)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let broker = home.broker(idp, USER_CONTEXT);
                    let (x, _, from) = JobCache::new(&home.paths)
                        .get_or_exchange(
                            4711,
                            "token",
                            &req,
                            Duration::from_secs(60),
                            Duration::from_secs(20),
                            &mut || {
                                let (u, x) =
                                    token_core::exchange::job_token(&broker, &opts(), &req)?;
                                Ok((x, token_core::jwt::sub(u.access_token.expose())))
                            },
                        )
                        .unwrap();
                    (x.token.expose().to_owned(), from)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(successes(idp) - before, 1, "one exchange for the whole job");
    assert!(results.iter().all(|(t, _)| t == &results[0].0));
    assert_eq!(
        results
            .iter()
            .filter(|(_, f)| *f == From::Exchanged)
            .count(),
        1
    );
    assert_eq!(idp.resource_status(STORAGE, &results[0].0), "200");
    assert!(JobCache::new(&home.paths).remove(4711, "token").unwrap());
}
