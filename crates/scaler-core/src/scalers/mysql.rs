//! The `mysql` trigger: the first column of the first row of a query, as a number.
//!
//! KEDA hands the connection string to Go's MySQL driver (go-sql-driver/mysql v1.10), so
//! it is read as that driver reads it ([`crate::go_dsn`]): what the driver's `ParseDSN`
//! rejects is a parse error here, what its dialer rejects (a port like `test_port`, a host
//! that does not resolve) is an error when connecting, as in KEDA.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, OptsBuilder, Pool, PoolOpts, Row, SslOpts, Value};

use super::params::Source::{Auth, Env, Meta};
use super::params::{Defaulted, Param, Params, Required};
use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::coalesce::Coalescer;
use crate::go_dsn::{self, Dsn, DsnOptions, Tls};
use crate::idle_map::{self, IdleMap};
use crate::quantity::MilliQuantity;

/// Connecting plus querying may take this long, unless the DSN's timeouts add up to more.
const TIMEOUT: Duration = Duration::from_secs(10);

/// KEDA's name segment for a connection string: everything after its last `/`, the
/// options included (`.../app?tls=false` names the metric `s0-mysql-app?tls=false`).
/// KEDA's quirk is kept on purpose: eventscale takes over HPAs KEDA made, so the metric
/// names must be the same.
pub fn metric_db_name(connection_string: &str) -> &str {
    connection_string
        .rsplit('/')
        .next()
        .unwrap_or(connection_string)
}

/// Parsed `mysql` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlMetadata {
    /// Where to connect.
    pub dsn: Dsn,
    /// The `<db>` in the metric name `s<i>-mysql-<db>`.
    pub metric_db: String,
    /// The query.
    pub query: String,
    /// Target per replica.
    pub query_value: f64,
    /// Active strictly above this.
    pub activation_query_value: f64,
}

/// `connectionString`: a Go DSN (or `mysql://` URL), a secret.
const CONNECTION_STRING: Param = Param::new("connectionString").from(&[Auth, Env]).secret();
/// `username`, without a connection string.
const USERNAME: Param = Param::new("username").from(&[Meta, Auth, Env]);
/// `password`, without a connection string; a secret.
const PASSWORD: Param = Param::new("password").from(&[Auth, Env]).secret();
/// `host`, without a connection string (KEDA reads no `hostFromEnv`).
const HOST: Param = Param::new("host").from(&[Meta, Auth]);
/// `port`, without a connection string.
const PORT: Param = Param::new("port").from(&[Meta, Auth]);
/// `dbName`, without a connection string.
const DB_NAME: Param = Param::new("dbName").from(&[Meta, Auth]);
/// `query`: the SQL.
const QUERY: Param<Required> = Param::new("query").required();
/// `queryValue`: the target per replica.
const QUERY_VALUE: Param<Required> = Param::new("queryValue").required();
/// `activationQueryValue`: active strictly above this.
const ACTIVATION_QUERY_VALUE: Param<Defaulted> = Param::new("activationQueryValue").default("0");

impl MysqlMetadata {
    /// Parse with KEDA's rules.
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        let query = params.text(&QUERY)?.to_string();
        let query_value = params.float(&QUERY_VALUE)?;
        let activation_query_value = params.float(&ACTIVATION_QUERY_VALUE)?;
        let (dsn, metric_db) = match params.text(&CONNECTION_STRING)? {
            Some(cs) => {
                let dsn = go_dsn::parse(cs).map_err(|e| {
                    ScalerError::invalid(
                        "connectionString",
                        format!("invalid MySQL connection string: {e}"),
                    )
                })?;
                (dsn, metric_db_name(cs).to_string())
            }
            None => Self::from_fields(&params)?,
        };
        Ok(Self {
            dsn,
            metric_db,
            query,
            query_value,
            activation_query_value,
        })
    }

    /// host, port, username, password, dbName: every one optional, as in KEDA.
    fn from_fields(params: &Params<'_>) -> Result<(Dsn, String), ScalerError> {
        let field = |p: &Param| params.text(p).map(|v| v.unwrap_or(""));
        let (host, port, db_name) = (field(&HOST)?, field(&PORT)?, field(&DB_NAME)?);
        let (user, password) = (field(&USERNAME)?, field(&PASSWORD)?);
        // KEDA formats these into a DSN (Go's `Config.FormatDSN`) that the driver parses
        // again; doing the same keeps every quirk: no default port (`host:` dials port 0),
        // `port: test_port` parses and fails when connecting, a password without a user is
        // dropped.
        let addr = go_dsn::join_host_port(host, port);
        let parsed =
            go_dsn::parse(&go_dsn::format(user, password, &addr, db_name)).map_err(|e| {
                ScalerError::invalid("host", format!("invalid MySQL host or port: {e}"))
            })?;
        Ok((parsed, db_name.to_string()))
    }
}

