//! The bad-objects matrix on the real cluster (docs/reliability.md, "Bad objects"): every
//! rule that makes a ScaledObject or the TriggerAuthentication it references invalid,
//! applied at once in one namespace, each ScaledObject on its own Deployment of 2 replicas.
//! Each must get Ready False `ScaledObjectCheckFailed` and a Warning Event, both naming the
//! field; none may get an HPA or a write to its target; eventscale must not restart. The
//! rules the CRDs' schemas enforce are refused by the API server at apply, kubectl naming
//! the field.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::workloads::wait_for_condition_named;
use crate::{
    apply, eventually, kubectl, kubectl_json, kubectl_stdin, pid_of, Namespace, DEMO_IMAGE,
};

/// Replicas of every Deployment of the matrix.
const REPLICAS: i64 = 2;

/// A Deployment of [`REPLICAS`] that starts no pod (paused: the deployment controller makes
/// no ReplicaSet for it), so forty of them cost the node nothing; its `/scale` is a
/// Deployment's like any other.
fn idle_deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": REPLICAS, "paused": true,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": DEMO_IMAGE, "imagePullPolicy": "Never"}]}}
        }
    })
}

/// A cron trigger whose window (1 January, 00:00 to 00:01) is not now.
fn cron() -> Value {
    json!({"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "0 0 1 1 *", "end": "1 0 1 1 *", "desiredReplicas": "1"}})
}

fn named(mut trigger: Value, name: &str) -> Value {
    trigger["name"] = name.into();
    trigger
}

/// A prometheus trigger with `metadata` over a valid one's (its server is never asked:
/// every row using it fails before).
fn prometheus(metadata: Value) -> Value {
    let mut m = json!({"serverAddress": "http://127.0.0.1:1", "query": "up", "threshold": "5"});
    if let (Some(m), Some(over)) = (m.as_object_mut(), metadata.as_object()) {
        for (k, v) in over {
            if v.is_null() {
                m.remove(k);
            } else {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    json!({"type": "prometheus", "metadata": m})
}

/// A prometheus trigger authenticated with `mode` by `auth` (an authenticationRef).
fn authenticated(mode: &str, auth: Value) -> Value {
    let mut t = prometheus(json!({"authModes": mode}));
    t["authenticationRef"] = auth;
    t
}

/// One rejected ScaledObject.
struct Row {
    /// The ScaledObject's name.
    name: String,
    /// The rule, as docs/reliability.md lists it.
    rule: &'static str,
    /// Keys of its spec over the base one (target, `pollingInterval: 1`, a cron trigger).
    spec: Value,
    /// Its annotations.
    annotations: Value,
    /// Its target: a Deployment of its own (named like the row) unless set.
    target: Option<Value>,
    /// The field its condition and Event must name first.
    field: &'static str,
    /// Words its message must hold.
    words: &'static str,
}

fn row(
    name: &str,
    rule: &'static str,
    spec: Value,
    field: &'static str,
    words: &'static str,
) -> Row {
    Row {
        name: name.into(),
        rule,
        spec,
        annotations: json!({}),
        target: None,
        field,
        words,
    }
}

impl Row {
    fn annotated(mut self, annotations: Value) -> Self {
        self.annotations = annotations;
        self
    }

    fn targeting(mut self, target: Value) -> Self {
        self.target = Some(target);
        self
    }

    /// Its own Deployment's name, when it has one.
    fn deployment(&self) -> Option<String> {
        self.target.is_none().then(|| self.deployment_name())
    }

    fn deployment_name(&self) -> String {
        // A name over 63 characters is the rule of one row; its Deployment's is short.
        self.name.chars().take(40).collect()
    }

    fn scaled_object(&self) -> Value {
        let target = self
            .target
            .clone()
            .unwrap_or_else(|| json!({"name": self.deployment_name()}));
        let mut spec =
            json!({"scaleTargetRef": target, "pollingInterval": 1, "triggers": [cron()]});
        for (k, v) in self.spec.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": self.name, "annotations": self.annotations},
            "spec": spec
        })
    }
}

/// The matrix of ScaledObjects the controller must reject.
fn rows() -> Vec<Row> {
    let modifiers =
        |m: Value| json!({"advanced": {"scalingModifiers": m}, "triggers": [named(cron(), "a")]});
    let thousand: Vec<Value> = (0..1000)
        .map(|i| {
            if i == 999 {
                json!({"type": "no-such-scaler", "metadata": {}})
            } else {
                cron()
            }
        })
        .collect();
    let mut utilization = prometheus(json!({}));
    utilization["metricType"] = "Utilization".into();
    vec![
        row("min-over-max", "minReplicaCount above maxReplicaCount", json!({"minReplicaCount": 5, "maxReplicaCount": 3}), "spec.minReplicaCount", "MinReplicaCount=5 must be less than MaxReplicaCount=3"),
        row("idle-not-below-min", "idleReplicaCount not below minReplicaCount", json!({"idleReplicaCount": 2, "minReplicaCount": 2}), "spec.idleReplicaCount", "IdleReplicaCount=2 must be less than MinReplicaCount=2"),
        row("duplicate-trigger-names", "duplicate trigger names", json!({"triggers": [named(cron(), "a"), named(cron(), "a")]}), "spec.triggers[1].name", "triggerName \"a\" is defined multiple times"),
        row("cached-cron", "useCachedMetrics on cron", json!({"triggers": [{"type": "cron", "useCachedMetrics": true, "metadata": cron()["metadata"]}]}), "spec.triggers[0].useCachedMetrics", "not supported for \"cron\" scaler"),
        row("fallback-cpu-only", "fallback with only cpu/memory triggers", json!({"fallback": {"failureThreshold": 3, "replicas": 2}, "triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}), "spec.fallback", "has to have the `AverageValue` type"),
        row("fallback-behavior-no-formula", "fallback behavior scalingModifiers without a formula", json!({"fallback": {"failureThreshold": 3, "replicas": 2, "behavior": "scalingModifiers"}}), "spec.fallback.behavior", "requires scalingModifiers.formula"),
        row("modifiers-no-formula", "scalingModifiers without formula", modifiers(json!({"target": "2"})), "spec.advanced.scalingModifiers.formula", "required"),
        row("modifiers-no-target", "scalingModifiers formula without target", modifiers(json!({"formula": "a"})), "spec.advanced.scalingModifiers.target", "required"),
        row("modifiers-unknown-name", "scalingModifiers formula naming no trigger", modifiers(json!({"formula": "a + ghost", "target": "1"})), "spec.advanced.scalingModifiers.formula", "unknown name ghost"),
        row("modifiers-tiny-target", "scalingModifiers target under 0.001", modifiers(json!({"formula": "a", "target": "0.0001"})), "spec.advanced.scalingModifiers.target", "at least 0.001"),
        row("unknown-trigger-type", "unknown trigger type", json!({"triggers": [{"type": "no-such-scaler", "metadata": {}}]}), "spec.triggers[0].type", "no scaler for trigger type"),
        row("metric-type-utilization", "metricType Utilization on an external trigger", json!({"triggers": [utilization]}), "spec.triggers[0].metricType", "not supported for external metrics"),
        row("required-parameter-missing", "required trigger parameter missing", json!({"triggers": [prometheus(json!({"query": null}))]}), "spec.triggers[0].metadata.query", "missing required parameter \"query\""),
        row("threshold-not-a-number", "number parameter not a number", json!({"triggers": [prometheus(json!({"threshold": "ten"}))]}), "spec.triggers[0].metadata.threshold", "value \"ten\""),
        row("threshold-overflow", "number parameter over float64 (1e400)", json!({"triggers": [prometheus(json!({"threshold": "1e400"}))]}), "spec.triggers[0].metadata.threshold", "cannot unmarshal number 1e400"),
        row("threshold-100k-digits", "number parameter of 100,000 digits", json!({"triggers": [prometheus(json!({"threshold": "9".repeat(100_000)}))]}), "spec.triggers[0].metadata.threshold", "value \"999"),
        row("threshold-negative", "metric target negative", json!({"triggers": [prometheus(json!({"threshold": "-5"}))]}), "spec.triggers[0].metadata.threshold", "at least 0.001"),
        row("workload-tiny-value", "metric target under 0.001", json!({"triggers": [{"type": "kubernetes-workload", "metadata": {"podSelector": "app=none", "value": "0.0001"}}]}), "spec.triggers[0].metadata.value", "at least 0.001"),
        row("kafka-lag-zero", "kafka lagThreshold 0", json!({"triggers": [{"type": "kafka", "metadata": {"bootstrapServers": "127.0.0.1:1", "consumerGroup": "g", "topic": "t", "lagThreshold": "0"}}]}), "spec.triggers[0].metadata.lagThreshold", "must be positive number"),
        row("cron-bad-schedule", "cron schedule not parsing", json!({"triggers": [{"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "every morning", "end": "0 9 * * *", "desiredReplicas": "1"}}]}), "spec.triggers[0].metadata.start", "error parsing start schedule"),
        row("thousand-triggers", "1,000 triggers (a 110 KB object), the last of an unknown type", json!({"triggers": thousand}), "spec.triggers[999].type", "no-such-scaler"),
        row("ta-missing", "TriggerAuthentication missing", json!({"triggers": [authenticated("bearer", json!({"name": "nosuch"}))]}), "spec.triggers[0].authenticationRef", "TriggerAuthentication \"nosuch\" not found"),
        row("cta-missing", "ClusterTriggerAuthentication missing", json!({"triggers": [authenticated("bearer", json!({"name": "e2e-bad-objects-nosuch", "kind": "ClusterTriggerAuthentication"}))]}), "spec.triggers[0].authenticationRef", "ClusterTriggerAuthentication \"e2e-bad-objects-nosuch\" not found"),
        row("secret-missing", "secretTargetRef to a missing Secret", json!({"triggers": [authenticated("bearer", json!({"name": "secret-missing"}))]}), "spec.triggers[0].metadata.bearerToken", "not found"),
        row("secret-key-missing", "secretTargetRef to a missing key", json!({"triggers": [authenticated("bearer", json!({"name": "key-missing"}))]}), "spec.triggers[0].metadata.bearerToken", "key \"missing\" not found in Secret"),
        row("configmap-missing", "configMapTargetRef to a missing ConfigMap", json!({"triggers": [authenticated("basic", json!({"name": "configmap-missing"}))]}), "spec.triggers[0].metadata.username", "ConfigMap"),
        row("ta-unsupported-provider", "TriggerAuthentication with an unsupported provider (hashiCorpVault)", json!({"triggers": [authenticated("bearer", json!({"name": "vault"}))]}), "spec.triggers[0].authenticationRef", "spec.hashiCorpVault is not supported"),
        row("paused-replicas-not-a-number", "paused-replicas not a number", json!({}), "metadata.annotations[autoscaling.keda.sh/paused-replicas]", "\"three\" is not a valid int32")
            .annotated(json!({"autoscaling.keda.sh/paused-replicas": "three"})),
        row("paused-replicas-negative", "paused-replicas negative", json!({}), "metadata.annotations[autoscaling.keda.sh/paused-replicas]", "\"-1\" is not a valid int32")
            .annotated(json!({"autoscaling.keda.sh/paused-replicas": "-1"})),
        row(&format!("name-over-63-characters-{}", "n".repeat(40)), "ScaledObject name over 63 characters", json!({}), "metadata.name", "must be no more than 63 characters"),
        row("hpa-name-over-63", "custom HPA name over 63 characters", json!({"advanced": {"horizontalPodAutoscalerConfig": {"name": "h".repeat(64)}}}), "spec.advanced.horizontalPodAutoscalerConfig.name", "must be no more than 63 characters"),
        row("target-missing", "target not found", json!({}), "spec.scaleTargetRef", "not found").targeting(json!({"name": "nosuch"})),
        row("target-kind-unknown", "target of a kind the cluster does not serve", json!({}), "spec.scaleTargetRef", "is not served by the cluster")
            .targeting(json!({"apiVersion": "example.com/v1", "kind": "Widget", "name": "w"})),
        row("target-not-scalable", "target without /scale", json!({}), "spec.scaleTargetRef", "has no /scale subresource")
            .targeting(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "settings"})),
        row("target-taken", "target managed by another ScaledObject", json!({}), "spec.scaleTargetRef", "is already managed by the ScaledObject 'a-owner'")
            .targeting(json!({"name": "owned"})),
        row("hpa-name-clash", "custom HPA name of another ScaledObject's HPA", json!({"advanced": {"horizontalPodAutoscalerConfig": {"name": "keda-hpa-a-owner"}}}), "spec.advanced.horizontalPodAutoscalerConfig.name", "the HPA 'keda-hpa-a-owner' is already managed by the ScaledObject 'a-owner'"),
        row("target-has-hpa", "target managed by another HPA", json!({}), "spec.scaleTargetRef", "is already managed by the hpa 'legacy-a'")
            .targeting(json!({"name": "foreign-a"})),
        row("transfer-without-name", "ownership transfer without the HPA's name", json!({}), "spec.advanced.horizontalPodAutoscalerConfig.name", "must be specified by name in advanced settings")
            .targeting(json!({"name": "foreign-b"}))
            .annotated(json!({"scaledobject.keda.sh/transfer-hpa-ownership": "true"})),
        row("behavior-refused", "HPA behavior the API server refuses (stabilizationWindowSeconds 7200)", json!({"advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 7200}}}}}), "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds", "must be less than or equal to 3600"),
    ]
}

/// What the rows reference: a valid ScaledObject owning Deployment `owned` (its HPA
/// `keda-hpa-a-owner`), foreign HPAs on `foreign-a` and `foreign-b`, a Secret, a ConfigMap
/// and the TriggerAuthentications.
fn surroundings() -> Vec<Value> {
    let foreign_hpa = |name: &str, target: &str| {
        json!({
            "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": REPLICAS, "maxReplicas": REPLICAS,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}
        })
    };
    let ta = |name: &str, spec: Value| json!({"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": name}, "spec": spec});
    vec![
        idle_deployment("owned"),
        idle_deployment("foreign-a"),
        idle_deployment("foreign-b"),
        json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "a-owner"},
            "spec": {"scaleTargetRef": {"name": "owned"}, "minReplicaCount": REPLICAS, "maxReplicaCount": REPLICAS, "triggers": [cron()]}
        }),
        foreign_hpa("legacy-a", "foreign-a"),
        foreign_hpa("legacy-b", "foreign-b"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"token": "t0k"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "basic"}}),
        ta(
            "secret-missing",
            json!({"secretTargetRef": [{"parameter": "bearerToken", "name": "nosuch", "key": "token"}]}),
        ),
        ta(
            "key-missing",
            json!({"secretTargetRef": [{"parameter": "bearerToken", "name": "creds", "key": "missing"}]}),
        ),
        ta(
            "configmap-missing",
            json!({"configMapTargetRef": [{"parameter": "username", "name": "nosuch", "key": "user"}]}),
        ),
        ta(
            "vault",
            json!({"hashiCorpVault": {"address": "http://127.0.0.1:1", "authentication": "token"}}),
        ),
    ]
}

/// Objects the API server refuses at apply from the CRDs' schemas: (name, object, the
/// field its error must name; v1.20 names a list's items without their index).
fn refused_at_apply() -> Vec<(&'static str, Value, &'static str)> {
    let so = |name: &str, spec: Value| {
        let mut s = json!({"scaleTargetRef": {"name": "owned"}, "triggers": [cron()]});
        for (k, v) in spec.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name}, "spec": s})
    };
    let auth = |kind: &str, name: &str, spec: Value| json!({"apiVersion": "keda.sh/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let mut untyped_metadata = cron();
    untyped_metadata["metadata"]["desiredReplicas"] = 1.into();
    let mut no_type = cron();
    no_type.as_object_mut().map(|o| o.remove("type"));
    vec![
        ("polling-zero", so("polling-zero", json!({"pollingInterval": 0})), "spec.pollingInterval"),
        ("polling-over-int32", so("polling-over-int32", json!({"pollingInterval": 3_000_000_000_u64})), "spec.pollingInterval"),
        ("cooldown-negative", so("cooldown-negative", json!({"cooldownPeriod": -1})), "spec.cooldownPeriod"),
        ("min-not-an-integer", so("min-not-an-integer", json!({"minReplicaCount": "two"})), "spec.minReplicaCount"),
        ("max-zero", so("max-zero", json!({"maxReplicaCount": 0})), "spec.maxReplicaCount"),
        ("triggers-empty", so("triggers-empty", json!({"triggers": []})), "spec.triggers"),
        ("trigger-without-type", so("trigger-without-type", json!({"triggers": [no_type]})), "spec.triggers.type"),
        ("metadata-not-a-string", so("metadata-not-a-string", json!({"triggers": [untyped_metadata]})), "spec.triggers.metadata.desiredReplicas"),
        ("cached-not-a-boolean", so("cached-not-a-boolean", json!({"triggers": [{"type": "prometheus", "useCachedMetrics": "yes", "metadata": {}}]})), "spec.triggers.useCachedMetrics"),
        ("auth-kind-unknown", so("auth-kind-unknown", json!({"triggers": [authenticated("bearer", json!({"name": "x", "kind": "Secret"}))]})), "spec.triggers.authenticationRef.kind"),
        ("fallback-replicas-negative", so("fallback-replicas-negative", json!({"fallback": {"failureThreshold": 3, "replicas": -1}})), "spec.fallback.replicas"),
        ("fallback-threshold-over-int32", so("fallback-threshold-over-int32", json!({"fallback": {"failureThreshold": 3_000_000_000_u64, "replicas": 1}})), "spec.fallback.failureThreshold"),
        ("fallback-behavior-unknown", so("fallback-behavior-unknown", json!({"fallback": {"failureThreshold": 3, "replicas": 1, "behavior": "sometimes"}})), "spec.fallback.behavior"),
        ("modifiers-utilization", so("modifiers-utilization", json!({"advanced": {"scalingModifiers": {"formula": "a", "target": "1", "metricType": "Utilization"}}})), "spec.advanced.scalingModifiers.metricType"),
        ("behavior-not-an-integer", so("behavior-not-an-integer", json!({"advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": "x"}}}}})), "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds"),
        ("target-without-name", so("target-without-name", json!({"scaleTargetRef": {"kind": "Deployment"}})), "spec.scaleTargetRef.name"),
        ("ta-ref-without-key", auth("TriggerAuthentication", "ta-ref-without-key", json!({"secretTargetRef": [{"parameter": "p", "name": "creds"}]})), "spec.secretTargetRef.key"),
        ("ta-env-not-a-list", auth("TriggerAuthentication", "ta-env-not-a-list", json!({"env": {"parameter": "p", "name": "V"}})), "spec.env"),
        ("cta-ref-not-a-list", auth("ClusterTriggerAuthentication", "e2e-bad-objects-cta-ref-not-a-list", json!({"secretTargetRef": "creds"})), "spec.secretTargetRef"),
    ]
}

