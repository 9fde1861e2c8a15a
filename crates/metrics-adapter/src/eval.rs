//! `eventscale eval`: evaluate ScaledObjects' triggers against their real event sources,
//! without a cluster, and say what the HPA would do.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use scaler_core::hpa::{expected_replicas, Reading};
use scaler_core::job_scaling::{decide, demand, Calculation, ScalerMetric, Strategy};
use scaler_core::poll::{composite_read, CompositeRead, TriggerSample};
use scaler_core::pools::Pools;
use scaler_core::runtime::{BuildInputs, Runtime, Unobserved};
use scaler_core::scaled_job::{as_scaled_object, ScaledJob};
use scaler_core::scalers::{Sample, ScalerError};
use scaler_core::trigger_auth::{
    secret_data, AuthError, ClusterTriggerAuthentication, Sources, TriggerAuthentication,
    TriggerAuthenticationSpec,
};
use scaler_core::ScaledObject;
use serde::Serialize;

/// Everything read from the `-f` files and the `--env-file`.
#[derive(Default)]
pub struct Inputs {
    /// The ScaledObjects, in file order.
    pub scaled_objects: Vec<ScaledObject>,
    /// The ScaledJobs, in file order.
    pub scaled_jobs: Vec<ScaledJob>,
    trigger_auths: Vec<TriggerAuthentication>,
    cluster_trigger_auths: Vec<ClusterTriggerAuthentication>,
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
    config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    env: BTreeMap<String, String>,
}

const DEFAULT_NAMESPACE: &str = "default";

fn ns_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into())
}

impl Inputs {
    /// Read multi-document YAML: ScaledObjects, (Cluster)TriggerAuthentications, Secrets and
    /// ConfigMaps; other kinds are an error naming the file and document.
    pub fn add_yaml(&mut self, file: &str, text: &str) -> anyhow::Result<()> {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .with_context(|| format!("{file}: document {} is not YAML", i + 1))?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string();
            let at = || format!("{file}: document {} ({kind})", i + 1);
            match kind.as_str() {
                "ScaledObject" => {
                    let mut so: ScaledObject = serde_yaml::from_value(value).with_context(at)?;
                    so.metadata.namespace = Some(ns_of(&so.metadata));
                    self.scaled_objects.push(so);
                }
                "ScaledJob" => {
                    let mut sj: ScaledJob = serde_yaml::from_value(value).with_context(at)?;
                    sj.metadata.namespace = Some(ns_of(&sj.metadata));
                    self.scaled_jobs.push(sj);
                }
                "TriggerAuthentication" => {
                    let mut ta: TriggerAuthentication = serde_yaml::from_value(value).with_context(at)?;
                    ta.metadata.namespace = Some(ns_of(&ta.metadata));
                    self.trigger_auths.push(ta);
                }
                "ClusterTriggerAuthentication" => {
                    self.cluster_trigger_auths.push(serde_yaml::from_value(value).with_context(at)?)
                }
                "Secret" => {
                    let s: Secret = serde_yaml::from_value(value).with_context(at)?;
                    let key = (ns_of(&s.metadata), s.metadata.name.clone().unwrap_or_default());
                    self.secrets.insert(key, secret_data(s));
                }
                "ConfigMap" => {
                    let c: ConfigMap = serde_yaml::from_value(value).with_context(at)?;
                    let key = (ns_of(&c.metadata), c.metadata.name.clone().unwrap_or_default());
                    self.config_maps.insert(key, c.data.unwrap_or_default());
                }
                "" => anyhow::bail!("{file}: document {} has no kind", i + 1),
                other => anyhow::bail!(
                    "{file}: document {} is a {other}; eval reads ScaledObject, ScaledJob, TriggerAuthentication, ClusterTriggerAuthentication, Secret and ConfigMap",
                    i + 1
                ),
            }
        }
        Ok(())
    }

    /// Read `KEY=VALUE` lines (blank lines and `#` comments skipped) as the target
    /// container's environment.
    pub fn add_env_file(&mut self, file: &str, text: &str) -> anyhow::Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("{file}:{}: expected KEY=VALUE", n + 1))?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            self.env.insert(k.trim().to_string(), v.to_string());
        }
        Ok(())
    }

    /// Read a file given with `-f` (`-` for standard input).
    pub fn add_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let name = path.display().to_string();
        let text = if name == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?
        };
        self.add_yaml(&name, &text)
    }
}

