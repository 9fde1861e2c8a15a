//! The `mysql` trigger: the first column of the first row of a query, as a number.
//!
//! KEDA hands the connection string to Go's MySQL driver (go-sql-driver/mysql v1.10), so
//! this module reads it as that driver does: what the driver's `ParseDSN` rejects is a
//! parse error here, what its dialer rejects (a port like `test_port`, a host that does
//! not resolve) is an error when connecting, as in KEDA.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, Opts, OptsBuilder, Pool, PoolOpts, Row, SslOpts, Value};

use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::coalesce::Coalescer;
use crate::idle_map::{self, IdleMap};
use crate::quantity::quantity_string;

/// Connecting plus querying may take this long, unless the DSN's timeouts add up to more.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The port Go's driver adds to an address that has none (`tcp(host)`).
const DEFAULT_PORT: &str = "3306";

/// TLS as the Go driver's `tls` option asks for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Tls {
    /// No TLS (`tls=false`, the default).
    #[default]
    Off,
    /// TLS verified against the system's roots and the host name (`tls=true`).
    Verify,
    /// TLS without verifying the server (`tls=skip-verify`, and `tls=preferred`).
    SkipVerify,
}

/// The DSN's `?key=value` options that change how this scaler connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DsnOptions {
    /// `tls`.
    pub tls: Tls,
    /// Connect in plaintext when the server has no TLS (`tls=preferred`,
    /// `allowFallbackToPlaintext=true`).
    pub fallback_to_plaintext: bool,
    /// `timeout`: Go's dial timeout; here it bounds getting a connection.
    pub connect_timeout: Option<Duration>,
    /// `readTimeout`: here it bounds waiting for the query's answer.
    pub read_timeout: Option<Duration>,
    /// `writeTimeout`: added to the read bound (sending one query never blocks longer).
    pub write_timeout: Option<Duration>,
    /// `charset`: `SET NAMES` with each in turn until one works.
    pub charsets: Vec<String>,
    /// `collation`: `SET NAMES <charset> COLLATE <collation>`, or the connection's
    /// collation alone without `charset`.
    pub collation: Option<String>,
}

impl DsnOptions {
    /// How long the query may take once connected.
    fn query_timeout(&self) -> Option<Duration> {
        self.read_timeout
            .map(|r| r + self.write_timeout.unwrap_or_default())
    }

    /// How long one sample may take in all.
    fn budget(&self) -> Duration {
        let given = self.connect_timeout.unwrap_or_default()
            + self.read_timeout.unwrap_or_default()
            + self.write_timeout.unwrap_or_default();
        TIMEOUT.max(given)
    }
}

/// Where to connect, parsed from a connection string or host/port/username/password/dbName.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Dsn {
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// `host:port` as Go's driver keeps it; split when connecting, as Go's dialer does.
    pub addr: String,
    /// Database (empty: none).
    pub db_name: String,
    /// The options after `?`.
    pub options: DsnOptions,
}

impl std::fmt::Debug for Dsn {
    // The password is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}/{}", self.user, self.addr, self.db_name)
    }
}

impl Dsn {
    /// Host and port to dial, as Go's `net.Dial("tcp", addr)` reads `addr`.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let (host, port) = split_host_port(&self.addr)?;
        // Go dials the local system for an empty host (`:3306`).
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        Ok((host.to_string(), dial_port(port)?))
    }
}

fn bad(param: &str, message: impl Into<String>) -> ScalerError {
    ScalerError::invalid(param, message)
}

