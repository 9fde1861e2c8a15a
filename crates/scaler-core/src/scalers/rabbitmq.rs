//! The `rabbitmq` trigger: a queue's length or rates, over AMQP or RabbitMQ's management
//! API, with KEDA's parameters, checks, URLs and arithmetic.
//!
//! - `host` (the metadata, the TriggerAuthentication, then `hostFromEnv`) is an `amqp://`
//!   or `amqps://` URI, or the management API's `http(s)://` base; `protocol: auto` (the
//!   default) follows its scheme. `vhostName` overrides the virtual host the URI names;
//!   `username` and `password` (TriggerAuthentication or `...FromEnv`) override its user.
//! - `mode`: `QueueLength` (default, with `value` 20), `MessageRate`, `DeliverGetRate`,
//!   `PublishedToDeliveredRatio`, `ExpectedQueueConsumptionTime` (all but the first need
//!   the management API); the deprecated `queueLength` is `QueueLength` with that value.
//! - Over AMQP the length is the passive `queue.declare`'s message count (ready messages
//!   only); over HTTP it is `messages` (`messages_ready` with `excludeUnacknowledged`), for
//!   one queue or, with `useRegex`, for the queues whose names match, combined by
//!   `operation` (`sum`, `avg`, `max`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::params::Source::{Auth, Env, Meta};
use super::params::{Defaulted, Param, Required};
use super::{anonymize, error_chain, MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::coalesce::Coalescer;
use crate::idle_map::Connections;
use crate::quantity::MilliQuantity;
use crate::tls::Settings as TlsSettings;

/// KEDA's global HTTP timeout, used when the trigger gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);
/// Connecting and asking over AMQP may take this long.
const AMQP_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest management API answer read (a regex's page of queues included).
const MAX_ANSWER_BYTES: usize = 8 << 20;
/// KEDA's default `value` for the default mode.
const DEFAULT_QUEUE_LENGTH: f64 = 20.0;

const QUEUE_NAME: Param<Required> = Param::new("queueName").from(&[Meta]).required();
const MODE: Param = Param::new("mode").from(&[Meta]);
const VALUE: Param = Param::new("value").from(&[Meta]);
const ACTIVATION_VALUE: Param<Defaulted> = Param::new("activationValue").from(&[Meta]).default("0");
const QUEUE_LENGTH: Param = Param::new("queueLength").from(&[Meta]);
const HOST: Param<Required> = Param::new("host").from(&[Meta, Auth, Env]).required();
const PROTOCOL: Param<Defaulted> = Param::new("protocol").from(&[Meta, Auth]).default("auto");
const VHOST_NAME: Param = Param::new("vhostName").from(&[Meta, Auth]);
const USE_REGEX: Param<Defaulted> = Param::new("useRegex").from(&[Meta]).default("false");
const EXCLUDE_UNACKNOWLEDGED: Param<Defaulted> = Param::new("excludeUnacknowledged")
    .from(&[Meta])
    .default("false");
const PAGE_SIZE: Param<Defaulted> = Param::new("pageSize").from(&[Meta]).default("100");
const OPERATION: Param<Defaulted> = Param::new("operation").from(&[Meta]).default("sum");
const TIMEOUT: Param = Param::new("timeout").from(&[Meta]);
const USERNAME: Param = Param::new("username").from(&[Auth, Env]).secret();
const PASSWORD: Param = Param::new("password").from(&[Auth, Env]).secret();
const TLS: Param<Defaulted> = Param::new("tls").from(&[Auth]).default("disable");
const CA: Param = Param::new("ca").from(&[Auth]);
const CERT: Param = Param::new("cert").from(&[Auth]);
const KEY: Param = Param::new("key").from(&[Auth]);
const KEY_PASSWORD: Param = Param::new("keyPassword").from(&[Auth]);
const UNSAFE_SSL: Param<Defaulted> = Param::new("unsafeSsl").from(&[Meta]).default("false");
/// Authentication KEDA offers that eventscale does not (Azure workload identity, OAuth2).
const UNSUPPORTED_AUTH: [&str; 4] = [
    "workloadIdentityResource",
    "oauthTokenURI",
    "clientID",
    "clientSecret",
];

/// How the queue is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// AMQP 0-9-1.
    Amqp,
    /// The management plugin's HTTP API.
    Http,
}

/// What the metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Messages in the queue.
    QueueLength,
    /// Messages published per second.
    MessageRate,
    /// Messages delivered (or got) per second.
    DeliverGetRate,
    /// Published per delivered.
    PublishedToDeliveredRatio,
    /// Seconds until the queue is drained at the current rates.
    ExpectedQueueConsumptionTime,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "QueueLength" => Mode::QueueLength,
            "MessageRate" => Mode::MessageRate,
            "DeliverGetRate" => Mode::DeliverGetRate,
            "PublishedToDeliveredRatio" => Mode::PublishedToDeliveredRatio,
            "ExpectedQueueConsumptionTime" => Mode::ExpectedQueueConsumptionTime,
            _ => return None,
        })
    }
}

