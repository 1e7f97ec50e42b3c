//! Property tests of every parser that reads outside input: config.json, the credentials file,
//! token endpoint answers, timestamps, JWT claims. Arbitrary bytes and structured-but-hostile
//! inputs never panic and give typed errors; where a writer exists, what it writes reads back.
//!
//! `PROPTEST_CASES` sets the number of cases per property (default 256); `bench/fuzz.sh` runs
//! them much longer.

#![allow(clippy::unwrap_used)] // tests: a panic is a failing test

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use std::path::Path;
use token_core::Error;
use token_core::config::{Config, normalize_issuer};
use token_core::http::HttpResponse;
use token_core::oauth::parse_token_response;
use token_core::secret::Secret;
use token_core::store::{TokenSet, parse_credentials, render_credentials};
use token_core::time::Timestamp;

// ---------------------------------------------------------------------------------------------
// Generators

/// Strings that stress parsers: empty, ASCII, control characters, quotes, multi-byte UTF-8.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect()),
        3 => vec(select(vec!['a', 'Z', '0', '9', '-', '_', '.', ':', '/', ' ', '+', 'T', '"', '\\', '\n', '\u{0}', 'é', '€', '😀']), 0..24)
            .prop_map(|c| c.into_iter().collect()),
        1 => Just(String::new()),
    ]
}

/// Field names that the parsers look at, plus arbitrary ones.
const KEYS: &[&str] = &[
    "version",
    "plugin",
    "context",
    "created_at",
    "updated_at",
    "expires_at",
    "data",
    "extra",
    "token_data",
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "id_token",
    "scope",
    "error",
    "error_description",
    "current_context",
    "contexts",
    "name",
    "defaults",
    "auth_provider",
    "auth_providers",
    "provider",
    "auth_base_url",
    "client_id",
    "client_secret",
    "grant_type",
    "audience",
    "tenant",
    "subject_token",
    "subject_token_type",
    "sub",
    "email",
    "exp",
    "preferred_username",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => select(KEYS).prop_map(str::to_owned), 1 => text()]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        select(vec![0i64, 1, -1, 60, 3600, 86_400, i64::MAX, i64::MIN]).prop_map(Value::from),
    ]
}

/// Arbitrary JSON, biased towards the field names the parsers know.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
        timestamp_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key(), inner, 0..10).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Arbitrary bytes, JSON text, and JSON text with one byte changed.
fn bytes_for(shape: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..512),
        shape.clone().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (shape, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, i, b)| {
            let mut bytes = serde_json::to_vec_pretty(&v).unwrap();
            let at = i.index(bytes.len());
            bytes[at] = b;
            bytes
        }),
    ]
}

/// Times Python's datetime can hold (years 1..=9999), in microseconds since the epoch.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    const MIN: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    timestamp_between(MIN, MAX)
}

fn timestamp_between(min: i64, max: i64) -> impl Strategy<Value = Timestamp> {
    (min..=max, 0i64..1_000_000, any::<bool>()).prop_map(|(s, us, whole)| {
        let t = Timestamp::from_unix_seconds(s);
        if whole {
            t
        } else {
            // No public constructor from micros: go through the parser.
            Timestamp::parse(&format!("{}.{us:06}+00:00", &t.to_isoformat()[..19])).unwrap()
        }
    })
}

/// Timestamp-like text: valid spellings, and valid spellings with one character replaced.
fn timestamp_text() -> impl Strategy<Value = String> {
    let valid = (
        timestamp(),
        any::<bool>(),
        select(vec!["+00:00", "Z", "+05:30", "-0800", "+23:59", "z"]),
    )
        .prop_map(|(t, iso, off)| {
            let s = if iso {
                t.to_isoformat()
            } else {
                t.to_python_str()
            };
            format!("{}{off}", s.trim_end_matches("+00:00"))
        })
        .boxed();
    prop_oneof![
        valid.clone(),
        (valid, any::<prop::sample::Index>(), any::<char>()).prop_map(|(s, i, c)| {
            let mut chars: Vec<char> = s.chars().collect();
            let at = i.index(chars.len());
            chars[at] = c;
            chars.into_iter().collect()
        }),
    ]
}