#[async_trait]
impl Sources for Inputs {
    async fn trigger_authentication(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
        Ok(self
            .trigger_auths
            .iter()
            .find(|t| {
                t.metadata.name.as_deref() == Some(name)
                    && t.metadata.namespace.as_deref() == Some(ns)
            })
            .map(|t| t.spec.clone()))
    }
    async fn cluster_trigger_authentication(
        &self,
        name: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
        Ok(self
            .cluster_trigger_auths
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(name))
            .map(|t| t.spec.inner.clone()))
    }
    async fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        Ok(self
            .secrets
            .get(&(ns.to_string(), name.to_string()))
            .cloned())
    }
    async fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        Ok(self
            .config_maps
            .get(&(ns.to_string(), name.to_string()))
            .cloned())
    }
    async fn container_env(
        &self,
        _container: Option<&str>,
    ) -> Result<BTreeMap<String, String>, AuthError> {
        Ok(self.env.clone())
    }
}

/// One trigger's result, in the `-o json` shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerResult {
    /// Index in `spec.triggers`.
    pub index: usize,
    /// Trigger type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Metric name (empty when the trigger did not parse).
    pub metric_name: String,
    /// The value, when the source answered.
    pub value: Option<f64>,
    /// The target.
    pub target: f64,
    /// AverageValue or Value.
    pub metric_type: String,
    /// Whether it is active.
    pub active: bool,
    /// What went wrong, naming the field.
    pub error: Option<String>,
}

/// One ScaledObject's result, in the `-o json` shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// `<namespace>/<name>`.
    pub scaled_object: String,
    /// The replicas the HPA and eventscale would settle on.
    pub replicas: i32,
    /// Any trigger active.
    pub active: bool,
    /// Per trigger.
    pub triggers: Vec<TriggerResult>,
    /// With scalingModifiers: the composite metric's value, or why it has none (text
    /// output only; the JSON shape is the issue's).
    #[serde(skip)]
    pub composite: Option<Result<f64, String>>,
}

/// Ask each trigger of `so` once through `rt`: the per-trigger results, and the readings
/// of those that answered.
async fn ask(rt: &Runtime, so: &ScaledObject) -> (Vec<TriggerResult>, Vec<Reading>) {
    let mut triggers = Vec::new();
    let mut readings = Vec::new();
    for (index, trigger) in so.spec.triggers.iter().enumerate() {
        let mut result = TriggerResult {
            index,
            type_: trigger.type_.clone(),
            metric_name: String::new(),
            value: None,
            target: 0.0,
            metric_type: trigger
                .metric_type
                .clone()
                .unwrap_or_else(|| "AverageValue".into()),
            active: false,
            error: None,
        };
        let scaler = match rt.scaler(index) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                result.error = Some(e.to_string());
                triggers.push(result);
                continue;
            }
            None => continue,
        };
        let spec = scaler.metric_spec();
        result.metric_name = spec.name.clone();
        result.metric_type = spec.target_type.as_str().to_string();
        result.target = spec.target.value();
        match rt.sample(index).await.result {
            Ok(s) => {
                result.value = Some(s.value);
                result.active = s.active;
                readings.push(Reading {
                    value: s.value,
                    target: result.target,
                    active: s.active,
                });
            }
            Err(e) => {
                result.error = Some(
                    scaler_core::TriggerError {
                        index,
                        trigger_type: trigger.type_.clone(),
                        source: ScalerError::Query(e),
                    }
                    .to_string(),
                )
            }
        }
        triggers.push(result);
    }
    (triggers, readings)
}

/// The triggers' answers as the scale loop sees them, their errors worded as `eval`
/// words them.
fn samples_of(so: &ScaledObject, triggers: &[TriggerResult]) -> Vec<TriggerSample> {
    so.spec
        .triggers
        .iter()
        .zip(triggers)
        .map(|(t, r)| TriggerSample {
            trigger_name: t.name.clone(),
            metric: r.metric_name.clone(),
            result: match (r.value, &r.error) {
                (Some(value), None) => Ok(Sample {
                    value,
                    active: r.active,
                }),
                (_, e) => Err(e.clone().unwrap_or_default()),
            },
        })
        .collect()
}

/// `so`'s runtime built from the files, with no cluster.
async fn runtime(
    inputs: &Inputs,
    so: &ScaledObject,
    operator_ns: &str,
    pools: &std::sync::Arc<Pools>,
) -> Runtime {
    let build = BuildInputs {
        sources: inputs,
        client: None,
        operator_namespace: operator_ns,
        pools,
    };
    let with =
        scaler_core::runtime::With::new(pools.clone(), None, std::sync::Arc::new(Unobserved));
    Runtime::build(so, &build, Vec::new(), with).await
}