/// How the queues a regex matches are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Added.
    Sum,
    /// Averaged (message counts in whole numbers, as KEDA divides them).
    Avg,
    /// The largest of each field.
    Max,
}

/// The TLS settings, `None` for the defaults (the system's roots); a digest of them for
/// the keys of questions in flight.
fn tls_digest(tls: &Option<TlsSettings>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tls.hash(&mut h);
    h.finish()
}

/// Parsed `rabbitmq` metadata.
#[derive(Clone, PartialEq)]
pub struct RabbitMetadata {
    /// The queue, or a regex of queue names.
    pub queue_name: String,
    /// What is measured.
    pub mode: Mode,
    /// Target per replica.
    pub value: f64,
    /// Active strictly above this.
    pub activation_value: f64,
    /// AMQP or HTTP.
    pub protocol: Protocol,
    /// The host URI as given.
    host: String,
    vhost_name: Option<String>,
    username: Option<String>,
    password: Option<String>,
    use_regex: bool,
    exclude_unacknowledged: bool,
    page_size: i64,
    operation: Result<Operation, String>,
    timeout: Duration,
    tls: Option<TlsSettings>,
}

impl std::fmt::Debug for RabbitMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The host URI and the credentials may hold a password: never printed.
        f.debug_struct("RabbitMetadata")
            .field("queue_name", &self.queue_name)
            .field("mode", &self.mode)
            .field("value", &self.value)
            .field("protocol", &self.protocol)
            .field("host", &anonymize(&self.host))
            .finish_non_exhaustive()
    }
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The management API's vhost path segment (with its `/`) and the base path before it,
/// as KEDA splits the host URL's path: the last segment is the vhost.
pub fn vhost_and_path(raw_path: &str, vhost_name: Option<&str>) -> (String, String) {
    let segments: Vec<&str> = raw_path.split('/').collect();
    let last = segments.last().copied().unwrap_or("");
    let mut vhost = format!("/{last}");
    let base: Vec<&str> = segments[..segments.len().saturating_sub(1)]
        .iter()
        .copied()
        .filter(|s| !s.is_empty())
        .collect();
    let sub = if base.is_empty() {
        String::new()
    } else {
        format!("/{}", base.join("/"))
    };
    if let Some(v) = vhost_name {
        vhost = format!("/{}", query_escape(v));
    }
    if vhost.is_empty() || vhost == "/" {
        vhost = "/%2F".to_string();
    }
    (vhost, sub)
}

