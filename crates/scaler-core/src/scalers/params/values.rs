//! Parameter values as KEDA's typed config converts them (`setConfigValueHelper` in
//! typed_config.go): numbers through Go's `encoding/json`, booleans through
//! `strconv.ParseBool`, durations as Go durations or milliseconds, maps as `k=v,k=v`. Each
//! gives Go's words for a value it cannot read; the reader puts them in KEDA's
//! `unable to set param` sentence.

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
fn json_literal(v: &str, go_type: &str) -> String {
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
        None if want == "null" => {
            format!("json: cannot unmarshal null into Go value of type {go_type}")
        }
        None => format!("json: cannot unmarshal bool into Go value of type {go_type}"),
    }
}

/// Go's `encoding/json` decoding `v` into a number of Go type `go_type`: the number's text,
/// or Go's error. A quoted string, array or object gets Go's type-mismatch wording.
fn json_number_text<'v>(v: &'v str, go_type: &str) -> Result<&'v str, String> {
    let mismatch =
        |kind: &str| format!("json: cannot unmarshal {kind} into Go value of type {go_type}");
    match v.as_bytes().first() {
        Some(b't' | b'f' | b'n') => Err(json_literal(v, go_type)),
        Some(b'"') => Err(mismatch("string")),
        Some(b'[') => Err(mismatch("array")),
        Some(b'{') => Err(mismatch("object")),
        _ => json_number(v),
    }
}

/// KEDA's words around a number Go's `encoding/json` cannot read.
fn unmarshal_error(go_type: &str, detail: impl std::fmt::Display) -> String {
    format!("unable to unmarshal to field type {go_type}: {detail}")
}

/// An `int64` (Go's `encoding/json`): an optional `-` and digits, no `+`, no leading zero,
/// no fraction or exponent (`1e3` is a JSON number but not an integer).
pub(in crate::scalers) fn int64(v: &str) -> Result<i64, String> {
    let n = json_number_text(v, "int64").map_err(|e| unmarshal_error("int64", e))?;
    n.parse::<i64>().map_err(|_| {
        unmarshal_error(
            "int64",
            format!("json: cannot unmarshal number {n} into Go value of type int64"),
        )
    })
}

/// A `float64` (Go's `encoding/json`): a JSON number (no `+`, `.5`, `5.`, `NaN` or `Inf`)
/// that fits (`1e400` does not; `1e-400` is 0, as Go rounds it).
pub(in crate::scalers) fn float64(v: &str) -> Result<f64, String> {
    let n = json_number_text(v, "float64").map_err(|e| unmarshal_error("float64", e))?;
    n.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| {
            unmarshal_error(
                "float64",
                format!("json: cannot unmarshal number {n} into Go value of type float64"),
            )
        })
}

/// A `bool` (Go's `strconv.ParseBool`: `1`, `t`, `T`, `TRUE`, `true`, `True` and their
/// opposites).
pub(in crate::scalers) fn boolean(v: &str) -> Result<bool, String> {
    crate::activation::go_bool(v).ok_or_else(|| {
        format!(
            "unable to parse boolean value {v:?}: strconv.ParseBool: parsing {v:?}: invalid syntax"
        )
    })
}

/// A `time.Duration` (typed_config.go:450-470), in nanoseconds: a Go duration, else whole
/// milliseconds (wrapping past `i64` as Go's multiplication does); negative is an error.
pub(in crate::scalers) fn duration(v: &str) -> Result<i64, String> {
    match crate::go_duration::parse(v) {
        Ok(ns) if ns < 0 => Err(format!("duration cannot be negative: {v:?}")),
        Ok(ns) => Ok(ns),
        Err(_) => match v.parse::<i64>() {
            Err(_) => Err(format!("unable to parse duration value {v:?}: must be either a duration string (e.g. '30s', '5m') or a number of milliseconds")),
            Ok(ms) if ms < 0 => Err(format!("duration cannot be negative: {ms} milliseconds")),
            Ok(ms) => Ok(ms.wrapping_mul(1_000_000)),
        },
    }
}

/// A `map[string]string` (typed_config.go:345-367): every comma-separated element, trimmed,
/// must split on `=` into exactly a key and a value, so `k=a=b`, `k` and a trailing comma
/// are errors; a repeated key keeps its last value (in its first place).
pub(in crate::scalers) fn pairs(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for elem in v.split(',').map(str::trim) {
        let mut kv = elem.split('=');
        let (Some(k), Some(val), None) = (kv.next(), kv.next(), kv.next()) else {
            return Err(format!("expected format key=value, got {elem:?}"));
        };
        let (k, val) = (k.trim().to_string(), val.trim().to_string());
        match out.iter_mut().find(|(seen, _)| *seen == k) {
            Some(slot) => slot.1 = val,
            None => out.push((k, val)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own answers (encoding/json into KEDA's `reflect.New(type)`), for both types.
    #[test]
    fn numbers_as_go_reads_them() {
        let f = |v: &str| float64(v);
        assert_eq!(f("2.5"), Ok(2.5));
        assert_eq!(f("1e3"), Ok(1000.0));
        assert_eq!(f("-0"), Ok(-0.0));
        assert_eq!(f("1e-400"), Ok(0.0));
        let cases = [
            (
                "one",
                "invalid character 'o' looking for beginning of value",
            ),
            ("+5", "invalid character '+' looking for beginning of value"),
            (".5", "invalid character '.' looking for beginning of value"),
            (
                "NaN",
                "invalid character 'N' looking for beginning of value",
            ),
            ("5.", "unexpected end of JSON input"),
            ("0x10", "invalid character 'x' after top-level value"),
            (
                "true",
                "json: cannot unmarshal bool into Go value of type float64",
            ),
            (
                "\"5\"",
                "json: cannot unmarshal string into Go value of type float64",
            ),
            (
                "[1]",
                "json: cannot unmarshal array into Go value of type float64",
            ),
            (
                "1e400",
                "json: cannot unmarshal number 1e400 into Go value of type float64",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(
                f(v),
                Err(format!("unable to unmarshal to field type float64: {want}")),
                "{v}"
            );
        }
        assert_eq!(int64("-12"), Ok(-12));
        assert_eq!(
            int64("2.5"),
            Err("unable to unmarshal to field type int64: json: cannot unmarshal number 2.5 into Go value of type int64".into())
        );
        assert_eq!(
            int64("{}"),
            Err("unable to unmarshal to field type int64: json: cannot unmarshal object into Go value of type int64".into())
        );
    }
}
