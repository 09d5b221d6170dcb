//! Argument schemas: JSON Schema compiled with `jsonschema` (no remote or
//! file references: `default-features = false`), validated before the
//! handler runs, every failing instance path reported.

use serde_json::Value;
use std::fmt::Write as _;

/// Longest text kept of one validation error in a 422 message, in bytes.
pub const MAX_ERROR_TEXT: usize = 160;

/// Why a schema did not compile.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

/// A compiled argument schema.
pub(crate) struct CompiledSchema {
    validator: jsonschema::Validator,
    schema: Value,
}

impl CompiledSchema {
    pub(crate) fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let validator =
            jsonschema::validator_for(schema).map_err(|e| SchemaError(e.to_string()))?;
        Ok(Self {
            validator,
            schema: schema.clone(),
        })
    }

    /// `Err` is the 422 message: `args failed validation: N errors: at
    /// /path: text; ...`, naming at most `max` instance paths (then `and K
    /// more`). The root path is written `/`.
    pub(crate) fn validate(&self, args: &Value, max: usize) -> Result<(), String> {
        if self.validator.is_valid(args) {
            return Ok(());
        }
        let mut listed = String::new();
        let mut count = 0usize;
        for e in self.validator.iter_errors(args) {
            count += 1;
            if count > max {
                continue;
            }
            let path = e.instance_path().as_str();
            let path = if path.is_empty() { "/" } else { path };
            let mut text = e.to_string();
            if text.len() > MAX_ERROR_TEXT {
                let mut cut = MAX_ERROR_TEXT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push('…');
            }
            if !listed.is_empty() {
                listed.push_str("; ");
            }
            let _ = write!(listed, "at {path}: {text}");
        }
        let mut msg = format!(
            "args failed validation: {count} error{}: {listed}",
            if count == 1 { "" } else { "s" }
        );
        if count > max {
            let _ = write!(msg, "; and {} more", count - max);
        }
        Err(msg)
    }

    /// Opt-in coercion, guided by `type`, `properties` and `items` of the
    /// schema (no `$ref`, no combinators): a string becomes a number,
    /// integer or boolean when the schema wants one and it parses; a number
    /// or boolean becomes a string when the schema wants a string.
    pub(crate) fn coerce(&self, args: &mut Value) {
        coerce(&self.schema, args, 0);
    }
}

fn wants(schema: &Value, ty: &str) -> bool {
    match schema.get("type") {
        Some(Value::String(s)) => s == ty,
        Some(Value::Array(a)) => a.iter().any(|t| t == ty),
        _ => false,
    }
}

fn coerce(schema: &Value, v: &mut Value, depth: usize) {
    if depth > 64 || !schema.is_object() {
        return;
    }
    match v {
        Value::String(s) if !wants(schema, "string") => {
            if wants(schema, "integer") {
                if let Ok(n) = s.trim().parse::<i64>() {
                    *v = Value::from(n);
                }
            } else if wants(schema, "number") {
                if let Some(n) = s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    *v = Value::Number(n);
                }
            } else if wants(schema, "boolean") {
                match s.as_str() {
                    "true" => *v = Value::Bool(true),
                    "false" => *v = Value::Bool(false),
                    _ => {}
                }
            }
        }
        Value::Number(n) if wants(schema, "string") && !wants(schema, "number") => {
            *v = Value::String(n.to_string());
        }
        Value::Bool(b) if wants(schema, "string") && !wants(schema, "boolean") => {
            *v = Value::String(b.to_string());
        }
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, sub) in props {
                    if let Some(x) = map.get_mut(k) {
                        coerce(sub, x, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for x in items {
                    coerce(sub, x, depth + 1);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> CompiledSchema {
        CompiledSchema::compile(&json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["id", "name"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    #[test]
    fn every_failing_path_is_named() {
        let s = schema();
        assert!(s.validate(&json!({"id": 1, "name": "a"}), 16).is_ok());
        let m = s
            .validate(&json!({"id": "x", "name": 2, "tags": ["a", 3, 4]}), 16)
            .unwrap_err();
        for path in ["/id", "/name", "/tags/1", "/tags/2"] {
            assert!(m.contains(&format!("at {path}:")), "{path} in {m}");
        }
        assert!(m.starts_with("args failed validation: 4 errors"), "{m}");
        let m = s.validate(&json!([]), 16).unwrap_err();
        assert!(m.contains("at /:"), "{m}");
    }

    #[test]
    fn the_list_is_capped() {
        let s = CompiledSchema::compile(&json!({"type": "array", "items": {"type": "string"}}))
            .unwrap();
        let m = s.validate(&json!([1, 2, 3, 4, 5]), 2).unwrap_err();
        assert!(m.contains("at /0:") && m.contains("at /1:"), "{m}");
        assert!(!m.contains("at /2:"), "{m}");
        assert!(m.ends_with("and 3 more"), "{m}");
    }

    #[test]
    fn coercion_only_converts_what_the_schema_wants() {
        let s = schema();
        let mut v = json!({"id": "42", "name": 7, "tags": [true, "x"]});
        s.coerce(&mut v);
        assert_eq!(v, json!({"id": 42, "name": "7", "tags": ["true", "x"]}));
        let mut v = json!({"id": "4x2", "name": "n"});
        s.coerce(&mut v);
        assert_eq!(v["id"], json!("4x2"));
    }

    #[test]
    fn a_bad_schema_is_an_error() {
        assert!(CompiledSchema::compile(&json!({"type": 12})).is_err());
    }
}