impl RabbitMetadata {
    /// Parse with KEDA's rules, its checks in its order.
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        for p in UNSUPPORTED_AUTH {
            if ctx.auth.get(p).is_some_and(|v| !v.trim().is_empty()) {
                return Err(ScalerError::invalid(
                    p,
                    format!("{p}: Azure workload identity and OAuth2 are not supported by eventscale's rabbitmq trigger yet; use username and password"),
                ));
            }
        }
        let queue_name = params.text(&QUEUE_NAME)?.to_string();
        let host = params.text(&HOST)?.to_string();
        let protocol = params.text(&PROTOCOL)?;
        if !["amqp", "http", "auto"].contains(&protocol) {
            return Err(ScalerError::invalid(
                "protocol",
                format!(
                    "the protocol has to be either `amqp`, `http`, or `auto` but is `{protocol}`"
                ),
            ));
        }
        let tls_on = match params.text(&TLS)? {
            "enable" => true,
            "disable" => false,
            other => {
                return Err(ScalerError::invalid(
                    "tls",
                    format!("incorrect value for TLS given: {other}"),
                ))
            }
        };
        let cert_key = match (params.text(&CERT)?, params.text(&KEY)?) {
            (Some(c), Some(k)) => {
                let key = match params.text(&KEY_PASSWORD)? {
                    Some(pw) => crate::tls::private_key::decrypt(k, pw).map_err(|e| {
                        ScalerError::invalid("keyPassword", format!("error decrypt X509Key: {e}"))
                    })?,
                    None => k.to_string(),
                };
                Some((c.to_string(), key))
            }
            (None, None) => None,
            _ => {
                return Err(ScalerError::invalid(
                    "cert",
                    "both key and certificate must be provided",
                ))
            }
        };
        let page_size = params.int(&PAGE_SIZE)?;
        if page_size < 1 {
            return Err(ScalerError::invalid(
                "pageSize",
                "pageSize should be 1 or greater",
            ));
        }
        let username = params.text(&USERNAME)?.map(str::to_string);
        let password = params.text(&PASSWORD)?.map(str::to_string);
        if username.is_some() != password.is_some() {
            return Err(ScalerError::invalid(
                if username.is_some() {
                    "password"
                } else {
                    "username"
                },
                "username and password must be given together",
            ));
        }
        let protocol = match protocol {
            "amqp" => Protocol::Amqp,
            "http" => Protocol::Http,
            _ => {
                // The scheme as Go's url.Parse takes it: what comes before the first `:`
                // (an empty host, `http://`, still has one).
                let scheme = match host.split_once(':') {
                    Some((s, _))
                        if s.starts_with(|c: char| c.is_ascii_alphabetic())
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
                    {
                        s.to_ascii_lowercase()
                    }
                    _ => String::new(),
                };
                match scheme.as_str() {
                    "amqp" | "amqps" => Protocol::Amqp,
                    "http" | "https" => Protocol::Http,
                    other => {
                        return Err(ScalerError::invalid(
                            "host",
                            format!("unknown host URL scheme: `{other}`"),
                        ))
                    }
                }
            }
        };
        let use_regex = params.flag(&USE_REGEX)?;
        if use_regex && protocol != Protocol::Http {
            return Err(ScalerError::invalid(
                "useRegex",
                "configure useRegex=true only with HTTP protocol",
            ));
        }
        let exclude_unacknowledged = params.flag(&EXCLUDE_UNACKNOWLEDGED)?;
        if exclude_unacknowledged && protocol != Protocol::Http {
            return Err(ScalerError::invalid(
                "excludeUnacknowledged",
                "configure excludeUnacknowledged=true only with HTTP protocol",
            ));
        }
        let timeout_ns = params.duration(&TIMEOUT)?;
        if timeout_ns.is_some_and(|ns| ns < 0) {
            return Err(ScalerError::invalid(
                "timeout",
                "duration cannot be negative",
            ));
        }
        let queue_length = params.float(&QUEUE_LENGTH)?.unwrap_or(0.0);
        let mode = params.text(&MODE)?;
        let value = params.float(&VALUE)?.unwrap_or(0.0);
        let (mode, value) = if queue_length == 0.0 && mode.is_none() && value == 0.0 {
            (Mode::QueueLength, DEFAULT_QUEUE_LENGTH)
        } else if queue_length != 0.0 {
            if mode.is_some() || value != 0.0 {
                return Err(ScalerError::invalid(
                    "queueLength",
                    "queueLength is deprecated; use mode and value",
                ));
            }
            (Mode::QueueLength, queue_length)
        } else {
            let Some(mode) = mode else {
                return Err(ScalerError::invalid("mode", "mode must be specified"));
            };
            if value == 0.0 {
                return Err(ScalerError::invalid("value", "value must be specified"));
            }
            let parsed = Mode::parse(mode).ok_or_else(|| {
                ScalerError::invalid(
                    "mode",
                    format!("trigger mode {mode} must be one of QueueLength, MessageRate, DeliverGetRate, PublishedToDeliveredRatio or ExpectedQueueConsumptionTime"),
                )
            })?;
            if parsed != Mode::QueueLength && protocol != Protocol::Http {
                return Err(ScalerError::invalid(
                    "mode",
                    format!("protocol amqp not supported; must be HTTP to use trigger mode {mode}"),
                ));
            }
            if protocol == Protocol::Amqp && timeout_ns.is_some_and(|ns| ns != 0) {
                return Err(ScalerError::invalid(
                    "timeout",
                    format!(
                        "AMQP protocol doesn't support custom timeouts: {}",
                        timeout_ns.unwrap_or(0)
                    ),
                ));
            }
            (parsed, value)
        };
        let operation = match params.text(&OPERATION)? {
            "sum" => Ok(Operation::Sum),
            "avg" => Ok(Operation::Avg),
            "max" => Ok(Operation::Max),
            other => Err(format!(
                "operation mode {other} must be one of sum, avg, max"
            )),
        };
        let unsafe_ssl = params.flag(&UNSAFE_SSL)?;
        let tls = if tls_on {
            let t = TlsSettings {
                ca: params.text(&CA)?.map(str::to_string),
                cert_key,
                unsafe_ssl,
            };
            // Refused now, naming the field, rather than at every poll.
            t.client_config()
                .map_err(|e| ScalerError::invalid(e.param, e.to_string()))?;
            Some(t)
        } else {
            // Without `tls: enable`, unsafeSsl still applies to an https:// or amqps:// host.
            unsafe_ssl.then_some(TlsSettings {
                ca: None,
                cert_key: None,
                unsafe_ssl,
            })
        };
        let timeout = timeout_ns
            .and_then(|ns| u64::try_from(ns).ok())
            .filter(|ns| *ns > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_nanos);
        Ok(Self {
            queue_name,
            mode,
            value,
            activation_value: params.float(&ACTIVATION_VALUE)?,
            protocol,
            host,
            vhost_name: params.text(&VHOST_NAME)?.map(str::to_string),
            username,
            password,
            use_regex,
            exclude_unacknowledged,
            page_size,
            operation,
            timeout,
            tls,
        })
    }

    /// The management API URL KEDA asks, and the basic-auth credentials it sends.
    pub fn http_url(&self) -> Result<(String, Option<(String, String)>), String> {
        let url = reqwest::Url::parse(&self.host)
            .map_err(|e| format!("can't parse host {}: {e}", anonymize(&self.host)))?;
        let (vhost, sub) = vhost_and_path(url.path(), self.vhost_name.as_deref());
        let credentials = match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ if !url.username().is_empty() => Some((
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or("")),
            )),
            _ => None,
        };
        let mut base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        if let Some(port) = url.port() {
            base.push_str(&format!(":{port}"));
        }
        base.push_str(&sub);
        let queue = query_escape(&self.queue_name);
        let at = if self.use_regex {
            format!(
                "{base}/api/queues{vhost}?page=1&use_regex=true&pagination=false&name={queue}&page_size={}",
                self.page_size
            )
        } else {
            format!("{base}/api/queues{vhost}/{queue}")
        };
        Ok((at, credentials))
    }

    /// The AMQP URI to connect with: the host's, with `vhostName` and the credentials put
    /// in.
    pub fn amqp_uri(&self) -> Result<String, String> {
        let mut url = reqwest::Url::parse(&self.host)
            .map_err(|e| format!("error parsing RabbitMQ connection string: {e}"))?;
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            url.set_username(u)
                .and_then(|()| url.set_password(Some(p)))
                .map_err(|()| "error parsing RabbitMQ connection string: no host".to_string())?;
        }
        if let Some(v) = &self.vhost_name {
            url.set_path(&format!("/{}", query_escape(v)));
        } else if url.path().is_empty() || url.path() == "/" {
            // amqp091-go reads an empty path as the default vhost `/`.
            url.set_path("/%2F");
        }
        Ok(url.to_string())
    }
}

