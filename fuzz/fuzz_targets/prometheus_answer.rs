//! Prometheus answers: any status and body the query API sends is read by the prometheus
//! scaler's own parser (`PrometheusScaler::value_of`, bytes decoded as the scaler decodes
//! them) into a finite value or an error, never a panic; a non-2xx status is an error;
//! `ignoreNullValues: true` only ever turns an error into a value, never changes a value.
//!
//! Input: one byte whose low bit picks a 5xx status instead of 200, then the body.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use scaler_core::pools::Pools;
use scaler_core::scaled_object::ScaleTriggers;
use scaler_core::scalers::prometheus::PrometheusScaler;
use scaler_core::scalers::{AuthParams, TriggerContext};

/// The scaler with `ignoreNullValues` false, then true; built once.
fn scalers() -> &'static [PrometheusScaler; 2] {
    static SCALERS: OnceLock<[PrometheusScaler; 2]> = OnceLock::new();
    SCALERS.get_or_init(|| {
        let pools = Pools::default();
        [false, true].map(|ignore| {
            let trigger = ScaleTriggers {
                type_: "prometheus".into(),
                metadata: [
                    ("serverAddress", "http://prometheus.fuzz:9090"),
                    ("query", "sum(rate(http_requests_total[2m]))"),
                    ("threshold", "10"),
                    ("ignoreNullValues", if ignore { "true" } else { "false" }),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                ..Default::default()
            };
            PrometheusScaler::new(TriggerContext {
                index: 0,
                trigger: &trigger,
                auth: &AuthParams::new(),
                namespace: "fuzz",
                name: "prometheus",
                client: None,
                as_metric_source: false,
                pools: &pools,
            })
            .unwrap_or_else(|e| panic!("the fuzz target's trigger: {e}"))
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let [flags, body @ ..] = data else {
        return;
    };
    let status = if flags & 1 == 1 { 503 } else { 200 };
    let body = String::from_utf8_lossy(body);
    let [strict, lenient] = scalers();
    let strict = strict.value_of(status, &body);
    let lenient = lenient.value_of(status, &body);
    for v in [&strict, &lenient].into_iter().flatten() {
        assert!(v.is_finite(), "{body:?} gave {v}");
    }
    if status != 200 {
        assert!(strict.is_err() && lenient.is_err(), "{status} accepted");
    }
    if let Ok(v) = strict {
        assert_eq!(lenient.ok(), Some(v), "{body:?}");
    }
});
