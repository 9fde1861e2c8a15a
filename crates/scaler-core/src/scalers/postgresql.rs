//! The `postgresql` trigger: the first column of the first row of a query, as a number.
//!
//! As KEDA: the connection is a connection string (`connection`, from the
//! TriggerAuthentication or `connectionFromEnv`: libpq's `key=value` form or a
//! `postgresql://` URL), or `host`, `port`, `userName`, `dbName` and `sslmode` (from the
//! TriggerAuthentication, then the metadata) with the `password` from the
//! TriggerAuthentication or `passwordFromEnv`, joined into a `key=value` string the way
//! KEDA joins it. The metric is `s<i>-postgresql`, whatever the database or query.
//!
//! `sslmode`: `disable`, `allow`, `prefer` and `require` (encrypted, the server's
//! certificate not verified, as libpq's `require` without a root certificate). KEDA's
//! driver also takes `verify-ca` and `verify-full` with the root certificate named in the
//! connection string; eventscale refuses them, naming the field, rather than connect
//! without the verification they ask for.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, SimpleQueryMessage};

use super::params::Source::{Auth, Env, Meta};
use super::params::{Defaulted, Param, Params, Required};
use super::{anonymize, error_chain, MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::coalesce::Coalescer;
use crate::idle_map::Connections;
use crate::quantity::MilliQuantity;

/// Connecting plus querying may take this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `connection`: a whole connection string, a secret.
const CONNECTION: Param = Param::new("connection").from(&[Auth, Env]).secret();
/// `host`, without a connection string.
const HOST: Param = Param::new("host").from(&[Auth, Meta]);
/// `port`, without a connection string.
const PORT: Param = Param::new("port").from(&[Auth, Meta]);
/// `userName`, without a connection string.
const USER_NAME: Param = Param::new("userName").from(&[Auth, Meta]);
/// `dbName`, without a connection string.
const DB_NAME: Param = Param::new("dbName").from(&[Auth, Meta]);
/// `sslmode`, without a connection string.
const SSLMODE: Param = Param::new("sslmode").from(&[Auth, Meta]);
/// `password`, without a connection string; a secret.
const PASSWORD: Param = Param::new("password").from(&[Auth, Env]).secret();
/// `query`: the SQL.
const QUERY: Param<Required> = Param::new("query").from(&[Meta]).required();
/// `targetQueryValue`: the target per replica (required unless the trigger only feeds
/// `scalingModifiers`).
const TARGET_QUERY_VALUE: Param = Param::new("targetQueryValue").from(&[Meta]);
/// `activationTargetQueryValue`: active strictly above this.
const ACTIVATION_TARGET_QUERY_VALUE: Param<Defaulted> = Param::new("activationTargetQueryValue")
    .from(&[Meta])
    .default("0");

/// The `sslmode` values eventscale connects with.
const SSLMODES: [&str; 4] = ["disable", "allow", "prefer", "require"];

/// Parsed `postgresql` metadata.
#[derive(Clone, PartialEq)]
pub struct PostgresMetadata {
    /// The connection string KEDA would hand its driver.
    pub connection: String,
    /// The query.
    pub query: String,
    /// Target per replica.
    pub target_query_value: f64,
    /// Active strictly above this.
    pub activation_target_query_value: f64,
}

impl std::fmt::Debug for PostgresMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string holds the password: never printed.
        f.debug_struct("PostgresMetadata")
            .field("connection", &masked(&self.connection))
            .field("query", &self.query)
            .field("target_query_value", &self.target_query_value)
            .field(
                "activation_target_query_value",
                &self.activation_target_query_value,
            )
            .finish()
    }
}

