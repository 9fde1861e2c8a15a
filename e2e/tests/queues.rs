//! The postgresql, redis, redis-streams and rabbitmq triggers through the real HPA on the
//! real node: each ScaledObject starts its Deployment of real pods at zero, is activated
//! by work appearing in its source (rows, list items, a consumer group's lag, queued
//! messages), is taken to the replicas KEDA's arithmetic gives by the HPA, and goes back
//! to zero once the work is gone. Credentials come from a Secret through a
//! TriggerAuthentication, as users write them.

use crate::cron::{hpa_api, raw_metric, wait_for_hpa_named};
use crate::sources::{psql, rabbit_api, rabbit_publish, rabbit_queue, redis_cli, sources_env};
use crate::{apply, client, deployment, wait_for_ready, wait_for_replicas, Namespace};

/// A Deployment `worker` of real pods (at 1 until the ScaledObject takes it to zero), a
/// Secret `creds` holding `secret` (`key: value` lines), a TriggerAuthentication `auth`
/// mapping `params` (`parameter: key` lines) from it, and a ScaledObject `worker` with
/// `trigger` (its lines after `- type:`), a 2 s cooldown and minReplicaCount 0.
fn objects(secret: &str, params: &str, trigger: &str) -> String {
    let indent = |text: &str, by: &str| {
        text.lines()
            .map(|l| format!("{by}{l}\n"))
            .collect::<String>()
    };
    format!(
        r#"{deployment}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData:
{secret}---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: auth}}
spec:
  secretTargetRef:
{params}---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: worker}}
spec:
  scaleTargetRef: {{name: worker}}
  pollingInterval: 1
  cooldownPeriod: 2
  minReplicaCount: 0
  maxReplicaCount: 5
  advanced:
    horizontalPodAutoscalerConfig:
      behavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}
  triggers:
  - type: {trigger}  authenticationRef: {{name: auth}}
"#,
        deployment = deployment("worker", 1, &[]),
        // The trigger's lines after the first sit under `- type:`.
        trigger = trigger.replace('\n', "\n  "),
        secret = indent(secret, "  "),
        params = params
            .lines()
            .map(|l| {
                let (parameter, key) = l.split_once(':').expect("parameter: key");
                format!(
                    "  - {{parameter: {parameter}, name: creds, key: {}}}\n",
                    key.trim()
                )
            })
            .collect::<String>(),
    )
}

/// The HPA's metric and target are KEDA's; the value is served; then `work` (which makes
/// the source say `value`) activates the target from zero and the HPA takes it to
/// `replicas` Ready pods; `drain` empties the source and the target returns to zero.
async fn from_zero_and_back(
    ns: &Namespace,
    metric: &str,
    target: &str,
    value: &str,
    replicas: i64,
    work: impl FnOnce(),
    drain: impl FnOnce(),
) {
    // Real pods starting and stopping: a load the k6 walkthrough must not share.
    let _node = crate::NODE_LOAD.read().await;
    // Nothing to do yet: scaled to zero after the cooldown.
    wait_for_replicas(&ns.0, "worker", 0).await;
    let hpa = wait_for_hpa_named(&hpa_api(client().await, &ns.0), "keda-hpa-worker").await;
    let ext = &hpa.data["spec"]["metrics"][0]["external"];
    assert_eq!(ext["metric"]["name"], metric, "{hpa:?}");
    assert_eq!(ext["target"]["averageValue"], target, "{hpa:?}");
    work();
    let list = raw_metric(&ns.0, metric, "worker");
    assert_eq!(list["items"][0]["value"], value, "{list}");
    wait_for_ready(&ns.0, "worker", replicas, None).await;
    drain();
    wait_for_replicas(&ns.0, "worker", 0).await;
}

/// `SELECT COUNT(*)` of queued rows, `targetQueryValue: 5`: 12 rows → 3 replicas.
#[tokio::test]
async fn postgresql_rows_scale_a_deployment_from_zero_and_back() {
    let env = sources_env(&["postgresql"]);
    let ns = Namespace::create("e2e-postgresql");
    let table = format!("jobs_{}", ns.0.replace('-', "_"));
    psql(
        &env,
        &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id serial, state text)"),
    );
    apply(
        &ns.0,
        &objects(
            &format!("password: {}", env["EVENTSCALE_POSTGRES_PASSWORD"]),
            "password: password",
            &format!(
                "postgresql\n  metadata:\n    host: {}\n    port: \"{}\"\n    userName: {}\n    dbName: {}\n    sslmode: disable\n    query: \"SELECT COUNT(*) FROM {table} WHERE state = 'queued'\"\n    targetQueryValue: \"5\"\n",
                env["EVENTSCALE_POSTGRES_HOST"],
                env["EVENTSCALE_POSTGRES_PORT"],
                env["EVENTSCALE_POSTGRES_USER"],
                env["EVENTSCALE_POSTGRES_DB"],
            ),
        ),
    );
    from_zero_and_back(
        &ns,
        "s0-postgresql",
        "5",
        "12",
        3,
        || {
            psql(
                &env,
                &format!("INSERT INTO {table} (state) SELECT 'queued' FROM generate_series(1, 12)"),
            );
        },
        || {
            psql(&env, &format!("UPDATE {table} SET state = 'done'"));
        },
    )
    .await;
    psql(&env, &format!("DROP TABLE {table}"));
}

