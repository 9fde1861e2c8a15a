//! The `external` and `external-push` triggers against a real gRPC external scaler on
//! loopback (the test support's, speaking KEDA's protocol over HTTP/2, TLS included).

#[path = "support/external_scaler.rs"]
mod external_scaler;

#[path = "../../../e2e/support/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use external_scaler::{Options, TestScaler};
use scaler_core::pools::Pools;
use scaler_core::runtime::{NoSourceFactory, Runtimes, Unobserved, Unwatched};
use scaler_core::scaled_object::ScaleTriggers;
use scaler_core::scalers::external::{ExternalScaler, PushEvent, Pushed, CALL_TIMEOUT};
use scaler_core::scalers::{AuthParams, MetricTargetType, Scaler, ScalerError, TriggerContext};
use scaler_core::ScaledObject;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Trigger `index` of `ns/name`, of `type_`, built with `pools`.
async fn build(
    pools: &Pools,
    type_: &str,
    (ns, name, index): (&str, &str, usize),
    meta: &[(&str, &str)],
    auth: &[(&str, &str)],
) -> Result<ExternalScaler, ScalerError> {
    let trigger = ScaleTriggers {
        type_: type_.into(),
        metadata: map(meta).into(),
        ..Default::default()
    };
    let auth: AuthParams = map(auth);
    ExternalScaler::new(TriggerContext {
        index,
        trigger: &trigger,
        auth: &auth,
        namespace: ns,
        name,
        client: None,
        as_metric_source: false,
        pools,
    })
    .await
}

/// Trigger `index` of `ns/name`, of `type_`, on the scaler at `address`, without TLS.
async fn build_at(
    pools: &Pools,
    type_: &str,
    who: (&str, &str, usize),
    address: &str,
) -> ExternalScaler {
    build(pools, type_, who, &[("scalerAddress", address)], &[])
        .await
        .expect("built")
}

#[tokio::test]
async fn values_activity_names_and_metadata_as_keda_sends_them() {
    let scaler = TestScaler::start("queue-Length", 5.0, Options::default()).await;
    scaler.set(7.5, true);
    let pools = Pools::default();
    let address = scaler.addr.to_string();
    let meta = [("scalerAddress", address.as_str()), ("queue", "orders")];
    let s = build(&pools, "external", ("shop", "worker", 2), &meta, &[])
        .await
        .expect("built");
    assert_eq!(s.scaler_type(), "external");
    let spec = s.metric_spec();
    assert_eq!(
        spec.name, "s2-queue-Length",
        "s<index>-<name>, as KEDA names it"
    );
    assert_eq!(spec.target.value(), 5.0);
    assert_eq!(spec.target_type, MetricTargetType::AverageValue);
    let sample = s.sample().await.expect("sampled");
    assert_eq!((sample.value, sample.active), (7.5, true));
    scaler.set(0.0, false);
    let sample = s.sample().await.expect("sampled");
    assert_eq!((sample.value, sample.active), (0.0, false));
    // GetMetrics gets the scaler's own name, without the index prefix; IsActive follows it.
    assert_eq!(scaler.metric_names(), vec!["queue-Length", "queue-Length"]);
    assert_eq!(scaler.calls("GetMetricSpec"), 1);
    assert_eq!(scaler.calls("GetMetrics"), 2);
    assert_eq!(scaler.calls("IsActive"), 2);
    let r = &scaler.refs()[0];
    assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "worker"));
    let sent: BTreeMap<String, String> = r.scaler_metadata.clone().into_iter().collect();
    assert_eq!(sent, map(&meta));
    // A target given only as the deprecated integer, and metricType Value.
    let trigger = ScaleTriggers {
        type_: "external".into(),
        metadata: map(&meta).into(),
        metric_type: Some("Value".into()),
        ..Default::default()
    };
    let s = ExternalScaler::new(TriggerContext {
        index: 0,
        trigger: &trigger,
        auth: &AuthParams::new(),
        namespace: "shop",
        name: "worker",
        client: None,
        as_metric_source: false,
        pools: &pools,
    })
    .await
    .expect("built");
    assert_eq!(s.metric_spec().target_type, MetricTargetType::Value);
}