/// A URL's `%XX` escapes decoded (the userinfo of a host URI).
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One queue as the management API describes it (missing fields are 0).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct QueueInfo {
    /// Ready and unacknowledged.
    pub messages: i64,
    /// Ready.
    pub messages_ready: i64,
    /// Rates.
    pub message_stats: MessageStats,
}

/// The rates of a queue.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct MessageStats {
    /// Publishing.
    pub publish_details: Rate,
    /// Delivering and getting.
    pub deliver_get_details: Rate,
}

/// A rate per second.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Rate {
    /// Per second.
    pub rate: f64,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    items: Vec<QueueInfo>,
    #[serde(default)]
    page_count: i64,
}

/// The queues a regex matched, combined by `op` as KEDA combines them.
pub fn combine(items: &[QueueInfo], op: &Result<Operation, String>) -> Result<QueueInfo, String> {
    if items.is_empty() {
        return Ok(QueueInfo::default());
    }
    let op = op.clone()?;
    let mut out = QueueInfo::default();
    for q in items {
        match op {
            Operation::Sum | Operation::Avg => {
                out.messages += q.messages;
                out.messages_ready += q.messages_ready;
                out.message_stats.publish_details.rate += q.message_stats.publish_details.rate;
                out.message_stats.deliver_get_details.rate +=
                    q.message_stats.deliver_get_details.rate;
            }
            Operation::Max => {
                out.messages = out.messages.max(q.messages);
                out.messages_ready = out.messages_ready.max(q.messages_ready);
                let (p, d) = (
                    &mut out.message_stats.publish_details.rate,
                    &mut out.message_stats.deliver_get_details.rate,
                );
                *p = p.max(q.message_stats.publish_details.rate);
                *d = d.max(q.message_stats.deliver_get_details.rate);
            }
        }
    }
    if op == Operation::Avg {
        let n = items.len() as i64;
        out.messages /= n;
        out.messages_ready /= n;
        out.message_stats.publish_details.rate /= n as f64;
        out.message_stats.deliver_get_details.rate /= n as f64;
    }
    Ok(out)
}

/// KEDA's value and activity for `mode` (every comparison strict).
pub fn value_and_activity(
    mode: Mode,
    messages: i64,
    publish: f64,
    deliver: f64,
    activation: f64,
) -> (f64, bool) {
    let m = messages as f64;
    match mode {
        Mode::QueueLength => (m, m > activation),
        Mode::MessageRate => (publish, publish > activation || m > activation),
        Mode::DeliverGetRate => (deliver, deliver > activation),
        Mode::PublishedToDeliveredRatio => {
            let ratio = if publish > 0.0 && deliver == 0.0 {
                activation
            } else if publish > 0.0 && deliver > 0.0 {
                publish / deliver
            } else {
                0.0
            };
            (
                ratio,
                ratio > activation || (publish > 0.0 && deliver == 0.0),
            )
        }
        Mode::ExpectedQueueConsumptionTime => {
            if messages == 0 {
                return (0.0, false);
            }
            let eta = if deliver == 0.0 {
                activation
            } else {
                (publish - deliver) / deliver + m / deliver
            };
            (eta, eta > activation || (deliver == 0.0 && messages > 0))
        }
    }
}

/// What every rabbitmq trigger shares (one per [`crate::pools::Pools`]).
pub struct RabbitClients {
    /// AMQP connections by URI and CA.
    amqp: Connections<(String, Option<TlsSettings>), Arc<lapin::Connection>>,
    /// Identical questions in flight share one round trip.
    inflight: Arc<Coalescer<String, Result<QueueInfo, ScalerError>>>,
}

