//! The mysql scaler against a real MariaDB started by `e2e/sources.sh`.

#[path = "../../../e2e/support/sources.rs"]
mod sources;
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use scaler_core::scalers::mysql::MysqlScaler;
use scaler_core::scalers::{Scaler, ScalerError};

fn env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| sources::sources_env(&["mysql"]))
}

fn go_dsn(password: &str) -> String {
    let e = env();
    format!(
        "{}:{password}@tcp({}:{})/{}",
        e["EVENTSCALE_MYSQL_USER"],
        e["EVENTSCALE_MYSQL_HOST"],
        e["EVENTSCALE_MYSQL_PORT"],
        e["EVENTSCALE_MYSQL_DB"]
    )
}

fn scaler(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> MysqlScaler {
    support::build("mysql", "test", meta, auth, MysqlScaler::new).expect("valid")
}

/// The Go DSN with the right password and `options` after `?`.
fn go_dsn_with(options: &str) -> String {
    format!("{}?{options}", go_dsn(&env()["EVENTSCALE_MYSQL_PASSWORD"]))
}

/// What `query` gives over `connectionString`.
async fn value(connection_string: &str, query: &str) -> Result<f64, ScalerError> {
    let s = scaler(
        &[("query", query), ("queryValue", "1")],
        &[("connectionString", connection_string)],
    );
    s.sample().await.map(|v| v.value)
}

/// Rows of this test's own state value, so runs do not see each other's rows.
fn seed(state: &str, rows: usize) {
    let values = vec![format!("('{state}')"); rows].join(",");
    let sql = format!(
        "DELETE FROM jobs WHERE state = '{state}'; INSERT INTO jobs (state) VALUES {values};"
    );
    mariadb_output(&sql, true);
}

/// The output of `sql` through the `mariadb` client as the test user (tab-separated, no
/// header), in the test database when `in_db`.
fn mariadb_output(sql: &str, in_db: bool) -> String {
    let e = env();
    let mut cmd = Command::new("mariadb");
    cmd.args([
        "--no-defaults",
        "-N",
        "-h",
        &e["EVENTSCALE_MYSQL_HOST"],
        "-P",
        &e["EVENTSCALE_MYSQL_PORT"],
    ])
    .arg(format!("-u{}", e["EVENTSCALE_MYSQL_USER"]))
    .arg(format!("-p{}", e["EVENTSCALE_MYSQL_PASSWORD"]));
    if in_db {
        cmd.arg(&e["EVENTSCALE_MYSQL_DB"]);
    }
    let out = cmd.args(["-e", sql]).output().expect("mariadb client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Twenty ScaledObjects asking the same query of the same database at once share one
/// query, as the server itself shows: one statement with the query's text is running.
/// Another query (different text) is its own statement.
#[tokio::test]
async fn identical_concurrent_queries_run_once_on_the_server() {
    let password = env()["EVENTSCALE_MYSQL_PASSWORD"].clone();
    let go = go_dsn(&password);
    let marker = format!("coalesce-{}", std::process::id());
    let query = |n: u32| format!("SELECT SLEEP(1) + {n} + 0 * LENGTH('{marker}')");
    let scalers: Vec<_> = (0..20)
        .map(|i| {
            scaler(
                &[
                    ("query", &query(if i < 19 { 7 } else { 8 })),
                    ("queryValue", "2"),
                ],
                &[("connectionString", &go)],
            )
        })
        .collect();
    let samples = futures::future::join_all(scalers.iter().map(|s| s.sample()));
    let running = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let list = mariadb_output(
            &format!(
                "SELECT INFO FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(1)%{marker}%'"
            ),
            false,
        );
        list.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let (samples, running) = tokio::join!(samples, running);
    let values: Vec<f64> = samples
        .into_iter()
        .map(|r| r.expect("value").value)
        .collect();
    assert_eq!(values.iter().filter(|v| **v == 7.0).count(), 19);
    assert_eq!(values.iter().filter(|v| **v == 8.0).count(), 1);
    assert_eq!(
        running.len(),
        2,
        "one statement per distinct query: {running:?}"
    );
}

#[tokio::test]
async fn counts_rows_with_both_connection_forms_and_fields() {
    let e = env();
    let state = format!("t{}", std::process::id());
    seed(&state, 6);
    let query = format!("SELECT COUNT(*) FROM jobs WHERE state = '{state}'");
    let password = e["EVENTSCALE_MYSQL_PASSWORD"].as_str();

    let go = go_dsn(password);
    let s = scaler(
        &[("query", &query), ("queryValue", "2")],
        &[("connectionString", &go)],
    );
    assert_eq!(
        s.metric_spec().name,
        format!("s0-mysql-{}", e["EVENTSCALE_MYSQL_DB"])
    );
    let v = s.sample().await.expect("value");
    assert_eq!((v.value, v.active), (6.0, true));

    let url = format!(
        "mysql://{}:{password}@{}:{}/{}",
        e["EVENTSCALE_MYSQL_USER"],
        e["EVENTSCALE_MYSQL_HOST"],
        e["EVENTSCALE_MYSQL_PORT"],
        e["EVENTSCALE_MYSQL_DB"]
    );
    let v = scaler(
        &[
            ("query", &query),
            ("queryValue", "2"),
            ("activationQueryValue", "6"),
        ],
        &[("connectionString", &url)],
    )
    .sample()
    .await
    .expect("value");
    assert_eq!(
        (v.value, v.active),
        (6.0, false),
        "activation is strictly greater"
    );

    let fields = [
        ("query", query.as_str()),
        ("queryValue", "2"),
        ("host", e["EVENTSCALE_MYSQL_HOST"].as_str()),
        ("port", e["EVENTSCALE_MYSQL_PORT"].as_str()),
        ("username", e["EVENTSCALE_MYSQL_USER"].as_str()),
        ("dbName", e["EVENTSCALE_MYSQL_DB"].as_str()),
    ];
    let v = scaler(&fields, &[("password", password)])
        .sample()
        .await
        .expect("value");
    assert_eq!(v.value, 6.0);

    // A decimal, as MariaDB returns it (text).
    let v = scaler(
        &[("query", "SELECT 12.5"), ("queryValue", "1")],
        &[("connectionString", &go)],
    )
    .sample()
    .await
    .expect("decimal");
    assert_eq!(v.value, 12.5);
}

#[tokio::test]
async fn errors_name_the_problem() {
    let password = env()["EVENTSCALE_MYSQL_PASSWORD"].clone();
    let go = go_dsn(&password);
    let e = scaler(
        &[("query", "SELECT 1"), ("queryValue", "1")],
        &[("connectionString", &go_dsn("wrong"))],
    )
    .sample()
    .await
    .expect_err("bad password");
    assert!(
        e.to_string()
            .contains("error establishing MySQL connection"),
        "{e}"
    );
    let e = scaler(
        &[("query", "SELEKT nonsense"), ("queryValue", "1")],
        &[("connectionString", &go)],
    )
    .sample()
    .await
    .expect_err("bad SQL");
    assert!(e.to_string().contains("could not query MySQL"), "{e}");
    let e = scaler(
        &[("query", "SELECT NULL"), ("queryValue", "1")],
        &[("connectionString", &go)],
    )
    .sample()
    .await
    .expect_err("NULL");
    assert!(e.to_string().contains("NULL"), "{e}");
    let e = scaler(
        &[
            ("query", "SELECT 1 FROM jobs WHERE 1 = 0"),
            ("queryValue", "1"),
        ],
        &[("connectionString", &go)],
    )
    .sample()
    .await
    .expect_err("no rows");
    assert!(e.to_string().contains("no rows"), "{e}");
    let e = scaler(
        &[("query", "SELECT 1"), ("queryValue", "1")],
        &[("connectionString", "u:p@tcp(127.0.0.1:1)/d")],
    )
    .sample()
    .await
    .expect_err("nothing listens");
    assert!(
        e.to_string()
            .contains("error establishing MySQL connection"),
        "{e}"
    );
}

#[tokio::test]
async fn dsn_options_are_used_or_refused() {
    let e = env();
    // KEDA names the metric after everything behind the last '/', options included.
    let s = scaler(
        &[("query", "SELECT 7"), ("queryValue", "1")],
        &[("connectionString", &go_dsn_with("tls=false"))],
    );
    assert_eq!(
        s.metric_spec().name,
        format!("s0-mysql-{}?tls=false", e["EVENTSCALE_MYSQL_DB"])
    );
    assert_eq!(s.sample().await.expect("tls=false").value, 7.0);

    for options in [
        "timeout=5s&readTimeout=5s&writeTimeout=5s",
        "parseTime=true&loc=UTC&allowNativePasswords=true",
        // The local MariaDB has no TLS: these fall back to plaintext.
        "tls=preferred",
        "tls=true&allowFallbackToPlaintext=true",
    ] {
        let v = value(&go_dsn_with(options), "SELECT 7").await;
        assert_eq!(v, Ok(7.0), "{options}");
    }
    // TLS required of a server without it: the Go driver's words.
    for options in ["tls=true", "tls=skip-verify"] {
        let err = value(&go_dsn_with(options), "SELECT 7")
            .await
            .expect_err(options)
            .to_string();
        assert!(
            err.starts_with("error establishing MySQL connection: ")
                && err.contains("TLS requested but server does not support TLS"),
            "{options}: {err}"
        );
    }
    // An option eventscale does not know is refused when parsing, by name.
    let err = support::build(
        "mysql",
        "test",
        &[("query", "SELECT 7"), ("queryValue", "1")],
        &[("connectionString", &go_dsn_with("tls=false&sql_mode=ANSI"))],
        MysqlScaler::new,
    )
    .expect_err("unknown option");
    assert!(
        err.to_string()
            .contains("invalid MySQL connection string: unsupported option \"sql_mode\""),
        "{err}"
    );

    // The same options on a mysql:// URL.
    let url = format!(
        "mysql://{}:{}@{}:{}/{}",
        e["EVENTSCALE_MYSQL_USER"],
        e["EVENTSCALE_MYSQL_PASSWORD"],
        e["EVENTSCALE_MYSQL_HOST"],
        e["EVENTSCALE_MYSQL_PORT"],
        e["EVENTSCALE_MYSQL_DB"]
    );
    let v = value(&format!("{url}?tls=false&timeout=5s"), "SELECT 7").await;
    assert_eq!(v, Ok(7.0));
    let err = value(&format!("{url}?tls=true"), "SELECT 7")
        .await
        .expect_err("tls=true");
    assert!(
        err.to_string()
            .contains("TLS requested but server does not support TLS"),
        "{err}"
    );
}

#[tokio::test]
async fn read_timeout_bounds_the_query() {
    let started = std::time::Instant::now();
    let err = value(&go_dsn_with("readTimeout=300ms"), "SELECT SLEEP(3)")
        .await
        .expect_err("too slow");
    assert!(
        err.to_string().starts_with("error inspecting MySQL: ")
            && err.to_string().contains("readTimeout"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn charset_and_collation_are_set() {
    // Twice each: the second sample reuses the pooled connection, which must keep its
    // session.
    let one = |options: &'static str, query: &'static str| async move {
        let s = scaler(
            &[("query", query), ("queryValue", "1")],
            &[("connectionString", &go_dsn_with(options))],
        );
        for round in 0..2 {
            let v = s.sample().await.map(|v| v.value);
            assert_eq!(v, Ok(1.0), "{options}, sample {round}");
            // Time for the connection to go back to the pool.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    one(
        "charset=latin1",
        "SELECT @@character_set_connection = 'latin1'",
    )
    .await;
    // As the Go driver: the first character set the server knows wins.
    one(
        "charset=no_such_charset,latin1",
        "SELECT @@character_set_connection = 'latin1'",
    )
    .await;
    one(
        "charset=utf8mb4&collation=utf8mb4_bin",
        "SELECT @@collation_connection = 'utf8mb4_bin'",
    )
    .await;
    // A collation alone sets the client, connection and result character sets too.
    one(
        "collation=latin1_bin",
        "SELECT @@collation_connection = 'latin1_bin' AND @@character_set_client = 'latin1' \
         AND @@character_set_results = 'latin1'",
    )
    .await;
    let err = value(&go_dsn_with("charset=no_such_charset"), "SELECT 1")
        .await
        .expect_err("unknown charset");
    assert!(
        err.to_string()
            .starts_with("error establishing MySQL connection: "),
        "{err}"
    );
}

#[tokio::test]
async fn fields_without_database_or_password() {
    let e = env();
    let state = format!("f{}", std::process::id());
    seed(&state, 3);
    // No dbName: the query names the database itself.
    let query = format!(
        "SELECT COUNT(*) FROM {}.jobs WHERE state = '{state}'",
        e["EVENTSCALE_MYSQL_DB"]
    );
    let base = [
        ("query", query.as_str()),
        ("queryValue", "1"),
        ("host", e["EVENTSCALE_MYSQL_HOST"].as_str()),
        ("port", e["EVENTSCALE_MYSQL_PORT"].as_str()),
        ("username", e["EVENTSCALE_MYSQL_USER"].as_str()),
    ];
    let s = scaler(&base, &[("password", &e["EVENTSCALE_MYSQL_PASSWORD"])]);
    assert_eq!(s.metric_spec().name, "s0-mysql-");
    assert_eq!(s.sample().await.expect("no dbName").value, 3.0);
    // No password: a passwordless login is tried (this user has a password, so it fails).
    let err = scaler(&base, &[])
        .sample()
        .await
        .expect_err("the user has a password");
    assert!(err.to_string().contains("using password: NO"), "{err}");
}
