//! What several fuzz targets share: writing a parsed selector back out, splitting an input
//! into text fields, reading a Kubernetes document.

use scaler_core::label_selector::{Operator, Selector};

/// A selector in the string form the full parser reads (never the `key=value` fast path:
/// equality is written `==`), so that parsing it again compares the two paths.
pub fn selector_string(sel: &Selector) -> String {
    sel.requirements()
        .iter()
        .map(|r| match r.op {
            Operator::Equals => format!("{}=={}", r.key, r.values.join("")),
            Operator::NotEquals => format!("{}!={}", r.key, r.values.join("")),
            Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
            Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
            Operator::Exists => r.key.clone(),
            Operator::DoesNotExist => format!("!{}", r.key),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `data` as UTF-8 text split at newlines into exactly `N` fields (the last keeps the
/// rest, newlines included); `None` when it is not UTF-8 or has fewer lines.
pub fn fields<const N: usize>(data: &[u8]) -> Option<[&str; N]> {
    let text = std::str::from_utf8(data).ok()?;
    let mut parts = text.splitn(N, '\n');
    let mut out = [""; N];
    for slot in &mut out {
        *slot = parts.next()?;
    }
    Some(out)
}

/// Run a future that never waits on I/O or timers to completion on this thread.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// A Kubernetes object as JSON (what the API server sends) when it starts with `{`, else as
/// YAML (what `kubectl apply -f` and `eventscale eval` read).
pub fn document<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    if data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        serde_json::from_slice(data).ok()
    } else {
        serde_yaml::from_slice(data).ok()
    }
}
