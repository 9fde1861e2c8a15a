//! The HPA's lifecycle and KEDA's validation on the real cluster: conflicts with another
//! HPA or ScaledObject and the transfer of ownership, a custom HPA name and its rename,
//! trigger updates, the Value metric type, paused-scale-in, force-activation, a custom
//! resource with a /scale subresource, and no status writes at steady state.

use std::time::Duration;

use kube::Api;
use serde_json::Value;

use crate::cron::hpa_api;
use crate::workloads::{condition, produce, setup, so_json, wait_for_condition};
use crate::{apply, client, eventually, kubectl, kubectl_stdin, wait_for_replicas, Namespace};

async fn hpa(ns: &str, name: &str) -> kube::api::DynamicObject {
    let hpas = hpa_api(client().await, ns);
    eventually(Duration::from_secs(60), &format!("HPA {name}"), || async {
        hpas.get_opt(name).await.ok().flatten()
    })
    .await
}

async fn hpa_gone(ns: &str, name: &str) {
    let hpas = hpa_api(client().await, ns);
    eventually(
        Duration::from_secs(60),
        &format!("HPA {name} gone"),
        || async { hpas.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await;
}

fn patch_so(ns: &str, patch: &str) {
    let (ok, _, err) = kubectl(&[
        "-n",
        ns,
        "patch",
        "scaledobject",
        "web",
        "--type",
        "merge",
        "-p",
        patch,
    ]);
    assert!(ok, "{err}");
}

async fn wait_for_ready_message(ns: &str, so: &str, text: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("Ready False: {text}"),
        || async {
            let (ok, out, _) = kubectl(&["-n", ns, "get", "scaledobject", so, "-o", "json"]);
            let v: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            let ready = v["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["status"] == "False" && ready["message"].as_str()?.contains(text)).then_some(v)
        },
    )
    .await
}

/// A foreign HPA on the target blocks the ScaledObject (Ready False, KEDA's message, no
/// HPA of ours) until ownership is transferred to it by name; a second ScaledObject on the
/// same target is refused.
#[tokio::test]
async fn conflicts_and_transfer_of_ownership() {
    let ns = Namespace::create("e2e-conflict");
    apply(
        &ns.0,
        r#"
apiVersion: autoscaling/v2beta2
kind: HorizontalPodAutoscaler
metadata: {name: legacy}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
"#,
    );
    let (_env, _topic, _group) = setup(&ns.0, 1, "  minReplicaCount: 1");
    wait_for_ready_message(
        &ns.0,
        "web",
        "the workload 'web' of type 'apps/v1.Deployment' is already managed by the hpa 'legacy'",
    )
    .await;
    let hpas = hpa_api(client().await, &ns.0);
    assert!(
        hpas.get_opt("keda-hpa-web").await.ok().flatten().is_none(),
        "no HPA of ours"
    );

    // Transfer: annotation plus the HPA's name as the custom name.
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledobject",
        "web",
        "scaledobject.keda.sh/transfer-hpa-ownership=true",
    ]);
    assert!(ok, "{err}");
    patch_so(
        &ns.0,
        r#"{"spec":{"advanced":{"horizontalPodAutoscalerConfig":{"name":"legacy"}}}}"#,
    );
    wait_for_condition(&ns.0, "Ready", "True", "ScaledObjectReady").await;
    let taken = eventually(Duration::from_secs(60), "legacy HPA taken over", || async {
        let h = hpas.get_opt("legacy").await.ok().flatten()?;
        let owned = h
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "ScaledObject" && o.name == "web");
        owned.then_some(h)
    })
    .await;
    assert_eq!(
        taken.data["spec"]["metrics"][0]["type"], "External",
        "{:?}",
        taken.data
    );

    // A second ScaledObject for the same Deployment.
    let env = crate::sources::sources_env(&["kafka"]);
    apply(
        &ns.0,
        &format!(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web2}}
spec:
  scaleTargetRef: {{name: web}}
  triggers:
  - type: kafka
    metadata: {{bootstrapServers: "{}", consumerGroup: g, topic: t}}
"#,
            env["EVENTSCALE_KAFKA_BOOTSTRAP"]
        ),
    );
    wait_for_ready_message(
        &ns.0,
        "web2",
        "the workload 'web' of type 'apps/v1.Deployment' is already managed by the ScaledObject 'web'",
    )
    .await;
}