impl Default for RabbitClients {
    fn default() -> Self {
        Self {
            amqp: Connections::default(),
            inflight: Arc::new(Coalescer::default()),
        }
    }
}

impl std::fmt::Debug for RabbitClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitClients").finish_non_exhaustive()
    }
}

/// Where a trigger's questions go, worked out once when it is built.
#[derive(Clone)]
enum Target {
    /// The management API: the client (shared by TLS settings), the URL and the
    /// basic-auth credentials.
    Http {
        client: reqwest::Client,
        url: String,
        credentials: Option<(String, String)>,
    },
    /// AMQP: the URI with the vhost and credentials put in.
    Amqp { uri: String },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are secrets: never printed.
        match self {
            Target::Http { url, .. } => write!(f, "Http({url})"),
            Target::Amqp { uri } => write!(f, "Amqp({})", anonymize(uri)),
        }
    }
}

impl Target {
    /// What makes two questions the same: where they go, with what credentials and TLS
    /// settings, and what is done with the answer.
    fn key(&self, m: &RabbitMetadata) -> String {
        let at = match self {
            Target::Http {
                url, credentials, ..
            } => format!(
                "{url} {credentials:?} {} {:?}",
                m.timeout.as_millis(),
                m.operation
            ),
            Target::Amqp { uri } => format!("{uri} {}", m.queue_name),
        };
        // The same question with other TLS settings may not be answered the same.
        format!("{at} {}", tls_digest(&m.tls))
    }
}

impl RabbitClients {
    async fn via_http(
        m: &RabbitMetadata,
        client: &reqwest::Client,
        url: &str,
        credentials: &Option<(String, String)>,
    ) -> Result<QueueInfo, String> {
        let mut req = client.get(url).timeout(m.timeout);
        if let Some((u, p)) = credentials {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| error_chain(&e))?;
        let status = resp.status();
        let body = super::read_capped(resp, MAX_ANSWER_BYTES).await?;
        let body = String::from_utf8_lossy(&body);
        if status != reqwest::StatusCode::OK {
            let body: String = body.chars().take(1024).collect();
            return Err(format!(
                "error requesting RabbitMQ API status: {status}, response: {body}, from: {url}"
            ));
        }
        if m.use_regex {
            let page: Page = serde_json::from_str(&body)
                .map_err(|e| format!("the management API's answer is not a page of queues: {e}"))?;
            if page.page_count > 1 {
                return Err("regex matches more queues than can be recovered at once".into());
            }
            combine(&page.items, &m.operation)
        } else {
            serde_json::from_str(&body)
                .map_err(|e| format!("the management API's answer is not a queue: {e}"))
        }
    }

    async fn via_amqp(&self, m: &RabbitMetadata, uri: &str) -> Result<QueueInfo, String> {
        let key = (uri.to_string(), m.tls.clone());
        let conn = self
            .amqp
            .get(&key, |c| c.status().connected(), || amqp_connect(&key))
            .await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| format!("error opening a channel to RabbitMQ: {e}"))?;
        let declared = channel
            .queue_declare(
                m.queue_name.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        // A missing queue closes the channel itself; otherwise close it.
        let _ = channel.close(200, "".into()).await;
        let queue = declared.map_err(|e| e.to_string())?;
        Ok(QueueInfo {
            messages: i64::from(queue.message_count()),
            messages_ready: i64::from(queue.message_count()),
            message_stats: MessageStats::default(),
        })
    }

    /// Ask `target` for `m`'s queue; identical questions at the same moment share one
    /// round trip (`key`, [`Target::key`]).
    async fn ask(
        self: &Arc<Self>,
        m: &RabbitMetadata,
        target: &Target,
        key: &str,
    ) -> Result<QueueInfo, ScalerError> {
        let (this, m2, target) = (self.clone(), m.clone(), target.clone());
        let call = async move {
            let asked = match &target {
                Target::Http {
                    client,
                    url,
                    credentials,
                } => Self::via_http(&m2, client, url, credentials).await,
                Target::Amqp { uri } => {
                    match tokio::time::timeout(AMQP_TIMEOUT, this.via_amqp(&m2, uri)).await {
                        Ok(asked) => asked,
                        Err(_) => {
                            // A connection that stopped answering is not asked again.
                            this.amqp.forget(&(uri.clone(), m2.tls.clone())).await;
                            Err(format!("no answer within {AMQP_TIMEOUT:?}"))
                        }
                    }
                }
            };
            asked.map_err(|e| {
                ScalerError::Query(format!("error inspecting RabbitMQ: {}", anonymize(&e)))
            })
        };
        self.inflight.run(key.to_string(), call).await.0
    }
}

