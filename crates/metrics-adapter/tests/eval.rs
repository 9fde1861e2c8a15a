//! `eventscale eval` as a user runs it: the binary, YAML files, an env file, and the real
//! Prometheus servers (one behind basic auth) and Kafka broker of `e2e/sources.sh`, and a
//! real gRPC external scaler on loopback.

#[path = "../../../e2e/support/sources.rs"]
mod sources;

#[path = "../../../e2e/support/kafka.rs"]
mod kafka_support;

#[path = "../../scaler-core/tests/support/external_scaler.rs"]
mod external_scaler;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn eval(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventscale"))
        .arg("eval")
        .args(args)
        .output()
        .expect("eventscale eval");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn manifests(server: &str, password: &str) -> String {
    format!(
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: api, namespace: shop}}
spec:
  scaleTargetRef: {{name: api}}
  maxReplicaCount: 20
  triggers:
  - type: prometheus
    metadata: {{serverAddress: "{server}", query: "vector(35)", threshold: "5", authModes: basic}}
    authenticationRef: {{name: prom}}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: prom, namespace: shop}}
spec:
  secretTargetRef: [{{parameter: password, name: prom, key: password}}]
  env: [{{parameter: username, name: PROM_USER}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: prom, namespace: shop}}
stringData: {{password: "{password}"}}
"#
    )
}

/// The Prometheus behind basic auth, a directory `eventscale-<what>-<pid>` with
/// `good.yaml` (the manifests against it) and `env` (its user): (sources' environment,
/// directory, good.yaml, env).
fn prometheus_files(
    what: &str,
) -> (
    std::collections::BTreeMap<String, String>,
    std::path::PathBuf,
    String,
    String,
) {
    let env = sources::sources_env(&["prometheus"]);
    let dir = std::env::temp_dir().join(format!("eventscale-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        manifests(
            &env["EVENTSCALE_PROMETHEUS_AUTH_URL"],
            &env["EVENTSCALE_PROMETHEUS_PASSWORD"],
        ),
    )
    .expect("write");
    let env_file = dir.join("env");
    std::fs::write(
        &env_file,
        format!("PROM_USER={}\n", env["EVENTSCALE_PROMETHEUS_USER"]),
    )
    .expect("write");
    let (good, env_file) = (good.display().to_string(), env_file.display().to_string());
    (env, dir, good, env_file)
}

