//! What several fuzz targets share: writing a parsed selector back out, and splitting an
//! input into text fields.

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
