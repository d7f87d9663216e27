//! Parameters checked against a plan's JSON Schema before any broker sees them.

use crate::FieldError;

/// Checks that `schema` compiles as a JSON Schema (a catalog whose schemas do not is
/// refused when the broker is registered).
pub fn check_schema(schema: &serde_json::Value) -> Result<(), String> {
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks `parameters` against `schema`; the error names the first field at fault
/// (`parameters.maxmemory_mb`).
pub fn validate(
    schema: &serde_json::Value,
    parameters: &serde_json::Value,
) -> Result<(), FieldError> {
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        FieldError::new(
            "parameters",
            format!("the plan's schema does not compile ({e}); ask a platform administrator to refresh the broker"),
        )
    })?;
    match validator.iter_errors(parameters).next() {
        None => Ok(()),
        Some(error) => {
            let pointer = error.instance_path().to_string();
            let field = if pointer.is_empty() {
                "parameters".to_owned()
            } else {
                format!(
                    "parameters{}",
                    pointer
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(|s| format!(".{s}"))
                        .collect::<String>()
                )
            };
            Err(FieldError::new(field, error.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_are_checked_against_the_plans_schema() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": {"maxmemory_mb": {"type": "integer", "minimum": 16, "maximum": 256}},
            "additionalProperties": false
        });
        assert_eq!(validate(&schema, &json!({"maxmemory_mb": 64})), Ok(()));
        let err = validate(&schema, &json!({"maxmemory_mb": 1024})).err();
        assert_eq!(
            err.map(|e| e.field),
            Some("parameters.maxmemory_mb".to_owned())
        );
        let err = validate(&schema, &json!({"other": 1})).err();
        assert_eq!(err.map(|e| e.field), Some("parameters".to_owned()));
        assert!(check_schema(&json!({"type": "no-such-type"})).is_err());
    }
}
