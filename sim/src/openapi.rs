//! A small, hand-written validator for the OpenAPI 3.0 schemas in Neon's API document.
//!
//! Why hand-written: the emulator's promise is "every response matches Neon's document", and
//! the conformance tests need to check that promise with error messages that point at the
//! exact field (`$.branches[3].created_at: expected string (date-time), got null`). The subset
//! of OpenAPI 3.0 that Neon's document uses is small, so a focused validator is easier to
//! trust than a general JSON-Schema engine (whose draft semantics differ from OpenAPI 3.0 on
//! `nullable` and `$ref` siblings anyway).
//!
//! Supported keywords: `$ref` (local `#/...` pointers; siblings of `$ref` are ignored as
//! OpenAPI 3.0 says), `type` (object/array/string/integer/number/boolean), `nullable`,
//! `required`, `properties`, `additionalProperties` (only when given), `items`,
//! `minItems`/`maxItems`, `enum`, `allOf`/`oneOf`/`anyOf`, `format: date-time` (RFC 3339),
//! `minimum`/`maximum`, `minLength`/`maxLength` and `pattern`. Other keywords (descriptions,
//! examples, other formats) are not constraints we check.
//!
//! The module is public library API: the daemon's client tests use it to validate the request
//! bodies they send.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// Neon's OpenAPI document, embedded so the emulator and its tests are self-contained.
pub const NEON_SPEC_JSON: &str = include_str!("../spec/neon-v2.json");

/// The base path of Neon's servers (`https://console.neon.tech/api/v2`); spec path templates
/// are relative to it.
pub const API_BASE: &str = "/api/v2";

/// The API path (relative to `/api/v2`) of a request path, or `None` for the emulator's admin
/// routes (`/_sim/...`). Middleware may sit outside the `/api/v2` nest (it sees the full path)
/// or inside it (axum strips the prefix), so both forms are accepted.
pub fn api_path(path: &str) -> Option<&str> {
    if let Some(rest) = path.strip_prefix(API_BASE) {
        return Some(rest);
    }
    if path == "/_sim" || path.starts_with("/_sim/") {
        return None;
    }
    Some(path)
}

/// How deep `$ref` chains and nested schemas may go before we call the schema cyclic.
const MAX_DEPTH: usize = 64;

/// One way a value breaks a schema, with the JSON path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// JSON path of the value, `$` being the document root (`$.branches[3].created_at`).
    pub path: String,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All the ways a value breaks a schema (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Why a spec document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the OpenAPI document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the OpenAPI document has no `paths` object")]
    NoPaths,
}

/// HTTP methods that may carry an operation in an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// (lowercase method, template split into segments, template) of one operation.
type OpEntry = (String, Vec<String>, String);

/// A parsed OpenAPI document with its operations indexed by method and path template.
pub struct Spec {
    doc: Value,
    /// Every operation of the document.
    ops: Vec<OpEntry>,
    /// Compiled `pattern` regexes, keyed by their source.
    patterns: Mutex<HashMap<String, Option<regex::Regex>>>,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("operations", &self.ops.len())
            .finish()
    }
}

/// One operation of the document: a method on a path template.
#[derive(Clone, Copy)]
pub struct Operation<'a> {
    spec: &'a Spec,
    method: &'a str,
    template: &'a str,
    op: &'a Value,
}

impl fmt::Debug for Operation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method.to_uppercase(), self.template)
    }
}

impl Spec {
    /// Parses an OpenAPI 3.0 document.
    pub fn parse(json: &str) -> Result<Spec, SpecError> {
        let doc: Value = serde_json::from_str(json)?;
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or(SpecError::NoPaths)?;
        let mut ops = Vec::new();
        for (template, item) in paths {
            let segments = split_path(template);
            for m in METHODS {
                if item.get(m).is_some_and(Value::is_object) {
                    ops.push((m.to_string(), segments.clone(), template.clone()));
                }
            }
        }
        Ok(Spec {
            doc,
            ops,
            patterns: Mutex::new(HashMap::new()),
        })
    }

