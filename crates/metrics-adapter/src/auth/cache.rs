//! A small time-bounded cache for TokenReview and SubjectAccessReview answers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries older than `ttl` are misses; at most `capacity` entries are kept.
///
/// The lock is never held across an await: callers look up, release, call the apiserver,
/// then insert.
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// A cache answering for `ttl` with room for `capacity` entries.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The fresh value for `key`, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Remember `value` for `key` from now on.
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Still full of fresh entries: a burst of distinct callers. Start over rather
                // than grow without bound; the cost is one more review per caller.
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// How many entries are held (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_until_the_ttl_then_misses() {
        let c = TtlCache::new(Duration::from_millis(50), 10);
        c.insert("a", 1);
        assert_eq!(c.get(&"a"), Some(1));
        assert_eq!(c.get(&"b"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&"a"), None);
    }

    #[test]
    fn stays_within_capacity() {
        let c = TtlCache::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            c.insert(i, i);
            assert!(c.len() <= 3, "len {} after {i}", c.len());
        }
        assert_eq!(c.get(&9), Some(9));
    }
}
