//! The interceptor's own metrics, in Prometheus' text format on the admin port: requests by
//! route and status code, their duration, cold starts, and the counts the scaler serves.

use std::fmt::Write as _;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A route's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// `namespace/name`, or `none` for requests no route matched.
    pub route: String,
}

/// A route and a status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCode {
    /// `namespace/name`, or `none`.
    pub route: String,
    /// The status code sent.
    pub code: u16,
}

type Histograms = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// The metrics.
#[derive(Debug)]
pub struct Telemetry {
    requests: Family<RouteCode, Counter>,
    duration: Histograms,
    cold_starts: Family<RouteLabel, Counter>,
    in_flight: Family<RouteLabel, Gauge>,
    held: Family<RouteLabel, Gauge>,
    ready_endpoints: Family<RouteLabel, Gauge>,
    registry: Registry,
}

fn histogram() -> Histogram {
    // 0.5 ms to about 65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eventscale_interceptor");
        let requests = Family::<RouteCode, Counter>::default();
        let duration: Histograms = Family::new_with_constructor(histogram);
        let cold_starts = Family::<RouteLabel, Counter>::default();
        let in_flight = Family::<RouteLabel, Gauge>::default();
        let held = Family::<RouteLabel, Gauge>::default();
        let ready_endpoints = Family::<RouteLabel, Gauge>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response headers, by route",
            duration.clone(),
        );
        registry.register(
            "cold_starts",
            "Requests that waited for the workload's first ready endpoint, by route",
            cold_starts.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests in flight, held ones included, by route",
            in_flight.clone(),
        );
        registry.register(
            "held_requests",
            "Requests waiting for a ready endpoint, by route",
            held.clone(),
        );
        registry.register(
            "ready_endpoints",
            "Ready endpoints of each route's Service",
            ready_endpoints.clone(),
        );
        Self {
            requests,
            duration,
            cold_starts,
            in_flight,
            held,
            ready_endpoints,
            registry,
        }
    }
}

impl Telemetry {
    /// A request of `route` answered with `code` after `seconds`.
    pub fn answered(&self, route: &str, code: u16, seconds: f64) {
        let route = route.to_string();
        self.requests
            .get_or_create(&RouteCode {
                route: route.clone(),
                code,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabel { route })
            .observe(seconds);
    }

    /// A request of `route` waited for the workload to start.
    pub fn cold_start(&self, route: &str) {
        self.cold_starts
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .inc();
    }

    /// The metrics as text, with the routes' gauges as of now.
    pub fn render(&self, routes: &crate::Routes) -> String {
        self.in_flight.clear();
        self.held.clear();
        self.ready_endpoints.clear();
        for (key, r) in &routes.by_key {
            let label = RouteLabel { route: key.clone() };
            let gauge = |f: &Family<RouteLabel, Gauge>, v: u64| {
                f.get_or_create(&label)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            gauge(&self.in_flight, r.counts.in_flight());
            gauge(&self.held, r.counts.held());
            gauge(&self.ready_endpoints, r.pool.backends().len() as u64);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# the metrics could not be encoded");
        }
        out
    }
}
