//! MySQL connection strings as KEDA's driver reads them (go-sql-driver/mysql v1.10): Go's
//! DSN form `[user[:password]@][tcp[(host:port)]]/dbname[?options]`, its option names and
//! value syntax, and how Go's dialer reads the address. What the driver's `ParseDSN`
//! rejects is an error here; what only its dialer rejects (a port like `test_port`) is an
//! error from [`Dsn::host_port`], when connecting, as in KEDA.

use std::str::FromStr;
use std::time::Duration;

use mysql_async::Opts;

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

/// The DSN's `?key=value` options that change how a connection is made.
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
    pub fn query_timeout(&self) -> Option<Duration> {
        self.read_timeout
            .map(|r| r + self.write_timeout.unwrap_or_default())
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
    /// A DSN without options.
    pub fn new(user: &str, password: &str, addr: &str, db_name: &str) -> Self {
        Dsn {
            user: user.to_string(),
            password: password.to_string(),
            addr: addr.to_string(),
            db_name: db_name.to_string(),
            options: DsnOptions::default(),
        }
    }

    /// Host and port to dial, as Go's `net.Dial("tcp", addr)` reads `addr`.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let (host, port) = split_host_port(&self.addr)?;
        // Go dials the local system for an empty host (`:3306`).
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        Ok((host.to_string(), dial_port(port)?))
    }
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
pub fn join_host_port(host: &str, port: &str) -> String {
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
fn duration(s: &str) -> Result<Duration, String> {
    match crate::go_duration::parse(s)? {
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
pub fn parse_options(params: &str) -> Result<DsnOptions, String> {
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
        duration(v)
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
pub fn parse(s: &str) -> Result<Dsn, String> {
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

/// Go's `Config.FormatDSN` for a user, password, `host:port` and database: what KEDA
/// builds from the separate mysql parameters and hands to the driver to parse again. A
/// password without a user is dropped, as Go's formatter drops it.
pub fn format(user: &str, password: &str, addr: &str, db_name: &str) -> String {
    let mut dsn = String::new();
    if !user.is_empty() {
        dsn.push_str(user);
        if !password.is_empty() {
            dsn.push(':');
            dsn.push_str(password);
        }
        dsn.push('@');
    }
    dsn.push_str(&format!("tcp({addr})/{}", path_escape(db_name)));
    dsn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsn(user: &str, pass: &str, addr: &str, db: &str) -> Dsn {
        Dsn::new(user, pass, addr, db)
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
            assert_eq!(parse(s).expect(s), want, "{s}");
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
            let e = parse(s).expect_err(s);
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
        // Zero is Go's "no timeout".
        assert_eq!(o("timeout=0").connect_timeout, None);
        assert_eq!(o("writeTimeout=2s").query_timeout(), None);

        let got = o("charset=utf8mb4,utf8&collation=utf8mb4_bin");
        assert_eq!(got.charsets, ["utf8mb4", "utf8"]);
        assert_eq!(got.collation.as_deref(), Some("utf8mb4_bin"));

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
    fn durations() {
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
            let got = duration(s).expect(s).as_secs_f64();
            assert!((got - want).abs() < 1e-9, "{s}: {got}");
        }
        for s in ["", "10", "s", "5x", "1..5s", ".s", "-2s", "5s3"] {
            assert!(duration(s).is_err(), "{s}");
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

    #[test]
    fn formats_as_go_does() {
        assert_eq!(format("u", "p", "h:1", "d"), "u:p@tcp(h:1)/d");
        assert_eq!(format("u", "", "h:1", ""), "u@tcp(h:1)/");
        // A password without a user is dropped, as Go's FormatDSN drops it.
        assert_eq!(format("", "p", "h:1", "d"), "tcp(h:1)/d");
        assert_eq!(
            parse(&format("u", "p@ss", &join_host_port("::1", "1"), "my/db")).expect("parses"),
            dsn("u", "p@ss", "[::1]:1", "my/db")
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let d = parse("u:hunter2@tcp(h:1)/d").expect("ok");
        assert_eq!(format!("{d:?}"), "u@h:1/d");
    }
}
