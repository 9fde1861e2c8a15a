//! The scale loop's write half: what one poll's [`Activity`] means for the target, decided
//! by `scaler_core::activation::decide` and carried out here through `/scale`, with the
//! ScaledObject's status (lastActiveTime, Active, Ready trigger problems, Fallback,
//! health, triggersActivity) written only when it changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use scaler_core::activation::{self, annotation_flag, Decision, Input, ReadyProblem};
use scaler_core::conditions::{ConditionStatus, ConditionType, Reason};
use scaler_core::fallback;
use scaler_core::poll::Activity;
use scaler_core::scaled_object::{
    Condition, HealthStatus, ScaledObjectStatus, TriggerActivity, DEFAULT_COOLDOWN_PERIOD,
};
use scaler_core::trace::{DecisionRecord, WriteOutcome, WriteRecord};
use scaler_core::ScaledObject;
use tracing::{debug, info, warn};

use crate::events::{publish, EventReason};
use crate::status::write_if_changed;
use crate::target::{desired, Target};
use crate::{Context, Error};

/// `status.lastActiveTime`, when set and readable.
fn status_last_active(so: &ScaledObject) -> Option<DateTime<Utc>> {
    so.status
        .as_ref()
        .and_then(|s| s.last_active_time.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The inputs of KEDA's decision, read off the ScaledObject, the target and the poll.
pub fn input(
    so: &ScaledObject,
    activity: &Activity,
    current: i32,
    now: DateTime<Utc>,
) -> Result<Input, String> {
    let annotations = so.annotations();
    let spec = &so.spec;
    Ok(Input {
        pause: activation::pause_of(annotations)?,
        paused_scale_in: annotation_flag(annotations, activation::PAUSED_SCALE_IN),
        paused_scale_out: annotation_flag(annotations, activation::PAUSED_SCALE_OUT),
        force_activation: annotation_flag(annotations, activation::FORCE_ACTIVATION),
        is_active: activity.active,
        is_error: activity.error,
        fallback: spec.fallback.as_ref().is_some_and(|f| f.replicas != 0),
        fallback_configured: spec.fallback.is_some(),
        current,
        min: spec.min_replica_count.unwrap_or(0),
        idle: spec.idle_replica_count,
        last_active: status_last_active(so),
        created: so
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| crate::chrono_time(t.0))
            .unwrap_or(now),
        cooldown_seconds: i64::from(spec.cooldown_period.unwrap_or(DEFAULT_COOLDOWN_PERIOD)),
        initial_cooldown_seconds: i64::from(spec.initial_cooldown_period.unwrap_or(0)),
        now,
    })
}

/// When each ScaledObject was last seen active by this replica, by uid (a recreated
/// object starts afresh); kept by the activator's [`Context`] (see [`next_status`]).
#[derive(Default)]
pub struct LastActive(Mutex<HashMap<String, DateTime<Utc>>>);

impl LastActive {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget the last active polls of ScaledObjects `keep` rejects (by uid): deleted ones.
    pub fn retain_memory(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|uid, _| keep(uid));
    }

    /// Forget the last active poll of one ScaledObject (by uid): it just became this
    /// replica's, and another replica may have seen it active since.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

/// One poll's outcome, as [`next_status`] needs it.
pub struct Poll<'a> {
    /// The decision's inputs.
    pub input: &'a Input,
    /// The decision.
    pub decision: &'a Decision,
    /// What the triggers said.
    pub activity: &'a Activity,
    /// Failure counts by metric.
    pub health: &'a BTreeMap<String, HealthStatus>,
    /// The resolved target.
    pub target: Option<&'a Target>,
    /// The last time this replica saw the ScaledObject active.
    pub remembered: Option<DateTime<Utc>>,
}

fn last_active_key(so: &ScaledObject) -> String {
    so.metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any()))
}

/// The `lastActiveTime` after a poll, given the one `persisted` and whether the object was
/// `was_active` and is `active` now. It is persisted when it matters, not at every active
/// poll (which would be a write per poll per active object): when the object becomes
/// active, and when it stops being active (the last active poll, `remembered` in between).
/// While active nothing reads it; a cooldown starts from the persisted value.
/// ScaledObjects and ScaledJobs alike.
pub(crate) fn last_active_time(
    persisted: Option<&str>,
    was_active: bool,
    active: bool,
    now: DateTime<Utc>,
    remembered: Option<DateTime<Utc>>,
) -> Option<String> {
    let parsed = persisted
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let stamp = |t: DateTime<Utc>| Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if active {
        if !was_active || parsed.is_none() {
            return stamp(now);
        }
    } else if let Some(r) = remembered.filter(|r| parsed.is_none_or(|p| *r > p)) {
        return stamp(r);
    }
    persisted.map(str::to_string)
}