/// A new AMQP connection to `uri`, over TLS for `amqps://` with eventscale's TLS client
/// (the system's roots and `ca`, a client certificate, `unsafeSsl`), as the other scalers
/// connect.
async fn amqp_connect(
    (uri, tls): &(String, Option<TlsSettings>),
) -> Result<Arc<lapin::Connection>, String> {
    let mut parsed: lapin::uri::AMQPUri = uri
        .parse()
        .map_err(|e: String| format!("error parsing RabbitMQ connection string: {e}"))?;
    // amq-protocol-uri reads an IPv6 literal as no host (then `localhost`): the host is
    // taken from the URL itself.
    let host = reqwest::Url::parse(uri)
        .ok()
        .and_then(|u| {
            let h = u.host_str()?;
            Some(h.trim_start_matches('[').trim_end_matches(']').to_string())
        })
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "error parsing RabbitMQ connection string: no host".to_string())?;
    parsed.authority.host = host;
    let tls = match parsed.scheme {
        lapin::uri::AMQPScheme::AMQPS => {
            let t = tls.clone().unwrap_or_default();
            Some(Arc::new(t.client_config().map_err(|e| e.to_string())?))
        }
        lapin::uri::AMQPScheme::AMQP => None,
    };
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let props = lapin::ConnectionProperties::default().with_connection_name("eventscale".into());
    let conn = lapin::Connection::connector(
        parsed,
        runtime,
        async move |uri, runtime| {
            let host = uri.authority.host.clone();
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), uri.authority.port))
                    .await?
                    .collect();
            let stream = lapin::tcp::AsyncTcpStream::connect(&runtime, addrs).await?;
            Ok(match &tls {
                Some(config) => {
                    stream
                        .into_rustls(&lapin::tcp::RustlsConnector::from(config.clone()), &host)
                        .await?
                }
                None => stream,
            })
        },
        props,
    )
    .await
    .map_err(|e| {
        format!(
            "error establishing connection to RabbitMQ: {}",
            anonymize(&e.to_string())
        )
    })?;
    Ok(Arc::new(conn))
}

/// The rabbitmq scaler.
#[derive(Debug, Clone)]
pub struct RabbitScaler {
    metadata: RabbitMetadata,
    spec: MetricSpec,
    shared: Arc<RabbitClients>,
    /// Where its questions go and their key, or why they cannot be asked (a host that
    /// does not parse as a URL is an error at each query, as in KEDA).
    target: Result<(Target, String), String>,
}

impl RabbitScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = RabbitMetadata::parse(&ctx)?;
        let target = match metadata.protocol {
            Protocol::Http => {
                let client = ctx
                    .pools
                    .http
                    .client(&metadata.tls.clone().unwrap_or_default())?;
                metadata.http_url().map(|(url, credentials)| Target::Http {
                    client,
                    url,
                    credentials,
                })
            }
            Protocol::Amqp => metadata.amqp_uri().map(|uri| Target::Amqp { uri }),
        }
        .map(|t| {
            let key = t.key(&metadata);
            (t, key)
        });
        Ok(Self {
            target,
            spec: MetricSpec {
                name: ctx.metric_name(&format!("rabbitmq-{}", query_escape(&metadata.queue_name))),
                target_type: ctx.target_type()?,
                target: MilliQuantity::from_value(metadata.value),
            },
            metadata,
            shared: ctx.pools.rabbitmq.clone(),
        })
    }
}

