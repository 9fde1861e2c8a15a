//! Shared by the test binaries that use the real event sources: start them with
//! `e2e/sources.sh up <source>...` (idempotent) and read the variables `sources.sh env`
//! prints. Included with `#[path]` so each test crate compiles its own copy.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Start `sources` and return `sources.sh env` as a map.
pub fn sources_env(sources: &[&str]) -> BTreeMap<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/sources.sh");
    let up = Command::new("bash")
        .arg(&script)
        .arg("up")
        .args(sources)
        .status()
        .expect("e2e/sources.sh runs");
    assert!(
        up.success(),
        "e2e/sources.sh up {sources:?} failed; see above"
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg("env")
        .output()
        .expect("e2e/sources.sh env");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Requests the Prometheus server at `base` has answered on `/api/v1/query`, from its own
/// `/metrics` (0 when it cannot be read).
pub fn prometheus_query_requests(base: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("{base}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("prometheus_http_requests_total{")
                && l.contains("handler=\"/api/v1/query\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Run `sql` in the test database with the `mariadb` client, asserting success.
pub fn mariadb(env: &std::collections::BTreeMap<String, String>, sql: &str) {
    let ok = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            &env["EVENTSCALE_MYSQL_HOST"],
            "-P",
            &env["EVENTSCALE_MYSQL_PORT"],
        ])
        .arg(format!("-u{}", env["EVENTSCALE_MYSQL_USER"]))
        .arg(format!("-p{}", env["EVENTSCALE_MYSQL_PASSWORD"]))
        .arg(&env["EVENTSCALE_MYSQL_DB"])
        .args(["-e", sql])
        .status()
        .expect("mariadb client");
    assert!(ok.success(), "{sql}");
}

/// `table` in the test database as a queue of `rows` rows (created if missing, emptied
/// first): what the ScaledJob tests and figures count with `SELECT COUNT(*)`.
pub fn mysql_queue(env: &BTreeMap<String, String>, table: &str, rows: usize) {
    let fill = if rows == 0 {
        String::new()
    } else {
        format!(
            "INSERT INTO {table} () VALUES {};",
            vec!["()"; rows].join(",")
        )
    };
    mariadb(
        env,
        &format!(
            "CREATE TABLE IF NOT EXISTS {table} (id INT AUTO_INCREMENT PRIMARY KEY); DELETE FROM {table}; {fill}"
        ),
    );
}

/// The test database as a mysql trigger's fields, for a YAML flow map: `host`, `port`,
/// `username` and `dbName` (the password is left to the caller: `passwordFromEnv` or an
/// authentication).
pub fn mysql_fields(env: &BTreeMap<String, String>) -> String {
    format!(
        "host: \"{}\", port: \"{}\", username: \"{}\", dbName: \"{}\"",
        env["EVENTSCALE_MYSQL_HOST"],
        env["EVENTSCALE_MYSQL_PORT"],
        env["EVENTSCALE_MYSQL_USER"],
        env["EVENTSCALE_MYSQL_DB"]
    )
}

/// The test database as a Go DSN (`user:password@tcp(host:port)/db`).
pub fn mysql_dsn(env: &BTreeMap<String, String>) -> String {
    format!(
        "{}:{}@tcp({}:{})/{}",
        env["EVENTSCALE_MYSQL_USER"],
        env["EVENTSCALE_MYSQL_PASSWORD"],
        env["EVENTSCALE_MYSQL_HOST"],
        env["EVENTSCALE_MYSQL_PORT"],
        env["EVENTSCALE_MYSQL_DB"]
    )
}

/// A Secret `db` holding `dsn` and a TriggerAuthentication `db` passing it to a mysql
/// trigger as its `connectionString`, as YAML documents.
pub fn mysql_dsn_auth(dsn: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: db}}
stringData: {{dsn: "{dsn}"}}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {{name: db}}
spec:
  secretTargetRef: [{{parameter: connectionString, name: db, key: dsn}}]
"#
    )
}