/// The status after a poll: pure, so a steady state is provably no write. `remembered` is
/// the last time this replica saw the ScaledObject active.
pub fn next_status(
    so: &ScaledObject,
    current: &ScaledObjectStatus,
    poll: &Poll<'_>,
) -> ScaledObjectStatus {
    let Poll {
        input,
        decision,
        activity,
        health,
        target,
        remembered,
    } = *poll;
    let mut status = current.clone();
    status.last_active_time = last_active_time(
        current.last_active_time.as_deref(),
        current.condition_is(ConditionType::Active, ConditionStatus::True),
        decision.touch_last_active,
        input.now,
        remembered,
    );
    if let Some(t) = target {
        status.scale_target_kind = Some(t.kind_string());
        status.scale_target_gvkr = Some(t.gvkr.clone());
    }
    if !decision.paused {
        let (state, reason, message) = if input.force_activation {
            (
                ConditionStatus::True,
                Reason::ScalerActive,
                "Scaling is performed because activation is being forced by annotation",
            )
        } else if input.is_active {
            (
                ConditionStatus::True,
                Reason::ScalerActive,
                "Scaling is performed because triggers are active",
            )
        } else if decision.cooling_down {
            (
                ConditionStatus::False,
                Reason::ScalerCooldown,
                "Scaler cooling down because triggers are not active",
            )
        } else {
            (
                ConditionStatus::False,
                Reason::ScalerNotActive,
                "Scaling is not performed because triggers are not active",
            )
        };
        status.set_condition(Condition::new(
            ConditionType::Active,
            state,
            reason,
            message,
        ));
        let ready = match decision.ready_problem {
            Some(ReadyProblem::TriggerError) => Some(Condition::new(
                ConditionType::Ready,
                ConditionStatus::False,
                Reason::TriggerError,
                "Triggers defined in ScaledObject are not working correctly",
            )),
            Some(ReadyProblem::PartialTriggerError) => Some(Condition::new(
                ConditionType::Ready,
                ConditionStatus::Unknown,
                Reason::PartialTriggerError,
                "Some triggers defined in ScaledObject are not working correctly",
            )),
            // Triggers recovered: clear a problem this loop set (the reconcile owns the
            // other Ready reasons).
            None => current
                .condition(ConditionType::Ready)
                .filter(|c| crate::status::trigger_problem(c))
                .map(|_| crate::status::ready_condition()),
        };
        if let Some(r) = ready {
            status.set_condition(r);
        }
        status.triggers_activity = Some(
            activity
                .per_metric
                .iter()
                .map(|(m, a)| (m.clone(), TriggerActivity { is_active: *a }))
                .collect(),
        );
    }
    if let Some(c) = fallback::condition(&so.spec, health) {
        status.health = Some(health.clone());
        status.set_condition(c);
    }
    status
}

/// The Warning Event (KEDA's `KEDAScalerFailed`) a poll owes: the first failing trigger's
/// error, when the poll turns the status's Ready from working triggers to a trigger
/// problem. The condition's message is KEDA's fixed one; this is where a user reads what
/// failed (a source refusing, a Secret deleted) on the ScaledObject itself. Once per
/// failure, not at every failing poll as KEDA does: a source down behind 10,000 objects
/// would be 10,000 Events every interval.
pub fn failure_event(
    current: &ScaledObjectStatus,
    next: &ScaledObjectStatus,
    activity: &Activity,
) -> Option<String> {
    let problem = |s: &ScaledObjectStatus| {
        s.condition(ConditionType::Ready)
            .is_some_and(crate::status::trigger_problem)
    };
    if problem(next) && !problem(current) {
        activity.failure.clone()
    } else {
        None
    }
}

/// How many times in one poll a `/scale` write that found the target changed is tried
/// again on what it changed to.
const MAX_SCALE_CONFLICTS: u32 = 3;

