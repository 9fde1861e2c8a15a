//! Counts summed over every interceptor replica. Each replica reads the others' `/queue`
//! (found through the Endpoints of the interceptors' admin Service, which it already
//! watches) every [`PeersConfig::interval`], with a short timeout, and keeps what it read: the
//! external scaler answers from memory, so a slow or hung replica never stalls an answer;
//! what a replica last said is dropped after a few missed rounds. A replica knows its own
//! answer by the instance header and leaves it out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use scaler_core::http_scaled_object::{ScalingMetric, ServiceRef};
use tracing::debug;

use crate::admin::{QueueDetail, INSTANCE_HEADER};
use crate::Shared;

/// How long one read of a peer may take.
const READ_TIMEOUT: Duration = Duration::from_millis(300);
/// How many rounds a peer's last answer counts after it stops answering.
const STALE_ROUNDS: u32 = 4;

/// Where the other replicas are, and how often to read them.
#[derive(Debug, Clone)]
pub struct PeersConfig {
    /// The interceptors' admin Service and its admin port.
    pub service: ServiceRef,
    /// How often to read them.
    pub interval: Duration,
}

#[derive(Debug)]
struct Answer {
    at: Instant,
    routes: HashMap<String, QueueDetail>,
}

/// What the other replicas last said.
#[derive(Debug)]
pub struct Peers {
    answers: Mutex<HashMap<SocketAddr, Answer>>,
    /// How long an answer counts: [`STALE_ROUNDS`] reading intervals.
    fresh_for: Duration,
}

impl Peers {
    /// Nothing heard yet, from peers read every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            answers: Mutex::default(),
            fresh_for: interval * STALE_ROUNDS,
        }
    }

    fn fresh<R>(&self, f: impl Fn(&HashMap<String, QueueDetail>) -> R) -> Vec<R> {
        let limit = self.fresh_for;
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .values()
            .filter(|a| a.at.elapsed() <= limit)
            .map(|a| f(&a.routes))
            .collect()
    }

    /// The other replicas' share of route `key`'s value under `metric`.
    pub fn value(&self, key: &str, metric: ScalingMetric) -> f64 {
        self.fresh(|routes| {
            routes.get(key).map_or(0.0, |d| match metric {
                ScalingMetric::Concurrency { .. } => d.serving as f64,
                ScalingMetric::RequestRate { .. } => d.request_rate,
            })
        })
        .into_iter()
        .sum()
    }

    /// Whether another replica has traffic for route `key`.
    pub fn active(&self, key: &str) -> bool {
        self.fresh(|routes| {
            routes
                .get(key)
                .is_some_and(|d| d.concurrency > 0 || d.serving > 0 || d.request_rate > 0.0)
        })
        .into_iter()
        .any(|a| a)
    }

    /// How many replicas answered recently (this one not counted).
    pub fn count(&self) -> usize {
        self.fresh(|_| ()).len()
    }

    fn record(&self, addr: SocketAddr, routes: HashMap<String, QueueDetail>) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.insert(
            addr,
            Answer {
                at: Instant::now(),
                routes,
            },
        );
    }

    fn forget_gone(&self, present: &[SocketAddr]) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.retain(|a, _| present.contains(a));
    }
}

enum Read {
    Peer(HashMap<String, QueueDetail>),
    Myself,
}

async fn read(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    instance: &str,
) -> Result<Read, String> {
    let uri: http::Uri = format!("http://{addr}/queue?detailed=true")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let response = tokio::time::timeout(READ_TIMEOUT, async {
        let r = client.get(uri).await.map_err(|e| e.to_string())?;
        if r.headers()
            .get(INSTANCE_HEADER)
            .is_some_and(|v| v.as_bytes() == instance.as_bytes())
        {
            return Ok(None);
        }
        let body = r.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(Some(body.to_bytes()))
    })
    .await
    .map_err(|_| format!("no answer within {READ_TIMEOUT:?}"))??;
    match response {
        None => Ok(Read::Myself),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Read::Peer)
            .map_err(|e| format!("not the /queue JSON: {e}")),
    }
}

/// Reads the other replicas every `config.interval`, forever.
pub async fn run(shared: Arc<Shared>, config: PeersConfig) {
    let pool = shared.directory.pool(&config.service);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let addrs: Vec<SocketAddr> = pool.backends().iter().map(|b| b.addr).collect();
        let reads = addrs.iter().map(|a| {
            let client = &client;
            let instance = shared.instance.as_str();
            async move { (*a, read(client, *a, instance).await) }
        });
        for (addr, r) in futures::future::join_all(reads).await {
            match r {
                Ok(Read::Peer(routes)) => shared.peers.record(addr, routes),
                Ok(Read::Myself) => {}
                Err(e) => debug!(peer = %addr, "reading a peer's counts: {e}"),
            }
        }
        shared.peers.forget_gone(&addrs);
        shared.refresh_activity();
    }
}
