//! The seed examples behave as the articles say, on the real cluster and the real sources.
//! Each ScaledObject, TriggerAuthentication and Secret is the article's YAML; only what
//! points outside this machine changes (server addresses and credentials, the Prometheus
//! query, whose metric needs kube-state-metrics) and `namespace: default` is dropped so
//! each test keeps to its own namespace. The HPA decisions are the real controller's.

use chrono::{Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::cron::{hpa_api, raw_metric, wait_for_hpa_named, wait_for_metric};
use crate::sources::mariadb;
use crate::{apply, client, deployment, wait_for_replicas, Namespace};

/// A seed example's text.
pub(crate) fn seed(name: &str) -> String {
    let path = crate::repo_root().join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The articles' `go-helloworld` Deployment (without its Service).
pub(crate) fn seed_deployment() -> String {
    seed("deployment.yaml")
        .split("\n---")
        .find(|d| d.contains("kind: Deployment"))
        .expect("the seed Deployment")
        .to_string()
}

/// `name`'s documents with `replacements` applied, in the test's namespace.
fn seed_in_namespace(name: &str, replacements: &[(&str, &str)]) -> String {
    let mut text: String = seed(name)
        .lines()
        .filter(|l| l.trim() != "namespace: default")
        .map(|l| format!("{l}\n"))
        .collect();
    for (from, to) in replacements {
        assert!(text.contains(from), "{name} has no {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// `mysql.yaml`: `SELECT CEIL(COUNT(*)/6) FROM tasks WHERE state='running'` against
/// `queryValue: '5.0'`: 90 running tasks → 15 → 3 replicas, decided by the real HPA
/// reading a metric whose name holds a `?`.
#[tokio::test]
async fn mysql_seed_replicas_are_the_value_over_5() {
    let env = crate::sources::sources_env(&["mysql"]);
    // Only this test uses `tasks`, the table the article's query reads.
    let running = vec!["('running')"; 90].join(",");
    mariadb(
        &env,
        &format!(
            "CREATE TABLE IF NOT EXISTS tasks (id INT AUTO_INCREMENT PRIMARY KEY, state VARCHAR(16) NOT NULL); \
             DELETE FROM tasks; INSERT INTO tasks (state) VALUES {running}, ('done'), ('done');"
        ),
    );
    // With a driver option: KEDA names the metric after everything past the last `/`,
    // the option included, and the HPA asks for it with the `?` escaped.
    let dsn = format!(
        "{}:{}@tcp({}:{})/{}?tls=false",
        env["EVENTSCALE_MYSQL_USER"],
        env["EVENTSCALE_MYSQL_PASSWORD"],
        env["EVENTSCALE_MYSQL_HOST"],
        env["EVENTSCALE_MYSQL_PORT"],
        env["EVENTSCALE_MYSQL_DB"]
    );
    let ns = Namespace::create("e2e-seed-mysql");
    let yaml = seed_in_namespace(
        "mysql.yaml",
        &[("username:password@tcp(mysql:3306)/db_name", &dsn)],
    );
    apply(&ns.0, &format!("{}\n---\n{yaml}", seed_deployment()));
    let metric = format!("s0-mysql-{}?tls=false", env["EVENTSCALE_MYSQL_DB"]);
    let escaped = metric.replace('?', "%3F");
    let hpa = wait_for_hpa_named(&hpa_api(client().await, &ns.0), "keda-hpa-mysql-worker").await;
    let ext = &hpa.data["spec"]["metrics"][0]["external"];
    assert_eq!(ext["metric"]["name"], metric.as_str(), "{hpa:?}");
    assert_eq!(ext["target"]["averageValue"], "5");
    let list = raw_metric(&ns.0, &escaped, "mysql-worker");
    assert_eq!(list["items"][0]["value"], "15", "{list}");
    assert_eq!(list["items"][0]["metricName"], metric.as_str(), "{list}");
    wait_for_replicas(&ns.0, "go-helloworld", 3).await;
    mariadb(&env, "DELETE FROM tasks;");
    let list = raw_metric(&ns.0, &escaped, "mysql-worker");
    assert_eq!(list["items"][0]["value"], "0", "{list}");
}

/// `prometheus.yaml`: basic auth from the article's Secret and TriggerAuthentication,
/// `threshold: '5.0'`: a value of 15 → 3 replicas.
#[tokio::test]
async fn prometheus_seed_with_basic_auth_replicas_are_the_value_over_5() {
    let _shared = crate::prometheus::PROMETHEUS.lock().await;
    let env = crate::sources::sources_env(&["prometheus"]);
    let ns = Namespace::create("e2e-seed-prometheus");
    let user = format!("username: {}", env["EVENTSCALE_PROMETHEUS_USER"]);
    let password = format!("password: {}", env["EVENTSCALE_PROMETHEUS_PASSWORD"]);
    let yaml = seed_in_namespace(
        "prometheus.yaml",
        &[
            ("username: xxx", &user),
            ("password: xxx", &password),
            (
                "http://prometheus:9090",
                &env["EVENTSCALE_PROMETHEUS_AUTH_URL"],
            ),
            ("count(kube_pod_info{pod='nginx'})", "vector(15)"),
        ],
    );
    apply(&ns.0, &format!("{}\n---\n{yaml}", seed_deployment()));
    let hpa = wait_for_hpa_named(
        &hpa_api(client().await, &ns.0),
        "keda-hpa-prometheus-follower",
    )
    .await;
    assert_eq!(
        hpa.data["spec"]["metrics"][0]["external"]["metric"]["name"],
        "s0-prometheus"
    );
    let list = raw_metric(&ns.0, "s0-prometheus", "prometheus-follower");
    assert_eq!(list["items"][0]["value"], "15", "{list}");
    wait_for_replicas(&ns.0, "go-helloworld", 3).await;
}

/// `kubernetes-workload.yaml`: `podSelector: k1=v1, k2 notin (v1,v2)`, `value: '0.5'`:
/// two matching pods (and one that `notin` excludes) → 4 replicas.
#[tokio::test]
async fn workload_seed_replicas_are_matching_pods_over_half() {
    let ns = Namespace::create("e2e-seed-workload");
    apply(
        &ns.0,
        &deployment("matching", 2, &[("k1", "v1"), ("k2", "v3")]),
    );
    apply(
        &ns.0,
        &deployment("excluded", 1, &[("k1", "v1"), ("k2", "v2")]),
    );
    apply(
        &ns.0,
        &format!(
            "{}\n---\n{}",
            seed_deployment(),
            seed_in_namespace("kubernetes-workload.yaml", &[])
        ),
    );
    let metric = format!("s0-workload-{}", ns.0);
    wait_for_hpa_named(
        &hpa_api(client().await, &ns.0),
        "keda-hpa-workload-follower",
    )
    .await;
    wait_for_metric(&ns.0, &metric, "workload-follower", "2", false).await;
    wait_for_replicas(&ns.0, "go-helloworld", 4).await;
}

/// `cron-business-hours.yaml`: 2 replicas from 08:00 to 18:00 Europe/Paris, Monday to
/// Friday, else 0: the metric says which, for the moment the test runs.
#[tokio::test]
async fn cron_business_hours_seed_follows_paris_office_hours() {
    let ns = Namespace::create("e2e-seed-business-hours");
    apply(
        &ns.0,
        &format!(
            "{}\n---\n{}",
            seed_deployment(),
            seed_in_namespace("cron-business-hours.yaml", &[])
        ),
    );
    let metric = "s0-cron-Europe-Paris-0008xx1-5-0018xx1-5";
    let hpa = wait_for_hpa_named(&hpa_api(client().await, &ns.0), "keda-hpa-go-helloworld").await;
    assert_eq!(
        hpa.data["spec"]["metrics"][0]["external"]["metric"]["name"],
        metric
    );
    let inside = || {
        let paris = Utc::now().with_timezone(&"Europe/Paris".parse::<Tz>().expect("zone"));
        !matches!(paris.weekday(), Weekday::Sat | Weekday::Sun) && (8..18).contains(&paris.hour())
    };
    // Read away from the window's edges, so the clock does not move under the check.
    let before = inside();
    let list = raw_metric(&ns.0, metric, "go-helloworld");
    if before == inside() {
        let want = if before { "2" } else { "0" };
        assert_eq!(list["items"][0]["value"], want, "{list}");
    }
}
