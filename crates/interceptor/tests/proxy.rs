//! The interceptor against real HTTP servers on loopback: routing, forwarding, cold start,
//! failures, the queue bound, balance across pods, upgrades, h2c, drain, and the external
//! scaler protocol it serves.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use interceptor::Config;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn target(name: &str) -> serde_json::Value {
    json!({"name": name, "service": name, "port": 80})
}

/// A pod `web` on 127.0.0.`n` and an interceptor with `config` routing HTTPScaledObject
/// `ns/web` (`spec`, its target added) to it.
async fn one_pod_behind(n: u8, config: Config, mut spec: serde_json::Value) -> (Upstream, Running) {
    let web = Upstream::start("web", n, free_port().await).await;
    spec["scaleTargetRef"] = target("web");
    let i = Running::start(config, vec![route("ns", "web", spec)]).await;
    i.backends("ns", "web", &[web.addr]);
    (web, i)
}

/// A pod `web` on 127.0.0.`n` and an interceptor routing host `h` to it.
async fn one_pod_behind_h(n: u8) -> (Upstream, Running) {
    one_pod_behind(n, Config::default(), json!({"hosts": ["h"]})).await
}

#[tokio::test]
async fn requests_route_by_host_path_and_headers_and_the_rest_get_404() {
    let port = free_port().await;
    let web = Upstream::start("web", 11, port).await;
    let api = Upstream::start("api", 12, port).await;
    let canary = Upstream::start("canary", 13, port).await;
    let i = Running::start(
        Config::default(),
        vec![
            route("ns", "web", json!({"hosts": ["example.com", "*.example.org"], "scaleTargetRef": target("web")})),
            route("ns", "api", json!({"hosts": ["example.com"], "pathPrefixes": ["/api"], "scaleTargetRef": target("api")})),
            route("ns", "canary", json!({"hosts": ["example.com"], "pathPrefixes": ["/api"],
                "headers": [{"name": "x-canary", "value": "yes"}], "scaleTargetRef": target("canary")})),
        ],
    )
    .await;
    for (name, up) in [("web", &web), ("api", &api), ("canary", &canary)] {
        i.shared.directory.apply_service(&service("ns", name, 80));
        i.shared
            .directory
            .apply_endpoints(&endpoints("ns", name, &[up.addr]));
    }
    let c = client();
    assert_eq!(
        get(&c, &i.url("/"), "example.com").await.2,
        "hello from web"
    );
    assert_eq!(
        get(&c, &i.url("/"), "Example.COM:8080").await.2,
        "hello from web"
    );
    assert_eq!(
        get(&c, &i.url("/x"), "a.b.example.org").await.2,
        "hello from web"
    );
    assert_eq!(
        get(&c, &i.url("/api/v1"), "example.com").await.2,
        "hello from api"
    );
    assert_eq!(
        get(&c, &i.url("/apiv2"), "example.com").await.2,
        "hello from web"
    );
    let r = c
        .get(i.url("/api"))
        .header("host", "example.com")
        .header("x-canary", "yes")
        .send()
        .await
        .expect("a response");
    assert_eq!(r.text().await.expect("a body"), "hello from canary");
    let (status, _, body) = get(&c, &i.url("/"), "other.test").await;
    assert_eq!((status, body.as_str()), (404, "Not Found\n"));
    assert_eq!(
        get(&c, &i.url("/"), "example.org").await.0,
        404,
        "*.example.org is not example.org"
    );
}

#[tokio::test]
async fn the_pod_sees_the_original_host_and_forwarding_headers_and_the_body() {
    let (web, i) = one_pod_behind(
        21,
        Config::default(),
        json!({"hosts": ["helloworld.jourdain.io"]}),
    )
    .await;
    let c = client();
    let (status, cold, _) = get(&c, &i.url("/hello?x=1"), "helloworld.jourdain.io").await;
    assert_eq!((status, cold.as_str()), (200, "false"));
    let seen = web.seen.lock().expect("seen")[0].clone();
    assert_eq!(seen.path, "/hello?x=1");
    assert_eq!(seen.headers["host"], "helloworld.jourdain.io");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-host"], "helloworld.jourdain.io");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    // A streamed body of 8 MiB comes back whole.
    let big = vec![7u8; 8 << 20];
    let r = c
        .post(i.url("/echo"))
        .header("host", "helloworld.jourdain.io")
        .body(big.clone())
        .send()
        .await
        .expect("a response");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("a body").as_ref(), big.as_slice());
}

