//! The kafka scaler against real Kafka-protocol brokers (tansu) started by
//! `e2e/sources.sh`: plain, SASL/SCRAM and TLS listeners. Records are produced and group
//! offsets committed by an independent client (`e2e/kafka_tool.py`, librdkafka), so the
//! scaler's own client is checked against another implementation's view of the broker.

#[path = "../../../e2e/support/sources.rs"]
mod sources;

#[path = "../../../e2e/support/kafka.rs"]
mod kafka_support;
#[path = "../../../e2e/support/pki.rs"]
mod pki;
mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kafka_support::unique;
use scaler_core::scalers::kafka::KafkaScaler;
use scaler_core::scalers::{Sample, Scaler, ScalerError};

fn env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| sources::sources_env(&["kafka"]))
}

fn tool(args: &[&str]) -> String {
    kafka_support::tool_at(env(), &env()["EVENTSCALE_KAFKA_BOOTSTRAP"], &[], args)
}

fn tool_at(bootstrap: &str, security: &[&str], args: &[&str]) -> String {
    kafka_support::tool_at(env(), bootstrap, security, args)
}

fn topic_with(partitions: usize, records: &[usize]) -> String {
    kafka_support::topic_with(env(), partitions, records)
}

fn commit(group: &str, topic: &str, partition: i32, offset: i64) {
    kafka_support::commit(env(), group, topic, partition, offset)
}

