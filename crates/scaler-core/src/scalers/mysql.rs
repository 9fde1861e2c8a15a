//! The `mysql` trigger: the first column of the first row of a query, as a number.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, Row, Value};

use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::quantity::quantity_string;

/// Connecting plus querying may take this long.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect, parsed from a connection string or host/port/username/password/dbName.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Dsn {
    /// Host.
    pub host: String,
    /// Port (3306 by default).
    pub port: u16,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub db_name: String,
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.db_name
        )
    }
}

fn bad(param: &str, message: impl Into<String>) -> ScalerError {
    ScalerError::invalid(param, message)
}

/// Parse Go's DSN form, `user:pass@tcp(host:port)/db?params`, or a `mysql://` URL.
pub fn parse_connection_string(s: &str) -> Result<Dsn, ScalerError> {
    let err = |m: &str| {
        bad(
            "connectionString",
            format!("invalid MySQL connection string: {m}"),
        )
    };
    if s.starts_with("mysql://") {
        let opts = Opts::from_url(s).map_err(|e| err(&e.to_string()))?;
        return Ok(Dsn {
            host: opts.ip_or_hostname().to_string(),
            port: opts.tcp_port(),
            user: opts.user().unwrap_or_default().to_string(),
            password: opts.pass().unwrap_or_default().to_string(),
            db_name: opts.db_name().unwrap_or_default().to_string(),
        });
    }
    // Go: [user[:password]@][net[(addr)]]/dbname[?param1=value1&paramN=valueN]
    let (creds, rest) = match s.rfind('@') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => ("", s),
    };
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let slash = rest.rfind('/').ok_or_else(|| err("missing \"/dbname\""))?;
    let (net, db) = (&rest[..slash], &rest[slash + 1..]);
    let db_name = db.split('?').next().unwrap_or("").to_string();
    let addr = match net {
        "" => "127.0.0.1:3306",
        n => match n.strip_prefix("tcp(").and_then(|a| a.strip_suffix(')')) {
            Some(a) => a,
            None if n == "tcp" => "127.0.0.1:3306",
            None => {
                return Err(err(&format!(
                    "network {n:?} is not supported; use tcp(host:port)"
                )))
            }
        },
    };
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| err(&format!("invalid port {p:?}")))?,
        ),
        None => (addr, 3306),
    };
    Ok(Dsn {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        user: user.to_string(),
        password: password.to_string(),
        db_name,
    })
}

/// Parsed `mysql` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlMetadata {
    /// Where to connect.
    pub dsn: Dsn,
    /// The query.
    pub query: String,
    /// Target per replica.
    pub query_value: f64,
    /// Active strictly above this.
    pub activation_query_value: f64,
}

fn secret(ctx: &TriggerContext<'_>, key: &str) -> Result<Option<String>, ScalerError> {
    if let Some(v) = ctx.auth_param(key) {
        return Ok(Some(v.to_string()));
    }
    // `<key>FromEnv` has been resolved into metadata; a plain `<key>` in metadata has not.
    let from_env = format!("{key}FromEnv");
    match ctx.param(key) {
        Some(v) if ctx.trigger.metadata.contains_key(&from_env) => Ok(Some(v.to_string())),
        Some(_) => Err(bad(
            key,
            format!("{key} must come from a TriggerAuthentication or {from_env}, not from plain metadata"),
        )),
        None => Ok(None),
    }
}

fn number(ctx: &TriggerContext<'_>, key: &str) -> Result<Option<f64>, ScalerError> {
    ctx.param(key)
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad(key, format!("{key} parsing error: {v:?} is not a number")))
        })
        .transpose()
}