/// How long one sample may take in all: [`TIMEOUT`], or the DSN's timeouts if they add up
/// to more.
fn budget(o: &DsnOptions) -> Duration {
    let given = o.connect_timeout.unwrap_or_default()
        + o.read_timeout.unwrap_or_default()
        + o.write_timeout.unwrap_or_default();
    TIMEOUT.max(given)
}

/// The system's root certificates, which Go's `tls=true` verifies against; ones rustls
/// cannot use are left out (DER).
fn system_roots() -> Vec<Vec<u8>> {
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .filter(|c| rustls::RootCertStore::empty().add(c.clone()).is_ok())
        .map(|c| c.to_vec())
        .collect()
}

fn ssl_opts(tls: Tls, system_roots: &[Vec<u8>]) -> Result<Option<SslOpts>, String> {
    Ok(match tls {
        Tls::Off => None,
        Tls::Verify => {
            if system_roots.is_empty() {
                return Err(
                    "tls=true: no system root certificates to verify the server with".into(),
                );
            }
            Some(
                SslOpts::default()
                    .with_root_certs(system_roots.iter().map(|c| c.clone().into()).collect())
                    .with_disable_built_in_roots(true),
            )
        }
        Tls::SkipVerify => Some(SslOpts::default().with_danger_accept_invalid_certs(true)),
    })
}

/// The statements to try in turn after connecting, for `charset` and `collation`.
fn names_statements(o: &DsnOptions) -> Vec<String> {
    match (&o.charsets[..], &o.collation) {
        ([], None) => vec![],
        // Without a charset Go sends the collation in the handshake, which sets the client,
        // connection and result character sets to the collation's.
        // (Two statements: one SET reads every variable before assigning any.)
        ([], Some(c)) => vec![format!(
            "SET collation_connection = '{c}'; SET character_set_client = \
             @@character_set_connection, character_set_results = @@character_set_connection"
        )],
        (charsets, collation) => charsets
            .iter()
            .map(|cs| match collation {
                Some(c) => format!("SET NAMES {cs} COLLATE {c}"),
                None => format!("SET NAMES {cs}"),
            })
            .collect(),
    }
}

fn new_pool(dsn: &Dsn, tls: Tls, system_roots: &[Vec<u8>]) -> Result<Pool, String> {
    Ok(Pool::new(pool_opts(dsn, tls, system_roots)?))
}

/// What [`new_pool`] connects with.
fn pool_opts(dsn: &Dsn, tls: Tls, system_roots: &[Vec<u8>]) -> Result<OptsBuilder, String> {
    let (host, port) = dsn.host_port()?;
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        // As Go's driver, to the address the DSN names, always: by default the driver
        // would move a connection to a loopback address over to the server's Unix socket,
        // around whatever listens on that port (a database proxy beside eventscale).
        .prefer_socket(false)
        .user(Some(dsn.user.clone()))
        .pass((!dsn.password.is_empty()).then(|| dsn.password.clone()))
        .db_name((!dsn.db_name.is_empty()).then(|| dsn.db_name.clone()))
        .ssl_opts(ssl_opts(tls, system_roots)?)
        // As Go's database/sql: a pooled connection keeps its session, so the `SET NAMES`
        // made when it connected (a reset would undo it, and costs a round trip per query).
        .pool_opts(PoolOpts::default().with_reset_connection(false));
    let statements = names_statements(&dsn.options);
    if !statements.is_empty() {
        // As the Go driver: the first that works wins (a charset may not exist), and the
        // connection fails if none does.
        opts = opts.after_connect(move |conn| {
            let statements = statements.clone();
            async move {
                let mut last = Ok(());
                for s in &statements {
                    last = conn.query_drop(s).await;
                    if last.is_ok() {
                        break;
                    }
                }
                last
            }
            .boxed()
        });
    }
    Ok(opts)
}

