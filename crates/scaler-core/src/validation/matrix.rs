//! The bad-objects matrix: every rule that makes a ScaledObject (or the
//! TriggerAuthentication it references) invalid, one row each, with the field its error
//! must name. A row is the valid base object with a change merged in; the check is the
//! controller's, in its order ([`check`], then [`ownership`] against a namespace holding
//! another ScaledObject and a foreign HPA). The rules the CRD's schema enforces at apply
//! time are a second table, over the schema itself.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use serde_json::{json, Value};

use super::*;
use crate::runtime::{build_triggers, BuildInputs};
use crate::trigger_auth::{
    AuthError, ClusterTriggerAuthentication, Sources, TriggerAuthentication,
    TriggerAuthenticationSpec,
};

/// The namespace's TriggerAuthentications, Secrets and ConfigMaps (no
/// ClusterTriggerAuthentication).
struct Namespace;

#[async_trait]
impl Sources for Namespace {
    async fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        Ok((ns == "app" && name == "creds")
            .then(|| BTreeMap::from([("token".to_string(), "t0k".to_string())])))
    }
    async fn config_map(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<BTreeMap<String, String>>, AuthError> {
        Ok(None)
    }
    async fn trigger_authentication(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
        let spec = match (ns, name) {
            ("app", "secret-missing") => {
                json!({"secretTargetRef": [{"parameter": "bearerToken", "name": "nosuch", "key": "token"}]})
            }
            ("app", "key-missing") => {
                json!({"secretTargetRef": [{"parameter": "bearerToken", "name": "creds", "key": "missing"}]})
            }
            ("app", "configmap-missing") => {
                json!({"configMapTargetRef": [{"parameter": "username", "name": "nosuch", "key": "user"}]})
            }
            ("app", "vault") => json!({"hashiCorpVault": {"address": "http://vault:8200"}}),
            ("app", "tls-param") => {
                json!({"secretTargetRef": [{"parameter": "tls", "name": "creds", "key": "token"}]})
            }
            _ => return Ok(None),
        };
        Ok(serde_json::from_value(spec).ok())
    }
    async fn cluster_trigger_authentication(
        &self,
        _: &str,
    ) -> Result<Option<TriggerAuthenticationSpec>, AuthError> {
        Ok(None)
    }
    async fn container_env(&self, _: Option<&str>) -> Result<BTreeMap<String, String>, AuthError> {
        Ok(BTreeMap::new())
    }
}

/// A prometheus trigger with `metadata` over a valid one's.
fn prometheus(metadata: Value) -> Value {
    let mut m = json!({"serverAddress": "http://prometheus:9090", "query": "up", "threshold": "5"});
    merge(&mut m, &metadata);
    json!({"type": "prometheus", "name": "a", "metadata": m})
}

/// A prometheus trigger authenticated with `mode` by TriggerAuthentication `auth`.
fn authenticated(mode: &str, auth: Value) -> Value {
    let mut t = prometheus(json!({"authModes": mode}));
    t["authenticationRef"] = auth;
    t
}

fn cron(extra: Value) -> Value {
    let mut t = json!({"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "0 0 1 1 *", "end": "1 0 1 1 *", "desiredReplicas": "1"}});
    merge(&mut t, &extra);
    t
}

/// JSON merge patch (RFC 7386) of `patch` into `base`.
fn merge(base: &mut Value, patch: &Value) {
    match (base.as_object_mut(), patch.as_object()) {
        (Some(b), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *base = patch.clone(),
    }
}

/// The valid base object with `patch` merged in.
fn object(patch: &Value) -> ScaledObject {
    let mut so = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "web", "namespace": "app", "uid": "uid-web"},
        "spec": {"scaleTargetRef": {"name": "web"}, "triggers": [prometheus(json!({}))]}
    });
    merge(&mut so, patch);
    serde_json::from_value(so).expect("a ScaledObject")
}

