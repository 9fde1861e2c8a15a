//! The cron trigger end to end: HPA creation, `kubectl get --raw` through the aggregator,
//! and the real HPA controller scaling a Deployment.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;
use serde_json::Value;

use crate::{apply, client, eventually, kubectl, wait_for_ready, wait_for_replicas, Namespace};

/// A zone away from UTC with a half-hour offset, so a wrong zone shows.
pub(crate) const TZ: &str = "Asia/Kolkata";

pub(crate) fn local_now() -> DateTime<Tz> {
    Utc::now().with_timezone(&TZ.parse::<Tz>().expect("known zone"))
}

/// A daily schedule at `t`'s hour and minute, and its metric-name form.
pub(crate) fn daily(t: DateTime<Tz>) -> (String, String) {
    (
        format!("{} {} * * *", t.minute(), t.hour()),
        format!("{}{}xxx", t.minute(), t.hour()),
    )
}

/// A daily window in [`TZ`] from two minutes ago to twenty minutes from now: its start and
/// end schedules, and the metric name KEDA gives a cron trigger with them.
pub(crate) fn open_window() -> (String, String, String) {
    let now = local_now();
    let (start, start_name) = daily(now - TimeDelta::minutes(2));
    let (end, end_name) = daily(now + TimeDelta::minutes(20));
    let metric = format!("s0-cron-Asia-Kolkata-{start_name}-{end_name}");
    (start, end, metric)
}

/// The demo Deployment `web` (1 replica), its Service, and a cron ScaledObject for it.
pub(crate) fn manifests(start: &str, end: &str, tz: &str) -> String {
    format!(
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
  minReplicaCount: 1
  maxReplicaCount: 10
  triggers:
  - type: cron
    metadata:
      timezone: {tz}
      start: "{start}"
      end: "{end}"
      desiredReplicas: "4"
"#,
        deployment = crate::deployment("web", 1, &[]),
        service = crate::service("web"),
    )
}

pub(crate) fn hpa_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    // v1.20 serves autoscaling/v2beta2 only; eventscale chose it by discovery.
    let gvk = GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers"),
    )
}

pub(crate) fn metric_path(ns: &str, metric: &str, so: &str) -> String {
    format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=scaledobject.keda.sh%2Fname%3D{so}"
    )
}

/// `kubectl get --raw` of a metric, parsed.
pub(crate) fn raw_metric(ns: &str, metric: &str, so: &str) -> Value {
    let (ok, out, err) = kubectl(&["get", "--raw", &metric_path(ns, metric, so)]);
    assert!(ok, "kubectl get --raw failed: {err}");
    serde_json::from_str(&out).expect("JSON")
}

/// Wait up to a minute until the metric reads `want` through the aggregator. A failed
/// read fails the test, as [`raw_metric`], unless `failing_reads_expected` (a fallback
/// before its threshold is passed).
pub(crate) async fn wait_for_metric(
    ns: &str,
    metric: &str,
    so: &str,
    want: &str,
    failing_reads_expected: bool,
) {
    let path = metric_path(ns, metric, so);
    eventually(
        Duration::from_secs(60),
        &format!("{metric} = {want}"),
        || {
            let (ok, out, err) = kubectl(&["get", "--raw", &path]);
            assert!(
                ok || failing_reads_expected,
                "kubectl get --raw failed: {err}"
            );
            let value: Value = if ok {
                serde_json::from_str(&out).expect("JSON")
            } else {
                Value::Null
            };
            async move { (value["items"][0]["value"] == want).then_some(()) }
        },
    )
    .await
}

pub(crate) async fn wait_for_hpa(hpas: &Api<DynamicObject>) -> DynamicObject {
    wait_for_hpa_named(hpas, "keda-hpa-web").await
}

pub(crate) async fn wait_for_hpa_named(hpas: &Api<DynamicObject>, name: &str) -> DynamicObject {
    eventually(Duration::from_secs(60), &format!("HPA {name}"), || async {
        hpas.get_opt(name).await.ok().flatten()
    })
    .await
}

fn assert_hpa_spec(hpa: &DynamicObject, metric: &str) {
    let spec = &hpa.data["spec"];
    assert_eq!(spec["minReplicas"], 1, "{spec}");
    assert_eq!(spec["maxReplicas"], 10, "{spec}");
    assert_eq!(spec["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(spec["scaleTargetRef"]["name"], "web");
    let metrics = spec["metrics"].as_array().expect("metrics");
    assert_eq!(metrics.len(), 1, "{spec}");
    assert_eq!(metrics[0]["type"], "External");
    let ext = &metrics[0]["external"];
    assert_eq!(ext["metric"]["name"], metric);
    assert_eq!(
        ext["metric"]["selector"]["matchLabels"]["scaledobject.keda.sh/name"],
        "web"
    );
    assert_eq!(ext["target"]["type"], "AverageValue");
    assert_eq!(ext["target"]["averageValue"], "1");
    let owner = &hpa
        .metadata
        .owner_references
        .as_ref()
        .expect("ownerReferences")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ScaledObject", "web")
    );
}

#[tokio::test]
async fn window_including_now_scales_the_deployment_to_desired_replicas() {
    let ns = Namespace::create("e2e-cron-in");
    let (start, end, metric) = open_window();
    apply(&ns.0, &manifests(&start, &end, TZ));

    let client = client().await;
    let hpa = wait_for_hpa(&hpa_api(client.clone(), &ns.0)).await;
    assert_hpa_spec(&hpa, &metric);

    let list = raw_metric(&ns.0, &metric, "web");
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["items"][0]["metricName"], metric.as_str());
    assert_eq!(list["items"][0]["value"], "4", "{list}");
    // Metric names match case-insensitively.
    let upper = raw_metric(&ns.0, &metric.to_uppercase(), "web");
    assert_eq!(upper["items"][0]["value"], "4", "{upper}");

    // The real HPA controller reads the metric through the aggregator and scales: four
    // pods run on the node, Ready and behind the Service.
    wait_for_replicas(&ns.0, "web", 4).await;
    wait_for_ready(&ns.0, "web", 4, Some("web")).await;
}

