//! The rabbitmq scaler against a real RabbitMQ (with its management plugin) started by
//! `e2e/sources.sh`, over AMQP and over the management API.

#[path = "../../../e2e/support/sources.rs"]
mod sources;
mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use scaler_core::scalers::rabbitmq::RabbitScaler;
use scaler_core::scalers::{Sample, Scaler, ScalerError};

fn env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| sources::sources_env(&["rabbitmq"]))
}

fn scaler(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> RabbitScaler {
    support::build("rabbitmq", "test", meta, auth, RabbitScaler::new).expect("valid")
}

/// A queue name of this test run's own.
fn queue(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Sample until `want` holds (the management API's figures lag by up to its 1 s
/// statistics interval); the last sample.
async fn until(s: &RabbitScaler, want: impl Fn(&Sample) -> bool) -> Sample {
    let mut last = None;
    for _ in 0..40 {
        let got = s.sample().await.expect("RabbitMQ answers");
        if want(&got) {
            return got;
        }
        last = Some(got);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("never reached: last {last:?}");
}

#[tokio::test]
async fn amqp_queue_length_in_a_vhost() {
    let e = env();
    let q = queue("amqp");
    sources::rabbit_queue(e, "keda-vh", &q, 5);
    let s = scaler(
        &[
            ("queueName", &q),
            (
                "host",
                &format!("{}/keda-vh", e["EVENTSCALE_RABBITMQ_AMQP"]),
            ),
            ("mode", "QueueLength"),
            ("value", "2"),
            ("activationValue", "5"),
        ],
        &[],
    );
    assert_eq!(s.metric_spec().name, format!("s0-rabbitmq-{q}"));
    let got = s.sample().await.expect("answers");
    assert_eq!((got.value, got.active), (5.0, false), "strictly above 5");
    sources::rabbit_publish(e, "keda-vh", &q, 1);
    let got = s.sample().await.expect("answers");
    assert_eq!((got.value, got.active), (6.0, true));
    // vhostName overrides the host's (here none: `/`), credentials from the authentication.
    let host = e["EVENTSCALE_RABBITMQ_AMQP"].replace(
        &format!(
            "{}:{}@",
            e["EVENTSCALE_RABBITMQ_USER"], e["EVENTSCALE_RABBITMQ_PASSWORD"]
        ),
        "nobody:nothing@",
    );
    let s = scaler(
        &[("queueName", &q), ("host", &host), ("vhostName", "keda-vh")],
        &[
            ("username", &e["EVENTSCALE_RABBITMQ_USER"]),
            ("password", &e["EVENTSCALE_RABBITMQ_PASSWORD"]),
        ],
    );
    assert_eq!(s.sample().await.expect("answers").value, 6.0);
    // A queue that does not exist is an error naming it; the next sample still works.
    let missing = scaler(
        &[
            ("queueName", "no-such-queue"),
            (
                "host",
                &format!("{}/keda-vh", e["EVENTSCALE_RABBITMQ_AMQP"]),
            ),
        ],
        &[],
    );
    let err = missing.sample().await.expect_err("404").to_string();
    assert!(
        err.contains("no-such-queue") || err.contains("NOT_FOUND"),
        "{err}"
    );
    assert_eq!(s.sample().await.expect("answers").value, 6.0);
}

#[tokio::test]
async fn http_counts_unacknowledged_unless_excluded_and_amqp_never_does() {
    let e = env();
    let q = queue("unacked");
    sources::rabbit_queue(e, "%2F", &q, 6);
    // A consumer takes two and holds them unacknowledged.
    let conn = lapin::Connection::connect(
        &format!("{}/%2F", e["EVENTSCALE_RABBITMQ_AMQP"]),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("AMQP");
    let ch = conn.create_channel().await.expect("channel");
    for _ in 0..2 {
        let got = ch
            .basic_get(
                q.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .expect("basic.get");
        assert!(got.is_some(), "a message to hold");
    }
    let http = |extra: &[(&'static str, &'static str)]| {
        let mut meta = vec![
            ("queueName", q.as_str()),
            ("host", e["EVENTSCALE_RABBITMQ_HTTP"].as_str()),
        ];
        meta.extend_from_slice(extra);
        scaler(&meta, &[])
    };
    until(&http(&[]), |s| s.value == 6.0).await;
    until(&http(&[("excludeUnacknowledged", "true")]), |s| {
        s.value == 4.0
    })
    .await;
    let amqp = scaler(
        &[("queueName", &q), ("host", &e["EVENTSCALE_RABBITMQ_AMQP"])],
        &[],
    );
    assert_eq!(amqp.sample().await.expect("answers").value, 4.0);
    // MessageRate is active on the rate or on the messages waiting (6 > 0), as in KEDA,
    // whatever the rate of the moment.
    let rate = http(&[("mode", "MessageRate"), ("value", "1")])
        .sample()
        .await
        .expect("a rate");
    assert!(rate.active, "{rate:?}");
    conn.close(200, "".into()).await.expect("close");
}

#[tokio::test]
async fn regex_queues_combined_by_operation() {
    let e = env();
    let prefix = queue("rx");
    sources::rabbit_queue(e, "%2F", &format!("{prefix}-a"), 3);
    sources::rabbit_queue(e, "%2F", &format!("{prefix}-b"), 5);
    let pattern = format!("^{prefix}-.$");
    let s = |op: &'static str| {
        scaler(
            &[
                ("queueName", pattern.as_str()),
                ("host", e["EVENTSCALE_RABBITMQ_HTTP"].as_str()),
                ("useRegex", "true"),
                ("operation", op),
            ],
            &[],
        )
    };
    until(&s("sum"), |v| v.value == 8.0).await;
    until(&s("max"), |v| v.value == 5.0).await;
    until(&s("avg"), |v| v.value == 4.0).await;
    // Asked at the same moment, each operation keeps its own answer.
    let (sum, max, avg) = (s("sum"), s("max"), s("avg"));
    let (a, b, c) = tokio::join!(sum.sample(), max.sample(), avg.sample());
    let values = [a, b, c].map(|r| r.expect("answers").value);
    assert_eq!(values, [8.0, 5.0, 4.0]);
    let err = s("median")
        .sample()
        .await
        .expect_err("no such operation")
        .to_string();
    assert!(
        err.contains("operation mode median must be one of sum, avg, max"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_credentials_and_tls_are_clear_errors() {
    let e = env();
    let wrong =
        e["EVENTSCALE_RABBITMQ_HTTP"].replace(&e["EVENTSCALE_RABBITMQ_PASSWORD"], "wrong-pass");
    let err: ScalerError = scaler(&[("queueName", "q"), ("host", &wrong)], &[])
        .sample()
        .await
        .expect_err("401");
    let err = err.to_string();
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("wrong-pass"),
        "the password is never shown: {err}"
    );
    // AMQP over TLS: with the CA, then without it.
    let q = queue("tls");
    sources::rabbit_queue(e, "%2F", &q, 2);
    let ca = std::fs::read_to_string(&e["EVENTSCALE_RABBITMQ_CA"]).expect("the CA");
    let tls = scaler(
        &[("queueName", &q), ("host", &e["EVENTSCALE_RABBITMQ_AMQPS"])],
        &[("tls", "enable"), ("ca", &ca)],
    );
    assert_eq!(tls.sample().await.expect("TLS with the CA").value, 2.0);
    // With a client certificate, which the server checks and shows on the connection.
    let dir = std::path::Path::new(&e["EVENTSCALE_RABBITMQ_TLS_DIR"]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
    let (cert, key) = (read("client.crt"), read("client.key"));
    let mtls = scaler(
        &[("queueName", &q), ("host", &e["EVENTSCALE_RABBITMQ_AMQPS"])],
        &[
            ("tls", "enable"),
            ("ca", &ca),
            ("cert", &cert),
            ("key", &key),
        ],
    );
    assert_eq!(mtls.sample().await.expect("mutual TLS").value, 2.0);
    // The management API lists a new connection within its statistics interval.
    let mut connections = String::new();
    for _ in 0..20 {
        connections = sources::rabbit_api(e, "GET", "/connections", None);
        if connections.contains("CN=client") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        connections.contains("CN=client"),
        "no connection showed the client certificate: {connections}"
    );
    // unsafeSsl: any server certificate, no CA needed.
    let unsafe_ssl = scaler(
        &[
            ("queueName", &q),
            ("host", &e["EVENTSCALE_RABBITMQ_AMQPS"]),
            ("unsafeSsl", "true"),
        ],
        &[("tls", "enable")],
    );
    assert_eq!(
        unsafe_ssl.sample().await.expect("unverified TLS").value,
        2.0
    );
    // An IPv6 literal is that address: nothing listens on [::1], so it is refused (it was
    // once taken for localhost).
    let v6 = e["EVENTSCALE_RABBITMQ_AMQP"].replace("127.0.0.1", "[::1]");
    let err = scaler(&[("queueName", &q), ("host", &v6)], &[])
        .sample()
        .await
        .expect_err("nothing on [::1]")
        .to_string();
    assert!(
        err.contains("error establishing connection to RabbitMQ"),
        "{err}"
    );
    let untrusted = scaler(
        &[("queueName", &q), ("host", &e["EVENTSCALE_RABBITMQ_AMQPS"])],
        &[],
    );
    let err = untrusted
        .sample()
        .await
        .expect_err("an unknown CA")
        .to_string();
    assert!(
        err.contains("error establishing connection to RabbitMQ"),
        "{err}"
    );
}