/// Go's `net.SplitHostPort`: the port follows the last `:`; an IPv6 host is in brackets.
/// The port may be empty.
fn split_host_port(addr: &str) -> Result<(&str, &str), String> {
    let err = |why: &str| format!("address {addr}: {why}");
    let colon = addr
        .rfind(':')
        .ok_or_else(|| err("missing port in address"))?;
    // `[` may not appear after `from_open`, nor `]` after `from_close`.
    let (host, from_open, from_close) = if addr.starts_with('[') {
        let close = addr
            .find(']')
            .ok_or_else(|| err("missing ']' in address"))?;
        if close + 1 != colon {
            return Err(match addr.as_bytes().get(close + 1) {
                Some(b':') => err("too many colons in address"),
                _ => err("missing port in address"),
            });
        }
        (&addr[1..close], 1, close + 1)
    } else {
        let host = &addr[..colon];
        if host.contains(':') {
            return Err(err("too many colons in address"));
        }
        (host, 0, 0)
    };
    if addr[from_open..].contains('[') {
        return Err(err("unexpected '[' in address"));
    }
    if addr[from_close..].contains(']') {
        return Err(err("unexpected ']' in address"));
    }
    Ok((host, &addr[colon + 1..]))
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The port Go's dialer makes of `port`; what it could not connect to is an error here.
fn dial_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        // Go reads an empty port as port 0 (golang.org/issue/13610), which refuses.
        return Err(
            "the address has no port (KEDA's driver dials port 0, which refuses \
                    connections); give the port"
                .into(),
        );
    }
    let digits = port.strip_prefix('+').unwrap_or(port);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        // Go would look a name up in /etc/services; a MySQL port is a number.
        return Err(format!("unknown port {port:?}"));
    }
    let significant = digits.trim_start_matches('0');
    match significant.parse::<u16>() {
        _ if significant.is_empty() => Err("port 0 refuses connections".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("invalid port {port:?}")),
    }
}

/// Go's `url.PathUnescape` (with `plus_is_space`, `url.QueryUnescape`).
fn unescape(s: &str, plus_is_space: bool) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .ok_or_else(|| {
                        let end = (i + 3).min(s.len());
                        format!("invalid URL escape {:?}", s.get(i..end).unwrap_or("%"))
                    })?;
                let text = std::str::from_utf8(hex).map_err(|e| e.to_string())?;
                out.push(u8::from_str_radix(text, 16).map_err(|e| e.to_string())?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once unescaped".to_string())
}