/// What the controller finds wrong with `so`: (field, message), `None` when valid.
async fn problem(so: &ScaledObject) -> Option<(String, String)> {
    let pools = crate::pools::Pools::default();
    let inputs = BuildInputs {
        sources: &Namespace,
        client: None,
        operator_namespace: "eventscale",
        pools: &pools,
    };
    let built: Vec<_> = build_triggers(so, &inputs)
        .await
        .into_iter()
        .map(|b| b.scaler.map(|s| s.metric_spec().clone()))
        .collect();
    if let Err(p) = check(so, &built) {
        return Some((p.field(), p.to_string()));
    }
    let deployment = Gvk::from_api_version("apps/v1", "Deployment");
    let others = [
        OtherScaledObject {
            name: "first".into(),
            target_gvk: deployment.clone(),
            target_name: "taken".into(),
            hpa_name: "keda-hpa-first".into(),
        },
        OtherScaledObject {
            name: "custom".into(),
            target_gvk: deployment.clone(),
            target_name: "elsewhere".into(),
            hpa_name: "keda-hpa-clash".into(),
        },
    ];
    let hpas = [ExistingHpa {
        name: "legacy".into(),
        target_gvk: deployment.clone(),
        target_name: "legacy-target".into(),
        owner_scaled_object: None,
    }];
    let gvk = Gvk::of_scale_target(&so.spec.scale_target_ref);
    if let Err(e) = ownership(so, &gvk, &others, &hpas) {
        return Some((e.field.clone(), e.to_string()));
    }
    None
}