fn scaler_at(
    name: &str,
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Result<KafkaScaler, ScalerError> {
    support::build("kafka", name, meta, auth, KafkaScaler::new)
}

/// A scaler on the plain broker for `group` (and `topic` when not empty).
fn scaler(group: &str, topic: &str, extra: &[(&str, &str)]) -> KafkaScaler {
    let bootstrap = env()["EVENTSCALE_KAFKA_BOOTSTRAP"].clone();
    let mut meta = vec![
        ("bootstrapServers", bootstrap.as_str()),
        ("consumerGroup", group),
    ];
    if !topic.is_empty() {
        meta.push(("topic", topic));
    }
    meta.extend_from_slice(extra);
    scaler_at(&unique("so"), &meta, &[]).expect("valid trigger")
}

async fn sample(s: &KafkaScaler) -> Sample {
    s.sample().await.expect("the broker answers")
}

#[tokio::test]
async fn seed_example_lag_12_threshold_5() {
    // The article's example: lag 12 with lagThreshold '5.0' → value 12 (the HPA makes 3).
    let topic = topic_with(3, &[6, 6, 0]);
    let group = unique("g");
    commit(&group, &topic, 0, 0);
    commit(&group, &topic, 1, 0);
    commit(&group, &topic, 2, 0);
    let s = scaler(&group, &topic, &[("lagThreshold", "5.0")]);
    assert_eq!(s.metric_spec().name, format!("s0-kafka-{topic}"));
    assert_eq!(s.metric_spec().target, "5");
    let v = sample(&s).await;
    assert_eq!((v.value, v.active), (12.0, true));
    // Consumed everything: lag 0, inactive (→ 0 replicas with minReplicaCount 0).
    commit(&group, &topic, 0, 6);
    commit(&group, &topic, 1, 6);
    let v = sample(&s).await;
    assert_eq!((v.value, v.active), (0.0, false));
}

#[tokio::test]
async fn several_partitions_and_no_committed_offset() {
    let topic = topic_with(3, &[5, 2, 4]);
    let group = unique("g");
    // The independent client sees the same watermarks the scaler will.
    assert!(tool(&["watermarks", &topic, "--partition", "0"]).ends_with('5'));
    commit(&group, &topic, 0, 2);
    commit(&group, &topic, 1, 1);
    // Partition 2 has no committed offset: latest policy counts it as 1.
    let v = sample(&scaler(&group, &topic, &[])).await;
    assert_eq!((v.value, v.active), ((3 + 1 + 1) as f64, true));
    // Earliest policy: the whole partition (4).
    let v = sample(&scaler(
        &group,
        &topic,
        &[("offsetResetPolicy", "earliest")],
    ))
    .await;
    assert_eq!((v.value, v.active), ((3 + 1 + 4) as f64, true));
    // scaleToZeroOnInvalidOffset: 0 for it, under both policies.
    for policy in ["latest", "earliest"] {
        let v = sample(&scaler(
            &group,
            &topic,
            &[
                ("offsetResetPolicy", policy),
                ("scaleToZeroOnInvalidOffset", "true"),
            ],
        ))
        .await;
        assert_eq!((v.value, v.active), (4.0, true), "{policy}");
    }
}

#[tokio::test]
async fn a_group_that_never_committed() {
    let topic = topic_with(2, &[3, 0]);
    let group = unique("g");
    // latest: 1 per partition, active; earliest: every record.
    let v = sample(&scaler(&group, &topic, &[])).await;
    assert_eq!((v.value, v.active), (2.0, true));
    let v = sample(&scaler(
        &group,
        &topic,
        &[("offsetResetPolicy", "earliest")],
    ))
    .await;
    assert_eq!((v.value, v.active), (3.0, true));
    let v = sample(&scaler(
        &group,
        &topic,
        &[("scaleToZeroOnInvalidOffset", "true")],
    ))
    .await;
    assert_eq!((v.value, v.active), (0.0, false));
}

#[tokio::test]
async fn activation_is_strictly_above_the_threshold() {
    let topic = topic_with(1, &[4]);
    let group = unique("g");
    commit(&group, &topic, 0, 0);
    let at = sample(&scaler(&group, &topic, &[("activationLagThreshold", "4")])).await;
    assert_eq!((at.value, at.active), (4.0, false));
    let below = sample(&scaler(&group, &topic, &[("activationLagThreshold", "3")])).await;
    assert!(below.active);
}

#[tokio::test]
async fn lag_is_capped_without_idle_consumers() {
    // 2 partitions, lag 10, threshold 1: at most 2 consumers → 2.
    let topic = topic_with(2, &[10, 0]);
    let group = unique("g");
    commit(&group, &topic, 0, 0);
    commit(&group, &topic, 1, 0);
    let v = sample(&scaler(&group, &topic, &[("lagThreshold", "1")])).await;
    assert_eq!((v.value, v.active), (2.0, true));
    let v = sample(&scaler(
        &group,
        &topic,
        &[("lagThreshold", "1"), ("allowIdleConsumers", "true")],
    ))
    .await;
    assert_eq!((v.value, v.active), (10.0, true));
    // Only one partition has lag: one consumer.
    let v = sample(&scaler(
        &group,
        &topic,
        &[("lagThreshold", "1"), ("limitToPartitionsWithLag", "true")],
    ))
    .await;
    assert_eq!((v.value, v.active), (1.0, true));
}

#[tokio::test]
async fn even_distribution_of_partitions() {
    // 6 partitions, lag 7 at threshold 5: 2 consumers would do, and 2 divides 6 → 10.
    let topic = topic_with(6, &[7, 0, 0, 0, 0, 0]);
    let group = unique("g");
    for p in 0..6 {
        commit(&group, &topic, p, 0);
    }
    let v = sample(&scaler(
        &group,
        &topic,
        &[
            ("lagThreshold", "5"),
            ("ensureEvenDistributionOfPartitions", "true"),
        ],
    ))
    .await;
    assert_eq!((v.value, v.active), (10.0, true));
}

#[tokio::test]
async fn partition_limitation() {
    let topic = topic_with(4, &[1, 2, 4, 8]);
    let group = unique("g");
    for p in 0..4 {
        commit(&group, &topic, p, 0);
    }
    let v = sample(&scaler(
        &group,
        &topic,
        &[
            ("partitionLimitation", "1,3"),
            ("allowIdleConsumers", "true"),
        ],
    ))
    .await;
    assert_eq!((v.value, v.active), (10.0, true));
    let v = sample(&scaler(
        &group,
        &topic,
        &[
            ("partitionLimitation", "0-2"),
            ("allowIdleConsumers", "true"),
        ],
    ))
    .await;
    assert_eq!((v.value, v.active), (7.0, true));
    // No partition left: KEDA's error.
    let e = scaler(&group, &topic, &[("partitionLimitation", "9")])
        .sample()
        .await
        .expect_err("no partition");
    assert!(
        e.to_string()
            .contains("expected at least one active partition"),
        "{e}"
    );
}

#[tokio::test]
async fn persistent_lag_is_excluded_from_scaling_but_not_activation() {
    let topic = topic_with(2, &[6, 4]);
    let group = unique("g");
    commit(&group, &topic, 0, 1);
    commit(&group, &topic, 1, 1);
    let bootstrap = env()["EVENTSCALE_KAFKA_BOOTSTRAP"].clone();
    let meta = [
        ("bootstrapServers", bootstrap.as_str()),
        ("consumerGroup", group.as_str()),
        ("topic", topic.as_str()),
        ("excludePersistentLag", "true"),
        ("allowIdleConsumers", "true"),
    ];
    let name = unique("so");
    let s = scaler_at(&name, &meta, &[]).expect("valid");
    // First poll: no history, all lag counts (5 + 3).
    let v = sample(&s).await;
    assert_eq!((v.value, v.active), (8.0, true));
    // Partition 1 moves, partition 0 is stuck: only partition 1's lag (2) counts for
    // scaling, but the stuck lag still keeps the trigger active.
    commit(&group, &topic, 1, 2);
    let v = sample(&s).await;
    assert_eq!((v.value, v.active), (2.0, true));
    // The scaler (built once per ScaledObject runtime, shared by polls and HPA reads)
    // remembers: partition 0 is still stuck, partition 1 moved again (lag 1).
    commit(&group, &topic, 1, 3);
    let v = sample(&s).await;
    assert_eq!((v.value, v.active), (1.0, true));
    // A scaler built anew (another ScaledObject, or this one's runtime rebuilt after a
    // change, as KEDA rebuilds its scalers cache) starts without history: all lag counts.
    let other = scaler_at(&name, &meta, &[]).expect("valid");
    assert_eq!(sample(&other).await.value, 6.0);
}

#[tokio::test]
async fn all_topics_of_a_group() {
    let a = topic_with(1, &[5]);
    let b = topic_with(2, &[3, 2]);
    let group = unique("g");
    commit(&group, &a, 0, 1);
    commit(&group, &b, 0, 1);
    commit(&group, &b, 1, 2);
    let s = scaler(&group, "", &[("allowIdleConsumers", "true")]);
    assert_eq!(
        s.metric_spec().name,
        scaler_core::metric_name::with_index(0, &format!("kafka-{group}-topics"))
    );
    let v = sample(&s).await;
    assert_eq!((v.value, v.active), ((4 + 2) as f64, true));
}

#[tokio::test]
async fn identical_queries_share_one_round_of_requests() {
    let topic = topic_with(3, &[2, 2, 2]);
    let group = unique("g");
    for p in 0..3 {
        commit(&group, &topic, p, 0);
    }
    // `localhost` rather than 127.0.0.1: a client of its own, so the other tests running
    // at the same time (on the shared 127.0.0.1 client) do not add to the count.
    let port = env()["EVENTSCALE_KAFKA_BOOTSTRAP"]
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("host:port");
    let bootstrap = format!("localhost:{port}");
    let meta = [
        ("bootstrapServers", bootstrap.as_str()),
        ("consumerGroup", group.as_str()),
        ("topic", topic.as_str()),
    ];
    let scalers: Vec<KafkaScaler> = (0..20)
        .map(|_| scaler_at(&unique("so"), &meta, &[]).expect("valid"))
        .collect();
    // Warm the connections, then count.
    sample(&scalers[0]).await;
    let client = scalers[0].client().clone();
    assert!(
        scalers
            .iter()
            .all(|s| std::sync::Arc::ptr_eq(s.client(), &client)),
        "one client per bootstrap+security configuration"
    );
    let before = client.requests_sent();
    let results = futures::future::join_all(scalers.iter().map(|s| s.sample())).await;
    let sent = client.requests_sent() - before;
    for r in results {
        assert_eq!(r.expect("value").value, 6.0);
    }
    // One round: FindCoordinator, Metadata, OffsetFetch, ListOffsets (one leader).
    assert_eq!(
        sent, 4,
        "20 identical concurrent queries made {sent} requests"
    );
}

#[tokio::test]
async fn unreachable_broker_is_a_clear_error() {
    let s = scaler_at(
        &unique("so"),
        &[
            ("bootstrapServers", "127.0.0.1:1"),
            ("consumerGroup", "g"),
            ("topic", "t"),
        ],
        &[],
    )
    .expect("valid");
    let started = std::time::Instant::now();
    let e = s.sample().await.expect_err("nothing listens on port 1");
    assert!(
        e.to_string()
            .contains("connecting to kafka broker 127.0.0.1:1"),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A broker that accepts connections and never answers: every question fails within one
/// request timeout, counting the wait for the connection that an earlier question holds
/// (each step had its own timeout once, and the second question took two).
#[tokio::test]
async fn a_silent_broker_fails_each_question_within_one_request_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("its address").to_string();
    // Accept and hold every connection, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let scaler = |topic: &str| {
        scaler_at(
            &unique("so"),
            &[
                ("bootstrapServers", addr.as_str()),
                ("consumerGroup", "g"),
                ("topic", topic),
            ],
            &[],
        )
        .expect("valid")
    };
    let (a, b) = (scaler("a"), scaler("b"));
    let started = std::time::Instant::now();
    let (ra, rb) = tokio::join!(a.sample(), b.sample());
    let took = started.elapsed();
    for r in [ra, rb] {
        let e = r.expect_err("the broker never answers");
        assert!(
            e.to_string()
                .contains(&format!("kafka broker {addr}: no answer within 5s")),
            "{e}"
        );
    }
    assert!(
        took < scaler_core::kafka::REQUEST_TIMEOUT + std::time::Duration::from_secs(2),
        "two questions to a silent broker took {took:?}"
    );
}

#[tokio::test]
async fn missing_topic_is_a_clear_error() {
    let e = scaler(&unique("g"), &unique("missing"), &[])
        .sample()
        .await
        .expect_err("no such topic");
    assert!(e.to_string().contains("error describing topics"), "{e}");
}

/// A one-partition topic at `bootstrap` with `records` records and a new group that
/// committed `committed`.
fn topic_with_lag_at(
    bootstrap: &str,
    security: &[&str],
    records: usize,
    committed: i64,
) -> (String, String) {
    let topic = kafka_support::topic_at(env(), bootstrap, security, 1, &[records]);
    let group = unique("g");
    kafka_support::commit_at(env(), bootstrap, security, (&group, &topic), 0, committed);
    (topic, group)
}

fn sasl_auth<'a>(mechanism: &'a str, password: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("sasl", mechanism),
        ("username", env()["EVENTSCALE_KAFKA_SASL_USER"].as_str()),
        ("password", password),
    ]
}

