//! The operations of Neon's OpenAPI document, read from the bundled copy at startup, so that every
//! operation the emulator does not emulate answers 501 naming itself instead of a bare 404.

use serde_json::Value;

/// The bundled OpenAPI document (`sim/spec/neon-v2.json`).
pub const SPEC_JSON: &str = include_str!("../spec/neon-v2.json");

/// One operation of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecOperation {
    /// Upper-case HTTP method.
    pub method: String,
    /// Path template relative to `/api/v2`, e.g. `/projects/{project_id}`.
    pub path: String,
    pub operation_id: String,
}

/// Every operation in the bundled document, in document order.
pub fn operations() -> anyhow::Result<Vec<SpecOperation>> {
    let doc: Value = serde_json::from_str(SPEC_JSON)
        .map_err(|e| anyhow::anyhow!("bundled OpenAPI document is not JSON: {e}"))?;
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow::anyhow!("bundled OpenAPI document has no `paths` object"))?;
    let mut out = Vec::new();
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            if !matches!(method.as_str(), "get" | "put" | "post" | "patch" | "delete") {
                continue;
            }
            let operation_id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or("unnamedOperation")
                .to_string();
            out.push(SpecOperation {
                method: method.to_uppercase(),
                path: path.clone(),
                operation_id,
            });
        }
    }
    Ok(out)
}
