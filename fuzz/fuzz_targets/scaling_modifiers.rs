//! `scalingModifiers`: any formula text parses or is refused, never a panic; an accepted
//! formula evaluated over arbitrary metric values (NaN, infinities, huge and negative
//! numbers, missing triggers) gives a finite number, nil or an error, the same answer every
//! time, and a composite value is active only above its activation target.
//!
//! Input: the formula, a NUL byte, then the trigger values as little-endian f64s (bound to
//! the names the formula uses, in order of discovery; a name without a value is left out).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use scaler_core::modifiers::{composite, validate, Formula, FormulaError};

/// Names the formula refers to, found by checking against a growing list.
fn names(formula: &Formula) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for _ in 0..64 {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        match formula.check(&refs) {
            Err(FormulaError::UnknownName(n)) if !n.ends_with("()") && !names.contains(&n) => {
                names.push(n)
            }
            _ => break,
        }
    }
    names
}

fuzz_target!(|data: &[u8]| {
    let (text, values) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(src) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(formula) = Formula::parse(src) else {
        return;
    };
    let names = names(&formula);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let values: Vec<f64> = values
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let vars: BTreeMap<String, f64> = names.iter().cloned().zip(values).collect();

    let first = formula.eval(&vars);
    if let Ok(Some(v)) = first {
        assert!(v.is_finite(), "{src:?} gave {v}");
    }
    assert_eq!(formula.eval(&vars), first, "{src:?} is not deterministic");

    // The path a ScaledObject takes: validated against its trigger names, then composed.
    let Ok(m) = validate(Some(src), Some("2"), Some("0.5"), None, &refs) else {
        return;
    };
    for (any_error, fallback) in [(false, None), (true, Some(3))] {
        if let Ok((value, active)) = composite(&m, &vars, any_error, fallback) {
            assert!(value.is_finite(), "{src:?} composed {value}");
            assert!(
                !active || (!any_error && value > 0.5),
                "{src:?}: {value} active"
            );
        }
    }
});