/// Non-empty by construction (a filter would reject too often over a million cases).
fn secret_text() -> impl Strategy<Value = String> {
    (any::<char>(), text()).prop_map(|(c, t)| format!("{c}{t}"))
}

fn token_set() -> impl Strategy<Value = TokenSet> {
    (
        secret_text(),
        text(),
        prop::option::of(-1_000_000_000i64..1_000_000_000),
        prop::option::of(secret_text()),
        prop::option::of(secret_text()),
        prop::option::of(text()),
        // Leave room for created_at + expires_in to stay within years 1..=9999.
        timestamp_between(-61_000_000_000, 252_000_000_000),
    )
        .prop_map(|(at, tt, ei, rt, it, scope, created)| TokenSet {
            access_token: Secret::new(at),
            token_type: tt,
            expires_in: ei,
            refresh_token: rt.map(Secret::new),
            id_token: it.map(Secret::new),
            scope,
            created_at: created,
        })
}

/// Credentials-file-shaped JSON with hostile values in every field.
fn credentials_json() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        json_value(),
        text().prop_map(Value::String),
        timestamp_text().prop_map(Value::String)
    ];
    (
        prop_oneof![Just(json!(1)), json_value()],
        btree_map(select(vec!["access_token", "token_type", "expires_in", "refresh_token", "id_token", "scope", "created_at"]), field.clone(), 0..7),
        btree_map(select(vec!["created_at", "updated_at", "expires_at", "data", "plugin", "context"]), field, 0..6),
    )
        .prop_map(|(version, td, top)| {
            let mut v = json!({"version": version, "extra": {"token_data": Value::Object(td.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())}});
            for (k, x) in top {
                v[k] = x;
            }
            v
        })
}

