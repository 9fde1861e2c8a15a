//! The polling loop: every `pollingInterval`, aligned to its multiples, each ScaledObject
//! with a `useCachedMetrics` trigger is polled and the results stored for HPA reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use scaler_core::fallback::HealthTracker;
use scaler_core::poll::{next_aligned, Cached, MetricCache};
use scaler_core::quantity::parse_quantity;
use scaler_core::resolve::build_scalers_resolved;
use scaler_core::scaled_object::DEFAULT_POLLING_INTERVAL;
use scaler_core::ScaledObject;
use tracing::{debug, Instrument};

use crate::telemetry::Telemetry;

/// How long a cached result answers HPA reads: two intervals, so one slow or failed poll
/// does not send reads to the source.
pub fn max_age(so: &ScaledObject) -> Duration {
    Duration::from_secs(2 * interval_of(so) as u64)
}

fn interval_of(so: &ScaledObject) -> i64 {
    i64::from(
        so.spec
            .polling_interval
            .unwrap_or(DEFAULT_POLLING_INTERVAL)
            .max(1),
    )
}

fn uses_cache(so: &ScaledObject) -> bool {
    so.spec
        .triggers
        .iter()
        .any(|t| t.use_cached_metrics == Some(true))
}

/// Poll `so` once: every trigger with `useCachedMetrics`, concurrently.
pub async fn poll_once(
    client: &Client,
    so: &ScaledObject,
    operator_namespace: &str,
    cache: &MetricCache,
    health: &HealthTracker,
    telemetry: &Telemetry,
) {
    let (ns, so_name) = (so.namespace().unwrap_or_default(), so.name_any());
    let built = build_scalers_resolved(client, so, operator_namespace).await;
    let polls = so
        .spec
        .triggers
        .iter()
        .zip(built)
        .filter(|(t, _)| t.use_cached_metrics == Some(true))
        .filter_map(|(_, b)| b.ok())
        .map(|scaler| {
            let (ns, so_name) = (&ns, &so_name);
            async move {
                let started = Instant::now();
                let result = scaler.sample().await;
                telemetry.scaler_query(scaler.scaler_type(), started.elapsed(), result.is_ok());
                let spec = scaler.metric_spec();
                let name = spec.name.clone();
                if so.spec.fallback.is_some() {
                    health.record(ns, so_name, &name, result.is_ok());
                }
                let target = parse_quantity(&spec.target).map(|t| (t, spec.target_type));
                let (value, active) = match result {
                    Ok(s) => (Ok(s.value), s.active),
                    Err(e) => (Err(e.to_string()), false),
                };
                let cached = Cached {
                    value,
                    active,
                    at: Instant::now(),
                    target,
                };
                (name, cached)
            }
        });
    let results: HashMap<String, Cached> =
        futures::future::join_all(polls).await.into_iter().collect();
    cache.put(&ns, &so_name, results);
}

/// Run the loop until the task is dropped.
pub async fn run(
    client: Client,
    store: Store<ScaledObject>,
    operator_namespace: String,
    cache: Arc<MetricCache>,
    health: Arc<HealthTracker>,
    telemetry: Arc<Telemetry>,
) {
    let mut due: HashMap<(String, String), i64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now().timestamp_millis();
        let sos = store.state();
        let mut live = std::collections::HashSet::new();
        for so in sos.iter().filter(|so| uses_cache(so)) {
            let key = (so.namespace().unwrap_or_default(), so.name_any());
            live.insert(key.clone());
            let interval = interval_of(so);
            let next = due.entry(key.clone()).or_insert(0);
            if now < *next {
                continue;
            }
            *next = next_aligned(now, interval);
            let (client, so, ns, cache, health, telemetry) = (
                client.clone(),
                so.clone(),
                operator_namespace.clone(),
                cache.clone(),
                health.clone(),
                telemetry.clone(),
            );
            let span = tracing::debug_span!("poll", scaledobject = %format!("{}/{}", key.0, key.1));
            tokio::spawn(
                async move {
                    poll_once(&client, &so, &ns, &cache, &health, &telemetry).await;
                    debug!("polled");
                }
                .instrument(span),
            );
        }
        due.retain(|k, _| live.contains(k));
        cache.retain(|ns, name| live.contains(&(ns.to_string(), name.to_string())));
    }
}
