//! The activation decision: KEDA's scale executor as a pure function. Given what the
//! triggers said and the target's replicas, what the activator must do this poll.
//!
//! The activator carries the decision out (GET and update of `/scale`, status writes);
//! nothing here touches a cluster or a clock.

use chrono::{DateTime, TimeDelta, Utc};

/// How the ScaledObject is paused, from its annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Not paused.
    No,
    /// `autoscaling.keda.sh/paused: "true"`: freeze at the current count.
    Freeze,
    /// `autoscaling.keda.sh/paused-replicas: N`: hold N.
    Replicas(i32),
}

/// `autoscaling.keda.sh/paused`.
pub const PAUSED: &str = "autoscaling.keda.sh/paused";
/// `autoscaling.keda.sh/paused-replicas`.
pub const PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// `autoscaling.keda.sh/paused-scale-in`.
pub const PAUSED_SCALE_IN: &str = "autoscaling.keda.sh/paused-scale-in";
/// `autoscaling.keda.sh/paused-scale-out`.
pub const PAUSED_SCALE_OUT: &str = "autoscaling.keda.sh/paused-scale-out";
/// `autoscaling.keda.sh/force-activation`.
pub const FORCE_ACTIVATION: &str = "autoscaling.keda.sh/force-activation";

/// Go's `strconv.ParseBool`.
pub(crate) fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A boolean annotation as KEDA reads it: absent is false, and a present value that is
/// not a valid boolean counts as true.
pub fn annotation_flag(
    annotations: &std::collections::BTreeMap<String, String>,
    key: &str,
) -> bool {
    annotations
        .get(key)
        .is_some_and(|v| go_bool(v).unwrap_or(true))
}

/// The pause state from the annotations; `paused-replicas` must be an int32.
pub fn pause_of(annotations: &std::collections::BTreeMap<String, String>) -> Result<Pause, String> {
    if let Some(v) = annotations.get(PAUSED_REPLICAS) {
        // A negative count parses as KEDA parses it, but no /scale takes it: refused here.
        return v
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Pause::Replicas)
            .ok_or_else(|| {
                format!("annotation {PAUSED_REPLICAS} value {v:?} is not a valid int32 replica count (0 or more)")
            });
    }
    Ok(if annotation_flag(annotations, PAUSED) {
        Pause::Freeze
    } else {
        Pause::No
    })
}

/// Everything the decision depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Pause annotations.
    pub pause: Pause,
    /// `paused-scale-in` annotation.
    pub paused_scale_in: bool,
    /// `paused-scale-out` annotation.
    pub paused_scale_out: bool,
    /// `force-activation` annotation: treated as active.
    pub force_activation: bool,
    /// Any trigger (or its fallback) active.
    pub is_active: bool,
    /// Any trigger errored.
    pub is_error: bool,
    /// A fallback with non-zero replicas is configured.
    pub fallback: bool,
    /// A fallback is configured at all (`replicas: 0` included: then failing triggers
    /// let the target scale in, as KEDA does).
    pub fallback_configured: bool,
    /// The target's current `spec.replicas`.
    pub current: i32,
    /// `minReplicaCount` (unset = 0).
    pub min: i32,
    /// `idleReplicaCount`, when set.
    pub idle: Option<i32>,
    /// `status.lastActiveTime`.
    pub last_active: Option<DateTime<Utc>>,
    /// The ScaledObject's creation time.
    pub created: DateTime<Utc>,
    /// `cooldownPeriod`, seconds (default 300).
    pub cooldown_seconds: i64,
    /// `initialCooldownPeriod`, seconds (default 0).
    pub initial_cooldown_seconds: i64,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Why the triggers leave the ScaledObject not Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyProblem {
    /// Active, but some trigger errored: Ready Unknown `PartialTriggerError`.
    PartialTriggerError,
    /// Inactive because of errors and no fallback: Ready False `TriggerError`.
    TriggerError,
}

