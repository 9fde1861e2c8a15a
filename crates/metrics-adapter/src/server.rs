//! Serving the router over TLS with HTTP/1.1 and HTTP/2 (ALPN).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, info};

use crate::auth::authn::PeerCerts;
use crate::connections::{Closed, Limits, Registry};
use crate::routes::MetricReads;
use crate::telemetry::Telemetry;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read a PEM certificate chain and private key.
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("reading serving certificate {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("reading serving key {}", key.display()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("parsing {}", key.display()))?
        .with_context(|| format!("no private key in {}", key.display()))?;
    Ok((chain, key))
}

/// The TLS server configuration for a fixed serving pair (tests and tools).
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = load_pem(cert, key)?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .context("the serving key is not a supported type")?;
    let certified = Arc::new(CertifiedKey::new(chain, key));
    certified
        .keys_match()
        .context("the serving certificate and key do not form a usable pair")?;
    server_config(Arc::new(FixedCert(certified)), true)
}

/// One serving pair, for ever.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The TLS server configuration: certificates from `certs` (which may rotate them), client
/// certificates requested but not required, ALPN h2 (when `http2`) and http/1.1.
pub fn server_config(
    certs: Arc<dyn ResolvesServerCert>,
    http2: bool,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Any client certificate whose key signed the handshake (X.509 v1 ones too): which CA
    // issued it is authentication's question, answered per request against the CA bundles
    // of the moment (`client-ca-file`, `requestheader-client-ca-file`).
    let verifier = Arc::new(scaler_core::tls::v1::AnyClientCert::new(
        provider.signature_verification_algorithms,
    ));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(cfg))
}

/// How a port treats its connections and where it counts them.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The connection limits.
    pub limits: Limits,
    /// Where connections opened and closed are counted.
    pub telemetry: Arc<Telemetry>,
}

impl Default for Serving {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            telemetry: Telemetry::new(),
        }
    }
}

/// How long a connection told to close may finish what it is writing before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Accept TLS connections on `listener` and serve `app` until `shutdown` resolves.
///
/// Each request carries the connection's client certificates as an `Arc<PeerCerts>`
/// extension (empty when none were sent). HTTP/2 is served when the TLS configuration
/// offers it by ALPN.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with(listener, tls, app, None, Serving::default(), shutdown).await
}

/// [`serve`], with metric reads answered by `reads` directly (everything else by `app`),
/// and connections held to `serving`'s limits (see [`crate::connections`]).
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    reads: Option<Arc<MetricReads>>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let http2 = tls.alpn_protocols.iter().any(|p| p == b"h2");
    let acceptor = TlsAcceptor::from(tls);
    let registry = Registry::new(serving.limits);
    let (limits, telemetry) = (serving.limits, serving.telemetry);
    info!(
        addr = %listener.local_addr()?,
        max_connections = serving.limits.max_connections,
        "serving external.metrics.k8s.io over TLS"
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Running out of file descriptors and the like: pause rather than spin.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let place = match registry.admit() {
            Ok((place, evicted)) => {
                if evicted {
                    telemetry.connection_closed(Closed::Evicted);
                }
                place
            }
            Err(why) => {
                debug!(%peer, "every connection is answering a request; refusing this one");
                telemetry.connection_closed(why);
                drop(stream);
                continue;
            }
        };
        // Small responses go out at once: with HTTP/2 an answer is several frames, and
        // Nagle's algorithm would hold the last until the client's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let (app, reads, telemetry) = (app.clone(), reads.clone(), telemetry.clone());
        tokio::spawn(async move {
            let _open = telemetry.connection_open();
            let conn = place.conn.clone();
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        telemetry.connection_closed(Closed::Idle);
                        return;
                    }
                },
                _ = conn.evicted() => return,
            };
            let peer_certs = Arc::new(PeerCerts::new(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default(),
            ));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if !http2 {
                builder = builder.http1_only();
            }
            // Bounded streams per connection and pending resets (Rapid Reset, CVE-2023-44487),
            // small flow-control windows (the API takes no request bodies), and a bounded
            // header list (CONTINUATION floods end there).
            // Headers up to 64 KiB reach the handlers, so an over-long URI gets a Status
            // (request::MAX_URI_BYTES) rather than a bare 431; beyond that, and beyond
            // HTTP/1.1's 64 KiB buffer, the protocol layer refuses the request itself.
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(250)
                .max_pending_accept_reset_streams(20)
                .initial_stream_window_size(64 * 1024)
                .initial_connection_window_size(256 * 1024)
                .max_header_list_size(64 * 1024);
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.first_request)
                .max_buf_size(64 * 1024);
            let for_requests = conn.clone();
            let service = hyper::service::service_fn(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    let (app, reads, peer_certs) = (app.clone(), reads.clone(), peer_certs.clone());
                    let busy = for_requests.request();
                    async move {
                        let _busy = busy;
                        if let Some(reads) =
                            reads.filter(|_| MetricReads::handles(req.method(), req.uri().path()))
                        {
                            return Ok::<_, std::convert::Infallible>(
                                reads
                                    .answer(req.uri(), req.headers(), Some(&peer_certs))
                                    .await,
                            );
                        }
                        req.extensions_mut().insert(peer_certs);
                        app.oneshot(req).await
                    }
                },
            );
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            // Told to close (idle, or evicted): a graceful close first (HTTP/2 GOAWAY, no new
            // HTTP/1.1 request), then the connection is cut after CLOSE_GRACE.
            let mut cut_at: Option<tokio::time::Instant> = None;
            loop {
                let idle_at = conn
                    .idle_deadline(&limits)
                    .map(tokio::time::Instant::from_std)
                    // Answering a request: look again after the idle time.
                    .unwrap_or_else(|| tokio::time::Instant::now() + limits.idle);
                tokio::select! {
                    done = connection.as_mut() => {
                        if let Err(e) = done {
                            // Clients going away mid-request is normal for the aggregator.
                            debug!(%peer, error = %e, "connection closed");
                        }
                        return;
                    }
                    _ = conn.evicted(), if cut_at.is_none() => {
                        debug!(%peer, "closing an idle connection to make room for a new one");
                        connection.as_mut().graceful_shutdown();
                        cut_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                    _ = tokio::time::sleep_until(idle_at), if cut_at.is_none() => {
                        if conn.idle_deadline(&limits).is_some_and(|at| at <= std::time::Instant::now()) {
                            debug!(%peer, "closing a connection without requests");
                            telemetry.connection_closed(Closed::Idle);
                            connection.as_mut().graceful_shutdown();
                            cut_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                        }
                    }
                    _ = sleep_until_some(cut_at) => {
                        debug!(%peer, "cutting a connection that did not close in time");
                        return;
                    }
                }
            }
        });
    }
}

