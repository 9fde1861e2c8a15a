//! Timing on the real cluster: cooldownPeriod and initialCooldownPeriod hold the target
//! before scaling in; a failing source with a fallback is held at the fallback replicas,
//! never scaled to zero, with the Fallback condition and health written; a StatefulSet is
//! activated like a Deployment.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Api;

use crate::kafka_support;
use crate::workloads::{
    condition, produce, setup, so_json, wait_for_condition, wait_for_condition_named,
};
use crate::{apply, client, eventually, wait_for_replicas, Namespace};

async fn replicas(ns: &str) -> Option<i32> {
    let api: Api<Deployment> = Api::namespaced(client().await, ns);
    api.get("web").await.ok()?.spec?.replicas
}

/// initialCooldownPeriod 8: a new ScaledObject with nothing to do waits 8 s from its
/// creation before scaling to zero; then, active and caught up again, cooldownPeriod 6
/// holds the target 6 s after the last active poll.
#[tokio::test]
async fn initial_cooldown_and_cooldown_hold_the_target() {
    let ns = Namespace::create("e2e-cooldown");
    let created = Instant::now();
    let (env, topic, group) = setup(
        &ns.0,
        1,
        "  minReplicaCount: 0\n  initialCooldownPeriod: 8\n  cooldownPeriod: 6",
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        replicas(&ns.0).await,
        Some(1),
        "still within initialCooldownPeriod"
    );
    wait_for_replicas(&ns.0, "web", 0).await;
    assert!(
        created.elapsed() >= Duration::from_secs(8),
        "{:?}",
        created.elapsed()
    );

    produce(&env, &topic, 0, 2);
    wait_for_replicas(&ns.0, "web", 1).await;
    kafka_support::commit(&env, &group, &topic, 0, 2);
    let inactive = wait_for_condition(&ns.0, "Active", "False", "ScalerCooldown").await;
    let since = Instant::now();
    assert!(inactive["status"]["lastActiveTime"].is_string());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&ns.0).await, Some(1), "held during cooldownPeriod");
    wait_for_replicas(&ns.0, "web", 0).await;
    assert!(
        since.elapsed() >= Duration::from_secs(3),
        "{:?}",
        since.elapsed()
    );
}

/// The broker is unreachable and minReplicaCount is 0: the HPA holds fallback.replicas
/// and eventscale never scales to zero; status says Fallback True with the failing health.
#[tokio::test]
async fn a_failing_source_with_fallback_is_never_scaled_to_zero() {
    let ns = Namespace::create("e2e-fallback-zero");
    apply(
        &ns.0,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: localhost/eventscale/demo:v1, imagePullPolicy: Never}]}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web}
spec:
  scaleTargetRef: {name: web}
  pollingInterval: 1
  cooldownPeriod: 0
  minReplicaCount: 0
  fallback: {failureThreshold: 2, replicas: 3}
  triggers:
  - type: kafka
    metadata: {bootstrapServers: "127.0.0.1:1", consumerGroup: g, topic: t}
"#,
    );
    wait_for_replicas(&ns.0, "web", 3).await;
    let so = wait_for_condition(&ns.0, "Fallback", "True", "FallbackExists").await;
    let health = &so["status"]["health"]["s0-kafka-t"];
    assert_eq!(health["status"], "Failing", "{so}");
    assert!(health["numberOfFailures"].as_i64().unwrap_or(0) > 2, "{so}");
    assert_eq!(
        condition(&so, "Ready"),
        ("True".to_string(), "ScaledObjectReady".to_string()),
        "with a fallback, failing triggers are not a TriggerError"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        replicas(&ns.0).await,
        Some(3),
        "never scaled to zero while failing"
    );
}

/// A StatefulSet target: to zero while idle, back to one on lag.
#[tokio::test]
async fn a_statefulset_is_activated_too() {
    let ns = Namespace::create("e2e-statefulset");
    let env = crate::sources::sources_env(&["kafka"]);
    let topic = kafka_support::topic_with(&env, 1, &[]);
    let group = kafka_support::unique("g");
    kafka_support::commit(&env, &group, &topic, 0, 0);
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  replicas: 2
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec: {{containers: [{{name: db, image: localhost/eventscale/demo:v1, imagePullPolicy: Never}}]}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{kind: StatefulSet, name: db}}
  pollingInterval: 1
  cooldownPeriod: 0
  minReplicaCount: 0
  triggers:
  - type: kafka
    metadata: {{bootstrapServers: "{}", consumerGroup: {group}, topic: {topic}}}
"#,
            env["EVENTSCALE_KAFKA_BOOTSTRAP"]
        ),
    );
    let sts: Api<StatefulSet> = Api::namespaced(client().await, &ns.0);
    let at = |n: i32| {
        let sts = sts.clone();
        async move {
            eventually(
                Duration::from_secs(60),
                &format!("StatefulSet at {n}"),
                || async { (sts.get("db").await.ok()?.spec?.replicas == Some(n)).then_some(()) },
            )
            .await
        }
    };
    at(0).await;
    let so = so_json(&ns.0).await;
    assert_eq!(so["status"]["scaleTargetKind"], "apps/v1.StatefulSet");
    assert_eq!(so["status"]["originalReplicaCount"], 2);
    produce(&env, &topic, 0, 1);
    at(1).await;
}

/// The article's hourly cron example, unchanged: 5 replicas from minute 0 to minute 15 of
/// every hour, 0 otherwise (minReplicaCount 0, cooldownPeriod 0), for a Deployment `nginx`.
/// Whichever side of the window the test runs in, the Deployment ends where the article
/// says.
#[tokio::test]
async fn seed_hourly_cron_scales_out_inside_and_to_zero_outside() {
    let ns = Namespace::create("e2e-cron-hourly");
    let seed = std::fs::read_to_string(crate::repo_root().join("examples/cron-hourly.yaml"))
        .expect("examples/cron-hourly.yaml");
    apply(
        &ns.0,
        &format!(
            r#"
{deployment}
---
{seed}"#,
            deployment = crate::deployment("nginx", 1, &[]),
        ),
    );
    // Minutes 0-14 (Shanghai has a whole-hour offset) are inside. Near a boundary the
    // answer would change under the test: wait until past it.
    let minute = || {
        chrono::Utc::now()
            .format("%M")
            .to_string()
            .parse::<u32>()
            .unwrap_or(30)
    };
    if matches!(minute(), 14 | 59) {
        tokio::time::sleep(Duration::from_secs(70)).await;
    }
    let inside = minute() < 15;
    let want = if inside { 5 } else { 0 };
    wait_for_replicas(&ns.0, "nginx", want).await;
    let so = wait_for_condition_named(
        &ns.0,
        "nginx",
        "Active",
        if inside { "True" } else { "False" },
        if inside {
            "ScalerActive"
        } else {
            "ScalerNotActive"
        },
    )
    .await;
    assert_eq!(so["status"]["scaleTargetKind"], "apps/v1.Deployment");
}
