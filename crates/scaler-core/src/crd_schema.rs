//! What eventscale's CRD schemas add to the schemas derived from the types: every `int32`
//! field bounded to the int32 range. The API server checks a `format: int32` integer's type
//! but not its range, so `pollingInterval: 3000000000` would be stored, then fail to
//! deserialize in every watch of the kind, stopping it for all objects, not one. Bounded,
//! it is refused at apply, the field named.

use schemars::Schema;

/// Bound `schema` to the int32 range when it is a `format: int32` integer (a bound already
/// set is kept). For `#[schemars(transform = RecursiveTransform(bound_int32))]`.
pub fn bound_int32(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if obj.get("format").and_then(|f| f.as_str()) != Some("int32") {
        return;
    }
    obj.entry("minimum").or_insert(i32::MIN.into());
    obj.entry("maximum").or_insert(i32::MAX.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int32_fields_are_bounded_and_others_left_alone() {
        let mut s = schemars::json_schema!({"type": "integer", "format": "int32", "minimum": 1.0});
        bound_int32(&mut s);
        assert_eq!(
            s.as_value(),
            &serde_json::json!({"type": "integer", "format": "int32", "minimum": 1.0, "maximum": 2147483647})
        );
        let mut wide = schemars::json_schema!({"type": "integer", "format": "int64"});
        bound_int32(&mut wide);
        assert_eq!(wide.get("maximum"), None);
    }
}
