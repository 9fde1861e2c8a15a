//! A prometheus trigger end to end: eventscale queries the real Prometheus of
//! `e2e/sources.sh` on every HPA read, and the real HPA controller scales on it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::cron::{hpa_api, raw_metric, wait_for_hpa};
use crate::{apply, client, eventually, Namespace};

fn prometheus_url() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/sources.sh");
    let up = Command::new("bash")
        .arg(&script)
        .args(["up", "prometheus"])
        .status()
        .expect("sources.sh");
    assert!(up.success(), "e2e/sources.sh up prometheus failed");
    let out = Command::new("bash")
        .arg(&script)
        .arg("env")
        .output()
        .expect("sources.sh env");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("export EVENTSCALE_PROMETHEUS_URL="))
        .map(str::to_string)
        .expect("EVENTSCALE_PROMETHEUS_URL")
}

#[tokio::test]
async fn prometheus_value_scales_the_deployment() {
    let url = prometheus_url();
    let ns = Namespace::create("e2e-prometheus");
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: registry.invalid/web:1}}]}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{name: web}}
  minReplicaCount: 1
  maxReplicaCount: 10
  triggers:
  - type: prometheus
    metadata:
      serverAddress: {url}
      query: vector(35)
      threshold: "5"
"#
        ),
    );
    let client = client().await;
    let hpa = wait_for_hpa(&hpa_api(client.clone(), &ns.0)).await;
    let ext = &hpa.data["spec"]["metrics"][0]["external"];
    assert_eq!(ext["metric"]["name"], "s0-prometheus");
    assert_eq!(ext["target"]["averageValue"], "5");

    let list = raw_metric(&ns.0, "s0-prometheus", "web");
    assert_eq!(list["items"][0]["value"], "35", "{list}");

    // 35 / 5 → 7 replicas, decided by the real HPA controller.
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.0);
    eventually(
        Duration::from_secs(90),
        "Deployment web at 7 replicas",
        || async {
            let d = deployments.get("web").await.ok()?;
            (d.spec?.replicas == Some(7)).then_some(())
        },
    )
    .await;
}