/// Which pool [`pool`] hands out.
enum Pick {
    /// The one in use for the DSN (made on first use).
    Current,
    /// A new one: the one in use belongs to a runtime that is gone.
    Fresh,
    /// A new plaintext one, from now on: the server has no TLS and the DSN allows falling back.
    Plaintext,
}

/// What every mysql trigger shares (one per [`crate::pools::Pools`]).
pub struct MysqlPools {
    /// The pool in use for each DSN; one unused for 15 minutes is closed.
    pools: IdleMap<Dsn, Pool>,
    /// Identical queries (same DSN, so the same server, database and credentials, and the
    /// same SQL) in flight at the same moment share one round trip.
    inflight: Arc<Coalescer<QueryKey, Result<f64, ScalerError>>>,
    /// The system's root certificates, read once on first use of `tls=true`.
    system_roots: std::sync::OnceLock<Vec<Vec<u8>>>,
}

impl Default for MysqlPools {
    fn default() -> Self {
        Self {
            pools: IdleMap::new(idle_map::IDLE),
            inflight: Arc::new(Coalescer::default()),
            system_roots: std::sync::OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for MysqlPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlPools").finish_non_exhaustive()
    }
}

impl MysqlPools {
    fn pool(&self, dsn: &Dsn, pick: Pick) -> Result<Pool, String> {
        for idle in self.pools.sweep() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = idle.disconnect().await;
                });
            }
        }
        let tls = match pick {
            Pick::Current => {
                if let Some(p) = self.pools.get(dsn) {
                    return Ok(p);
                }
                dsn.options.tls
            }
            Pick::Fresh => dsn.options.tls,
            Pick::Plaintext => Tls::Off,
        };
        let roots: &[Vec<u8>] = match tls {
            Tls::Verify => self.system_roots.get_or_init(system_roots),
            _ => &[],
        };
        let p = new_pool(dsn, tls, roots)?;
        self.pools.insert(dsn.clone(), p.clone());
        Ok(p)
    }
}

/// A cell as a number, as KEDA's `strconv.ParseFloat` on the scanned value.
pub fn to_number(v: &Value) -> Result<f64, String> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::UInt(u) => Ok(*u as f64),
        Value::Float(f) => Ok(f64::from(*f)),
        Value::Double(d) => Ok(*d),
        Value::Bytes(b) => {
            let s = String::from_utf8_lossy(b);
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("the query returned {s:?}, not a number"))
        }
        Value::NULL => Err("the query returned NULL".into()),
        other => Err(format!("the query returned {other:?}, not a number")),
    }
}

/// A driver error in the Go driver's words where they differ.
fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => {
            "TLS requested but server does not support TLS (tls=preferred or \
             allowFallbackToPlaintext=true connect without it)"
                .into()
        }
        e => e.to_string(),
    }
}

/// The connection and the SQL: what makes two mysql queries the same question.
type QueryKey = (Dsn, String);

/// The mysql scaler.
#[derive(Debug, Clone)]
pub struct MysqlScaler {
    metadata: MysqlMetadata,
    spec: MetricSpec,
    shared: Arc<MysqlPools>,
}

