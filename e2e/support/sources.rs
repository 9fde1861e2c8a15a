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

/// The test database's URL for PostgreSQL clients, with `sslmode`.
pub fn postgres_url(env: &BTreeMap<String, String>, sslmode: &str) -> String {
    format!(
        "postgresql://{}:{}@{}:{}/{}?sslmode={sslmode}",
        env["EVENTSCALE_POSTGRES_USER"],
        env["EVENTSCALE_POSTGRES_PASSWORD"],
        env["EVENTSCALE_POSTGRES_HOST"],
        env["EVENTSCALE_POSTGRES_PORT"],
        env["EVENTSCALE_POSTGRES_DB"]
    )
}

/// Run `sql` in the test database with `psql` as the test user, asserting success; its
/// output, unaligned and without headers.
pub fn psql(env: &BTreeMap<String, String>, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-Atq",
            &postgres_url(env, "disable"),
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `args` with `redis-cli` against the plain Redis server's database `db`, as its
/// default user, asserting success; the output, trimmed.
pub fn redis_cli(env: &BTreeMap<String, String>, db: u32, args: &[&str]) -> String {
    let (host, port) = env["EVENTSCALE_REDIS_ADDRESS"]
        .rsplit_once(':')
        .expect("host:port");
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "-n", &db.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !text.starts_with("ERR"),
        "redis-cli {args:?}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A call to the test RabbitMQ's management API as the test user, asserting a 2xx answer;
/// the body. `path` starts after `/api`.
pub fn rabbit_api(
    env: &BTreeMap<String, String>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> String {
    let base = env["EVENTSCALE_RABBITMQ_HTTP"].clone();
    let mut cmd = Command::new("curl");
    cmd.args(["-fsS", "--max-time", "10", "-X", method])
        .arg(format!("{base}/api{path}"))
        .args(["-H", "content-type: application/json"]);
    if let Some(b) = body {
        cmd.args(["--data", b]);
    }
    let out = cmd.output().expect("curl");
    assert!(
        out.status.success(),
        "{method} /api{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Queue `queue` in vhost `vhost` (`/` is `%2F`), made anew and empty, with `messages`
/// published to it through the default exchange.
pub fn rabbit_queue(env: &BTreeMap<String, String>, vhost: &str, queue: &str, messages: usize) {
    let _ = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-X", "DELETE"])
        .arg(format!(
            "{}/api/queues/{vhost}/{queue}",
            env["EVENTSCALE_RABBITMQ_HTTP"]
        ))
        .output();
    rabbit_api(
        env,
        "PUT",
        &format!("/queues/{vhost}/{queue}"),
        Some(r#"{"durable":false}"#),
    );
    rabbit_publish(env, vhost, queue, messages);
}

/// Publish `messages` to `queue` in `vhost` through the default exchange.
pub fn rabbit_publish(env: &BTreeMap<String, String>, vhost: &str, queue: &str, messages: usize) {
    for i in 0..messages {
        let body = format!(
            r#"{{"properties":{{}},"routing_key":"{queue}","payload":"m{i}","payload_encoding":"string"}}"#
        );
        let routed = rabbit_api(
            env,
            "POST",
            &format!("/exchanges/{vhost}/amq.default/publish"),
            Some(&body),
        );
        assert!(
            routed.contains("true"),
            "message not routed to {queue}: {routed}"
        );
    }
}

/// A Secret `prom-creds` holding the basic-auth `user` and `password` for the test
/// Prometheus behind basic auth (applied again to rotate the password).
pub fn prometheus_creds(user: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: prom-creds}}\nstringData: {{user: {user}, password: {password}}}\n"
    )
}

/// The TriggerAuthentication `prom-auth` giving a prometheus trigger the `username` and
/// `password` of [`prometheus_creds`]'s Secret.
pub const PROMETHEUS_AUTH: &str = "apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: prom-auth}
spec:
  secretTargetRef:
  - {parameter: username, name: prom-creds, key: user}
  - {parameter: password, name: prom-creds, key: password}
";