#[tokio::test]
async fn a_request_at_zero_is_counted_held_pushed_and_sent_once_a_pod_is_ready() {
    use scaler_core::externalscaler::external_scaler_client::ExternalScalerClient;
    use scaler_core::externalscaler::ScaledObjectRef;

    let port = free_port().await;
    let web = Upstream::start("web", 31, port).await;
    let i = Running::start(
        Config::default(),
        vec![route(
            "default",
            "go-helloworld",
            json!({"host": "helloworld.jourdain.io",
            "targetPendingRequests": 10, "scaleTargetRef": {"deployment": "go-helloworld",
            "service": "go-helloworld", "port": 8080}}),
        )],
    )
    .await;
    i.shared
        .directory
        .apply_service(&service("default", "go-helloworld", 8080));
    assert_eq!(i.queue(false).await, json!({"default/go-helloworld": 0}));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", i.scaler))
        .expect("an endpoint")
        .connect()
        .await
        .expect("the scaler answers");
    let mut grpc = ExternalScalerClient::new(channel);
    let reference = ScaledObjectRef {
        name: "go-helloworld".into(),
        namespace: "default".into(),
        scaler_metadata: [("httpScaledObject".to_string(), "go-helloworld".to_string())].into(),
    };
    let spec = grpc
        .get_metric_spec(reference.clone())
        .await
        .expect("a spec")
        .into_inner();
    assert_eq!(
        spec.metric_specs[0].metric_name,
        "http-default_002Fgo-helloworld"
    );
    assert_eq!(spec.metric_specs[0].target_size_float, 10.0);
    let mut pushes = grpc
        .stream_is_active(reference.clone())
        .await
        .expect("a stream")
        .into_inner();
    let first = pushes.message().await.expect("a push").expect("open");
    assert!(!first.result, "quiet at first");

    let c = client();
    let url = i.url("/");
    let sent = Instant::now();
    let held = tokio::spawn(async move { get(&c, &url, "helloworld.jourdain.io").await });
    let push = tokio::time::timeout(Duration::from_secs(2), pushes.message())
        .await
        .expect("pushed at once")
        .expect("a push")
        .expect("open");
    let pushed_after = sent.elapsed();
    assert!(push.result, "the held request made the route active");
    assert!(
        pushed_after < Duration::from_millis(500),
        "pushed after {pushed_after:?}"
    );
    let detail = i.queue(true).await;
    assert_eq!(detail["default/go-helloworld"]["Concurrency"], 1);
    assert_eq!(detail["default/go-helloworld"]["Held"], 1);
    assert_eq!(i.queue(false).await, json!({"default/go-helloworld": 1}));
    let metrics = grpc
        .get_metrics(scaler_core::externalscaler::GetMetricsRequest {
            scaled_object_ref: Some(reference.clone()),
            metric_name: "http-default_002Fgo-helloworld".into(),
        })
        .await
        .expect("metrics")
        .into_inner();
    // Held requests wake the app but are not its load: the HPA scales on what it serves.
    assert_eq!(metrics.metric_values[0].metric_value_float, 0.0);
    assert!(
        grpc.is_active(reference.clone())
            .await
            .expect("an answer")
            .into_inner()
            .result
    );

    // The pod becomes ready: the held request goes to it, marked as a cold start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    i.shared
        .directory
        .apply_endpoints(&endpoints("default", "go-helloworld", &[web.addr]));
    let (status, cold, body) = held.await.expect("joined");
    assert_eq!(
        (status, cold.as_str(), body.as_str()),
        (200, "true", "hello from web")
    );
    assert_eq!(i.queue(false).await, json!({"default/go-helloworld": 0}));
    assert_eq!(
        i.queue(true).await["default/go-helloworld"]["RequestCount"],
        1
    );

    // Quiet again: the stream says so within the refresh.
    let quiet = tokio::time::timeout(Duration::from_secs(3), pushes.message())
        .await
        .expect("pushed")
        .expect("a push")
        .expect("open");
    assert!(!quiet.result);
    // A request the app is serving is the load.
    let slow = {
        let (c, url) = (client(), i.url("/?delay_ms=1000"));
        tokio::spawn(async move { get(&c, &url, "helloworld.jourdain.io").await })
    };
    let in_web = web.in_flight.clone();
    eventually(Duration::from_secs(5), "served", || {
        in_web.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let metrics = grpc
        .get_metrics(scaler_core::externalscaler::GetMetricsRequest {
            scaled_object_ref: Some(reference.clone()),
            metric_name: String::new(),
        })
        .await
        .expect("metrics")
        .into_inner();
    assert_eq!(metrics.metric_values[0].metric_value_float, 1.0);
    assert_eq!(
        metrics.metric_values[0].metric_name,
        "http-default_002Fgo-helloworld"
    );
    assert_eq!(i.queue(true).await["default/go-helloworld"]["Serving"], 1);
    assert_eq!(slow.await.expect("joined").0, 200);

    let unknown = ScaledObjectRef {
        name: "nope".into(),
        namespace: "default".into(),
        scaler_metadata: Default::default(),
    };
    let e = grpc.get_metric_spec(unknown).await.expect_err("not routed");
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("default/nope"), "{}", e.message());
}

#[tokio::test]
async fn a_cold_start_that_takes_too_long_gets_504_or_the_failover() {
    let port = free_port().await;
    let sorry = Upstream::start("sorry", 41, port).await;
    let i = Running::start(
        Config::default(),
        vec![
            route("ns", "slow", json!({"hosts": ["slow.test"], "scaleTargetRef": target("slow"),
                "timeouts": {"conditionWait": "300ms"}})),
            route("ns", "fo", json!({"hosts": ["fo.test"], "scaleTargetRef": target("fo"),
                "coldStartTimeoutFailoverRef": {"service": "sorry", "port": 80, "timeoutSeconds": 1}})),
        ],
    )
    .await;
    i.shared
        .directory
        .apply_service(&service("ns", "sorry", 80));
    i.shared
        .directory
        .apply_endpoints(&endpoints("ns", "sorry", &[sorry.addr]));
    let c = client();
    let t = Instant::now();
    let (status, cold, body) = get(&c, &i.url("/"), "slow.test").await;
    assert_eq!((status, cold.as_str()), (504, "true"), "{body}");
    assert!(body.contains("no ready endpoint of ns/slow"), "{body}");
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(3));
    let t = Instant::now();
    let (status, _, body) = get(&c, &i.url("/"), "fo.test").await;
    assert_eq!((status, body.as_str()), (200, "hello from sorry"));
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "waited for the timeout first"
    );
    assert_eq!(
        sorry.seen.lock().expect("seen")[0].headers["host"],
        "fo.test"
    );
}

