//! Coalescing identical in-flight queries: callers asking the same question of the same
//! source at the same time share one call and its answer. With a linger, a finished call
//! keeps answering its key for that long (for keys that name their moment, such as a
//! query at a given second).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

/// A call in flight: its id (to tell it from a later call under the same key), its shared
/// future, and when the task driving it is done.
type Inflight<V> = (
    u64,
    Shared<BoxFuture<'static, V>>,
    Shared<BoxFuture<'static, ()>>,
);

/// In-flight calls by key.
pub struct Coalescer<K, V: Clone> {
    inflight: Mutex<HashMap<K, Inflight<V>>>,
    next_id: std::sync::atomic::AtomicU64,
    linger: std::time::Duration,
}

impl<K, V> Default for Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::with_linger(std::time::Duration::ZERO)
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A coalescer whose finished calls keep answering their key for `linger`. Calls run
    /// on a Tokio runtime.
    pub fn with_linger(linger: std::time::Duration) -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            linger,
        }
    }

    /// The answer for `key`: joins a call already in flight, or starts `call` and lets
    /// later callers join it until it finishes. Returns the answer and whether this caller
    /// joined another's call.
    pub async fn run<F>(self: &Arc<Self>, key: K, call: F) -> (V, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (shared, done, joined) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some((_, s, d)) => (s.clone(), d.clone(), true),
                None => {
                    let id = self
                        .next_id
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // The call forgets itself when it finishes, whoever drives it to the end:
                    // the caller that started it may be gone (an HPA read cancelled), and a
                    // finished call left in the map would answer every later caller with its
                    // old value.
                    let this = Arc::downgrade(self);
                    let k = key.clone();
                    let linger = self.linger;
                    let shared = async move {
                        let value = call.await;
                        if linger.is_zero() {
                            if let Some(this) = this.upgrade() {
                                this.forget(&k, id);
                            }
                        } else {
                            tokio::spawn(async move {
                                tokio::time::sleep(linger).await;
                                if let Some(this) = this.upgrade() {
                                    this.forget(&k, id);
                                }
                            });
                        }
                        value
                    }
                    .boxed()
                    .shared();
                    // Driven to its end on its own task, and only there: if every caller is
                    // cancelled (HPA reads whose clients went away), the call still finishes
                    // and forgets itself instead of staying half done in the map, holding
                    // whatever it holds (a broker connection) until someone asks the same
                    // again. And a caller never runs the call inside its own poll: a call
                    // whose answers are already waiting on its sockets could finish there,
                    // before the callers polled next to it (a `join_all`, a round of polls)
                    // arrive, and each of them would start the same call again.
                    let done = tokio::spawn(shared.clone().map(drop))
                        .map(drop)
                        .boxed()
                        .shared();
                    map.insert(key, (id, shared.clone(), done.clone()));
                    (shared, done, false)
                }
            }
        };
        // Done or gone (its runtime shutting down): either way the answer is one poll away,
        // driven here in the second case.
        done.await;
        (shared.await, joined)
    }

    /// Remove `key`'s call if it is still call `id` (not a later one under the same key).
    fn forget(&self, key: &K, id: u64) {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|(i, _, _)| *i == id) {
            map.remove(key);
        }
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

    /// A call that finishes the moment it is first polled (its answers already waiting on
    /// its sockets, as on a loaded machine) is still one call for callers polled side by
    /// side: none of them runs it inside its own poll.
    #[tokio::test]
    async fn a_call_that_never_waits_is_still_shared_by_callers_polled_together() {
        let c: Arc<Coalescer<&'static str, u32>> = Arc::new(Coalescer::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let answers = futures::future::join_all((0..20).map(|_| {
            let calls = calls.clone();
            c.run("q", async move {
                calls.fetch_add(1, Ordering::SeqCst);
                42
            })
        }))
        .await;
        assert!(answers.iter().all(|(v, _)| *v == 42));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for 20 callers");
        assert_eq!(answers.iter().filter(|(_, joined)| *joined).count(), 19);
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_lingering_call_answers_late_comers_then_is_forgotten() {
        let c: Arc<Coalescer<&'static str, u32>> =
            Arc::new(Coalescer::with_linger(Duration::from_millis(100)));
        let calls = Arc::new(AtomicUsize::new(0));
        let call = |v: u32| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                v
            }
        };
        assert_eq!(c.run("q", call(1)).await, (1, false));
        // Finished, but within the linger: the same answer, no new call.
        assert_eq!(c.run("q", call(2)).await, (1, true));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.run("q", call(3)).await, (3, false));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// The caller that started a call goes away before it finishes (a cancelled HPA read):
    /// a caller that joined finishes it, and the call is forgotten, so the next question
    /// gets a new answer rather than the old one forever.
    #[tokio::test]
    async fn a_call_outlives_its_starter_and_is_then_forgotten() {
        let c: Arc<Coalescer<&'static str, u32>> = Arc::new(Coalescer::default());
        let slow = |v: u32| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            v
        };
        let starter = tokio::time::timeout(Duration::from_millis(5), c.run("q", slow(1)));
        assert!(starter.await.is_err(), "the starter gave up");
        let (v, joined) = c.run("q", slow(2)).await;
        assert_eq!((v, joined), (1, true), "joined the call still in flight");
        assert_eq!(c.in_flight(), 0, "and it forgot itself when it finished");
        assert_eq!(
            c.run("q", slow(3)).await,
            (3, false),
            "a new call, a new answer"
        );
    }

    #[tokio::test]
    async fn different_keys_do_not_share() {
        let c: Arc<Coalescer<u8, u8>> = Arc::new(Coalescer::default());
        let (a, b) = tokio::join!(c.run(1, async { 1 }), c.run(2, async { 2 }));
        assert_eq!((a.0, b.0), (1, 2));
    }
    #[tokio::test]
    async fn a_call_whose_callers_all_left_still_finishes_and_is_forgotten() {
        let c: Arc<Coalescer<&'static str, u32>> = Arc::new(Coalescer::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let call = |calls: Arc<AtomicUsize>| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            7
        };
        // The only caller gives up before the answer.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(10), c.run("q", call(calls.clone()))).await;
        assert!(gave_up.is_err());
        assert_eq!(c.in_flight(), 1);
        // Nobody drives it, yet it finishes and leaves the map.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(c.in_flight(), 0);
        // A later caller gets a call of its own.
        let (v, joined) = c.run("q", call(calls.clone())).await;
        assert_eq!((v, joined), (7, false));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