/// (rule, change to the base object, field named, words in the message).
fn rows() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let spec = |s: Value| json!({ "spec": s });
    let triggers = |t: Vec<Value>| json!({"spec": {"triggers": t}});
    let modifiers = |m: Value| json!({"spec": {"advanced": {"scalingModifiers": m}}});
    let thousand: Vec<Value> = (0..1000)
        .map(|i| match i {
            999 => json!({"type": "no-such-scaler", "metadata": {}}),
            _ => cron(json!({})),
        })
        .collect();
    vec![
        // KEDA's ValidateTriggers.
        ("triggers empty", triggers(vec![]), "spec.triggers", "no triggers defined in the ScaledObject/ScaledJob"),
        ("duplicate trigger names", triggers(vec![prometheus(json!({})), prometheus(json!({}))]), "spec.triggers[1].name", "triggerName \"a\" is defined multiple times"),
        ("useCachedMetrics on cron", triggers(vec![cron(json!({"useCachedMetrics": true}))]), "spec.triggers[0].useCachedMetrics", "property \"useCachedMetrics\" is not supported for \"cron\" scaler"),
        ("useCachedMetrics on cpu", triggers(vec![json!({"type": "cpu", "useCachedMetrics": true, "metadata": {"value": "50"}})]), "spec.triggers[0].useCachedMetrics", "for \"cpu\" scaler"),
        // KEDA's CheckReplicaCountBoundsAreValid.
        ("minReplicaCount above maxReplicaCount", spec(json!({"minReplicaCount": 5, "maxReplicaCount": 3})), "spec.minReplicaCount", "MinReplicaCount=5 must be less than MaxReplicaCount=3"),
        ("minReplicaCount huge", spec(json!({"minReplicaCount": 2147483647})), "spec.minReplicaCount", "MinReplicaCount=2147483647 must be less than MaxReplicaCount=100"),
        ("idleReplicaCount not below minReplicaCount", spec(json!({"idleReplicaCount": 2, "minReplicaCount": 2})), "spec.idleReplicaCount", "IdleReplicaCount=2 must be less than MinReplicaCount=2"),
        ("idleReplicaCount without minReplicaCount", spec(json!({"idleReplicaCount": 0})), "spec.idleReplicaCount", "IdleReplicaCount=0 must be less than MinReplicaCount=0"),
        // KEDA's CheckFallbackValid and the scalingModifiers behaviour.
        ("fallback failureThreshold negative", spec(json!({"fallback": {"failureThreshold": -1, "replicas": 2}})), "spec.fallback.failureThreshold", "FailureThreshold=-1 & Replicas=2 must both be greater than or equal to 0"),
        ("fallback replicas negative", spec(json!({"fallback": {"failureThreshold": 3, "replicas": -2}})), "spec.fallback.replicas", "FailureThreshold=3 & Replicas=-2 must both"),
        ("fallback with only cpu and memory triggers", spec(json!({"fallback": {"failureThreshold": 3, "replicas": 2}, "triggers": [{"type": "cpu", "metadata": {}}, {"type": "memory", "metadata": {}}]})), "spec.fallback", "has to have the `AverageValue` type"),
        ("fallback behavior scalingModifiers without a formula", spec(json!({"fallback": {"failureThreshold": 3, "replicas": 2, "behavior": "scalingModifiers"}})), "spec.fallback.behavior", "scalingModifiers fallback behavior requires scalingModifiers.formula to be defined"),
        // KEDA's ValidateAndCompileScalingModifiers.
        ("scalingModifiers without formula", modifiers(json!({"target": "2"})), "spec.advanced.scalingModifiers.formula", "required"),
        ("scalingModifiers formula without target", modifiers(json!({"formula": "a"})), "spec.advanced.scalingModifiers.target", "required"),
        ("scalingModifiers target not a number", modifiers(json!({"formula": "a", "target": "abc"})), "spec.advanced.scalingModifiers.target", "greater than 0"),
        ("scalingModifiers target negative", modifiers(json!({"formula": "a", "target": "-1"})), "spec.advanced.scalingModifiers.target", "greater than 0"),
        ("scalingModifiers target under a thousandth", modifiers(json!({"formula": "a", "target": "0.0001"})), "spec.advanced.scalingModifiers.target", "at least 0.001"),
        ("scalingModifiers metricType Utilization", modifiers(json!({"formula": "a", "target": "1", "metricType": "Utilization"})), "spec.advanced.scalingModifiers.metricType", "Utilization"),
        ("scalingModifiers formula naming no trigger", modifiers(json!({"formula": "a + ghost", "target": "1"})), "spec.advanced.scalingModifiers.formula", "unknown name ghost"),
        ("scalingModifiers formula not parsing", modifiers(json!({"formula": "a +", "target": "1"})), "spec.advanced.scalingModifiers.formula", "error parsing formula"),
        // KEDA's verifyName.
        ("name over 63 characters", json!({"metadata": {"name": "n".repeat(64)}}), "metadata.name", "is 64 characters long; must be no more than 63 characters"),
        ("derived HPA name over 63 characters", json!({"metadata": {"name": "n".repeat(60)}}), "metadata.name", "derived from scaledobject is 69 characters long"),
        ("custom HPA name over 63 characters", spec(json!({"advanced": {"horizontalPodAutoscalerConfig": {"name": "h".repeat(64)}}})), "spec.advanced.horizontalPodAutoscalerConfig.name", "is 64 characters long"),
        // Triggers as their scalers parse them.
        ("unknown trigger type", triggers(vec![json!({"type": "no-such-scaler", "metadata": {}})]), "spec.triggers[0].type", "no scaler for trigger type \"no-such-scaler\""),
        ("cpu trigger (no resource metrics)", triggers(vec![json!({"type": "cpu", "metadata": {"value": "50"}})]), "spec.triggers[0].type", "no scaler for trigger type \"cpu\""),
        ("metricType Utilization on an external trigger", triggers(vec![{ let mut t = prometheus(json!({})); t["metricType"] = "Utilization".into(); t }]), "spec.triggers[0].metricType", "not supported for external metrics"),
        ("metricType unknown", triggers(vec![{ let mut t = prometheus(json!({})); t["metricType"] = "Sometimes".into(); t }]), "spec.triggers[0].metricType", "\"Sometimes\""),
        ("required parameter missing", triggers(vec![prometheus(json!({"query": null}))]), "spec.triggers[0].metadata.query", "missing required parameter \"query\""),
        ("number parameter not a number", triggers(vec![prometheus(json!({"threshold": "ten"}))]), "spec.triggers[0].metadata.threshold", "unable to set param \"threshold\" value \"ten\""),
        ("number parameter overflowing float64", triggers(vec![prometheus(json!({"threshold": "1e400"}))]), "spec.triggers[0].metadata.threshold", "cannot unmarshal number 1e400 into Go value of type float64"),
        ("number parameter of 100,000 digits", triggers(vec![prometheus(json!({"threshold": "9".repeat(100_000)}))]), "spec.triggers[0].metadata.threshold", "into Go value of type float64"),
        ("target negative", triggers(vec![prometheus(json!({"threshold": "-5"}))]), "spec.triggers[0].metadata.threshold", "at least 0.001"),
        ("target under a thousandth", triggers(vec![prometheus(json!({"threshold": "0.0001"}))]), "spec.triggers[0].metadata.threshold", "at least 0.001"),
        ("enum parameter out of its set", triggers(vec![prometheus(json!({"authModes": "magic"}))]), "spec.triggers[0].metadata.authModes", "must be one of"),
        ("boolean parameter not a boolean", triggers(vec![prometheus(json!({"ignoreNullValues": "maybe"}))]), "spec.triggers[0].metadata.ignoreNullValues", "\"maybe\""),
        ("cron schedule not parsing", triggers(vec![cron(json!({"metadata": {"start": "every morning"}}))]), "spec.triggers[0].metadata.start", "error parsing start schedule"),
        ("cron time zone unknown", triggers(vec![cron(json!({"metadata": {"timezone": "Mars/Olympus_Mons"}}))]), "spec.triggers[0].metadata.timezone", "Mars/Olympus_Mons"),
        ("kafka lagThreshold zero", triggers(vec![json!({"type": "kafka", "metadata": {"bootstrapServers": "kafka:9092", "consumerGroup": "g", "topic": "t", "lagThreshold": "0"}})]), "spec.triggers[0].metadata.lagThreshold", "\"lagThreshold\" must be positive number"),
        ("postgresql targetQueryValue missing", triggers(vec![json!({"type": "postgresql", "metadata": {"query": "SELECT 1", "host": "db", "port": "5432", "userName": "u", "dbName": "d", "sslmode": "disable"}})]), "spec.triggers[0].metadata.targetQueryValue", "no targetQueryValue given"),
        ("postgresql field missing", triggers(vec![json!({"type": "postgresql", "metadata": {"query": "SELECT 1", "targetQueryValue": "2", "host": "db", "userName": "u", "dbName": "d", "sslmode": "disable"}})]), "spec.triggers[0].metadata.port", "no port given"),
        ("redis without an address", triggers(vec![json!({"type": "redis", "metadata": {"listName": "jobs"}})]), "spec.triggers[0].metadata.address", "no addresses or hosts given"),
        ("redis TLS set on both sides", triggers(vec![json!({"type": "redis", "metadata": {"listName": "jobs", "address": "redis:6379", "enableTLS": "true"}, "authenticationRef": {"name": "tls-param"}})]), "spec.triggers[0].metadata.enableTLS", "unable to set `tls` in both ScaledObject and TriggerAuthentication together"),
        ("redis-streams without a stream", triggers(vec![json!({"type": "redis-streams", "metadata": {"address": "redis:6379"}})]), "spec.triggers[0].metadata.stream", "\"stream\""),
        ("rabbitmq queueLength with a mode", triggers(vec![json!({"type": "rabbitmq", "metadata": {"queueName": "q", "host": "amqp://rabbit", "queueLength": "5", "mode": "QueueLength"}})]), "spec.triggers[0].metadata.queueLength", "queueLength is deprecated; use mode and value"),
        ("rabbitmq rate mode over AMQP", triggers(vec![json!({"type": "rabbitmq", "metadata": {"queueName": "q", "host": "amqp://rabbit", "mode": "MessageRate", "value": "5"}})]), "spec.triggers[0].metadata.mode", "must be HTTP to use trigger mode MessageRate"),
        ("kubernetes-workload value under a thousandth", triggers(vec![json!({"type": "kubernetes-workload", "metadata": {"podSelector": "app=web", "value": "0.0001"}})]), "spec.triggers[0].metadata.value", "at least 0.001"),
        ("kubernetes-workload podSelector not parsing", triggers(vec![json!({"type": "kubernetes-workload", "metadata": {"podSelector": "app in (", "value": "1"}})]), "spec.triggers[0].metadata.podSelector", "invalid podSelector"),
        ("1,000 triggers, the last of an unknown type", triggers(thousand), "spec.triggers[999].type", "no-such-scaler"),
        // TriggerAuthentications and what they reference.
        ("TriggerAuthentication missing", triggers(vec![authenticated("bearer", json!({"name": "nosuch"}))]), "spec.triggers[0].authenticationRef", "TriggerAuthentication \"nosuch\" not found in namespace \"app\""),
        ("ClusterTriggerAuthentication missing", triggers(vec![authenticated("bearer", json!({"name": "nosuch", "kind": "ClusterTriggerAuthentication"}))]), "spec.triggers[0].authenticationRef", "ClusterTriggerAuthentication \"nosuch\" not found"),
        ("authenticationRef kind unknown", triggers(vec![authenticated("bearer", json!({"name": "creds", "kind": "Secret"}))]), "spec.triggers[0].authenticationRef", "must be TriggerAuthentication or ClusterTriggerAuthentication"),
        ("secretTargetRef to a missing Secret", triggers(vec![authenticated("bearer", json!({"name": "secret-missing"}))]), "spec.triggers[0].metadata.bearerToken", "Secret app/nosuch not found"),
        ("secretTargetRef to a missing key", triggers(vec![authenticated("bearer", json!({"name": "key-missing"}))]), "spec.triggers[0].metadata.bearerToken", "key \"missing\" not found in Secret app/creds"),
        ("configMapTargetRef to a missing ConfigMap", triggers(vec![authenticated("basic", json!({"name": "configmap-missing"}))]), "spec.triggers[0].metadata.username", "ConfigMap app/nosuch not found"),
        ("TriggerAuthentication with an unsupported provider", triggers(vec![authenticated("bearer", json!({"name": "vault"}))]), "spec.triggers[0].authenticationRef", "spec.hashiCorpVault is not supported"),
        // The pause annotation.
        ("paused-replicas not a number", json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused-replicas": "three"}}}), "metadata.annotations[autoscaling.keda.sh/paused-replicas]", "\"three\" is not a valid int32 replica count"),
        ("paused-replicas negative", json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused-replicas": "-1"}}}), "metadata.annotations[autoscaling.keda.sh/paused-replicas]", "\"-1\" is not a valid int32 replica count"),
        // KEDA's verifyScaledObjects and verifyHpas.
        ("target managed by another ScaledObject", spec(json!({"scaleTargetRef": {"name": "taken"}})), "spec.scaleTargetRef", "the workload 'taken' of type 'apps/v1.Deployment' is already managed by the ScaledObject 'first'"),
        ("target managed by another HPA", spec(json!({"scaleTargetRef": {"name": "legacy-target"}})), "spec.scaleTargetRef", "is already managed by the hpa 'legacy'"),
        ("ownership transfer without the HPA's name", json!({"metadata": {"annotations": {TRANSFER_HPA_OWNERSHIP: "true"}}, "spec": {"scaleTargetRef": {"name": "legacy-target"}}}), "spec.advanced.horizontalPodAutoscalerConfig.name", "must be specified by name in advanced settings"),
        ("custom HPA name of another ScaledObject's HPA", spec(json!({"advanced": {"horizontalPodAutoscalerConfig": {"name": "keda-hpa-first"}}})), "spec.advanced.horizontalPodAutoscalerConfig.name", "the HPA 'keda-hpa-first' is already managed by the ScaledObject 'first'"),
        ("derived HPA name of another ScaledObject's HPA", json!({"metadata": {"name": "clash"}}), "metadata.name", "the HPA 'keda-hpa-clash' is already managed by the ScaledObject 'custom'"),
    ]
}