/// What to do this poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Set the target's `/scale` to this many replicas.
    pub scale_to: Option<i32>,
    /// Set `status.lastActiveTime` to now.
    pub touch_last_active: bool,
    /// The HPA must not exist (paused).
    pub delete_hpa: bool,
    /// Paused condition True.
    pub paused: bool,
    /// Active condition False with reason `ScalerCooldown` (waiting to scale in).
    pub cooling_down: bool,
    /// A Ready problem to report.
    pub ready_problem: Option<ReadyProblem>,
    /// The row of the decision table that fired.
    pub rule: Rule,
}

impl Decision {
    /// One line saying why, for logs and traces.
    pub fn reason(&self) -> &'static str {
        self.rule.reason()
    }

    fn none(rule: Rule) -> Self {
        Self {
            scale_to: None,
            touch_last_active: false,
            delete_hpa: false,
            paused: false,
            cooling_down: false,
            ready_problem: None,
            rule,
        }
    }
}

/// The rows of the decision table ([`decide`]), in its order: which one fired is what a
/// trace shows as the cause of the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Rule {
    /// `paused-replicas`: the target is held at that count, the HPA removed.
    PausedReplicas,
    /// `paused`: the target is left at its current count, the HPA removed.
    Paused,
    /// Active at zero (or below min with idle set), but `paused-scale-out` holds it.
    ScaleOutPaused,
    /// Active at zero or idle: scaled to minReplicaCount (at least 1).
    Activate,
    /// Active, some triggers failing: the HPA scales on the rest.
    ActivePartialError,
    /// Active: the HPA decides the count.
    ActiveHpaScales,
    /// Triggers failing, a fallback of non-zero replicas configured: nothing is scaled
    /// here; past `failureThreshold` the HPA is served the fallback.
    FallbackHolds,
    /// Triggers failing, no fallback: nothing is scaled.
    TriggerError,
    /// Inactive above the rest count, but `paused-scale-in` holds it.
    ScaleInPaused,
    /// Inactive and cooled down: scaled to idleReplicaCount or zero.
    Deactivate,
    /// Inactive above the rest count, inside `cooldownPeriod` since the last activity.
    Cooldown,
    /// Inactive above the rest count, never active, inside `initialCooldownPeriod`.
    InitialCooldown,
    /// Inactive below minReplicaCount (no idle): scaled up to it.
    BelowMin,
    /// Inactive at its rest count: nothing to do.
    Inactive,
}

impl Rule {
    /// The rule's stable name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PausedReplicas => "PausedReplicas",
            Rule::Paused => "Paused",
            Rule::ScaleOutPaused => "ScaleOutPaused",
            Rule::Activate => "Activate",
            Rule::ActivePartialError => "ActivePartialError",
            Rule::ActiveHpaScales => "ActiveHpaScales",
            Rule::FallbackHolds => "FallbackHolds",
            Rule::TriggerError => "TriggerError",
            Rule::ScaleInPaused => "ScaleInPaused",
            Rule::Deactivate => "Deactivate",
            Rule::Cooldown => "Cooldown",
            Rule::InitialCooldown => "InitialCooldown",
            Rule::BelowMin => "BelowMin",
            Rule::Inactive => "Inactive",
        }
    }

    /// One line saying what the rule does.
    pub fn reason(self) -> &'static str {
        match self {
            Rule::PausedReplicas => "paused at paused-replicas",
            Rule::Paused => "paused at the current replica count",
            Rule::ScaleOutPaused => "active, but scale-out is paused",
            Rule::Activate => "active: scaling from zero or idle",
            Rule::ActivePartialError => "active, with some triggers failing",
            Rule::ActiveHpaScales => "active: the HPA scales",
            Rule::FallbackHolds => "triggers failing: the HPA applies the fallback",
            Rule::TriggerError => "triggers failing and no fallback: not scaling",
            Rule::ScaleInPaused => "inactive, but scale-in is paused",
            Rule::Deactivate => "inactive and cooled down: scaling to idle or zero",
            Rule::Cooldown => "inactive: waiting for the cooldown",
            Rule::InitialCooldown => "inactive, never active: waiting for the initial cooldown",
            Rule::BelowMin => "below minReplicaCount: scaling to it",
            Rule::Inactive => "inactive: nothing to do",
        }
    }
}

