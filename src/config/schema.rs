//! The JSON Schema of the policy file, generated from the serde types in [`super::raw`].
//!
//! Why generated: the schema must describe the file exactly as the parser reads it, and a
//! hand-written schema drifts. The committed copy, `config/schema.json`, is what editors use
//! (Taplo / Even Better TOML pick it up from the `#:schema` line of `config/example.toml`);
//! the test `config_schema_is_fresh` fails when it no longer matches [`json_schema`].
//!
//! The schema is JSON Schema draft 7, the draft editors support best. It checks what a
//! schema can check cheaply (keys, types, enums, duration and cron syntax, which options
//! belong to which job kind); the parser still has the last word (e.g. on overlapping
//! windows, glob syntax and duplicate job names).

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::transform::{transform_subschemas, Transform};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::raw::{CronStr, Dur, PositiveDur, RawConfig, TzStr};
use super::JobKind;

/// Path of the committed schema, relative to the crate root.
pub const SCHEMA_PATH: &str = "config/schema.json";

/// What a duration looks like to `humantime` (which the parser uses): one or more
/// `<whole number><unit>` groups, optionally separated by spaces (fractions are refused).
pub const DURATION_PATTERN: &str = concat!(
    r"^\s*([0-9]+\s*",
    r"(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|",
    r"minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|",
    r"months|month|M|years|year|yrs|yr|y)\s*)+$"
);

/// A cron expression: an `@` nickname, or 5 or 6 whitespace-separated fields.
pub const CRON_PATTERN: &str = r"^\s*(@([Yy][Ee][Aa][Rr][Ll][Yy]|[Aa][Nn][Nn][Uu][Aa][Ll][Ll][Yy]|[Mm][Oo][Nn][Tt][Hh][Ll][Yy]|[Ww][Ee][Ee][Kk][Ll][Yy]|[Dd][Aa][Ii][Ll][Yy]|[Hh][Oo][Uu][Rr][Ll][Yy])|\S+(\s+\S+){4,5})\s*$";

/// Job options that belong to one kind; on a job of another kind they are errors (the
/// parser's `wrong_kind` check). Every other key of `[[jobs]]` is shared by all kinds.
pub const KIND_OPTIONS: [(JobKind, &[&str]); 5] = [
    (
        JobKind::SnapshotBranches,
        &[
            "name_template",
            "expires_in",
            "retention",
            "backup_schedule",
        ],
    ),
    (
        JobKind::ExpireBranches,
        &["ttl", "idle_ttl", "pull_request", "forge"],
    ),
    (
        JobKind::SuspendComputes,
        &[
            "idle_for",
            "windows",
            "window_timezone",
            "exclude_until",
            "resume",
            "endpoints",
            "exclusions",
        ],
    ),
    (
        JobKind::CollectConsumption,
        &[
            "granularity",
            "metrics",
            "org_id",
            "endpoint",
            "max_projects_exported",
            "prices",
            "per_branch",
        ],
    ),
    (JobKind::EnforceBudget, &["budget"]),
];

/// The values of `mode` each kind takes (a kind not listed takes no `mode`); the first is
/// the default.
pub const KIND_MODES: [(JobKind, &[&str]); 2] = [
    (JobKind::SnapshotBranches, &["snapshots", "backup_schedule"]),
    (JobKind::ExpireBranches, &["delete", "set_expires_at"]),
];

/// The JSON Schema (draft 7) of the policy file, as committed in `config/schema.json`.
pub fn json_schema() -> Value {
    let mut settings = SchemaSettings::draft07();
    // Before draft 7's own transforms, so that the `$ref`s left bare by dropping `null`
    // get their sibling descriptions moved into an `allOf` like any other.
    settings.transforms.insert(0, Box::new(TomlShape));
    settings
        .into_generator()
        .into_root_schema_for::<RawConfig>()
        .to_value()
}

/// The schema as the committed file holds it: pretty JSON with a final newline.
pub fn json_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&json_schema())
        .expect("a serde_json::Value always serializes");
    s.push('\n');
    s
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a whole number with a unit, e.g. \"90s\", \"15m\", \"12h\", \"7d\", \"1h 30m\" (units: ms, s, m, h, d, w, and their long forms).",
            "pattern": DURATION_PATTERN,
            "examples": ["30s", "15m", "12h", "7d", "1h 30m"],
        })
    }
}

impl JsonSchema for PositiveDur {
    fn schema_name() -> Cow<'static, str> {
        "PositiveDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration that is not zero: a whole number with a unit, e.g. \"90s\", \"15m\", \"12h\", \"7d\", \"1h 30m\" (units: ms, s, m, h, d, w, and their long forms).",
            "pattern": DURATION_PATTERN,
            "not": { "pattern": "^[\\s0a-zA-Zµ]*$" },
            "examples": ["30s", "15m", "12h", "7d", "1h 30m"],
        })
    }
}

impl JsonSchema for CronStr {
    fn schema_name() -> Cow<'static, str> {
        "Cron".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A cron expression with 5 fields (minute hour day-of-month month day-of-week) or 6 (leading seconds), or @hourly, @daily, @weekly, @monthly, @yearly. Evaluated in the job's time zone.",
            "pattern": CRON_PATTERN,
            "examples": ["0 3 * * *", "*/15 * * * *", "0 0 9 * * Mon-Fri", "@daily"],
        })
    }
}

impl JsonSchema for TzStr {
    fn schema_name() -> Cow<'static, str> {
        "TimeZone".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
        json_schema!({
            "type": "string",
            "description": "An IANA time zone name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\".",
            "enum": names,
        })
    }
}