#[tokio::test]
async fn every_rule_names_its_field() {
    let rows = rows();
    for (rule, patch, field, words) in &rows {
        let so = object(patch);
        let got = problem(&so).await;
        let Some((got_field, message)) = got else {
            panic!("{rule}: accepted");
        };
        assert_eq!(&got_field, field, "{rule}: {message}");
        assert!(message.starts_with(field), "{rule}: {message}");
        assert!(message.contains(words), "{rule}: {message}");
    }
    // Each rule once.
    let mut names: Vec<_> = rows.iter().map(|r| r.0).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rows.len());
}

#[tokio::test]
async fn valid_objects_and_huge_valid_values_pass() {
    for patch in [
        json!({}),
        json!({"spec": {"pollingInterval": 2147483647, "cooldownPeriod": 2147483647, "initialCooldownPeriod": 2147483647, "maxReplicaCount": 2147483647}}),
        json!({"spec": {"fallback": {"failureThreshold": 2147483647, "replicas": 2147483647}}}),
        json!({"spec": {"fallback": {"failureThreshold": 3, "replicas": 2}, "triggers": [{"type": "kafka", "metricType": "Value", "metadata": {"bootstrapServers": "kafka:9092", "consumerGroup": "g", "topic": "t"}}]}}),
        json!({"spec": {"idleReplicaCount": 0, "minReplicaCount": 0}}),
        json!({"spec": {"advanced": {"scalingModifiers": {"formula": "a * 2", "target": "0.001"}}}}),
        json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused-replicas": "0"}}}),
        json!({"metadata": {"name": "n".repeat(54)}}),
    ] {
        let so = object(&patch);
        assert_eq!(problem(&so).await, None, "{patch}");
    }
}

