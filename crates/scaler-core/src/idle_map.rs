//! Shared clients by configuration (a connection pool per DSN, an HTTP client per TLS
//! setup), forgotten once unused for a while: a deleted ScaledObject or rotated
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
}
