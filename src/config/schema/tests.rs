//! Tests of the policy file's JSON Schema: the committed copy is fresh, the shipped policy
//! files validate against it, and it agrees with the parser on what it accepts and rejects.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{json, Value};

use super::*;
use crate::config::describe::{KIND_MODES, KIND_OPTIONS};
use crate::config::{parse_with_env, ConfigError, JobKind};

/// The policy files shipped in the repository, each checked against the schema and the
/// parser. Listed explicitly so that a missing file fails instead of being skipped; a
/// `config/*.toml` not listed here fails `every_shipped_policy_is_listed`.
const SHIPPED_POLICIES: &[&str] = &["config/example.toml", "config/demo.toml"];

fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<crate::config::Config, ConfigError> {
    parse_with_env(Path::new("policy.toml"), text, &no_env)
}

/// The committed schema, compiled (which also checks it against the draft 7 meta-schema).
struct Compiled {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Compiled {
    fn committed() -> Compiled {
        let text = std::fs::read_to_string(crate_path(SCHEMA_PATH))
            .unwrap_or_else(|e| panic!("cannot read {SCHEMA_PATH}: {e}"));
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{SCHEMA_PATH} is not JSON: {e}"));
        Compiled::from_value(doc)
    }

    fn from_value(doc: Value) -> Compiled {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V7);
        let loc = "file:///neon-steward/config/schema.json";
        compiler
            .add_resource(loc, doc)
            .unwrap_or_else(|e| panic!("schema not accepted: {e:#}"));
        let index = compiler
            .compile(loc, &mut schemas)
            .unwrap_or_else(|e| panic!("schema does not compile: {e:#}"));
        Compiled { schemas, index }
    }

    /// Validates a TOML document (converted to JSON, as editors do).
    fn check_toml(&self, text: &str) -> Result<(), String> {
        let doc: toml::Table =
            toml::from_str(text).unwrap_or_else(|e| panic!("test TOML is not TOML: {e}\n{text}"));
        let json = serde_json::to_value(doc).expect("TOML values convert to JSON");
        self.schemas
            .validate(&json, self.index)
            .map_err(|e| format!("{e}"))
    }
}

#[test]
fn config_schema_is_fresh() {
    let path = crate_path(SCHEMA_PATH);
    let generated = json_schema_text();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        // Write beside and rename, so other tests reading the file never see half of it.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &generated).expect("write the schema");
        std::fs::rename(&tmp, &path).expect("replace the schema");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{SCHEMA_PATH} is missing or stale: it no longer matches the config types in \
         src/config/raw.rs. Regenerate it with\n    UPDATE_SCHEMA=1 cargo test --lib config_schema_is_fresh\n\
         and commit the result."
    );
}

#[test]
fn shipped_policies_validate_against_schema_and_load() {
    let schema = Compiled::committed();
    for rel in SHIPPED_POLICIES {
        let path = crate_path(rel);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{rel} is listed as shipped but cannot be read: {e}"));
        if let Err(e) = schema.check_toml(&text) {
            panic!("{rel} does not validate against {SCHEMA_PATH}:\n{e}");
        }
        let config = crate::config::load_with_env(&path, &no_env)
            .unwrap_or_else(|e| panic!("{rel} does not load: {e}"));
        assert!(!config.jobs.is_empty(), "{rel} defines no job");
    }
}

#[test]
fn every_shipped_policy_is_listed() {
    let dir = crate_path("config");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list config/: {e}"));
    for entry in entries {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".toml") {
            let rel = format!("config/{name}");
            assert!(
                SHIPPED_POLICIES.contains(&rel.as_str()),
                "{rel} is not in SHIPPED_POLICIES (src/config/schema/tests.rs): list it so it is \
                 checked against the schema and the parser"
            );
        }
    }
}

#[test]
fn example_declares_the_schema_for_editors() {
    let text = std::fs::read_to_string(crate_path("config/example.toml")).unwrap();
    assert!(
        text.lines().next() == Some("#:schema ./schema.json"),
        "config/example.toml must start with `#:schema ./schema.json` (Taplo's directive)"
    );
}

const JOB: &str =
    "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nschedule = \"0 3 * * *\"\n";

