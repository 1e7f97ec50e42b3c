//! Properties of the plugstack argument parser: whatever an admin writes on the plugin's line,
//! parsing never panics (a panic would fail every hook of every job), every bound holds, and a
//! broken security argument fails closed.
//!
//! Longer runs: `PROPTEST_CASES=100000 cargo test --release -p qlam-spank --test proptest_args`
//! (bench/fuzz.sh).

use proptest::prelude::*;
use qlam_spank::args::{Args, MAX_MIN_VALID, MAX_TIMEOUT};
use std::time::Duration;

const KEYS: &[&str] = &[
    "min_valid",
    "token_dir",
    "env_token",
    "ca_bundle",
    "timeout",
    "lock_timeout",
    "issuers",
    "m2m",
    "m2m_cache",
    "bogus",
    "",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,25}",
        "-?[0-9]{1,4}",
        Just("yes".to_owned()),
        Just("no".to_owned()),
        "/[a-z/]{0,20}",
        "(https?://)?[a-z0-9.:/,=]{0,40}",
        "[a-z-]{1,10}:/[a-z/.]{1,20}(:[a-z,]{0,10})?",
    ]
}

fn argument() -> impl Strategy<Value = String> {
    prop_oneof![
        (proptest::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k}={v}")),
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn parsing_never_panics_and_bounds_hold(argv in proptest::collection::vec(argument(), 0..12)) {
        let (args, _problems) = Args::parse(&argv);
        prop_assert!(args.min_valid <= MAX_MIN_VALID);
        prop_assert!(args.timeout >= Duration::from_secs(1) && args.timeout <= MAX_TIMEOUT);
        prop_assert!(args.lock_timeout() <= args.timeout);
        prop_assert!(args.http_timeout() >= Duration::from_secs(1));
        prop_assert!(args.connect_timeout() <= args.http_timeout());
        prop_assert!(args.token_dir.is_absolute() || args.misconfigured.is_some());
        if let Some(ca) = &args.ca_bundle {
            prop_assert!(ca.is_absolute());
        }
    }

    #[test]
    fn unknown_or_malformed_arguments_are_reported_not_fatal(junk in "[a-z_]{1,12}", v in any::<String>()) {
        prop_assume!(!KEYS.contains(&junk.as_str()));
        let (args, problems) = Args::parse(&[format!("{junk}={v}"), junk.clone()]);
        prop_assert_eq!(problems.len(), 2);
        prop_assert_eq!(args, Args::default());
    }

    #[test]
    fn a_relative_security_path_fails_closed(p in "[a-z][a-z/]{0,20}") {
        for key in ["token_dir", "ca_bundle"] {
            let (args, _) = Args::parse(&[format!("{key}={p}")]);
            prop_assert!(args.misconfigured.is_some(), "{key}={p} was accepted");
        }
    }
}
