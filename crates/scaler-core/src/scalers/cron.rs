//! The `cron` trigger: `desiredReplicas` inside the window from `start` to `end`, 0 outside.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::params::{Param, Required};
use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::linux_cron::LinuxCron;
use crate::quantity::MilliQuantity;

/// Parsed `cron` trigger metadata.
#[derive(Debug, Clone)]
pub struct CronMetadata {
    /// IANA time zone the schedules are read in.
    pub timezone: Tz,
    /// Start of the window.
    pub start: LinuxCron,
    /// End of the window.
    pub end: LinuxCron,
    /// Replicas inside the window.
    pub desired_replicas: i64,
}

/// `start`: when the window opens (Linux cron).
const START: Param<Required> = Param::new("start").required();
/// `end`: when it closes.
const END: Param<Required> = Param::new("end").required();
/// `timezone`: the IANA zone the schedules are read in.
const TIMEZONE: Param<Required> = Param::new("timezone").required();
/// `desiredReplicas`: the value inside the window.
const DESIRED_REPLICAS: Param<Required> = Param::new("desiredReplicas").required();

/// The cron scaler.
#[derive(Debug, Clone)]
pub struct CronScaler {
    metadata: CronMetadata,
    spec: MetricSpec,
}

/// Go's `time.LoadLocation` as KEDA's cron scaler reports it (`unable to load timezone: %w`).
fn load_timezone(name: &str) -> Result<Tz, ScalerError> {
    // Go refuses these before looking for a file.
    let cause = if name.contains("..") || name.starts_with(['/', '\\']) {
        "time: invalid location name".to_string()
    } else {
        match name.parse::<Tz>() {
            Ok(tz) => return Ok(tz),
            Err(_) => format!("unknown time zone {name}"),
        }
    };
    Err(ScalerError::invalid(
        "timezone",
        format!("unable to load timezone: {cause}"),
    ))
}

/// KEDA's metric-name form of a schedule: spaces removed, `*`→`x`, `/`→`Sl`, `?`→`Qm`, `,`→`Cm`.
fn schedule_name(s: &str) -> String {
    s.replace(' ', "")
        .replace('*', "x")
        .replace('/', "Sl")
        .replace('?', "Qm")
        .replace(',', "Cm")
}

impl CronScaler {
    /// Parse and validate the trigger: KEDA's field reads, then its `Validate` checks in
    /// their order, then the time zone.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        let start_expr = params.text(&START)?;
        let end_expr = params.text(&END)?;
        let tz_name = params.text(&TIMEZONE)?;
        let desired_replicas = params.int(&DESIRED_REPLICAS)?;
        let start: LinuxCron = start_expr.parse().map_err(|e| {
            ScalerError::invalid("start", format!("error parsing start schedule: {e}"))
        })?;
        let end: LinuxCron = end_expr
            .parse()
            .map_err(|e| ScalerError::invalid("end", format!("error parsing end schedule: {e}")))?;
        if start_expr == end_expr {
            return Err(ScalerError::invalid(
                "end",
                "start and end can not have exactly same time input",
            ));
        }
        if desired_replicas == 0 {
            return Err(ScalerError::invalid(
                "desiredReplicas",
                "no desiredReplicas specified",
            ));
        }
        // KEDA loads the zone at every poll and fails the poll; checking it here gives the
        // same message once, when the trigger is read.
        let timezone = load_timezone(tz_name)?;
        let name = format!(
            "cron-{tz_name}-{}-{}",
            schedule_name(start_expr),
            schedule_name(end_expr)
        );
        let spec = MetricSpec {
            name: ctx.metric_name(&name),
            target_type: ctx.target_type()?,
            target: MilliQuantity::from_value(1.0),
        };
        Ok(CronScaler {
            metadata: CronMetadata {
                timezone,
                start,
                end,
                desired_replicas,
            },
            spec,
        })
    }

    /// Whether `now` is inside the window: the next end comes no later than the next start.
    pub fn in_window(&self, now: DateTime<Utc>) -> Result<bool, ScalerError> {
        let local = now.with_timezone(&self.metadata.timezone);
        let next_start = self.metadata.start.next_after(&local);
        let next_end = self.metadata.end.next_after(&local);
        match (next_start, next_end) {
            (Some(s), Some(e)) => Ok(e.timestamp() <= s.timestamp()),
            // A schedule that never fires again (only possible in theory: cron repeats
            // yearly) leaves the window closed rather than open forever.
            (None, _) | (_, None) => Ok(false),
        }
    }

    /// The sample at `now`.
    pub fn sample_at(&self, now: DateTime<Utc>) -> Result<Sample, ScalerError> {
        let active = self.in_window(now)?;
        let value = if active {
            self.metadata.desired_replicas as f64
        } else {
            0.0
        };
        Ok(Sample { value, active })
    }
}