/// Documents the schema must reject, each with a word its error must mention. Every one
/// is also an error for the parser: the schema never rejects what the daemon accepts.
const INVALID: &[(&str, &str, &str)] = &[
    ("unknown top-level key", "[apii]\ntimeout = \"1s\"\n", "apii"),
    (
        "unknown key in a table",
        "[api]\ntimeout = \"1s\"\nretries = 3\n",
        "retries",
    ),
    (
        "unknown key in a job",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nschedule = \"0 3 * * *\"\nschedul = \"x\"\n",
        "schedul",
    ),
    (
        "wrong type",
        "[api]\nrate_limit_per_minute = \"fast\"\n",
        "rate_limit_per_minute",
    ),
    ("zero rate", "[api]\nburst = 0\n", "burst"),
    ("duration without unit", "[api]\ntimeout = \"30\"\n", "timeout"),
    ("duration as a number", "[api]\ntimeout = 30\n", "timeout"),
    ("duration with a bad unit", "[store]\nhistory_retention = \"3 fortnights\"\n", "history_retention"),
    ("api key in the file", "[api]\napi_key = \"napi_secret\"\n", "api_key"),
    ("unknown time zone", "[defaults]\ntimezone = \"Mars/Olympus\"\n", "timezone"),
    ("unknown policy", "[defaults]\nconcurrency = \"queue\"\n", "concurrency"),
    ("percent above 100", "[defaults]\nmax_actions_percent = 150.0\n", "max_actions_percent"),
    ("percent of zero", "[defaults]\nmax_actions_percent = 0.0\n", "max_actions_percent"),
    ("jobs not an array", "jobs = \"all\"\n", "jobs"),
    (
        "unknown kind",
        "[[jobs]]\nname = \"n\"\nkind = \"delete_everything\"\nevery = \"1h\"\n",
        "kind",
    ),
    (
        "no name",
        "[[jobs]]\nkind = \"snapshot_branches\"\nevery = \"1h\"\n",
        "name",
    ),
    (
        "name with a slash",
        "[[jobs]]\nname = \"a/b\"\nkind = \"snapshot_branches\"\nevery = \"1h\"\n",
        "name",
    ),
    (
        "neither schedule nor every",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\n",
        "oneOf",
    ),
    (
        "both schedule and every",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nschedule = \"0 3 * * *\"\nevery = \"1h\"\n",
        "oneOf",
    ),
    (
        "cron with three fields",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nschedule = \"0 3 *\"\n",
        "schedule",
    ),
    (
        "option of another kind",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nevery = \"1h\"\nttl = \"7d\"\n",
        "ttl",
    ),
    (
        "table of another kind",
        "[[jobs]]\nname = \"n\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\n[jobs.endpoints]\ntype = \"read_write\"\n",
        "endpoints",
    ),
    (
        "expire without ttl or idle_ttl",
        "[[jobs]]\nname = \"n\"\nkind = \"expire_branches\"\nevery = \"1h\"\n",
        "idle_ttl",
    ),
    (
        "suspend without idle_for or windows",
        "[[jobs]]\nname = \"n\"\nkind = \"suspend_computes\"\nevery = \"1h\"\nwindows = []\n",
        "idle_for",
    ),
    (
        "consumption without metrics",
        "[[jobs]]\nname = \"n\"\nkind = \"collect_consumption\"\nevery = \"1h\"\n",
        "metrics",
    ),
    (
        "v2 consumption without org_id",
        "[[jobs]]\nname = \"n\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nmetrics = [\"compute_unit_seconds\"]\nendpoint = \"v2\"\n",
        "org_id",
    ),
    (
        "negative price",
        "[[jobs]]\nname = \"n\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nmetrics = [\"compute_unit_seconds\"]\norg_id = \"org-1\"\n[jobs.prices]\ncompute_unit_seconds = -1.0\n",
        "compute_unit_seconds",
    ),
    (
        "unknown placeholder",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nevery = \"1h\"\nname_template = \"{branch}-{hour}\"\n",
        "name_template",
    ),
    (
        "unknown key in a selector",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nevery = \"1h\"\n[jobs.branches]\nbranch_names = [\"main\"]\n",
        "branch_names",
    ),
    (
        "an exclusion with two targets",
        "[[jobs]]\nname = \"n\"\nkind = \"suspend_computes\"\nevery = \"1h\"\nidle_for = \"1h\"\n[[jobs.exclusions]]\nendpoint = \"ep-1\"\nproject = \"p-1\"\nuntil = \"2026-12-31\"\n",
        "exclusions",
    ),
    (
        "an exclusion without a target",
        "[[jobs]]\nname = \"n\"\nkind = \"suspend_computes\"\nevery = \"1h\"\nidle_for = \"1h\"\n[[jobs.exclusions]]\nuntil = \"2026-12-31\"\n",
        "exclusions",
    ),
    (
        "an exclusion without until",
        "[[jobs]]\nname = \"n\"\nkind = \"suspend_computes\"\nevery = \"1h\"\nidle_for = \"1h\"\n[[jobs.exclusions]]\nendpoint = \"ep-1\"\n",
        "until",
    ),
];

