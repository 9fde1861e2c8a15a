//! Counts summed over every interceptor replica: two real interceptors on loopback that
//! find each other through their admin Service's Endpoints, and a third "replica" that
//! accepts connections and never answers.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use interceptor::peers::PeersConfig;
use interceptor::Config;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use scaler_core::externalscaler::external_scaler_client::ExternalScalerClient;
use scaler_core::externalscaler::{GetMetricsRequest, ScaledObjectRef};
use scaler_core::http_scaled_object::{PortRef, ServiceRef};
use serde_json::json;
use support::*;

/// Endpoints of the admin Service: one subset per replica (each listens on its own port).
fn admin_endpoints(addrs: &[SocketAddr]) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            name: Some("interceptor-admin".into()),
            namespace: Some("eventscale".into()),
            ..ObjectMeta::default()
        },
        subsets: Some(
            addrs
                .iter()
                .map(|a| EndpointSubset {
                    addresses: Some(vec![EndpointAddress {
                        ip: a.ip().to_string(),
                        ..EndpointAddress::default()
                    }]),
                    not_ready_addresses: None,
                    ports: Some(vec![EndpointPort {
                        name: Some("admin".into()),
                        port: i32::from(a.port()),
                        ..EndpointPort::default()
                    }]),
                })
                .collect(),
        ),
    }
}

fn admin_service() -> k8s_openapi::api::core::v1::Service {
    let mut s = service("eventscale", "interceptor-admin", 9090);
    if let Some(p) = s.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        p[0].name = Some("admin".into());
    }
    s
}

async fn value(
    grpc: &mut ExternalScalerClient<tonic::transport::Channel>,
) -> (f64, bool, Duration) {
    let reference = ScaledObjectRef {
        name: "web".into(),
        namespace: "ns".into(),
        scaler_metadata: [("httpScaledObject".to_string(), "web".to_string())].into(),
    };
    let t = Instant::now();
    let v = grpc
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(reference.clone()),
            metric_name: String::new(),
        })
        .await
        .expect("metrics")
        .into_inner()
        .metric_values[0]
        .metric_value_float;
    let took = t.elapsed();
    let active = grpc
        .is_active(reference)
        .await
        .expect("activity")
        .into_inner()
        .result;
    (v, active, took)
}

#[tokio::test]
async fn counts_are_summed_over_replicas_and_a_hung_replica_stalls_nothing() {
    let port = free_port().await;
    let web = Upstream::start("web", 111, port).await;
    let config = Config {
        peers: Some(PeersConfig {
            service: ServiceRef {
                namespace: "eventscale".into(),
                name: "interceptor-admin".into(),
                port: PortRef::Name("admin".into()),
            },
            interval: Duration::from_millis(100),
        }),
        ..Config::default()
    };
    let routes = || {
        vec![route(
            "ns",
            "web",
            json!({"hosts": ["h"], "scaleTargetRef": {"name": "web", "service": "web", "port": 80}}),
        )]
    };
    let a = Running::start(config.clone(), routes()).await;
    let b = Running::start(config, routes()).await;
    // A replica that takes connections and never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let hung_addr = hung.local_addr().expect("its address");
    for i in [&a, &b] {
        i.backends("ns", "web", &[web.addr]);
        i.shared.directory.apply_service(&admin_service());
        i.shared
            .directory
            .apply_endpoints(&admin_endpoints(&[a.admin, b.admin, hung_addr]));
    }
    let connect = |addr: SocketAddr| async move {
        ExternalScalerClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("an endpoint")
                .connect()
                .await
                .expect("the scaler answers"),
        )
    };
    let (mut ga, mut gb) = (connect(a.scaler).await, connect(b.scaler).await);
    assert_eq!(value(&mut gb).await.0, 0.0);
    assert!(!value(&mut gb).await.1, "quiet everywhere");

    // 3 slow requests through a, 2 through b: each replica's scaler answers 5.
    let c = client();
    let mut slow = Vec::new();
    for (i, n) in [(&a, 3), (&b, 2)] {
        for _ in 0..n {
            let (c, url) = (c.clone(), i.url("/?delay_ms=2000"));
            slow.push(tokio::spawn(async move { get(&c, &url, "h").await.0 }));
        }
    }
    let shared = (a.shared.clone(), b.shared.clone());
    eventually(Duration::from_secs(5), "both see 5", || {
        let r = |s: &interceptor::Shared| s.routes.load().by_key.get("ns/web").map(|r| s.value(r));
        r(&shared.0) == Some(5.0) && r(&shared.1) == Some(5.0)
    })
    .await;
    let (va, active_a, took_a) = value(&mut ga).await;
    let (vb, _, took_b) = value(&mut gb).await;
    assert_eq!((va, vb), (5.0, 5.0));
    assert!(active_a);
    assert_eq!(
        a.shared.peers.count(),
        1,
        "b answers; the hung one and a itself are not counted"
    );
    // Answers come from memory: the hung replica costs nothing.
    assert!(
        took_a < Duration::from_millis(100) && took_b < Duration::from_millis(100),
        "{took_a:?} {took_b:?}"
    );
    for s in slow {
        assert_eq!(s.await.expect("joined"), 200);
    }
    eventually(Duration::from_secs(5), "quiet again", || {
        let r = |s: &interceptor::Shared| s.routes.load().by_key.get("ns/web").map(|r| s.value(r));
        r(&shared.0) == Some(0.0) && r(&shared.1) == Some(0.0)
    })
    .await;

    // Traffic on a only: b's scaler says active within a round or two.
    let (c2, url) = (c.clone(), a.url("/?delay_ms=1500"));
    let one = tokio::spawn(async move { get(&c2, &url, "h").await.0 });
    let shared_b = b.shared.clone();
    eventually(Duration::from_secs(2), "b active from a's traffic", || {
        shared_b
            .routes
            .load()
            .by_key
            .get("ns/web")
            .is_some_and(|r| shared_b.active(r))
    })
    .await;
    assert_eq!(one.await.expect("joined"), 200);
    drop(hung);
}