#[tokio::test]
async fn bad_parameters_name_the_field() {
    let pools = Pools::default();
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Pairs, Pairs, &str, &str)] = &[
        (&[], &[], "scalerAddress", "missing required parameter"),
        (
            &[("scalerAddress", "no-port")],
            &[],
            "scalerAddress",
            "give host:port",
        ),
        (
            &[("scalerAddress", "a:1"), ("enableTLS", "yes")],
            &[],
            "enableTLS",
            "unable to parse boolean",
        ),
        (
            &[("scalerAddress", "a:1")],
            &[("tlsClientCert", "x")],
            "tlsClientKey",
            "without tlsClientKey",
        ),
        (
            &[("scalerAddress", "a:1")],
            &[("caCert", "not pem")],
            "caCert",
            "certificate",
        ),
    ];
    for (meta, auth, param, words) in cases {
        let e = build(&pools, "external", ("ns", "so", 0), meta, auth)
            .await
            .expect_err(param);
        assert_eq!(e.param(), Some(*param), "{e}");
        assert!(e.to_string().contains(words), "{param}: {e}");
    }
}

#[tokio::test]
async fn a_thousand_scaled_objects_share_one_connection() {
    let scaler = TestScaler::start("m", 1.0, Options::default()).await;
    scaler.set(3.0, true);
    let pools = Pools::default();
    let address = scaler.addr.to_string();
    let mut scalers = Vec::new();
    for i in 0..1000 {
        let name = format!("so-{i}");
        let s = build_at(&pools, "external", ("ns", &name, 0), &address).await;
        scalers.push(s);
    }
    let answers = futures::future::join_all(scalers.iter().map(|s| s.sample())).await;
    assert!(answers
        .iter()
        .all(|a| a.as_ref().is_ok_and(|s| s.value == 3.0)));
    assert_eq!(scaler.connections(), 1, "one connection for every trigger");
    assert_eq!(pools.external.open(), 1);
    // Other TLS settings are another connection; the same address with the same settings
    // given by another trigger type (external-push) is the same one.
    let _push = build_at(&pools, "external-push", ("ns", "p", 0), &address).await;
    assert_eq!(pools.external.open(), 1);
    assert_eq!(scaler.connections(), 1);
    // When the last trigger using it is gone, so is the connection.
    drop(scalers);
    drop(_push);
    assert_eq!(pools.external.open(), 0);
    scaler
        .wait(Duration::from_secs(5), "the connection closed", |s| {
            s.closed() == 1
        })
        .await;
}

