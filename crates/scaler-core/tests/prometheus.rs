//! The prometheus scaler against real Prometheus servers started by `e2e/sources.sh`
//! (Debian's prometheus 2.42 on loopback: one plain, one behind basic auth, one on TLS
//! that requires a client certificate).

#[path = "../../../e2e/support/pki.rs"]
mod pki;
#[path = "../../../e2e/support/sources.rs"]
mod sources;
mod support;

use std::sync::OnceLock;

use scaler_core::scalers::prometheus::PrometheusScaler;
use scaler_core::scalers::Scaler;

struct Servers {
    plain: String,
    auth: String,
    user: String,
    password: String,
    tls: String,
    tls_dir: std::path::PathBuf,
}

fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| {
        let env = sources::sources_env(&["prometheus"]);
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("sources.sh env printed no {k}"))
        };
        Servers {
            plain: get("EVENTSCALE_PROMETHEUS_URL"),
            auth: get("EVENTSCALE_PROMETHEUS_AUTH_URL"),
            user: get("EVENTSCALE_PROMETHEUS_USER"),
            password: get("EVENTSCALE_PROMETHEUS_PASSWORD"),
            tls: get("EVENTSCALE_PROMETHEUS_TLS_URL"),
            tls_dir: get("EVENTSCALE_PROMETHEUS_TLS_DIR").into(),
        }
    })
}

/// The tests here share the plain server's request counter: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scaler(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> PrometheusScaler {
    support::build("prometheus", "test", meta, auth, PrometheusScaler::new).expect("valid trigger")
}

fn plain(query: &str, extra: &[(&str, &str)]) -> PrometheusScaler {
    let s = servers();
    let mut meta = vec![
        ("serverAddress", s.plain.as_str()),
        ("query", query),
        ("threshold", "10"),
    ];
    meta.extend_from_slice(extra);
    scaler(&meta, &[])
}

#[tokio::test]
async fn values_activation_and_keda_edge_cases() {
    let _one_at_a_time = SERIAL.lock().await;
    let v = plain("vector(42)", &[]).sample().await.expect("value");
    assert_eq!((v.value, v.active), (42.0, true));
    let v = plain("vector(42)", &[("activationThreshold", "42")])
        .sample()
        .await
        .expect("value");
    assert_eq!(
        (v.value, v.active),
        (42.0, false),
        "activation is strictly greater"
    );
    let v = plain("vector(0.25)", &[]).sample().await.expect("value");
    assert_eq!((v.value, v.active), (0.25, true));

    // Empty result: 0 by default, an error with ignoreNullValues=false.
    let v = plain("vector(1) > 5", &[])
        .sample()
        .await
        .expect("empty is 0");
    assert_eq!((v.value, v.active), (0.0, false));
    let e = plain("vector(1) > 5", &[("ignoreNullValues", "false")])
        .sample()
        .await
        .expect_err("strict");
    assert!(
        e.to_string()
            .contains("target may be lost, the result is empty"),
        "{e}"
    );

    // NaN: 0, or an error.
    let v = plain("vector(0) / 0", &[])
        .sample()
        .await
        .expect("NaN is 0");
    assert_eq!(v.value, 0.0);
    assert!(plain("vector(0) / 0", &[("ignoreNullValues", "false")])
        .sample()
        .await
        .is_err());

    // A range vector (matrix) has `values`, not `value`: KEDA's empty value list.
    let v = plain("vector(5)[1m:30s]", &[("timeout", "1.5s")])
        .sample()
        .await
        .expect("a matrix is 0");
    assert_eq!(v.value, 0.0);
    let e = plain("vector(5)[1m:30s]", &[("ignoreNullValues", "false")])
        .sample()
        .await
        .expect_err("strict");
    assert!(
        e.to_string()
            .contains("target may be lost, the value list is empty"),
        "{e}"
    );

    // Several series.
    let two = r#"label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")"#;
    let e = plain(two, &[]).sample().await.expect_err("two elements");
    assert!(e.to_string().contains("returned multiple elements"), "{e}");

    // A query Prometheus rejects: its status code in the error.
    let e = plain("sum(", &[]).sample().await.expect_err("bad PromQL");
    assert!(
        e.to_string()
            .starts_with("prometheus query api returned error. status: 400"),
        "{e}"
    );

    // Extra parameters and headers reach the server without disturbing the query.
    let v = plain(
        "vector(7)",
        &[
            ("queryParameters", "stats=all"),
            ("customHeaders", "X-Scope-OrgID=tenant"),
        ],
    )
    .sample()
    .await
    .expect("value");
    assert_eq!(v.value, 7.0);
}

