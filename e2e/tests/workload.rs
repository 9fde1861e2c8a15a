//! The kubernetes-workload trigger on the real cluster: pods of another Deployment
//! (Pending here, as no node runs them, and still counted, as KEDA counts them) drive the
//! HPA of the target.

use std::time::Duration;

use crate::cron::{hpa_api, raw_metric, wait_for_hpa};
use crate::{apply, client, deployment, eventually, wait_for_replicas, Namespace};

#[tokio::test]
async fn pods_matching_the_selector_scale_the_target() {
    let ns = Namespace::create("e2e-workload");
    apply(&ns.0, &deployment("worker", 3, &[]));
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
  triggers:
  - type: kubernetes-workload
    metadata: {podSelector: "app=worker", value: "1"}
"#,
    );
    let metric = format!("s0-workload-{}", ns.0);
    let client = client().await;
    let hpa = wait_for_hpa(&hpa_api(client.clone(), &ns.0)).await;
    assert_eq!(
        hpa.data["spec"]["metrics"][0]["external"]["metric"]["name"],
        metric.as_str()
    );
    eventually(Duration::from_secs(60), "three worker pods counted", || {
        let list = raw_metric(&ns.0, &metric, "web");
        async move { (list["items"][0]["value"] == "3").then_some(()) }
    })
    .await;
    wait_for_replicas(&ns.0, "web", 3).await;
}
