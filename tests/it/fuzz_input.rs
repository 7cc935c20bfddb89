//! Property tests over the daemon's input parsers (issue 12): the policy file (from raw
//! bytes, as `load` reads it) and the query string of `GET /api/v1/runs`. Whatever the input:
//! no panic, and every error says where (a line and column) or names its source, and never
//! shows the API key.

use std::path::Path;

use neon_steward::config::{self, ConfigError};
use neon_steward::http::parse_runs_query_string;
use proptest::prelude::*;

const SECRET: &str = "napi_FUZZSECRETKEY";

/// Valid policies to mutate: the shipped example and demo, and a small one of every kind.
fn seeds() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut v = vec![
        std::fs::read_to_string(format!("{root}/config/example.toml")).unwrap(),
        std::fs::read_to_string(format!("{root}/config/demo.toml")).unwrap(),
    ];
    v.push(
        r#"[api]
base_url = "https://console.neon.tech/api/v2"
concurrency = 4
[store]
url = "sqlite://./x.db"
history_retention = "30d"
[http]
listen = "127.0.0.1:9187"
[defaults]
timezone = "Europe/Berlin"
jitter = "30s"
[[jobs]]
name = "snap"
kind = "snapshot_branches"
schedule = "0 3 * * *"
expires_in = "14d"
[jobs.retention]
keep_daily = 7
[[jobs]]
name = "expire"
kind = "expire_branches"
every = "1h"
ttl = "7d"
[jobs.branches]
names = ["preview/*"]
[[jobs]]
name = "suspend"
kind = "suspend_computes"
every = "15m"
idle_for = "1h"
windows = ["Mon-Fri 20:00-08:00"]
[[jobs]]
name = "usage"
kind = "collect_consumption"
every = "1h"
org_id = "org-1"
metrics = ["compute_unit_seconds"]
"#
        .to_string(),
    );
    v
}

/// Tokens that tend to reach the validators' edge cases.
const TOKENS: &[&str] = &[
    "\"0s\"",
    "\"1.5h\"",
    "\"0 3 31 2 *\"",
    "\"* * * * * * *\"",
    "1000000000",
    "-1",
    "0",
    "\"\"",
    "\"mysql://u:p@h/db\"",
    "\"https://u:p@h/\"",
    "\"garbage\"",
    "[",
    "]",
    "{",
    "=",
    "\"",
    "'''",
    "\n[[jobs]]\n",
    "\n[jobs.prices]\nx = 1\n",
    "\u{0}",
    "\u{7}",
    "\r",
    "é",
    "\u{feff}",
    "nan",
    "inf",
    "1e400",
    "true",
    "\"Mars/Olympus\"",
    "\"{branch}\"",
    "\"[unclosed\"",
];

#[derive(Debug, Clone)]
enum Edit {
    /// Insert a token at a fraction of the length.
    Insert(f64, usize),
    /// Replace the rest of a line (after `=`, at a fraction of the lines) with a token.
    Value(f64, usize),
    /// Delete a range (fractions of the length).
    Delete(f64, f64),
    /// Insert raw bytes (possibly not UTF-8).
    Bytes(f64, Vec<u8>),
    /// Truncate at a fraction of the length.
    Truncate(f64),
}

