//! Shared clients by configuration (a connection pool per DSN, an HTTP client per TLS
//! setup, a connection per server: [`Connections`]), forgotten once unused for a while: a deleted ScaledObject or rotated
//! credentials must not keep old connections and secrets alive for the process's life.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unused entry is kept.
pub const IDLE: Duration = Duration::from_secs(15 * 60);

/// How often at most the map is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Inner<K, V> {
    entries: HashMap<K, (V, Instant)>,
    last_sweep: Instant,
}

/// Values by key, each remembering when it was last used.
pub struct IdleMap<K, V> {
    inner: Mutex<Inner<K, V>>,
    idle: Duration,
}

impl<K: Hash + Eq, V: Clone> IdleMap<K, V> {
    /// A map forgetting entries unused for `idle`.
    pub fn new(idle: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `key`'s value, now counted as used.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.lock();
        let (value, used) = inner.entries.get_mut(key)?;
        *used = Instant::now();
        Some(value.clone())
    }

    /// Put `value` under `key` (replacing any); returns the replaced value.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        self.lock()
            .entries
            .insert(key, (value, Instant::now()))
            .map(|(v, _)| v)
    }

    /// Take out the entries unused for the idle time, at most once a minute (the caller
    /// closes them if they need closing).
    pub fn sweep(&self) -> Vec<V> {
        let mut inner = self.lock();
        if inner.last_sweep.elapsed() < SWEEP_EVERY.min(self.idle) {
            return Vec::new();
        }
        inner.last_sweep = Instant::now();
        let idle = self.idle;
        let mut out = Vec::new();
        inner.entries.retain(|_, (v, used)| {
            let keep = used.elapsed() < idle;
            if !keep {
                out.push(v.clone());
            }
            keep
        });
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// One connection per key (a server and its credentials), made on first use and made
/// again once it is found unusable or forgotten; forgotten with its key once unused for
/// [`IDLE`]. Callers for the same key wait for one connection attempt, not one each.
pub struct Connections<K, C> {
    slots: IdleMap<K, std::sync::Arc<tokio::sync::Mutex<Option<C>>>>,
}

impl<K: Hash + Eq + Clone, C: Clone> Default for Connections<K, C> {
    fn default() -> Self {
        Self {
            slots: IdleMap::new(IDLE),
        }
    }
}

impl<K: Hash + Eq + Clone, C: Clone> Connections<K, C> {
    fn slot(&self, key: &K) -> std::sync::Arc<tokio::sync::Mutex<Option<C>>> {
        drop(self.slots.sweep());
        if let Some(s) = self.slots.get(key) {
            return s;
        }
        let s = std::sync::Arc::new(tokio::sync::Mutex::new(None));
        self.slots.insert(key.clone(), s.clone());
        s
    }

    /// `key`'s connection while `usable` says it is, else a new one from `connect`.
    pub async fn get<E, F: std::future::Future<Output = Result<C, E>>>(
        &self,
        key: &K,
        usable: impl Fn(&C) -> bool,
        connect: impl FnOnce() -> F,
    ) -> Result<C, E> {
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some(c) = held.as_ref().filter(|c| usable(c)) {
            return Ok(c.clone());
        }
        let c = connect().await?;
        *held = Some(c.clone());
        Ok(c)
    }

    /// Drop `key`'s connection (after it failed): the next [`Self::get`] connects again.
    pub async fn forget(&self, key: &K) {
        if let Some(slot) = self.slots.get(key) {
            *slot.lock().await = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_entries_are_swept_used_ones_kept() {
        let m: IdleMap<&str, u32> = IdleMap::new(Duration::from_millis(50));
        assert_eq!(m.insert("a", 1), None);
        assert_eq!(m.insert("b", 2), None);
        assert_eq!(m.insert("a", 3), Some(1));
        // Too soon: nothing is idle yet.
        assert!(m.sweep().is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(m.get(&"a"), Some(3), "a used just now");
        let mut gone = m.sweep();
        gone.sort();
        assert_eq!(gone, vec![2]);
        assert_eq!((m.get(&"a"), m.get(&"b"), m.len()), (Some(3), None, 1));
        // Swept at most once per interval.
        assert!(m.sweep().is_empty());
    }

    #[tokio::test]
    async fn a_connection_is_made_once_and_again_when_unusable_or_forgotten() {
        let conns: Connections<&str, u32> = Connections::default();
        let made = std::sync::atomic::AtomicU32::new(0);
        let connect = || async {
            Ok::<_, String>(made.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1)
        };
        assert_eq!(conns.get(&"a", |_| true, connect).await, Ok(1));
        assert_eq!(conns.get(&"a", |_| true, connect).await, Ok(1));
        assert_eq!(conns.get(&"a", |c| *c != 1, connect).await, Ok(2));
        conns.forget(&"a").await;
        assert_eq!(conns.get(&"a", |_| true, connect).await, Ok(3));
        assert_eq!(conns.get(&"b", |_| true, connect).await, Ok(4));
        let failed = conns
            .get(&"c", |_| true, || async { Err::<u32, _>("refused") })
            .await;
        assert_eq!(failed, Err("refused"));
    }
}