/// Which cooldown holds a target above its rest count, and how long is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownState {
    /// `InitialCooldown` (never active) or `Cooldown`.
    pub rule: Rule,
    /// When it started: the last activity, or the ScaledObject's creation.
    pub since: DateTime<Utc>,
    /// Its length, seconds.
    pub seconds: i64,
    /// When it is over (the first poll after this scales in).
    pub ends_at: DateTime<Utc>,
}

impl CooldownState {
    /// Seconds left at `now` (0 once over).
    pub fn remaining(&self, now: DateTime<Utc>) -> i64 {
        (self.ends_at - now).num_seconds().max(0)
    }
}

/// The cooldown the decision for `i` counts, whichever rule fired.
pub fn cooldown_state(i: &Input) -> CooldownState {
    let (rule, since, seconds) = match i.last_active {
        None => (Rule::InitialCooldown, i.created, i.initial_cooldown_seconds),
        Some(last) => (Rule::Cooldown, last, i.cooldown_seconds),
    };
    CooldownState {
        rule,
        since,
        seconds,
        ends_at: since + TimeDelta::seconds(seconds),
    }
}

/// Whether the cooldown before scaling in has passed.
fn cooldown_over(i: &Input) -> bool {
    cooldown_state(i).ends_at < i.now
}

