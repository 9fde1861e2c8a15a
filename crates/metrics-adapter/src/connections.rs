//! The API port's connections: how many may be open, how long one may sit without a
//! request, and which one gives way when the port is full.
//!
//! kube-apiserver's own secure port closes a connection that has not sent a whole request
//! header within 32 s of opening and one idle 90 s after its last request; these are the
//! defaults here too. It sets no cap on connections; here one is set, because every open
//! TLS connection holds buffers: [`Limits::max_connections`] bounds the memory thousands
//! of idle or slow clients can take. When the port is full a new connection is taken by
//! closing one that is not answering a request (one that never completed a request first,
//! then the longest idle), so an attacker holding connections open cannot keep the
//! aggregator's reconnect out; only when every connection is busy is the new one refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How the API port treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; the next one closes an idle one or is refused.
    pub max_connections: usize,
    /// How long a new connection may take to complete its first request's header.
    pub first_request: Duration,
    /// How long a connection may stay open after its last request ends.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            first_request: Duration::from_secs(32),
            idle: Duration::from_secs(90),
        }
    }
}

/// Why a connection was closed by the server rather than by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No request within [`Limits::first_request`] or [`Limits::idle`].
    Idle,
    /// Closed to make room for a new connection.
    Evicted,
    /// Refused at accept: every connection was answering a request.
    Refused,
}

impl Closed {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
        }
    }
}

/// One open connection's state, shared by its task and its requests.
#[derive(Debug)]
pub struct Conn {
    since: Instant,
    /// Requests being answered.
    busy: AtomicU32,
    /// Whether a request has been answered on it.
    served: AtomicBool,
    /// When the last request ended (or the connection opened), in ms since `since`.
    last_ms: AtomicU64,
    /// Told when the connection must close to make room.
    evict: Notify,
}

impl Conn {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            busy: AtomicU32::new(0),
            served: AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
            evict: Notify::new(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.since).as_millis()).unwrap_or(u64::MAX)
    }

    /// A request begins; the guard ends it.
    pub fn request(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves when the connection must close to make room for another.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    /// When the connection is to close for want of requests, given nothing changes; `None`
    /// while a request is being answered.
    pub fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let wait = if self.served.load(Ordering::Acquire) {
            limits.idle
        } else {
            limits.first_request
        };
        Some(self.since + Duration::from_millis(self.last_ms.load(Ordering::Acquire)) + wait)
    }

    fn snapshot(&self) -> Candidate {
        Candidate {
            busy: self.busy.load(Ordering::Acquire) > 0,
            served: self.served.load(Ordering::Acquire),
            last: self.since + Duration::from_millis(self.last_ms.load(Ordering::Acquire)),
        }
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let conn = &self.0;
        conn.last_ms
            .store(conn.ms(Instant::now()), Ordering::Release);
        conn.served.store(true, Ordering::Release);
        conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What eviction looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Answering a request now.
    pub busy: bool,
    /// Has answered a request.
    pub served: bool,
    /// When its last request ended, or it opened.
    pub last: Instant,
}

/// Which connection gives way to a new one: none that is answering a request; of the
/// others, one that never completed a request before one that did, and of those the one
/// waiting longest.
pub fn victim<K: Copy>(candidates: impl IntoIterator<Item = (K, Candidate)>) -> Option<K> {
    candidates
        .into_iter()
        .filter(|(_, c)| !c.busy)
        .min_by_key(|(_, c)| (c.served, c.last))
        .map(|(k, _)| k)
}

/// The open connections of one port.
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// A connection's place in the registry, given up when dropped.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
    id: u64,
    /// The connection's state.
    pub conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut open) = self.registry.open.lock() {
            open.remove(&self.id);
        }
    }
}

impl Registry {
    /// An empty registry with these limits.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take a place for a new connection, closing another to make room when the port is
    /// full. `Err(Closed::Refused)` when every open connection is answering a request;
    /// `Ok((place, true))` when one was evicted for it.
    pub fn admit(self: &Arc<Self>) -> Result<(Registered, bool), Closed> {
        let now = Instant::now();
        let mut open = self.open.lock().map_err(|_| Closed::Refused)?;
        let mut evicted = false;
        if open.len() >= self.limits.max_connections.max(1) {
            let id =
                victim(open.iter().map(|(id, c)| (*id, c.snapshot()))).ok_or(Closed::Refused)?;
            if let Some(conn) = open.remove(&id) {
                // A stored permit: the connection's task sees it even if not waiting now.
                conn.evict.notify_one();
                evicted = true;
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(now));
        open.insert(id, conn.clone());
        Ok((
            Registered {
                registry: self.clone(),
                id,
                conn,
            },
            evicted,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn the_victim_is_never_busy_and_prefers_connections_that_never_served() {
        let t = Instant::now();
        let c = |busy, served, ms| Candidate {
            busy,
            served,
            last: at(t, ms),
        };
        // A busy connection is never taken, however old.
        assert_eq!(
            victim([(1, c(true, false, 0)), (2, c(false, true, 50))]),
            Some(2)
        );
        assert_eq!(victim([(1, c(true, false, 0))]), None);
        assert_eq!(victim::<u8>([]), None);
        // One that never completed a request goes before one that did, even a newer one:
        // the aggregator's connection, idle between two reads, outlives a flood of new
        // connections that send nothing.
        assert_eq!(
            victim([
                (1, c(false, true, 0)),
                (2, c(false, false, 90)),
                (3, c(false, false, 80))
            ]),
            Some(3)
        );
        // Among the served, the longest idle.
        assert_eq!(
            victim([(1, c(false, true, 30)), (2, c(false, true, 10))]),
            Some(2)
        );
    }

    #[tokio::test]
    async fn a_full_registry_evicts_an_idle_connection_or_refuses() {
        let reg = Registry::new(Limits {
            max_connections: 2,
            ..Limits::default()
        });
        let (a, evicted) = reg.admit().expect("room");
        assert!(!evicted);
        let (b, _) = reg.admit().expect("room");
        let serving_b = b.conn.request();
        // Full: `a` (never served, not busy) gives way and is told so.
        let (c, evicted) = reg.admit().expect("a gives way");
        assert!(evicted);
        tokio::time::timeout(Duration::from_secs(1), a.conn.evicted())
            .await
            .expect("the evicted connection is told");
        assert_eq!(reg.len(), 2);
        // `a`'s task ending later must not remove anyone else.
        drop(a);
        assert_eq!(reg.len(), 2);
        // Both busy: the next is refused.
        let serving_c = c.conn.request();
        assert_eq!(reg.admit().map(|_| ()), Err(Closed::Refused));
        drop(serving_c);
        drop(serving_b);
        assert!(reg.admit().is_ok());
    }

    #[test]
    fn the_idle_deadline_starts_over_after_each_request_and_waits_while_busy() {
        let limits = Limits {
            max_connections: 10,
            first_request: Duration::from_secs(5),
            idle: Duration::from_secs(60),
        };
        let conn = Arc::new(Conn::new(Instant::now()));
        let first = conn.idle_deadline(&limits).expect("idle");
        assert_eq!(first, conn.since + Duration::from_secs(5));
        let req = conn.request();
        assert_eq!(conn.idle_deadline(&limits), None);
        drop(req);
        let after = conn.idle_deadline(&limits).expect("idle");
        assert!(after >= conn.since + Duration::from_secs(60), "{after:?}");
    }
}