/// A value as KEDA writes it into the connection string: as it is, or quoted in `'`
/// with `\` and `'` escaped when it holds whitespace, `'` or `\`.
pub fn escape(value: &str) -> String {
    if !value
        .chars()
        .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl PostgresMetadata {
    /// Parse with KEDA's rules.
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        let query = params.text(&QUERY)?.to_string();
        let target = params.float(&TARGET_QUERY_VALUE)?;
        let target_query_value = match target {
            Some(t) if t != 0.0 => t,
            _ if ctx.as_metric_source => target.unwrap_or(0.0),
            _ => {
                return Err(ScalerError::invalid(
                    "targetQueryValue",
                    "no targetQueryValue given",
                ))
            }
        };
        let activation_target_query_value = params.float(&ACTIVATION_TARGET_QUERY_VALUE)?;
        let given = params.text(&CONNECTION)?;
        let connection = match given {
            Some(c) => with_allow_as_prefer(c),
            None => Self::from_fields(&params)?,
        };
        // What the driver would refuse when connecting is refused here, naming the field.
        Config::from_str(&connection).map_err(|e| {
            ScalerError::invalid(
                if given.is_some() {
                    "connection"
                } else {
                    "host"
                },
                format!("invalid PostgreSQL connection string: {e}"),
            )
        })?;
        Ok(Self {
            connection,
            query,
            target_query_value,
            activation_target_query_value,
        })
    }

    /// `host port user dbname sslmode password`, each required but the password, joined
    /// as KEDA joins them (`password=` always).
    fn from_fields(params: &Params<'_>) -> Result<String, ScalerError> {
        let required = |p: &Param, what: &str| -> Result<String, ScalerError> {
            params
                .text(p)?
                .map(str::to_string)
                .ok_or_else(|| ScalerError::invalid(p.name(), format!("no {what} given")))
        };
        let host = required(&HOST, "host")?;
        let port = required(&PORT, "port")?;
        let user = required(&USER_NAME, "userName")?;
        let db = required(&DB_NAME, "dbName")?;
        let sslmode = required(&SSLMODE, "sslmode")?;
        if !SSLMODES.contains(&sslmode.as_str()) {
            let why = if sslmode.starts_with("verify-") {
                " (eventscale does not take a root certificate for the server yet)"
            } else {
                ""
            };
            return Err(ScalerError::invalid(
                "sslmode",
                format!(
                    "sslmode {sslmode:?} is not supported: use one of {}{why}",
                    SSLMODES.join(", ")
                ),
            ));
        }
        // KEDA writes `password=` even when empty; its driver reads that as empty, this one
        // needs it quoted.
        let password = match params.text(&PASSWORD)? {
            Some(p) => escape(p),
            None => "''".to_string(),
        };
        Ok(format!(
            "host={} port={} user={} dbname={} sslmode={} password={}",
            escape(&host),
            escape(&port),
            escape(&user),
            escape(&db),
            // `allow` (plaintext first, then TLS) connects as `prefer` (TLS first, then
            // plaintext): both reach a server with or without TLS, and the driver knows
            // only the second.
            escape(if sslmode == "allow" {
                "prefer"
            } else {
                &sslmode
            }),
            password
        ))
    }
}

/// `connection` with `sslmode=allow` read as `sslmode=prefer` (see [`PostgresMetadata`]'s
/// fields), in either form.
fn with_allow_as_prefer(connection: &str) -> String {
    connection.replace("sslmode=allow", "sslmode=prefer")
}

/// What every postgresql trigger shares (one per [`crate::pools::Pools`]).
pub struct PostgresClients {
    /// One client per connection string (a client pipelines concurrent queries); one
    /// unused for 15 minutes is dropped, which closes its connection.
    clients: Connections<String, Arc<Client>>,
    /// Identical queries (the same connection string and SQL) in flight at the same
    /// moment share one round trip.
    inflight: Arc<Coalescer<(String, String), Result<f64, ScalerError>>>,
}

impl Default for PostgresClients {
    fn default() -> Self {
        Self {
            clients: Connections::default(),
            inflight: Arc::new(Coalescer::default()),
        }
    }
}

impl std::fmt::Debug for PostgresClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys hold passwords: never printed.
        f.debug_struct("PostgresClients").finish_non_exhaustive()
    }
}

/// A connection string without its password, for errors and logs (and without any
/// `user:password@` a field holds).
pub fn masked(connection: &str) -> String {
    anonymize(&match Config::from_str(connection) {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            format!(
                "host={} port={} user={} dbname={}",
                hosts.join(","),
                c.get_ports()
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                c.get_user().unwrap_or(""),
                c.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "(unparsable connection string)".into(),
    })
}

/// A TLS connector that encrypts without verifying the server, as libpq's `require` and
/// `prefer` do without a root certificate.
fn unverified_tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let config = crate::tls::client_config(&crate::tls::ClientSettings {
        unsafe_ssl: true,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

async fn connect(connection: &str) -> Result<Client, String> {
    let mut config = Config::from_str(connection).map_err(|e| e.to_string())?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(TIMEOUT);
    }
    // A server that stops answering on a connection that stays open is noticed within a
    // minute, not after the system's two hours.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    let client = if config.get_ssl_mode() == SslMode::Disable {
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| error_chain(&e))?;
        tokio::spawn(conn);
        client
    } else {
        let (client, conn) = config
            .connect(unverified_tls()?)
            .await
            .map_err(|e| error_chain(&e))?;
        tokio::spawn(conn);
        client
    };
    Ok(client)
}

impl PostgresClients {
    /// The client for `connection`, connected (again) when its connection closed.
    async fn client(&self, connection: &str) -> Result<Arc<Client>, String> {
        self.clients
            .get(
                &connection.to_string(),
                |c| !c.is_closed(),
                || async { connect(connection).await.map(Arc::new) },
            )
            .await
    }
}