fn edit() -> impl Strategy<Value = Edit> {
    let frac = 0.0f64..1.0;
    prop_oneof![
        (frac.clone(), 0..TOKENS.len()).prop_map(|(f, t)| Edit::Insert(f, t)),
        (frac.clone(), 0..TOKENS.len()).prop_map(|(f, t)| Edit::Value(f, t)),
        (frac.clone(), 0.0f64..0.05).prop_map(|(f, l)| Edit::Delete(f, l)),
        (frac.clone(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(f, b)| Edit::Bytes(f, b)),
        frac.prop_map(Edit::Truncate),
    ]
}

fn at(len: usize, f: f64) -> usize {
    ((len as f64) * f) as usize
}

fn apply(mut bytes: Vec<u8>, e: &Edit) -> Vec<u8> {
    match e {
        Edit::Insert(f, t) => {
            let i = at(bytes.len(), *f);
            bytes.splice(i..i, TOKENS[*t].bytes());
        }
        Edit::Value(f, t) => {
            let lines: Vec<usize> = std::iter::once(0)
                .chain(
                    bytes
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .collect();
            let start = lines[at(lines.len(), *f).min(lines.len() - 1)];
            let end = bytes[start..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |p| start + p);
            if let Some(eq) = bytes[start..end].iter().position(|b| *b == b'=') {
                let from = start + eq + 1;
                bytes.splice(from..end, format!(" {}", TOKENS[*t]).bytes());
            }
        }
        Edit::Delete(f, l) => {
            let i = at(bytes.len(), *f);
            let j = (i + at(bytes.len(), *l)).min(bytes.len());
            bytes.drain(i..j);
        }
        Edit::Bytes(f, b) => {
            let i = at(bytes.len(), *f);
            bytes.splice(i..i, b.iter().copied());
        }
        Edit::Truncate(f) => {
            let i = at(bytes.len(), *f);
            bytes.truncate(i);
        }
    }
    bytes
}

fn env(k: &str) -> Option<String> {
    (k == "NEON_API_KEY").then(|| SECRET.to_string())
}

/// Parses like `config::load` does after reading the file.
fn parse(bytes: Vec<u8>) -> Result<config::Config, ConfigError> {
    let path = Path::new("fuzz.toml");
    let text = config::decode_policy(path, bytes)?;
    config::parse_with_env(path, &text, &env)
}

fn check_error(e: &ConfigError) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(!e.message.trim().is_empty(), "empty message: {shown:?}");
    prop_assert!(shown.starts_with("fuzz.toml"), "names the file: {shown:?}");
    prop_assert!(
        e.position.is_some() || e.message.contains("policy"),
        "neither a position nor a source: {shown:?}"
    );
    prop_assert!(!shown.contains("FUZZSECRET"), "the key leaked: {shown:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn policy_parser_never_panics_and_errors_say_where(
        seed in 0usize..3,
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut bytes = seeds()[seed].clone().into_bytes();
        for e in &edits {
            bytes = apply(bytes, e);
        }
        match parse(bytes) {
            Ok(c) => {
                let shown = format!("{c:?}");
                prop_assert!(!shown.contains("FUZZSECRET"));
            }
            Err(e) => check_error(&e)?,
        }
    }

    #[test]
    fn arbitrary_bytes_as_a_policy(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Err(e) = parse(bytes) {
            check_error(&e)?;
        }
    }

    #[test]
    fn runs_query_never_panics_and_errors_name_the_parameter(
        q in "[a-z&=%0-9._~+-]{0,40}|.{0,40}"
    ) {
        match parse_runs_query_string(Some(&q)) {
            Ok(f) => prop_assert!(f.limit <= neon_steward::store::MAX_RUN_LIMIT),
            Err((status, message)) => {
                prop_assert_eq!(status.as_u16(), 400);
                prop_assert!(
                    message.contains("query parameter") || message.contains("query string"),
                    "{message:?} for {q:?}"
                );
            }
        }
    }
}

proptest! {
    /// A base URL with user info is always refused, and the password never shown, whatever
    /// else is wrong with the URL.
    #[test]
    fn base_url_userinfo_is_refused_and_never_shown(
        scheme in "https?|ftp|",
        user in "[a-z]{0,8}",
        pass in "PW[a-zA-Z0-9]{6,12}",
        host in "[a-z0-9.-]{0,12}|127\\.0\\.0\\.1|\\[::1\\]",
        port in prop::option::of(0u32..100_000),
        path in "(/[a-z0-9@:]{0,6}){0,3}",
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let url = format!("{scheme}://{user}:{pass}@{host}{port}{path}");
        let e = config::check_base_url(&url);
        prop_assert!(e.is_err(), "{url} accepted");
        let e = e.unwrap_err();
        prop_assert!(!e.contains(&pass), "{e}");
    }
}

#[test]
fn the_seeds_are_valid() {
    for (i, s) in seeds().into_iter().enumerate() {
        if let Err(e) = parse(s.into_bytes()) {
            panic!("seed {i}: {e}");
        }
    }
}
