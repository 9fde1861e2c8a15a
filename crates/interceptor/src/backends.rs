//! Where requests go: the ready endpoints of each route's Service, from the Services and
//! Endpoints the interceptor watches, as pools that the proxy picks from by least
//! outstanding requests and that held requests wait on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::ResourceExt;
use scaler_core::http_scaled_object::{PortRef, ServiceRef};
use tokio::sync::watch;
use tracing::warn;

/// A block of addresses, `10.244.0.0/24` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address block such as 10.244.0.0/24");
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let net: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { net, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// How long a backend that refused a connection is passed over.
pub const EJECTION: Duration = Duration::from_secs(2);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

/// One ready endpoint.
#[derive(Debug)]
pub struct Backend {
    /// Pod IP and port.
    pub addr: SocketAddr,
    outstanding: AtomicUsize,
    /// Nanoseconds since the epoch until which the backend is passed over.
    ejected_until: AtomicU64,
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            outstanding: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// Requests sent to this backend and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Passes the backend over for [`EJECTION`] (it refused a connection).
    pub fn eject(&self) {
        let until = nanos_since_epoch(Instant::now() + EJECTION);
        self.ejected_until.store(until, Ordering::Release);
    }

    fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now
    }
}

/// A request sent to a backend; dropping it ends it.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<Backend>,
}

impl Lease {
    /// The backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The ready endpoints of one Service port.
#[derive(Debug)]
pub struct Pool {
    ready: watch::Sender<Arc<[Arc<Backend>]>>,
    next: AtomicUsize,
}

impl Pool {
    fn new() -> Self {
        Self {
            ready: watch::Sender::new(Arc::from(Vec::new())),
            next: AtomicUsize::new(0),
        }
    }

    /// The ready backends now.
    pub fn backends(&self) -> Arc<[Arc<Backend>]> {
        self.ready.borrow().clone()
    }

    /// Whether some backend is ready.
    pub fn is_ready(&self) -> bool {
        !self.ready.borrow().is_empty()
    }

    /// The ready backend with the fewest outstanding requests (ties taken in turn), passing
    /// over ejected ones unless all are.
    pub fn pick(&self) -> Option<Lease> {
        let backends = self.backends();
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = nanos_since_epoch(Instant::now());
        let mut best: Option<(bool, usize, &Arc<Backend>)> = None;
        for i in 0..n {
            let b = &backends[(start + i) % n];
            let key = (b.ejected(now), b.outstanding());
            if best.is_none_or(|(e, o, _)| key < (e, o)) {
                best = Some((key.0, key.1, b));
            }
        }
        let backend = best?.2.clone();
        backend.outstanding.fetch_add(1, Ordering::AcqRel);
        Some(Lease { backend })
    }

    /// Waits until some backend is ready; false when `timeout` passed first.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|b| !b.is_empty()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn set(&self, addrs: &[SocketAddr]) {
        self.ready.send_if_modified(|current| {
            let same = current.len() == addrs.len()
                && current.iter().zip(addrs).all(|(b, a)| b.addr == *a);
            if same {
                return false;
            }
            // Backends that stay keep their outstanding counts.
            let old: HashMap<SocketAddr, &Arc<Backend>> =
                current.iter().map(|b| (b.addr, b)).collect();
            let next: Vec<Arc<Backend>> = addrs
                .iter()
                .map(|a| {
                    old.get(a)
                        .map_or_else(|| Arc::new(Backend::new(*a)), |b| (*b).clone())
                })
                .collect();
            *current = Arc::from(next);
            true
        });
    }
}

#[derive(Debug, Default)]
struct Known {
    service: Option<Service>,
    endpoints: Option<Endpoints>,
}

/// Every Service and Endpoints the interceptor knows, and the pools made of them.
#[derive(Debug, Default)]
pub struct Directory {
    inner: Mutex<DirectoryInner>,
    /// When not empty, the only addresses requests may go to; Endpoints naming others are
    /// not followed (a guard: an Endpoints object can name any address).
    allowed: Vec<Cidr>,
}

#[derive(Debug, Default)]
struct DirectoryInner {
    known: HashMap<(String, String), Known>,
    pools: HashMap<ServiceRef, Weak<Pool>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Directory {
    /// A directory whose pools hold only addresses inside `allowed` (all when empty).
    pub fn with_allowed(allowed: Vec<Cidr>) -> Self {
        Self {
            inner: Mutex::default(),
            allowed,
        }
    }

    /// The pool of a Service port, made when first asked for; it lives while a route
    /// holds it.
    pub fn pool(&self, service: &ServiceRef) -> Arc<Pool> {
        let mut inner = lock(&self.inner);
        if let Some(p) = inner.pools.get(service).and_then(Weak::upgrade) {
            return p;
        }
        let pool = Arc::new(Pool::new());
        let key = (service.namespace.clone(), service.name.clone());
        pool.set(&ready_addresses(
            inner.known.get(&key),
            &service.port,
            &self.allowed,
        ));
        inner.pools.retain(|_, p| p.strong_count() > 0);
        inner.pools.insert(service.clone(), Arc::downgrade(&pool));
        pool
    }

    /// A Service was added or changed.
    pub fn apply_service(&self, s: &Service) {
        self.update(s.namespace().unwrap_or_default(), s.name_any(), |k| {
            k.service = Some(s.clone())
        });
    }

    /// A Service was deleted.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.update(namespace.into(), name.into(), |k| k.service = None);
    }