#[async_trait]
impl Scaler for CronScaler {
    fn scaler_type(&self) -> &'static str {
        "cron"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        self.sample_at(Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaled_object::ScaleTriggers;

    fn trigger(pairs: &[(&str, &str)]) -> ScaleTriggers {
        ScaleTriggers {
            type_: "cron".into(),
            metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn build(index: usize, pairs: &[(&str, &str)]) -> Result<CronScaler, ScalerError> {
        CronScaler::new(TriggerContext {
            index,
            trigger: &trigger(pairs),
            auth: &crate::scalers::AuthParams::new(),
            namespace: "ns",
            name: "test",
            client: None,
            as_metric_source: false,
            pools: &crate::pools::Pools::default(),
        })
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    const BUSINESS: [(&str, &str); 4] = [
        ("timezone", "Europe/Paris"),
        ("start", "00 08 * * 1-5"),
        ("end", "00 18 * * 1-5"),
        ("desiredReplicas", "2"),
    ];

    #[test]
    fn metric_names_match_keda() {
        let cases = [
            (
                0,
                "Etc/UTC",
                "0 0 * * Thu",
                "59 23 * * Thu",
                "s0-cron-Etc-UTC-00xxThu-5923xxThu",
            ),
            (
                1,
                "Asia/Shanghai",
                "0 * * * *",
                "15 * * * *",
                "s1-cron-Asia-Shanghai-0xxxx-15xxxx",
            ),
            // KEDA's cronMetricIdentifiers.
            (
                1,
                "Etc/UTC",
                "0 */2 * * *",
                "0 1-23/2 * * *",
                "s1-cron-Etc-UTC-0xSl2xxx-01-23Sl2xxx",
            ),
            (
                2,
                "Etc/UTC",
                "0,30 * * * *",
                "15,45 * * * *",
                "s2-cron-Etc-UTC-0Cm30xxxx-15Cm45xxxx",
            ),
            (
                2,
                "UTC",
                "*/5 1,2 ? * *",
                "3 4 * * *",
                "s2-cron-UTC-xSl51Cm2Qmxx-34xxx",
            ),
        ];
        for (index, tz, start, end, want) in cases {
            let meta = [
                ("timezone", tz),
                ("start", start),
                ("end", end),
                ("desiredReplicas", "5"),
            ];
            let s = build(index, &meta).expect("valid");
            assert_eq!(s.metric_spec().name, want);
            assert_eq!(s.metric_spec().target, "1");
        }
    }

    #[test]
    fn window_table() {
        let s = build(0, &BUSINESS).expect("valid");
        // Paris is UTC+1 in November. 2026-11-23 is a Monday.
        let cases = [
            ("2026-11-23T06:59:00Z", false, 0.0), // 07:59 Paris, Monday
            ("2026-11-23T07:00:00Z", true, 2.0),  // 08:00 exactly: start is inclusive
            ("2026-11-23T12:00:00Z", true, 2.0),
            ("2026-11-23T16:59:59Z", true, 2.0),
            ("2026-11-23T17:00:00Z", false, 0.0), // 18:00 exactly: end is exclusive
            ("2026-11-22T12:00:00Z", false, 0.0), // Sunday
            ("2026-11-28T12:00:00Z", false, 0.0), // Saturday
            ("2026-11-27T12:00:00Z", true, 2.0),  // Friday
        ];
        for (now, active, value) in cases {
            let got = s.sample_at(at(now)).expect("sample");
            assert_eq!((got.active, got.value), (active, value), "{now}");
        }
    }

    #[test]
    fn hourly_window() {
        let s = build(
            0,
            &[
                ("timezone", "Asia/Shanghai"),
                ("start", "0 * * * *"),
                ("end", "15 * * * *"),
                ("desiredReplicas", "5"),
            ],
        )
        .expect("valid");
        assert_eq!(
            s.sample_at(at("2026-11-22T10:14:00Z")).expect("ok").value,
            5.0
        );
        assert_eq!(
            s.sample_at(at("2026-11-22T10:15:00Z")).expect("ok").value,
            0.0
        );
        assert_eq!(
            s.sample_at(at("2026-11-22T10:59:59Z")).expect("ok").value,
            0.0
        );
        assert_eq!(
            s.sample_at(at("2026-11-22T11:00:00Z")).expect("ok").value,
            5.0
        );
    }

    type Metadata<'a> = Vec<(&'a str, &'a str)>;

    #[test]
    fn parse_errors_match_keda() {
        let base: Vec<(&str, &str)> = BUSINESS.to_vec();
        let with = |k: &str, v: &'static str| -> Vec<(&str, &str)> {
            base.iter()
                .map(|(bk, bv)| if *bk == k { (*bk, v) } else { (*bk, *bv) })
                .collect()
        };
        let without = |k: &str| -> Vec<(&str, &str)> {
            base.iter().filter(|(bk, _)| *bk != k).copied().collect()
        };
        let cases: Vec<(Metadata, &str, &str)> = vec![
            (
                without("timezone"),
                "timezone",
                "missing required parameter \"timezone\" in [triggerMetadata resolvedEnv]",
            ),
            (
                without("start"),
                "start",
                "missing required parameter \"start\" in [triggerMetadata resolvedEnv]",
            ),
            (without("end"), "end", "missing required parameter \"end\" in [triggerMetadata resolvedEnv]"),
            (
                without("desiredReplicas"),
                "desiredReplicas",
                "missing required parameter \"desiredReplicas\" in [triggerMetadata resolvedEnv]",
            ),
            (
                with("timezone", "  "),
                "timezone",
                "missing required parameter \"timezone\" in [triggerMetadata resolvedEnv]",
            ),
            (
                with("timezone", "Mars/Olympus"),
                "timezone",
                "unable to load timezone: unknown time zone Mars/Olympus",
            ),
            (
                with("timezone", "../etc/passwd"),
                "timezone",
                "unable to load timezone: time: invalid location name",
            ),
            (
                with("timezone", "/Europe/Paris"),
                "timezone",
                "unable to load timezone: time: invalid location name",
            ),
            (
                with("start", "0 8 * *"),
                "start",
                "error parsing start schedule: expected exactly 5 fields",
            ),
            (
                with("end", "61 * * * *"),
                "end",
                "error parsing end schedule",
            ),
            (
                with("end", "00 08 * * 1-5"),
                "end",
                "start and end can not have exactly same time input",
            ),
            (
                with("desiredReplicas", "two"),
                "desiredReplicas",
                "unable to set param \"desiredReplicas\" value \"two\": unable to unmarshal to field type int64: invalid character 'w' in literal true (expecting 'r')",
            ),
            // KEDA reads desiredReplicas with Go's encoding/json: no `+`, no fraction.
            (
                with("desiredReplicas", "+2"),
                "desiredReplicas",
                "invalid character '+' looking for beginning of value",
            ),
            (
                with("desiredReplicas", "2.0"),
                "desiredReplicas",
                "json: cannot unmarshal number 2.0 into Go value of type int64",
            ),
            (
                with("desiredReplicas", "0"),
                "desiredReplicas",
                "no desiredReplicas specified",
            ),
            // KEDA's Validate checks come before the time zone.
            (
                vec![
                    ("timezone", "Mars/Olympus"),
                    ("start", "0 8 * *"),
                    ("end", "0 9 * * *"),
                    ("desiredReplicas", "0"),
                ],
                "start",
                "error parsing start schedule",
            ),
            (
                vec![
                    ("timezone", "Mars/Olympus"),
                    ("start", "0 8 * * *"),
                    ("end", "0 9 * * *"),
                    ("desiredReplicas", "0"),
                ],
                "desiredReplicas",
                "no desiredReplicas specified",
            ),
        ];
        for (meta, param, want) in cases {
            let err = build(0, &meta).expect_err(want);
            assert_eq!(err.param(), Some(param), "{want}");
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want}"
            );
        }
    }

    /// KEDA's testCronMetadata table: each case parses or fails as it does in KEDA.
    #[test]
    fn keda_parse_table() {
        let kolkata = |start: &'static str, end: &'static str| -> Metadata<'static> {
            vec![
                ("timezone", "Asia/Kolkata"),
                ("start", start),
                ("end", end),
                ("desiredReplicas", "10"),
            ]
        };
        let cases: Vec<(Metadata, Option<(&str, &str)>)> = vec![
            (
                vec![],
                Some(("start", "missing required parameter \"start\" in [triggerMetadata resolvedEnv]")),
            ),
            (
                vec![
                    ("timezone", "Etc/UTC"),
                    ("start", "0 0 * * Thu"),
                    ("end", "59 23 * * Thu"),
                    ("desiredReplicas", "10"),
                ],
                None,
            ),
            (
                vec![
                    ("timezone", "Etc/UTC"),
                    ("start", "0 */2 * * *"),
                    ("end", "0 1-23/2 * * *"),
                    ("desiredReplicas", "10"),
                ],
                None,
            ),
            (
                vec![
                    ("timezone", "Etc/UTC"),
                    ("start", "0,30 * * * *"),
                    ("end", "15,45 * * * *"),
                    ("desiredReplicas", "10"),
                ],
                None,
            ),
            (
                vec![
                    ("timezone", "Asia/Kolkata"),
                    ("start", "30 * * * *"),
                    ("end", "45 * * * *"),
                ],
                Some((
                    "desiredReplicas",
                    "missing required parameter \"desiredReplicas\" in [triggerMetadata resolvedEnv]",
                )),
            ),
            (
                vec![
                    ("start", "30 * * * *"),
                    ("end", "45 * * * *"),
                    ("desiredReplicas", "10"),
                ],
                Some(("timezone", "missing required parameter \"timezone\" in [triggerMetadata resolvedEnv]")),
            ),
            (kolkata("30-33 * * * *", "45 * * * *"), None),
            (kolkata("30 * * * *", "45-50 * * * *"), None),
            (
                kolkata("-30 * * * *", "45 * * * *"),
                Some(("start", "error parsing start schedule")),
            ),
            (
                kolkata("30 * * * *", "-50 * * * *"),
                Some(("end", "error parsing end schedule")),
            ),
            (
                kolkata("30 * * * *", "50 * * -3 *"),
                Some(("end", "error parsing end schedule")),
            ),
            (
                kolkata("30 * * * *", "30 * * * *"),
                Some(("end", "start and end can not have exactly same time input")),
            ),
        ];
        for (meta, want) in cases {
            match (build(0, &meta), want) {
                (Ok(_), None) => {}
                (Err(e), None) => panic!("{meta:?}: unexpected error {e}"),
                (Ok(_), Some(w)) => panic!("{meta:?}: expected {w:?}"),
                (Err(e), Some((param, text))) => {
                    assert_eq!(e.param(), Some(param), "{meta:?}: {e}");
                    assert!(e.to_string().contains(text), "{meta:?}: {e}");
                }
            }
        }
    }
}