#[tokio::test]
async fn a_hung_scaler_fails_its_own_triggers_only() {
    let hung = TestScaler::start("m", 1.0, Options::default()).await;
    let fine = TestScaler::start("m", 1.0, Options::default()).await;
    hung.set(1.0, true);
    fine.set(2.0, true);
    let pools = Pools::default();
    let (ha, fa) = (hung.addr.to_string(), fine.addr.to_string());
    let h = build_at(&pools, "external", ("ns", "h", 0), &ha).await;
    let f = build_at(&pools, "external", ("ns", "f", 0), &fa).await;
    hung.hang(true);
    let started = Instant::now();
    let hung_poll = tokio::spawn(async move { (h.sample().await, started.elapsed()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            f.sample().await.expect("the other scaler answers").value,
            2.0
        );
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let (result, took) = hung_poll.await.expect("joined");
    let e = result.expect_err("the hung scaler's poll fails");
    assert!(
        e.to_string().contains("GetMetrics: no answer within"),
        "{e}"
    );
    assert!(
        took >= CALL_TIMEOUT && took < CALL_TIMEOUT + Duration::from_secs(2),
        "{took:?}"
    );
    // A dead one: refused at once, with the address in the error.
    drop(fine);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = f.sample().await.expect_err("nobody listens");
    assert!(e.to_string().contains(&fa), "{e}");
}

/// The next push event, within `limit`.
async fn next_push(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<PushEvent>,
    limit: Duration,
) -> PushEvent {
    tokio::time::timeout(limit, rx.recv())
        .await
        .expect("a push in time")
        .expect("the sink is open")
}

#[tokio::test]
async fn pushes_arrive_at_once_and_streams_come_back_after_a_loss() {
    let scaler = TestScaler::start("m", 1.0, Options::default()).await;
    let pools = Pools::default();
    let mut rx = pools.external.push.connect().expect("first connect");
    let address = scaler.addr.to_string();
    let s = build_at(&pools, "external-push", ("web", "app", 1), &address).await;
    assert_eq!(s.scaler_type(), "external-push");
    scaler
        .wait(Duration::from_secs(5), "StreamIsActive opened", |s| {
            s.open_streams() == 1
        })
        .await;
    let mut latencies = Vec::new();
    for i in 0..50 {
        let sent = Instant::now();
        scaler.push(Some("web/app"), i % 2 == 0);
        let e = next_push(&mut rx, Duration::from_secs(1)).await;
        latencies.push(e.at.duration_since(sent));
        assert_eq!(
            (e.namespace.as_str(), e.name.as_str(), e.trigger),
            ("web", "app", 1)
        );
        assert_eq!(e.pushed, Pushed::Active(i % 2 == 0));
    }
    latencies.sort();
    println!(
        "push delivery: median {:?}, max {:?}",
        latencies[25], latencies[49]
    );
    assert!(latencies[49] < Duration::from_millis(100), "{latencies:?}");
    // Another ScaledObject's push does not reach this one.
    scaler.push(Some("web/other"), true);
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
        .await
        .is_err());

    // The stream is cut: reopened after KEDA's first backoff (2 s), and pushes flow again.
    scaler.cut_streams();
    scaler
        .wait(Duration::from_secs(1), "the stream closed", |s| {
            s.open_streams() == 0
        })
        .await;
    let cut = Instant::now();
    scaler
        .wait(Duration::from_secs(5), "StreamIsActive reopened", |s| {
            s.open_streams() == 1
        })
        .await;
    let back = cut.elapsed();
    // Its return is reported (pushes sent meanwhile are lost: the trigger must be asked).
    assert_eq!(
        next_push(&mut rx, Duration::from_secs(1)).await.pushed,
        Pushed::Reopened
    );
    assert!(
        back >= Duration::from_millis(1500) && back < Duration::from_secs(4),
        "{back:?}"
    );
    scaler.push(None, true);
    assert_eq!(
        next_push(&mut rx, Duration::from_secs(1)).await.pushed,
        Pushed::Active(true)
    );

    // The scaler's process dies and comes back on the same address.
    let addr = scaler.addr;
    drop(scaler);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scaler = TestScaler::start(
        "m",
        1.0,
        Options {
            addr: Some(addr),
            ..Default::default()
        },
    )
    .await;
    scaler
        .wait(
            Duration::from_secs(10),
            "StreamIsActive reopened on the new process",
            |s| s.open_streams() == 1,
        )
        .await;
    assert_eq!(
        next_push(&mut rx, Duration::from_secs(1)).await.pushed,
        Pushed::Reopened
    );
    scaler.push(None, true);
    assert_eq!(
        next_push(&mut rx, Duration::from_secs(1)).await.pushed,
        Pushed::Active(true)
    );

    // The trigger is gone (its ScaledObject deleted or changed): so is its stream.
    drop(s);
    scaler
        .wait(
            Duration::from_secs(2),
            "the stream closed with its trigger",
            |s| s.open_streams() == 0,
        )
        .await;
}

#[tokio::test]
async fn without_a_listener_no_stream_is_opened() {
    let scaler = TestScaler::start("m", 1.0, Options::default()).await;
    let pools = Pools::default();
    let address = scaler.addr.to_string();
    let _s = build_at(&pools, "external-push", ("web", "app", 0), &address).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(scaler.calls("StreamIsActive"), 0);
    assert_eq!(scaler.calls("StreamMetricSpec"), 0);
}

#[tokio::test]
async fn a_streamed_metric_spec_change_is_reported() {
    let scaler = TestScaler::start(
        "m",
        4.0,
        Options {
            metric_spec_stream: true,
            ..Default::default()
        },
    )
    .await;
    let pools = Pools::default();
    let mut rx = pools.external.push.connect().expect("first connect");
    let address = scaler.addr.to_string();
    let _s = build_at(&pools, "external-push", ("web", "app", 0), &address).await;
    scaler
        .wait(Duration::from_secs(5), "both streams opened", |s| {
            s.open_streams() == 2
        })
        .await;
    // The first spec on the stream is the one built with: nothing to report.
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
        .await
        .is_err());
    scaler.set_metric("m", 8.0);
    let e = next_push(&mut rx, Duration::from_secs(1)).await;
    assert_eq!(e.pushed, Pushed::SpecChanged);
    // Without the stream (an older scaler answers Unimplemented), it is asked once.
    let old = TestScaler::start("m", 4.0, Options::default()).await;
    let oa = old.addr.to_string();
    let _o = build_at(&pools, "external-push", ("web", "old", 0), &oa).await;
    old.wait(Duration::from_secs(5), "StreamIsActive opened", |s| {
        s.open_streams() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(old.calls("StreamMetricSpec"), 1);
}

#[tokio::test]
async fn tls_with_client_certificates() {
    use pki::{KeyType, Pki};
    let pki = Pki::new("external-scaler");
    pki.ca("ca", KeyType::Ec, false);
    pki.ca("other-ca", KeyType::Ec, false);
    let v3 = "subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n";
    pki.leaf("server", "/CN=localhost", "ca", KeyType::Ec, 2, Some(v3));
    pki.leaf("client", "/CN=eventscale", "ca", KeyType::Ec, 2, Some(v3));
    pki.leaf(
        "stranger",
        "/CN=stranger",
        "other-ca",
        KeyType::Ec,
        2,
        Some(v3),
    );
    let scaler = TestScaler::start(
        "m",
        1.0,
        Options {
            tls: Some((pki.read("server.crt"), pki.read("server.key"))),
            client_ca: Some(pki.read("ca.crt")),
            ..Default::default()
        },
    )
    .await;
    scaler.set(6.0, true);
    let pools = Pools::default();
    let address = format!("localhost:{}", scaler.addr.port());
    let meta = [("scalerAddress", address.as_str())];
    let (ca, cert, key) = (
        pki.read("ca.crt"),
        pki.read("client.crt"),
        pki.read("client.key"),
    );
    let s = build(
        &pools,
        "external",
        ("ns", "mtls", 0),
        &meta,
        &[
            ("caCert", &ca),
            ("tlsClientCert", &cert),
            ("tlsClientKey", &key),
        ],
    )
    .await
    .expect("mutual TLS works");
    assert_eq!(s.sample().await.expect("sampled").value, 6.0);
    // No client certificate: the server refuses.
    let e = build(
        &pools,
        "external",
        ("ns", "anon", 0),
        &meta,
        &[("caCert", &ca)],
    )
    .await
    .expect_err("refused without a client certificate");
    assert!(matches!(e, ScalerError::Query(_)), "{e}");
    // A client certificate from another CA: refused too.
    let (sc, sk) = (pki.read("stranger.crt"), pki.read("stranger.key"));
    build(
        &pools,
        "external",
        ("ns", "stranger", 0),
        &meta,
        &[
            ("caCert", &ca),
            ("tlsClientCert", &sc),
            ("tlsClientKey", &sk),
        ],
    )
    .await
    .expect_err("refused with a stranger's certificate");
    // enableTLS without the CA: the server's certificate is not trusted...
    let tls_only = [("scalerAddress", address.as_str()), ("enableTLS", "true")];
    let e = build(
        &pools,
        "external",
        ("ns", "untrusted", 0),
        &tls_only,
        &[("tlsClientCert", &cert), ("tlsClientKey", &key)],
    )
    .await
    .expect_err("an untrusted server");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // ...unless unsafeSsl says not to check it.
    let unsafe_ssl = [
        ("scalerAddress", address.as_str()),
        ("enableTLS", "true"),
        ("unsafeSsl", "true"),
    ];
    let s = build(
        &pools,
        "external",
        ("ns", "unsafe", 0),
        &unsafe_ssl,
        &[("tlsClientCert", &cert), ("tlsClientKey", &key)],
    )
    .await
    .expect("unsafeSsl accepts the server");
    assert_eq!(s.sample().await.expect("sampled").value, 6.0);
    // Plain text to a TLS server fails (no silent downgrade).
    build(&pools, "external", ("ns", "plain", 0), &meta, &[])
        .await
        .expect_err("plain text to a TLS server");
}

fn scaled_object(yaml: &str) -> ScaledObject {
    serde_yaml::from_str(yaml).expect("a ScaledObject")
}

/// A scaler that is down when its ScaledObject is first seen: the trigger's error says so,
/// and once it comes up the trigger is built and answers, without the object changing.
#[tokio::test]
async fn a_scaler_down_at_first_is_built_when_it_comes_up() {
    // A free port nobody listens on yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let runtimes = Runtimes::new(
        Arc::new(NoSourceFactory),
        Arc::new(Unwatched),
        None,
        "keda".into(),
        Arc::new(Unobserved),
    );
    let so = scaled_object(&format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: late, namespace: ns}}\nspec:\n  scaleTargetRef: {{name: app}}\n  triggers:\n  - type: external\n    metadata: {{scalerAddress: \"{addr}\"}}\n"
    ));
    let rt = runtimes.get(&so).await;
    let e = match rt.scaler(0) {
        Some(Err(e)) => e,
        other => panic!("expected a build error, got {other:?}"),
    };
    assert!(e.to_string().contains("GetMetricSpec"), "{e}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    let sample = rt.sample(0).await;
    assert!(sample.result.is_err());
    let scaler = TestScaler::start(
        "late-metric",
        2.0,
        Options {
            addr: Some(addr),
            ..Default::default()
        },
    )
    .await;
    scaler.set(9.0, true);
    let sample = rt.sample(0).await;
    assert_eq!(sample.result.expect("answers now").value, 9.0);
    assert_eq!(sample.metric, "s0-late-metric");
    assert_eq!(runtimes.builds(), 1, "the runtime itself was not rebuilt");
}

/// A scaler that takes the stream call and never answers it: the opening times out, and
/// the stream is opened once the scaler answers again.
#[tokio::test]
async fn a_stream_that_never_opens_is_tried_again() {
    let scaler = TestScaler::start("m", 1.0, Options::default()).await;
    let pools = Pools::default();
    let mut rx = pools.external.push.connect().expect("first connect");
    let address = scaler.addr.to_string();
    let _s = build_at(&pools, "external-push", ("web", "app", 0), &address).await;
    scaler
        .wait(Duration::from_secs(5), "StreamIsActive opened", |s| {
            s.open_streams() == 1
        })
        .await;
    scaler.hang(true);
    scaler.cut_streams();
    // The cut stream had delivered nothing: tried again after the first wait (2 s), and
    // that opening hangs until its timeout.
    scaler
        .wait(
            Duration::from_secs(4),
            "a second StreamIsActive call",
            |s| s.calls("StreamIsActive") == 2,
        )
        .await;
    scaler.hang(false);
    // Timed out after 5 s, then 4 s of backoff: a third call, which opens.
    scaler
        .wait(
            Duration::from_secs(12),
            "StreamIsActive opened again",
            |s| s.open_streams() == 1,
        )
        .await;
    assert_eq!(scaler.calls("StreamIsActive"), 3);
    assert_eq!(
        next_push(&mut rx, Duration::from_secs(1)).await.pushed,
        Pushed::Reopened
    );
}

/// Without StreamMetricSpec, a new target is picked up when the reconcile refreshes the
/// runtime (KEDA asks GetMetricSpec whenever it builds the HPA).
#[tokio::test]
async fn a_new_target_is_picked_up_by_a_refresh() {
    let scaler = TestScaler::start("m", 3.0, Options::default()).await;
    let runtimes = Runtimes::new(
        Arc::new(NoSourceFactory),
        Arc::new(Unwatched),
        None,
        "keda".into(),
        Arc::new(Unobserved),
    );
    let so = scaled_object(&format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: t, namespace: ns}}\nspec:\n  scaleTargetRef: {{name: app}}\n  triggers:\n  - type: external\n    metadata: {{scalerAddress: \"{}\"}}\n",
        scaler.addr
    ));
    let rt = runtimes.get(&so).await;
    let target = |rt: &scaler_core::runtime::Runtime| {
        rt.scaler(0)
            .and_then(Result::ok)
            .map(|s| s.metric_spec().target.value())
    };
    assert_eq!(target(&rt), Some(3.0));
    rt.refresh().await;
    assert_eq!(target(&rt), Some(3.0));
    assert_eq!(scaler.calls("GetMetricSpec"), 2, "asked, unchanged, kept");
    scaler.set_metric("m", 7.0);
    rt.refresh().await;
    assert_eq!(target(&rt), Some(7.0));
}
