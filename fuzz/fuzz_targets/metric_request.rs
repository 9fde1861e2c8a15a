//! The metric path and query parser: any bytes give a request or a Status, never a panic;
//! an accepted request has a valid namespace and metric name, and written back out
//! (percent-encoded, its selector in the full parser's form) it reads the same.
#![no_main]

use eventscale_fuzz::selector_string;
use libfuzzer_sys::fuzz_target;
use metrics_adapter::request::{MetricRequest, MAX_URI_BYTES, METRICS_PREFIX};

/// Percent-encode everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn check(req: &MetricRequest) {
    let ns = req.namespace.as_bytes();
    assert!(
        !ns.is_empty() && ns.len() <= 63,
        "namespace {:?}",
        req.namespace
    );
    assert!(
        ns.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && ns[0] != b'-'
            && ns[ns.len() - 1] != b'-',
        "namespace {:?}",
        req.namespace
    );
    assert!(
        !req.metric.is_empty() && !req.metric.contains(['/', '%']),
        "metric {:?}",
        req.metric
    );
    let path = format!(
        "{METRICS_PREFIX}{}/{}",
        encode(&req.namespace),
        encode(&req.metric)
    );
    let query = format!("labelSelector={}", encode(&selector_string(&req.selector)));
    if path.len() + query.len() > MAX_URI_BYTES {
        return;
    }
    match MetricRequest::parse(&path, Some(&query)) {
        Ok(again) => assert_eq!(&again, req, "{path}?{query}"),
        Err(e) => panic!("{path}?{query} was refused: {}", e.message),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    };
    for full in [format!("{METRICS_PREFIX}{path}"), path.to_string()] {
        if let Ok(req) = MetricRequest::parse(&full, query) {
            check(&req);
        }
    }
});
