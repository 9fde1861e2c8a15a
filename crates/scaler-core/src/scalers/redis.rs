//! The `redis` trigger (the length of a list), and the connection it shares with
//! `redis-streams` ([`super::redis_streams`]).
//!
//! The connection is KEDA's: `address` (or `addresses`; the plain types use the first),
//! else `host`/`hosts` with `port`/`ports`; `username`, `password`, `databaseIndex`; TLS
//! with `enableTLS: "true"` in the metadata or `tls: enable` in the TriggerAuthentication
//! (not both), its `ca`, `cert`, `key` and `keyPassword` from the TriggerAuthentication and
//! `unsafeSsl` from the metadata. The length is KEDA's: a list's `LLEN`, and for a key of
//! another type its cardinality (`SCARD`, `ZCARD`, `HLEN`); a missing key is 0.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo};

use super::params::Source::{Auth, Env, Meta};
use super::params::{Defaulted, Param, Params, Required};
use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::coalesce::Coalescer;
use crate::idle_map::Connections;
use crate::quantity::MilliQuantity;

/// Connecting and answering one question may take this long in all.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `address` (or `addresses`): `host:port`, comma-separated.
const ADDRESS: Param = Param::new("address")
    .aliases(&["addresses"])
    .from(&[Meta, Auth, Env]);
/// `host` (or `hosts`), with `port` (or `ports`).
const HOST: Param = Param::new("host")
    .aliases(&["hosts"])
    .from(&[Meta, Env, Auth]);
/// `port` (or `ports`).
const PORT: Param = Param::new("port")
    .aliases(&["ports"])
    .from(&[Meta, Env, Auth]);
/// `username` (KEDA takes a plain metadata value as it is).
const USERNAME: Param = Param::new("username").from(&[Meta, Env, Auth]);
/// `password` (likewise).
const PASSWORD: Param = Param::new("password").from(&[Meta, Env, Auth]);
/// `databaseIndex`.
const DATABASE_INDEX: Param<Defaulted> = Param::new("databaseIndex").from(&[Meta]).default("0");
/// `enableTLS`, in the metadata.
const ENABLE_TLS: Param = Param::new("enableTLS").from(&[Meta]);
/// `tls: enable|disable`, in the TriggerAuthentication.
const TLS: Param = Param::new("tls").from(&[Auth]);
/// `unsafeSsl`: accept any server certificate.
const UNSAFE_SSL: Param<Defaulted> = Param::new("unsafeSsl").from(&[Meta]).default("false");
/// `ca`: PEM certificates trusted besides the system's.
const CA: Param = Param::new("ca").from(&[Auth]);
/// `cert` (also `Cert`): the client certificate.
const CERT: Param = Param::new("cert").aliases(&["Cert"]).from(&[Auth]);
/// `key`: the client certificate's key.
const KEY: Param = Param::new("key").from(&[Auth]);
/// `keyPassword`: the key's password, when it is encrypted.
const KEY_PASSWORD: Param = Param::new("keyPassword").from(&[Auth]);

/// `listName`.
const LIST_NAME: Param<Required> = Param::new("listName").from(&[Meta]).required();
/// `listLength`: the target per replica.
const LIST_LENGTH: Param<Defaulted> = Param::new("listLength").from(&[Meta]).default("5");
/// `activationListLength`: active strictly above this.
const ACTIVATION_LIST_LENGTH: Param<Defaulted> = Param::new("activationListLength")
    .from(&[Meta])
    .default("0");

/// Where and how to connect; the key of the shared connections.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisConnection {
    /// Host name or address (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// `SELECT`ed database.
    pub db: i64,
    /// `AUTH` user, if any.
    pub username: Option<String>,
    /// `AUTH` password, if any.
    pub password: Option<String>,
    /// TLS, when enabled.
    pub tls: Option<crate::tls::Settings>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is a secret: never printed.
        write!(f, "{}:{}/{}", self.host, self.port, self.db)?;
        if self.tls.is_some() {
            write!(f, " (TLS)")?;
        }
        Ok(())
    }
}