/// Evaluate one ScaledObject's triggers: its runtime built from the files, as in the
/// cluster, each trigger asked once.
pub async fn evaluate(
    inputs: &Inputs,
    so: &ScaledObject,
    operator_ns: &str,
    pools: &std::sync::Arc<Pools>,
) -> Evaluation {
    let ns = so.metadata.namespace.clone().unwrap_or_default();
    let rt = runtime(inputs, so, operator_ns, pools).await;
    let (triggers, readings) = ask(&rt, so).await;
    // With scalingModifiers the HPA reads one composite metric: the formula over the
    // named triggers' values decides, as in the cluster (no failure history here, so a
    // failed trigger fails the composite, as a first failure does there).
    let composite = scaler_core::modifiers::of_scaled_object(so).map(|m| {
        let m = m.map_err(|e| e.to_string())?;
        // The triggers' answers, their errors worded as above.
        let samples = samples_of(so, &triggers);
        // No failure history here: a failure is never past a threshold.
        match composite_read(so, &m, &samples, &Default::default()) {
            CompositeRead::Value { value, active } => Ok((value, m.target, active)),
            CompositeRead::Error(e) => Err(e),
            CompositeRead::Fallback => Err("falling back".into()),
        }
    });
    let readings = match &composite {
        Some(Ok((value, target, active))) => vec![Reading {
            value: *value,
            target: *target,
            active: *active,
        }],
        Some(Err(_)) => Vec::new(),
        None => readings,
    };
    Evaluation {
        scaled_object: format!("{ns}/{}", so.metadata.name.clone().unwrap_or_default()),
        replicas: expected_replicas(&so.spec, &readings),
        active: readings.iter().any(|r| r.active),
        triggers,
        composite: composite.map(|c| c.map(|(value, _, _)| value)),
    }
}

/// One ScaledJob's result, in the `-o json` shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobEvaluation {
    /// `<namespace>/<name>`.
    pub scaled_job: String,
    /// The Jobs a poll would create now, with none of its Jobs running (eval sees no
    /// cluster).
    pub jobs: i64,
    /// Active (a trigger, or a minimum above 0).
    pub active: bool,
    /// The combined queue length, rounded up.
    pub queue_length: i64,
    /// The combined queue over target, rounded up and capped at the room above the minimum.
    pub max_scale: i64,
    /// The scaling strategy applied.
    pub strategy: String,
    /// Per trigger.
    pub triggers: Vec<TriggerResult>,
    /// A note on the strategy (`custom` without a readable percentage), text output only.
    #[serde(skip)]
    pub warning: Option<String>,
}

/// Evaluate one ScaledJob: its triggers asked once, as the executor's poll asks them, and
/// the Jobs that poll would create with none running.
pub async fn evaluate_job(
    inputs: &Inputs,
    sj: &ScaledJob,
    operator_ns: &str,
    pools: &std::sync::Arc<Pools>,
) -> JobEvaluation {
    let so = as_scaled_object(sj);
    let rt = runtime(inputs, &so, operator_ns, pools).await;
    let (triggers, readings) = ask(&rt, &so).await;
    let (min, max) = (sj.spec.min_replicas(), sj.spec.max_replicas_above_min());
    let metrics: Vec<ScalerMetric> = readings
        .iter()
        .map(|r| ScalerMetric::new(r.value, r.target, r.active, max))
        .collect();
    let scaling = sj.spec.scaling_strategy.as_ref();
    let d = demand(&metrics, Calculation::of(scaling), min, max);
    let (strategy, warning) = Strategy::of(scaling);
    let decision = decide(strategy, min, max, 0, 0, d);
    let strategy_name = match strategy {
        Strategy::Default => "default",
        Strategy::Custom { .. } => "custom",
        Strategy::Accurate => "accurate",
        Strategy::Eager => "eager",
    };
    JobEvaluation {
        scaled_job: format!(
            "{}/{}",
            sj.metadata.namespace.clone().unwrap_or_default(),
            sj.metadata.name.clone().unwrap_or_default()
        ),
        jobs: decision.create,
        active: d.active,
        queue_length: d.scale_to,
        max_scale: d.max_scale,
        strategy: strategy_name.into(),
        triggers,
        warning,
    }
}

