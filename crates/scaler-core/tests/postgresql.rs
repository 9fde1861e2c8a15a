//! The postgresql scaler against a real PostgreSQL started by `e2e/sources.sh`.

#[path = "../../../e2e/support/sources.rs"]
mod sources;
mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use scaler_core::scalers::postgresql::PostgresScaler;
use scaler_core::scalers::{Scaler, ScalerError};

fn env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| sources::sources_env(&["postgresql"]))
}

fn scaler(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<PostgresScaler, ScalerError> {
    support::build("postgresql", "test", meta, auth, PostgresScaler::new)
}

/// KEDA's fields: host, port, userName, dbName and sslmode in the metadata, the password
/// from the authentication.
fn fields_scaler(query: &str, sslmode: &str, password: &str) -> PostgresScaler {
    let e = env();
    scaler(
        &[
            ("query", query),
            ("targetQueryValue", "2"),
            ("activationTargetQueryValue", "3"),
            ("host", &e["EVENTSCALE_POSTGRES_HOST"]),
            ("port", &e["EVENTSCALE_POSTGRES_PORT"]),
            ("userName", &e["EVENTSCALE_POSTGRES_USER"]),
            ("dbName", &e["EVENTSCALE_POSTGRES_DB"]),
            ("sslmode", sslmode),
        ],
        &[("password", password)],
    )
    .expect("valid")
}

fn url(sslmode: &str) -> String {
    sources::postgres_url(env(), sslmode)
}

fn psql(sql: &str) -> String {
    sources::psql(env(), sql)
}

#[tokio::test]
async fn rows_of_a_table_through_keda_fields() {
    let table = format!("jobs_{}", std::process::id());
    psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id serial, state text); \
         INSERT INTO {table} (state) SELECT 'queued' FROM generate_series(1, 7);"
    ));
    let query = format!("SELECT COUNT(*) FROM {table} WHERE state = 'queued'");
    let s = fields_scaler(&query, "disable", &env()["EVENTSCALE_POSTGRES_PASSWORD"]);
    assert_eq!(s.metric_spec().name, "s0-postgresql");
    let got = s.sample().await.expect("the server answers");
    assert_eq!((got.value, got.active), (7.0, true));
    psql(&format!("DELETE FROM {table} WHERE id > 3"));
    let got = s.sample().await.expect("the server answers");
    // Active strictly above activationTargetQueryValue (3).
    assert_eq!((got.value, got.active), (3.0, false));
    psql(&format!("DROP TABLE {table}"));
}

#[tokio::test]
async fn numeric_float_and_text_values_read_as_numbers() {
    let s = |q: &str| {
        scaler(
            &[("query", q), ("targetQueryValue", "1")],
            &[("connection", &url("disable"))],
        )
        .expect("valid")
    };
    for (q, want) in [
        ("SELECT 12.50::numeric", 12.5),
        ("SELECT 2.25::float8", 2.25),
        ("SELECT '41'::text", 41.0),
        ("SELECT 9::int8, 'ignored'", 9.0),
    ] {
        assert_eq!(s(q).sample().await.expect(q).value, want, "{q}");
    }
    for (q, says) in [
        ("SELECT NULL::int", "NULL"),
        ("SELECT 1 WHERE false", "no rows"),
        ("SELECT 'many'", "not a number"),
        ("SELECT * FROM no_such_table_here", "no_such_table_here"),
    ] {
        let e = s(q).sample().await.expect_err(q).to_string();
        assert!(e.contains(says), "{q}: {e}");
        assert!(e.contains("could not query postgreSQL"), "{q}: {e}");
    }
}

#[tokio::test]
async fn tls_with_sslmode_require_and_a_url() {
    // The server's TLS is on: require connects over it; psql shows the session encrypted.
    let s = scaler(
        &[
            ("query", "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
            ("targetQueryValue", "1"),
        ],
        &[("connection", &url("require"))],
    )
    .expect("valid");
    assert_eq!(s.sample().await.expect("TLS session").value, 1.0);
    let plain = fields_scaler(
        "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        "disable",
        &env()["EVENTSCALE_POSTGRES_PASSWORD"],
    );
    assert_eq!(plain.sample().await.expect("plain session").value, 0.0);
    // `allow` and `prefer` connect to this server (over TLS, which it offers).
    for mode in ["allow", "prefer"] {
        let s = fields_scaler(
            "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            mode,
            &env()["EVENTSCALE_POSTGRES_PASSWORD"],
        );
        assert_eq!(s.sample().await.expect(mode).value, 1.0, "{mode}");
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unreachable_server_are_clear_errors() {
    let s = fields_scaler("SELECT 1", "disable", "wrong-password");
    let e = s.sample().await.expect_err("refused").to_string();
    assert!(
        e.contains("error establishing postgreSQL connection"),
        "{e}"
    );
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(
        !e.contains("wrong-password"),
        "the password is never shown: {e}"
    );
    let s = scaler(
        &[("query", "SELECT 1"), ("targetQueryValue", "1")],
        &[(
            "connection",
            "host=127.0.0.1 port=1 user=u dbname=d sslmode=disable",
        )],
    )
    .expect("valid");
    let e = s.sample().await.expect_err("nothing listens").to_string();
    assert!(
        e.contains("error establishing postgreSQL connection"),
        "{e}"
    );
    assert!(e.contains("host=127.0.0.1 port=1"), "{e}");
}

/// Identical queries at the same moment share one round trip: a sequence the query
/// advances moves once for twenty samples taken together, and once more for the next.
#[tokio::test]
async fn identical_queries_share_a_round_trip() {
    let seq = format!("seq_{}", std::process::id());
    psql(&format!(
        "DROP SEQUENCE IF EXISTS {seq}; CREATE SEQUENCE {seq}"
    ));
    let s = fields_scaler(
        &format!("SELECT nextval('{seq}')"),
        "disable",
        &env()["EVENTSCALE_POSTGRES_PASSWORD"],
    );
    let all = futures::future::join_all((0..20).map(|_| s.sample())).await;
    let values: Vec<f64> = all.into_iter().map(|r| r.expect("answers").value).collect();
    assert_eq!(values, vec![1.0; 20]);
    assert_eq!(s.sample().await.expect("answers").value, 2.0);
    psql(&format!("DROP SEQUENCE {seq}"));
}