/// `host:port`, `[v6]:port`: split.
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// `host` and `port` as Go's `net.JoinHostPort` joins them.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl RedisConnection {
    /// Parse with KEDA's rules (`redisConnectionInfo` and its checks).
    pub fn parse(params: &Params<'_>) -> Result<Self, ScalerError> {
        let mut addresses: Vec<String> = params
            .list(&ADDRESS)?
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect();
        let hosts = params.list(&HOST)?.unwrap_or_default();
        let ports = params.list(&PORT)?.unwrap_or_default();
        if !hosts.is_empty() && !ports.is_empty() {
            if hosts.len() != ports.len() {
                return Err(ScalerError::invalid(
                    "host",
                    "not enough hosts or ports given. number of hosts should be equal to the number of ports",
                ));
            }
            addresses.extend(hosts.iter().zip(&ports).map(|(h, p)| join_host_port(h, p)));
        }
        let Some(first) = addresses.first().filter(|a| !a.is_empty()) else {
            return Err(ScalerError::invalid(
                "address",
                "no addresses or hosts given. address should be a comma separated list of host:port or set the host/port values",
            ));
        };
        let (host, port) = split_address(first).ok_or_else(|| {
            ScalerError::invalid(
                "address",
                format!("address {first:?} is not host:port (Redis has no default port here, as in KEDA)"),
            )
        })?;
        let enable_tls = params.flag(&ENABLE_TLS)?;
        let tls_auth = params.text(&TLS)?;
        let tls =
            match (enable_tls, tls_auth) {
                (Some(_), Some(_)) => return Err(ScalerError::invalid(
                    "enableTLS",
                    "unable to set `tls` in both ScaledObject and TriggerAuthentication together",
                )),
                (Some(on), None) => on,
                (None, Some("enable")) => true,
                (None, Some("disable")) | (None, None) => false,
                (None, Some(other)) => {
                    return Err(ScalerError::invalid(
                        "tls",
                        format!("error incorrect TLS value given, got {other}"),
                    ))
                }
            };
        let unsafe_ssl = params.flag(&UNSAFE_SSL)?;
        let tls = if tls {
            let cert_key = match (params.text(&CERT)?, params.text(&KEY)?) {
                (Some(c), Some(k)) => {
                    let key = match params.text(&KEY_PASSWORD)? {
                        Some(pw) => crate::tls::private_key::decrypt(k, pw).map_err(|e| {
                            ScalerError::invalid(
                                "keyPassword",
                                format!("error decrypt X509Key: {e}"),
                            )
                        })?,
                        None => k.to_string(),
                    };
                    Some((c.to_string(), key))
                }
                (Some(_), None) | (None, Some(_)) => {
                    return Err(ScalerError::invalid(
                        "cert",
                        "both key and certificate must be provided",
                    ))
                }
                (None, None) => None,
            };
            let settings = crate::tls::Settings {
                ca: params.text(&CA)?.map(str::to_string),
                cert_key,
                unsafe_ssl,
            };
            // Refused now, naming the field, rather than at every poll.
            settings
                .client_config()
                .map_err(|e| ScalerError::invalid(e.param, e.to_string()))?;
            Some(settings)
        } else {
            None
        };
        let db = params.int(&DATABASE_INDEX)?;
        Ok(Self {
            host,
            port,
            db,
            username: params.text(&USERNAME)?.map(str::to_string),
            password: params.text(&PASSWORD)?.map(str::to_string),
            tls,
        })
    }

    fn info(&self) -> RedisConnectionInfo {
        let mut info = RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.username {
            info = info.set_username(u);
        }
        if let Some(p) = &self.password {
            info = info.set_password(p);
        }
        info
    }

    /// A new connection (TCP, TLS when enabled, then `AUTH` and `SELECT`).
    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connection to redis failed: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let info = self.info();
        match &self.tls {
            None => multiplexed(&info, tcp).await,
            Some(settings) => {
                let config = settings.client_config().map_err(|e| e.to_string())?;
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("connection to redis failed: {e}"))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("connection to redis failed: TLS: {e}"))?;
                multiplexed(&info, stream).await
            }
        }
    }
}

/// A multiplexed connection over `stream`, its driver on a task of its own (it ends when
/// the connection closes; the next question then connects again).
async fn multiplexed<S>(
    info: &RedisConnectionInfo,
    stream: S,
) -> Result<MultiplexedConnection, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // No response timeout of the client's own (0.5 s by default): a question has
    // [`TIMEOUT`] in all, as KEDA's client waits 3 s for an answer.
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    let (conn, driver) = MultiplexedConnection::new_with_config(info, stream, config)
        .await
        .map_err(|e| format!("connection to redis failed: {e}"))?;
    tokio::spawn(driver);
    Ok(conn)
}