/// Go's `url.PathEscape`, enough for [`unescape`] to give the text back.
fn path_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The Go driver's `readBool` (narrower than `strconv.ParseBool`: no `t`/`f`).
fn read_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "TRUE" | "True" => Some(true),
        "0" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` (`5s`, `1m30s`, `1.5h`, `500ms`, `0`); negative is an error
/// here, as a negative deadline only makes every read fail.
fn go_duration(s: &str) -> Result<Duration, String> {
    match super::typed::go_duration(s)? {
        ns if ns < 0 => Err(format!("negative duration {s:?}")),
        ns => Ok(Duration::from_nanos(ns.unsigned_abs())),
    }
}

/// A character set or collation name: it goes into `SET NAMES`, so letters, digits and `_`.
fn sql_name(option: &str, v: &str) -> Result<String, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(v.to_string())
    } else {
        Err(format!("{option}: {v:?} is not a name"))
    }
}

/// Go driver options that cannot change what a single numeric query returns; they are
/// checked as the driver checks them and then have nothing to do here.
const NO_EFFECT: &[&str] = &[
    // How DATE/DATETIME columns scan into Go values, and their zone; the scaler reads one
    // number.
    "parseTime",
    "loc",
    // Placeholders and time arguments: the query has none.
    "interpolateParams",
    "timeTruncate",
    // Column names and affected-row counts: neither is read.
    "columnsWithAlias",
    "clientFoundRows",
    // Server-side packet limit (64 MiB by default): one query and one row are far below.
    "maxAllowedPacket",
    // Go's pool checks idle connections; mysql_async's pool does too.
    "checkConnLiveness",
    // Only writes fail on a read-only server; the scaler only reads.
    "rejectReadOnly",
    // Go refuses `SELECT 1; SELECT 2` without it; here the first result is read either way.
    "multiStatements",
];

/// Parse the DSN's options (`a=1&b=2`) with the Go driver's names and value syntax.
fn parse_options(params: &str) -> Result<DsnOptions, String> {
    enum GoTls {
        False,
        True,
        SkipVerify,
        Preferred,
    }
    let mut tls = GoTls::False;
    let mut o = DsnOptions::default();
    let boolean =
        |key: &str, v: &str| read_bool(v).ok_or_else(|| format!("{key}: invalid bool value: {v}"));
    let duration = |key: &str, v: &str| {
        go_duration(v)
            .map(|d| (!d.is_zero()).then_some(d))
            .map_err(|e| format!("{key}: {e}"))
    };
    // Go skips an empty segment (`a=1&&b=2`, a trailing `&`).
    for pair in params.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("option {pair:?} has no value (write {pair}=...)"))?;
        match key {
            "tls" => {
                tls = match read_bool(value) {
                    Some(true) => GoTls::True,
                    Some(false) => GoTls::False,
                    None => match value.to_ascii_lowercase().as_str() {
                        "skip-verify" => GoTls::SkipVerify,
                        "preferred" => GoTls::Preferred,
                        // Named TLS configurations are registered in Go code; KEDA registers
                        // none, so the driver refuses every other name with these words.
                        _ => {
                            return Err(format!(
                                "tls: invalid value / unknown config name: {} \
                                 (use true, false, skip-verify or preferred)",
                                unescape(value, true).unwrap_or_else(|_| value.to_string())
                            ))
                        }
                    },
                }
            }
            "allowFallbackToPlaintext" => o.fallback_to_plaintext = boolean(key, value)?,
            "timeout" => o.connect_timeout = duration(key, value)?,
            "readTimeout" => o.read_timeout = duration(key, value)?,
            "writeTimeout" => o.write_timeout = duration(key, value)?,
            "charset" => {
                o.charsets = value
                    .split(',')
                    .map(|c| sql_name(key, c))
                    .collect::<Result<_, _>>()?
            }
            "collation" => o.collation = Some(sql_name(key, value)?),
            "allowNativePasswords" => {
                if !boolean(key, value)? {
                    return Err("allowNativePasswords=false is not supported: \
                                this client cannot refuse the native password method"
                        .into());
                }
            }
            "timeTruncate" => {
                duration(key, value)?;
            }
            "maxAllowedPacket" => {
                value
                    .parse::<i64>()
                    .map_err(|_| format!("maxAllowedPacket: {value:?} is not an integer"))?;
            }
            "loc" => {
                let zone = unescape(value, true).map_err(|e| format!("loc: {e}"))?;
                if !matches!(zone.as_str(), "" | "UTC" | "Local")
                    && chrono_tz::Tz::from_str(&zone).is_err()
                {
                    return Err(format!("loc: unknown time zone {zone:?}"));
                }
            }
            // The rest of the options with no effect are booleans.
            k if NO_EFFECT.contains(&k) => {
                boolean(key, value)?;
            }
            _ => {
                return Err(format!(
                    "unsupported option {key:?} (Go's driver would send an unknown name to \
                     the server as `SET {key}=...`; eventscale does not). Supported: tls, \
                     allowFallbackToPlaintext, timeout, readTimeout, writeTimeout, charset, \
                     collation, allowNativePasswords=true, and, with no effect on a numeric \
                     query, {}",
                    NO_EFFECT.join(", ")
                ))
            }
        }
    }
    (o.tls, o.fallback_to_plaintext) = match tls {
        GoTls::False => (Tls::Off, false),
        GoTls::True => (Tls::Verify, o.fallback_to_plaintext),
        GoTls::SkipVerify => (Tls::SkipVerify, o.fallback_to_plaintext),
        // The driver makes `preferred` skip-verify with fallback, whatever else is given.
        GoTls::Preferred => (Tls::SkipVerify, true),
    };
    Ok(o)
}

/// Parse Go's DSN form, `[user[:password]@][tcp[(host:port)]]/dbname[?options]`, as the Go
/// driver's `ParseDSN` does, or a `mysql://user:pass@host:port/db?options` URL (the same
/// option names).
pub fn parse_connection_string(s: &str) -> Result<Dsn, String> {
    if s.starts_with("mysql://") {
        return parse_url(s);
    }
    // The last '/' separates the database, even one inside the options (Go's rule: a '/'
    // in an option value must be escaped).
    let slash = s
        .rfind('/')
        .ok_or("invalid DSN: missing the slash separating the database name")?;
    let (left, right) = (&s[..slash], &s[slash + 1..]);
    let (creds, net_addr) = match left.rfind('@') {
        Some(at) => (&left[..at], &left[at + 1..]),
        None => ("", left),
    };
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let (net, addr) = match net_addr.find('(') {
        Some(open) => {
            let inner = &net_addr[open + 1..];
            let addr = inner.strip_suffix(')').ok_or(if inner.contains(')') {
                "invalid DSN: did you forget to escape a param value?"
            } else {
                "invalid DSN: network address not terminated (missing closing brace)"
            })?;
            (&net_addr[..open], addr)
        }
        None => (net_addr, ""),
    };
    let addr = match (net, addr) {
        ("" | "tcp", "") => format!("127.0.0.1:{DEFAULT_PORT}"),
        // Go's driver adds the default port only when there is no port at all: `h:` keeps
        // its empty port (and then fails to connect).
        ("" | "tcp", a) if split_host_port(a).is_err() => join_host_port(a, DEFAULT_PORT),
        ("" | "tcp", a) => a.to_string(),
        (other, _) => {
            return Err(format!(
                "network {other:?} is not supported; use tcp(host:port)"
            ))
        }
    };
    let (db, params) = right.split_once('?').unwrap_or((right, ""));
    let db_name = unescape(db, false).map_err(|e| format!("invalid dbname {db:?}: {e}"))?;
    Ok(Dsn {
        user: user.to_string(),
        password: password.to_string(),
        addr,
        db_name,
        options: parse_options(params)?,
    })
}

