//! Scaling to and from zero on the real cluster: the HPA controller decides between 1 and
//! max, eventscale's activator decides 0 ↔ N through `/scale`, as KEDA's executor does.
//! The source is the local Kafka broker, so the test moves the lag at will.

use std::time::Duration;

use activator::target::{Target, TargetKinds};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::cron::{hpa_api, raw_metric};
use crate::kafka_support;
use crate::workloads::{produce, setup, wait_for_condition};
use crate::{
    apply, client, deployment, endpoint_ips, eventually, http, kubectl, wait_for_ready,
    wait_for_replicas, Namespace,
};

/// 1 → 0 while the lag is 0 (cooldownPeriod 0); lag 12 → activated to 1 by eventscale,
/// then 3 by the HPA; caught up → 0 again; deleted with restoreToOriginalReplicaCount → 1.
#[tokio::test]
async fn activation_to_and_from_zero_and_restore_on_delete() {
    let ns = Namespace::create("e2e-activation");
    let (env, topic, group) = setup(
        &ns.0,
        1,
        "  minReplicaCount: 0\n  cooldownPeriod: 0\n  advanced: {restoreToOriginalReplicaCount: true}",
    );
    // Inactive and cooled down: to zero, and the Service has no endpoint left.
    wait_for_replicas(&ns.0, "web", 0).await;
    wait_for_ready(&ns.0, "web", 0, Some("web")).await;
    let so = wait_for_condition(&ns.0, "Active", "False", "ScalerNotActive").await;
    assert_eq!(so["status"]["originalReplicaCount"], 1, "{so}");
    assert_eq!(so["status"]["scaleTargetKind"], "apps/v1.Deployment");
    assert_eq!(
        so["metadata"]["finalizers"],
        serde_json::json!(["finalizer.keda.sh"])
    );

    // Lag 12: eventscale activates (0 → 1), the HPA takes it to ceil(12 / 5) = 3.
    produce(&env, &topic, 0, 4);
    produce(&env, &topic, 1, 4);
    produce(&env, &topic, 2, 4);
    let so = wait_for_condition(&ns.0, "Active", "True", "ScalerActive").await;
    assert!(so["status"]["lastActiveTime"].is_string(), "{so}");
    wait_for_replicas(&ns.0, "web", 3).await;
    // Three real pods, Ready and behind the Service, each answering for itself.
    wait_for_ready(&ns.0, "web", 3, Some("web")).await;
    let mut answered: Vec<String> = endpoint_ips(&ns.0, "web")
        .iter()
        .map(|ip| {
            let (code, body) = http("GET", &format!("{ip}:8080"), "/");
            assert_eq!(code, 200, "{ip}: {body}");
            body
        })
        .collect();
    answered.sort();
    answered.dedup();
    assert_eq!(answered.len(), 3, "three pods, three names: {answered:?}");
    assert!(
        answered.iter().all(|b| b.starts_with("hello from web-")),
        "{answered:?}"
    );
    let (ok, events, _) = kubectl(&[
        "-n",
        &ns.0,
        "get",
        "events",
        "--field-selector",
        "reason=KEDAScaleTargetActivated",
        "-o",
        "json",
    ]);
    assert!(ok && events.contains("from 0 to 1"), "{events}");

    // Caught up: inactive, and back to zero after the (zero) cooldown.
    for p in 0..3 {
        kafka_support::commit(&env, &group, &topic, p, 4);
    }
    wait_for_replicas(&ns.0, "web", 0).await;
    wait_for_ready(&ns.0, "web", 0, Some("web")).await;
    wait_for_condition(&ns.0, "Active", "False", "ScalerNotActive").await;

    // Deleted: the finalizer restores the original replica count, then lets go.
    let (ok, _, err) = kubectl(&["-n", &ns.0, "delete", "scaledobject", "web", "--wait=true"]);
    assert!(ok, "{err}");
    wait_for_replicas(&ns.0, "web", 1).await;
    let hpas = hpa_api(client().await, &ns.0);
    eventually(Duration::from_secs(30), "HPA deleted", || async {
        hpas.get_opt("keda-hpa-web")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

/// idleReplicaCount 0 with minReplicaCount 2: idle at 0, and active means min (2), not 1.
#[tokio::test]
async fn idle_replicas() {
    let ns = Namespace::create("e2e-idle");
    let (env, topic, _) = setup(
        &ns.0,
        3,
        "  idleReplicaCount: 0\n  minReplicaCount: 2\n  cooldownPeriod: 0",
    );
    wait_for_replicas(&ns.0, "web", 0).await;
    produce(&env, &topic, 0, 1);
    wait_for_replicas(&ns.0, "web", 2).await;
}

/// paused-replicas holds the target at N with no HPA; removing it brings the HPA back.
/// `paused: "true"` freezes the current count.
#[tokio::test]
async fn pause_at_n_and_at_the_current_count_then_unpause() {
    let ns = Namespace::create("e2e-pause");
    let (env, topic, _) = setup(&ns.0, 1, "  minReplicaCount: 1\n  cooldownPeriod: 0");
    let hpas = hpa_api(client().await, &ns.0);
    eventually(Duration::from_secs(60), "HPA created", || async {
        hpas.get_opt("keda-hpa-web").await.ok().flatten()
    })
    .await;

    let annotate = |kv: &str| {
        let (ok, _, err) = kubectl(&[
            "-n",
            &ns.0,
            "annotate",
            "scaledobject",
            "web",
            kv,
            "--overwrite",
        ]);
        assert!(ok, "{err}");
    };
    annotate("autoscaling.keda.sh/paused-replicas=4");
    wait_for_replicas(&ns.0, "web", 4).await;
    let so = wait_for_condition(&ns.0, "Paused", "True", "ScaledObjectPaused").await;
    assert_eq!(so["status"]["pausedReplicaCount"], 4, "{so}");
    eventually(
        Duration::from_secs(30),
        "HPA deleted while paused",
        || async {
            hpas.get_opt("keda-hpa-web")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    // Lag would scale it, but paused holds 4.
    produce(&env, &topic, 0, 20);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let deployments: Api<Deployment> = Api::namespaced(client().await, &ns.0);
    let d = deployments.get("web").await.expect("Deployment");
    assert_eq!(
        d.spec.and_then(|s| s.replicas),
        Some(4),
        "held while paused"
    );

    // Unpaused: the HPA comes back and reads the lag again (20, capped by 3 partitions ×
    // 5 = 15; the HPA's scale-down window keeps the 4 replicas for now).
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledobject",
        "web",
        "autoscaling.keda.sh/paused-replicas-",
    ]);
    assert!(ok, "{err}");
    let so = wait_for_condition(&ns.0, "Paused", "False", "ScaledObjectUnpaused").await;
    assert!(so["status"]["pausedReplicaCount"].is_null(), "{so}");
    let hpa = eventually(Duration::from_secs(60), "HPA recreated", || async {
        hpas.get_opt("keda-hpa-web").await.ok().flatten()
    })
    .await;
    let metric = hpa.data["spec"]["metrics"][0]["external"]["metric"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let list = raw_metric(&ns.0, &metric, "web");
    assert_eq!(list["items"][0]["value"], "15", "{list}");

    // paused: true freezes at the current count.
    annotate("autoscaling.keda.sh/paused=true");
    wait_for_condition(&ns.0, "Paused", "True", "ScaledObjectPaused").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = deployments.get("web").await.expect("Deployment");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(4), "frozen");
    eventually(
        Duration::from_secs(30),
        "HPA deleted while frozen",
        || async {
            hpas.get_opt("keda-hpa-web")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
}

/// eventscale's `/scale` write carries the resourceVersion of the `/scale` it read, and the
/// real API server takes it as a precondition: a write decided on replicas that another
/// writer (the HPA) has changed since is refused, so a lagging watch (an apiserver restart)
/// never takes the HPA's replicas back. A fresh read then writes.
#[tokio::test]
async fn a_scale_write_over_a_changed_target_is_refused() {
    let ns = Namespace::create("e2e-scale-precondition");
    apply(&ns.0, &deployment("web", 0, &[]));
    let so: scaler_core::ScaledObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "web", "namespace": ns.0},
        "spec": {"scaleTargetRef": {"name": "web"}, "triggers": []}
    }))
    .expect("ScaledObject");
    let client = client().await;
    let target = Target::resolve(&client, &TargetKinds::default(), &so)
        .await
        .expect("the Deployment resolves");
    let read = target.read().await.expect("/scale read");
    let deployments: Api<Deployment> = Api::namespaced(client, &ns.0);
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("another writer scales to 2");
    let written = target
        .scale_from(&read, 1)
        .await
        .expect("a conflict, not an error");
    assert!(!written, "written over replicas it did not read");
    assert_eq!(target.replicas().await.expect("/scale"), 2);
    // A fresh read writes; the Deployment's controller updates its status (and so its
    // resourceVersion) while its pods come up, so that too may take another read.
    eventually(
        Duration::from_secs(30),
        "a write over a fresh /scale read",
        || async {
            let read = target.read().await.ok()?;
            target.scale_from(&read, 1).await.ok()?.then_some(())
        },
    )
    .await;
    assert_eq!(target.replicas().await.expect("/scale"), 1);
}
