//! What the interceptor counts per route: requests in flight (held ones included), the
//! part of them the workload is serving, and requests per second over the route's window.
//! A request is counted the moment it is routed, before it waits for the workload, so that
//! held requests are what wakes it.
//!
//! A concurrency route scales on the requests the workload is serving, not on the ones
//! held while it starts: the wait inflates the count only because the workload was at
//! zero (1,000 req/s held for 1.5 s is 1,500 requests, for an app that serves the same
//! load with 50 in flight), and an HPA reading that spike would scale to its maximum.
//! Held requests make the route active at once, and the HPA scales on what the workload
//! then serves.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scaler_core::http_scaled_object::ScalingMetric;
use tokio::sync::watch;

/// A route's counts, shared by the proxy, the admin port and the scaler.
#[derive(Debug)]
pub struct Counts {
    in_flight: AtomicU64,
    held: AtomicU64,
    serving: AtomicU64,
    requests: AtomicU64,
    rate: Option<Mutex<RateWindow>>,
    metric: ScalingMetric,
    /// Whether the route has traffic: flips to true the moment a request arrives.
    active: watch::Sender<bool>,
}

impl Counts {
    /// Counts for a route scaled on `metric`.
    pub fn new(metric: ScalingMetric) -> Self {
        let rate = match metric {
            ScalingMetric::RequestRate {
                window,
                granularity,
                ..
            } => Some(Mutex::new(RateWindow::new(window, granularity))),
            ScalingMetric::Concurrency { .. } => None,
        };
        Self {
            in_flight: AtomicU64::new(0),
            held: AtomicU64::new(0),
            serving: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rate,
            metric,
            active: watch::Sender::new(false),
        }
    }

    /// Counts a request that arrives; it stays in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(rate) = &self.rate {
            lock(rate).add(Instant::now());
        }
        self.active
            .send_if_modified(|a| !std::mem::replace(a, true));
        InFlight {
            counts: self.clone(),
        }
    }

    /// Counts a request held for a ready endpoint until the guard drops.
    pub fn hold(self: &Arc<Self>) -> Held {
        self.held.fetch_add(1, Ordering::AcqRel);
        Held {
            counts: self.clone(),
        }
    }

    /// Counts a request sent to the workload until the guard drops (its response ends).
    pub fn serve(self: &Arc<Self>) -> Serving {
        self.serving.fetch_add(1, Ordering::AcqRel);
        Serving {
            counts: self.clone(),
        }
    }

    /// Requests the workload is serving (sent, not yet answered to the end).
    pub fn serving(&self) -> u64 {
        self.serving.load(Ordering::Acquire)
    }

    /// Requests in flight, held ones included.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests held for a ready endpoint.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Requests routed since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests per second over the window (0 for a concurrency route).
    pub fn rate(&self) -> f64 {
        self.rate
            .as_ref()
            .map_or(0.0, |r| lock(r).per_second(Instant::now()))
    }

    /// The value the route scales on: requests the workload is serving, or the rate.
    pub fn value(&self) -> f64 {
        match self.metric {
            ScalingMetric::Concurrency { .. } => self.serving() as f64,
            ScalingMetric::RequestRate { .. } => self.rate(),
        }
    }

    /// Whether the route has traffic: a request in flight (held or served), or a rate.
    pub fn is_active(&self) -> bool {
        self.in_flight() > 0 || self.value() > 0.0
    }

    /// The metric the route scales on.
    pub fn metric(&self) -> ScalingMetric {
        self.metric
    }

    /// Activity: subscribe to hear the moment a request arrives.
    pub fn active(&self) -> watch::Receiver<bool> {
        self.active.subscribe()
    }

    /// Re-derives activity from the counts (or `elsewhere`: another replica has traffic),
    /// so that a quiet route turns inactive and one busy on another replica turns active
    /// (a request here turns it active at once, without waiting for this).
    pub fn refresh_activity(&self, elsewhere: bool) {
        let now = self.is_active() || elsewhere;
        self.active
            .send_if_modified(|a| std::mem::replace(a, now) != now);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    counts: Arc<Counts>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counts.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request the workload is serving; dropping it ends it.
#[derive(Debug)]
pub struct Serving {
    counts: Arc<Counts>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.counts.serving.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request waiting for a ready endpoint; dropping it ends the wait.
#[derive(Debug)]
pub struct Held {
    counts: Arc<Counts>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counts.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Requests counted in buckets of `granularity` over `window`.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    granularity: Duration,
    start: Instant,
    /// (bucket index since `start`, requests in it), oldest first.
    buckets: VecDeque<(u64, u64)>,
}

impl RateWindow {
    /// An empty window.
    pub fn new(window: Duration, granularity: Duration) -> Self {
        Self {
            window,
            granularity: granularity.max(Duration::from_millis(1)),
            start: Instant::now(),
            buckets: VecDeque::new(),
        }
    }

    fn index(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.start).as_nanos() / self.granularity.as_nanos()) as u64
    }

    fn expire(&mut self, now: Instant) {
        let current = self.index(now);
        let span = (self.window.as_nanos() / self.granularity.as_nanos()).max(1) as u64;
        while let Some(&(i, _)) = self.buckets.front() {
            if i + span <= current {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// Counts one request at `at`.
    pub fn add(&mut self, at: Instant) {
        let i = self.index(at);
        match self.buckets.back_mut() {
            Some((last, n)) if *last == i => *n += 1,
            _ => self.buckets.push_back((i, 1)),
        }
        self.expire(at);
    }

    /// Requests per second over the window ending at `now`.
    pub fn per_second(&mut self, now: Instant) -> f64 {
        self.expire(now);
        let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
        total as f64 / self.window.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_from_arrival_to_the_guards_drop() {
        let c = Arc::new(Counts::new(ScalingMetric::Concurrency { target: 10.0 }));
        let mut active = c.active();
        assert!(!*active.borrow_and_update());
        let a = c.begin();
        assert!(
            active.has_changed().expect("open"),
            "the first request is pushed at once"
        );
        assert!(*active.borrow_and_update());
        let held = c.hold();
        let b = c.begin();
        assert_eq!((c.in_flight(), c.held(), c.requests()), (2, 1, 2));
        assert_eq!(
            c.value(),
            0.0,
            "nothing served yet: held requests are not the load"
        );
        assert!(c.is_active(), "but they make the route active");
        drop(held);
        let served = c.serve();
        assert_eq!(c.value(), 1.0);
        drop(served);
        drop(a);
        c.refresh_activity(false);
        assert!(!active.has_changed().expect("open"), "still one in flight");
        drop(b);
        assert_eq!((c.in_flight(), c.held(), c.requests()), (0, 0, 2));
        c.refresh_activity(false);
        assert!(!*active.borrow_and_update(), "quiet: inactive");
    }

    #[test]
    fn the_rate_is_requests_per_second_over_the_window() {
        let mut w = RateWindow::new(Duration::from_secs(10), Duration::from_secs(1));
        let t0 = w.start;
        for i in 0..50 {
            w.add(t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(w.per_second(t0 + Duration::from_secs(5)), 5.0);
        // 50 requests in the first 5 s, 10 a bucket; at 12.5 s the window holds buckets
        // 3 to 12, so 20 of them.
        assert_eq!(w.per_second(t0 + Duration::from_millis(12_500)), 2.0);
        assert_eq!(w.per_second(t0 + Duration::from_secs(30)), 0.0);
    }
}