/// A custom HPA name is used, and renaming it replaces the HPA; a trigger update and the
/// Value metric type reach the HPA; paused-scale-in disables its scale-down.
#[tokio::test]
async fn custom_name_rename_trigger_update_value_type_and_paused_scale_in() {
    let ns = Namespace::create("e2e-hpa-lifecycle");
    setup(
        &ns.0,
        1,
        "  minReplicaCount: 1\n  advanced: {horizontalPodAutoscalerConfig: {name: custom-a}}",
    );
    let a = hpa(&ns.0, "custom-a").await;
    assert_eq!(
        a.data["spec"]["metrics"][0]["external"]["target"]["averageValue"],
        "5"
    );
    patch_so(
        &ns.0,
        r#"{"spec":{"advanced":{"horizontalPodAutoscalerConfig":{"name":"custom-b"}}}}"#,
    );
    hpa(&ns.0, "custom-b").await;
    hpa_gone(&ns.0, "custom-a").await;
    let so = wait_for_condition(&ns.0, "Ready", "True", "ScaledObjectReady").await;
    assert_eq!(so["status"]["hpaName"], "custom-b");

    // Trigger update: lagThreshold 5 → 7, metricType Value.
    // Read, change, replace: the controller may write the status in between (a 409
    // Conflict), so read again then, as any client of the apiserver does.
    let mut attempts = 0;
    loop {
        let (ok, out, err) = kubectl(&["-n", &ns.0, "get", "scaledobject", "web", "-o", "json"]);
        assert!(ok, "{err}");
        let mut v: Value = serde_json::from_str(&out).expect("JSON");
        v["spec"]["triggers"][0]["metadata"]["lagThreshold"] = "7".into();
        v["spec"]["triggers"][0]["metricType"] = "Value".into();
        let (ok, _, err) =
            kubectl_stdin(&["-n", &ns.0, "replace", "-f", "-"], Some(&v.to_string()));
        attempts += 1;
        if ok {
            break;
        }
        assert!(
            err.contains("Conflict") && attempts < 5,
            "replace failed ({attempts} attempts): {err}"
        );
    }
    let hpas = hpa_api(client().await, &ns.0);
    eventually(
        Duration::from_secs(60),
        "HPA follows the trigger update",
        || async {
            let h = hpas.get_opt("custom-b").await.ok().flatten()?;
            let t = &h.data["spec"]["metrics"][0]["external"]["target"];
            (t["type"] == "Value" && t["value"] == "7").then_some(())
        },
    )
    .await;

    // paused-scale-in: the HPA may not scale down.
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledobject",
        "web",
        "autoscaling.keda.sh/paused-scale-in=true",
    ]);
    assert!(ok, "{err}");
    eventually(Duration::from_secs(60), "scaleDown disabled", || async {
        let h = hpas.get_opt("custom-b").await.ok().flatten()?;
        (h.data["spec"]["behavior"]["scaleDown"]["selectPolicy"] == "Disabled").then_some(())
    })
    .await;
}

/// force-activation brings an idle target to 1 with no lag; and once settled, polls every
/// second change nothing in the ScaledObject (no status writes at steady state).
#[tokio::test]
async fn force_activation_and_no_writes_at_steady_state() {
    let ns = Namespace::create("e2e-steady");
    let (env, topic, group) = setup(&ns.0, 1, "  minReplicaCount: 0\n  cooldownPeriod: 0");
    wait_for_replicas(&ns.0, "web", 0).await;
    wait_for_condition(&ns.0, "Active", "False", "ScalerNotActive").await;

    // Inactive at 0: five seconds of polls, not one write.
    let before = so_json(&ns.0).await["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = so_json(&ns.0).await["metadata"]["resourceVersion"].clone();
    assert_eq!(before, after, "status writes while nothing changed");

    // Active (lag on one partition, the HPA at 1): settles, then no writes either.
    produce(&env, &topic, 0, 3);
    wait_for_condition(&ns.0, "Active", "True", "ScalerActive").await;
    wait_for_replicas(&ns.0, "web", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = so_json(&ns.0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = so_json(&ns.0).await;
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "status writes while active and steady: {}",
        after["status"]
    );
    assert_eq!(condition(&after, "Active").0, "True");

    // The HPA controller writes the HPA's status all along; eventscale never answers that
    // with a write of its own (its server-side apply entry keeps its time; HPAs of v1.20
    // carry no generation). Another writer changing the spec is answered by restoring
    // what the ScaledObject says, and then both sides are quiet.
    let hpas = hpa_api(client().await, &ns.0);
    let applied = |h: &kube::api::DynamicObject| {
        h.metadata
            .managed_fields
            .iter()
            .flatten()
            .find(|m| m.operation.as_deref() == Some("Apply"))
            .and_then(|m| m.time.clone())
            .map(|t| t.0)
    };
    let t0 = applied(&hpas.get("keda-hpa-web").await.expect("HPA"));
    assert!(t0.is_some(), "eventscale applies the HPA");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let h = hpas.get("keda-hpa-web").await.expect("HPA");
    assert_eq!(
        applied(&h),
        t0,
        "HPA rewritten at steady state: {:?}",
        h.data["spec"]
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "patch",
        "hpa.v2beta2.autoscaling",
        "keda-hpa-web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxReplicas":9}}"#,
    ]);
    assert!(ok, "{err}");
    let restored = eventually(
        Duration::from_secs(30),
        "maxReplicas restored to 5",
        || async {
            let h = hpas.get("keda-hpa-web").await.ok()?;
            (h.data["spec"]["maxReplicas"] == 5).then(|| applied(&h))
        },
    )
    .await;
    assert_ne!(restored, t0, "the restore is eventscale's apply");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let h = hpas.get("keda-hpa-web").await.expect("HPA");
    assert_eq!(applied(&h), restored, "HPA written again after the restore");
    assert_eq!(h.data["spec"]["maxReplicas"], 5);

    // force-activation with the lag consumed: held at 1 instead of going to 0.
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledobject",
        "web",
        "autoscaling.keda.sh/force-activation=true",
    ]);
    assert!(ok, "{err}");
    crate::kafka_support::commit(&env, &group, &topic, 0, 3);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client().await, &ns.0);
    let d = deployments.get("web").await.expect("Deployment");
    assert_eq!(
        d.spec.and_then(|s| s.replicas),
        Some(1),
        "forced active: not scaled to 0"
    );
    // Without it, to zero.
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledobject",
        "web",
        "autoscaling.keda.sh/force-activation-",
    ]);
    assert!(ok, "{err}");
    wait_for_replicas(&ns.0, "web", 0).await;
}