    /// Endpoints were added or changed.
    pub fn apply_endpoints(&self, e: &Endpoints) {
        self.update(e.namespace().unwrap_or_default(), e.name_any(), |k| {
            k.endpoints = Some(e.clone())
        });
    }

    /// Endpoints were deleted.
    pub fn delete_endpoints(&self, namespace: &str, name: &str) {
        self.update(namespace.into(), name.into(), |k| k.endpoints = None);
    }

    /// Keeps only the Services and Endpoints `keep` says yes to (after a watch relists).
    pub fn retain(&self, keep: impl Fn(&str, &str, bool) -> bool) {
        let mut inner = lock(&self.inner);
        let keys: Vec<_> = inner.known.keys().cloned().collect();
        for key in keys {
            let Some(k) = inner.known.get_mut(&key) else {
                continue;
            };
            if k.service.is_some() && !keep(&key.0, &key.1, true) {
                k.service = None;
            }
            if k.endpoints.is_some() && !keep(&key.0, &key.1, false) {
                k.endpoints = None;
            }
            Self::refresh(&mut inner, &key, &self.allowed);
        }
    }

    fn update(&self, namespace: String, name: String, f: impl FnOnce(&mut Known)) {
        let mut inner = lock(&self.inner);
        let key = (namespace, name);
        f(inner.known.entry(key.clone()).or_default());
        Self::refresh(&mut inner, &key, &self.allowed);
    }

    fn refresh(inner: &mut DirectoryInner, key: &(String, String), allowed: &[Cidr]) {
        let known = inner.known.get(key);
        for (sref, pool) in &inner.pools {
            if sref.namespace == key.0 && sref.name == key.1 {
                if let Some(pool) = pool.upgrade() {
                    pool.set(&ready_addresses(known, &sref.port, allowed));
                }
            }
        }
        if known.is_some_and(|k| k.service.is_none() && k.endpoints.is_none()) {
            inner.known.remove(key);
        }
    }
}

