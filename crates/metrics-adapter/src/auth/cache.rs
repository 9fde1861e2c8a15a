//! A small time-bounded cache for TokenReview and SubjectAccessReview answers.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Entries older than `ttl` are misses; at most `capacity` entries are kept.
///
/// Entries are filed under their key's (randomly seeded) hash, so a lookup needs only
/// something that hashes like the key ([`TtlCache::get_by`]), not an owned key; lookups
/// share a read lock. The lock is never held across an await: callers look up, release,
/// call the apiserver, then insert.
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    hasher: RandomState,
    entries: RwLock<HashMap<u64, (K, Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    /// A cache answering for `ttl` with room for `capacity` entries.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            hasher: RandomState::new(),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The fresh value for `key`, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        self.get_by(key, |k| k == key)
    }

    /// The fresh value for the key that `probe` hashes like and `is_key` recognises.
    /// `probe` must hash exactly as the key does (a tuple of references to the key's
    /// fields does).
    pub fn get_by(&self, probe: impl Hash, is_key: impl FnOnce(&K) -> bool) -> Option<V> {
        let h = self.hasher.hash_one(probe);
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&h)
            .filter(|(k, at, _)| at.elapsed() < self.ttl && is_key(k))
            .map(|(_, _, v)| v.clone())
    }

    /// Remember `value` for `key` from now on.
    pub fn insert(&self, key: K, value: V) {
        let h = self.hasher.hash_one(&key);
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&h) {
            let ttl = self.ttl;
            entries.retain(|_, (_, at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Still full of fresh entries: a burst of distinct callers. Start over rather
                // than grow without bound; the cost is one more review per caller.
                entries.clear();
            }
        }
        // A different key with the same 64-bit hash replaces the older: a miss, never a
        // wrong answer (lookups compare the key).
        entries.insert(h, (key, Instant::now(), value));
    }

    /// How many entries are held (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
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

    #[test]
    fn looks_up_by_reference() {
        let c: TtlCache<(String, u32), &str> = TtlCache::new(Duration::from_secs(60), 10);
        c.insert(("alice".to_string(), 1), "yes");
        let name = String::from("alice");
        assert_eq!(
            c.get_by((&name, &1u32), |(n, i)| *n == name && *i == 1),
            Some("yes")
        );
        assert_eq!(
            c.get_by((&name, &2u32), |(n, i)| *n == name && *i == 2),
            None
        );
        // A probe that hashes alike but is not the key is a miss.
        assert_eq!(c.get_by((&name, &1u32), |_| false), None);
    }
}