/// Sleeps until `at`, or for ever when `None`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authn::{Authenticated, ConfigHolder};
    use crate::auth::config::{tests::configmap_data, AuthnConfig};
    use crate::auth::tests::FakeReviews;
    use crate::auth::Auth;
    use crate::telemetry::Telemetry;
    use crate::test_pki::{KeyType, Pki};
    use axum::routing::get;
    use axum::Extension;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `GET /apis/test` over TLS to `addr` presenting client certificate `name` of `pki`,
    /// with the front proxy's header naming user `allowed`: the status line and body.
    async fn request(addr: std::net::SocketAddr, pki: &Pki, name: &str) -> (String, String) {
        let (ca, cert, key) = (
            pki.read("ca.crt"),
            pki.read(&format!("{name}.crt")),
            pki.read(&format!("{name}.key")),
        );
        let cfg = scaler_core::tls::client_config(&scaler_core::tls::ClientSettings {
            ca: Some(&ca),
            cert_key: Some((&cert, &key)),
            unsafe_ssl: false,
        })
        .expect("client TLS");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let server_name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(server_name, tcp)
            .await
            .expect("the handshake takes the certificate");
        tls.write_all(
            b"GET /apis/test HTTP/1.1\r\nHost: localhost\r\nX-Remote-User: allowed\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("request");
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.expect("answer");
        let status = answer.lines().next().unwrap_or_default().to_string();
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (status, body)
    }

    /// A front proxy presenting an X.509 version 1 client certificate (what
    /// `openssl x509 -req` makes without an extensions file): the handshake takes its
    /// signature and authentication its issuer, as kube-apiserver does; one from another
    /// CA, or expired, is refused.
    #[tokio::test]
    async fn version_1_front_proxy_certificates_authenticate() {
        let pki = Pki::new("server-v1");
        pki.ca("ca", KeyType::Ec, false);
        let serving = "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n";
        pki.leaf(
            "serving",
            "/CN=localhost",
            "ca",
            KeyType::Ec,
            2,
            Some(serving),
        );
        pki.ca("front-proxy-ca", KeyType::Rsa, false);
        pki.ca("stranger", KeyType::Ec, false);
        let proxy = "/CN=front-proxy-client";
        pki.leaf("proxy-rsa", proxy, "front-proxy-ca", KeyType::Rsa, 2, None);
        pki.leaf("proxy-ec", proxy, "front-proxy-ca", KeyType::Ec, 2, None);
        pki.leaf("expired", proxy, "front-proxy-ca", KeyType::Ec, -1, None);
        pki.leaf("impostor", proxy, "stranger", KeyType::Ec, 2, None);

        let holder = Arc::new(ConfigHolder::default());
        let data = configmap_data(
            &pki.read("ca.crt"),
            &pki.read("front-proxy-ca.crt"),
            &["front-proxy-client"],
        );
        let (cfg, errors) = AuthnConfig::from_data(&data);
        assert!(errors.is_empty(), "{errors:?}");
        holder.set(cfg);
        let auth = Arc::new(Auth::new(
            holder,
            Arc::new(FakeReviews::default()),
            false,
            Telemetry::new(),
        ));
        let app =
            Router::new()
                .route(
                    "/apis/test",
                    get(|Extension(who): Extension<Authenticated>| async move {
                        who.user().name.clone()
                    }),
                )
                .layer(axum::middleware::from_fn_with_state(
                    auth,
                    crate::auth::layer,
                ));
        let tls = tls_config(
            &pki.dir().join("serving.crt"),
            &pki.dir().join("serving.key"),
        )
        .expect("serving TLS");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, tls, app, async {
            let _ = stopped.await;
        }));

        for name in ["proxy-rsa", "proxy-ec"] {
            let (status, body) = request(addr, &pki, name).await;
            assert!(status.contains(" 200 "), "{name}: {status} {body}");
            assert_eq!(body, "allowed", "{name}");
        }
        for (name, why) in [
            ("impostor", "not signed by a trusted CA"),
            ("expired", "has expired"),
        ] {
            let (status, body) = request(addr, &pki, name).await;
            assert!(status.contains(" 401 "), "{name}: {status} {body}");
            assert!(body.contains(why), "{name}: {body}");
        }
        let _ = stop.send(());
        server.await.expect("server task").expect("server");
    }
}