/// The ready addresses of a Service port: the Service names the port (by number or name),
/// the Endpoints carry the pods' addresses and the port's number on them.
fn ready_addresses(known: Option<&Known>, port: &PortRef, allowed: &[Cidr]) -> Vec<SocketAddr> {
    let Some(Known {
        service: Some(service),
        endpoints: Some(endpoints),
    }) = known
    else {
        return Vec::new();
    };
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    let Some(sp) = ports.into_iter().flatten().find(|p| match port {
        PortRef::Number(n) => p.port == i32::from(*n),
        PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
    }) else {
        return Vec::new();
    };
    let port_name = sp.name.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let Some(ep) = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
        else {
            continue;
        };
        let Ok(number) = u16::try_from(ep.port) else {
            continue;
        };
        for a in subset.addresses.iter().flatten() {
            let Ok(ip) = a.ip.parse::<IpAddr>() else {
                continue;
            };
            if !allowed.is_empty() && !allowed.iter().any(|c| c.contains(ip)) {
                warn!(
                    endpoints = %format!("{}/{}", endpoints.metadata.namespace.as_deref().unwrap_or_default(), endpoints.metadata.name.as_deref().unwrap_or_default()),
                    address = %ip,
                    "not followed: the address is outside the interceptor's backend address blocks"
                );
                continue;
            }
            out.push(SocketAddr::new(ip, number));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EndpointAddress, EndpointPort, EndpointSubset, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A Service with `ports` as (name, port).
    pub(crate) fn service(ns: &str, name: &str, ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: *p,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// Endpoints with ready `ips` on `ports` as (name, port), and not-ready `not_ready`.
    pub(crate) fn endpoints(
        ns: &str,
        name: &str,
        ips: &[&str],
        not_ready: &[&str],
        ports: &[(&str, i32)],
    ) -> Endpoints {
        let addrs = |ips: &[&str]| {
            (!ips.is_empty()).then(|| {
                ips.iter()
                    .map(|ip| EndpointAddress {
                        ip: ip.to_string(),
                        ..EndpointAddress::default()
                    })
                    .collect()
            })
        };
        Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: addrs(ips),
                not_ready_addresses: addrs(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| EndpointPort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: *p,
                            ..EndpointPort::default()
                        })
                        .collect(),
                ),
            }]),
        }
    }

    fn sref(port: PortRef) -> ServiceRef {
        ServiceRef {
            namespace: "ns".into(),
            name: "web".into(),
            port,
        }
    }

    fn addrs(p: &Pool) -> Vec<String> {
        p.backends().iter().map(|b| b.addr.to_string()).collect()
    }

    #[test]
    fn a_service_port_maps_to_its_endpoints_port_by_name() {
        let d = Directory::default();
        let by_number = d.pool(&sref(PortRef::Number(80)));
        let by_name = d.pool(&sref(PortRef::Name("admin".into())));
        assert!(!by_number.is_ready());
        d.apply_service(&service("ns", "web", &[("http", 80), ("admin", 9000)]));
        assert!(!by_number.is_ready(), "no Endpoints yet");
        d.apply_endpoints(&endpoints(
            "ns",
            "web",
            &["10.0.0.2", "10.0.0.1"],
            &["10.0.0.9"],
            &[("http", 8080), ("admin", 9090)],
        ));
        assert_eq!(addrs(&by_number), ["10.0.0.1:8080", "10.0.0.2:8080"]);
        assert_eq!(addrs(&by_name), ["10.0.0.1:9090", "10.0.0.2:9090"]);
        // The same pool is handed out while held; a new one sees the same state.
        assert!(Arc::ptr_eq(&by_number, &d.pool(&sref(PortRef::Number(80)))));
        assert!(d.pool(&sref(PortRef::Number(81))).backends().is_empty());
        d.delete_endpoints("ns", "web");
        assert!(!by_number.is_ready());
    }

    #[test]
    fn addresses_outside_the_allowed_blocks_are_not_followed() {
        let d = Directory::with_allowed(vec![
            "10.244.0.0/24".parse().expect("a block"),
            "127.0.0.0/8".parse().expect("a block"),
        ]);
        d.apply_service(&service("ns", "web", &[("http", 80)]));
        d.apply_endpoints(&endpoints(
            "ns",
            "web",
            &[
                "10.244.0.7",
                "192.0.2.1",
                "169.254.169.254",
                "10.244.1.1",
                "127.0.0.5",
            ],
            &[],
            &[("http", 8080)],
        ));
        assert_eq!(
            addrs(&d.pool(&sref(PortRef::Number(80)))),
            ["10.244.0.7:8080", "127.0.0.5:8080"]
        );
        let c: Cidr = "fd00::/8".parse().expect("a block");
        assert!(c.contains("fd12::1".parse().expect("an address")));
        assert!(!c.contains("fe80::1".parse().expect("an address")));
        assert!(!c.contains("10.0.0.1".parse().expect("an address")));
        let all: Cidr = "0.0.0.0/0".parse().expect("a block");
        assert!(all.contains("8.8.8.8".parse().expect("an address")));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unnamed_single_port_matches() {
        let d = Directory::default();
        d.apply_endpoints(&endpoints("ns", "web", &["10.0.0.1"], &[], &[("", 8080)]));
        d.apply_service(&service("ns", "web", &[("", 80)]));
        assert_eq!(
            addrs(&d.pool(&sref(PortRef::Number(80)))),
            ["10.0.0.1:8080"]
        );
    }

    #[tokio::test]
    async fn held_requests_wake_when_an_endpoint_is_ready() {
        let d = Arc::new(Directory::default());
        d.apply_service(&service("ns", "web", &[("http", 80)]));
        let pool = d.pool(&sref(PortRef::Number(80)));
        assert!(
            !pool.wait_ready(Duration::from_millis(20)).await,
            "times out"
        );
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.wait_ready(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        d.apply_endpoints(&endpoints(
            "ns",
            "web",
            &["10.0.0.1"],
            &[],
            &[("http", 8080)],
        ));
        assert!(waiter.await.expect("joined"));
    }

    #[test]
    fn picks_go_to_the_least_outstanding_backend_and_skip_ejected_ones() {
        let d = Directory::default();
        d.apply_service(&service("ns", "web", &[("http", 80)]));
        d.apply_endpoints(&endpoints(
            "ns",
            "web",
            &["10.0.0.1"],
            &[],
            &[("http", 8080)],
        ));
        let pool = d.pool(&sref(PortRef::Number(80)));
        let held: Vec<_> = (0..5).map(|_| pool.pick().expect("a backend")).collect();
        assert_eq!(pool.backends()[0].outstanding(), 5);
        // A second pod: new requests go to it until it has as many.
        d.apply_endpoints(&endpoints(
            "ns",
            "web",
            &["10.0.0.1", "10.0.0.2"],
            &[],
            &[("http", 8080)],
        ));
        assert_eq!(
            pool.backends()[0].outstanding(),
            5,
            "kept across the update"
        );
        let more: Vec<_> = (0..5).map(|_| pool.pick().expect("a backend")).collect();
        assert!(more
            .iter()
            .all(|l| l.backend().addr.to_string() == "10.0.0.2:8080"));
        drop(held);
        drop(more);
        pool.backends()[0].eject();
        for _ in 0..4 {
            let l = pool.pick().expect("a backend");
            assert_eq!(l.backend().addr.to_string(), "10.0.0.2:8080");
        }
    }
}