/// The first column of the first row, as a number (the simple protocol gives every value
/// as text, so integers, floats, numerics and numeric text all read, as KEDA's `Scan`
/// into a float64 reads them).
pub fn first_number(messages: &[SimpleQueryMessage]) -> Result<f64, String> {
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or("sql: no rows in result set")?;
    let cell = row
        .try_get(0)
        .map_err(|e| e.to_string())?
        .ok_or("the query returned NULL; use COALESCE(..., 0)")?;
    cell.trim()
        .parse::<f64>()
        .map_err(|_| format!("the query returned {cell:?}, not a number"))
}

/// The postgresql scaler.
#[derive(Debug, Clone)]
pub struct PostgresScaler {
    metadata: PostgresMetadata,
    spec: MetricSpec,
    shared: Arc<PostgresClients>,
}

impl PostgresScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = PostgresMetadata::parse(&ctx)?;
        Ok(Self {
            spec: MetricSpec {
                name: ctx.metric_name("postgresql"),
                target_type: ctx.target_type()?,
                target: MilliQuantity::from_value(metadata.target_query_value),
            },
            metadata,
            shared: ctx.pools.postgresql.clone(),
        })
    }

    async fn query(&self) -> Result<f64, ScalerError> {
        let conn = &self.metadata.connection;
        let client = self.shared.client(conn).await.map_err(|e| {
            ScalerError::Query(format!(
                "error establishing postgreSQL connection: {}: {e}",
                masked(conn)
            ))
        })?;
        let messages = match client.simple_query(&self.metadata.query).await {
            Ok(m) => m,
            Err(e) => {
                if client.is_closed() {
                    self.shared.clients.forget(conn).await;
                }
                return Err(ScalerError::Query(format!(
                    "error inspecting postgreSQL: could not query postgreSQL: {}",
                    error_chain(&e)
                )));
            }
        };
        first_number(&messages).map_err(|e| {
            ScalerError::Query(format!(
                "error inspecting postgreSQL: could not query postgreSQL: {e}"
            ))
        })
    }
}