fn parse_url(s: &str) -> Result<Dsn, String> {
    let (base, params) = s.split_once('?').unwrap_or((s, ""));
    let opts = Opts::from_url(base).map_err(|e| e.to_string())?;
    let host = opts.ip_or_hostname();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Dsn {
        user: opts.user().unwrap_or_default().to_string(),
        password: opts.pass().unwrap_or_default().to_string(),
        addr: join_host_port(host, &opts.tcp_port().to_string()),
        db_name: opts.db_name().unwrap_or_default().to_string(),
        options: parse_options(params)?,
    })
}

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

/// Where KEDA's typed config looks for a parameter (its `order=` tag).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Metadata,
    Auth,
    Env,
}

/// The value of `key` from the first of `order` that has one, as KEDA's typed config.
///
/// `<key>FromEnv` is resolved into metadata `<key>` before a scaler is built, so a metadata
/// `<key>` beside `<key>FromEnv` counts as the environment's. (Given both a plain `<key>` and
/// `<key>FromEnv`, KEDA would read the plain one where metadata comes first.)
fn lookup(ctx: &TriggerContext<'_>, key: &str, order: &[Source]) -> Option<String> {
    let from_env = ctx.trigger.metadata.contains_key(&format!("{key}FromEnv"));
    order
        .iter()
        .find_map(|source| match source {
            Source::Metadata if !from_env => ctx.param(key),
            Source::Env if from_env => ctx.param(key),
            Source::Auth => ctx.auth_param(key),
            _ => None,
        })
        .map(str::to_string)
}