#[tokio::test]
async fn window_not_including_now_reports_zero() {
    let ns = Namespace::create("e2e-cron-out");
    let now = local_now();
    let (start, start_name) = daily(now + TimeDelta::minutes(30));
    let (end, end_name) = daily(now + TimeDelta::minutes(40));
    apply(&ns.0, &manifests(&start, &end, TZ));
    let metric = format!("s0-cron-Asia-Kolkata-{start_name}-{end_name}");

    let client = client().await;
    let hpas = hpa_api(client.clone(), &ns.0);
    let hpa = wait_for_hpa(&hpas).await;
    assert_hpa_spec(&hpa, &metric);

    let list = raw_metric(&ns.0, &metric, "web");
    assert_eq!(list["items"][0]["value"], "0", "{list}");

    // The HPA controller read the 0 (so it did run) and kept minReplicas.
    eventually(
        Duration::from_secs(60),
        "the HPA to observe the metric",
        || async {
            let h = hpas.get("keda-hpa-web").await.ok()?;
            let current =
                &h.data["status"]["currentMetrics"][0]["external"]["current"]["averageValue"];
            (current == "0").then_some(())
        },
    )
    .await;
    let d: Deployment = Api::namespaced(client, &ns.0)
        .get("web")
        .await
        .expect("deployment");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(1));
}

#[tokio::test]
async fn invalid_time_zone_is_reported_and_served_as_a_status_error() {
    let ns = Namespace::create("e2e-cron-bad");
    apply(
        &ns.0,
        &manifests("0 8 * * *", "0 18 * * *", "Mars/Olympus_Mons"),
    );

    // The ScaledObject says what is wrong, naming the field.
    let message = eventually(
        Duration::from_secs(60),
        "Ready=False on the ScaledObject",
        || async {
            let (ok, out, _) = kubectl(&["-n", &ns.0, "get", "scaledobject", "web", "-o", "json"]);
            let so: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            let ready = so["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "False")?
                .clone();
            assert_eq!(ready["reason"], "ScaledObjectCheckFailed");
            ready["message"].as_str().map(str::to_string)
        },
    )
    .await;
    assert!(
        message.contains("spec.triggers[0].metadata.timezone"),
        "{message}"
    );
    assert!(message.contains("Mars/Olympus_Mons"), "{message}");

    // A Warning Event says it too.
    eventually(
        Duration::from_secs(30),
        "a ScaledObjectCheckFailed Warning event",
        || async {
            let (_, out, _) = kubectl(&["-n", &ns.0, "get", "events", "-o", "json"]);
            let events: Value = serde_json::from_str(&out).ok()?;
            events["items"]
                .as_array()?
                .iter()
                .any(|e| e["reason"] == "ScaledObjectCheckFailed" && e["type"] == "Warning")
                .then_some(())
        },
    )
    .await;

    // No HPA is created for an invalid object.
    let client = client().await;
    assert!(hpa_api(client, &ns.0)
        .get_opt("keda-hpa-web")
        .await
        .expect("get")
        .is_none());

    // A metric read answers with a Status error that names the problem.
    let (ok, _, err) = kubectl(&[
        "get",
        "--raw",
        &metric_path(&ns.0, "s0-cron-whatever", "web"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("InternalError") && err.contains("unknown time zone Mars/Olympus_Mons"),
        "{err}"
    );

    // An unknown ScaledObject is a 404 Status.
    let (ok, _, err) = kubectl(&["get", "--raw", &metric_path(&ns.0, "s0-cron-x", "missing")]);
    assert!(!ok);
    assert!(err.contains("NotFound") && err.contains("missing"), "{err}");

    // A selector that names no ScaledObject is a 400.
    let (ok, _, err) = kubectl(&[
        "get",
        "--raw",
        &format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/s0-cron-x?labelSelector=app%3Dweb",
            ns.0
        ),
    ]);
    assert!(!ok);
    assert!(
        err.contains("BadRequest") && err.contains("scaledObject name is not specified"),
        "{err}"
    );
}

#[tokio::test]
async fn discovery_lists_the_placeholder_resource() {
    let (ok, out, err) = kubectl(&["get", "--raw", "/apis/external.metrics.k8s.io/v1beta1"]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["resources"][0]["name"], "externalmetrics");
    assert_eq!(list["resources"][0]["kind"], "ExternalMetricValueList");
}