#[test]
fn schema_rejects_unknown_keys_wrong_types_and_broken_rules() {
    let schema = Compiled::committed();
    // The baseline these documents vary is valid, so each rejection is the variation's.
    schema.check_toml(JOB).expect("a minimal job is valid");
    for (what, text, mentions) in INVALID {
        match schema.check_toml(text) {
            Ok(()) => panic!("schema accepted a document with {what}:\n{text}"),
            Err(e) => assert!(
                e.contains(mentions),
                "error for {what} does not mention `{mentions}`:\n{e}"
            ),
        }
        assert!(
            parse(text).is_err(),
            "the schema rejects {what}, but the parser accepts it:\n{text}"
        );
    }
}

/// Documents both the schema and the parser accept: the schema is not stricter than the
/// daemon on things users really write.
#[test]
fn schema_accepts_what_the_parser_accepts() {
    let schema = Compiled::committed();
    let valid = [
        "",
        "[api]\nbase_url = \"http://127.0.0.1:8080/api/v2\"\ntimeout = \"1m 30s\"\n",
        "[defaults]\ntimezone = \"America/New_York\"\nmax_actions_percent = 100\njitter = \"0s\"\n",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nschedule = \"@daily\"\n",
        "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nschedule = \"0 0 9 * * Mon-Fri\"\nname_template = \"{job}/{branch} {date}T{time}\"\n[jobs.retention]\nkeep_last = 1\n",
        "[[jobs]]\nname = \"n\"\nkind = \"expire_branches\"\nevery = \"15m\"\nidle_ttl = \"3d\"\nmode = \"set_expires_at\"\n",
        "[[jobs]]\nname = \"n\"\nkind = \"suspend_computes\"\nevery = \"10m\"\nwindows = [\"Sat-Sun\"]\nexclude_until = \"2026-12-31T00:00:00Z\"\n[jobs.endpoints]\ntype = \"read_only\"\n",
        "[[jobs]]\nname = \"n\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nmetrics = [\"compute_unit_seconds\"]\norg_id = \"org-1\"\ngranularity = \"daily\"\n[jobs.prices]\ncompute_unit_seconds = 0\n",
        "[[jobs]]\nname = \"n\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nmetrics = [\"active_time_seconds\"]\nendpoint = \"legacy\"\n",
    ];
    for text in valid {
        parse(text).unwrap_or_else(|e| panic!("test document does not parse: {e}\n{text}"));
        if let Err(e) = schema.check_toml(text) {
            panic!("schema rejects a document the parser accepts:\n{text}\n{e}");
        }
    }
}

#[test]
fn duration_pattern_agrees_with_the_parser() {
    let schema = Compiled::committed();
    let samples = [
        "90s",
        "15m",
        "12h",
        "7d",
        "2w",
        "1h 30m",
        "1h30m",
        "500ms",
        "1.5h",
        "0s",
        " 5 min ",
        "3 days",
        "1 week",
        "30",
        "",
        "h",
        "5 fortnights",
        "-5m",
        "5m!",
        "1,5h",
        "forever",
    ];
    for s in samples {
        let doc = format!("[store]\nhistory_retention = {}\n", toml_str(s));
        let by_schema = schema.check_toml(&doc).is_ok();
        // The daemon's own loader (whole units only, not zero for `history_retention`).
        let by_parser =
            crate::config::parse_with_env(std::path::Path::new("p.toml"), &doc, &|_| None).is_ok();
        assert_eq!(
            by_schema, by_parser,
            "duration {s:?}: schema says {by_schema}, parser says {by_parser}"
        );
    }
}

