//! A kafka-triggered ScaledObject and its Deployment, and reading the ScaledObject back:
//! shared by the end-to-end binaries (the test moves the lag with the Kafka tool).
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use crate::{apply, eventually, kafka_support, kubectl};

/// A Deployment `web` of the demo application at `replicas`, its Service, and a kafka
/// ScaledObject `web` on a new topic of three partitions (nothing produced yet) and group,
/// with `extra` spec lines.
pub fn setup(
    ns: &str,
    replicas: u32,
    extra: &str,
) -> (std::collections::BTreeMap<String, String>, String, String) {
    let env = crate::sources::sources_env(&["kafka"]);
    let topic = kafka_support::topic_with(&env, 3, &[]);
    let group = kafka_support::unique("g");
    for p in 0..3 {
        kafka_support::commit(&env, &group, &topic, p, 0);
    }
    apply(
        ns,
        &format!(
            r#"
{deployment}
---
{service}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  pollingInterval: 1
  maxReplicaCount: 5
{extra}
  triggers:
  - type: kafka
    metadata:
      bootstrapServers: {bootstrap}
      consumerGroup: {group}
      topic: {topic}
      lagThreshold: "5"
"#,
            bootstrap = env["EVENTSCALE_KAFKA_BOOTSTRAP"],
            deployment = crate::deployment("web", replicas, &[]),
            service = crate::service("web"),
        ),
    );
    (env, topic, group)
}

/// ScaledObject `web` in `ns`, as JSON.
pub async fn so_json(ns: &str) -> Value {
    so_json_named(ns, "web").await
}

/// ScaledObject `name` in `ns`, as JSON.
pub async fn so_json_named(ns: &str, name: &str) -> Value {
    let (ok, out, err) = kubectl(&["-n", ns, "get", "scaledobject", name, "-o", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("JSON")
}

pub fn condition(so: &Value, type_: &str) -> (String, String) {
    so["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
}

/// Wait until ScaledObject `web` has condition `type_` at `status` with `reason`.
pub async fn wait_for_condition(ns: &str, type_: &str, status: &str, reason: &str) -> Value {
    wait_for_condition_named(ns, "web", type_, status, reason).await
}

/// Wait until ScaledObject `name` has condition `type_` at `status` with `reason`.
pub async fn wait_for_condition_named(
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("{type_}={status} ({reason})"),
        || async {
            let so = so_json_named(ns, name).await;
            (condition(&so, type_) == (status.to_string(), reason.to_string())).then_some(so)
        },
    )
    .await
}

pub fn produce(
    env: &std::collections::BTreeMap<String, String>,
    topic: &str,
    partition: i32,
    n: usize,
) {
    kafka_support::tool_at(
        env,
        &env["EVENTSCALE_KAFKA_BOOTSTRAP"],
        &[],
        &[
            "produce",
            topic,
            "--partition",
            &partition.to_string(),
            "--count",
            &n.to_string(),
        ],
    );
}
