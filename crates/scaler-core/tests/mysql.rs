//! The mysql scaler against a real MariaDB started by `e2e/sources.sh`.

#[path = "../../../e2e/support/sources.rs"]
mod sources;
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use scaler_core::scalers::mysql::MysqlScaler;
use scaler_core::scalers::Scaler;

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

/// Rows of this test's own state value, so runs do not see each other's rows.
fn seed(state: &str, rows: usize) {
    let e = env();
    let values = vec![format!("('{state}')"); rows].join(",");
    let sql = format!(
        "DELETE FROM jobs WHERE state = '{state}'; INSERT INTO jobs (state) VALUES {values};"
    );
    let ok = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            &e["EVENTSCALE_MYSQL_HOST"],
            "-P",
            &e["EVENTSCALE_MYSQL_PORT"],
        ])
        .arg(format!("-u{}", e["EVENTSCALE_MYSQL_USER"]))
        .arg(format!("-p{}", e["EVENTSCALE_MYSQL_PASSWORD"]))
        .arg(&e["EVENTSCALE_MYSQL_DB"])
        .args(["-e", &sql])
        .status()
        .expect("mariadb client");
    assert!(ok.success());
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