#[test]
fn cron_pattern_rejects_only_what_the_parser_rejects() {
    let schema = Compiled::committed();
    let valid = [
        "0 3 * * *",
        "*/15 * * * *",
        "0 0 9 * * Mon-Fri",
        "@daily",
        "@HOURLY",
    ];
    let invalid = ["", "0 3 *", "* * * *", "0 0 0 1 1 * 2026", "@fortnightly"];
    for (s, ok) in valid
        .iter()
        .map(|s| (s, true))
        .chain(invalid.iter().map(|s| (s, false)))
    {
        let doc = format!(
            "[[jobs]]\nname = \"n\"\nkind = \"snapshot_branches\"\nschedule = {}\n",
            toml_str(s)
        );
        assert_eq!(schema.check_toml(&doc).is_ok(), ok, "schema on cron {s:?}");
        assert_eq!(parse(&doc).is_ok(), ok, "parser on cron {s:?}");
    }
}

#[test]
fn time_zone_enum_is_what_the_parser_accepts() {
    let doc = json_schema();
    let names = doc["definitions"]["TimeZone"]["enum"]
        .as_array()
        .expect("TimeZone is an enum of names");
    assert!(names.len() > 400, "only {} zone names", names.len());
    for n in names {
        let n = n.as_str().expect("zone names are strings");
        assert!(chrono_tz::Tz::from_str(n).is_ok(), "{n} does not parse");
    }
    for n in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"] {
        assert!(names.contains(&json!(n)), "{n} missing");
    }
}

/// Keys of `[[jobs]]` that every kind accepts.
const SHARED_JOB_KEYS: &[&str] = &[
    "name",
    "kind",
    "schedule",
    "every",
    "timezone",
    "jitter",
    "timeout",
    "concurrency",
    "missed",
    "starting_deadline",
    "dry_run",
    "enabled",
    "projects",
    "branches",
    "max_actions",
    "max_actions_percent",
    // `notice` belongs to two kinds (expire_branches, suspend_computes with windows): the
    // schema and the parser refuse it on the others (tested in config/tests.rs).
    "notice",
    "notify",
];

/// A value the option would accept on a job of its own kind.
fn sample_value(option: &str) -> &'static str {
    match option {
        "name_template" => "\"{job}-{branch}-{date}-{time}\"",
        "expires_in" | "ttl" | "idle_ttl" | "idle_for" => "\"1d\"",
        "retention" => "{ keep_last = 1 }",
        "mode" => "\"delete\"",
        // The rules need their mode (a second key on the next line).
        "backup_schedule" => "[{ frequency = \"daily\", hour = 3, retention = \"7d\" }]\nmode = \"backup_schedule\"",
        // Each needs the other: the second line is the other key.
        "pull_request" => "\"closed\"\nforge = { kind = \"github\", repository = \"a/b\", branch = \"pr-{number}\", token_env = \"FORGE_TOKEN\" }",
        "forge" => "{ kind = \"gitlab\", repository = \"g/p\", branch = \"preview/{ref}\", token_env = \"FORGE_TOKEN\" }\npull_request = \"closed\"",
        "windows" => "[\"Sat-Sun\"]",
        "window_timezone" => "\"UTC\"",
        "exclude_until" => "\"2026-01-01\"",
        "resume" => "true",
        "endpoints" => "{ type = \"read_write\", exclude_ids = [\"ep-1\"], exclude_branches = [\"keep-*\"] }",
        "exclusions" => "[{ endpoint = \"ep-1\", until = \"2026-12-31\" }, { branch = \"release/*\", until = \"2026-12-31T00:00:00Z\", note = \"launch\" }]",
        "granularity" => "\"daily\"",
        "metrics" => "[\"compute_unit_seconds\"]",
        "org_id" => "\"org-1\"",
        "endpoint" => "\"v2\"",
        "max_projects_exported" => "10",
        "prices" => "{ compute_unit_seconds = 0.1 }",
        "budget" => "{ consumption_job = \"c\", limit = 10.0, currency = \"USD\", thresholds = [{ percent = 80.0, actions = [\"notify\"] }] }",
        "per_branch" => "true",
        other => panic!("no sample value for job option `{other}`; add one to this test"),
    }
}

