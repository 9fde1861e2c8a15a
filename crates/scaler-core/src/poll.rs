//! The polling loop's store: per ScaledObject, the last value of each trigger that sets
//! `useCachedMetrics`, so HPA reads of those metrics never reach the source.
//!
//! Polls are aligned to multiples of `pollingInterval` since the Unix epoch, so identical
//! queries from many ScaledObjects with the same interval go out at the same instant and
//! are coalesced into one request (see [`crate::coalesce`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// One trigger's last poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The value (when the poll succeeded).
    pub value: Result<f64, String>,
    /// Whether the trigger was active.
    pub active: bool,
    /// When it was polled.
    pub at: Instant,
    /// The metric's target and type, for fallback.
    pub target: Option<(f64, crate::scalers::MetricTargetType)>,
}

type Key = (String, String);

/// Per ScaledObject, per metric (lowercase name), the last poll.
#[derive(Default)]
pub struct MetricCache {
    entries: RwLock<HashMap<Key, Arc<HashMap<String, Cached>>>>,
}

impl MetricCache {
    /// The last poll of `metric` of ScaledObject `namespace/name`, if it is younger than
    /// `max_age`.
    pub fn get(
        &self,
        namespace: &str,
        name: &str,
        metric: &str,
        max_age: Duration,
    ) -> Option<Cached> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let so = entries.get(&(namespace.to_string(), name.to_string()))?;
        so.get(&metric.to_ascii_lowercase())
            .filter(|c| c.at.elapsed() <= max_age)
            .cloned()
    }

    /// Replace what is stored for `namespace/name`.
    pub fn put(&self, namespace: &str, name: &str, metrics: HashMap<String, Cached>) {
        let metrics = metrics
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.to_string(), name.to_string()), Arc::new(metrics));
    }

    /// Keep only the ScaledObjects `keep` says still exist.
    pub fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(ns, name), _| keep(ns, name));
    }

    /// How many ScaledObjects have entries.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The next poll time after `now_ms` (Unix milliseconds) for an interval of
/// `interval_s` seconds: the next multiple of the interval.
pub fn next_aligned(now_ms: i64, interval_s: i64) -> i64 {
    let step = interval_s.max(1) * 1000;
    (now_ms.div_euclid(step) + 1) * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        assert_eq!(next_aligned(0, 30), 30_000);
        assert_eq!(next_aligned(29_999, 30), 30_000);
        assert_eq!(next_aligned(30_000, 30), 60_000);
        assert_eq!(next_aligned(61_234, 5), 65_000);
        assert_eq!(next_aligned(1_000, 0), 2_000, "interval at least 1 s");
    }

    #[test]
    fn store_and_expire() {
        let c = MetricCache::default();
        let now = Instant::now();
        c.put(
            "ns",
            "so",
            HashMap::from([(
                "s0-Prometheus".to_string(),
                Cached {
                    value: Ok(3.0),
                    active: true,
                    at: now,
                    target: None,
                },
            )]),
        );
        let hit = c
            .get("ns", "so", "S0-PROMETHEUS", Duration::from_secs(10))
            .expect("hit, any case");
        assert_eq!(hit.value, Ok(3.0));
        assert!(c.get("ns", "so", "s1-x", Duration::from_secs(10)).is_none());
        assert!(c
            .get("ns", "other", "s0-prometheus", Duration::from_secs(10))
            .is_none());
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            c.get("ns", "so", "s0-prometheus", Duration::from_millis(10))
                .is_none(),
            "too old"
        );
        c.retain(|_, name| name != "so");
        assert!(c.is_empty());
    }
}