impl MysqlMetadata {
    /// Parse with KEDA's rules.
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let query = ctx.required("query")?.to_string();
        let query_value = number(ctx, "queryValue")?
            .ok_or_else(|| ScalerError::MissingParameter("queryValue".into()))?;
        let activation_query_value = number(ctx, "activationQueryValue")?.unwrap_or(0.0);
        let dsn = match secret(ctx, "connectionString")? {
            Some(cs) => parse_connection_string(&cs)?,
            None => {
                let param = |k: &str| {
                    ctx.auth_param(k)
                        .or_else(|| ctx.param(k))
                        .map(str::to_string)
                };
                let host =
                    param("host").ok_or_else(|| ScalerError::MissingParameter("host".into()))?;
                let port = match param("port") {
                    None => 3306,
                    Some(p) => p
                        .parse()
                        .map_err(|_| bad("port", format!("invalid port {p:?}")))?,
                };
                Dsn {
                    host,
                    port,
                    user: param("username")
                        .ok_or_else(|| ScalerError::MissingParameter("username".into()))?,
                    password: secret(ctx, "password")?
                        .ok_or_else(|| ScalerError::MissingParameter("password".into()))?,
                    db_name: param("dbName")
                        .ok_or_else(|| ScalerError::MissingParameter("dbName".into()))?,
                }
            }
        };
        Ok(Self {
            dsn,
            query,
            query_value,
            activation_query_value,
        })
    }
}

