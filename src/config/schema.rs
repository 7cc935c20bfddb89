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

use schemars::generate::SchemaSettings;
use schemars::transform::{transform_subschemas, Transform};
use schemars::Schema;
use serde_json::{json, Value};

use super::raw::RawConfig;

/// Path of the committed schema, relative to the crate root.
pub const SCHEMA_PATH: &str = "config/schema.json";

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
