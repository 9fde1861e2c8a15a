//! Values as KEDA's typed config reads them (`pkg/scalers/scalersconfig/typed_config.go`):
//! integers through Go's `encoding/json`, booleans through `strconv.ParseBool`, each with
//! KEDA's words when it cannot read them.

use super::ScalerError;

/// KEDA's typed-config wrapper around a value it cannot read.
pub(super) fn unable_to_set(key: &str, value: &str, detail: impl std::fmt::Display) -> ScalerError {
    ScalerError::invalid(
        key,
        format!("unable to set param \"{key}\" value {value:?}: {detail}"),
    )
}

/// Go's `encoding/json` quoting of one input byte in its syntax errors (`quoteChar`: the
/// byte read as a rune, then `strconv.Quote`d between single quotes).
fn json_char(b: u8) -> String {
    let inner = match b {
        b'\'' => r"\'".to_string(),
        b'\\' => r"\\".to_string(),
        0x07 => r"\a".to_string(),
        0x08 => r"\b".to_string(),
        b'\t' => r"\t".to_string(),
        b'\n' => r"\n".to_string(),
        0x0b => r"\v".to_string(),
        0x0c => r"\f".to_string(),
        b'\r' => r"\r".to_string(),
        0x00..=0x1f | 0x7f => format!("\\x{b:02x}"),
        0x80..=0x9f | 0xad => format!("\\u{b:04x}"),
        _ => char::from(b).to_string(),
    };
    format!("'{inner}'")
}

/// Go's `encoding/json` message for input that ends inside a value.
const JSON_EOF: &str = "unexpected end of JSON input";

/// Go's `encoding/json` error for anything but whitespace after a top-level value.
fn json_trailing(rest: &[u8]) -> Option<String> {
    rest.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .map(|&b| format!("invalid character {} after top-level value", json_char(b)))
}

/// Go's `encoding/json` syntax check of a top-level JSON number, with its messages; the
/// number's text on success.
fn json_number(v: &str) -> Result<&str, String> {
    let bytes = v.as_bytes();
    let mut i = 0;
    let at = |i: usize| bytes.get(i).copied();
    let digits = |mut i: usize| {
        while at(i).is_some_and(|b| b.is_ascii_digit()) {
            i += 1;
        }
        i
    };
    if at(i) == Some(b'-') {
        i += 1;
    }
    match at(i) {
        None => return Err(JSON_EOF.into()),
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(i),
        Some(b) if i > 0 => {
            return Err(format!(
                "invalid character {} in numeric literal",
                json_char(b)
            ))
        }
        Some(b) => {
            return Err(format!(
                "invalid character {} looking for beginning of value",
                json_char(b)
            ))
        }
    }
    if at(i) == Some(b'.') {
        match at(i + 1) {
            None => return Err(JSON_EOF.into()),
            Some(b) if !b.is_ascii_digit() => {
                return Err(format!(
                    "invalid character {} after decimal point in numeric literal",
                    json_char(b)
                ))
            }
            Some(_) => i = digits(i + 1),
        }
    }
    if matches!(at(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(at(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match at(i) {
            None => return Err(JSON_EOF.into()),
            Some(b) if !b.is_ascii_digit() => {
                return Err(format!(
                    "invalid character {} in exponent of numeric literal",
                    json_char(b)
                ))
            }
            Some(_) => i = digits(i),
        }
    }
    match json_trailing(&bytes[i..]) {
        Some(e) => Err(e),
        None => Ok(&v[..i]),
    }
}

/// Go's `encoding/json` reading a top-level `true`/`false`/`null` (the values a number
/// field can meet that start with a letter), with its messages.
fn json_literal(v: &str) -> String {
    let want = match v.as_bytes().first() {
        Some(b't') => "true",
        Some(b'f') => "false",
        _ => "null",
    };
    for (i, w) in want.bytes().enumerate() {
        match v.as_bytes().get(i) {
            None => return JSON_EOF.into(),
            Some(&b) if b != w => {
                return format!(
                    "invalid character {} in literal {want} (expecting {})",
                    json_char(b),
                    json_char(w)
                )
            }
            Some(_) => {}
        }
    }
    match json_trailing(&v.as_bytes()[want.len()..]) {
        Some(e) => e,
        None if want == "null" => "json: cannot unmarshal null into Go value of type int64".into(),
        None => "json: cannot unmarshal bool into Go value of type int64".into(),
    }
}

/// An `int64` parameter as KEDA's typed config reads it (Go's `encoding/json`): an
/// optional `-` and digits, no `+`, no leading zero, no fraction or exponent (`1e3` is a
/// JSON number but not an integer). The error is KEDA's, word for word for numbers and
/// literals; a quoted string, array or object gets Go's type-mismatch wording.
pub(super) fn keda_int64(key: &str, v: &str) -> Result<i64, ScalerError> {
    let detail = match v.as_bytes().first() {
        Some(b't' | b'f' | b'n') => json_literal(v),
        Some(b'"') => "json: cannot unmarshal string into Go value of type int64".into(),
        Some(b'[') => "json: cannot unmarshal array into Go value of type int64".into(),
        Some(b'{') => "json: cannot unmarshal object into Go value of type int64".into(),
        _ => match json_number(v) {
            Ok(n) => match n.parse::<i64>() {
                Ok(i) => return Ok(i),
                Err(_) => format!("json: cannot unmarshal number {n} into Go value of type int64"),
            },
            Err(syntax) => syntax,
        },
    };
    Err(unable_to_set(
        key,
        v,
        format!("unable to unmarshal to field type int64: {detail}"),
    ))
}

/// A boolean as KEDA's typed config reads it (Go's `strconv.ParseBool`), with its wording;
/// `default` when absent.
pub(super) fn keda_bool(
    key: &str,
    value: Option<&str>,
    default: bool,
) -> Result<bool, ScalerError> {
    let Some(v) = value else {
        return Ok(default);
    };
    crate::activation::go_bool(v).ok_or_else(|| {
        unable_to_set(
            key,
            v,
            format!("unable to parse boolean value {v:?}: strconv.ParseBool: parsing {v:?}: invalid syntax"),
        )
    })
}