    /// Neon's document as embedded in this crate, parsed once.
    pub fn neon() -> &'static Spec {
        static SPEC: OnceLock<Spec> = OnceLock::new();
        SPEC.get_or_init(|| {
            Spec::parse(NEON_SPEC_JSON)
                .expect("the embedded Neon OpenAPI document is checked into the crate and parses")
        })
    }

    /// The raw document.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// Every operation in the document.
    pub fn operations(&self) -> impl Iterator<Item = Operation<'_>> + '_ {
        self.ops
            .iter()
            .filter_map(move |(m, _, t)| self.operation(m, t))
    }

    /// The operation for a method and an exact path template
    /// (`GET`, `/projects/{project_id}/branches`).
    pub fn operation(&self, method: &str, template: &str) -> Option<Operation<'_>> {
        let method = method.to_ascii_lowercase();
        let (m, _, t) = self
            .ops
            .iter()
            .find(|(m, _, t)| *m == method && t == template)?;
        let op = self.doc.get("paths")?.get(t)?.get(m)?;
        Some(Operation {
            spec: self,
            method: m,
            template: t,
            op,
        })
    }

    /// The operation serving a concrete request path (`/api/v2/projects/abc/branches/br-1`,
    /// with or without the `/api/v2` base and query string). When several templates match,
    /// the one with literal segments earliest wins (`/branches/count` over
    /// `/branches/{branch_id}`), as routers do.
    pub fn find_operation(&self, method: &str, path: &str) -> Option<Operation<'_>> {
        let method = method.to_ascii_lowercase();
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let path = path.strip_prefix(API_BASE).unwrap_or(path);
        let concrete = split_path(path);
        let mut best: Option<(&OpEntry, Vec<bool>)> = None;
        for entry in &self.ops {
            let (m, segs, _) = entry;
            if *m != method || segs.len() != concrete.len() {
                continue;
            }
            let mut literal = Vec::with_capacity(segs.len());
            let mut ok = true;
            for (t, c) in segs.iter().zip(&concrete) {
                if t.starts_with('{') && t.ends_with('}') {
                    if c.is_empty() {
                        ok = false;
                        break;
                    }
                    literal.push(false);
                } else if t == c {
                    literal.push(true);
                } else {
                    ok = false;
                    break;
                }
            }
            if !ok {
                continue;
            }
            // Vec<bool> compares lexicographically with true > false: more literal earlier wins.
            if best.as_ref().is_none_or(|(_, l)| literal > *l) {
                best = Some((entry, literal));
            }
        }
        let ((m, _, t), _) = best?;
        self.operation(m, t)
    }

    /// Follows `$ref`s until a schema that is not a reference.
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> Result<&'a Value, String> {
        let mut current = schema;
        for _ in 0..MAX_DEPTH {
            match current.get("$ref").and_then(Value::as_str) {
                Some(r) => current = self.pointer(r)?,
                None => return Ok(current),
            }
        }
        Err("`$ref` chain too long (cyclic?)".to_string())
    }

    fn pointer(&self, reference: &str) -> Result<&Value, String> {
        let ptr = reference
            .strip_prefix('#')
            .ok_or_else(|| format!("only local `$ref`s are supported, got `{reference}`"))?;
        self.doc
            .pointer(ptr)
            .ok_or_else(|| format!("`$ref` `{reference}` points at nothing"))
    }

    /// A schema of `components.schemas` by name (`Branch`).
    pub fn component_schema(&self, name: &str) -> Option<&Value> {
        self.doc.get("components")?.get("schemas")?.get(name)
    }

    /// Validates `value` against `schema` (which may be or contain `$ref`s into this document).
    pub fn validate(&self, schema: &Value, value: &Value) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        self.check(schema, value, &mut String::from("$"), &mut errors, 0);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &mut String,
        errors: &mut Vec<ValidationError>,
        depth: usize,
    ) {
        let mut err = |msg: String| {
            errors.push(ValidationError {
                path: path.clone(),
                message: msg,
            })
        };
        if depth > MAX_DEPTH {
            err("schema nests too deeply (cyclic `$ref`?)".to_string());
            return;
        }
        let schema = match self.resolve(schema) {
            Ok(s) => s,
            Err(e) => {
                err(format!("bad schema: {e}"));
                return;
            }
        };
        let Some(obj) = schema.as_object() else {
            // `true`/`{}`-like schemas (e.g. `additionalProperties: true`) accept anything.
            if schema == &Value::Bool(false) {
                err(format!("no value allowed here, got {}", describe(value)));
            }
            return;
        };

        let nullable = obj.get("nullable").and_then(Value::as_bool) == Some(true);
        if value.is_null() && nullable {
            return;
        }

        if let Some(ty) = obj.get("type").and_then(Value::as_str) {
            if !type_matches(ty, value) {
                let fmt = obj
                    .get("format")
                    .and_then(Value::as_str)
                    .filter(|f| *f == "date-time")
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                err(format!("expected {ty}{fmt}, got {}", describe(value)));
                return;
            }
        }

        if let Some(allowed) = obj.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                err(format!(
                    "{} is not one of the allowed values [{}]",
                    value,
                    list.join(", ")
                ));
            }
        }

        match value {
            Value::String(s) => {
                if obj.get("format").and_then(Value::as_str) == Some("date-time")
                    && chrono::DateTime::parse_from_rfc3339(s).is_err()
                {
                    err(format!(
                        "expected string (date-time), got \"{s}\" (not RFC 3339)"
                    ));
                }
                let len = s.chars().count() as u64;
                if let Some(min) = obj.get("minLength").and_then(Value::as_u64) {
                    if len < min {
                        err(format!(
                            "string of length {len} is shorter than minLength {min}"
                        ));
                    }
                }
                if let Some(max) = obj.get("maxLength").and_then(Value::as_u64) {
                    if len > max {
                        err(format!(
                            "string of length {len} is longer than maxLength {max}"
                        ));
                    }
                }
                if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
                    match self.pattern_matches(p, s) {
                        Some(true) => {}
                        Some(false) => err(format!("\"{s}\" does not match pattern {p}")),
                        None => err(format!("bad schema: pattern {p} does not compile")),
                    }
                }
            }
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    if let Some(min) = obj.get("minimum").and_then(Value::as_f64) {
                        if x < min {
                            err(format!("{n} is less than minimum {min}"));
                        }
                    }
                    if let Some(max) = obj.get("maximum").and_then(Value::as_f64) {
                        if x > max {
                            err(format!("{n} is greater than maximum {max}"));
                        }
                    }
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(min) = obj.get("minItems").and_then(Value::as_u64) {
                    if n < min {
                        err(format!("array of {n} items has fewer than minItems {min}"));
                    }
                }
                if let Some(max) = obj.get("maxItems").and_then(Value::as_u64) {
                    if n > max {
                        err(format!("array of {n} items has more than maxItems {max}"));
                    }
                }
                if let Some(item_schema) = obj.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        self.check(item_schema, item, path, errors, depth + 1);
                        path.truncate(len);
                    }
                }
            }
            Value::Object(map) => {
                if let Some(required) = obj.get("required").and_then(Value::as_array) {
                    for name in required.iter().filter_map(Value::as_str) {
                        if !map.contains_key(name) {
                            errors.push(ValidationError {
                                path: path.clone(),
                                message: format!("missing required property `{name}`"),
                            });
                        }
                    }
                }
                let props = obj.get("properties").and_then(Value::as_object);
                for (key, v) in map {
                    let len = path.len();
                    push_key(path, key);
                    if let Some(prop_schema) = props.and_then(|p| p.get(key)) {
                        self.check(prop_schema, v, path, errors, depth + 1);
                    } else if let Some(extra) = obj.get("additionalProperties") {
                        if extra == &Value::Bool(false) {
                            errors.push(ValidationError {
                                path: path.clone(),
                                message: "property not allowed (additionalProperties: false)"
                                    .to_string(),
                            });
                        } else {
                            self.check(extra, v, path, errors, depth + 1);
                        }
                    }
                    path.truncate(len);
                }
            }
            _ => {}
        }

        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.check(s, value, path, errors, depth + 1);
            }
        }
        if let Some(one) = obj.get("oneOf").and_then(Value::as_array) {
            let matching: Vec<usize> = one
                .iter()
                .enumerate()
                .filter(|(_, s)| self.quietly_valid(s, value, depth))
                .map(|(i, _)| i)
                .collect();
            if matching.len() != 1 {
                errors.push(ValidationError {
                    path: path.clone(),
                    message: format!(
                        "must match exactly one of {} `oneOf` schemas, matched {}",
                        one.len(),
                        matching.len()
                    ),
                });
            }
        }
        if let Some(any) = obj.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|s| self.quietly_valid(s, value, depth)) {
                errors.push(ValidationError {
                    path: path.clone(),
                    message: format!("matches none of the {} `anyOf` schemas", any.len()),
                });
            }
        }
    }

    fn quietly_valid(&self, schema: &Value, value: &Value, depth: usize) -> bool {
        let mut errs = Vec::new();
        self.check(schema, value, &mut String::from("$"), &mut errs, depth + 1);
        errs.is_empty()
    }

    fn pattern_matches(&self, pattern: &str, s: &str) -> Option<bool> {
        // A poisoned lock only means another validation panicked; the cache is still usable.
        let mut cache = self.patterns.lock().unwrap_or_else(|p| p.into_inner());
        let re = cache
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok());
        re.as_ref().map(|re| re.is_match(s))
    }
}