/// The human-readable form of ScaledJob evaluations.
pub fn render_jobs_text(evals: &[JobEvaluation]) -> String {
    let mut out = String::new();
    for e in evals {
        out.push_str(&format!(
            "ScaledJob {}: {} Jobs would be created now (with none running), {}; queue {}, max scale {} ({} strategy)\n",
            e.scaled_job,
            e.jobs,
            if e.active { "active" } else { "inactive" },
            e.queue_length,
            e.max_scale,
            e.strategy
        ));
        if let Some(w) = &e.warning {
            out.push_str(&format!("  note: {w}\n"));
        }
        render_triggers(&mut out, &e.triggers);
    }
    out
}

fn render_triggers(out: &mut String, triggers: &[TriggerResult]) {
    for t in triggers {
        match (&t.error, t.value) {
            (Some(err), _) => out.push_str(&format!("  [{}] {}: ERROR {err}\n", t.index, t.type_)),
            (None, Some(v)) => out.push_str(&format!(
                "  [{}] {} {}: value {v} target {} ({}) {}\n",
                t.index,
                t.type_,
                t.metric_name,
                t.target,
                t.metric_type,
                if t.active { "active" } else { "inactive" }
            )),
            (None, None) => {}
        }
    }
}

/// The human-readable form.
pub fn render_text(evals: &[Evaluation]) -> String {
    let mut out = String::new();
    for e in evals {
        let failed = e.triggers.iter().filter(|t| t.error.is_some()).count();
        let caveat = if failed > 0 {
            format!(
                " (from the triggers that answered; {failed} failed, and without a fallback eventscale would not scale on errors)"
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "ScaledObject {}: {} replicas, {}{caveat}\n",
            e.scaled_object,
            e.replicas,
            if e.active { "active" } else { "inactive" }
        ));
        match &e.composite {
            Some(Ok(v)) => out.push_str(&format!("  composite-metric (scalingModifiers): {v}\n")),
            Some(Err(err)) => out.push_str(&format!(
                "  composite-metric (scalingModifiers): ERROR {err}\n"
            )),
            None => {}
        }
        render_triggers(&mut out, &e.triggers);
    }
    out
}

