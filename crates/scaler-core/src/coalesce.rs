//! Coalescing identical in-flight queries: callers asking the same question of the same
//! source at the same time share one call and its answer.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

/// A call in flight: its id (to tell it from a later call under the same key) and its
/// shared future.
type Inflight<V> = (u64, Shared<BoxFuture<'static, V>>);

/// In-flight calls by key.
pub struct Coalescer<K, V: Clone> {
    inflight: Mutex<HashMap<K, Inflight<V>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl<K, V> Default for Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The answer for `key`: joins a call already in flight, or starts `call` and lets
    /// later callers join it until it finishes. Returns the answer and whether this caller
    /// joined another's call.
    pub async fn run<F>(self: &Arc<Self>, key: K, call: F) -> (V, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (id, shared, joined) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some((id, s)) => (*id, s.clone(), true),
                None => {
                    let id = self
                        .next_id
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let shared = call.boxed().shared();
                    map.insert(key.clone(), (id, shared.clone()));
                    (id, shared, false)
                }
            }
        };
        let value = shared.await;
        if !joined {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&key).is_some_and(|(i, _)| *i == id) {
                map.remove(&key);
            }
        }
        (value, joined)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_identical_calls_share_one() {
        let c: Arc<Coalescer<&'static str, u32>> = Arc::new(Coalescer::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (c, calls) = (c.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                c.run("q", async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    42
                })
                .await
            }));
        }
        let mut joined = 0;
        for t in tasks {
            let (v, j) = t.await.expect("task");
            assert_eq!(v, 42);
            joined += usize::from(j);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 49);
        assert_eq!(c.in_flight(), 0, "finished calls are forgotten");
        // A later call runs again.
        let calls2 = calls.clone();
        let (v, j) = c
            .run("q", async move {
                calls2.fetch_add(1, Ordering::SeqCst);
                7
            })
            .await;
        assert_eq!((v, j, calls.load(Ordering::SeqCst)), (7, false, 2));
    }

    #[tokio::test]
    async fn different_keys_do_not_share() {
        let c: Arc<Coalescer<u8, u8>> = Arc::new(Coalescer::default());
        let (a, b) = tokio::join!(c.run(1, async { 1 }), c.run(2, async { 2 }));
        assert_eq!((a.0, b.0), (1, 2));
    }
}
