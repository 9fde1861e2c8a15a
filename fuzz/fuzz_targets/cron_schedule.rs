//! The cron trigger: start/end schedules, time zone and replicas are parsed as the cron
//! scaler reads them, never a panic; an accepted schedule's next firing is strictly later,
//! on a whole minute, and the one after that later again; the scaler's sample at any time
//! is a whole, non-zero number of replicas inside the window and 0 outside.
//!
//! Input: five lines, `start`, `end`, `timezone`, `desiredReplicas`, and the time of the
//! sample in Unix seconds (clamped to 1970..2200, the times a clock can give).
#![no_main]

use chrono::{DateTime, TimeZone, Utc};
use eventscale_fuzz::fields;
use libfuzzer_sys::fuzz_target;
use scaler_core::linux_cron::LinuxCron;
use scaler_core::scaled_object::ScaleTriggers;
use scaler_core::scalers::cron::CronScaler;
use scaler_core::scalers::{AuthParams, TriggerContext};

/// 2200-01-01T00:00:00Z.
const LATEST: i64 = 7_258_118_400;

fn check_next<Tz: TimeZone>(spec: &str, cron: &LinuxCron, t: &DateTime<Tz>) {
    let Some(next) = cron.next_after(t) else {
        return;
    };
    assert!(next > *t, "{spec:?}: {next:?} is not after {t:?}");
    assert_eq!(
        next.timestamp() % 60,
        0,
        "{spec:?}: {next:?} is not on a minute"
    );
    if let Some(after) = cron.next_after(&next) {
        assert!(after > next, "{spec:?}: {after:?} is not after {next:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some([start, end, tz, replicas, at]) = fields::<5>(data) else {
        return;
    };
    let secs = at.trim().parse::<i64>().unwrap_or(1_700_000_000);
    let Some(now) = Utc.timestamp_opt(secs.clamp(0, LATEST), 0).single() else {
        return;
    };
    if let Ok(cron) = start.parse::<LinuxCron>() {
        check_next(start, &cron, &now);
        if let Ok(zone) = tz.parse::<chrono_tz::Tz>() {
            check_next(start, &cron, &now.with_timezone(&zone));
        }
    }

    let trigger = ScaleTriggers {
        type_: "cron".into(),
        metadata: [
            ("start", start),
            ("end", end),
            ("timezone", tz),
            ("desiredReplicas", replicas),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    };
    let pools = scaler_core::pools::Pools::default();
    let Ok(scaler) = CronScaler::new(TriggerContext {
        index: 0,
        trigger: &trigger,
        auth: &AuthParams::new(),
        namespace: "fuzz",
        name: "cron",
        client: None,
        as_metric_source: false,
        pools: &pools,
    }) else {
        return;
    };
    if let Ok(sample) = scaler.sample_at(now) {
        if sample.active {
            assert!(
                sample.value != 0.0 && sample.value.fract() == 0.0,
                "{data:?}: {} replicas",
                sample.value
            );
        } else {
            assert_eq!(sample.value, 0.0, "{data:?}");
        }
    }
});