/// A question to a Redis server: what makes two identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Question {
    /// KEDA's length of a key (`LLEN` for a list).
    Length(String),
    /// `XPENDING stream group`: the pending entries.
    Pending { stream: String, group: String },
    /// `XLEN stream`.
    StreamLength(String),
    /// The group's lag (`XINFO GROUPS`, Redis 7 and later).
    Lag { stream: String, group: String },
}

/// What every redis trigger shares (one per [`crate::pools::Pools`]).
pub struct RedisClients {
    /// One multiplexed connection per server, database and credentials; one unused for
    /// 15 minutes is dropped.
    conns: Connections<RedisConnection, MultiplexedConnection>,
    /// Identical questions in flight at the same moment share one round trip.
    inflight: Arc<Coalescer<(RedisConnection, Question), Result<f64, ScalerError>>>,
}

impl Default for RedisClients {
    fn default() -> Self {
        Self {
            conns: Connections::default(),
            inflight: Arc::new(Coalescer::default()),
        }
    }
}

impl std::fmt::Debug for RedisClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClients").finish_non_exhaustive()
    }
}

/// KEDA's length of a key: a list's length, a set's, sorted set's or hash's cardinality, 0
/// for a missing key, an error for any other type.
const LENGTH_SCRIPT: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'list' or t == 'none' then return redis.call('LLEN', KEYS[1]) end
if t == 'set' then return redis.call('SCARD', KEYS[1]) end
if t == 'zset' then return redis.call('ZCARD', KEYS[1]) end
if t == 'hash' then return redis.call('HLEN', KEYS[1]) end
return redis.error_reply('ERR unsupported key type: ' .. t)
"#;

/// The major version in `INFO`'s `redis_version:` line.
pub fn major_version(info: &str) -> Result<u32, String> {
    let line = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .ok_or("could not find Redis version number")?;
    line.split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .ok_or_else(|| "redis version could not be converted to number".to_string())
}

/// The `lag` of `group` in an `XINFO GROUPS` answer: `Some(None)` when its lag is nil
/// (unknown), `None` when there is no such group.
pub fn group_lag(groups: &redis::Value, group: &str) -> Option<Option<i64>> {
    use redis::Value;
    let Value::Array(items) = groups else {
        return None;
    };
    for g in items {
        let pairs: Vec<(&Value, &Value)> = match g {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| Some((c.first()?, c.get(1)?)))
                .collect(),
            Value::Map(kv) => kv.iter().map(|(k, v)| (k, v)).collect(),
            _ => continue,
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| text(k).as_deref() == Some(name))
                .map(|(_, v)| *v)
        };
        if field("name").and_then(text).as_deref() != Some(group) {
            continue;
        }
        return Some(match field("lag") {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        });
    }
    None
}

impl RedisClients {
    /// Ask `q` of the server `c` names; identical questions at the same moment share one
    /// round trip.
    pub async fn ask(
        self: &Arc<Self>,
        c: &RedisConnection,
        q: &Question,
    ) -> Result<f64, ScalerError> {
        let this = self.clone();
        let (conn, question) = (c.clone(), q.clone());
        let call = async move {
            let asked = tokio::time::timeout(TIMEOUT, this.ask_now(&conn, &question)).await;
            let (message, broken) = match asked {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(failure)) => failure,
                Err(_) => (
                    format!("redis {conn:?}: no answer within {TIMEOUT:?}"),
                    true,
                ),
            };
            // Only a connection that failed is made again: an error answer (a missing
            // group, a key of the wrong type) leaves it to the other triggers using it.
            if broken {
                this.conns.forget(&conn).await;
            }
            Err(ScalerError::Query(message))
        };
        self.inflight.run((c.clone(), q.clone()), call).await.0
    }

    /// The answer, or why not and whether the connection itself failed.
    async fn ask_now(&self, c: &RedisConnection, q: &Question) -> Result<f64, (String, bool)> {
        let mut conn = self
            .conns
            .get(c, |_| true, || c.connect())
            .await
            .map_err(|e| (e, true))?;
        let failed = |e: redis::RedisError| {
            let broken = e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout();
            (format!("redis {c:?}: {e}"), broken)
        };
        let n: i64 = match q {
            Question::Length(key) => redis::Script::new(LENGTH_SCRIPT)
                .key(key)
                .invoke_async(&mut conn)
                .await
                .map_err(failed)?,
            Question::Pending { stream, group } => {
                let reply: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(group)
                    .query_async(&mut conn)
                    .await
                    .map_err(failed)?;
                reply.count() as i64
            }
            Question::StreamLength(stream) => redis::cmd("XLEN")
                .arg(stream)
                .query_async(&mut conn)
                .await
                .map_err(failed)?,
            Question::Lag { stream, group } => {
                let info: String =
                    redis::cmd("INFO")
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| {
                            let (message, broken) = failed(e);
                            (format!("could not find Redis version: {message}"), broken)
                        })?;
                if major_version(&info).map_err(|e| (e, false))? < 7 {
                    return Err(("redis version 7+ required for lag".into(), false));
                }
                let groups: Result<redis::Value, _> = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(stream)
                    .query_async(&mut conn)
                    .await;
                match groups {
                    // No stream: no lag.
                    Err(e) if e.to_string().contains("no such key") => 0,
                    Err(e) => return Err(failed(e)),
                    Ok(groups) => match group_lag(&groups, group) {
                        Some(Some(lag)) => lag,
                        // Unknown (nil) lag: KEDA's -1, reported as 0 and not active.
                        Some(None) => -1,
                        // A group not made yet would have the whole stream to read.
                        None => redis::cmd("XLEN")
                            .arg(stream)
                            .query_async(&mut conn)
                            .await
                            .map_err(failed)?,
                    },
                }
            }
        };
        Ok(n as f64)
    }
}