/// KEDA's executor, step for step (see `docs/compatibility.md`).
pub fn decide(i: &Input) -> Decision {
    match i.pause {
        Pause::Replicas(n) => {
            return Decision {
                scale_to: (i.current != n).then_some(n),
                delete_hpa: true,
                paused: true,
                ..Decision::none(Rule::PausedReplicas)
            }
        }
        Pause::Freeze => {
            return Decision {
                delete_hpa: true,
                paused: true,
                ..Decision::none(Rule::Paused)
            }
        }
        Pause::No => {}
    }
    if i.is_active || i.force_activation {
        if (i.idle.is_some() && i.current < i.min) || i.current == 0 {
            // KEDA returns before recording the activity when scale-out is paused.
            return Decision {
                scale_to: (!i.paused_scale_out).then_some(i.min.max(1)),
                touch_last_active: !i.paused_scale_out,
                ..Decision::none(if i.paused_scale_out {
                    Rule::ScaleOutPaused
                } else {
                    Rule::Activate
                })
            };
        }
        if i.is_error {
            return Decision {
                ready_problem: Some(ReadyProblem::PartialTriggerError),
                ..Decision::none(Rule::ActivePartialError)
            };
        }
        return Decision {
            touch_last_active: true,
            ..Decision::none(Rule::ActiveHpaScales)
        };
    }
    if i.is_error {
        if i.fallback {
            return Decision::none(Rule::FallbackHolds);
        }
        if !i.fallback_configured {
            return Decision {
                ready_problem: Some(ReadyProblem::TriggerError),
                ..Decision::none(Rule::TriggerError)
            };
        }
        // A fallback of 0 replicas: failing triggers may scale in, below.
    }
    let above_idle = i.idle.is_some_and(|idle| i.current > idle);
    let rest = i.idle.unwrap_or(0);
    // `rest == current` only with idle ≥ min, which validation rejects; nothing to move.
    if (above_idle || (i.current > 0 && i.min == 0)) && rest != i.current {
        if i.paused_scale_in {
            return Decision::none(Rule::ScaleInPaused);
        }
        if cooldown_over(i) {
            return Decision {
                scale_to: Some(rest),
                ..Decision::none(Rule::Deactivate)
            };
        }
        return Decision {
            cooling_down: true,
            ..Decision::none(if i.last_active.is_none() {
                Rule::InitialCooldown
            } else {
                Rule::Cooldown
            })
        };
    }
    if i.idle.is_none() && i.current < i.min {
        return Decision {
            scale_to: Some(i.min),
            ..Decision::none(Rule::BelowMin)
        };
    }
    Decision::none(Rule::Inactive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    /// An inactive, healthy ScaledObject at 1 replica, min 0, created long ago.
    fn base() -> Input {
        Input {
            pause: Pause::No,
            paused_scale_in: false,
            paused_scale_out: false,
            force_activation: false,
            is_active: false,
            is_error: false,
            fallback: false,
            fallback_configured: false,
            current: 1,
            min: 0,
            idle: None,
            last_active: None,
            created: t(0),
            cooldown_seconds: 300,
            initial_cooldown_seconds: 0,
            now: t(1000),
        }
    }

    /// (what, input, scale_to, touch, delete_hpa, cooling_down, ready_problem)
    type Row = (
        &'static str,
        Input,
        Option<i32>,
        bool,
        bool,
        bool,
        Option<ReadyProblem>,
    );

    fn rows() -> Vec<Row> {
        use ReadyProblem::*;
        let b = base;
        vec![
            // Pause.
            (
                "paused-replicas moves to N",
                Input {
                    pause: Pause::Replicas(3),
                    ..b()
                },
                Some(3),
                false,
                true,
                false,
                None,
            ),
            (
                "paused-replicas already at N",
                Input {
                    pause: Pause::Replicas(1),
                    ..b()
                },
                None,
                false,
                true,
                false,
                None,
            ),
            (
                "paused-replicas 0 even when active",
                Input {
                    pause: Pause::Replicas(0),
                    is_active: true,
                    ..b()
                },
                Some(0),
                false,
                true,
                false,
                None,
            ),
            (
                "paused freezes",
                Input {
                    pause: Pause::Freeze,
                    is_active: true,
                    current: 0,
                    ..b()
                },
                None,
                false,
                true,
                false,
                None,
            ),
            // Active.
            (
                "active from zero to 1",
                Input {
                    is_active: true,
                    current: 0,
                    ..b()
                },
                Some(1),
                true,
                false,
                false,
                None,
            ),
            (
                "active from zero to min",
                Input {
                    is_active: true,
                    current: 0,
                    min: 3,
                    ..b()
                },
                Some(3),
                true,
                false,
                false,
                None,
            ),
            (
                "active from idle to min",
                Input {
                    is_active: true,
                    current: 1,
                    min: 3,
                    idle: Some(1),
                    ..b()
                },
                Some(3),
                true,
                false,
                false,
                None,
            ),
            (
                "active below min without idle: the HPA's job",
                Input {
                    is_active: true,
                    current: 1,
                    min: 3,
                    ..b()
                },
                None,
                true,
                false,
                false,
                None,
            ),
            (
                "active from zero with scale-out paused",
                Input {
                    is_active: true,
                    current: 0,
                    paused_scale_out: true,
                    ..b()
                },
                None,
                false,
                false,
                false,
                None,
            ),
            (
                "active from zero with errors still activates",
                Input {
                    is_active: true,
                    is_error: true,
                    current: 0,
                    ..b()
                },
                Some(1),
                true,
                false,
                false,
                None,
            ),
            (
                "active with errors",
                Input {
                    is_active: true,
                    is_error: true,
                    current: 2,
                    ..b()
                },
                None,
                false,
                false,
                false,
                Some(PartialTriggerError),
            ),
            (
                "active and running",
                Input {
                    is_active: true,
                    current: 2,
                    ..b()
                },
                None,
                true,
                false,
                false,
                None,
            ),
            (
                "forced activation",
                Input {
                    force_activation: true,
                    current: 0,
                    ..b()
                },
                Some(1),
                true,
                false,
                false,
                None,
            ),
            // Inactive with errors: never to zero.
            (
                "errors with fallback: the HPA's fallback",
                Input {
                    is_error: true,
                    fallback: true,
                    current: 2,
                    ..b()
                },
                None,
                false,
                false,
                false,
                None,
            ),
            (
                "errors without fallback",
                Input {
                    is_error: true,
                    current: 2,
                    ..b()
                },
                None,
                false,
                false,
                false,
                Some(TriggerError),
            ),
            (
                "errors without fallback, cooled down",
                Input {
                    is_error: true,
                    current: 2,
                    last_active: Some(t(0)),
                    ..b()
                },
                None,
                false,
                false,
                false,
                Some(TriggerError),
            ),
            // Inactive, scaling in.
            (
                "never active, created long ago: to zero",
                b(),
                Some(0),
                false,
                false,
                false,
                None,
            ),
            (
                "never active, inside initialCooldownPeriod",
                Input {
                    initial_cooldown_seconds: 2000,
                    ..b()
                },
                None,
                false,
                false,
                true,
                None,
            ),
            (
                "never active, initialCooldownPeriod just over",
                Input {
                    initial_cooldown_seconds: 999,
                    ..b()
                },
                Some(0),
                false,
                false,
                false,
                None,
            ),
            (
                "never active, initialCooldownPeriod exactly now",
                Input {
                    initial_cooldown_seconds: 1000,
                    ..b()
                },
                None,
                false,
                false,
                true,
                None,
            ),
            (
                "active recently: cooldown",
                Input {
                    last_active: Some(t(800)),
                    ..b()
                },
                None,
                false,
                false,
                true,
                None,
            ),
            (
                "cooldown exactly now",
                Input {
                    last_active: Some(t(700)),
                    ..b()
                },
                None,
                false,
                false,
                true,
                None,
            ),
            (
                "cooldown over",
                Input {
                    last_active: Some(t(699)),
                    ..b()
                },
                Some(0),
                false,
                false,
                false,
                None,
            ),
            (
                "cooldownPeriod 0",
                Input {
                    last_active: Some(t(999)),
                    cooldown_seconds: 0,
                    ..b()
                },
                Some(0),
                false,
                false,
                false,
                None,
            ),
            (
                "above idle, cooled down: to idle",
                Input {
                    idle: Some(1),
                    min: 2,
                    current: 4,
                    last_active: Some(t(0)),
                    ..b()
                },
                Some(1),
                false,
                false,
                false,
                None,
            ),
            (
                "above idle, cooling",
                Input {
                    idle: Some(1),
                    min: 2,
                    current: 4,
                    last_active: Some(t(900)),
                    ..b()
                },
                None,
                false,
                false,
                true,
                None,
            ),
            (
                "scale-in paused",
                Input {
                    paused_scale_in: true,
                    last_active: Some(t(0)),
                    ..b()
                },
                None,
                false,
                false,
                false,
                None,
            ),
            // Inactive, resting.
            (
                "at zero",
                Input { current: 0, ..b() },
                None,
                false,
                false,
                false,
                None,
            ),
            (
                "at idle",
                Input {
                    idle: Some(0),
                    min: 2,
                    current: 0,
                    ..b()
                },
                None,
                false,
                false,
                false,
                None,
            ),
            (
                "min > 0 and at min: the HPA holds",
                Input {
                    min: 2,
                    current: 2,
                    ..b()
                },
                None,
                false,
                false,
                false,
                None,
            ),
            (
                "below min without idle: to min",
                Input {
                    min: 2,
                    current: 0,
                    ..b()
                },
                Some(2),
                false,
                false,
                false,
                None,
            ),
            (
                "below min with idle at idle: stay",
                Input {
                    min: 2,
                    idle: Some(0),
                    current: 0,
                    ..b()
                },
                None,
                false,
                false,
                false,
                None,
            ),
        ]
    }

    #[test]
    fn annotations_read_as_keda_reads_them() {
        let a = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(pause_of(&a(&[])), Ok(Pause::No));
        assert_eq!(pause_of(&a(&[(PAUSED, "true")])), Ok(Pause::Freeze));
        assert_eq!(pause_of(&a(&[(PAUSED, "false")])), Ok(Pause::No));
        assert_eq!(
            pause_of(&a(&[(PAUSED, "yes please")])),
            Ok(Pause::Freeze),
            "not a bool: true"
        );
        assert_eq!(
            pause_of(&a(&[(PAUSED, "false"), (PAUSED_REPLICAS, "0")])),
            Ok(Pause::Replicas(0))
        );
        assert!(pause_of(&a(&[(PAUSED_REPLICAS, "three")]))
            .is_err_and(|e| e.contains("\"three\" is not a valid int32")));
        assert!(pause_of(&a(&[(PAUSED_REPLICAS, "-1")]))
            .is_err_and(|e| e.contains("\"-1\" is not a valid int32 replica count (0 or more)")));
        assert!(annotation_flag(
            &a(&[(FORCE_ACTIVATION, "T")]),
            FORCE_ACTIVATION
        ));
        assert!(!annotation_flag(
            &a(&[(FORCE_ACTIVATION, "0")]),
            FORCE_ACTIVATION
        ));
        assert!(!annotation_flag(&a(&[]), PAUSED_SCALE_IN));
    }

    #[test]
    fn the_executor_table() {
        for (what, input, scale_to, touch, delete_hpa, cooling, problem) in rows() {
            let d = decide(&input);
            assert_eq!(
                (
                    d.scale_to,
                    d.touch_last_active,
                    d.delete_hpa,
                    d.cooling_down,
                    d.ready_problem
                ),
                (scale_to, touch, delete_hpa, cooling, problem),
                "{what}: {d:?}"
            );
            assert_eq!(d.paused, delete_hpa, "{what}");
        }
    }

    /// KEDA: a fallback of 0 replicas does not hold a failing target (the TriggerError
    /// case needs no fallback at all): it scales in after the cooldown.
    #[test]
    fn a_zero_replica_fallback_lets_failing_triggers_scale_in() {
        let i = Input {
            is_error: true,
            fallback_configured: true,
            last_active: Some(t(0)),
            ..base()
        };
        let d = decide(&i);
        assert_eq!((d.scale_to, d.ready_problem), (Some(0), None), "{d:?}");
        let unconfigured = decide(&Input {
            fallback_configured: false,
            ..i.clone()
        });
        assert_eq!(unconfigured.scale_to, None);
        assert_eq!(unconfigured.ready_problem, Some(ReadyProblem::TriggerError));
    }

    /// Paused scale-out at zero: neither scaled nor recorded as active (KEDA returns first).
    #[test]
    fn paused_scale_out_records_nothing() {
        let d = decide(&Input {
            is_active: true,
            paused_scale_out: true,
            current: 0,
            ..base()
        });
        assert_eq!((d.scale_to, d.touch_last_active), (None, false));
    }

    /// Over every combination of the inputs that steer the decision: errors never scale to
    /// zero, paused scale-in never scales down, paused scale-out never scales up, and a
    /// decision never leaves the valid range.
    #[test]
    fn invariants_over_all_combinations() {
        let bools = [false, true];
        let mut seen = 0;
        let mut rules = std::collections::HashSet::new();
        for active in bools {
            for error in bools {
                for fallback in bools {
                    for scale_in in bools {
                        for scale_out in bools {
                            for idle in [None, Some(0), Some(1)] {
                                for min in [0, 1, 3] {
                                    for current in [0, 1, 2, 5] {
                                        for last in [None, Some(t(0)), Some(t(990))] {
                                            let i = Input {
                                                is_active: active,
                                                is_error: error,
                                                fallback,
                                                fallback_configured: fallback,
                                                paused_scale_in: scale_in,
                                                paused_scale_out: scale_out,
                                                idle,
                                                min,
                                                current,
                                                last_active: last,
                                                ..base()
                                            };
                                            let d = decide(&i);
                                            seen += 1;
                                            if let Some(n) = d.scale_to {
                                                assert!(n >= 0, "{i:?} {d:?}");
                                                if error && !active {
                                                    panic!("errors scaled: {i:?} {d:?}");
                                                }
                                                if scale_in {
                                                    assert!(n >= current, "{i:?} {d:?}");
                                                }
                                                if scale_out {
                                                    assert!(
                                                        n <= current || n == min,
                                                        "{i:?} {d:?}"
                                                    );
                                                }
                                                assert_ne!(n, current, "no-op scale: {i:?}");
                                            }
                                            if !active {
                                                assert!(!d.touch_last_active, "{i:?}");
                                            }
                                            check_rule(&i, &d);
                                            rules.insert(d.rule);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(seen, 2 * 2 * 2 * 2 * 2 * 3 * 3 * 4 * 3);
        // Every row but the pauses and the initial cooldown (not varied here; see
        // `cooldown_remaining`) fired somewhere.
        assert_eq!(rules.len(), 11, "{rules:?}");
    }

    /// The rule a decision names is the one its effects belong to: a trace that says
    /// "cooldown" is never showing a scale, and so on.
    fn check_rule(i: &Input, d: &Decision) {
        use Rule::*;
        let scales = matches!(d.rule, PausedReplicas | Activate | Deactivate | BelowMin);
        if d.scale_to.is_some() {
            assert!(scales, "{i:?} {d:?}");
        }
        if d.rule != PausedReplicas {
            assert_eq!(d.scale_to.is_some(), scales, "{i:?} {d:?}");
        }
        assert_eq!(
            d.cooling_down,
            matches!(d.rule, Cooldown | InitialCooldown),
            "{i:?} {d:?}"
        );
        if d.cooling_down {
            let c = cooldown_state(i);
            assert_eq!(c.rule, d.rule, "{i:?}");
            assert!(c.ends_at >= i.now, "a cooldown over is not cooling: {i:?}");
        }
        assert_eq!(d.paused, matches!(d.rule, Paused | PausedReplicas));
        assert_eq!(d.reason(), d.rule.reason());
    }

    /// The time left is counted from the last activity, or from creation with the initial
    /// cooldown; at the exact end nothing is left, and the decision still waits (KEDA
    /// compares strictly).
    #[test]
    fn cooldown_remaining() {
        let i = Input {
            last_active: Some(t(700)),
            cooldown_seconds: 300,
            ..base()
        };
        let c = cooldown_state(&i);
        assert_eq!(
            (c.rule, c.since, c.ends_at),
            (Rule::Cooldown, t(700), t(1000))
        );
        assert_eq!(c.remaining(t(900)), 100);
        assert_eq!(c.remaining(t(1200)), 0);
        let initial = Input {
            last_active: None,
            created: t(0),
            initial_cooldown_seconds: 60,
            now: t(60),
            ..base()
        };
        let c = cooldown_state(&initial);
        assert_eq!((c.rule, c.remaining(t(60))), (Rule::InitialCooldown, 0));
        assert_eq!(decide(&initial).rule, Rule::InitialCooldown);
        let later = Input {
            now: t(61),
            ..initial
        };
        assert_eq!(decide(&later).rule, Rule::Deactivate);
        for (rule, pause) in [
            (Rule::Paused, Pause::Freeze),
            (Rule::PausedReplicas, Pause::Replicas(2)),
        ] {
            assert_eq!(decide(&Input { pause, ..base() }).rule, rule);
        }
    }
}