#[async_trait]
impl Scaler for PostgresScaler {
    fn scaler_type(&self) -> &'static str {
        "postgresql"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    fn activation_threshold(&self) -> Option<f64> {
        Some(self.metadata.activation_target_query_value)
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let this = self.clone();
        let key = (
            self.metadata.connection.clone(),
            self.metadata.query.clone(),
        );
        let call = async move {
            match tokio::time::timeout(TIMEOUT, this.query()).await {
                Ok(answer) => answer,
                Err(_) => {
                    // A connection that stopped answering is not asked again.
                    this.shared.clients.forget(&this.metadata.connection).await;
                    Err(ScalerError::Query(format!(
                        "error inspecting postgreSQL: {}: no answer within {TIMEOUT:?}",
                        masked(&this.metadata.connection)
                    )))
                }
            }
        };
        let value = self.shared.inflight.run(key, call).await.0?;
        Ok(Sample {
            value,
            active: value > self.metadata.activation_target_query_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalers::test_support::with_ctx;

    fn parse(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        as_metric_source: bool,
    ) -> Result<PostgresMetadata, ScalerError> {
        with_ctx("postgresql", meta, auth, as_metric_source, |ctx| {
            PostgresMetadata::parse(&ctx)
        })
    }

    const FIELDS: [(&str, &str); 6] = [
        ("query", "SELECT 1"),
        ("targetQueryValue", "5"),
        ("host", "localhost"),
        ("port", "1234"),
        ("userName", "user"),
        ("dbName", "testDb"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut m = FIELDS.to_vec();
        m.extend_from_slice(extra);
        m
    }

    #[test]
    fn fields_join_as_keda_joins_them() {
        let m = parse(&with(&[("sslmode", "disable")]), &[], false).expect("valid");
        assert_eq!(
            m.connection,
            "host=localhost port=1234 user=user dbname=testDb sslmode=disable password=''"
        );
        assert_eq!(m.target_query_value, 5.0);
        assert_eq!(m.activation_target_query_value, 0.0);
        // The authentication's fields come first; the password only from there (or env).
        let m = parse(
            &with(&[("sslmode", "disable")]),
            &[("host", "db.internal"), ("password", "p a'ss\\")],
            false,
        )
        .expect("valid");
        assert_eq!(
            m.connection,
            "host=db.internal port=1234 user=user dbname=testDb sslmode=disable password='p a\\'ss\\\\'"
        );
    }

    #[test]
    fn allow_connects_as_prefer_and_debug_hides_the_password() {
        let m = parse(
            &with(&[("sslmode", "allow")]),
            &[("password", "s3cret")],
            false,
        )
        .expect("valid");
        assert!(m.connection.contains("sslmode=prefer"), "{}", m.connection);
        assert!(!format!("{m:?}").contains("s3cret"), "{m:?}");
        let m = parse(
            &[("query", "SELECT 1"), ("targetQueryValue", "2")],
            &[("connection", "postgresql://u:s3cret@h/d?sslmode=allow")],
            false,
        )
        .expect("valid");
        assert_eq!(m.connection, "postgresql://u:s3cret@h/d?sslmode=prefer");
        assert!(!format!("{m:?}").contains("s3cret"), "{m:?}");
        let m = parse(&with(&[("sslmode", "prefer")]), &[], false).expect("valid");
        assert!(m.connection.contains("sslmode=prefer"));
    }

    #[test]
    fn escaping_follows_keda() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("with space"), "'with space'");
        assert_eq!(escape("user'name"), "'user\\'name'");
        assert_eq!(escape("user\\name"), "'user\\\\name'");
        assert_eq!(escape("tab\there"), "'tab\there'");
        // The driver reads back what was escaped.
        let c = Config::from_str(&format!(
            "host=h user={} password={}",
            escape("a b"),
            escape("x'y\\z")
        ))
        .expect("parses");
        assert_eq!(c.get_user(), Some("a b"));
        assert_eq!(c.get_password(), Some(&b"x'y\\z"[..]));
    }

    #[test]
    fn a_connection_string_wins_and_is_a_secret() {
        let m = parse(
            &[("query", "SELECT 1"), ("targetQueryValue", "2")],
            &[(
                "connection",
                "postgresql://u:p@127.0.0.1:5432/db?sslmode=disable",
            )],
            false,
        )
        .expect("valid");
        assert_eq!(
            m.connection,
            "postgresql://u:p@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            masked(&m.connection),
            "host=127.0.0.1 port=5432 user=u dbname=db"
        );
        // Written in plain metadata, a connection string is refused, naming the field.
        let e = parse(
            &[
                ("query", "SELECT 1"),
                ("targetQueryValue", "2"),
                ("connection", "host=x"),
            ],
            &[],
            false,
        )
        .expect_err("a secret in plain metadata");
        assert_eq!(e.param(), Some("connection"));
        let e = parse(
            &[("query", "SELECT 1"), ("targetQueryValue", "2")],
            &[("connection", "host=x sslmode=sometimes")],
            false,
        )
        .expect_err("the driver refuses it");
        assert_eq!(e.param(), Some("connection"));
    }

    #[test]
    fn errors_name_the_field_in_keda_order() {
        let missing = |drop: &str| {
            let m: Vec<_> = with(&[("sslmode", "disable")])
                .into_iter()
                .filter(|(k, _)| *k != drop)
                .collect();
            parse(&m, &[], false).expect_err(drop)
        };
        for (field, message) in [
            ("host", "no host given"),
            ("port", "no port given"),
            ("userName", "no userName given"),
            ("dbName", "no dbName given"),
            ("sslmode", "no sslmode given"),
        ] {
            let e = missing(field);
            assert_eq!(e.param(), Some(field));
            assert_eq!(e.to_string(), message);
        }
        let e = missing("query");
        assert_eq!(e.param(), Some("query"));
        let e = missing("targetQueryValue");
        assert_eq!(e.to_string(), "no targetQueryValue given");
        let e = parse(
            &with(&[("sslmode", "disable"), ("targetQueryValue", "0")]),
            &[],
            false,
        );
        assert!(e.is_err(), "0 is no target");
        // Feeding scalingModifiers only, no target is needed.
        assert!(parse(
            &[
                ("query", "SELECT 1"),
                ("host", "h"),
                ("port", "1"),
                ("userName", "u"),
                ("dbName", "d"),
                ("sslmode", "disable")
            ],
            &[],
            true
        )
        .is_ok());
        let e = parse(&with(&[("sslmode", "verify-full")]), &[], false).expect_err("verify");
        assert_eq!(e.param(), Some("sslmode"));
        assert!(e.to_string().contains("root certificate"), "{e}");
        let e = parse(&with(&[("sslmode", "required")]), &[], false).expect_err("typo");
        assert_eq!(e.param(), Some("sslmode"));
        let e = parse(
            &with(&[("sslmode", "disable"), ("targetQueryValue", "lots")]),
            &[],
            false,
        )
        .expect_err("not a number");
        assert_eq!(e.param(), Some("targetQueryValue"));
        // A password in plain metadata is refused, not ignored.
        let e = parse(
            &with(&[("sslmode", "disable"), ("password", "x")]),
            &[],
            false,
        )
        .expect_err("secret");
        assert_eq!(e.param(), Some("password"));
    }
}