/// [`objects`] with the test Redis server's ACL user and password from the Secret.
fn redis_objects(env: &std::collections::BTreeMap<String, String>, trigger: &str) -> String {
    objects(
        &format!(
            "username: {}\npassword: {}",
            env["EVENTSCALE_REDIS_USER"], env["EVENTSCALE_REDIS_PASSWORD"]
        ),
        "username: username\npassword: password",
        trigger,
    )
}

/// A list's length, `listLength: 4`, as the ACL user: 9 items → 3 replicas.
#[tokio::test]
async fn redis_list_scales_a_deployment_from_zero_and_back() {
    let env = sources_env(&["redis"]);
    let ns = Namespace::create("e2e-redis");
    let list = format!("jobs-{}", ns.0);
    redis_cli(&env, 0, &["DEL", &list]);
    apply(
        &ns.0,
        &redis_objects(
            &env,
            &format!(
                "redis\n  metadata:\n    address: {}\n    listName: {list}\n    listLength: \"4\"\n",
                env["EVENTSCALE_REDIS_ADDRESS"]
            ),
        ),
    );
    let items: Vec<String> = (0..9).map(|i| i.to_string()).collect();
    from_zero_and_back(
        &ns,
        &format!("s0-redis-{list}"),
        "4",
        "9",
        3,
        || {
            let mut args = vec!["RPUSH", list.as_str()];
            args.extend(items.iter().map(String::as_str));
            redis_cli(&env, 0, &args);
        },
        || {
            redis_cli(&env, 0, &["DEL", &list]);
        },
    )
    .await;
}

/// A consumer group's lag, `lagCount: 3`: 7 entries unread → 3 replicas; read and
/// acknowledged → back to zero.
#[tokio::test]
async fn redis_stream_lag_scales_a_deployment_from_zero_and_back() {
    let env = sources_env(&["redis"]);
    let ns = Namespace::create("e2e-redis-streams");
    let stream = format!("orders-{}", ns.0);
    redis_cli(&env, 0, &["DEL", &stream]);
    redis_cli(
        &env,
        0,
        &["XGROUP", "CREATE", &stream, "workers", "$", "MKSTREAM"],
    );
    apply(
        &ns.0,
        &redis_objects(
            &env,
            &format!(
                "redis-streams\n  metadata:\n    address: {}\n    stream: {stream}\n    consumerGroup: workers\n    lagCount: \"3\"\n",
                env["EVENTSCALE_REDIS_ADDRESS"]
            ),
        ),
    );
    from_zero_and_back(
        &ns,
        &format!("s0-redis-streams-{stream}"),
        "3",
        "7",
        3,
        || {
            for i in 0..7 {
                redis_cli(&env, 0, &["XADD", &stream, "*", "n", &i.to_string()]);
            }
        },
        || {
            redis_cli(
                &env,
                0,
                &[
                    "XREADGROUP",
                    "GROUP",
                    "workers",
                    "w1",
                    "COUNT",
                    "100",
                    "STREAMS",
                    &stream,
                    ">",
                ],
            );
        },
    )
    .await;
    redis_cli(&env, 0, &["DEL", &stream]);
}

/// KEDA's usual RabbitMQ set-up: the AMQP `host` URI (credentials in it) from a Secret,
/// `mode: QueueLength`, `value: 4`: 10 messages → 3 replicas; purged → back to zero.
#[tokio::test]
async fn rabbitmq_queue_scales_a_deployment_from_zero_and_back() {
    let env = sources_env(&["rabbitmq"]);
    let ns = Namespace::create("e2e-rabbitmq");
    let queue = format!("jobs-{}", ns.0);
    rabbit_queue(&env, "%2F", &queue, 0);
    apply(
        &ns.0,
        &objects(
            &format!("host: {}/%2F", env["EVENTSCALE_RABBITMQ_AMQP"]),
            "host: host",
            &format!("rabbitmq\n  metadata:\n    queueName: {queue}\n    mode: QueueLength\n    value: \"4\"\n"),
        ),
    );
    from_zero_and_back(
        &ns,
        &format!("s0-rabbitmq-{queue}"),
        "4",
        "10",
        3,
        || rabbit_publish(&env, "%2F", &queue, 10),
        || {
            rabbit_api(
                &env,
                "DELETE",
                &format!("/queues/%2F/{queue}/contents"),
                None,
            );
        },
    )
    .await;
    rabbit_api(&env, "DELETE", &format!("/queues/%2F/{queue}"), None);
}