#[tokio::test]
async fn basic_auth_and_unreachable_servers() {
    let _one_at_a_time = SERIAL.lock().await;
    let s = servers();
    let meta = [
        ("serverAddress", s.auth.as_str()),
        ("query", "vector(3)"),
        ("threshold", "1"),
    ];
    let good = [
        ("authModes", "basic"),
        ("username", s.user.as_str()),
        ("password", s.password.as_str()),
    ];
    let v = scaler(&meta, &good).sample().await.expect("authenticated");
    assert_eq!(v.value, 3.0);
    let wrong = [
        ("authModes", "basic"),
        ("username", s.user.as_str()),
        ("password", "wrong"),
    ];
    let e = scaler(&meta, &wrong).sample().await.expect_err("401");
    assert!(e.to_string().contains("status: 401"), "{e}");
    // The basic credentials replace a custom Authorization header; one header is sent.
    let mut with_header = meta.to_vec();
    with_header.push(("customHeaders", "Authorization=Bearer nope"));
    let v = scaler(&with_header, &good)
        .sample()
        .await
        .expect("basic wins");
    assert_eq!(v.value, 3.0);
    let e = scaler(&meta, &[])
        .sample()
        .await
        .expect_err("no credentials");
    assert!(e.to_string().contains("status: 401"), "{e}");

    // Nothing listens on port 1: a connection error naming the server, quickly.
    let started = std::time::Instant::now();
    let e = scaler(
        &[
            ("serverAddress", "http://127.0.0.1:1"),
            ("query", "up"),
            ("threshold", "1"),
            ("timeout", "1000"),
        ],
        &[],
    )
    .sample()
    .await
    .expect_err("unreachable");
    assert!(
        e.to_string()
            .contains("querying prometheus at http://127.0.0.1:1/"),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Prometheus's own count of `/api/v1/query` requests, read from its `/metrics` (which is
/// not itself a query).
/// Fifty ScaledObjects asking the same question at the same moment cost Prometheus one
/// request; fifty different questions cost fifty.
#[tokio::test]
async fn identical_concurrent_queries_are_coalesced() {
    let _one_at_a_time = SERIAL.lock().await;
    let base = servers().plain.clone();
    let same: Vec<PrometheusScaler> = (0..50).map(|_| plain("vector(11)", &[])).collect();
    let before = sources::prometheus_query_requests(&base);
    let results = futures::future::join_all(same.iter().map(|s| s.sample())).await;
    let after = sources::prometheus_query_requests(&base);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|s| s.value == 11.0)),
        "{results:?}"
    );
    let identical = after - before;

    // None of them the question above: an identical query in the same second would
    // share its answer.
    let queries: Vec<String> = (0..50).map(|i| format!("vector({})", 100 + i)).collect();
    let different: Vec<PrometheusScaler> = queries.iter().map(|q| plain(q, &[])).collect();
    let before = sources::prometheus_query_requests(&base);
    let results = futures::future::join_all(different.iter().map(|s| s.sample())).await;
    let after = sources::prometheus_query_requests(&base);
    assert!(results.iter().all(Result::is_ok));
    let distinct = after - before;
    println!(
        "prometheus requests for 50 identical queries: {identical}; for 50 distinct: {distinct}"
    );
    // Other clients of this server (an e2e cluster's HPAs reading leftover ScaledObjects)
    // may add a stray request to either window.
    assert!(
        (1.0..=2.0).contains(&identical),
        "one request for fifty identical queries, got {identical}"
    );
    assert!(
        distinct >= 50.0,
        "distinct queries are not merged, got {distinct}"
    );
}