/// A custom resource with a /scale subresource is activated and deactivated like a
/// Deployment.
#[tokio::test]
async fn custom_resource_with_a_scale_subresource() {
    let ns = Namespace::create("e2e-custom-scale");
    let (ok, _, err) = kubectl_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.eventscale.dev}
spec:
  group: e2e.eventscale.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {replicas: {type: integer}}}
          status: {type: object, properties: {replicas: {type: integer}, selector: {type: string}}}
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
"#,
        ),
    );
    assert!(ok, "{err}");
    let env = crate::sources::sources_env(&["kafka"]);
    let topic = crate::kafka_support::topic_with(&env, 1, &[]);
    let group = crate::kafka_support::unique("g");
    crate::kafka_support::commit(&env, &group, &topic, 0, 0);
    let manifest = format!(
        r#"
apiVersion: e2e.eventscale.dev/v1
kind: Widget
metadata: {{name: gizmo}}
spec: {{replicas: 2}}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: web}}
spec:
  scaleTargetRef: {{apiVersion: e2e.eventscale.dev/v1, kind: Widget, name: gizmo}}
  pollingInterval: 1
  cooldownPeriod: 0
  minReplicaCount: 0
  triggers:
  - type: kafka
    metadata: {{bootstrapServers: "{}", consumerGroup: {group}, topic: {topic}}}
"#,
        env["EVENTSCALE_KAFKA_BOOTSTRAP"]
    );
    // The CRD takes a moment to be served.
    eventually(Duration::from_secs(30), "Widget served", || async {
        kubectl_stdin(&["-n", &ns.0, "apply", "-f", "-"], Some(&manifest))
            .0
            .then_some(())
    })
    .await;
    let replicas = |ns: String| async move {
        let (_, out, _) = kubectl(&[
            "-n",
            &ns,
            "get",
            "widget",
            "gizmo",
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        out.trim().parse::<i32>().ok()
    };
    eventually(Duration::from_secs(60), "Widget scaled to 0", || async {
        (replicas(ns.0.clone()).await == Some(0)).then_some(())
    })
    .await;
    let so = wait_for_condition(&ns.0, "Active", "False", "ScalerNotActive").await;
    assert_eq!(
        so["status"]["scaleTargetKind"],
        "e2e.eventscale.dev/v1.Widget"
    );
    assert_eq!(so["status"]["originalReplicaCount"], 2);
    produce(&env, &topic, 0, 2);
    eventually(Duration::from_secs(60), "Widget activated to 1", || async {
        (replicas(ns.0.clone()).await == Some(1)).then_some(())
    })
    .await;
}

/// paused-scale-out: at zero with lag, the target is not activated (and the HPA may not
/// scale up); removing the annotation activates it.
#[tokio::test]
async fn paused_scale_out_holds_activation() {
    let ns = Namespace::create("e2e-pause-out");
    let (env, topic, _) = setup(&ns.0, 1, "  minReplicaCount: 0\n  cooldownPeriod: 0");
    wait_for_replicas(&ns.0, "web", 0).await;
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledobject",
        "web",
        "autoscaling.keda.sh/paused-scale-out=true",
    ]);
    assert!(ok, "{err}");
    let hpas = hpa_api(client().await, &ns.0);
    eventually(Duration::from_secs(60), "scaleUp disabled", || async {
        let h = hpas.get_opt("keda-hpa-web").await.ok().flatten()?;
        (h.data["spec"]["behavior"]["scaleUp"]["selectPolicy"] == "Disabled").then_some(())
    })
    .await;
    produce(&env, &topic, 0, 3);
    wait_for_condition(&ns.0, "Active", "True", "ScalerActive").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client().await, &ns.0);
    let d = deployments.get("web").await.expect("Deployment");
    assert_eq!(
        d.spec.and_then(|s| s.replicas),
        Some(0),
        "not activated while scale-out is paused"
    );
    let (ok, _, err) = kubectl(&[
        "-n",
        &ns.0,
        "annotate",
        "scaledobject",
        "web",
        "autoscaling.keda.sh/paused-scale-out-",
    ]);
    assert!(ok, "{err}");
    wait_for_replicas(&ns.0, "web", 1).await;
}