#[tokio::test]
async fn sasl_plain_and_scram_256_and_512() {
    let e = env();
    let bootstrap = e["EVENTSCALE_KAFKA_SASL_BOOTSTRAP"].as_str();
    let user = e["EVENTSCALE_KAFKA_SASL_USER"].as_str();
    let password = e["EVENTSCALE_KAFKA_SASL_PASSWORD"].as_str();
    let security = [
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--user",
        user,
        "--password",
        password,
    ];
    let (topic, group) = topic_with_lag_at(bootstrap, &security, 3, 1);
    // librdkafka speaks the listener's PLAIN too (the scaler's PLAIN is checked below).
    let plain = [
        "--sasl-mechanism",
        "PLAIN",
        "--user",
        user,
        "--password",
        password,
    ];
    assert_eq!(
        tool_at(
            bootstrap,
            &plain,
            &["watermarks", &topic, "--partition", "0"]
        ),
        "0 3"
    );
    let meta = [
        ("bootstrapServers", bootstrap),
        ("consumerGroup", group.as_str()),
        ("topic", topic.as_str()),
    ];
    for mechanism in ["plaintext", "scram_sha256", "scram_sha512"] {
        let s = scaler_at(&unique("so"), &meta, &sasl_auth(mechanism, password)).expect("valid");
        let v = s
            .sample()
            .await
            .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert_eq!(v.value, 2.0, "{mechanism}");
    }
    for mechanism in ["plaintext", "scram_sha256", "scram_sha512"] {
        let wrong = scaler_at(
            &unique("so"),
            &meta,
            &sasl_auth(mechanism, "not-the-password"),
        )
        .expect("valid");
        let err = wrong.sample().await.expect_err("wrong password");
        assert!(
            err.to_string().contains("SASL authentication"),
            "{mechanism}: {err}"
        );
    }
    // No credentials at all: the broker refuses to answer.
    let none = scaler_at(&unique("so"), &meta, &[]).expect("valid");
    assert!(none.sample().await.is_err());
}