/// config.json-shaped JSON with hostile values.
fn config_json() -> impl Strategy<Value = Value> {
    let s = prop_oneof![
        3 => select(vec!["lab", "prod", "testidp", "oauth", "device_code", "client_credentials",
            "authorization_code", "token_exchange", "https://idp.example", "http://127.0.0.1:8080",
            "idp.example/", "https://u@h", "https://h?x", "env:SECRET", "file:/nonexistent", ""])
            .prop_map(|s| Value::String(s.to_owned())),
        1 => json_value(),
    ];
    let provider = btree_map(
        select(vec![
            "provider",
            "name",
            "auth_base_url",
            "client_id",
            "client_secret",
            "grant_type",
            "scope",
            "audience",
            "tenant",
        ]),
        s.clone(),
        0..9,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    let context = (
        s.clone(),
        prop::option::of(s.clone()),
        vec(prop_oneof![4 => provider, 1 => json_value()], 0..3),
    )
        .prop_map(|(name, ap, providers)| {
            let mut c = json!({"name": name, "auth_providers": providers});
            if let Some(ap) = ap {
                c["defaults"] = json!({"auth_provider": ap});
            }
            c
        });
    (
        prop::option::of(s),
        vec(prop_oneof![4 => context, 1 => json_value()], 0..3),
    )
        .prop_map(|(cur, contexts)| json!({"current_context": cur, "contexts": contexts}))
}

fn http_response() -> impl Strategy<Value = HttpResponse> {
    let body_json = prop_oneof![
        json_value(),
        btree_map(
            select(vec![
                "access_token",
                "token_type",
                "expires_in",
                "refresh_token",
                "id_token",
                "scope",
                "error",
                "error_description"
            ]),
            prop_oneof![json_value(), text().prop_map(Value::String), number()],
            0..8,
        )
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
    ];
    (
        prop_oneof![
            select(vec![
                200u16, 201, 204, 302, 400, 401, 403, 429, 500, 502, 503
            ]),
            any::<u16>()
        ],
        prop::option::of(prop_oneof![Just("application/json".to_owned()), text()]),
        bytes_for(body_json.boxed()),
        prop::option::of(text()),
    )
        .prop_map(|(status, content_type, body, retry_after)| HttpResponse {
            status,
            content_type,
            date: None,
            retry_after,
            body,
        })
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    /// config.json: never a panic; every failure is a typed configuration error.
    #[test]
    fn config_never_panics(bytes in bytes_for(config_json().boxed()), ctx in prop::option::of(text())) {
        let path = Path::new("/home/u/.qsh/config.json");
        match Config::from_bytes(path, &bytes) {
            Err(e) => prop_assert!(matches!(e, Error::Config { .. }), "{e:?}"),
            Ok(cfg) => {
                let _ = cfg.current_context();
                let _ = cfg.context_names();
                for c in [None, ctx.as_deref()] {
                    match cfg.provider_with_env(c, &|_| None) {
                        Ok(p) => {
                            prop_assert!(!p.name.is_empty() && !p.client_id.is_empty());
                            prop_assert!(p.issuer.starts_with("https://") || p.issuer.starts_with("http://"));
                            prop_assert_eq!(p.cache_key(), format!("oauth_{}_{}", p.context, p.name));
                            // The cache file name is always a plain name in the credentials dir.
                            let f = token_core::store::cache_file_name(&p.cache_key());
                            prop_assert!(f.starts_with("cache_") && f.ends_with(".json") && !f.contains('/'));
                        }
                        Err(e) => prop_assert!(matches!(e, Error::Config { .. }), "{e:?}"),
                    }
                }
            }
        }
    }

    /// A well-formed provider reads back as written.
    #[test]
    fn config_provider_round_trips(
        ctx in "[a-z][a-z0-9_-]{0,12}",
        name in "[a-z][a-z0-9]{0,8}",
        client_id in "[A-Za-z0-9]{1,20}",
        host in "[a-z]{1,10}\\.example",
        audience in prop::option::of("https://[a-z]{1,8}\\.example/api"),
        grant in select(vec!["device_code", "authorization_code"]),
    ) {
        let cfg = json!({"current_context": ctx, "contexts": [{"name": ctx, "defaults": {"auth_provider": name},
            "auth_providers": [{"provider": "oauth", "name": name, "auth_base_url": format!("https://{host}/"),
                "client_id": client_id, "grant_type": grant, "audience": audience}]}]});
        let p = Config::from_bytes(Path::new("c"), &serde_json::to_vec(&cfg).unwrap()).unwrap()
            .provider_with_env(None, &|_| None).unwrap();
        prop_assert_eq!(p.issuer, format!("https://{host}"));
        prop_assert_eq!(p.client_id, client_id);
        prop_assert_eq!(p.audience, audience);
        prop_assert_eq!(p.grant_type.as_str(), grant);
        prop_assert_eq!(p.scope.as_deref(), Some(token_core::config::DEFAULT_USER_SCOPE));
    }

    /// Issuer normalization is idempotent and never yields anything but http(s).
    #[test]
    fn issuer_normalization_is_idempotent(raw in prop_oneof![text(), "(https?://)?[a-z0-9.:\\[\\]@/?#]{0,30}"], loopback in any::<bool>()) {
        // Without whitespace and control characters: the known bug pinned down below.
        let raw: String = raw.chars().filter(|c| !c.is_whitespace() && !c.is_control()).collect();
        if let Ok(n) = normalize_issuer(&raw, loopback) {
            prop_assert!(n.starts_with("https://") || (loopback && n.starts_with("http://")), "{n}");
            prop_assert_eq!(normalize_issuer(&n, loopback), Ok(n.clone()));
        }
    }

    /// An accepted issuer holds no whitespace or control character. (Found by `bench/fuzz.sh`:
    /// "https://idp\n.example" used to be accepted; now only printable ASCII is.)
    #[test]
    fn accepted_issuers_hold_no_whitespace(raw in prop_oneof![text(), "https://[a-z]{1,5}[\\n\\t\\r\\x00\\x7f\u{2003}][a-z]{1,5}"], loopback in any::<bool>()) {
        if let Ok(n) = normalize_issuer(&raw, loopback) {
            prop_assert!(!n.chars().any(|c| c.is_whitespace() || c.is_control()), "{n:?} from {raw:?}");
        }
    }

    /// Credentials file: never a panic; every failure is a typed store error naming the file.
    #[test]
    fn credentials_never_panic(bytes in bytes_for(prop_oneof![credentials_json(), json_value()].boxed())) {
        let path = Path::new("/home/u/.qsh/credentials/cache_x.json");
        match parse_credentials(path, &bytes) {
            Ok(Some(t)) => prop_assert!(!t.access_token.expose().is_empty()),
            Ok(None) => {}
            Err(e) => {
                prop_assert!(matches!(e, Error::Store { .. }), "{e:?}");
                prop_assert!(e.to_string().contains("cache_x.json"));
            }
        }
    }

    /// What we write, we (and so every later job) can read back, field for field.
    #[test]
    fn credentials_round_trip(t in token_set(), ctx in text(), now in timestamp()) {
        let bytes = render_credentials(&ctx, &t, now).unwrap();
        let back = parse_credentials(Path::new("x"), &bytes).unwrap().unwrap();
        prop_assert_eq!(back, t);
    }

    /// Whatever a token endpoint answers that we accept, we can store and read back. (An
    /// `expires_in` so large that the expiry is past year 9999 would make the file unreadable,
    /// for us and for QLAM Core's datetime alike.)
    #[test]
    fn accepted_token_responses_can_be_stored(res in http_response()) {
        if let Ok(r) = parse_token_response("https://idp/token", &res) {
            let t = r.rotated_from(None);
            let bytes = render_credentials("lab", &t, Timestamp::now()).unwrap();
            prop_assert!(parse_credentials(Path::new("x"), &bytes).is_ok(),
                "expires_in {:?} gives an unreadable file", t.expires_in);
        }
    }

    /// The same, aimed at `expires_in`: any number or numeric string an IdP may send. (Found by
    /// this property: an `expires_in` past year 9999 used to make the stored file unreadable;
    /// `parse_token_response` now caps it at ten years.)
    #[test]
    fn any_accepted_expires_in_can_be_stored(
        ei in prop_oneof![number(), any::<i64>().prop_map(|n| Value::String(n.to_string())),
            select(vec![1_000_000_000_000i64, 300_000_000_000, 8_000_000_000]).prop_map(Value::from)],
    ) {
        let body = json!({"access_token": "a", "refresh_token": "r", "expires_in": ei});
        let res = HttpResponse { status: 200, content_type: Some("application/json".into()), date: None, retry_after: None, body: body.to_string().into_bytes() };
        let t = parse_token_response("u", &res).unwrap().rotated_from(None);
        let bytes = render_credentials("lab", &t, Timestamp::now()).unwrap();
        let back = parse_credentials(Path::new("x"), &bytes);
        prop_assert!(back.is_ok(), "expires_in {:?} was accepted, but the file written for it cannot be read: {:?}", t.expires_in, back.err());
    }

    /// Token endpoint answers: never a panic; only a 200 with an access token is a success;
    /// failures are typed and never carry the body.
    #[test]
    fn token_responses_never_panic(res in http_response()) {
        let body_marker = String::from_utf8_lossy(&res.body).contains("MARKER");
        match parse_token_response("https://idp/token", &res) {
            Ok(t) => {
                prop_assert_eq!(res.status, 200);
                prop_assert!(!t.access_token.expose().is_empty());
                prop_assert!(t.expires_in.is_none_or(|e| e >= 0));
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::IdpRefused { .. } | Error::IdpUnreachable { .. } | Error::IdpBadResponse { .. }), "{e:?}");
                if let Error::IdpRefused { code, .. } = &e {
                    let code = code.as_str();
                    prop_assert!((400..500).contains(&res.status));
                    prop_assert!(code.len() <= 40);
                    prop_assert!(code.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'));
                }
                let _ = body_marker;
            }
        }
    }

    /// The body of a failed answer never reaches the error message (only a standard-looking
    /// OAuth `error` code does; `error_description` never).
    #[test]
    fn token_errors_never_quote_the_body(status in any::<u16>(), field in select(vec!["access_token", "refresh_token", "id_token", "junk", "scope"]), html in any::<bool>()) {
        let body = if html { "<html>MARKER-SECRET-BODY</html>".to_owned() } else { json!({field: "MARKER-SECRET-BODY"}).to_string() };
        let res = HttpResponse { status, content_type: Some("application/json".into()), date: None, retry_after: None, body: body.into_bytes() };
        match parse_token_response("https://idp/token", &res) {
            Ok(t) => prop_assert!(status == 200 && field == "access_token" && !html && t.access_token.expose() == "MARKER-SECRET-BODY"),
            Err(e) => prop_assert!(!format!("{e} {e:?}").contains("MARKER"), "{e}"),
        }
    }

    /// A well-formed answer reads back as sent.
    #[test]
    fn token_response_round_trips(at in secret_text(), rt in prop::option::of(secret_text()), ei in prop::option::of(0i64..100_000_000), scope in prop::option::of(text())) {
        let body = json!({"access_token": at, "token_type": "Bearer", "expires_in": ei, "refresh_token": rt, "scope": scope});
        let res = HttpResponse { status: 200, content_type: Some("application/json".into()), date: None, retry_after: None, body: body.to_string().into_bytes() };
        let t = parse_token_response("u", &res).unwrap();
        prop_assert_eq!(t.access_token.expose(), at.as_str());
        prop_assert_eq!(t.refresh_token.as_ref().map(|s| s.expose().to_owned()), rt);
        prop_assert_eq!(t.expires_in, ei);
        prop_assert_eq!(t.scope, scope);
    }

    /// Timestamps: both Python spellings round-trip over Python's whole range.
    #[test]
    fn timestamps_round_trip(t in timestamp()) {
        prop_assert_eq!(Timestamp::parse(&t.to_python_str()), Some(t));
        prop_assert_eq!(Timestamp::parse(&t.to_isoformat()), Some(t));
        prop_assert_eq!(t.truncated_to_minute().unix_seconds() % 60, 0);
    }

    /// Any text: never a panic; whatever parses, formats to text that parses to the same time.
    #[test]
    fn timestamp_parse_never_panics(s in prop_oneof![timestamp_text(), text()]) {
        if let Some(t) = Timestamp::parse(&s)
            && (-62_135_596_800..=253_402_300_799).contains(&t.unix_seconds())
        {
            prop_assert_eq!(Timestamp::parse(&t.to_isoformat()), Some(t));
        }
    }

    /// JWT claims: any text, never a panic.
    #[test]
    fn jwt_claims_never_panic(s in prop_oneof![text(), "[A-Za-z0-9_=.-]{0,80}"]) {
        if let Some(c) = token_core::jwt::unverified_claims(&s) {
            prop_assert!(c.is_object());
        }
        let _ = token_core::jwt::subject(&s);
        let _ = token_core::jwt::expiry(&s);
    }

    /// A JWT-shaped token with a hostile payload: claims only for a JSON object, as encoded.
    #[test]
    fn jwt_claims_read_what_was_encoded(payload in prop_oneof![json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()), vec(any::<u8>(), 0..200)], pad in any::<bool>()) {
        use base64::Engine;
        let mut enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&payload);
        if pad { enc.push_str("=="); }
        let token = format!("eyJhbGciOiJFUzI1NiJ9.{enc}.c2ln");
        let want: Option<Value> = serde_json::from_slice(&payload).ok().filter(Value::is_object);
        prop_assert_eq!(token_core::jwt::unverified_claims(&token), want);
        let _ = token_core::jwt::subject(&token);
        let _ = token_core::jwt::expiry(&token);
    }
}
