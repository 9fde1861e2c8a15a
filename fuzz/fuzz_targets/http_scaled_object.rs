//! HTTPScaledObject documents (JSON or YAML, either shape of the add-on): any document is
//! refused or becomes an object whose route is parsed or refused with a field, never a
//! panic. An accepted route has lower-case hosts, `/`-rooted path prefixes, replica bounds
//! with 1 <= max and min <= max, a positive target and a metric name of safe characters;
//! the interceptor's routing table sends a request for its host, prefix and headers to it;
//! and the ScaledObject the controller applies for it passes KEDA's validation.
#![no_main]

use std::sync::Arc;

use activator::http::{plan, HttpPlan};
use eventscale_fuzz::document;
use http::{HeaderMap, HeaderName, HeaderValue};
use interceptor::routing::RoutingTable;
use libfuzzer_sys::fuzz_target;
use scaler_core::http_scaled_object::HttpScaledObject;
use scaler_core::validation::validate_spec;

fuzz_target!(|data: &[u8]| {
    let Some(mut httpso) = document::<HttpScaledObject>(data) else {
        return;
    };
    httpso
        .metadata
        .namespace
        .get_or_insert_with(|| "fuzz".into());
    let Ok(route) = httpso.route() else {
        return;
    };

    for h in &route.hosts {
        assert!(
            !h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()),
            "host {h:?}"
        );
    }
    assert!(!route.path_prefixes.is_empty());
    for p in &route.path_prefixes {
        assert!(p.starts_with('/'), "path prefix {p:?}");
    }
    assert!(
        route.max_replicas >= 1
            && route.min_replicas >= 0
            && route.min_replicas <= route.max_replicas,
        "replicas {}..{}",
        route.min_replicas,
        route.max_replicas
    );
    let target = route.metric.target();
    assert!(target.is_finite() && target > 0.0, "target {target}");
    let metric = route.metric_name();
    assert!(
        metric
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
        "metric name {metric:?}"
    );

    // A request for the route's host, each of its prefixes and its headers is routed to it.
    let table = RoutingTable::new([(&route, Arc::new(()))]);
    let host = match route.hosts.first() {
        Some(h) => match h.strip_prefix("*.") {
            Some(suffix) => format!("any.{suffix}"),
            None => h.clone(),
        },
        None => "any.host".to_string(),
    };
    let mut headers = HeaderMap::new();
    for m in &route.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(m.name.as_bytes()),
            HeaderValue::from_str(m.value.as_deref().unwrap_or("x")),
        ) else {
            return;
        };
        headers.append(name, value);
    }
    for prefix in &route.path_prefixes {
        let hit = table.lookup(&host, prefix, &headers).map(|(key, _)| key);
        assert_eq!(hit, Some(route.key.as_str()), "{host} {prefix}");
    }

    // What the controller applies for it passes KEDA's validation (a name too long for the
    // derived HPA is refused on the HTTPScaledObject instead).
    if let HttpPlan::Apply(so) = plan(&httpso, None, "eventscale-interceptor.eventscale:9090").plan
    {
        if let Err(e) = validate_spec(&so) {
            panic!("the controller applies an invalid ScaledObject: {e}");
        }
    }
});