impl<'a> Operation<'a> {
    /// Lowercase HTTP method (`get`).
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The spec's path template (`/projects/{project_id}`).
    pub fn template(&self) -> &'a str {
        self.template
    }

    /// The spec's `operationId`, if any.
    pub fn operation_id(&self) -> Option<&'a str> {
        self.op.get("operationId").and_then(Value::as_str)
    }

    /// The raw operation object.
    pub fn raw(&self) -> &'a Value {
        self.op
    }

    /// Status codes the operation documents (`"200"`, `"default"`, ...).
    pub fn documented_statuses(&self) -> Vec<&'a str> {
        self.op
            .get("responses")
            .and_then(Value::as_object)
            .map(|r| r.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The response object for a status: the exact code, else `default`. `None` if neither is
    /// documented.
    pub fn response(&self, status: u16) -> Option<&'a Value> {
        let responses = self.op.get("responses")?;
        let r = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))?;
        self.spec.resolve(r).ok()
    }

    /// The JSON schema of the response body for a status. `Ok(None)` when the status is
    /// documented without a body; `Err` when the status is not documented at all.
    pub fn response_schema(&self, status: u16) -> Result<Option<&'a Value>, String> {
        let r = self.response(status).ok_or_else(|| {
            format!("{self:?} documents no response for status {status} and no `default`")
        })?;
        Ok(r.get("content")
            .and_then(|c| c.get("application/json"))
            .and_then(|c| c.get("schema")))
    }

    /// The JSON schema of the request body, if the operation takes one.
    pub fn request_body_schema(&self) -> Option<&'a Value> {
        let body = self.spec.resolve(self.op.get("requestBody")?).ok()?;
        body.get("content")?.get("application/json")?.get("schema")
    }

    /// Whether the spec marks the request body as required.
    pub fn request_body_required(&self) -> bool {
        self.op
            .get("requestBody")
            .and_then(|b| self.spec.resolve(b).ok())
            .and_then(|b| b.get("required"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// Validates a response body (`None` = empty body) against the schema for `status`.
    pub fn validate_response(
        &self,
        status: u16,
        body: Option<&Value>,
    ) -> Result<(), ValidationErrors> {
        let single = |message: String| {
            Err(ValidationErrors(vec![ValidationError {
                path: "$".to_string(),
                message,
            }]))
        };
        match (self.response_schema(status), body) {
            (Err(e), _) => single(e),
            (Ok(Some(schema)), Some(b)) => self.spec.validate(schema, b),
            (Ok(Some(_)), None) => single(format!(
                "{self:?} status {status}: expected a JSON body, got an empty body"
            )),
            (Ok(None), _) => Ok(()),
        }
    }

    /// Validates a request body against the operation's request schema.
    pub fn validate_request(&self, body: Option<&Value>) -> Result<(), ValidationErrors> {
        let single = |message: String| {
            Err(ValidationErrors(vec![ValidationError {
                path: "$".to_string(),
                message,
            }]))
        };
        match (self.request_body_schema(), body) {
            (Some(schema), Some(b)) => self.spec.validate(schema, b),
            (Some(_), None) if self.request_body_required() => {
                single(format!("{self:?}: a request body is required"))
            }
            (None, Some(_)) => single(format!("{self:?} takes no request body")),
            _ => Ok(()),
        }
    }
}

/// Splits a path into segments, ignoring leading and trailing slashes.
fn split_path(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect()
}

fn push_key(path: &mut String, key: &str) {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{}]", Value::String(key.to_string())));
    }
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        // Unknown type names are a schema problem, not the value's; accept.
        _ => true,
    }
}