#[tokio::test]
async fn upstream_failures_are_502_and_slow_headers_504() {
    let (_web, i) = one_pod_behind(
        51,
        Config::default(),
        json!({"hosts": ["h"], "timeouts": {"responseHeader": "300ms"}}),
    )
    .await;
    let c = client();
    let (status, _, body) = get(&c, &i.url("/close"), "h").await;
    assert_eq!(status, 502, "{body}");
    let (status, _, body) = get(&c, &i.url("/?delay_ms=2000"), "h").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("no response headers within 300ms"), "{body}");
    assert_eq!(get(&c, &i.url("/"), "h").await.0, 200);
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_pod_with_the_same_body() {
    let port = free_port().await;
    let web = Upstream::start("web", 61, port).await;
    // 127.0.0.62 listens on nothing: its connections are refused.
    let dead: std::net::SocketAddr = format!("127.0.0.62:{port}").parse().expect("an address");
    let i = Running::start(
        Config::default(),
        vec![route(
            "ns",
            "web",
            json!({"hosts": ["h"], "scaleTargetRef": target("web")}),
        )],
    )
    .await;
    i.backends("ns", "web", &[web.addr, dead]);
    let c = client();
    for n in 0..20 {
        let r = c
            .post(i.url("/echo"))
            .header("host", "h")
            .body(format!("body {n}"))
            .send()
            .await
            .expect("a response");
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.expect("a body"), format!("body {n}"));
    }
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_memory_stays_bounded() {
    let i = Running::start(
        Config {
            max_held_per_route: 5,
            ..Config::default()
        },
        vec![route(
            "ns",
            "web",
            json!({"hosts": ["h"], "scaleTargetRef": target("web"),
            "timeouts": {"conditionWait": "2s"}}),
        )],
    )
    .await;
    let c = client();
    let held: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (c.clone(), i.url("/"));
            tokio::spawn(async move { get(&c, &url, "h").await.0 })
        })
        .collect();
    let shared = i.shared.clone();
    eventually(Duration::from_secs(5), "5 held", || {
        shared.routes.load().by_key["ns/web"].counts.held() == 5
    })
    .await;
    let r = c
        .get(i.url("/"))
        .header("host", "h")
        .send()
        .await
        .expect("a response");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    for h in held {
        assert_eq!(h.await.expect("joined"), 504);
    }
}