/// Parsed `redis` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisListMetadata {
    /// Where.
    pub connection: RedisConnection,
    /// The key.
    pub list_name: String,
    /// Target per replica.
    pub list_length: i64,
    /// Active strictly above this.
    pub activation_list_length: i64,
}

impl RedisListMetadata {
    /// Parse with KEDA's rules.
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        let list_name = params.text(&LIST_NAME)?.to_string();
        let list_length = params.int(&LIST_LENGTH)?;
        let activation_list_length = params.int(&ACTIVATION_LIST_LENGTH)?;
        let connection = RedisConnection::parse(&params)?;
        Ok(Self {
            connection,
            list_name,
            list_length,
            activation_list_length,
        })
    }
}

/// The redis (lists) scaler.
#[derive(Debug, Clone)]
pub struct RedisScaler {
    metadata: RedisListMetadata,
    spec: MetricSpec,
    shared: Arc<RedisClients>,
}

impl RedisScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = RedisListMetadata::parse(&ctx)?;
        Ok(Self {
            spec: MetricSpec {
                name: ctx.metric_name(&format!("redis-{}", metadata.list_name)),
                target_type: ctx.target_type()?,
                target: MilliQuantity::from_value(metadata.list_length as f64),
            },
            metadata,
            shared: ctx.pools.redis.clone(),
        })
    }
}