/// Carry out one poll of `so`: decide, scale through `/scale` when the decision says so,
/// and write what changed in the status.
pub async fn act(
    ctx: &Context,
    so: &ScaledObject,
    activity: &Activity,
    health: &BTreeMap<String, HealthStatus>,
    still_owned: &(dyn Fn() -> bool + Sync),
) -> Result<(), Error> {
    let target = match Target::resolve(&ctx.client, &ctx.target_kinds, so).await {
        Ok(t) => t,
        Err(e) => {
            // The reconcile reports the same problem on the ScaledObject.
            debug!(error = %e, "scale target not resolvable; skipping activation");
            return Ok(());
        }
    };
    // The watch of the target's kind answers without a request; kinds it does not cover
    // are read from /scale.
    let mut fresh = None;
    let mut current = match ctx.runtimes.known_replicas(so) {
        Some(n) => n,
        None => {
            let scale = target.read().await.map_err(Error::Target)?;
            let n = desired(&scale);
            fresh = Some(scale);
            n
        }
    };
    let now = Utc::now();
    let key = last_active_key(so);
    let status_active = so
        .status
        .as_ref()
        .is_some_and(|s| s.condition_is(ConditionType::Active, ConditionStatus::True));
    // A replica that just took over (or restarted) has not seen the last active poll: if
    // the status says active, it counts as active until now (once, remembered from then
    // on), so the cooldown is never cut short by a failover.
    let paused = !matches!(
        activation::pause_of(so.annotations()),
        Ok(activation::Pause::No)
    );
    let remembered = {
        let mut memory = ctx.last_active.lock();
        match memory.get(&key) {
            Some(t) => Some(*t),
            None if status_active && !paused => {
                memory.insert(key.clone(), now);
                Some(now)
            }
            None => None,
        }
    };
    let decide_at = |current: i32| match input(so, activity, current, now) {
        Ok(mut i) => {
            // The cooldown counts from the last active poll this replica saw, when that
            // is newer than what the status says.
            i.last_active = i.last_active.max(remembered);
            let decision = activation::decide(&i);
            Some((i, decision))
        }
        Err(e) => {
            debug!(error = %e, "invalid pause annotation; the reconcile reports it");
            None
        }
    };
    let Some((mut input, mut decision)) = decide_at(current) else {
        return Ok(());
    };
    let (ns, so_name) = (so.namespace().unwrap_or_default(), so.name_any());
    let status_last_active = status_last_active(so);
    let record = |input: &activation::Input, decision: &activation::Decision| {
        ctx.runtimes.trace.decision(
            &ns,
            &so_name,
            DecisionRecord {
                at: now,
                input: input.clone(),
                decision: decision.clone(),
                status_last_active,
                failure: activity.failure.clone(),
            },
        );
    };
    record(&input, &decision);
    let wrote = |from: i32, to: i32, rule: activation::Rule, outcome: WriteOutcome| {
        ctx.runtimes.trace.write(
            &ns,
            &so_name,
            WriteRecord {
                at: Utc::now(),
                from,
                to,
                rule,
                outcome,
            },
        );
    };
    debug!(
        current,
        active = input.is_active,
        error = input.is_error,
        rule = decision.rule.as_str(),
        "activation decision"
    );
    let mut conflicts = 0;
    while let Some(to) = decision.scale_to {
        // Leadership may have been lost while the triggers were asked.
        if !still_owned() {
            debug!("no longer this replica's; not scaling");
            return Ok(());
        }
        // The decision rests on the watch's view of the target, which can lag (the watch
        // reconnecting after an apiserver restart, the HPA's write not seen yet); the
        // write rests on /scale as it is now, and is refused if it changes before.
        let scale = match fresh.take() {
            Some(s) => s,
            None => target.read().await.map_err(Error::Target)?,
        };
        let live = desired(&scale);
        if live != current {
            debug!(
                seen = current,
                live, "the target's replicas changed since the watch saw them; deciding again"
            );
            current = live;
            fresh = Some(scale);
            let Some(again) = decide_at(current) else {
                return Ok(());
            };
            (input, decision) = again;
            record(&input, &decision);
            continue;
        }
        let (reason, verb) = if to > current {
            (EventReason::KEDAScaleTargetActivated, "Scaled")
        } else {
            (EventReason::KEDAScaleTargetDeactivated, "Deactivated")
        };
        // The poll's span is a debug one (one per poll of every object): the lines of a
        // write, rare, name the object themselves.
        let name = format!("{}/{}", so.namespace().unwrap_or_default(), so.name_any());
        let what = format!(
            "{} {}/{} from {current} to {to}",
            target.kind_string(),
            so.namespace().unwrap_or_default(),
            target.name
        );
        match target.scale_from(&scale, to).await {
            Ok(true) => {
                wrote(current, to, decision.rule, WriteOutcome::Scaled);
                info!(
                    scaledobject = %name,
                    from = current,
                    to,
                    why = decision.reason(),
                    "scaled the target"
                );
                publish(
                    &ctx.recorder,
                    so,
                    EventType::Normal,
                    reason,
                    format!("{verb} {what}"),
                )
                .await;
                break;
            }
            Ok(false) if conflicts < MAX_SCALE_CONFLICTS => {
                conflicts += 1;
                debug!(
                    from = current,
                    to, "the target changed while it was being scaled; reading it again"
                );
            }
            Ok(false) => {
                wrote(
                    current,
                    to,
                    decision.rule,
                    WriteOutcome::Conflicts(conflicts + 1),
                );
                info!(
                    scaledobject = %name,
                    from = current,
                    to,
                    conflicts,
                    "the target kept changing while it was being scaled; the next poll decides again"
                );
                break;
            }
            Err(e) => {
                wrote(
                    current,
                    to,
                    decision.rule,
                    WriteOutcome::Failed(e.to_string()),
                );
                warn!(scaledobject = %name, error = %e, from = current, to, "scaling the target failed");
                let failed = if to > current {
                    EventReason::KEDAScaleTargetActivationFailed
                } else {
                    EventReason::KEDAScaleTargetDeactivationFailed
                };
                publish(
                    &ctx.recorder,
                    so,
                    EventType::Warning,
                    failed,
                    format!("Failed to scale {what}: {e}"),
                )
                .await;
                return Err(Error::Target(e));
            }
        }
    }
    if decision.touch_last_active {
        ctx.last_active.lock().insert(key, now);
    }
    let current_status = so.status.clone().unwrap_or_default();
    let next = next_status(
        so,
        &current_status,
        &Poll {
            input: &input,
            decision: &decision,
            activity,
            health,
            target: Some(&target),
            remembered,
        },
    );
    write_if_changed(&ctx.client, so, &*current_status, &next).await?;
    // After the write: a failed one is retried at the next poll, which owes the Event again.
    if let Some(failure) = failure_event(&current_status, &next, activity) {
        publish(
            &ctx.recorder,
            so,
            EventType::Warning,
            EventReason::KEDAScalerFailed,
            failure,
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn so(extra: serde_json::Value) -> ScaledObject {
        let mut v = serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "so", "namespace": "ns",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"scaleTargetRef": {"name": "web"}, "minReplicaCount": 0,
                     "triggers": [{"type": "cron", "metadata": {}}]}
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).expect("ScaledObject")
    }

    fn activity(active: bool, error: bool) -> Activity {
        Activity {
            active,
            error,
            per_metric: BTreeMap::from([("s0-cron".to_string(), active)]),
            failure: error.then(|| "spec.triggers[0] (cron): down".to_string()),
        }
    }

    /// One poll of `so` at `now` with outcome `a`, as `act` decides it: the decision and
    /// the status after it.
    fn poll(
        so: &ScaledObject,
        a: &Activity,
        current: i32,
        now: DateTime<Utc>,
        remembered: Option<DateTime<Utc>>,
    ) -> (Decision, ScaledObjectStatus) {
        let mut i = input(so, a, current, now).expect("input");
        i.last_active = i.last_active.max(remembered);
        let d = activation::decide(&i);
        let cur = so.status.clone().unwrap_or_default();
        let none = BTreeMap::new();
        let poll = Poll {
            input: &i,
            decision: &d,
            activity: a,
            health: &none,
            target: None,
            remembered,
        };
        let next = next_status(so, &cur, &poll);
        (d, next)
    }

    /// Five polls a second apart with the same outcome, each from the last status (and
    /// the remembered last active time, as `act` keeps it); how many wrote.
    fn settle(so: &mut ScaledObject, a: &Activity, current: i32, start: DateTime<Utc>) -> usize {
        let mut writes = 0;
        let mut remembered = None;
        for s in 0..5 {
            let now = start + chrono::TimeDelta::seconds(s);
            let cur = so.status.clone().unwrap_or_default();
            let (d, next) = poll(so, a, current, now, remembered);
            if d.touch_last_active {
                remembered = Some(now);
            }
            if next != *cur {
                writes += 1;
                so.status = Some(Box::new(next));
            }
        }
        writes
    }

    fn cond(so: &ScaledObject, t: &str) -> Option<(String, Option<String>)> {
        so.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    #[test]
    fn one_write_per_change_and_none_at_steady_state() {
        let mut s = so(serde_json::json!({}));
        let now = Utc::now();
        // Active at 2 replicas for five polls: one write (Active True, lastActiveTime),
        // not one per poll.
        assert_eq!(settle(&mut s, &activity(true, false), 2, now), 1);
        assert_eq!(cond(&s, "Active").map(|c| c.0), Some("True".into()));
        assert!(s
            .status
            .as_ref()
            .and_then(|x| x.last_active_time.clone())
            .is_some());
        // Inactive at 0: Active False, then nothing.
        assert_eq!(settle(&mut s, &activity(false, false), 0, now), 1);
        assert_eq!(
            cond(&s, "Active"),
            Some(("False".into(), Some("ScalerNotActive".into())))
        );
        // Inactive at 2 within the cooldown: ScalerCooldown.
        assert_eq!(settle(&mut s, &activity(false, false), 2, now), 1);
        assert_eq!(
            cond(&s, "Active").and_then(|c| c.1),
            Some("ScalerCooldown".into())
        );
    }

    #[test]
    fn trigger_errors_set_and_clear_ready() {
        let mut s = so(serde_json::json!({}));
        let now = Utc::now();
        settle(&mut s, &activity(false, true), 0, now);
        assert_eq!(
            cond(&s, "Ready"),
            Some(("False".into(), Some("TriggerError".into())))
        );
        settle(&mut s, &activity(true, true), 1, now);
        assert_eq!(
            cond(&s, "Ready"),
            Some(("Unknown".into(), Some("PartialTriggerError".into())))
        );
        settle(&mut s, &activity(true, false), 1, now);
        assert_eq!(
            cond(&s, "Ready"),
            Some(("True".into(), Some("ScaledObjectReady".into())))
        );
    }

    /// Polls in a row (active, failing), each from the status the last one left: the
    /// failures Events say, as `act` publishes them after each status write.
    fn failure_events(so: &mut ScaledObject, polls: &[(bool, bool)]) -> Vec<String> {
        let mut said = Vec::new();
        let now = Utc::now();
        for (active, error) in polls {
            let a = activity(*active, *error);
            let cur = so.status.clone().unwrap_or_default();
            let (_, next) = poll(so, &a, 1, now, None);
            said.extend(failure_event(&cur, &next, &a));
            so.status = Some(Box::new(next));
        }
        said
    }

    #[test]
    fn a_trigger_failure_is_one_event_when_it_starts() {
        let down = "spec.triggers[0] (cron): down".to_string();
        let mut s = so(serde_json::json!({}));
        // Failing from the first poll on: one Event, whatever the number of polls.
        let said = failure_events(&mut s, &[(false, true), (false, true), (false, true)]);
        assert_eq!(said, std::slice::from_ref(&down));
        // Some triggers failing after all failing is the same failure going on.
        assert!(failure_events(&mut s, &[(true, true)]).is_empty());
        // Working again, then failing again: a new Event.
        let said = failure_events(&mut s, &[(true, false), (true, false), (true, true)]);
        assert_eq!(said, [down]);
        // Working triggers owe nothing.
        let mut fine = so(serde_json::json!({}));
        assert!(failure_events(&mut fine, &[(true, false), (false, false)]).is_empty());
    }

    #[test]
    fn force_activation_and_fallback_condition() {
        let mut s = so(serde_json::json!({"fallback": {"failureThreshold": 2, "replicas": 3}}));
        s.metadata.annotations = Some(BTreeMap::from([(
            activation::FORCE_ACTIVATION.to_string(),
            "true".to_string(),
        )]));
        let i = input(&s, &activity(false, false), 0, Utc::now()).expect("input");
        let d = activation::decide(&i);
        assert_eq!(d.scale_to, Some(1), "forced: activated from zero");
        let health = BTreeMap::from([(
            "s0-cron".to_string(),
            HealthStatus {
                number_of_failures: Some(3),
                status: Some("Failing".into()),
            },
        )]);
        let a = activity(false, false);
        let poll = Poll {
            input: &i,
            decision: &d,
            activity: &a,
            health: &health,
            target: None,
            remembered: None,
        };
        let next = next_status(&s, &ScaledObjectStatus::default(), &poll);
        let active = next
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Active")
            .and_then(|c| c.message.clone());
        assert_eq!(
            active.as_deref(),
            Some("Scaling is performed because activation is being forced by annotation")
        );
        let fb = next
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Fallback")
            .map(|c| c.status.clone());
        assert_eq!(fb.as_deref(), Some("True"));
        assert_eq!(next.health, Some(health));
    }

    /// One poll's writes against a scripted API server: `/scale` is written over the
    /// resourceVersion just read, never over replicas the decision did not see.
    mod writes {
        use serde_json::json;

        use scaler_core::ScaledObject;

        use crate::fixtures::{scaled_object, Expect, Harness, Seen, SCALE_VERSION};

        fn at_zero() -> ScaledObject {
            scaled_object(json!({"minReplicaCount": 0}), json!({}))
        }

        /// One poll of `so` whose triggers are all `active`, the watch having seen the
        /// target at `watched`, while the API server answers `script`: the requests seen.
        async fn poll(
            so: &ScaledObject,
            watched: Option<i32>,
            active: bool,
            script: Vec<Expect>,
        ) -> Vec<Seen> {
            let mut h = Harness::watching(vec![so.clone()], vec![], watched);
            let (r, seen) = h.act(so, active, script).await;
            r.expect("poll");
            seen
        }

        #[tokio::test]
        async fn activation_writes_over_the_scale_it_read() {
            let so = at_zero();
            let seen = poll(
                &so,
                None,
                true,
                vec![
                    Expect::get_scale_0(),
                    Expect::patch_scale(),
                    Expect::event(),
                    Expect::patch_status(),
                ],
            )
            .await;
            let patch = &seen[1].body;
            assert_eq!(patch["spec"]["replicas"], 1, "{patch}");
            assert_eq!(
                patch["metadata"]["resourceVersion"], SCALE_VERSION,
                "{patch}"
            );
            assert!(
                seen[1].query.contains("fieldManager=eventscale"),
                "{}",
                seen[1].query
            );
        }

        /// The watch still says 0 (it has not seen the HPA's 3, as after an apiserver
        /// restart): the poll reads /scale before writing, and leaves the 3 alone.
        #[tokio::test]
        async fn a_stale_watch_never_takes_the_hpas_replicas_back() {
            let so = at_zero();
            poll(
                &so,
                Some(0),
                true,
                vec![Expect::get_scale_3(), Expect::patch_status()],
            )
            .await;
        }

        /// Deactivation the same way: the watch saw 2, the target is at 3 by now, and the
        /// cooldown is over: 3 to 0, said as such.
        #[tokio::test]
        async fn deactivation_decides_on_the_replicas_it_writes_over() {
            let so = scaled_object(
                json!({"minReplicaCount": 0, "cooldownPeriod": 0}),
                json!({}),
            );
            let seen = poll(
                &so,
                Some(2),
                false,
                vec![
                    Expect::get_scale_3(),
                    Expect::patch_scale(),
                    Expect::event(),
                    Expect::patch_status(),
                ],
            )
            .await;
            assert_eq!(seen[1].body["spec"]["replicas"], 0);
            let note = seen[2].body["note"].as_str().unwrap_or_default();
            assert!(note.contains("from 3 to 0"), "{}", seen[2].body);
        }

        /// Another writer between the read and the write: a conflict, then the target is
        /// read again and decided on again.
        #[tokio::test]
        async fn a_conflict_reads_the_target_again() {
            let so = at_zero();
            let seen = poll(
                &so,
                Some(0),
                true,
                vec![
                    Expect::get_scale_0(),
                    Expect::patch_scale_conflict(),
                    Expect::get_scale_3(),
                    Expect::patch_status(),
                ],
            )
            .await;
            assert_eq!(seen[1].body["spec"]["replicas"], 1);
        }

        /// A target that changes at every write is given up on after a few tries, with
        /// no error (the next poll decides again) and no Event claiming a scale.
        #[tokio::test]
        async fn a_target_that_keeps_changing_is_left_to_the_next_poll() {
            let so = at_zero();
            let mut script = vec![];
            for _ in 0..=super::super::MAX_SCALE_CONFLICTS {
                script.push(Expect::get_scale_0());
                script.push(Expect::patch_scale_conflict());
            }
            script.push(Expect::patch_status());
            poll(&so, Some(0), true, script).await;
        }
    }
}
