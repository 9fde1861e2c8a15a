//! The metric path and query parser never panics: any bytes give a request or a Status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_adapter::request::MetricRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    };
    let _ = MetricRequest::parse(
        &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{path}"),
        query,
    );
    let _ = MetricRequest::parse(path, query);
});