/// A short description of a value for error messages (its type, and the value if short).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() <= 40 => format!("string \"{s}\""),
        Value::String(_) => "string".to_string(),
        Value::Array(a) => format!("array of {} items", a.len()),
        Value::Object(_) => "object".to_string(),
    }
}

/// Validates `body` against the response schema Neon's document gives for `method` on the
/// concrete `path` at `status`. Convenience for tests.
pub fn validate_neon_response(
    method: &str,
    path: &str,
    status: u16,
    body: Option<&Value>,
) -> Result<(), ValidationErrors> {
    let spec = Spec::neon();
    match spec.find_operation(method, path) {
        Some(op) => op.validate_response(status, body),
        None => Err(ValidationErrors(vec![ValidationError {
            path: "$".to_string(),
            message: format!("Neon's document has no operation {method} {path}"),
        }])),
    }
}

/// Validates a request `body` the client sends for `method` on the concrete `path` against
/// Neon's document. Convenience for the client's tests.
pub fn validate_neon_request(
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(), ValidationErrors> {
    let spec = Spec::neon();
    match spec.find_operation(method, path) {
        Some(op) => op.validate_request(body),
        None => Err(ValidationErrors(vec![ValidationError {
            path: "$".to_string(),
            message: format!("Neon's document has no operation {method} {path}"),
        }])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A tiny document whose components the hand-made tests reference.
    fn spec_with(schemas: Value) -> Spec {
        let doc = json!({
            "openapi": "3.0.3",
            "paths": {
                "/things/{id}": {"get": {"responses": {
                    "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                    "204": {"description": "no body"},
                    "default": {"$ref": "#/components/responses/Err"}
                }}},
                "/things/count": {"get": {"responses": {"200": {"description": "x"}}}},
                "/things": {"post": {
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                    "responses": {"201": {"description": "x"}}
                }}
            },
            "components": {
                "schemas": schemas,
                "responses": {"Err": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Err"}}}}}
            }
        });
        Spec::parse(&doc.to_string()).unwrap()
    }

    fn errs(spec: &Spec, schema: Value, value: Value) -> Vec<String> {
        match spec.validate(&schema, &value) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn empty() -> Spec {
        spec_with(json!({}))
    }

    #[test]
    fn types() {
        let s = empty();
        for (ty, good, bad) in [
            ("object", json!({}), json!([])),
            ("array", json!([1]), json!({})),
            ("string", json!("x"), json!(1)),
            ("integer", json!(3), json!(3.5)),
            ("number", json!(3.5), json!("3.5")),
            ("boolean", json!(true), json!("true")),
        ] {
            assert!(errs(&s, json!({"type": ty}), good).is_empty(), "{ty}");
            let e = errs(&s, json!({"type": ty}), bad);
            assert_eq!(e.len(), 1, "{ty}: {e:?}");
            assert!(e[0].starts_with(&format!("$: expected {ty}, got")), "{e:?}");
        }
        // An integral float is an integer, as JSON Schema says.
        assert!(errs(&s, json!({"type": "integer"}), json!(4.0)).is_empty());
    }

    #[test]
    fn nullable() {
        let s = empty();
        assert!(errs(&s, json!({"type": "string", "nullable": true}), json!(null)).is_empty());
        assert_eq!(
            errs(&s, json!({"type": "string"}), json!(null)),
            vec!["$: expected string, got null"]
        );
        assert_eq!(
            errs(
                &s,
                json!({"type": "string", "format": "date-time"}),
                json!(null)
            ),
            vec!["$: expected string (date-time), got null"]
        );
    }

    #[test]
    fn required_properties_and_paths() {
        let s = empty();
        let schema = json!({
            "type": "object",
            "required": ["branches"],
            "properties": {"branches": {"type": "array", "items": {
                "type": "object",
                "required": ["id"],
                "properties": {"created_at": {"type": "string", "format": "date-time"}, "id": {"type": "string"}}
            }}}
        });
        assert!(errs(
            &s,
            schema.clone(),
            json!({"branches": [{"id": "a", "created_at": "2024-01-01T00:00:00Z"}]})
        )
        .is_empty());
        assert_eq!(
            errs(&s, schema.clone(), json!({})),
            vec!["$: missing required property `branches`"]
        );
        let e = errs(
            &s,
            schema,
            json!({"branches": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d", "created_at": null}, {}]}),
        );
        assert_eq!(
            e,
            vec![
                "$.branches[3].created_at: expected string (date-time), got null",
                "$.branches[4]: missing required property `id`"
            ]
        );
    }

    #[test]
    fn additional_properties() {
        let s = empty();
        let closed = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false});
        assert!(errs(&s, closed.clone(), json!({"a": 1})).is_empty());
        assert_eq!(
            errs(&s, closed, json!({"a": 1, "b": 2})),
            vec!["$.b: property not allowed (additionalProperties: false)"]
        );
        let map = json!({"type": "object", "additionalProperties": {"type": "boolean"}});
        assert!(errs(&s, map.clone(), json!({"x": true, "y": false})).is_empty());
        assert_eq!(
            errs(&s, map, json!({"x": true, "odd key": 1})),
            vec!["$[\"odd key\"]: expected boolean, got number 1"]
        );
        // Without `additionalProperties`, unknown properties are fine (OpenAPI default).
        let open = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert!(errs(&s, open, json!({"a": 1, "zzz": [1]})).is_empty());
    }

    #[test]
    fn enums() {
        let s = empty();
        let e = json!({"type": "string", "enum": ["hourly", "daily"]});
        assert!(errs(&s, e.clone(), json!("daily")).is_empty());
        assert_eq!(
            errs(&s, e, json!("weekly")),
            vec!["$: \"weekly\" is not one of the allowed values [\"hourly\", \"daily\"]"]
        );
    }

    #[test]
    fn composition() {
        let s = spec_with(json!({
            "A": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
            "B": {"type": "object", "required": ["b"], "properties": {"b": {"type": "integer"}}},
            "Ref": {"$ref": "#/components/schemas/A"}
        }));
        let all = json!({"allOf": [{"$ref": "#/components/schemas/A"}, {"$ref": "#/components/schemas/B"}]});
        assert!(errs(&s, all.clone(), json!({"a": "x", "b": 1})).is_empty());
        assert_eq!(
            errs(&s, all, json!({"a": "x"})),
            vec!["$: missing required property `b`"]
        );

        let one = json!({"oneOf": [{"type": "boolean"}, {"type": "string"}]});
        assert!(errs(&s, one.clone(), json!("x")).is_empty());
        assert_eq!(
            errs(&s, one, json!(1)),
            vec!["$: must match exactly one of 2 `oneOf` schemas, matched 0"]
        );
        let ambiguous = json!({"oneOf": [{"type": "number"}, {"type": "integer"}]});
        assert_eq!(
            errs(&s, ambiguous, json!(1)),
            vec!["$: must match exactly one of 2 `oneOf` schemas, matched 2"]
        );

        let any = json!({"anyOf": [{"$ref": "#/components/schemas/Ref"}, {"$ref": "#/components/schemas/B"}]});
        assert!(errs(&s, any.clone(), json!({"b": 2})).is_empty());
        assert_eq!(
            errs(&s, any, json!({"c": 2})),
            vec!["$: matches none of the 2 `anyOf` schemas"]
        );
    }

    #[test]
    fn date_time() {
        let s = empty();
        let dt = json!({"type": "string", "format": "date-time"});
        for good in ["2024-03-15T15:30:00Z", "2024-03-15T15:30:00.123+02:00"] {
            assert!(errs(&s, dt.clone(), json!(good)).is_empty(), "{good}");
        }
        for bad in [
            "2024-03-15",
            "2024-03-15 15:30:00",
            "yesterday",
            "2024-13-01T00:00:00Z",
        ] {
            let e = errs(&s, dt.clone(), json!(bad));
            assert_eq!(e.len(), 1, "{bad}");
            assert!(e[0].contains("not RFC 3339"), "{e:?}");
        }
    }

    #[test]
    fn bounds_lengths_and_patterns() {
        let s = empty();
        let n = json!({"type": "integer", "minimum": 1, "maximum": 400});
        assert!(errs(&s, n.clone(), json!(1)).is_empty());
        assert!(errs(&s, n.clone(), json!(400)).is_empty());
        assert_eq!(
            errs(&s, n.clone(), json!(0)),
            vec!["$: 0 is less than minimum 1"]
        );
        assert_eq!(
            errs(&s, n, json!(401)),
            vec!["$: 401 is greater than maximum 400"]
        );
        let st = json!({"type": "string", "minLength": 2, "maxLength": 3});
        assert!(errs(&s, st.clone(), json!("ab")).is_empty());
        assert!(
            errs(&s, st.clone(), json!("äöü")).is_empty(),
            "length counts chars"
        );
        assert_eq!(
            errs(&s, st.clone(), json!("a")),
            vec!["$: string of length 1 is shorter than minLength 2"]
        );
        assert_eq!(
            errs(&s, st, json!("abcd")),
            vec!["$: string of length 4 is longer than maxLength 3"]
        );
        let arr = json!({"type": "array", "minItems": 1, "maxItems": 2});
        assert!(errs(&s, arr.clone(), json!([1])).is_empty());
        assert_eq!(errs(&s, arr.clone(), json!([])).len(), 1);
        assert_eq!(errs(&s, arr, json!([1, 2, 3])).len(), 1);
        let p = json!({"type": "string", "pattern": "^[a-z0-9-]{1,60}$"});
        assert!(errs(&s, p.clone(), json!("br-cold-1")).is_empty());
        assert_eq!(
            errs(&s, p, json!("BR_1")),
            vec!["$: \"BR_1\" does not match pattern ^[a-z0-9-]{1,60}$"]
        );
    }

    #[test]
    fn operations_and_templates() {
        let s = spec_with(json!({
            "Thing": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "Err": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
        }));
        let op = s.find_operation("GET", "/api/v2/things/t1?x=1").unwrap();
        assert_eq!(op.template(), "/things/{id}");
        // The literal segment wins over the parameter.
        assert_eq!(
            s.find_operation("get", "/things/count").unwrap().template(),
            "/things/count"
        );
        assert!(s.find_operation("DELETE", "/things/t1").is_none());
        assert!(s.find_operation("GET", "/things/t1/extra").is_none());

        assert!(op
            .validate_response(200, Some(&json!({"id": "t1"})))
            .is_ok());
        assert!(op.validate_response(200, Some(&json!({}))).is_err());
        assert!(op.validate_response(200, None).is_err());
        assert!(op.validate_response(204, None).is_ok());
        // 404 falls back to `default`, a `$ref` to a shared response.
        assert!(op
            .validate_response(404, Some(&json!({"code": "", "message": "not found"})))
            .is_ok());
        let e = op
            .validate_response(404, Some(&json!({"message": 1})))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "$: missing required property `code`\n$.message: expected string, got number 1"
        );

        let post = s.operation("POST", "/things").unwrap();
        assert!(post.validate_request(Some(&json!({"id": "x"}))).is_ok());
        assert!(post.validate_request(Some(&json!({"id": 1}))).is_err());
        assert!(post.validate_request(None).is_err());
        // No `default` and an undocumented status: reported, not accepted.
        assert!(post.validate_response(500, None).is_err());
    }

    #[test]
    fn cyclic_refs_are_reported_not_looped() {
        let s = spec_with(json!({"Loop": {"$ref": "#/components/schemas/Loop"}}));
        let e = errs(&s, json!({"$ref": "#/components/schemas/Loop"}), json!(1));
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("cyclic"), "{e:?}");
        let e = errs(&s, json!({"$ref": "#/components/schemas/Nope"}), json!(1));
        assert!(e[0].contains("points at nothing"), "{e:?}");
    }

    #[test]
    fn neon_document_operations() {
        let s = Spec::neon();
        assert_eq!(s.operations().count(), 146);
        let op = s
            .find_operation("GET", "/api/v2/projects/cold-poetry-1/branches/count")
            .unwrap();
        assert_eq!(op.template(), "/projects/{project_id}/branches/count");
        let op = s
            .find_operation("PATCH", "/projects/p-1/branches/br-1")
            .unwrap();
        assert_eq!(op.template(), "/projects/{project_id}/branches/{branch_id}");
        assert_eq!(op.operation_id(), Some("updateProjectBranch"));
        assert!(op.request_body_schema().is_some());
    }

    #[test]
    fn neon_document_schemas() {
        let s = Spec::neon();
        // Errors everywhere are GeneralError via `default`.
        let op = s.find_operation("GET", "/projects/p-1").unwrap();
        assert!(op
            .validate_response(
                404,
                Some(&json!({"code": "", "message": "not found", "request_id": "r"}))
            )
            .is_ok());
        assert!(op
            .validate_response(404, Some(&json!({"error": "not found"})))
            .is_err());

        // A Branch needs its required fields, and dates must be RFC 3339.
        let branch = s.component_schema("Branch").unwrap();
        let e = s
            .validate(branch, &json!({"id": "br-1", "created_at": null}))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("$: missing required property `project_id`"),
            "{text}"
        );
        assert!(
            text.contains("$.created_at: expected string (date-time), got null"),
            "{text}"
        );

        // The branch update body: `expires_at` is nullable, names are strings.
        let upd = s
            .operation("PATCH", "/projects/{project_id}/branches/{branch_id}")
            .unwrap();
        assert!(upd
            .validate_request(Some(&json!({"branch": {"name": "x", "expires_at": null}})))
            .is_ok());
        assert!(upd
            .validate_request(Some(&json!({"branch": {"name": 5}})))
            .is_err());
        assert!(upd
            .validate_request(Some(&json!({"branch": {"expires_at": "tomorrow"}})))
            .is_err());
    }
}