#[tokio::test]
async fn tls_with_the_ca_and_without_it() {
    let e = env();
    let bootstrap = e["EVENTSCALE_KAFKA_TLS_BOOTSTRAP"].as_str();
    let ca = std::fs::read_to_string(&e["EVENTSCALE_KAFKA_TLS_CA"]).expect("CA file");
    let security = ["--ca", e["EVENTSCALE_KAFKA_TLS_CA"].as_str()];
    let (topic, group) = topic_with_lag_at(bootstrap, &security, 4, 1);
    let meta = [
        ("bootstrapServers", bootstrap),
        ("consumerGroup", group.as_str()),
        ("topic", topic.as_str()),
    ];
    let s = scaler_at(&unique("so"), &meta, &[("tls", "enable"), ("ca", &ca)]).expect("valid");
    assert_eq!(s.sample().await.expect("TLS with the CA").value, 3.0);
    // The system's roots do not know the test CA: the handshake fails, clearly.
    let s = scaler_at(&unique("so"), &meta, &[("tls", "enable")]).expect("valid");
    let err = s.sample().await.expect_err("untrusted");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    // unsafeSsl skips verification.
    let mut unsafe_meta = meta.to_vec();
    unsafe_meta.push(("unsafeSsl", "true"));
    let s = scaler_at(&unique("so"), &unsafe_meta, &[("tls", "enable")]).expect("valid");
    assert_eq!(s.sample().await.expect("unsafeSsl").value, 3.0);
    // The broker side closes every connection (its TLS listener restarts; the data behind
    // it stays): the scaler's idle connection is dead, and the next sample reconnects
    // instead of failing.
    let s = scaler_at(&unique("so"), &meta, &[("tls", "enable"), ("ca", &ca)]).expect("valid");
    assert_eq!(s.sample().await.expect("first").value, 3.0);
    let pid_file = std::path::Path::new(&e["EVENTSCALE_SOURCES_DIR"]).join("pids/kafka-tls.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("the TLS listener's PID file");
    let killed = std::process::Command::new("kill")
        .arg(pid.trim())
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sources::sources_env(&["kafka"]);
    assert_eq!(
        s.sample()
            .await
            .expect("reconnected after the broker closed the connection")
            .value,
        3.0
    );
    // A CA that is not PEM is refused when the trigger is built, naming the field.
    let bad = scaler_at(
        &unique("so"),
        &meta,
        &[("tls", "enable"), ("ca", "not a pem")],
    )
    .expect_err("bad CA");
    assert_eq!(bad.param(), Some("ca"), "{bad}");
}

/// The independent client's options for the mutual-TLS listener: its CA, the client
/// certificate and key made by `e2e/sources.sh`, and SCRAM-SHA-256.
fn mtls_security() -> Vec<String> {
    let e = env();
    let path = |f: &str| {
        std::path::Path::new(&e["EVENTSCALE_KAFKA_MTLS_DIR"])
            .join(f)
            .display()
            .to_string()
    };
    [
        "--ca".to_string(),
        path("ca.crt"),
        "--cert".into(),
        path("client.crt"),
        "--key".into(),
        path("client.key"),
        "--sasl-mechanism".into(),
        "SCRAM-SHA-256".into(),
        "--user".into(),
        e["EVENTSCALE_KAFKA_SASL_USER"].clone(),
        "--password".into(),
        e["EVENTSCALE_KAFKA_SASL_PASSWORD"].clone(),
    ]
    .into()
}

/// SASL over mutual TLS: the listener requires a client certificate from its CA, then
/// SCRAM. The CA, certificate and key come as PEM text from the TriggerAuthentication, as
/// KEDA takes them; without the client certificate the handshake is refused.
#[tokio::test]
async fn sasl_over_mutual_tls_with_a_client_certificate() {
    let e = env();
    let bootstrap = e["EVENTSCALE_KAFKA_MTLS_BOOTSTRAP"].as_str();
    let dir = std::path::Path::new(&e["EVENTSCALE_KAFKA_MTLS_DIR"]);
    let pem = |f: &str| std::fs::read_to_string(dir.join(f)).expect("PEM file");
    let password = e["EVENTSCALE_KAFKA_SASL_PASSWORD"].as_str();
    let security = mtls_security();
    let security: Vec<&str> = security.iter().map(String::as_str).collect();
    let (topic, group) = topic_with_lag_at(bootstrap, &security, 5, 2);
    let meta = [
        ("bootstrapServers", bootstrap),
        ("consumerGroup", group.as_str()),
        ("topic", topic.as_str()),
    ];
    let (ca, cert, key) = (pem("ca.crt"), pem("client.crt"), pem("client.key"));
    let mut auth = vec![
        ("tls", "enable"),
        ("ca", ca.as_str()),
        ("cert", cert.as_str()),
        ("key", key.as_str()),
    ];
    auth.extend(sasl_auth("scram_sha512", password));
    let v = scaler_at(&unique("so"), &meta, &auth)
        .expect("valid")
        .sample()
        .await
        .expect("SASL over mutual TLS");
    assert_eq!((v.value, v.active), (3.0, true));
    // No client certificate: refused during the handshake, and the error says TLS.
    let mut no_cert = vec![("tls", "enable"), ("ca", ca.as_str())];
    no_cert.extend(sasl_auth("scram_sha512", password));
    let err = scaler_at(&unique("so"), &meta, &no_cert)
        .expect("valid")
        .sample()
        .await
        .expect_err("no client certificate");
    assert!(err.to_string().contains("TLS"), "{err}");
}

/// Over mutual TLS: the client key encrypted as PKCS#8 (`openssl pkcs8 -topk8 -v2
/// aes-256-cbc`) with its password as keyPassword, decrypted as KEDA does; a wrong
/// password fails the trigger naming keyPassword. And an X.509 version 1 client
/// certificate (`openssl x509 -req` without extensions) signed by the listener's CA,
/// which its OpenSSL takes, as Go's does.
#[tokio::test]
async fn encrypted_client_keys_and_version_1_client_certificates() {
    let e = env();
    let bootstrap = e["EVENTSCALE_KAFKA_MTLS_BOOTSTRAP"].as_str();
    let dir = std::path::Path::new(&e["EVENTSCALE_KAFKA_MTLS_DIR"]);
    let pki = pki::Pki::new("kafka-key-password");
    // The listener's client CA and client key, copied: signing here leaves the shared
    // directory's serial alone.
    for (from, to) in [
        ("ca.crt", "mtls-ca.crt"),
        ("ca.key", "mtls-ca.key"),
        ("client.key", "client.key"),
    ] {
        std::fs::copy(dir.join(from), pki.dir().join(to)).expect("copy");
    }
    let password = e["EVENTSCALE_KAFKA_SASL_PASSWORD"].as_str();
    let security = mtls_security();
    let security: Vec<&str> = security.iter().map(String::as_str).collect();
    let (topic, group) = topic_with_lag_at(bootstrap, &security, 4, 1);
    let meta = [
        ("bootstrapServers", bootstrap),
        ("consumerGroup", group.as_str()),
        ("topic", topic.as_str()),
    ];
    let ca = pki.read("mtls-ca.crt");
    let cert = std::fs::read_to_string(dir.join("client.crt")).expect("client certificate");
    let auth = |cert: &str, key: &str, key_password: Option<&str>| {
        let mut a: Vec<(String, String)> = [
            ("tls", "enable"),
            ("ca", ca.as_str()),
            ("cert", cert),
            ("key", key),
        ]
        .into_iter()
        .chain(key_password.map(|p| ("keyPassword", p)))
        .chain(sasl_auth("scram_sha512", password))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        a.sort();
        a
    };
    let build = |auth: &[(String, String)]| {
        let pairs: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        scaler_at(&unique("so"), &meta, &pairs)
    };

    for options in [&["-v2", "aes-256-cbc"][..], &["-scrypt"][..]] {
        let encrypted = pki.encrypted_key("client", "key-s3cret", options);
        let v = build(&auth(&cert, &encrypted, Some("key-s3cret")))
            .expect("valid")
            .sample()
            .await
            .unwrap_or_else(|e| panic!("{options:?}: {e}"));
        assert_eq!(v.value, 3.0, "{options:?}");
        let err = build(&auth(&cert, &encrypted, Some("not-it"))).expect_err("wrong password");
        assert_eq!(err.param(), Some("keyPassword"), "{err}");
        assert!(
            err.to_string()
                .contains("cannot be decrypted with keyPassword"),
            "{err}"
        );
        // Encrypted, without its password: refused when built, naming the key.
        let err = build(&auth(&cert, &encrypted, None)).expect_err("no password");
        assert_eq!(err.param(), Some("key"), "{err}");
        assert!(
            err.to_string().contains("give its password as keyPassword"),
            "{err}"
        );
    }

    pki.leaf(
        "v1-client",
        "/CN=v1-client",
        "mtls-ca",
        pki::KeyType::Ec,
        2,
        None,
    );
    let v1 = pki.read("v1-client.crt");
    let v = build(&auth(&v1, &pki.read("v1-client.key"), None))
        .expect("valid")
        .sample()
        .await
        .expect("a v1 client certificate");
    assert_eq!(v.value, 3.0);
}
