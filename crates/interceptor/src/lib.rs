//! eventscale's HTTP interceptor: a reverse proxy in front of HTTPScaledObjects' workloads.
//!
//! A request is routed ([`routing`]) to its HTTPScaledObject, counted ([`counts`]) at once,
//! held while the workload has no ready endpoint (bounded in time and number), then sent
//! straight to the ready pod with the fewest outstanding requests ([`backends`]). The
//! counts are served over KEDA's external scaler protocol ([`scaler`]), which pushes
//! activity the moment a request arrives for a route at zero, and on the admin port
//! ([`admin`]). The routes, Services and Endpoints come from the cluster ([`cluster`]).

pub mod admin;
pub mod backends;
pub mod body;
pub mod cluster;
pub mod counts;
pub mod peers;
pub mod proxy;
pub mod routing;
pub mod scaler;
pub mod server;
pub mod telemetry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use scaler_core::http_scaled_object::{
    HttpRoute, DEFAULT_CONDITION_WAIT, DEFAULT_RESPONSE_HEADER_TIMEOUT,
};

use crate::backends::{Directory, Pool};
use crate::counts::Counts;
use crate::routing::RoutingTable;

/// How the interceptor behaves; the command line sets it.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a request waits for a ready endpoint unless its route says otherwise.
    pub condition_wait: Duration,
    /// How long a workload may take to send response headers unless its route says so.
    pub response_header_timeout: Duration,
    /// How long a connection to a pod may take.
    pub connect_timeout: Duration,
    /// Requests one route may hold while its workload starts; more get 503.
    pub max_held_per_route: usize,
    /// Requests all routes together may hold.
    pub max_held: usize,
    /// On SIGTERM: how long `/readyz` fails before the listeners close, so that load
    /// balancers stop sending new requests first.
    pub drain_delay: Duration,
    /// On SIGTERM: how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// Whether responses carry `X-KEDA-HTTP-Cold-Start`.
    pub cold_start_header: bool,
    /// When not empty, the only addresses requests may be sent to (the pod network).
    pub backend_cidrs: Vec<backends::Cidr>,
    /// The other replicas, whose counts are added to this one's.
    pub peers: Option<peers::PeersConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            condition_wait: DEFAULT_CONDITION_WAIT,
            response_header_timeout: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            connect_timeout: Duration::from_secs(3),
            max_held_per_route: 10_000,
            max_held: 50_000,
            drain_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(60),
            cold_start_header: true,
            backend_cidrs: Vec::new(),
            peers: None,
        }
    }
}

/// One routed HTTPScaledObject and what the proxy keeps for it.
#[derive(Debug)]
pub struct Route {
    /// The parsed HTTPScaledObject.
    pub spec: HttpRoute,
    /// Its counts (kept across changes to the object that keep its metric).
    pub counts: Arc<Counts>,
    /// The ready endpoints of its Service.
    pub pool: Arc<Pool>,
    /// The ready endpoints of its failover Service.
    pub failover: Option<Arc<Pool>>,
}

/// The routes now: the table the proxy looks up and the same routes by key.
#[derive(Debug, Default)]
pub struct Routes {
    /// By host, path and headers.
    pub table: RoutingTable<Route>,
    /// By `namespace/name`.
    pub by_key: HashMap<String, Arc<Route>>,
}

/// What every part of the interceptor shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The routes, swapped whole on every change.
    pub routes: ArcSwap<Routes>,
    /// Services and Endpoints.
    pub directory: Directory,
    /// Counts by route key, so that a route's counts outlive a change to its object.
    counts: Mutex<HashMap<String, Arc<Counts>>>,
    /// Requests held by all routes.
    pub held: tokio::sync::Semaphore,
    /// Set on SIGTERM: `/readyz` fails.
    pub draining: AtomicBool,
    /// Set once the routes, Services and Endpoints have been listed.
    pub synced: AtomicBool,
    /// The interceptor's own metrics.
    pub telemetry: telemetry::Telemetry,
    /// This replica's name among its peers.
    pub instance: String,
    /// What the other replicas last said.
    pub peers: peers::Peers,
}

impl Shared {
    /// Shared state with no routes.
    pub fn new(config: Config) -> Arc<Self> {
        let directory = Directory::with_allowed(config.backend_cidrs.clone());
        let peers = peers::Peers::new(config.peers.as_ref().map_or(Duration::ZERO, |p| p.interval));
        Arc::new(Self {
            held: tokio::sync::Semaphore::new(config.max_held),
            config,
            routes: ArcSwap::from_pointee(Routes::default()),
            directory,
            counts: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            telemetry: telemetry::Telemetry::default(),
            instance: instance_name(),
            peers,
        })
    }

    /// Replaces the routes with `routes`, keeping each key's counts while its metric stays.
    pub fn set_routes(&self, routes: Vec<HttpRoute>) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_key = HashMap::with_capacity(routes.len());
        let mut kept = HashMap::with_capacity(routes.len());
        for spec in routes {
            let c = match counts.get(&spec.key) {
                Some(c) if c.metric() == spec.metric => c.clone(),
                _ => Arc::new(Counts::new(spec.metric)),
            };
            kept.insert(spec.key.clone(), c.clone());
            let route = Route {
                pool: self.directory.pool(&spec.service),
                failover: spec
                    .failover
                    .as_ref()
                    .map(|f| self.directory.pool(&f.service)),
                counts: c,
                spec,
            };
            by_key.insert(route.spec.key.clone(), Arc::new(route));
        }
        *counts = kept;
        let table = RoutingTable::new(by_key.values().map(|r| (&r.spec, r.clone())));
        self.routes.store(Arc::new(Routes { table, by_key }));
    }

    /// Re-derives every route's activity (a quiet route turns inactive, one busy on
    /// another replica active).
    pub fn refresh_activity(&self) {
        for r in self.routes.load().by_key.values() {
            r.counts.refresh_activity(self.peers.active(&r.spec.key));
        }
    }

    /// Route `r`'s value summed over every replica.
    pub fn value(&self, r: &Route) -> f64 {
        r.counts.value() + self.peers.value(&r.spec.key, r.spec.metric)
    }

    /// Whether route `r` has traffic on any replica.
    pub fn active(&self, r: &Route) -> bool {
        r.counts.is_active() || self.peers.active(&r.spec.key)
    }

    /// Whether the interceptor should get traffic: synced and not draining.
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// A name for this replica, different from every other's.
fn instance_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}