/// The schema node at `path` (`spec.triggers.items.type`).
fn node<'a>(crd: &'a CustomResourceDefinition, path: &str) -> &'a JSONSchemaProps {
    let mut at = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a schema");
    for part in path.split('.') {
        at = match part {
            "items" => match at.items.as_ref() {
                Some(JSONSchemaPropsOrArray::Schema(s)) => s,
                _ => panic!("{path}: no items at {part}"),
            },
            "values" => at
                .additional_properties
                .as_ref()
                .and_then(|a| match a {
                    JSONSchemaPropsOrBool::Schema(s) => Some(&**s),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{path}: no additionalProperties")),
            name => at
                .properties
                .as_ref()
                .and_then(|p| p.get(name))
                .unwrap_or_else(|| panic!("{path}: no property {name}")),
        };
    }
    at
}

/// The rules the API server enforces at apply from the CRDs' schemas (wrong types, bounds,
/// enums, required fields): kubectl's error names the field.
#[test]
fn the_schema_refuses_wrong_types_and_bounds() {
    let so = ScaledObject::crd();
    let ta = TriggerAuthentication::crd();
    let cta = ClusterTriggerAuthentication::crd();
    let int32 = |p: &JSONSchemaProps, min: f64| {
        p.type_.as_deref() == Some("integer")
            && p.minimum == Some(min)
            && p.maximum == Some(f64::from(i32::MAX))
    };
    let enum_of = |p: &JSONSchemaProps, values: &[&str]| {
        p.enum_
            .iter()
            .flatten()
            .map(|v| v.0.clone())
            .collect::<Vec<_>>()
            == values.iter().map(|v| json!(v)).collect::<Vec<_>>()
    };
    let required =
        |p: &JSONSchemaProps, field: &str| p.required.iter().flatten().any(|r| r == field);
    let checks: Vec<(&str, bool)> = vec![
        ("spec.pollingInterval", int32(node(&so, "spec.pollingInterval"), 1.0)),
        ("spec.initialCooldownPeriod", int32(node(&so, "spec.initialCooldownPeriod"), 0.0)),
        ("spec.cooldownPeriod", int32(node(&so, "spec.cooldownPeriod"), 0.0)),
        ("spec.idleReplicaCount", int32(node(&so, "spec.idleReplicaCount"), 0.0)),
        ("spec.minReplicaCount", int32(node(&so, "spec.minReplicaCount"), 0.0)),
        ("spec.maxReplicaCount", int32(node(&so, "spec.maxReplicaCount"), 1.0)),
        ("spec.fallback.failureThreshold", int32(node(&so, "spec.fallback.failureThreshold"), 0.0)),
        ("spec.fallback.replicas", int32(node(&so, "spec.fallback.replicas"), 0.0)),
        ("spec.fallback.behavior", enum_of(node(&so, "spec.fallback.behavior"), &["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower", "scalingModifiers"])),
        ("spec.advanced.scalingModifiers.metricType", enum_of(node(&so, "spec.advanced.scalingModifiers.metricType"), &["AverageValue", "Value"])),
        ("spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds", int32(node(&so, "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds"), f64::from(i32::MIN))),
        ("spec.scaleTargetRef", required(node(&so, "spec"), "scaleTargetRef")),
        ("spec.scaleTargetRef.name", required(node(&so, "spec.scaleTargetRef"), "name") && node(&so, "spec.scaleTargetRef.name").min_length == Some(1)),
        ("spec.triggers", required(node(&so, "spec"), "triggers") && node(&so, "spec.triggers").min_items == Some(1)),
        ("spec.triggers[].type", required(node(&so, "spec.triggers.items"), "type") && node(&so, "spec.triggers.items.type").min_length == Some(1)),
        ("spec.triggers[].metadata values", node(&so, "spec.triggers.items.metadata.values").type_.as_deref() == Some("string")),
        ("spec.triggers[].useCachedMetrics", node(&so, "spec.triggers.items.useCachedMetrics").type_.as_deref() == Some("boolean")),
        ("spec.triggers[].authenticationRef.kind", enum_of(node(&so, "spec.triggers.items.authenticationRef.kind"), &["TriggerAuthentication", "ClusterTriggerAuthentication"])),
        ("spec.triggers[].authenticationRef.name", required(node(&so, "spec.triggers.items.authenticationRef"), "name")),
        ("status.originalReplicaCount", int32(node(&so, "status.originalReplicaCount"), f64::from(i32::MIN))),
    ];
    let mut auth_checks = Vec::new();
    for crd in [&ta, &cta] {
        for (list, fields) in [
            ("secretTargetRef", &["parameter", "name", "key"][..]),
            ("configMapTargetRef", &["parameter", "name", "key"][..]),
            ("env", &["parameter", "name"][..]),
        ] {
            let items = node(crd, &format!("spec.{list}.items"));
            auth_checks.push((
                format!("{} spec.{list}[] requires {fields:?}", crd.spec.names.kind),
                node(crd, &format!("spec.{list}")).type_.as_deref() == Some("array")
                    && fields.iter().all(|f| required(items, f)),
            ));
        }
    }
    for (what, ok) in checks {
        assert!(ok, "{what}");
    }
    for (what, ok) in auth_checks {
        assert!(ok, "{what}");
    }
}
