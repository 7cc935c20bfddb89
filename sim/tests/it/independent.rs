//! An independent check of response bodies: Neon's document, its OpenAPI 3.0 schemas converted
//! to JSON Schema 2020-12, validated by `boon` (a maintained JSON Schema validator), not by the
//! emulator's own `openapi.rs`, so a bug shared by the emulator and its validator cannot hide.
//!
//! The conversion is the small difference between the two dialects: `nullable: true` becomes a
//! `null` alternative, and OpenAPI 3.0's boolean `exclusiveMinimum`/`exclusiveMaximum` become
//! 2020-12's numbers. Every keyword of every schema a response is checked against must be one
//! boon checks or a pure annotation: [`Independent::validate`] fails on any other, so a schema
//! keyword nobody checks cannot pass silently.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

const LOC: &str = "file:///neon/neon-v2.json";

/// Keywords boon checks (2020-12, format assertions on).
const CHECKED: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "format",
    "$ref",
];
/// Keywords with no meaning for validity.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "externalDocs",
];

pub struct Independent {
    doc: Value,
    schemas: boon::Schemas,
    compiled: HashMap<String, boon::SchemaIndex>,
}

fn convert(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(convert),
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "properties" {
                    if let Value::Object(props) = child {
                        props.values_mut().for_each(convert);
                    }
                } else if k != "example" && k != "examples" {
                    convert(child);
                }
            }
            for (bound, limit) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(on)) = map.get(bound).cloned() {
                    map.remove(bound);
                    if on {
                        if let Some(n) = map.remove(limit) {
                            map.insert(bound.to_string(), n);
                        }
                    }
                }
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get("type").cloned() {
                    Some(Value::String(t)) => {
                        map.insert("type".into(), json!([t, "null"]));
                        if let Some(Value::Array(e)) = map.get_mut("enum") {
                            e.push(Value::Null);
                        }
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(map));
                        map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                    }
                }
            }
        }
        _ => {}
    }
}

fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

impl Independent {
    pub fn neon() -> Independent {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/neon-v2.json"))
                .expect("the bundled document is readable");
        let mut doc: Value = serde_json::from_str(&text).expect("the document is JSON");
        convert(&mut doc);
        Independent {
            doc,
            schemas: boon::Schemas::new(),
            compiled: HashMap::new(),
        }
    }

    fn pointer_value(&self, pointer: &str) -> Option<&Value> {
        self.doc.pointer(pointer)
    }

    /// The JSON pointer of the response schema of `method template -> status`, or `None` when
    /// the document gives no JSON body for it.
    fn schema_pointer(
        &self,
        method: &str,
        template: &str,
        status: u16,
    ) -> Result<Option<String>, String> {
        let op = format!("/paths/{}/{}", escape(template), method.to_lowercase());
        let responses = self
            .pointer_value(&format!("{op}/responses"))
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{method} {template}: no responses in the document"))?;
        let (key, mut response) = match responses.get(&status.to_string()) {
            Some(r) => (status.to_string(), r),
            None => match responses.get("default") {
                Some(r) => ("default".to_string(), r),
                None => {
                    return Err(format!(
                        "{method} {template}: status {status} is not documented"
                    ))
                }
            },
        };
        let mut pointer = format!("{op}/responses/{key}");
        if let Some(Value::String(r)) = response.get("$ref") {
            pointer = r.trim_start_matches('#').to_string();
            response = self
                .pointer_value(&pointer)
                .ok_or_else(|| format!("unresolved response {r}"))?;
        }
        Ok(response
            .pointer("/content/application~1json/schema")
            .map(|_| format!("{pointer}/content/application~1json/schema")))
    }

    /// Every keyword met in the schema at `pointer` and what it references, that boon does not
    /// check and that is no annotation.
    fn unchecked_keywords(&self, pointer: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![pointer.to_string()];
        while let Some(p) = todo.pop() {
            if !seen.insert(p.clone()) {
                continue;
            }
            if let Some(v) = self.pointer_value(&p) {
                walk_schema(v, &mut out, &mut todo);
            }
        }
        out
    }

    /// Validates a response body against its schema; `Err` says why (or which keyword is not
    /// checked). A body the document gives no schema for must be empty.
    pub fn validate(
        &mut self,
        method: &str,
        template: &str,
        status: u16,
        body: Option<&Value>,
    ) -> Result<(), String> {
        let Some(pointer) = self.schema_pointer(method, template, status)? else {
            return match body {
                None => Ok(()),
                Some(b) => Err(format!(
                    "{method} {template} -> {status}: no body documented, got {b}"
                )),
            };
        };
        let body = body.ok_or_else(|| {
            format!("{method} {template} -> {status}: a JSON body is documented, got none")
        })?;
        let index = match self.compiled.get(&pointer) {
            Some(i) => *i,
            None => {
                let unchecked = self.unchecked_keywords(&pointer);
                if !unchecked.is_empty() {
                    return Err(format!(
                        "{method} {template} -> {status}: schema keywords nobody checks: {unchecked:?}"
                    ));
                }
                let mut compiler = boon::Compiler::new();
                compiler.set_default_draft(boon::Draft::V2020_12);
                compiler.enable_format_assertions();
                compiler
                    .add_resource(LOC, self.doc.clone())
                    .map_err(|e| format!("the converted document is not accepted: {e:#}"))?;
                let i = compiler
                    .compile(&format!("{LOC}#{pointer}"), &mut self.schemas)
                    .map_err(|e| format!("{pointer} does not compile: {e:#}"))?;
                self.compiled.insert(pointer.clone(), i);
                i
            }
        };
        self.schemas
            .validate(body, index)
            .map_err(|e| format!("{method} {template} -> {status}: {e:#}"))
    }
}

fn walk_schema(v: &Value, out: &mut BTreeSet<String>, todo: &mut Vec<String>) {
    let Value::Object(map) = v else {
        if let Value::Array(items) = v {
            for i in items {
                walk_schema(i, out, todo);
            }
        }
        return;
    };
    let map: &Map<String, Value> = map;
    for (k, child) in map {
        if !CHECKED.contains(&k.as_str())
            && !ANNOTATIONS.contains(&k.as_str())
            && !k.starts_with("x-")
        {
            out.insert(k.clone());
        }
        match k.as_str() {
            "$ref" => {
                if let Some(r) = child.as_str() {
                    todo.push(r.trim_start_matches('#').to_string());
                }
            }
            "properties" => {
                if let Value::Object(props) = child {
                    for p in props.values() {
                        walk_schema(p, out, todo);
                    }
                }
            }
            "items" | "additionalProperties" | "not" => walk_schema(child, out, todo),
            "allOf" | "anyOf" | "oneOf" => walk_schema(child, out, todo),
            _ => {}
        }
    }
}

#[test]
fn the_converted_document_rejects_what_it_should() {
    let mut v = Independent::neon();
    let ok = json!({"code": "X", "message": "m", "request_id": "r"});
    v.validate("GET", "/projects/{project_id}", 404, Some(&ok))
        .expect("a GeneralError is valid");
    let missing = json!({"code": "X"});
    assert!(v
        .validate("GET", "/projects/{project_id}", 404, Some(&missing))
        .is_err());
    let wrong_type = json!({"regions": "none"});
    assert!(v
        .validate("GET", "/regions", 200, Some(&wrong_type))
        .is_err());
}