#[async_trait]
impl Scaler for RabbitScaler {
    fn scaler_type(&self) -> &'static str {
        "rabbitmq"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    fn activation_threshold(&self) -> Option<f64> {
        Some(self.metadata.activation_value)
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let m = &self.metadata;
        let (target, key) = self.target.as_ref().map_err(|e| {
            ScalerError::Query(format!("error inspecting RabbitMQ: {}", anonymize(e)))
        })?;
        let q = self.shared.ask(m, target, key).await?;
        let messages = if m.exclude_unacknowledged {
            q.messages_ready
        } else {
            q.messages
        };
        let (value, active) = value_and_activity(
            m.mode,
            messages,
            q.message_stats.publish_details.rate,
            q.message_stats.deliver_get_details.rate,
            m.activation_value,
        );
        Ok(Sample {
            value: value.max(0.0),
            active,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalers::test_support::with_ctx;

    fn parse(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<RabbitMetadata, ScalerError> {
        with_ctx("rabbitmq", meta, auth, false, |ctx| {
            RabbitMetadata::parse(&ctx)
        })
    }

    #[test]
    fn defaults_protocols_and_metric_names() {
        let m = parse(&[("queueName", "q"), ("host", "amqp://u:p@h:5672/vh")], &[]).expect("valid");
        assert_eq!(
            (m.mode, m.value, m.protocol),
            (Mode::QueueLength, 20.0, Protocol::Amqp)
        );
        let m = parse(
            &[
                ("queueName", "q"),
                ("host", "https://h:15671"),
                ("mode", "MessageRate"),
                ("value", "2.5"),
            ],
            &[],
        )
        .expect("valid");
        assert_eq!(
            (m.mode, m.value, m.protocol),
            (Mode::MessageRate, 2.5, Protocol::Http)
        );
        let m = parse(
            &[
                ("queueName", "q"),
                ("host", "http://h"),
                ("queueLength", "7"),
            ],
            &[],
        )
        .expect("valid");
        assert_eq!((m.mode, m.value), (Mode::QueueLength, 7.0));
        let name = with_ctx(
            "rabbitmq",
            &[("queueName", "namespace/name"), ("host", "http://h")],
            &[],
            false,
            |ctx| RabbitScaler::new(ctx).map(|s| s.spec.name),
        )
        .expect("valid");
        assert_eq!(name, "s1-rabbitmq-namespace-2Fname");
    }

    #[test]
    fn every_keda_check_names_its_field() {
        let host = ("host", "amqp://h");
        for (meta, auth, field) in [
            (vec![host], vec![], "queueName"),
            (vec![("queueName", "q")], vec![], "host"),
            (
                vec![("queueName", "q"), ("host", "ftp://h")],
                vec![],
                "host",
            ),
            (
                vec![("queueName", "q"), host, ("protocol", "stomp")],
                vec![],
                "protocol",
            ),
            (vec![("queueName", "q"), host], vec![("tls", "yes")], "tls"),
            (
                vec![("queueName", "q"), host],
                vec![("tls", "enable"), ("key", "k")],
                "cert",
            ),
            (
                vec![("queueName", "q"), host, ("pageSize", "-1")],
                vec![],
                "pageSize",
            ),
            (
                vec![("queueName", "q"), host, ("pageSize", "a")],
                vec![],
                "pageSize",
            ),
            (
                vec![("queueName", "q"), host],
                vec![("username", "u")],
                "password",
            ),
            (
                vec![("queueName", "q"), host, ("useRegex", "true")],
                vec![],
                "useRegex",
            ),
            (
                vec![("queueName", "q"), host, ("excludeUnacknowledged", "true")],
                vec![],
                "excludeUnacknowledged",
            ),
            (
                vec![("queueName", "q"), host, ("queueLength", "AA")],
                vec![],
                "queueLength",
            ),
            (
                vec![
                    ("queueName", "q"),
                    host,
                    ("queueLength", "3"),
                    ("mode", "QueueLength"),
                ],
                vec![],
                "queueLength",
            ),
            (
                vec![
                    ("queueName", "q"),
                    host,
                    ("queueLength", "3"),
                    ("value", "3"),
                ],
                vec![],
                "queueLength",
            ),
            (
                vec![("queueName", "q"), host, ("mode", "QueueLength")],
                vec![],
                "value",
            ),
            (
                vec![("queueName", "q"), host, ("value", "3")],
                vec![],
                "mode",
            ),
            (
                vec![
                    ("queueName", "q"),
                    host,
                    ("mode", "Feelings"),
                    ("value", "3"),
                ],
                vec![],
                "mode",
            ),
            (
                vec![
                    ("queueName", "q"),
                    host,
                    ("mode", "QueueLength"),
                    ("value", "lots"),
                ],
                vec![],
                "value",
            ),
            (
                vec![
                    ("queueName", "q"),
                    host,
                    ("mode", "MessageRate"),
                    ("value", "3"),
                ],
                vec![],
                "mode",
            ),
            (
                vec![
                    ("queueName", "q"),
                    host,
                    ("mode", "QueueLength"),
                    ("value", "3"),
                    ("timeout", "10"),
                ],
                vec![],
                "timeout",
            ),
            (
                vec![("queueName", "q"), host, ("timeout", "error")],
                vec![],
                "timeout",
            ),
            (
                vec![("queueName", "q"), host, ("activationValue", "AA")],
                vec![],
                "activationValue",
            ),
            (
                vec![("queueName", "q"), host, ("unsafeSsl", "random")],
                vec![],
                "unsafeSsl",
            ),
            (
                vec![("queueName", "q"), host],
                vec![("workloadIdentityResource", "x")],
                "workloadIdentityResource",
            ),
            (
                vec![("queueName", "q"), host, ("password", "plain")],
                vec![],
                "password",
            ),
        ] {
            let e = parse(&meta, &auth).expect_err(&format!("{meta:?} {auth:?}"));
            assert_eq!(e.param(), Some(field), "{meta:?} {auth:?}: {e}");
        }
        // The deprecated default mode skips the amqp-timeout check, as in KEDA.
        assert!(parse(&[("queueName", "q"), host, ("timeout", "10")], &[]).is_ok());
    }

    #[test]
    fn management_urls_are_keda_s() {
        let url = |host: &str, meta: &[(&str, &str)], auth: &[(&str, &str)]| {
            let mut m = vec![("queueName", "q 1"), ("host", host), ("protocol", "http")];
            m.extend_from_slice(meta);
            parse(&m, auth).expect("valid").http_url().expect("url")
        };
        assert_eq!(
            url("http://h:15672", &[], &[]).0,
            "http://h:15672/api/queues/%2F/q+1"
        );
        assert_eq!(
            url("http://h:15672/", &[], &[]).0,
            "http://h:15672/api/queues/%2F/q+1"
        );
        assert_eq!(
            url("http://h:15672/vh", &[], &[]).0,
            "http://h:15672/api/queues/vh/q+1"
        );
        assert_eq!(
            url("http://h/sub1/sub2/%2F", &[], &[]).0,
            "http://h/sub1/sub2/api/queues/%2F/q+1"
        );
        assert_eq!(
            url("http://h/x", &[("vhostName", "my vhost/a")], &[]).0,
            "http://h/api/queues/my+vhost%2Fa/q+1"
        );
        let (u, creds) = url(
            "http://guest:gu%40st@h:15672/",
            &[("useRegex", "true"), ("pageSize", "7")],
            &[],
        );
        assert_eq!(u, "http://h:15672/api/queues/%2F?page=1&use_regex=true&pagination=false&name=q+1&page_size=7");
        assert_eq!(creds, Some(("guest".into(), "gu@st".into())));
        let (_, creds) = url(
            "http://guest:guest@h/",
            &[],
            &[("username", "u"), ("password", "p")],
        );
        assert_eq!(creds, Some(("u".into(), "p".into())));
        for (raw, (vhost, sub)) in [
            ("myVhost", ("/myVhost", "")),
            ("%2FmyVhost", ("/%2FmyVhost", "")),
            ("/", ("/%2F", "")),
            ("//", ("/%2F", "")),
            ("", ("/%2F", "")),
            ("sub1/myVhost", ("/myVhost", "/sub1")),
            ("sub1//", ("/%2F", "/sub1")),
        ] {
            assert_eq!(
                vhost_and_path(raw, None),
                (vhost.to_string(), sub.to_string()),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn amqp_uris_take_the_vhost_and_credentials() {
        let uri = |host: &str, meta: &[(&str, &str)], auth: &[(&str, &str)]| {
            let mut m = vec![("queueName", "q"), ("host", host)];
            m.extend_from_slice(meta);
            parse(&m, auth).expect("valid").amqp_uri().expect("uri")
        };
        assert_eq!(uri("amqp://g:g@h:5672", &[], &[]), "amqp://g:g@h:5672/%2F");
        assert_eq!(
            uri("amqp://g:g@h:5672/vh", &[], &[]),
            "amqp://g:g@h:5672/vh"
        );
        assert_eq!(
            uri(
                "amqp://h:5672/vh",
                &[("vhostName", "other")],
                &[("username", "u"), ("password", "p")]
            ),
            "amqp://u:p@h:5672/other"
        );
    }

    #[test]
    fn values_combinations_and_anonymized_errors() {
        use Mode::*;
        assert_eq!(
            value_and_activity(QueueLength, 3, 0.0, 0.0, 3.0),
            (3.0, false)
        );
        assert_eq!(
            value_and_activity(MessageRate, 4, 1.5, 0.0, 3.0),
            (1.5, true)
        );
        assert_eq!(
            value_and_activity(DeliverGetRate, 0, 0.0, 2.0, 1.0),
            (2.0, true)
        );
        assert_eq!(
            value_and_activity(PublishedToDeliveredRatio, 0, 3.0, 0.0, 1.0),
            (1.0, true)
        );
        assert_eq!(
            value_and_activity(PublishedToDeliveredRatio, 0, 3.0, 2.0, 1.0),
            (1.5, true)
        );
        assert_eq!(
            value_and_activity(ExpectedQueueConsumptionTime, 0, 0.0, 2.0, 0.0),
            (0.0, false)
        );
        assert_eq!(
            value_and_activity(ExpectedQueueConsumptionTime, 10, 3.0, 0.0, 1.0),
            (1.0, true)
        );
        assert_eq!(
            value_and_activity(ExpectedQueueConsumptionTime, 10, 3.0, 2.0, 0.0),
            (5.5, true)
        );
        assert_eq!(
            value_and_activity(ExpectedQueueConsumptionTime, 4, 0.0, 2.0, 1.0),
            (1.0, false)
        );
        let q = |m: i64, r: f64| QueueInfo {
            messages: m,
            messages_ready: m,
            message_stats: MessageStats {
                publish_details: Rate { rate: r },
                deliver_get_details: Rate::default(),
            },
        };
        let items = [q(3, 1.0), q(4, 2.0)];
        assert_eq!(
            combine(&items, &Ok(Operation::Sum)).expect("sum").messages,
            7
        );
        let avg = combine(&items, &Ok(Operation::Avg)).expect("avg");
        assert_eq!(
            (avg.messages, avg.message_stats.publish_details.rate),
            (3, 1.5)
        );
        assert_eq!(
            combine(&items, &Ok(Operation::Max)).expect("max").messages,
            4
        );
        let bad = Err("operation mode median must be one of sum, avg, max".to_string());
        assert!(combine(&items, &bad).is_err());
        assert_eq!(combine(&[], &bad), Ok(QueueInfo::default()));
        assert_eq!(
            anonymize("dial amqp://guest:s3cret@h:5672/: refused"),
            "dial amqp://user:password@h:5672/: refused"
        );
        assert_eq!(anonymize("no at sign"), "no at sign");
    }
}
