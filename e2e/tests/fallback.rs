//! Fallback on the real cluster: the event source is down, and after `failureThreshold`
//! failed reads the HPA is served the value that makes it choose `fallback.replicas`.

use crate::cron::{hpa_api, wait_for_hpa};
use crate::{apply, client, wait_for_replicas, Namespace};

#[tokio::test]
async fn unreachable_source_falls_back_to_the_fallback_replicas() {
    let ns = Namespace::create("e2e-fallback");
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
    spec: {containers: [{name: web, image: registry.invalid/web:1}]}
---
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
