//! `useCachedMetrics` and the load on the event source: five ScaledObjects asking
//! Prometheus the same question every 2 s cost it about one request per interval, not
//! five, and the HPA's reads are answered from eventscale's cache.

use std::time::Duration;

use crate::cron::{hpa_api, raw_metric};
use crate::prometheus::{prometheus_url, PROMETHEUS};
use crate::sources::prometheus_query_requests;
use crate::{apply, client, eventually, Namespace};

const N: usize = 5;
const INTERVAL: u64 = 2;

#[tokio::test]
async fn cached_metrics_and_one_query_per_interval() {
    let _alone = PROMETHEUS.lock().await;
    let url = prometheus_url();
    let ns = Namespace::create("e2e-cache");
    let yaml = crate::scaled_deployments(N, &crate::one_cached_question(&url, INTERVAL));
    apply(&ns.0, &yaml);
    let client = client().await;
    let hpas = hpa_api(client, &ns.0);
    eventually(Duration::from_secs(60), "all HPAs", || async {
        let list = hpas.list(&Default::default()).await.ok()?;
        (list.items.len() == N).then_some(())
    })
    .await;
    for i in 0..N {
        let so = format!("web{i}");
        eventually(Duration::from_secs(30), "the cached value", || {
            let v = raw_metric(&ns.0, "s0-prometheus", &so);
            async move { (v["items"][0]["value"] == "21").then_some(()) }
        })
        .await;
    }

    let hits_before = crate::eventscale_metric("eventscale_metric_cache_total{result=\"Hit\"}");
    let before = prometheus_query_requests(&url);
    let window = Duration::from_secs(5 * INTERVAL);
    tokio::time::sleep(window).await;
    let after = prometheus_query_requests(&url);
    let hits_after = crate::eventscale_metric("eventscale_metric_cache_total{result=\"Hit\"}");
    let requests = after - before;
    let intervals = (window.as_secs() / INTERVAL) as f64;
    println!(
        "{N} ScaledObjects, {intervals} polling intervals: Prometheus received {requests} queries; {} HPA reads answered from the cache",
        hits_after - hits_before
    );
    // Aligned polls coalesce into one query per interval (±1 at the window's edges, and a
    // stray read from another test's leftovers); without it this would be ≥ N × intervals.
    assert!(
        requests <= intervals + 3.0,
        "{requests} queries in {intervals} intervals for {N} identical ScaledObjects"
    );
    assert!(
        requests >= intervals - 1.0,
        "polling stopped? {requests} queries"
    );
    assert!(
        hits_after - hits_before >= N as f64,
        "the HPA's reads hit the cache"
    );
}
