//! The label selector parser never panics, and what it accepts it can match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scaler_core::label_selector::Selector;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = s.parse::<Selector>() {
        let labels = std::collections::BTreeMap::from([("a".to_string(), "b".to_string())]);
        let _ = sel.matches(&labels);
    }
});
