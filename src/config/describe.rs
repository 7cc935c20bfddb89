//! What the policy's types say about themselves in the JSON Schema beyond their serde shape:
//! the syntax patterns of durations and cron expressions, which job options belong to which
//! kind, and marker types for keys the schema refuses or bounds.
//!
//! A leaf: [`super::raw`], [`super::scalar`] and [`super::notify`] annotate their types with
//! these, and [`super::schema`] generates the document from the annotated types, so nothing
//! here may name them back.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::JobKind;

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