/// A secret KEDA reads from authentication or the environment only. A plain metadata value
/// is an error unless authentication has one (KEDA would ignore it).
fn secret(ctx: &TriggerContext<'_>, key: &str) -> Result<Option<String>, ScalerError> {
    match lookup(ctx, key, &[Source::Auth, Source::Env]) {
        Some(v) => Ok(Some(v)),
        None if ctx.param(key).is_some() => Err(bad(
            key,
            format!("{key} must come from a TriggerAuthentication or {key}FromEnv, not from plain metadata"),
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
        let (dsn, metric_db) = match secret(ctx, "connectionString")? {
            Some(cs) => {
                let dsn = parse_connection_string(&cs).map_err(|e| {
                    bad(
                        "connectionString",
                        format!("invalid MySQL connection string: {e}"),
                    )
                })?;
                (dsn, metric_db_name(&cs).to_string())
            }
            None => Self::from_fields(ctx)?,
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
    fn from_fields(ctx: &TriggerContext<'_>) -> Result<(Dsn, String), ScalerError> {
        // KEDA reads these from metadata, then authentication, never the environment.
        let field = |key: &str| {
            if ctx.trigger.metadata.contains_key(&format!("{key}FromEnv")) {
                tracing::warn!(
                    trigger = ctx.index,
                    "mysql: {key}FromEnv is not read (KEDA takes {key} from metadata or the \
                     TriggerAuthentication only)"
                );
            }
            lookup(ctx, key, &[Source::Metadata, Source::Auth]).unwrap_or_default()
        };
        let (host, port, db_name) = (field("host"), field("port"), field("dbName"));
        let user = lookup(
            ctx,
            "username",
            &[Source::Metadata, Source::Auth, Source::Env],
        )
        .unwrap_or_default();
        let password = secret(ctx, "password")?.unwrap_or_default();
        // KEDA formats these into a DSN (Go's `Config.FormatDSN`) that the driver parses
        // again; doing the same keeps every quirk: no default port (`host:` dials port 0),
        // `port: test_port` parses and fails when connecting, a password without a user is
        // dropped.
        let mut dsn = String::new();
        if !user.is_empty() {
            dsn.push_str(&user);
            if !password.is_empty() {
                dsn.push(':');
                dsn.push_str(&password);
            }
            dsn.push('@');
        }
        let addr = join_host_port(&host, &port);
        dsn.push_str(&format!("tcp({addr})/{}", path_escape(&db_name)));
        let parsed = parse_connection_string(&dsn)
            .map_err(|e| bad("host", format!("invalid MySQL host or port: {e}")))?;
        Ok((parsed, db_name))
    }
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
    let (host, port) = dsn.host_port()?;
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
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
    Ok(Pool::new(opts))
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
                target: quantity_string(metadata.query_value),
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

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let budget = self.metadata.dsn.options.budget();
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
        Dsn {
            user: user.into(),
            password: pass.into(),
            addr: addr.into(),
            db_name: db.into(),
            options: DsnOptions::default(),
        }
    }

    #[test]
    fn connection_strings_as_the_go_driver_reads_them() {
        let cases = [
            (
                "root:s3cret@tcp(mysql.db:3307)/stats_db",
                dsn("root", "s3cret", "mysql.db:3307", "stats_db"),
            ),
            (
                // The last '@' ends the credentials, the first ':' splits them.
                "user:p@ss:word@tcp(10.0.0.1:3306)/app?tls=false",
                dsn("user", "p@ss:word", "10.0.0.1:3306", "app"),
            ),
            ("u@tcp(h)/d", dsn("u", "", "h:3306", "d")),
            ("u:p@/d", dsn("u", "p", "127.0.0.1:3306", "d")),
            ("/", dsn("", "", "127.0.0.1:3306", "")),
            ("u@tcp(::1)/d", dsn("u", "", "[::1]:3306", "d")),
            ("u@tcp([::1]:3310)/d", dsn("u", "", "[::1]:3310", "d")),
            // An empty port stays empty (and fails when connecting, as in KEDA).
            ("u@tcp(h:)/d", dsn("u", "", "h:", "d")),
            ("u@tcp(h:test_port)/d", dsn("u", "", "h:test_port", "d")),
            // KEDA's own test DSN: parses; Go's driver brackets the odd host and adds 3306.
            (
                "user@tcp(http://my.mysql.dev:3306)/stats_db",
                dsn("user", "", "[http://my.mysql.dev:3306]:3306", "stats_db"),
            ),
            // The database name is path-unescaped (Go's url.PathUnescape).
            ("u@tcp(h:1)/my%2Ddb", dsn("u", "", "h:1", "my-db")),
            (
                "mysql://u:p%40ss@db.example:3310/orders",
                dsn("u", "p@ss", "db.example:3310", "orders"),
            ),
            (
                "mysql://u@db.example/orders",
                dsn("u", "", "db.example:3306", "orders"),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse_connection_string(s).expect(s), want, "{s}");
        }
        for (s, want) in [
            (
                "u:p@unix(/var/run/mysqld.sock)/d",
                "network \"unix\" is not supported",
            ),
            (
                "u:p@tcp(h:1)",
                "invalid DSN: missing the slash separating the database name",
            ),
            (
                "u:p@tcp(h:1)/d?loc=Europe/Paris",
                "invalid DSN: did you forget to escape a param value?",
            ),
            (
                "u:p@tcp(h:1/d",
                "invalid DSN: network address not terminated (missing closing brace)",
            ),
            ("u@tcp(h:1)/bad%zz", "invalid dbname \"bad%zz\""),
            ("u@tcp(h:1)/d?foo=bar", "unsupported option \"foo\""),
            (
                "mysql://u@h/d?require_ssl=true",
                "unsupported option \"require_ssl\"",
            ),
            ("u@tcp(h:1)/d?tls", "option \"tls\" has no value"),
            (
                "u@tcp(h:1)/d?tls=custom",
                "tls: invalid value / unknown config name: custom",
            ),
            ("u@tcp(h:1)/d?tls=yes", "unknown config name: yes"),
            ("u@tcp(h:1)/d?timeout=10", "missing unit in duration \"10\""),
            ("u@tcp(h:1)/d?readTimeout=-1s", "negative duration"),
            (
                "u@tcp(h:1)/d?parseTime=t",
                "parseTime: invalid bool value: t",
            ),
            ("u@tcp(h:1)/d?charset=utf8;DROP", "charset: \"utf8;DROP\""),
            ("u@tcp(h:1)/d?loc=Mars%2FOlympus", "unknown time zone"),
            (
                "u@tcp(h:1)/d?allowNativePasswords=false",
                "allowNativePasswords=false is not supported",
            ),
        ] {
            let e = parse_connection_string(s).expect_err(s);
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn options_with_the_go_drivers_names() {
        let o = |q: &str| parse_options(q).expect(q);
        assert_eq!(o(""), DsnOptions::default());
        for (v, tls, fallback) in [
            ("true", Tls::Verify, false),
            ("1", Tls::Verify, false),
            ("True", Tls::Verify, false),
            ("false", Tls::Off, false),
            ("0", Tls::Off, false),
            ("skip-verify", Tls::SkipVerify, false),
            ("Skip-Verify", Tls::SkipVerify, false),
            ("preferred", Tls::SkipVerify, true),
        ] {
            let got = o(&format!("tls={v}"));
            assert_eq!((got.tls, got.fallback_to_plaintext), (tls, fallback), "{v}");
        }
        let got = o("tls=true&allowFallbackToPlaintext=true");
        assert_eq!((got.tls, got.fallback_to_plaintext), (Tls::Verify, true));
        // `preferred` always falls back, as the driver's normalize() sets it last.
        let got = o("tls=preferred&allowFallbackToPlaintext=false");
        assert!(got.fallback_to_plaintext);
        // Falling back means nothing without TLS.
        assert!(!o("allowFallbackToPlaintext=true").fallback_to_plaintext);

        let got = o("timeout=5s&readTimeout=1m30s&writeTimeout=500ms&");
        assert_eq!(got.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(got.read_timeout, Some(Duration::from_secs(90)));
        assert_eq!(got.query_timeout(), Some(Duration::from_millis(90_500)));
        assert_eq!(got.budget(), Duration::from_millis(95_500));
        assert_eq!(o("readTimeout=1s").budget(), TIMEOUT);
        // Zero is Go's "no timeout".
        assert_eq!(o("timeout=0").connect_timeout, None);
        assert_eq!(o("writeTimeout=2s").query_timeout(), None);

        let got = o("charset=utf8mb4,utf8&collation=utf8mb4_bin");
        assert_eq!(got.charsets, ["utf8mb4", "utf8"]);
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

        // Accepted, checked, and with nothing to do for a numeric query.
        o(
            "parseTime=true&loc=Local&loc=America%2FNew_York&interpolateParams=1\
           &columnsWithAlias=0&clientFoundRows=true&maxAllowedPacket=0&timeTruncate=1h\
           &checkConnLiveness=false&rejectReadOnly=1&multiStatements=true\
           &allowNativePasswords=true",
        );
        let e = parse_options("sql_mode=ANSI").expect_err("unknown");
        assert!(e.contains("unsupported option \"sql_mode\""), "{e}");
        assert!(e.contains("tls, allowFallbackToPlaintext, timeout"), "{e}");
    }

    #[test]
    fn go_durations() {
        for (s, want) in [
            ("0", 0.0),
            ("5s", 5.0),
            ("+5s", 5.0),
            ("1.5h", 5400.0),
            ("1m30s", 90.0),
            ("500ms", 0.5),
            ("250us", 0.00025),
            ("1h2m3.5s", 3723.5),
            (".5s", 0.5),
        ] {
            let got = go_duration(s).expect(s).as_secs_f64();
            assert!((got - want).abs() < 1e-9, "{s}: {got}");
        }
        for s in ["", "10", "s", "5x", "1..5s", ".s", "-2s", "5s3"] {
            assert!(go_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn addresses_as_gos_dialer_reads_them() {
        let hp = |addr: &str| dsn("u", "", addr, "d").host_port();
        assert_eq!(hp("db:3306"), Ok(("db".into(), 3306)));
        assert_eq!(hp("[::1]:3307"), Ok(("::1".into(), 3307)));
        assert_eq!(hp("db:+013306"), Ok(("db".into(), 13306)));
        // Go dials the local system for an empty host.
        assert_eq!(hp(":3306"), Ok(("127.0.0.1".into(), 3306)));
        for (addr, want) in [
            ("db:", "the address has no port"),
            (":", "the address has no port"),
            ("db:0", "port 0"),
            ("db:test_port", "unknown port \"test_port\""),
            ("db:65536", "invalid port \"65536\""),
            ("db", "missing port in address"),
            ("a:b:3306", "too many colons in address"),
            ("[::1]3306", "missing port in address"),
            ("[::1]", "missing port in address"),
            ("[::1:3306", "missing ']' in address"),
            ("db]:1", "unexpected ']' in address"),
        ] {
            let e = hp(addr).expect_err(addr);
            assert!(e.contains(want), "{addr}: {e}");
        }
        assert_eq!(join_host_port("::1", "3306"), "[::1]:3306");
        assert_eq!(join_host_port("h", ""), "h:");
        assert_eq!(
            unescape(&path_escape("a/b?c%d é"), false),
            Ok("a/b?c%d é".into())
        );
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
            metadata: pairs(meta),
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
                "missing required parameter \"query\"",
            ),
            (
                vec![q],
                vec![cs],
                "missing required parameter \"queryValue\"",
            ),
            (
                vec![q, ("queryValue", "x")],
                vec![cs],
                "queryValue parsing error",
            ),
            (
                vec![q, ("queryValue", "1"), ("activationQueryValue", "x")],
                vec![cs],
                "activationQueryValue parsing error",
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
    fn debug_hides_the_password() {
        let d = parse_connection_string("u:hunter2@tcp(h:1)/d").expect("ok");
        assert_eq!(format!("{d:?}"), "u@h:1/d");
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