/// `eval --explain`: the trace of `so` as the cluster's would read, built offline from one
/// poll of each trigger, with the target at `current` replicas (all ready). No failure
/// history (a failure is never past the fallback's threshold), no last activity (the
/// status's `lastActiveTime` when the file has one), and the HPA is the one eventscale
/// would make.
pub async fn explain(
    inputs: &Inputs,
    so: &ScaledObject,
    operator_ns: &str,
    pools: &std::sync::Arc<Pools>,
    current: i32,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::trace::ScalingTrace {
    use scaler_core::trace::{DecisionRecord, PollRecord, Record, SampleRecord, Source};
    let rt = runtime(inputs, so, operator_ns, pools).await;
    let (triggers, _) = ask(&rt, so).await;
    let specs = crate::provider::trigger_specs(&rt.scalers());
    let samples = samples_of(so, &triggers);
    let mut warnings = vec![
        "offline (eval): one poll, no failure history, no HPA status; the target taken at --current-replicas, all ready".to_string(),
    ];
    let activity = scaler_core::poll::activity(so, &samples, &Default::default());
    // Offline there is no creation time: the initial cooldown counts as over.
    let mut at_rest = so.clone();
    if at_rest.metadata.creation_timestamp.is_none() {
        at_rest.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
    }
    let decision = match activator::scale::input(&at_rest, &activity, current, now) {
        Ok(input) => {
            let decision = scaler_core::activation::decide(&input);
            Some(DecisionRecord {
                at: now,
                status_last_active: input.last_active,
                input,
                decision,
                failure: activity.failure.clone(),
            })
        }
        Err(e) => {
            warnings.push(format!("no decision: {e}"));
            None
        }
    };
    let record = Record {
        poll: Some(PollRecord {
            at: now,
            samples: samples
                .iter()
                .enumerate()
                .map(|(index, s)| SampleRecord::of(index, s, Source::Live))
                .collect(),
        }),
        decision: decision.map(Box::new),
        ..Record::default()
    };
    // The HPA eventscale would make (it needs a uid; offline there is none).
    let mut with_uid = so.clone();
    with_uid.metadata.uid.get_or_insert_with(|| "eval".into());
    let metrics: Vec<_> = rt
        .scalers()
        .into_iter()
        .filter_map(Result::ok)
        .map(|s| s.metric_spec().clone())
        .collect();
    let hpa = scaler_core::hpa::desired_hpa(&with_uid, &metrics)
        .map_err(|e| e.to_string())
        .map(|h| crate::trace::HpaView {
            name: scaler_core::hpa::hpa_name(so),
            object: serde_json::to_value(h).ok(),
        });
    crate::trace::build(crate::trace::Inputs {
        so,
        kind: crate::trace::TraceKind::ScaledObject,
        record: Some(record),
        health: BTreeMap::new(),
        specs,
        hpa: Some(hpa),
        target: Some(Ok(scaler_core::hpa_math::Replicas {
            spec: current,
            status: current,
            ready: current,
        })),
        tolerance: scaler_core::hpa_math::DEFAULT_TOLERANCE,
        now,
        served_by: crate::trace::ServedBy {
            replica: "eval".into(),
            owner: None,
            is_owner: true,
            mode: "eval".into(),
        },
        polling_interval: i64::from(so.spec.polling_interval.unwrap_or(30)),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cron_and_authentication_from_files() {
        let mut inputs = Inputs::default();
        inputs
            .add_yaml(
                "so.yaml",
                r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web}
spec:
  scaleTargetRef: {name: web}
  maxReplicaCount: 3
  triggers:
  - type: cron
    metadata: {timezone: Etc/UTC, start: "0 0 * * *", end: "59 23 * * *", desiredReplicas: "5"}
  - type: prometheus
    metadata: {serverAddress: "http://127.0.0.1:1", query: up, threshold: "1", authModes: basic, timeout: "500"}
    authenticationRef: {name: missing}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: bad, namespace: other}
spec:
  scaleTargetRef: {name: web}
  triggers:
  - type: cron
    metadata: {timezone: Mars/Base, start: "0 0 * * *", end: "1 0 * * *", desiredReplicas: "1"}
"#,
            )
            .expect("parsed");
        let e = evaluate(
            &inputs,
            &inputs.scaled_objects[0],
            "eventscale",
            &Default::default(),
        )
        .await;
        assert_eq!(e.scaled_object, "default/web");
        let cron = &e.triggers[0];
        assert_eq!(cron.metric_name, "s0-cron-Etc-UTC-00xxx-5923xxx");
        assert_eq!(cron.target, 1.0);
        // The window covers all day but the last minute; eval runs at any time.
        if cron.active {
            assert_eq!((cron.value, e.replicas), (Some(5.0), 3), "clamped to max 3");
        }
        let prom = &e.triggers[1];
        assert_eq!(
            prom.error.as_deref(),
            Some("spec.triggers[1].authenticationRef (prometheus): TriggerAuthentication \"missing\" not found in namespace \"default\"")
        );
        let bad = evaluate(
            &inputs,
            &inputs.scaled_objects[1],
            "eventscale",
            &Default::default(),
        )
        .await;
        assert!(bad.triggers[0]
            .error
            .as_deref()
            .is_some_and(|m| m.contains("metadata.timezone")));
        assert_eq!(bad.replicas, 0);
        let json = serde_json::to_value(&bad).expect("json");
        assert_eq!(json["scaledObject"], "other/bad");
        assert_eq!(json["triggers"][0]["value"], serde_json::Value::Null);
        assert_eq!(json["triggers"][0]["type"], "cron");
        assert!(render_text(&[e]).contains("ERROR spec.triggers[1].authenticationRef"));
    }

    #[tokio::test]
    async fn secrets_and_env_files_feed_trigger_authentication() {
        let mut inputs = Inputs::default();
        inputs
            .add_yaml(
                "auth.yaml",
                r#"
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: from-secret}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: ta}
spec:
  secretTargetRef: [{parameter: password, name: creds, key: password}]
  env: [{parameter: username, name: PROM_USER}]
"#,
            )
            .expect("parsed");
        inputs
            .add_env_file("env", "# comment\nexport PROM_USER=\"alice\"\n")
            .expect("env");
        let so: ScaledObject = serde_yaml::from_str(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: s, namespace: default}\nspec: {scaleTargetRef: {name: w}, triggers: [{type: cron, metadata: {}, authenticationRef: {name: ta}}]}",
        )
        .expect("so");
        let p = scaler_core::trigger_auth::trigger_params(&so, 0, "eventscale", &inputs)
            .await
            .expect("resolved")
            .params;
        assert_eq!(p.get("username").map(String::as_str), Some("alice"));
        assert_eq!(p.get("password").map(String::as_str), Some("from-secret"));
        assert!(inputs
            .add_yaml("x.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}")
            .is_err_and(|e| e.to_string().contains("x.yaml: document 1 is a Pod")));
        assert!(inputs
            .add_env_file("env", "NOEQUALS")
            .is_err_and(|e| e.to_string().contains("env:1: expected KEY=VALUE")));
    }
}