impl MysqlScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = MysqlMetadata::parse(&ctx)?;
        Ok(Self {
            spec: MetricSpec {
                name: ctx.metric_name(&format!("mysql-{}", metadata.metric_db)),
                target_type: ctx.target_type()?,
                target: MilliQuantity::from_value(metadata.query_value),
            },
            metadata,
            shared: ctx.pools.mysql.clone(),
        })
    }

    /// One connection attempt from the pool `pick` names: `Err` ends the attempts, `Ok`
    /// carries the driver's answer for [`Self::connect`] to judge.
    async fn attempt(&self, pick: Pick) -> Result<Result<Conn, mysql_async::Error>, String> {
        let dsn = &self.metadata.dsn;
        let pool = self.shared.pool(dsn, pick)?;
        let get = pool.get_conn();
        match dsn.options.connect_timeout {
            None => Ok(get.await),
            Some(limit) => tokio::time::timeout(limit, get)
                .await
                .map_err(|_| format!("no connection within {limit:?} (timeout)")),
        }
    }

    async fn connect(&self) -> Result<Conn, ScalerError> {
        let dsn = &self.metadata.dsn;
        let failed = |cause: String| {
            ScalerError::Query(format!(
                "error establishing MySQL connection: {dsn:?}: {cause}"
            ))
        };
        let mut conn = self.attempt(Pick::Current).await.map_err(failed)?;
        if let Err(mysql_async::Error::Driver(DriverError::PoolDisconnected)) = conn {
            // A pool lives on the runtime that made it; one whose runtime is gone (a
            // finished `eval` or test) is replaced once.
            conn = self.attempt(Pick::Fresh).await.map_err(failed)?;
        }
        if let Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)) = conn {
            if dsn.options.fallback_to_plaintext {
                conn = self.attempt(Pick::Plaintext).await.map_err(failed)?;
            }
        }
        conn.map_err(|e| failed(describe(&e)))
    }

    async fn query(&self) -> Result<f64, ScalerError> {
        let dsn = &self.metadata.dsn;
        let inspect =
            |cause: String| ScalerError::Query(format!("error inspecting MySQL: {dsn:?}: {cause}"));
        let mut conn = self.connect().await?;
        let run = conn.query_first::<Row, _>(&self.metadata.query);
        // A query dropped at its deadline leaves its connection marked broken (mysql_async
        // sets that for the length of every exchange), so the pool discards it, as Go's
        // driver closes a connection after a read timeout: no later query reads its answer.
        let row = match dsn.options.query_timeout() {
            None => run.await,
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .map_err(|_| inspect(format!("no answer within {limit:?} (readTimeout)")))?,
        }
        .map_err(|e| inspect(format!("could not query MySQL database: {e}")))?;
        let row = row.ok_or_else(|| inspect("the query returned no rows".into()))?;
        let cell = row
            .as_ref(0)
            .ok_or_else(|| inspect("the query returned no columns".into()))?;
        to_number(cell).map_err(inspect)
    }
}