/// `authModes: tls` against a server that requires a client certificate: the CA, the
/// certificate and the key come as PEM text from the authentication parameters, as KEDA
/// takes them; `unsafeSsl` skips checking the server; each missing piece is a clear error.
#[tokio::test]
async fn tls_client_certificates_and_unsafe_ssl() {
    let s = servers();
    let pem = |name: &str| {
        std::fs::read_to_string(s.tls_dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", s.tls_dir.join(name).display()))
    };
    let (ca, cert, key) = (pem("ca.crt"), pem("client.crt"), pem("client.key"));
    let meta = |extra: &[(&'static str, &'static str)]| {
        let mut m = vec![
            ("serverAddress", s.tls.as_str()),
            ("query", "vector(8)"),
            ("threshold", "2"),
        ];
        m.extend_from_slice(extra);
        m
    };
    let tls_auth = |with_ca: bool| {
        let mut a = vec![
            ("authModes", "tls"),
            ("cert", cert.as_str()),
            ("key", key.as_str()),
        ];
        if with_ca {
            a.push(("ca", ca.as_str()));
        }
        a
    };

    // The CA verifies the server; the client certificate satisfies it.
    let v = scaler(&meta(&[]), &tls_auth(true))
        .sample()
        .await
        .expect("mutual TLS");
    assert_eq!((v.value, v.active), (8.0, true));
    // Without the CA the server's certificate is unknown, unless unsafeSsl.
    let e = scaler(&meta(&[]), &tls_auth(false))
        .sample()
        .await
        .expect_err("unknown issuer")
        .to_string();
    assert!(e.contains("invalid peer certificate: UnknownIssuer"), "{e}");
    let v = scaler(&meta(&[("unsafeSsl", "true")]), &tls_auth(false))
        .sample()
        .await
        .expect("unsafeSsl");
    assert_eq!(v.value, 8.0);
    // No client certificate: the server refuses the handshake, and the error says so.
    let e = scaler(&meta(&[("unsafeSsl", "true")]), &[])
        .sample()
        .await
        .expect_err("no client certificate")
        .to_string();
    assert!(e.contains(&s.tls) && e.contains("BadCertificate"), "{e}");
    // A certificate without its key is KEDA's parse error.
    let e = support::build(
        "prometheus",
        "test",
        &meta(&[]),
        &[("authModes", "tls"), ("cert", cert.as_str())],
        PrometheusScaler::new,
    )
    .expect_err("no key")
    .to_string();
    assert!(e.contains("are required when tls auth is enabled"), "{e}");
}

/// `timeout` bounds a server that accepts the connection and never answers: the error
/// comes after the 300 ms asked for, well before the 3 s default.
#[tokio::test]
async fn timeout_bounds_a_server_that_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accept and hold every connection, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let server = format!("http://{addr}");
    let started = std::time::Instant::now();
    let e = scaler(
        &[
            ("serverAddress", server.as_str()),
            ("query", "up"),
            ("threshold", "1"),
            ("timeout", "300ms"),
        ],
        &[],
    )
    .sample()
    .await
    .expect_err("no answer");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(250) && took < std::time::Duration::from_secs(2),
        "{took:?}: {e}"
    );
    assert!(e.to_string().contains(&server), "{e}");
}

/// An answer over 8 MiB is refused, not read into memory whole.
#[tokio::test]
async fn an_oversized_answer_is_refused() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = c.read(&mut request);
            let body = vec![b' '; 9 << 20];
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body);
        }
    });
    let server = format!("http://{addr}");
    let e = scaler(
        &[
            ("serverAddress", server.as_str()),
            ("query", "up"),
            ("threshold", "1"),
        ],
        &[],
    )
    .sample()
    .await
    .expect_err("too large");
    assert!(e.to_string().contains("larger than 8 MiB"), "{e}");
}