fn documents(objects: &[Value]) -> String {
    objects.iter().map(|o| format!("---\n{o}\n")).collect()
}

#[tokio::test]
async fn every_bad_object_is_reported_and_touches_nothing() {
    // About sixty objects applied and reconciled at once: a burst the k6 walkthrough must
    // not share.
    let _node = crate::NODE_LOAD.read().await;
    let ns = Namespace::create("e2e-bad-objects");
    let pid = pid_of("eventscale").expect("eventscale runs");
    let started = Instant::now();

    apply(&ns.0, &documents(&surroundings()));
    wait_for_condition_named(&ns.0, "a-owner", "Ready", "True", "ScaledObjectReady").await;

    let rows = rows();
    let mut objects: Vec<Value> = rows
        .iter()
        .filter_map(Row::deployment)
        .map(|d| idle_deployment(&d))
        .collect();
    objects.extend(rows.iter().map(Row::scaled_object));
    apply(&ns.0, &documents(&objects));
    let applied = Instant::now();

    // Every row: Ready False, ScaledObjectCheckFailed, the field first, the words after.
    let want: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let reported = |v: &Value| -> Vec<String> {
        let mut missing = Vec::new();
        for r in &rows {
            let so = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["metadata"]["name"] == r.name.as_str());
            let ready = so.and_then(|o| {
                o["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .cloned()
            });
            let ok = ready.as_ref().is_some_and(|c| {
                let message = c["message"].as_str().unwrap_or_default();
                // `field: …`, or `field (trigger type): …` for a trigger's parameters.
                let named = message.starts_with(&format!("{}: ", r.field))
                    || message.starts_with(&format!("{} (", r.field));
                c["status"] == "False"
                    && c["reason"] == "ScaledObjectCheckFailed"
                    && named
                    && message.contains(r.words)
                    && message.len() <= 32 * 1024
            });
            if !ok {
                missing.push(format!("{} ({}): {:?}", r.name, r.rule, ready));
            }
        }
        missing
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = kubectl_json(&["-n", &ns.0, "get", "scaledobjects", "-o", "json"]);
        let missing = reported(&v);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows not reported as they must be after 90 s:\n{}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let conditions_after = applied.elapsed();

    // A Warning Event for each, naming the field first; one at most 1 KiB long.
    eventually(
        Duration::from_secs(30),
        "a Warning Event naming the field for every row",
        || async {
            let v = kubectl_json(&["-n", &ns.0, "get", "events", "-o", "json"]);
            let events: Vec<&Value> = v["items"].as_array()?.iter().collect();
            let missing: Vec<&str> = rows
                .iter()
                .filter(|r| {
                    !events.iter().any(|e| {
                        let message = e["message"].as_str().unwrap_or_default();
                        e["involvedObject"]["name"] == r.name.as_str()
                            && e["type"] == "Warning"
                            && e["reason"] == "ScaledObjectCheckFailed"
                            && message.starts_with(r.field)
                            && message.len() <= 1024
                    })
                })
                .map(|r| r.name.as_str())
                .collect();
            if !missing.is_empty() {
                eprintln!("no Event yet for {missing:?}");
            }
            missing.is_empty().then_some(())
        },
    )
    .await;

    // Give a scale loop (pollingInterval 1) time to act, were any row accepted.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // No HPA but the owner's and the foreign ones.
    let hpas = kubectl_json(&["-n", &ns.0, "get", "hpa", "-o", "json"]);
    let names: BTreeSet<&str> = hpas["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["keda-hpa-a-owner", "legacy-a", "legacy-b"]),
        "an HPA was made for a rejected ScaledObject"
    );

    // Every Deployment still at its replicas, never written by eventscale.
    let deployments = kubectl_json(&["-n", &ns.0, "get", "deployments", "-o", "json"]);
    let mut seen = BTreeSet::new();
    for d in deployments["items"].as_array().into_iter().flatten() {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        seen.insert(name.to_string());
        assert_eq!(d["spec"]["replicas"], REPLICAS, "{name}: replicas changed");
        assert_eq!(
            d["metadata"]["generation"], 1,
            "{name}: its spec was written"
        );
        let writers: Vec<&str> = d["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(
            !writers.contains(&"eventscale"),
            "{name}: written by eventscale ({writers:?})"
        );
    }
    for r in &rows {
        if let Some(d) = r.deployment() {
            assert!(seen.contains(&d), "{}: Deployment {d} missing", r.name);
        }
    }

    // The ScaledObjects keep their status as it is: nothing recorded as scaled.
    let sos = kubectl_json(&["-n", &ns.0, "get", "scaledobjects", "-o", "json"]);
    for so in sos["items"].as_array().into_iter().flatten() {
        let name = so["metadata"]["name"].as_str().unwrap_or_default();
        if want.contains(name) {
            assert!(
                so["status"]["hpaName"].is_null(),
                "{name}: {}",
                so["status"]
            );
            assert!(
                so["status"]["lastActiveTime"].is_null(),
                "{name}: {}",
                so["status"]
            );
        }
    }

    // Refused at apply by the API server from the schemas, naming the field; nothing stored.
    let mut wrong = Vec::new();
    for (name, object, field) in refused_at_apply() {
        let (ok, out, err) = kubectl_stdin(
            // The API server's refusal, not kubectl's own schema check.
            &["-n", &ns.0, "apply", "--validate=false", "-f", "-"],
            Some(&object.to_string()),
        );
        let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
        let (stored, _, _) = kubectl(&["-n", &ns.0, "get", &kind, name]);
        if ok || stored || !err.contains(&format!("{field}: ")) {
            wrong.push(format!(
                "{name}: accepted {ok}, stored {stored}, not naming {field}: {out}{err}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // eventscale never restarted, and still reconciles: the owner is Ready.
    assert_eq!(pid_of("eventscale"), Some(pid), "eventscale restarted");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "eventscale is gone"
    );
    wait_for_condition_named(&ns.0, "a-owner", "Ready", "True", "ScaledObjectReady").await;
    eprintln!(
        "bad objects: {} rows reported {:.1} s after their apply, {} refused at apply; {:.1} s in all",
        rows.len(),
        conditions_after.as_secs_f64(),
        refused_at_apply().len(),
        started.elapsed().as_secs_f64()
    );
}
