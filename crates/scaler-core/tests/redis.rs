//! The redis and redis-streams scalers against a real redis-server started by
//! `e2e/sources.sh`.

#[path = "../../../e2e/support/sources.rs"]
mod sources;
mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use scaler_core::scalers::redis::RedisScaler;
use scaler_core::scalers::redis_streams::RedisStreamsScaler;
use scaler_core::scalers::{Sample, Scaler};

fn env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| sources::sources_env(&["redis"]))
}

/// `args` through redis-cli (database `db`), as the default user.
fn cli(db: u32, args: &[&str]) -> String {
    sources::redis_cli(env(), db, args)
}

/// A key of this test run's own.
fn key(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn list_scaler(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> RedisScaler {
    support::build("redis", "test", meta, auth, RedisScaler::new).expect("valid")
}

async fn sample(s: &dyn Scaler) -> Sample {
    s.sample().await.expect("the server answers")
}

#[tokio::test]
async fn a_list_and_keda_lengths_of_other_types() {
    let address = env()["EVENTSCALE_REDIS_ADDRESS"].clone();
    let list = key("jobs");
    cli(0, &["DEL", &list]);
    let s = list_scaler(
        &[
            ("listName", &list),
            ("address", &address),
            ("activationListLength", "2"),
        ],
        &[],
    );
    assert_eq!(s.metric_spec().name, format!("s0-redis-{list}"));
    // A missing key is an empty list.
    let got = sample(&s).await;
    assert_eq!((got.value, got.active), (0.0, false));
    cli(0, &["RPUSH", &list, "a", "b"]);
    let got = sample(&s).await;
    assert_eq!((got.value, got.active), (2.0, false), "strictly above 2");
    cli(0, &["RPUSH", &list, "c"]);
    assert_eq!(sample(&s).await.value, 3.0);
    // Sets, sorted sets and hashes count their members, as in KEDA.
    for (kind, fill) in [
        ("set", vec!["SADD", "x", "1", "2", "3", "4"]),
        (
            "zset",
            vec!["ZADD", "x", "1", "a", "2", "b", "3", "c", "4", "d"],
        ),
        (
            "hash",
            vec!["HSET", "x", "a", "1", "b", "2", "c", "3", "d", "4"],
        ),
    ] {
        let k = key(kind);
        cli(0, &["DEL", &k]);
        let mut args = fill.clone();
        args[1] = &k;
        cli(0, &args);
        let s = list_scaler(&[("listName", &k), ("address", &address)], &[]);
        assert_eq!(sample(&s).await.value, 4.0, "{kind}");
    }
    // A string has no length: an error naming the type.
    let k = key("string");
    cli(0, &["SET", &k, "v"]);
    let s = list_scaler(&[("listName", &k), ("address", &address)], &[]);
    let e = s.sample().await.expect_err("a string").to_string();
    assert!(e.contains("unsupported key type: string"), "{e}");
}

#[tokio::test]
async fn database_index_and_acl_user() {
    let e = env();
    let list = key("db3");
    cli(3, &["DEL", &list]);
    cli(3, &["RPUSH", &list, "a", "b", "c", "d", "e"]);
    let s = list_scaler(
        &[
            ("listName", &list),
            ("address", &e["EVENTSCALE_REDIS_ADDRESS"]),
            ("databaseIndex", "3"),
        ],
        &[
            ("username", &e["EVENTSCALE_REDIS_USER"]),
            ("password", &e["EVENTSCALE_REDIS_PASSWORD"]),
        ],
    );
    assert_eq!(sample(&s).await.value, 5.0);
    // Database 0 has no such list.
    let s0 = list_scaler(
        &[
            ("listName", &list),
            ("address", &e["EVENTSCALE_REDIS_ADDRESS"]),
        ],
        &[],
    );
    assert_eq!(sample(&s0).await.value, 0.0);
    let wrong = list_scaler(
        &[
            ("listName", &list),
            ("address", &e["EVENTSCALE_REDIS_ADDRESS"]),
        ],
        &[
            ("username", &e["EVENTSCALE_REDIS_USER"]),
            ("password", "wrong"),
        ],
    );
    let err = wrong.sample().await.expect_err("refused").to_string();
    assert!(err.contains("connection to redis failed"), "{err}");
    assert!(!err.contains("wrong"), "the password is never shown: {err}");
}

#[tokio::test]
async fn tls_with_the_ca_and_without_it() {
    let e = env();
    let ca = std::fs::read_to_string(&e["EVENTSCALE_REDIS_CA"]).expect("the CA");
    let list = key("tls");
    cli(0, &["DEL", &list]);
    cli(0, &["RPUSH", &list, "a"]);
    let tls = |meta: &[(&str, &str)], auth: &[(&str, &str)]| {
        let mut m = vec![
            ("listName", list.as_str()),
            ("address", e["EVENTSCALE_REDIS_TLS_ADDRESS"].as_str()),
        ];
        m.extend_from_slice(meta);
        list_scaler(&m, auth)
    };
    assert_eq!(
        sample(&tls(&[], &[("tls", "enable"), ("ca", &ca)]))
            .await
            .value,
        1.0
    );
    assert_eq!(
        sample(&tls(&[("enableTLS", "true"), ("unsafeSsl", "true")], &[]))
            .await
            .value,
        1.0
    );
    let err = tls(&[("enableTLS", "true")], &[])
        .sample()
        .await
        .expect_err("unknown CA")
        .to_string();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
}

/// A server that answers slowly (its clients paused for 1.5 s) is waited for: a question
/// has 5 s, not the client library's own 0.5 s.
#[tokio::test]
async fn a_slow_answer_is_waited_for() {
    let address = env()["EVENTSCALE_REDIS_ADDRESS"].clone();
    let list = key("slow");
    cli(0, &["DEL", &list]);
    cli(0, &["RPUSH", &list, "a", "b"]);
    let s = list_scaler(&[("listName", &list), ("address", &address)], &[]);
    assert_eq!(sample(&s).await.value, 2.0, "connected before the pause");
    cli(0, &["CLIENT", "PAUSE", "1500", "ALL"]);
    let started = std::time::Instant::now();
    assert_eq!(sample(&s).await.value, 2.0);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1000),
        "the pause did not hold the answer: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let s = list_scaler(&[("listName", "l"), ("address", "127.0.0.1:1")], &[]);
    let e = s.sample().await.expect_err("nothing listens").to_string();
    assert!(e.contains("connection to redis failed"), "{e}");
}

fn streams_scaler(meta: &[(&str, &str)]) -> RedisStreamsScaler {
    let address = env()["EVENTSCALE_REDIS_ADDRESS"].clone();
    let mut m = vec![("address", address.as_str())];
    m.extend_from_slice(meta);
    support::build("redis-streams", "test", &m, &[], RedisStreamsScaler::new).expect("valid")
}

#[tokio::test]
async fn streams_length_pending_and_lag() {
    let stream = key("orders");
    cli(0, &["DEL", &stream]);
    for i in 0..6 {
        cli(0, &["XADD", &stream, "*", "n", &i.to_string()]);
    }
    let length = streams_scaler(&[("stream", &stream), ("activationLagCount", "5")]);
    assert_eq!(
        length.metric_spec().name,
        format!("s0-redis-streams-{stream}")
    );
    let got = sample(&length).await;
    assert_eq!((got.value, got.active), (6.0, true));
    // A group that read nothing yet: the lag is the whole stream, nothing pending.
    let lag = streams_scaler(&[
        ("stream", &stream),
        ("consumerGroup", "workers"),
        ("lagCount", "2"),
    ]);
    assert_eq!(sample(&lag).await.value, 6.0, "no such group yet: XLEN");
    cli(0, &["XGROUP", "CREATE", &stream, "workers", "0"]);
    assert_eq!(sample(&lag).await.value, 6.0);
    let pending = streams_scaler(&[("stream", &stream), ("consumerGroup", "workers")]);
    assert_eq!(sample(&pending).await.value, 0.0);
    // A consumer reads four: four pending, a lag of two.
    cli(
        0,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "c1",
            "COUNT",
            "4",
            "STREAMS",
            &stream,
            ">",
        ],
    );
    let got = sample(&pending).await;
    assert_eq!((got.value, got.active), (4.0, true));
    assert_eq!(sample(&lag).await.value, 2.0);
    // Acknowledged: nothing pending.
    let ids = cli(0, &["XRANGE", &stream, "-", "+", "COUNT", "4"]);
    for id in ids
        .lines()
        .filter(|l| l.contains('-') && l.chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        cli(0, &["XACK", &stream, "workers", id]);
    }
    let got = sample(&pending).await;
    assert_eq!((got.value, got.active), (0.0, false));
    // No stream at all: every mode reads 0 but pending, which Redis refuses (NOGROUP).
    let gone = key("gone");
    assert_eq!(
        sample(&streams_scaler(&[("stream", &gone)])).await.value,
        0.0
    );
    assert_eq!(
        sample(&streams_scaler(&[
            ("stream", &gone),
            ("consumerGroup", "g"),
            ("lagCount", "1")
        ]))
        .await
        .value,
        0.0
    );
    let e = streams_scaler(&[("stream", &gone), ("consumerGroup", "g")])
        .sample()
        .await
        .expect_err("no group")
        .to_string();
    assert!(e.contains("NOGROUP"), "{e}");
}