/// X.509 version 1 client certificates (`openssl x509 -req` without an extensions file)
/// against the TLS server, which is Go's: it takes one signed by its CA, as KEDA's client
/// would present it; expired, it is refused.
#[tokio::test]
async fn version_1_client_certificates_against_go() {
    let s = servers();
    let pki = pki::Pki::new("prometheus-v1-client");
    // The server's CA, copied: signing here leaves the shared directory's serial alone.
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(s.tls_dir.join(f), pki.dir().join(format!("server-{f}"))).expect("CA copy");
    }
    pki.leaf(
        "v1",
        "/CN=v1-client",
        "server-ca",
        pki::KeyType::Ec,
        2,
        None,
    );
    pki.leaf(
        "v1-rsa",
        "/CN=v1-client",
        "server-ca",
        pki::KeyType::Rsa,
        2,
        None,
    );
    pki.leaf(
        "expired",
        "/CN=v1-client",
        "server-ca",
        pki::KeyType::Ec,
        -1,
        None,
    );
    let ca = pki.read("server-ca.crt");
    let sample = |name: &str| {
        let (cert, key) = (
            pki.read(&format!("{name}.crt")),
            pki.read(&format!("{name}.key")),
        );
        let auth = [
            ("authModes", "tls"),
            ("ca", ca.as_str()),
            ("cert", cert.as_str()),
            ("key", key.as_str()),
        ];
        let meta = [
            ("serverAddress", s.tls.as_str()),
            ("query", "vector(5)"),
            ("threshold", "1"),
        ];
        let scaler = scaler(&meta, &auth);
        async move { scaler.sample().await }
    };
    for name in ["v1", "v1-rsa"] {
        assert_eq!(
            sample(name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .value,
            5.0
        );
    }
    let e = sample("expired").await.expect_err("expired").to_string();
    assert!(
        e.contains("BadCertificate") || e.contains("CertificateExpired"),
        "{e}"
    );
}

/// A server with an X.509 version 1 certificate on loopback: refused when verified (it
/// cannot carry a subjectAltName, which Go requires as well), taken with `unsafeSsl`; a
/// version 3 certificate from a version 1 CA verifies.
#[tokio::test]
async fn version_1_server_certificates() {
    let pki = pki::Pki::new("prometheus-v1-server");
    pki.ca("ca", pki::KeyType::Ec, false);
    pki.ca("ca-v1", pki::KeyType::Rsa, true);
    pki.leaf("v1", "/CN=127.0.0.1", "ca", pki::KeyType::Ec, 2, None);
    let san = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    pki.leaf(
        "v3",
        "/CN=127.0.0.1",
        "ca-v1",
        pki::KeyType::Ec,
        2,
        Some(san),
    );
    let sample = |server: &str, ca: &str, unsafe_ssl: &str| {
        let meta = [
            ("serverAddress", server),
            ("query", "up"),
            ("threshold", "1"),
            ("unsafeSsl", unsafe_ssl),
        ];
        let auth = [("authModes", "basic"), ("username", "u"), ("ca", ca)];
        let scaler = scaler(&meta, &auth);
        async move { scaler.sample().await }
    };
    let v1 = https_stand_in(&pki, "v1").await;
    let e = sample(&v1, &pki.read("ca.crt"), "false")
        .await
        .expect_err("v1 refused")
        .to_string();
    assert!(
        e.contains("X.509 version 1, which cannot carry a subjectAltName"),
        "{e}"
    );
    assert_eq!(
        sample(&v1, &pki.read("ca.crt"), "true")
            .await
            .expect("unsafeSsl")
            .value,
        7.0
    );
    let v3 = https_stand_in(&pki, "v3").await;
    assert_eq!(
        sample(&v3, &pki.read("ca-v1.crt"), "false")
            .await
            .expect("v1 CA")
            .value,
        7.0
    );
}

/// An HTTPS server on loopback with certificate `name` of `pki`, answering every request
/// with the value 7; its base URL.
async fn https_stand_in(pki: &pki::Pki, name: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![rustls::pki_types::CertificateDer::from(pki.der(name))];
    let key = rustls_pemfile::private_key(&mut pki.read(&format!("{name}.key")).as_bytes())
        .expect("PEM")
        .expect("a key");
    // rustls' own pairing check cannot read a v1 certificate; this one can.
    let certified = scaler_core::tls::v1::certified_key(chain, key, &provider).expect("key pair");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(std::sync::Arc::new(rustls::sign::SingleCertAndKey::from(
            certified,
        )));
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"7"]}]}}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://{addr}")
}