/// The schema of a key the parser accepts only to reject it with a helpful message
/// (`api.api_key`): no value is valid.
pub struct Forbidden;

impl JsonSchema for Forbidden {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Forbidden".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "not": {} })
    }
}

/// A number that is not negative (prices).
pub struct NonNegative;

impl JsonSchema for NonNegative {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "NonNegative".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "number", "minimum": 0 })
    }
}

/// Adds to the `[[jobs]]` schema what the parser checks across keys: exactly one of
/// `schedule` and `every`, the options of other kinds forbidden, and each kind's required
/// options.
pub(super) fn job_kind_rules(schema: &mut Schema) {
    let mut rules = vec![json!({
        "oneOf": [
            { "required": ["schedule"] },
            { "required": ["every"] },
        ]
    })];
    for (kind, _) in KIND_OPTIONS {
        let mut then = Map::new();
        let forbidden: Map<String, Value> = KIND_OPTIONS
            .iter()
            .filter(|(other, _)| *other != kind)
            .flat_map(|(_, opts)| opts.iter())
            .map(|o| (o.to_string(), Value::Bool(false)))
            .collect();
        let mut forbidden = forbidden;
        let mode = match KIND_MODES.iter().find(|(k, _)| *k == kind) {
            Some((_, modes)) => json!({ "enum": modes, "default": modes[0] }),
            None => Value::Bool(false),
        };
        forbidden.insert("mode".into(), mode);
        // `notice` belongs to the kinds that destroy on a policy's own decision.
        if matches!(
            kind,
            JobKind::SnapshotBranches | JobKind::CollectConsumption | JobKind::EnforceBudget
        ) {
            forbidden.insert("notice".into(), Value::Bool(false));
        }
        then.insert("properties".into(), Value::Object(forbidden));
        match kind {
            JobKind::SnapshotBranches => {
                // `[[jobs.backup_schedule]]` and `mode = "backup_schedule"` go together.
                then.insert(
                    "if".into(),
                    json!({ "required": ["mode"], "properties": { "mode": { "const": "backup_schedule" } } }),
                );
                then.insert(
                    "then".into(),
                    json!({
                        "required": ["backup_schedule"],
                        "properties": {
                            "name_template": false,
                            "expires_in": false,
                            "retention": false,
                        },
                    }),
                );
                then.insert(
                    "else".into(),
                    json!({ "properties": { "backup_schedule": false } }),
                );
            }
            JobKind::ExpireBranches => {
                then.insert(
                    "anyOf".into(),
                    json!([
                        { "required": ["ttl"] },
                        { "required": ["idle_ttl"] },
                        { "required": ["pull_request"] },
                    ]),
                );
                // `pull_request` and `[jobs.forge]` go together.
                then.insert(
                    "dependencies".into(),
                    json!({ "pull_request": ["forge"], "forge": ["pull_request"] }),
                );
            }
            JobKind::SuspendComputes => {
                then.insert(
                    "anyOf".into(),
                    json!([
                        { "required": ["idle_for"] },
                        { "required": ["windows"], "properties": { "windows": { "minItems": 1 } } },
                    ]),
                );
            }
            JobKind::EnforceBudget => {
                then.insert("required".into(), json!(["budget"]));
            }
            JobKind::CollectConsumption => {
                then.insert("required".into(), json!(["metrics"]));
                // Neon's v2 endpoint (the default) needs the organization.
                then.insert(
                    "anyOf".into(),
                    json!([
                        { "required": ["org_id"] },
                        { "required": ["endpoint"], "properties": { "endpoint": { "const": "legacy" } } },
                    ]),
                );
            }
        }
        rules.push(json!({
            "if": {
                "properties": { "kind": { "const": kind.as_str() } },
                "required": ["kind"],
            },
            "then": then,
        }));
    }
    schema.insert("allOf".into(), Value::Array(rules));
}

/// Fits the generated schemas to TOML and to editors:
/// - `null` is removed from the schemas of `Option` fields: TOML has no null, an absent key
///   is how a value is left out;
/// - Rust-specific formats (`uint32`, `double`) are dropped: draft 7 does not define them
///   and strict validators reject unknown formats;
/// - descriptions, written as wrapped `///` lines, are unwrapped into paragraphs, since
///   editors show them as flowing text.
#[derive(Clone)]
struct TomlShape;

impl Transform for TomlShape {
    fn transform(&mut self, schema: &mut Schema) {
        transform_subschemas(self, schema);
        let Some(obj) = schema.as_object_mut() else {
            return;
        };
        if let Some(Value::Array(types)) = obj.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                obj.insert("type".into(), only);
            }
        }
        if let Some(Value::Array(any)) = obj.get_mut("anyOf") {
            any.retain(|s| s != &json!({ "type": "null" }));
            if any.len() == 1 {
                if let Some(Value::Object(only)) = any.pop() {
                    obj.remove("anyOf");
                    for (k, v) in only {
                        obj.entry(k).or_insert(v);
                    }
                }
            }
        }
        if let Some(Value::Array(values)) = obj.get_mut("enum") {
            values.retain(|v| !v.is_null());
        }
        if obj.get("format").and_then(Value::as_str).is_some_and(|f| {
            ["int", "uint", "float", "double"]
                .iter()
                .any(|p| f.starts_with(p))
        }) {
            obj.remove("format");
        }
        if let Some(Value::String(d)) = obj.get_mut("description") {
            *d = unwrap_lines(d);
        }
    }
}

/// Joins the lines of each paragraph with spaces; paragraphs stay separated by a blank line.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|para| {
            para.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests;