#[async_trait]
impl Scaler for MysqlScaler {
    fn scaler_type(&self) -> &'static str {
        "mysql"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    fn activation_threshold(&self) -> Option<f64> {
        Some(self.metadata.activation_query_value)
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let budget = budget(&self.metadata.dsn.options);
        let this = self.clone();
        let key = (self.metadata.dsn.clone(), self.metadata.query.clone());
        let call = async move {
            tokio::time::timeout(budget, this.query())
                .await
                .map_err(|_| {
                    ScalerError::Query(format!(
                        "error inspecting MySQL: {:?}: no answer within {budget:?}",
                        this.metadata.dsn
                    ))
                })?
        };
        let value = self.shared.inflight.run(key, call).await.0?;
        Ok(Sample {
            value,
            active: value > self.metadata.activation_query_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scaled_object::ScaleTriggers;
    use crate::scalers::{with_env, AuthParams};

    fn dsn(user: &str, pass: &str, addr: &str, db: &str) -> Dsn {
        Dsn::new(user, pass, addr, db)
    }

    /// A DSN naming 127.0.0.1 reaches that port, never the server's Unix socket: the
    /// source-fault tests' proxy on loopback was bypassed before.
    #[test]
    fn a_loopback_dsn_connects_where_it_says() {
        let opts = mysql_async::Opts::from(
            pool_opts(&dsn("u", "p", "127.0.0.1:13306", "shop"), Tls::Off, &[]).expect("opts"),
        );
        assert!(!opts.prefer_socket());
        assert_eq!(opts.tcp_port(), 13306);
        assert_eq!(opts.ip_or_hostname(), "127.0.0.1");
    }

    #[test]
    fn charsets_and_the_time_budget() {
        let o = |q: &str| go_dsn::parse_options(q).expect(q);
        let got = o("charset=utf8mb4,utf8&collation=utf8mb4_bin");
        assert_eq!(
            names_statements(&got),
            [
                "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
                "SET NAMES utf8 COLLATE utf8mb4_bin"
            ]
        );
        assert!(names_statements(&o("collation=latin1_bin"))[0]
            .starts_with("SET collation_connection = 'latin1_bin'"));
        assert!(names_statements(&o("")).is_empty());

        let got = o("timeout=5s&readTimeout=1m30s&writeTimeout=500ms&");
        assert_eq!(budget(&got), Duration::from_millis(95_500));
        assert_eq!(budget(&o("readTimeout=1s")), TIMEOUT);
    }

    fn build_env(
        index: usize,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<MysqlScaler, ScalerError> {
        let pairs = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let t = ScaleTriggers {
            type_: "mysql".into(),
            metadata: pairs(meta).into(),
            ..Default::default()
        };
        // `...FromEnv` is resolved before a scaler is built, as the adapter does.
        let (t, unresolved) = with_env(&t, &pairs(env));
        let auth: AuthParams = pairs(auth);
        MysqlScaler::new(TriggerContext {
            index,
            trigger: &t,
            auth: &auth,
            namespace: "ns",
            name: "test",
            client: None,
            as_metric_source: false,
            pools: &crate::pools::Pools::default(),
        })
        .map_err(|e| crate::scalers::explain(e, &unresolved))
    }

    fn build(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<MysqlScaler, ScalerError> {
        build_env(0, meta, auth, &[])
    }

    /// KEDA's `testMySQLResolvedEnv`.
    const KEDA_ENV: [(&str, &str); 3] = [
        ("MYSQL_USERNAME", "test_username"),
        ("MYSQL_PASSWORD", "pass"),
        (
            "MYSQL_CONN_STR",
            "user@tcp(http://my.mysql.dev:3306)/stats_db",
        ),
    ];

    #[test]
    fn kedas_parse_table() {
        let q = [("query", "query"), ("queryValue", "12")];
        let with = |extra: &[(&'static str, &'static str)]| [&q[..], extra].concat();
        let auth_fields = [
            ("host", "test_host"),
            ("port", "test_port"),
            ("username", "test_username"),
            ("password", "MYSQL_PASSWORD"),
            ("dbName", "test_dbname"),
        ];
        // No metadata.
        assert!(build_env(0, &[], &[], &KEDA_ENV).is_err());
        // connectionStringFromEnv.
        let s = build_env(
            0,
            &with(&[("connectionStringFromEnv", "MYSQL_CONN_STR")]),
            &[],
            &KEDA_ENV,
        )
        .expect("connectionStringFromEnv");
        assert_eq!(s.metric_spec().name, "s0-mysql-stats_db");
        assert_eq!(s.metadata.dsn.user, "user");
        // Fields instead of a connection string, with passwordFromEnv (trigger index 1).
        let fields = [
            ("host", "test_host"),
            ("port", "test_port"),
            ("username", "test_username"),
            ("passwordFromEnv", "MYSQL_PASSWORD"),
            ("dbName", "test_dbname"),
        ];
        let s = build_env(1, &with(&fields), &[], &KEDA_ENV).expect("fields");
        assert_eq!(s.metric_spec().name, "s1-mysql-test_dbname");
        // KEDA's TestMetadataToConnectionStrBuildNew: test_username:pass@tcp(test_host:test_port)/test_dbname
        assert_eq!(
            s.metadata.dsn,
            dsn(
                "test_username",
                "pass",
                "test_host:test_port",
                "test_dbname"
            )
        );
        // usernameFromEnv.
        let s = build_env(
            0,
            &with(&[
                ("host", "test_host"),
                ("port", "test_port"),
                ("usernameFromEnv", "MYSQL_USERNAME"),
                ("passwordFromEnv", "MYSQL_PASSWORD"),
                ("dbName", "test_dbname"),
            ]),
            &[],
            &KEDA_ENV,
        )
        .expect("usernameFromEnv");
        assert_eq!(s.metadata.dsn.user, "test_username");
        assert_eq!(s.metadata.dsn.password, "pass");
        // Everything from the TriggerAuthentication.
        let s = build_env(0, &q, &auth_fields, &KEDA_ENV).expect("auth fields");
        assert_eq!(
            s.metadata.dsn,
            dsn(
                "test_username",
                "MYSQL_PASSWORD",
                "test_host:test_port",
                "test_dbname"
            )
        );
        assert_eq!(s.metric_spec().name, "s0-mysql-test_dbname");
        // Invalid activationQueryValue, with and without a username.
        let e = build_env(
            0,
            &with(&[("activationQueryValue", "AA")]),
            &auth_fields,
            &KEDA_ENV,
        )
        .expect_err("activation");
        assert!(e.to_string().contains("activationQueryValue"), "{e}");
        let no_user: Vec<_> = auth_fields
            .iter()
            .filter(|(k, _)| *k != "username")
            .copied()
            .collect();
        assert!(build_env(0, &with(&[("activationQueryValue", "AA")]), &no_user, &[]).is_err());
    }

    #[tokio::test]
    async fn a_port_kedas_dialer_refuses_fails_when_connecting() {
        let q = [("query", "SELECT 1"), ("queryValue", "1")];
        for (port, want) in [
            (Some("test_port"), "unknown port \"test_port\""),
            // No port: KEDA writes `tcp(host:)`, which Go dials as port 0.
            (None, "the address has no port"),
        ] {
            let mut meta = vec![q[0], q[1], ("host", "db.invalid")];
            meta.extend(port.map(|p| ("port", p)));
            let s = build(&meta, &[]).expect("parses, as in KEDA");
            let e = s.sample().await.expect_err("cannot connect").to_string();
            assert!(
                e.starts_with("error establishing MySQL connection: ") && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn metric_names_keep_kedas_last_segment() {
        let q = [("query", "q"), ("queryValue", "1")];
        for (cs, want) in [
            ("u:p@tcp(h:3306)/app?tls=false", "s0-mysql-app?tls=false"),
            (
                "u:p@tcp(h:3306)/app?timeout=1.5s&tls=preferred",
                "s0-mysql-app?timeout=1-5s&tls=preferred",
            ),
            ("u:p@tcp(h:3306)/", "s0-mysql-"),
            (
                "mysql://u:p@h:3306/orders?tls=true",
                "s0-mysql-orders?tls=true",
            ),
            ("u@tcp(h:1)/my%2Ddb", "s0-mysql-my-2Ddb"),
        ] {
            let s = build(&q, &[("connectionString", cs)]).expect(cs);
            assert_eq!(s.metric_spec().name, want, "{cs}");
        }
        // The fields form names the metric after dbName, even when there is none.
        let s = build(&[q[0], q[1], ("host", "h"), ("port", "1")], &[]).expect("no db");
        assert_eq!(s.metric_spec().name, "s0-mysql-");
    }

    #[test]
    fn fields_are_optional_and_read_in_kedas_order() {
        let q = [("query", "q"), ("queryValue", "2.5")];
        let meta = |extra: &[(&'static str, &'static str)]| [&q[..], extra].concat();

        // No username, password or dbName: a passwordless user, no database.
        let s = build(&meta(&[("host", "h"), ("port", "3306")]), &[]).expect("minimal");
        assert_eq!(s.metadata.dsn, dsn("", "", "h:3306", ""));
        assert_eq!(s.metric_spec().target, "2500m");
        let s = build(
            &meta(&[("host", "h"), ("port", "1"), ("username", "u")]),
            &[],
        )
        .expect("passwordless");
        assert_eq!(s.metadata.dsn, dsn("u", "", "h:1", ""));
        // Go's FormatDSN drops a password given without a user.
        let s = build(&meta(&[("host", "h"), ("port", "1")]), &[("password", "p")])
            .expect("password alone");
        assert_eq!(s.metadata.dsn.password, "");
        // An IPv6 host is bracketed, as net.JoinHostPort does.
        let s = build(&meta(&[("host", "::1"), ("port", "1")]), &[]).expect("ipv6");
        assert_eq!(s.metadata.dsn.addr, "[::1]:1");

        // host, port, dbName, username: metadata before the TriggerAuthentication.
        let both = [
            ("host", "auth-host"),
            ("port", "2"),
            ("dbName", "auth_db"),
            ("username", "auth_user"),
            ("password", "auth_pw"),
        ];
        let s = build(
            &meta(&[
                ("host", "meta-host"),
                ("port", "1"),
                ("dbName", "meta_db"),
                ("username", "meta_user"),
            ]),
            &both,
        )
        .expect("metadata first");
        assert_eq!(
            s.metadata.dsn,
            dsn("meta_user", "auth_pw", "meta-host:1", "meta_db")
        );
        assert_eq!(s.metric_spec().name, "s0-mysql-meta_db");

        // username: the TriggerAuthentication before usernameFromEnv.
        let env = [("U", "env_user"), ("P", "env_pw"), ("H", "env-host")];
        let s = build_env(
            0,
            &meta(&[("usernameFromEnv", "U"), ("passwordFromEnv", "P")]),
            &both,
            &env,
        )
        .expect("auth before env");
        assert_eq!(
            (
                s.metadata.dsn.user.as_str(),
                s.metadata.dsn.password.as_str()
            ),
            ("auth_user", "auth_pw")
        );
        // password: the TriggerAuthentication before passwordFromEnv; the environment
        // when authentication has none.
        let s = build_env(
            0,
            &meta(&[
                ("host", "h"),
                ("port", "1"),
                ("username", "u"),
                ("passwordFromEnv", "P"),
            ]),
            &[],
            &env,
        )
        .expect("password from env");
        assert_eq!(s.metadata.dsn.password, "env_pw");
        // KEDA never reads hostFromEnv, portFromEnv or dbNameFromEnv.
        let s = build_env(
            0,
            &meta(&[("hostFromEnv", "H"), ("port", "1"), ("dbNameFromEnv", "U")]),
            &[],
            &env,
        )
        .expect("hostFromEnv ignored");
        assert_eq!(s.metadata.dsn.addr, ":1");
        assert_eq!(s.metric_spec().name, "s0-mysql-");
        // connectionString: the TriggerAuthentication before connectionStringFromEnv, and
        // before the fields.
        let s = build_env(
            0,
            &meta(&[("connectionStringFromEnv", "C"), ("host", "ignored")]),
            &[("connectionString", "a@tcp(auth:1)/from_auth")],
            &[("C", "e@tcp(env:1)/from_env")],
        )
        .expect("auth connection string");
        assert_eq!(s.metadata.dsn, dsn("a", "", "auth:1", "from_auth"));
    }

    #[test]
    fn parse_errors() {
        let q = ("query", "SELECT COUNT(*) FROM jobs");
        let cs = ("connectionString", "u:p@tcp(h)/d");
        let bad = [
            (
                vec![("queryValue", "1")],
                vec![cs],
                "missing required parameter \"query\" in [triggerMetadata resolvedEnv]",
            ),
            (
                vec![q],
                vec![cs],
                "missing required parameter \"queryValue\" in [triggerMetadata resolvedEnv]",
            ),
            (
                vec![q, ("queryValue", "x")],
                vec![cs],
                "unable to set param \"queryValue\" value \"x\": unable to unmarshal to field type float64: invalid character 'x' looking for beginning of value",
            ),
            (
                vec![q, ("queryValue", "1"), ("activationQueryValue", "x")],
                vec![cs],
                "unable to set param \"activationQueryValue\" value \"x\": unable to unmarshal to field type float64",
            ),
            (
                vec![q, ("queryValue", "1"), ("connectionString", "u:p@tcp(h)/d")],
                vec![],
                "connectionString must come from a TriggerAuthentication",
            ),
            (
                vec![q, ("queryValue", "1"), ("host", "h"), ("password", "plain")],
                vec![],
                "password must come from a TriggerAuthentication",
            ),
            (
                vec![q, ("queryValue", "1")],
                vec![("connectionString", "u:p@tcp(h)/d?tls=maybe")],
                "invalid MySQL connection string: tls: invalid value / unknown config name: maybe",
            ),
            (
                vec![q, ("queryValue", "1")],
                vec![("connectionString", "u:p@tcp(h)/d?bogus=1")],
                "invalid MySQL connection string: unsupported option \"bogus\"",
            ),
        ];
        for (meta, auth, want) in bad {
            let e = build(&meta, &auth).expect_err(want);
            assert!(e.to_string().contains(want), "{meta:?}: {e}");
        }
        // The error names the parameter, not the secret.
        let e = build(
            &[q, ("queryValue", "1")],
            &[("connectionString", "u:hunter2@tcp(h)/d?bogus=1")],
        )
        .expect_err("bogus");
        assert_eq!(e.param(), Some("connectionString"));
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn cells_as_numbers() {
        assert_eq!(to_number(&Value::Int(-3)), Ok(-3.0));
        assert_eq!(to_number(&Value::UInt(7)), Ok(7.0));
        assert_eq!(to_number(&Value::Double(2.5)), Ok(2.5));
        assert_eq!(to_number(&Value::Bytes(b"12.75".to_vec())), Ok(12.75));
        assert!(to_number(&Value::Bytes(b"abc".to_vec())).is_err());
        assert!(to_number(&Value::NULL).is_err_and(|e| e.contains("NULL")));
    }
}
