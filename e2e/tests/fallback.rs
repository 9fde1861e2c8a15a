//! Fallback on the real cluster: the event source is down, and after `failureThreshold`
//! failed reads the HPA is served the value that makes it choose `fallback.replicas`.

use crate::cron::{hpa_api, wait_for_hpa, wait_for_metric};
use crate::{apply, client, deployment, http, wait_for_ready, wait_for_replicas, Namespace};

#[tokio::test]
async fn unreachable_source_falls_back_to_the_fallback_replicas() {
    let ns = Namespace::create("e2e-fallback");
    apply(&ns.0, &deployment("web", 1, &[]));
    apply(
        &ns.0,
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web}
spec:
  scaleTargetRef: {name: web}
  minReplicaCount: 1
  fallback: {failureThreshold: 2, replicas: 4}
  triggers:
  - type: prometheus
    metadata: {serverAddress: "http://127.0.0.1:1", query: up, threshold: "5", timeout: "500"}
"#,
    );
    let client = client().await;
    wait_for_hpa(&hpa_api(client.clone(), &ns.0)).await;
    wait_for_replicas(&ns.0, "web", 4).await;
}

/// Fallback under scalingModifiers, as KEDA: with the `static` behaviour a trigger failing
/// past the threshold makes `composite-metric` the fallback value for the composite
/// target (4 replicas); with the `scalingModifiers` behaviour the trigger is nil for the
/// formula instead, and `??` decides ((nil ?? 25) + 10 = 35 against 5 → 7 replicas).
#[tokio::test]
async fn fallback_with_scaling_modifiers_both_behaviours() {
    let url = crate::prometheus::prometheus_url();
    for (behavior, formula, replicas) in [
        ("static", "down + up", 4),
        ("scalingModifiers", "(down ?? 25) + up", 7),
    ] {
        let ns = Namespace::create(&format!("e2e-fallback-{}", behavior.to_lowercase()));
        apply(&ns.0, &deployment("web", 1, &[]));
        apply(
            &ns.0,
            &format!(
                r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  fallback: {{failureThreshold: 1, replicas: 4, behavior: {behavior}}}
  advanced: {{scalingModifiers: {{formula: "{formula}", target: "5"}}}}
  triggers:
  - type: prometheus
    name: down
    metadata: {{serverAddress: "http://127.0.0.1:1", query: up, threshold: "5", timeout: "500"}}
  - type: prometheus
    name: up
    metadata: {{serverAddress: "{url}", query: vector(10), threshold: "5"}}
"#
            ),
        );
        let client = client().await;
        wait_for_hpa(&hpa_api(client, &ns.0)).await;
        wait_for_replicas(&ns.0, "web", replicas).await;
    }
}

/// The behaviours that read the target's replicas: with 2 replicas and `replicas: 5`,
/// `currentReplicasIfLower` serves 2 × target (10), `currentReplicasIfHigher` 5 × target
/// (25), read through the aggregator as the HPA reads them.
#[tokio::test]
async fn current_replicas_behaviours_read_the_target() {
    for (behavior, want) in [
        ("currentReplicasIfLower", "10"),
        ("currentReplicasIfHigher", "25"),
    ] {
        let ns = Namespace::create(&format!("e2e-fallback-{}", behavior.to_lowercase()));
        apply(&ns.0, &deployment("web", 2, &[]));
        apply(
            &ns.0,
            &format!(
                r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  fallback: {{failureThreshold: 1, replicas: 5, behavior: {behavior}}}
  triggers:
  - type: prometheus
    metadata: {{serverAddress: "http://127.0.0.1:1", query: up, threshold: "5", timeout: "500"}}
"#
            ),
        );
        wait_for_hpa(&hpa_api(client().await, &ns.0)).await;
        // Reads fail until the threshold is passed.
        wait_for_metric(&ns.0, "s0-prometheus", "web", want, true).await;
    }
}

/// A `Value` target's fallback is divided among the target's ready pods, as KEDA counts
/// them (Running with Ready True), and readiness is the kubelet's, from each pod's real
/// readiness probe: of 2 running pods one is made to fail its probe, so `replicas: 4` at
/// target 5 is served as 4 × 5 / 1 = 20; once it passes again, as 4 × 5 / 2 = 10. (The
/// HPA, which scales a Value metric by the ready pods too, would choose 4 either way;
/// `maxReplicaCount: 2` holds the pods still so that the division shows.)
#[tokio::test]
async fn value_fallback_is_divided_among_ready_pods() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;

    let ns = Namespace::create("e2e-fallback-value");
    apply(&ns.0, &deployment("web", 2, &[]));
    wait_for_ready(&ns.0, "web", 2, None).await;
    let pods: kube::Api<Pod> = kube::Api::namespaced(client().await, &ns.0);
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    let ip = list
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .expect("a pod with an IP");
    let (code, body) = http("POST", &format!("{ip}:8080"), "/healthz/fail");
    assert_eq!(code, 200, "{body}");
    wait_for_ready(&ns.0, "web", 1, None).await;
    apply(
        &ns.0,
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web}
spec:
  scaleTargetRef: {name: web}
  minReplicaCount: 1
  maxReplicaCount: 2
  fallback: {failureThreshold: 1, replicas: 4}
  triggers:
  - type: prometheus
    metricType: Value
    metadata: {serverAddress: "http://127.0.0.1:1", query: up, threshold: "5", timeout: "500"}
"#,
    );
    wait_for_hpa(&hpa_api(client().await, &ns.0)).await;
    wait_for_metric(&ns.0, "s0-prometheus", "web", "20", true).await;
    let (code, body) = http("POST", &format!("{ip}:8080"), "/healthz/pass");
    assert_eq!(code, 200, "{body}");
    wait_for_ready(&ns.0, "web", 2, None).await;
    wait_for_metric(&ns.0, "s0-prometheus", "web", "10", true).await;
    wait_for_replicas(&ns.0, "web", 2).await;
}