#[tokio::test]
async fn requests_spread_over_every_ready_pod_by_outstanding_requests() {
    let port = free_port().await;
    let a = Upstream::start("a", 71, port).await;
    let b = Upstream::start("b", 72, port).await;
    let i = Running::start(
        Config::default(),
        vec![route(
            "ns",
            "web",
            json!({"hosts": ["h"], "scaleTargetRef": target("web")}),
        )],
    )
    .await;
    i.backends("ns", "web", &[a.addr]);
    let c = client();
    // 20 slow requests on the one pod, then a second pod: the next 20 all go to it.
    let first: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (c.clone(), i.url("/?delay_ms=1500"));
            tokio::spawn(async move { get(&c, &url, "h").await.2 })
        })
        .collect();
    let in_a = a.in_flight.clone();
    eventually(Duration::from_secs(5), "20 at a", || {
        in_a.load(Ordering::SeqCst) == 20
    })
    .await;
    i.shared
        .directory
        .apply_endpoints(&endpoints("ns", "web", &[a.addr, b.addr]));
    let second: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (c.clone(), i.url("/?delay_ms=500"));
            tokio::spawn(async move { get(&c, &url, "h").await.2 })
        })
        .collect();
    let mut bodies = Vec::new();
    for h in second {
        bodies.push(h.await.expect("joined"));
    }
    assert_eq!(tally(bodies), [("hello from b".to_string(), 20)].into());
    for h in first {
        assert_eq!(h.await.expect("joined"), "hello from a");
    }
    // Held requests released together spread too: 40 wait at zero, then two pods appear.
    i.shared
        .directory
        .apply_endpoints(&endpoints("ns", "web", &[]));
    let held: Vec<_> = (0..40)
        .map(|_| {
            let (c, url) = (c.clone(), i.url("/?delay_ms=300"));
            tokio::spawn(async move { get(&c, &url, "h").await.2 })
        })
        .collect();
    let shared = i.shared.clone();
    eventually(Duration::from_secs(5), "40 held", || {
        shared.routes.load().by_key["ns/web"].counts.held() == 40
    })
    .await;
    i.shared
        .directory
        .apply_endpoints(&endpoints("ns", "web", &[a.addr, b.addr]));
    let mut bodies = Vec::new();
    for h in held {
        bodies.push(h.await.expect("joined"));
    }
    let t = tally(bodies);
    assert_eq!(t.values().sum::<usize>(), 40);
    assert!(t.values().all(|n| (15..=25).contains(n)), "{t:?}");
}

#[tokio::test]
async fn websocket_upgrades_and_h2c_pass_through() {
    let (web, i) = one_pod_behind_h(81).await;

    let mut s = tokio::net::TcpStream::connect(i.proxy)
        .await
        .expect("connected");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("written");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping over the upgraded connection")
        .await
        .expect("written");
    let mut echo = [0u8; 33];
    s.read_exact(&mut echo).await.expect("the echo");
    assert_eq!(&echo, b"ping over the upgraded connection");

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .expect("a client");
    let r = h2
        .get(i.url("/"))
        .header("host", "h")
        .send()
        .await
        .expect("a response");
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.text().await.expect("a body"), "hello from web");
    let last = web
        .seen
        .lock()
        .expect("seen")
        .last()
        .cloned()
        .expect("seen");
    assert_eq!(last.version, http::Version::HTTP_2, "h2c to the pod too");
}

#[tokio::test]
async fn sigterm_drains_requests_in_flight_and_fails_readiness_first() {
    let (web, mut i) = one_pod_behind(
        91,
        Config {
            drain_delay: Duration::from_millis(500),
            ..Config::default()
        },
        json!({"hosts": ["h"]}),
    )
    .await;
    assert_eq!(i.admin_status("/readyz").await, 200);
    let c = client();
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (c.clone(), i.url("/?delay_ms=1500"));
            tokio::spawn(async move { get(&c, &url, "h").await })
        })
        .collect();
    let in_web = web.in_flight.clone();
    eventually(Duration::from_secs(5), "5 in flight", || {
        in_web.load(Ordering::SeqCst) == 5
    })
    .await;
    i.terminate();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        i.admin_status("/readyz").await,
        503,
        "readiness fails at once"
    );
    assert_eq!(i.admin_status("/livez").await, 200);
    // Still serving during the drain delay.
    assert_eq!(get(&client(), &i.url("/"), "h").await.0, 200);
    for s in slow {
        let (status, _, body) = s.await.expect("joined");
        assert_eq!((status, body.as_str()), (200, "hello from web"));
    }
    tokio::time::timeout(Duration::from_secs(10), &mut i.task)
        .await
        .expect("drained and stopped")
        .expect("no panic");
    assert!(
        tokio::net::TcpStream::connect(i.proxy).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_code() {
    let (_web, i) = one_pod_behind_h(101).await;
    let c = client();
    for _ in 0..3 {
        get(&c, &i.url("/"), "h").await;
    }
    get(&c, &i.url("/"), "nothing").await;
    let text = reqwest::get(format!("http://{}/metrics", i.admin))
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(r#"eventscale_interceptor_requests_total{route="ns/web",code="200"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"eventscale_interceptor_requests_total{route="none",code="404"} 1"#));
    assert!(text.contains(r#"eventscale_interceptor_ready_endpoints{route="ns/web"} 1"#));
    assert!(text.contains("eventscale_interceptor_request_duration_seconds_bucket"));
}