/// One connection pool per DSN, shared by every mysql trigger.
static POOLS: LazyLock<Mutex<HashMap<Dsn, Pool>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn pool(dsn: &Dsn, fresh: bool) -> Pool {
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    if fresh {
        pools.remove(dsn);
    }
    pools
        .entry(dsn.clone())
        .or_insert_with(|| {
            let opts = OptsBuilder::default()
                .ip_or_hostname(dsn.host.clone())
                .tcp_port(dsn.port)
                .user(Some(dsn.user.clone()))
                .pass(Some(dsn.password.clone()))
                .db_name((!dsn.db_name.is_empty()).then(|| dsn.db_name.clone()));
            Pool::new(opts)
        })
        .clone()
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

/// The mysql scaler.
#[derive(Debug, Clone)]
pub struct MysqlScaler {
    metadata: MysqlMetadata,
    spec: MetricSpec,
}

impl MysqlScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = MysqlMetadata::parse(&ctx)?;
        Ok(Self {
            spec: MetricSpec {
                name: ctx.metric_name(&format!("mysql-{}", metadata.dsn.db_name)),
                target_type: ctx.target_type()?,
                target: quantity_string(metadata.query_value),
            },
            metadata,
        })
    }

    async fn query(&self) -> Result<f64, ScalerError> {
        let dsn = &self.metadata.dsn;
        let conn = match pool(dsn, false).get_conn().await {
            // A pool lives on the runtime that made it; one whose runtime is gone (a
            // finished `eval` or test) is replaced once.
            Err(mysql_async::Error::Driver(mysql_async::DriverError::PoolDisconnected)) => {
                pool(dsn, true).get_conn().await
            }
            other => other,
        };
        let mut conn = conn.map_err(|e| {
            ScalerError::Query(format!(
                "error establishing MySQL connection to {dsn:?}: {e}"
            ))
        })?;
        let row: Option<Row> = conn
            .query_first(&self.metadata.query)
            .await
            .map_err(|e| ScalerError::Query(format!("could not query MySQL {dsn:?}: {e}")))?;
        let row =
            row.ok_or_else(|| ScalerError::Query("the MySQL query returned no rows".into()))?;
        let cell = row
            .as_ref(0)
            .ok_or_else(|| ScalerError::Query("the MySQL query returned no columns".into()))?;
        to_number(cell).map_err(ScalerError::Query)
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

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let value = tokio::time::timeout(TIMEOUT, self.query())
            .await
            .map_err(|_| {
                ScalerError::Query(format!(
                    "no answer from MySQL {:?} within {TIMEOUT:?}",
                    self.metadata.dsn
                ))
            })??;
        Ok(Sample {
            value,
            active: value > self.metadata.activation_query_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaled_object::ScaleTriggers;
    use crate::scalers::AuthParams;

    fn dsn(host: &str, port: u16, user: &str, pass: &str, db: &str) -> Dsn {
        Dsn {
            host: host.into(),
            port,
            user: user.into(),
            password: pass.into(),
            db_name: db.into(),
        }
    }

    #[test]
    fn connection_strings_in_both_forms() {
        let cases = [
            (
                "root:s3cret@tcp(mysql.db:3307)/stats_db",
                dsn("mysql.db", 3307, "root", "s3cret", "stats_db"),
            ),
            (
                "user:p@ss:word@tcp(10.0.0.1:3306)/app?tls=false",
                dsn("10.0.0.1", 3306, "user", "p@ss:word", "app"),
            ),
            ("u@tcp(h)/d", dsn("h", 3306, "u", "", "d")),
            ("u:p@/d", dsn("127.0.0.1", 3306, "u", "p", "d")),
            (
                "mysql://u:p@db.example:3310/orders",
                dsn("db.example", 3310, "u", "p", "orders"),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse_connection_string(s).expect(s), want, "{s}");
        }
        for (s, want) in [
            (
                "u:p@unix(/var/run/mysqld.sock)/d",
                "network \"unix(/var/run/mysqld.sock)\" is not supported",
            ),
            ("u:p@tcp(h:notaport)/d", "invalid port"),
            ("u:p@tcp(h:1)", "missing \"/dbname\""),
        ] {
            let e = parse_connection_string(s).expect_err(s).to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    fn build(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<MysqlScaler, ScalerError> {
        let t = ScaleTriggers {
            type_: "mysql".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let auth: AuthParams = auth
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        MysqlScaler::new(TriggerContext {
            index: 0,
            trigger: &t,
            auth: &auth,
            namespace: "ns",
            name: "test",
            client: None,
            as_metric_source: false,
        })
    }

    #[test]
    fn parse_table() {
        let q = ("query", "SELECT COUNT(*) FROM jobs");
        let s = build(
            &[q, ("queryValue", "5")],
            &[("connectionString", "u:p@tcp(h:3306)/stats_db")],
        )
        .expect("ok");
        assert_eq!(s.metric_spec().name, "s0-mysql-stats_db");
        assert_eq!(s.metric_spec().target, "5");
        let s = build(
            &[
                q,
                ("queryValue", "2.5"),
                ("host", "h"),
                ("username", "u"),
                ("dbName", "app"),
                ("passwordFromEnv", "PW"),
                ("password", "from-env"),
            ],
            &[],
        )
        .expect("password from env");
        assert_eq!(s.metadata.dsn, dsn("h", 3306, "u", "from-env", "app"));
        assert_eq!(s.metric_spec().target, "2500m");
        let ok_auth = build(
            &[
                q,
                ("queryValue", "1"),
                ("host", "h"),
                ("port", "3310"),
                ("username", "u"),
                ("dbName", "d"),
            ],
            &[("password", "p")],
        );
        assert_eq!(ok_auth.expect("ok").metadata.dsn.port, 3310);

        let bad = [
            (
                vec![("queryValue", "1")],
                vec![("connectionString", "u:p@tcp(h)/d")],
                "missing required parameter \"query\"",
            ),
            (
                vec![q],
                vec![("connectionString", "u:p@tcp(h)/d")],
                "missing required parameter \"queryValue\"",
            ),
            (
                vec![q, ("queryValue", "x")],
                vec![("connectionString", "u:p@tcp(h)/d")],
                "queryValue parsing error",
            ),
            (
                vec![q, ("queryValue", "1"), ("activationQueryValue", "x")],
                vec![("connectionString", "u:p@tcp(h)/d")],
                "activationQueryValue parsing error",
            ),
            (
                vec![q, ("queryValue", "1"), ("connectionString", "u:p@tcp(h)/d")],
                vec![],
                "connectionString must come from a TriggerAuthentication",
            ),
            (
                vec![
                    q,
                    ("queryValue", "1"),
                    ("host", "h"),
                    ("username", "u"),
                    ("dbName", "d"),
                    ("password", "plain"),
                ],
                vec![],
                "password must come from a TriggerAuthentication",
            ),
            (
                vec![q, ("queryValue", "1"), ("username", "u"), ("dbName", "d")],
                vec![("password", "p")],
                "missing required parameter \"host\"",
            ),
            (
                vec![q, ("queryValue", "1"), ("host", "h"), ("dbName", "d")],
                vec![("password", "p")],
                "missing required parameter \"username\"",
            ),
            (
                vec![q, ("queryValue", "1"), ("host", "h"), ("username", "u")],
                vec![("password", "p")],
                "missing required parameter \"dbName\"",
            ),
            (
                vec![
                    q,
                    ("queryValue", "1"),
                    ("host", "h"),
                    ("username", "u"),
                    ("dbName", "d"),
                ],
                vec![],
                "missing required parameter \"password\"",
            ),
        ];
        for (meta, auth, want) in bad {
            let e = build(&meta, &auth).expect_err(want).to_string();
            assert!(e.contains(want), "{meta:?}: {e}");
        }
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