const CONSUMPTION_FOR_BUDGET: &str = "\n[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nmetrics = [\"compute_unit_seconds\"]\norg_id = \"org-1\"\nprices = { compute_unit_seconds = 0.1 }\n";

/// Options every kind needs to be valid at all (so a document fails only for the option
/// under test).
fn kind_minimum(kind: JobKind) -> &'static str {
    match kind {
        JobKind::SnapshotBranches => "",
        JobKind::ExpireBranches => "ttl = \"7d\"\n",
        JobKind::SuspendComputes => "idle_for = \"30m\"\n",
        JobKind::CollectConsumption => "metrics = [\"compute_unit_seconds\"]\norg_id = \"org-1\"\n",
        JobKind::EnforceBudget => "budget = { consumption_job = \"c\", limit = 10.0, currency = \"USD\", thresholds = [{ percent = 80.0, actions = [\"notify\"] }] }\n",
    }
}

#[test]
fn kind_specific_options_match_the_parser() {
    let schema = Compiled::committed();
    let doc = json_schema();
    let props = doc["definitions"]["Job"]["properties"]
        .as_object()
        .expect("the job schema has properties");
    // Every key is classified: shared by all kinds, or owned by exactly one.
    for key in props.keys() {
        let owners = KIND_OPTIONS
            .iter()
            .filter(|(_, opts)| opts.contains(&key.as_str()))
            .count();
        let shared = SHARED_JOB_KEYS.contains(&key.as_str()) || key == "mode";
        assert!(
            owners + usize::from(shared) == 1,
            "job key `{key}` must be either in SHARED_JOB_KEYS or owned by exactly one kind in KIND_OPTIONS"
        );
    }
    for (owner, options) in KIND_OPTIONS {
        for option in options {
            let line = format!("{option} = {}\n", sample_value(option));
            for (kind, _) in KIND_OPTIONS {
                let text = format!(
                    "[[jobs]]\nname = \"n\"\nkind = \"{kind}\"\nevery = \"1h\"\n{}{}",
                    kind_minimum(kind),
                    if kind_minimum(kind)
                        .lines()
                        .any(|l| l.starts_with(&format!("{option} =")))
                    {
                        ""
                    } else {
                        &line
                    }
                );
                // The consumption job a budget names (valid on its own, so it changes no
                // verdict about the first job).
                let text = format!("{text}{CONSUMPTION_FOR_BUDGET}");
                let (by_schema, by_parser) = (schema.check_toml(&text), parse(&text));
                if kind == owner {
                    by_schema.unwrap_or_else(|e| panic!("schema rejects {text}\n{e}"));
                    by_parser.unwrap_or_else(|e| panic!("parser rejects {text}\n{e}"));
                } else {
                    assert!(
                        by_schema.is_err(),
                        "schema accepts `{option}` on kind {kind}"
                    );
                    let e = by_parser.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(
                        e.contains("is not valid for kind"),
                        "parser on `{option}` for kind {kind}: {e:?}"
                    );
                }
            }
        }
    }
}

/// A TOML basic string holding `s`.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[test]
fn modes_match_the_parser() {
    let schema = Compiled::committed();
    let all = ["delete", "set_expires_at", "snapshots", "backup_schedule"];
    for (kind, _) in KIND_OPTIONS {
        let own: &[&str] = KIND_MODES
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&[], |(_, m)| m);
        for mode in all {
            let extra = if mode == "backup_schedule" {
                "[[jobs.backup_schedule]]\nfrequency = \"weekly\"\nday = 7\n"
            } else {
                ""
            };
            let text = format!(
                "[[jobs]]\nname = \"n\"\nkind = \"{kind}\"\nevery = \"1h\"\n{}mode = \"{mode}\"\n{extra}",
                kind_minimum(kind)
            );
            let (by_schema, by_parser) = (schema.check_toml(&text), parse(&text));
            if own.contains(&mode) {
                by_schema.unwrap_or_else(|e| panic!("schema rejects {text}\n{e}"));
                by_parser.unwrap_or_else(|e| panic!("parser rejects {text}\n{e}"));
            } else {
                assert!(
                    by_schema.is_err(),
                    "schema accepts mode {mode} on kind {kind}"
                );
                assert!(
                    by_parser.is_err(),
                    "parser accepts mode {mode} on kind {kind}"
                );
            }
        }
    }
}
