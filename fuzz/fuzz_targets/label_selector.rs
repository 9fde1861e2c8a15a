//! The label selector parser: never a panic; what it accepts, written back out in the
//! full parser's form (equality as `==`, so the `key=value` fast path is compared with the
//! lexer), parses to the same selector; the labels a positive selector names match it.
#![no_main]

use std::collections::BTreeMap;

use eventscale_fuzz::selector_string;
use libfuzzer_sys::fuzz_target;
use scaler_core::label_selector::{Operator, Selector};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = s.parse::<Selector>() else {
        return;
    };
    let written = selector_string(&sel);
    match written.parse::<Selector>() {
        Ok(again) => assert_eq!(again, sel, "{s:?} written as {written:?}"),
        Err(e) => panic!("{s:?} written as {written:?} was refused: {e}"),
    }
    // A selector of positive requirements on distinct keys matches the labels they name.
    let mut labels = BTreeMap::new();
    let positive = sel.requirements().iter().all(|r| {
        let value = match r.op {
            Operator::Equals | Operator::In => r.values[0].clone(),
            Operator::Exists => String::new(),
            _ => return false,
        };
        labels.insert(r.key.clone(), value).is_none()
    });
    if positive {
        assert!(sel.matches(&labels), "{s:?} against {labels:?}");
    }
});