#[test]
fn eval_against_real_prometheus_with_trigger_authentication() {
    let (env, dir, good, env_file) = prometheus_files("eval");
    let password = &env["EVENTSCALE_PROMETHEUS_PASSWORD"];

    let (code, out, err) = eval(&["-f", &good, "--env-file", &env_file, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["scaledObject"], "shop/api");
    assert_eq!(v["replicas"], 7, "ceil(35 / 5)");
    assert_eq!(v["active"], true);
    let t = &v["triggers"][0];
    assert_eq!(t["index"], 0);
    assert_eq!(t["type"], "prometheus");
    assert_eq!(t["metricName"], "s0-prometheus");
    assert_eq!(t["value"], 35.0);
    assert_eq!(t["target"], 5.0);
    assert_eq!(t["metricType"], "AverageValue");
    assert_eq!(t["active"], true);
    assert_eq!(t["error"], Value::Null);

    let (code, out, _) = eval(&["-f", &good, "--env-file", &env_file]);
    assert_eq!(code, 0);
    assert!(
        out.contains("ScaledObject shop/api: 7 replicas, active"),
        "{out}"
    );

    // Without the env file the user name is missing: a named error and a non-zero exit.
    let (code, out, err) = eval(&["-f", &good, "-o", "json"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("environment variable \"PROM_USER\" not found"),
        "{err}"
    );

    // An unreachable source: the error says why, non-zero exit.
    let down = dir.join("down.yaml");
    std::fs::write(&down, manifests("http://127.0.0.1:1", password)).expect("write");
    let (code, _, err) = eval(&["-f", &down.display().to_string(), "--env-file", &env_file]);
    assert_eq!(code, 1);
    assert!(err.contains("Connection refused"), "{err}");

    // A file that is not Kubernetes YAML for eval.
    let (code, _, err) = eval(&["-f", &env_file]);
    assert_eq!(code, 2, "bad usage");
    assert!(err.contains("document 1"), "{err}");
    let (code, _, err) = eval(&["-f", "/nonexistent/so.yaml"]);
    assert_eq!(code, 2, "bad usage");
    assert!(err.contains("/nonexistent/so.yaml"), "{err}");

    // scalingModifiers: the formula over the named triggers decides, as the HPA reads
    // composite-metric: (10 + 20) / 2 = 15 against target 5 → 3 replicas.
    let plain = &env["EVENTSCALE_PROMETHEUS_URL"];
    let modifiers = dir.join("modifiers.yaml");
    let so = |formula: &str, second: &str| {
        format!(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: mix, namespace: shop}}
spec:
  scaleTargetRef: {{name: api}}
  advanced: {{scalingModifiers: {{formula: "{formula}", target: "5", activationTarget: "1"}}}}
  triggers:
  - {{type: prometheus, name: a, metadata: {{serverAddress: "{plain}", query: "vector(10)", threshold: "100"}}}}
  - {{type: prometheus, name: b, metadata: {{serverAddress: "{second}", query: "vector(20)", threshold: "100"}}}}
"#
        )
    };
    std::fs::write(&modifiers, so("(a + b) / 2", plain)).expect("write");
    let (code, out, err) = eval(&["-f", &modifiers.display().to_string(), "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(
        (v["replicas"].as_i64(), v["active"].as_bool()),
        (Some(3), Some(true)),
        "{v}"
    );
    let (_, out, _) = eval(&["-f", &modifiers.display().to_string()]);
    assert!(
        out.contains("composite-metric (scalingModifiers): 15"),
        "{out}"
    );
    // Below activationTarget: inactive, 0 replicas (minReplicaCount 0).
    std::fs::write(&modifiers, so("a - b + 10", plain)).expect("write");
    let (code, out, _) = eval(&["-f", &modifiers.display().to_string(), "-o", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(
        (v["replicas"].as_i64(), v["active"].as_bool()),
        (Some(0), Some(false)),
        "{v}"
    );
    // A trigger down: the composite cannot be computed, exit 1.
    std::fs::write(&modifiers, so("(a + b) / 2", "http://127.0.0.1:1")).expect("write");
    let (code, out, err) = eval(&["-f", &modifiers.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("composite-metric (scalingModifiers): ERROR"),
        "{out}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every seed example (KEDA's YAML, unchanged) goes through `eval`: each trigger parses and
/// reaches for its source (which does not exist here); none fails on its metadata or its
/// TriggerAuthentication, and none is a type eventscale lacks.
#[test]
fn seed_examples_evaluate_as_keda_yaml() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir)
        .expect("the repository's examples/")
        .flatten()
    {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml")
            || !text.contains("kind: ScaledObject")
        {
            continue;
        }
        // Keep only the kinds eval reads (the examples also hold Deployments).
        let docs: Vec<&str> = text
            .split("\n---")
            .filter(|d| {
                [
                    "ScaledObject",
                    "TriggerAuthentication",
                    "ClusterTriggerAuthentication",
                    "Secret",
                    "ConfigMap",
                ]
                .iter()
                .any(|k| d.contains(&format!("kind: {k}\n")))
            })
            .collect();
        let tmp =
            std::env::temp_dir().join(format!("eventscale-seed-{}-{}", std::process::id(), seen));
        std::fs::write(&tmp, docs.join("\n---\n")).expect("write");
        let (_, out, err) = eval(&["-f", &tmp.display().to_string(), "-o", "json"]);
        let _ = std::fs::remove_file(&tmp);
        assert!(
            !out.trim().is_empty(),
            "{}: no output; {err}",
            path.display()
        );
        for line in out.lines() {
            let v: Value = serde_json::from_str(line).expect("JSON line");
            for t in v["triggers"].as_array().expect("triggers") {
                let Some(e) = t["error"].as_str() else {
                    continue;
                };
                let reaching_source = [
                    "querying prometheus",
                    "error establishing MySQL connection",
                    "connecting to kafka broker kafka:9092",
                    "needs one",
                ]
                .iter()
                .any(|m| e.contains(m));
                assert!(
                    reaching_source,
                    "{}: trigger {} failed before reaching its source: {e}",
                    path.display(),
                    t["index"]
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} seed examples with ScaledObjects");
}

/// The article's kafka example through `eval`, against the real broker: only the broker
/// address, topic and group are changed. Lag 12 at `lagThreshold: '5.0'` is 3 replicas;
/// once the group has caught up, 0 (the example's minReplicaCount is KEDA's default 0).
#[test]
fn kafka_seed_example_against_the_real_broker() {
    let env = sources::sources_env(&["kafka"]);
    let topic = kafka_support::topic_with(&env, 3, &[5, 4, 6]);
    let group = kafka_support::unique("test_group");
    kafka_support::commit(&env, &group, &topic, 0, 1);
    kafka_support::commit(&env, &group, &topic, 1, 0);
    kafka_support::commit(&env, &group, &topic, 2, 2);
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kafka.yaml");
    let yaml = std::fs::read_to_string(&seed)
        .expect("the seed example")
        .replace("kafka:9092", &env["EVENTSCALE_KAFKA_BOOTSTRAP"])
        .replace("test_topic_1", &topic)
        .replace("test_group_1", &group);
    let file = std::env::temp_dir().join(format!("eventscale-kafka-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml).expect("write");
    let file = file.display().to_string();

    let (code, out, err) = eval(&["-f", &file, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["replicas"], 3, "ceil(12 / 5): {v}");
    assert_eq!(v["active"], true);
    let t = &v["triggers"][0];
    assert_eq!(t["type"], "kafka");
    assert_eq!(t["metricName"], format!("s0-kafka-{topic}"));
    assert_eq!(
        (t["value"].as_f64(), t["target"].as_f64()),
        (Some(12.0), Some(5.0))
    );

    for (p, o) in [(0, 5), (1, 4), (2, 6)] {
        kafka_support::commit(&env, &group, &topic, p, o);
    }
    let (code, out, err) = eval(&["-f", &file, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(
        (v["replicas"].as_i64(), v["active"].as_bool()),
        (Some(0), Some(false)),
        "{v}"
    );
    let _ = std::fs::remove_file(&file);
}

/// `external` and `external-push` triggers: eval asks the external scaler over gRPC (its
/// metric spec, value and activity), as the scale loop does; no push stream is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_asks_external_scalers() {
    use external_scaler::{Options, TestScaler};
    let scaler = TestScaler::start("pending-jobs", 4.0, Options::default()).await;
    scaler.set_for("batch/jobs", 10.0, true);
    let dir = std::env::temp_dir().join(format!("eventscale-eval-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("so.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: jobs, namespace: batch}}
spec:
  scaleTargetRef: {{name: worker}}
  triggers:
  - type: external
    metadata: {{scalerAddress: "{addr}", queue: orders}}
  - type: external-push
    metadata: {{scalerAddress: "{addr}"}}
"#,
            addr = scaler.addr
        ),
    )
    .expect("write");
    let path = file.display().to_string();
    let (code, out, err) = tokio::task::spawn_blocking(move || eval(&["-f", &path, "-o", "json"]))
        .await
        .expect("eval ran");
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["replicas"], 3, "ceil(10 / 4)");
    assert_eq!(v["active"], true);
    for (i, type_) in [(0, "external"), (1, "external-push")] {
        let t = &v["triggers"][i];
        assert_eq!(t["type"], type_);
        assert_eq!(t["metricName"], format!("s{i}-pending-jobs"));
        assert_eq!(t["value"], 10.0);
        assert_eq!(t["target"], 4.0);
        assert_eq!(t["active"], true);
    }
    assert_eq!(scaler.calls("StreamIsActive"), 0);
    assert_eq!(
        scaler.connections(),
        1,
        "both triggers share one connection"
    );
    let sent = &scaler.refs()[0];
    assert_eq!(
        sent.scaler_metadata.get("queue").map(String::as_str),
        Some("orders")
    );

    // The scaler down: a named error and a non-zero exit.
    let addr = scaler.addr;
    drop(scaler);
    let path = file.display().to_string();
    let (code, _, err) = tokio::task::spawn_blocking(move || eval(&["-f", &path]))
        .await
        .expect("eval ran");
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("external scaler {addr}: GetMetricSpec")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A ScaledJob (the seed example, pointed at the real MariaDB): the Jobs a poll would
/// create now with none running, by its strategy (`accurate`, at most 10).
#[test]
fn scaled_job_example_against_the_real_mysql() {
    let env = sources::sources_env(&["mysql"]);
    let table = format!("sj_eval_{}", std::process::id());
    let rows = ["('queued')"; 12].join(",");
    sources::mariadb(
        &env,
        &format!(
            "CREATE TABLE IF NOT EXISTS {table} (id INT AUTO_INCREMENT PRIMARY KEY, state VARCHAR(16)); DELETE FROM {table}; INSERT INTO {table} (state) VALUES {rows}, ('done');"
        ),
    );
    let dsn = sources::mysql_dsn(&env);
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scaled-job.yaml");
    let yaml = std::fs::read_to_string(&seed)
        .expect("the seed example")
        .replace("username:password@tcp(mysql:3306)/db_name", &dsn)
        .replace("FROM tasks", &format!("FROM {table}"));
    let file = std::env::temp_dir().join(format!("eventscale-sj-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml).expect("write");
    let file = file.display().to_string();

    let (code, out, err) = eval(&["-f", &file, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["scaledJob"], "default/task-runner", "{v}");
    assert_eq!(
        (
            v["jobs"].as_i64(),
            v["queueLength"].as_i64(),
            v["maxScale"].as_i64()
        ),
        (Some(10), Some(12), Some(10)),
        "12 queued, at most 10: {v}"
    );
    assert_eq!(
        (v["active"].as_bool(), v["strategy"].as_str()),
        (Some(true), Some("accurate"))
    );
    assert_eq!(v["triggers"][0]["value"].as_f64(), Some(12.0));

    sources::mariadb(
        &env,
        &format!("DELETE FROM {table} WHERE state = 'queued';"),
    );
    let (code, out, err) = eval(&["-f", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ScaledJob default/task-runner: 0 Jobs would be created now (with none running), inactive"),
        "{out}"
    );
    sources::mariadb(&env, &format!("DROP TABLE {table};"));
    let _ = std::fs::remove_file(&file);
}

/// One ScaledObject with a postgresql, a redis, a redis-streams and a rabbitmq trigger,
/// credentials from a Secret through a TriggerAuthentication: eval asks each real source
/// and the replicas are the largest of the four.
#[test]
fn postgresql_redis_and_rabbitmq_triggers_against_the_real_sources() {
    let env = sources::sources_env(&["postgresql", "redis", "rabbitmq"]);
    let id = std::process::id();
    let table = format!("eval_jobs_{id}");
    sources::psql(
        &env,
        &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} AS SELECT generate_series(1, 9) AS id"),
    );
    let (list, stream, queue) = (
        format!("eval-list-{id}"),
        format!("eval-stream-{id}"),
        format!("eval-queue-{id}"),
    );
    sources::redis_cli(&env, 0, &["DEL", &list, &stream]);
    sources::redis_cli(
        &env,
        0,
        &["RPUSH", &list, "a", "b", "c", "d", "e", "f", "g"],
    );
    for _ in 0..3 {
        sources::redis_cli(&env, 0, &["XADD", &stream, "*", "k", "v"]);
    }
    sources::rabbit_queue(&env, "%2F", &queue, 11);
    let yaml = format!(
        r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: worker, namespace: shop}}
spec:
  scaleTargetRef: {{name: worker}}
  maxReplicaCount: 20
  triggers:
  - type: postgresql
    metadata: {{host: "{pg_host}", port: "{pg_port}", userName: "{pg_user}", dbName: "{pg_db}", sslmode: disable, query: "SELECT COUNT(*) FROM {table}", targetQueryValue: "3"}}
    authenticationRef: {{name: pg}}
  - type: redis
    metadata: {{address: "{redis}", listName: "{list}", listLength: "2"}}
  - type: redis-streams
    metadata: {{address: "{redis}", stream: "{stream}", streamLength: "1"}}
  - type: rabbitmq
    metadata: {{queueName: "{queue}", mode: QueueLength, value: "2"}}
    authenticationRef: {{name: amqp}}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: pg, namespace: shop}}
spec:
  secretTargetRef: [{{parameter: password, name: creds, key: pg}}]
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: amqp, namespace: shop}}
spec:
  secretTargetRef: [{{parameter: host, name: creds, key: amqp}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: shop}}
stringData: {{pg: "{pg_password}", amqp: "{amqp}/%2F"}}
"#,
        pg_host = env["EVENTSCALE_POSTGRES_HOST"],
        pg_port = env["EVENTSCALE_POSTGRES_PORT"],
        pg_user = env["EVENTSCALE_POSTGRES_USER"],
        pg_db = env["EVENTSCALE_POSTGRES_DB"],
        pg_password = env["EVENTSCALE_POSTGRES_PASSWORD"],
        redis = env["EVENTSCALE_REDIS_ADDRESS"],
        amqp = env["EVENTSCALE_RABBITMQ_AMQP"],
    );
    let file = std::env::temp_dir().join(format!("eventscale-queues-{id}.yaml"));
    std::fs::write(&file, yaml).expect("write");
    let (code, out, err) = eval(&["-f", &file.display().to_string(), "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let got: Vec<(String, String, Option<f64>, Option<f64>)> = v["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap_or_default().to_string(),
                t["metricName"].as_str().unwrap_or_default().to_string(),
                t["value"].as_f64(),
                t["target"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "postgresql".into(),
                "s0-postgresql".into(),
                Some(9.0),
                Some(3.0)
            ),
            (
                "redis".into(),
                format!("s1-redis-{list}"),
                Some(7.0),
                Some(2.0)
            ),
            (
                "redis-streams".into(),
                format!("s2-redis-streams-{stream}"),
                Some(3.0),
                Some(1.0)
            ),
            (
                "rabbitmq".into(),
                format!("s3-rabbitmq-{queue}"),
                Some(11.0),
                Some(2.0)
            ),
        ],
        "{v}"
    );
    // ceil(11 / 2) is the largest.
    assert_eq!(v["replicas"], 6, "{v}");
    sources::psql(&env, &format!("DROP TABLE {table}"));
    sources::redis_cli(&env, 0, &["DEL", &list, &stream]);
    sources::rabbit_api(&env, "DELETE", &format!("/queues/%2F/{queue}"), None);
    let _ = std::fs::remove_file(&file);
}

/// `eval --explain`: the trace the cluster would serve, built from one poll of the real
/// Prometheus: the rule, the HPA's arithmetic, a source down; never the credentials.
#[test]
fn explain_offline_against_real_prometheus() {
    let (env, dir, good, env_file) = prometheus_files("explain");
    let password = &env["EVENTSCALE_PROMETHEUS_PASSWORD"];
    let explain = |file: &str, extra: &[&str]| {
        let mut args = vec!["-f", file, "--env-file", &env_file, "--explain"];
        args.extend(extra);
        eval(&args)
    };

    // At 2 replicas, 35 over 5: the HPA's ceil(35 / 5) = 7, within [1, 20].
    let (code, out, err) = explain(&good, &["--current-replicas", "2", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let t: Value = serde_json::from_str(out.trim()).expect("one trace");
    assert_eq!(t["kind"], "ScalingTrace");
    assert_eq!(t["servedBy"]["mode"], "eval");
    assert_eq!(t["summary"]["cause"], "Active", "{t}");
    assert_eq!(t["activation"]["rule"], "ActiveHpaScales", "{t}");
    assert_eq!(t["triggers"][0]["value"], 35.0);
    assert_eq!(t["hpa"]["metrics"][0]["formula"], "ceil(35 / 5) = 7", "{t}");
    assert_eq!(t["hpa"]["clamped"], 7, "{t}");
    assert!(
        !out.contains(password.as_str()),
        "a trace shows no credentials"
    );
    // At zero (the default): activated first, to 1.
    let (code, out, _) = explain(&good, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Decision: rule Activate "), "{out}");
    assert!(out.contains("scaled from 0 to 1"), "{out}");
    assert!(!out.contains(password.as_str()));

    // The source down: the cause, the error, and exit 1.
    let down = dir.join("down.yaml");
    std::fs::write(&down, manifests("http://127.0.0.1:1", password)).expect("write");
    let (code, out, err) = explain(&down.display().to_string(), &["--current-replicas", "3"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("Cause:    SourceDown"), "{out}");
    assert!(
        out.contains("no fallback: nothing is scaled, the target is left at 3 replicas"),
        "{out}"
    );
    assert!(out.contains("Connection refused"), "{out}");

    // --current-replicas belongs to --explain.
    let (code, _, err) = eval(&["-f", &good, "--current-replicas", "1"]);
    assert_eq!(code, 2, "{err}");
}
