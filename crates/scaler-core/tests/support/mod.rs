//! Building one scaler from metadata and authentication pairs, for the scaler tests.

use std::collections::BTreeMap;

use scaler_core::pools::Pools;
use scaler_core::scaled_object::ScaleTriggers;
use scaler_core::scalers::{AuthParams, ScalerError, TriggerContext};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

thread_local! {
    /// The clients of one test: each test runs on a thread of its own, so scalers built in
    /// one test share connections (as a process's do) and never another test's.
    static POOLS: Pools = Pools::default();
}

/// Trigger 0 of type `type_` of ScaledObject `ns/name`, built by `new` (a scaler's `new`).
pub fn build<S>(
    type_: &str,
    name: &str,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
    new: impl FnOnce(TriggerContext<'_>) -> Result<S, ScalerError>,
) -> Result<S, ScalerError> {
    let trigger = ScaleTriggers {
        type_: type_.into(),
        metadata: map(meta).into(),
        ..Default::default()
    };
    let auth: AuthParams = map(auth);
    POOLS.with(|pools| {
        new(TriggerContext {
            index: 0,
            trigger: &trigger,
            auth: &auth,
            namespace: "ns",
            name,
            client: None,
            as_metric_source: false,
            pools,
        })
    })
}
