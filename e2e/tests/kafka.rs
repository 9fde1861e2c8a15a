//! The article's kafka example end to end: the seed ScaledObject (KEDA's YAML, only the
//! broker address, topic and group changed to the local broker's), a consumer group with a
//! lag of 12 against `lagThreshold: '5.0'`, and the real HPA controller scaling the
//! Deployment to ceil(12 / 5) = 3 replicas on eventscale's metric.

use crate::cron::{hpa_api, raw_metric, wait_for_hpa_named};
use crate::{apply, client, wait_for_replicas, Namespace};

use crate::kafka_support;
use crate::seed_behaviour::{seed, seed_deployment};

#[tokio::test]
async fn seed_example_lag_12_scales_to_3() {
    let env = crate::sources::sources_env(&["kafka"]);
    let bootstrap = env["EVENTSCALE_KAFKA_BOOTSTRAP"].clone();
    // One partition per expected consumer, lag 4 + 4 + 4 = 12 (under the cap of 3 × 5).
    let topic = kafka_support::topic_with(&env, 3, &[5, 4, 6]);
    let group = kafka_support::unique("test_group");
    kafka_support::commit(&env, &group, &topic, 0, 1);
    kafka_support::commit(&env, &group, &topic, 1, 0);
    kafka_support::commit(&env, &group, &topic, 2, 2);

    let so = seed("kafka.yaml")
        .replace("kafka:9092", &bootstrap)
        .replace("test_topic_1", &topic)
        .replace("test_group_1", &group);
    assert!(
        so.contains(&bootstrap) && so.contains("lagThreshold: '5.0'"),
        "{so}"
    );
    let deployment = seed_deployment();
    let ns = Namespace::create("e2e-kafka");
    apply(&ns.0, &format!("{deployment}\n---\n{so}"));

    let hpas = hpa_api(client().await, &ns.0);
    let hpa = wait_for_hpa_named(&hpas, "keda-hpa-kafka-consumer").await;
    let metric = format!("s0-kafka-{topic}");
    let ext = &hpa.data["spec"]["metrics"][0]["external"];
    assert_eq!(ext["metric"]["name"], metric.as_str(), "{hpa:?}");
    assert_eq!(ext["target"]["averageValue"], "5");
    // The seed's behavior passes through to the HPA.
    assert_eq!(
        hpa.data["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );

    let list = raw_metric(&ns.0, &metric, "kafka-consumer");
    assert_eq!(list["items"][0]["value"], "12", "{list}");

    // 12 / 5 → 3 replicas, decided by the real HPA controller.
    wait_for_replicas(&ns.0, "go-helloworld", 3).await;

    // The group catches up: the metric reads 0.
    kafka_support::commit(&env, &group, &topic, 0, 5);
    kafka_support::commit(&env, &group, &topic, 1, 4);
    kafka_support::commit(&env, &group, &topic, 2, 6);
    let list = raw_metric(&ns.0, &metric, "kafka-consumer");
    assert_eq!(list["items"][0]["value"], "0", "{list}");
}