#[async_trait]
impl Scaler for RedisScaler {
    fn scaler_type(&self) -> &'static str {
        "redis"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    fn activation_threshold(&self) -> Option<f64> {
        Some(self.metadata.activation_list_length as f64)
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let m = &self.metadata;
        let length = self
            .shared
            .ask(&m.connection, &Question::Length(m.list_name.clone()))
            .await?;
        Ok(Sample {
            value: length,
            active: length > m.activation_list_length as f64,
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
    ) -> Result<RedisListMetadata, ScalerError> {
        with_ctx("redis", meta, auth, false, |ctx| {
            RedisListMetadata::parse(&ctx)
        })
    }

    #[test]
    fn keda_defaults_and_metric_name() {
        let m = parse(
            &[("listName", "mylist"), ("address", "127.0.0.1:6379")],
            &[],
        )
        .expect("valid");
        assert_eq!((m.list_length, m.activation_list_length), (5, 0));
        assert_eq!(
            (
                m.connection.host.as_str(),
                m.connection.port,
                m.connection.db
            ),
            ("127.0.0.1", 6379, 0)
        );
        let spec = with_ctx(
            "redis",
            &[("listName", "my.list"), ("address", "h:1")],
            &[],
            false,
            |ctx| RedisScaler::new(ctx).map(|s| s.spec),
        )
        .expect("valid");
        assert_eq!(spec.name, "s1-redis-my-list");
        assert_eq!(spec.target, MilliQuantity::from_value(5.0));
    }

    #[test]
    fn addresses_hosts_and_ports() {
        // The first address only; host and port joined after any address.
        let m = parse(&[("listName", "l"), ("addresses", "a:1, b:2")], &[]).expect("valid");
        assert_eq!((m.connection.host.as_str(), m.connection.port), ("a", 1));
        let m = parse(&[("listName", "l"), ("host", "::1"), ("port", "7")], &[]).expect("valid");
        assert_eq!((m.connection.host.as_str(), m.connection.port), ("::1", 7));
        // The metadata's address wins over the authentication's.
        let m = parse(
            &[("listName", "l"), ("address", "m:1")],
            &[("address", "a:2")],
        )
        .expect("valid");
        assert_eq!(m.connection.host, "m");
        let m = parse(&[("listName", "l")], &[("host", "a"), ("port", "3")]).expect("valid");
        assert_eq!((m.connection.host.as_str(), m.connection.port), ("a", 3));
        for (meta, auth, field) in [
            (vec![("listName", "l")], vec![], "address"),
            (vec![("listName", "l"), ("host", "h")], vec![], "address"),
            (
                vec![("listName", "l"), ("hosts", "a,b"), ("ports", "1")],
                vec![],
                "host",
            ),
            (
                vec![("listName", "l"), ("address", "nohost")],
                vec![],
                "address",
            ),
            (vec![("address", "h:1")], vec![], "listName"),
            (
                vec![("listName", "l"), ("address", "h:1"), ("listLength", "AA")],
                vec![],
                "listLength",
            ),
            (
                vec![
                    ("listName", "l"),
                    ("address", "h:1"),
                    ("activationListLength", "AA"),
                ],
                vec![],
                "activationListLength",
            ),
            (
                vec![("listName", "l"), ("address", "h:1"), ("enableTLS", "true")],
                vec![("tls", "enable")],
                "enableTLS",
            ),
            (
                vec![("listName", "l"), ("address", "h:1"), ("enableTLS", "x")],
                vec![],
                "enableTLS",
            ),
            (
                vec![("listName", "l"), ("address", "h:1")],
                vec![("tls", "yes")],
                "tls",
            ),
            (
                vec![("listName", "l"), ("address", "h:1")],
                vec![("tls", "enable"), ("cert", "x")],
                "cert",
            ),
            (
                vec![("listName", "l"), ("address", "h:1")],
                vec![("tls", "enable"), ("ca", "not pem")],
                "ca",
            ),
        ] {
            let e = parse(&meta, &auth).expect_err(&format!("{meta:?} {auth:?}"));
            assert_eq!(e.param(), Some(field), "{meta:?} {auth:?}: {e}");
        }
        let e = parse(&[("listName", "l")], &[]).expect_err("no address");
        assert_eq!(
            e.to_string(),
            "no addresses or hosts given. address should be a comma separated list of host:port or set the host/port values"
        );
    }

    #[test]
    fn tls_from_either_side_and_secrets_never_printed() {
        let m = parse(
            &[("listName", "l"), ("address", "h:1"), ("enableTLS", "true")],
            &[],
        )
        .expect("valid");
        assert!(m.connection.tls.is_some());
        let m = parse(
            &[("listName", "l"), ("address", "h:1")],
            &[("tls", "enable"), ("password", "s3cret")],
        )
        .expect("valid");
        assert!(m.connection.tls.is_some());
        assert!(!format!("{:?}", m.connection).contains("s3cret"));
        let m = parse(
            &[("listName", "l"), ("address", "h:1")],
            &[("tls", "disable")],
        )
        .expect("valid");
        assert!(m.connection.tls.is_none());
    }

    #[test]
    fn versions_and_lags() {
        assert_eq!(major_version("# Server\r\nredis_version:7.0.15\r\n"), Ok(7));
        assert!(major_version("nothing").is_err());
        assert!(major_version("redis_version:x.1").is_err());
        use redis::Value;
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let groups = Value::Array(vec![
            Value::Array(vec![b("name"), b("other"), b("lag"), Value::Int(9)]),
            Value::Array(vec![b("name"), b("g"), b("lag"), Value::Int(4)]),
            Value::Array(vec![b("name"), b("n"), b("lag"), Value::Nil]),
        ]);
        assert_eq!(group_lag(&groups, "g"), Some(Some(4)));
        assert_eq!(group_lag(&groups, "n"), Some(None));
        assert_eq!(group_lag(&groups, "missing"), None);
    }
}
