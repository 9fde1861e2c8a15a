//! The interceptor's three listeners (proxy, admin, external scaler) and its drain: on
//! shutdown `/readyz` fails at once, the proxy keeps serving for the drain delay (so that
//! load balancers and Endpoints stop sending first), then stops accepting and lets the
//! requests in flight finish within the drain timeout.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use scaler_core::externalscaler::external_scaler_server::ExternalScalerServer;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::proxy::{self, Upstreams};
use crate::scaler::Scaler;
use crate::{admin, Shared};

/// How often routes' activity is re-derived (quiet routes turn inactive).
const ACTIVITY_REFRESH: Duration = Duration::from_secs(1);

/// The bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// Requests to route.
    pub proxy: TcpListener,
    /// `/queue`, `/livez`, `/readyz`, `/metrics`.
    pub admin: TcpListener,
    /// KEDA's external scaler protocol (HTTP/2, gRPC).
    pub scaler: TcpListener,
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    b.http2().timer(TokioTimer::new());
    b
}

/// Serves until `shutdown` completes, then drains the proxy and returns.
pub async fn serve(shared: Arc<Shared>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let refresher = tokio::spawn({
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(ACTIVITY_REFRESH);
            loop {
                tick.tick().await;
                shared.refresh_activity();
            }
        }
    });
    let admin = tokio::spawn(serve_admin(shared.clone(), listeners.admin));
    let peers = shared
        .config
        .peers
        .clone()
        .map(|p| tokio::spawn(crate::peers::run(shared.clone(), p)));
    let scaler = tokio::spawn(serve_scaler(shared.clone(), listeners.scaler));

    let upstreams = Upstreams::new(shared.config.connect_timeout);
    let graceful = GracefulShutdown::new();
    let http = builder();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut draining: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let accepted = tokio::select! {
            a = listeners.proxy.accept() => a,
            () = &mut shutdown, if draining.is_none() => {
                shared.draining.store(true, Ordering::Release);
                info!(delay = ?shared.config.drain_delay, "draining: /readyz fails, still serving");
                draining = Some(Box::pin(tokio::time::sleep(shared.config.drain_delay)));
                continue;
            }
            () = async { if let Some(d) = draining.as_mut() { d.await } }, if draining.is_some() => break,
        };
        let (tcp, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!("accepting a proxy connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let upstreams = upstreams.clone();
        let service = service_fn(move |req| {
            let (shared, upstreams) = (shared.clone(), upstreams.clone());
            async move { Ok::<_, Infallible>(proxy::handle(shared, upstreams, client, req).await) }
        });
        let conn = http
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%client, "proxy connection: {e}");
            }
        });
    }
    drop(listeners.proxy);
    info!(timeout = ?shared.config.drain_timeout, "no longer accepting; finishing requests in flight");
    match tokio::time::timeout(shared.config.drain_timeout, graceful.shutdown()).await {
        Ok(()) => info!("drained"),
        Err(_) => warn!("drain timeout: connections still open are closed"),
    }
    refresher.abort();
    if let Some(p) = peers {
        p.abort();
    }
    admin.abort();
    scaler.abort();
}

async fn serve_admin(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let r = admin::handle(&shared, &req);
            async move { Ok::<_, Infallible>(r) }
        });
        tokio::spawn(async move {
            let _ = builder().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

async fn serve_scaler(shared: Arc<Shared>, listener: TcpListener) {
    let svc = ExternalScalerServer::new(Scaler::new(shared));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(svc.clone());
        tokio::spawn(async move {
            let mut b = builder().http2_only();
            // One stream per push trigger: no limit, as grpc-go servers have none.
            b.http2().max_concurrent_streams(None);
            let _ = b.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}
