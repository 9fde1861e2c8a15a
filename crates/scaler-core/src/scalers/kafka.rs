//! The `kafka` trigger: a consumer group's lag (latest offset − committed offset, summed
//! over the partitions), with KEDA's handling of missing offsets, persistent lag and the
//! caps that keep consumers from outnumbering partitions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::params::Source::{Auth, Env, Meta};
use super::params::{Defaulted, Param, Params, Required};
use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::kafka::{
    ClientConfig, KafkaClient, OffsetQuery, PartitionOffsets, Sasl, ScramHash, TlsSettings,
};
use crate::quantity::MilliQuantity;

/// What lag a partition without a committed offset has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetResetPolicy {
    /// A new consumer starts at the end: lag 1 (to wake one consumer up).
    Latest,
    /// A new consumer starts at the beginning: the whole partition is lag.
    Earliest,
}

/// Parsed `kafka` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaMetadata {
    /// Where and how to connect.
    pub client: ClientConfig,
    /// `consumerGroup`.
    pub group: String,
    /// `topic`; `None` means every topic the group committed offsets for.
    pub topic: Option<String>,
    /// `partitionLimitation` (only with a topic).
    pub partition_limitation: Option<Vec<i32>>,
    /// `lagThreshold`: target lag per replica.
    pub lag_threshold: i64,
    /// `activationLagThreshold`: active strictly above this.
    pub activation_lag_threshold: i64,
    /// `offsetResetPolicy`.
    pub offset_reset_policy: OffsetResetPolicy,
    /// `allowIdleConsumers`: no cap at the partition count.
    pub allow_idle_consumers: bool,
    /// `excludePersistentLag`.
    pub exclude_persistent_lag: bool,
    /// `scaleToZeroOnInvalidOffset`.
    pub scale_to_zero_on_invalid_offset: bool,
    /// `limitToPartitionsWithLag`.
    pub limit_to_partitions_with_lag: bool,
    /// `ensureEvenDistributionOfPartitions`.
    pub ensure_even_distribution_of_partitions: bool,
}

fn bad(param: &str, message: impl Into<String>) -> ScalerError {
    ScalerError::invalid(param, message)
}

/// A whole number as KEDA reads an `int64` (Go's `encoding/json`), and beyond KEDA a zero
/// fraction (`5.0`) read as the whole number: the published examples write
/// `lagThreshold: '5.0'`.
fn whole(v: &str) -> Result<i64, String> {
    if let Some((int, fraction)) = v.split_once('.') {
        if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') {
            if let Ok(i) = super::params::int64(int) {
                return Ok(i);
            }
        }
    }
    super::params::int64(v)
}

/// `1,2,5-6` → `[1, 2, 5, 6]`, KEDA's words for errors.
pub fn parse_partition_limitation(s: &str) -> Result<Vec<i32>, ScalerError> {
    let err = |m: String| bad("partitionLimitation", m);
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.contains('-') {
            let bounds: Vec<&str> = part.split('-').collect();
            let [start, end] = bounds[..] else {
                return Err(err(format!("invalid partition limitation range: {part}")));
            };
            let parse = |x: &str| {
                x.trim()
                    .parse::<i32>()
                    .map_err(|_| err(format!("invalid partition limitation: {part}")))
            };
            let (start, end) = (parse(start)?, parse(end)?);
            if end.saturating_sub(start) > 100_000 {
                return Err(err(format!("partition limitation range too large: {part}")));
            }
            out.extend(start..=end);
        } else {
            out.push(
                part.parse::<i32>()
                    .map_err(|_| err(format!("invalid partition limitation: {part}")))?,
            );
        }
    }
    Ok(out)
}

/// sarama's version syntax: `0.a.b.c` before 1.0, `a.b.c` after.
fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    let want = if v.starts_with("0.") { 4 } else { 3 };
    parts.len() == want
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `bootstrapServers`: `host:port,host:port`.
const BOOTSTRAP_SERVERS: Param<Required> = Param::new("bootstrapServers").required();
/// `consumerGroup`.
const CONSUMER_GROUP: Param<Required> = Param::new("consumerGroup").required();
/// `topic`: absent, every topic the group committed offsets for.
const TOPIC: Param = Param::new("topic");
/// `partitionLimitation`: `1,2,5-6`, only with a topic.
const PARTITION_LIMITATION: Param = Param::new("partitionLimitation");
/// `lagThreshold`: the target lag per replica.
const LAG_THRESHOLD: Param<Defaulted> = Param::new("lagThreshold").default("10");
/// `activationLagThreshold`: active strictly above this.
const ACTIVATION_LAG_THRESHOLD: Param<Defaulted> =
    Param::new("activationLagThreshold").default("0");
/// `offsetResetPolicy`: the lag of a partition without a committed offset.
const OFFSET_RESET_POLICY: Param<Defaulted> = Param::new("offsetResetPolicy")
    .default("latest")
    .one_of(&["latest", "earliest"]);
/// `allowIdleConsumers`: no cap at the partition count.
const ALLOW_IDLE_CONSUMERS: Param<Defaulted> = Param::new("allowIdleConsumers").default("false");
/// `excludePersistentLag`.
const EXCLUDE_PERSISTENT_LAG: Param<Defaulted> =
    Param::new("excludePersistentLag").default("false");
/// `scaleToZeroOnInvalidOffset`.
const SCALE_TO_ZERO_ON_INVALID_OFFSET: Param<Defaulted> =
    Param::new("scaleToZeroOnInvalidOffset").default("false");
/// `limitToPartitionsWithLag`.
const LIMIT_TO_PARTITIONS_WITH_LAG: Param<Defaulted> =
    Param::new("limitToPartitionsWithLag").default("false");
/// `ensureEvenDistributionOfPartitions`.
const ENSURE_EVEN_DISTRIBUTION_OF_PARTITIONS: Param<Defaulted> =
    Param::new("ensureEvenDistributionOfPartitions").default("false");
/// `fullMetadata`: false needs a topic.
const FULL_METADATA: Param<Defaulted> = Param::new("fullMetadata").default("true");
/// `version`: the Kafka version, sarama's syntax.
const VERSION: Param = Param::new("version");

/// `tls`: from the trigger, then the TriggerAuthentication.
const TLS: Param<Defaulted> = Param::new("tls")
    .from(&[Meta, Env, Auth])
    .default("disable")
    .one_of(&["enable", "disable"]);
/// `unsafeSsl`: from the trigger only.
const UNSAFE_SSL: Param<Defaulted> = Param::new("unsafeSsl").default("false");
/// `ca` (PEM) to trust.
const CA: Param = Param::new("ca").from(&[Auth]);
/// `cert`: the client certificate (PEM).
const CERT: Param = Param::new("cert").from(&[Auth]);
/// `key`: its key (PEM).
const KEY: Param = Param::new("key").from(&[Auth]);
/// `keyPassword`: the key's password, when the key is encrypted.
const KEY_PASSWORD: Param = Param::new("keyPassword").from(&[Auth]);
/// `sasl`: the mechanism, from the trigger, then the TriggerAuthentication.
const SASL: Param = Param::new("sasl").from(&[Meta, Env, Auth]).one_of(&[
    "none",
    "plaintext",
    "scram_sha256",
    "scram_sha512",
    "oauthbearer",
    "gssapi",
]);
/// `username`, for SASL.
const USERNAME: Param = Param::new("username").from(&[Auth]);
/// `password`, for SASL.
const PASSWORD: Param = Param::new("password").from(&[Auth]);
/// `saslTokenProvider`, for OAUTHBEARER.
const SASL_TOKEN_PROVIDER: Param = Param::new("saslTokenProvider")
    .from(&[Meta, Env, Auth])
    .one_of(&["bearer", "aws_msk_iam"]);
/// `kerberosDisableFAST`, for GSSAPI.
const KERBEROS_DISABLE_FAST: Param<Defaulted> = Param::new("kerberosDisableFAST")
    .from(&[Auth])
    .default("false");

/// The security parameters as read, before KEDA's cross-field checks.
struct SecurityParams<'a> {
    tls: &'a str,
    unsafe_ssl: bool,
    sasl: Option<&'a str>,
    /// `saslTokenProvider`, which only OAUTHBEARER reads (as in KEDA).
    token_provider: Option<&'a str>,
}

/// Read and type-check the security parameters, each whether or not it ends up used, as
/// KEDA's typed config does (a malformed `unsafeSsl` is an error with TLS off too).
fn read_security<'a>(params: &Params<'a>) -> Result<SecurityParams<'a>, ScalerError> {
    let tls = params.text(&TLS)?;
    let unsafe_ssl = params.flag(&UNSAFE_SSL)?;
    let sasl = params.text(&SASL)?;
    // Only OAUTHBEARER and GSSAPI use these (unsupported here), but KEDA refuses a bad
    // value whatever the mechanism.
    let token_provider = params.text(&SASL_TOKEN_PROVIDER)?;
    params.flag(&KERBEROS_DISABLE_FAST)?;
    Ok(SecurityParams {
        tls,
        unsafe_ssl,
        sasl,
        token_provider,
    })
}

/// KEDA's `parseTLS` and `parseSASL`: credentials from the TriggerAuthentication.
fn parse_security(
    params: &Params<'_>,
    security: SecurityParams<'_>,
) -> Result<(Option<TlsSettings>, Option<Sasl>), ScalerError> {
    let auth = |p: &Param| -> Result<Option<String>, ScalerError> {
        Ok(params.text(p)?.map(str::to_string))
    };
    // With TLS off, a lone cert or key is not checked (KEDA ignores them).
    let tls = if security.tls == "enable" {
        let (cert, key) = (auth(&CERT)?, auth(&KEY)?);
        if cert.is_some() && key.is_none() {
            return Err(bad("key", "key must be provided with cert"));
        }
        if key.is_some() && cert.is_none() {
            return Err(bad("cert", "cert must be provided with key"));
        }
        // KEDA decrypts the key with keyPassword (tls_config.go, NewTLSConfigWithPassword).
        let key = match (key, auth(&KEY_PASSWORD)?) {
            (Some(k), Some(password)) => Some(
                crate::tls::private_key::decrypt(&k, &password)
                    .map_err(|e| bad("keyPassword", format!("keyPassword: {e}")))?,
            ),
            (key, _) => key,
        };
        Some(TlsSettings {
            ca: auth(&CA)?,
            cert,
            key,
            unsafe_ssl: security.unsafe_ssl,
        })
    } else {
        None
    };
    let creds = || -> Result<(String, String), ScalerError> {
        let user = auth(&USERNAME)?.ok_or_else(|| bad("username", "no username given"))?;
        let password = auth(&PASSWORD)?.ok_or_else(|| bad("password", "no password given"))?;
        Ok((user, password))
    };
    let sasl = match security.sasl {
        None | Some("none") => None,
        Some("plaintext") => {
            let (user, password) = creds()?;
            Some(Sasl::Plain { user, password })
        }
        Some(mode @ ("scram_sha256" | "scram_sha512")) => {
            let (user, password) = creds()?;
            let hash = if mode == "scram_sha256" {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            Some(Sasl::Scram {
                hash,
                user,
                password,
            })
        }
        Some(other) => {
            // OAUTHBEARER's token comes from saslTokenProvider (bearer by default).
            let provider = match security.token_provider {
                Some(p) if other == "oauthbearer" => format!(" with saslTokenProvider {p:?}"),
                _ => String::new(),
            };
            return Err(bad(
                "sasl",
                format!(
                    "sasl {other:?}{provider} is not supported by eventscale yet \
                     (supported: none, plaintext, scram_sha256, scram_sha512)"
                ),
            ));
        }
    };
    Ok((tls, sasl))
}

impl KafkaMetadata {
    /// Parse with KEDA's defaults, rules and messages: each parameter read and typed in
    /// KEDA's field order, then KEDA's `Validate` checks in their order, so the first
    /// error is the first of those KEDA reports.
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        // Beyond KEDA, empty elements (`a:9092,`) are dropped.
        let bootstrap: Vec<String> = params
            .list(&BOOTSTRAP_SERVERS)?
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        for b in &bootstrap {
            let port = b.rsplit_once(':').map(|(_, p)| p);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(bad(
                    "bootstrapServers",
                    format!("bootstrap server {b:?} is not host:port"),
                ));
            }
        }
        let group = params.text(&CONSUMER_GROUP)?.to_string();
        let topic = params.text(&TOPIC)?.map(str::to_string);
        let partition_limitation = params.text(&PARTITION_LIMITATION)?;
        let lag_threshold = params.parse(&LAG_THRESHOLD, whole)?;
        let activation_lag_threshold = params.parse(&ACTIVATION_LAG_THRESHOLD, whole)?;
        let offset_reset_policy = match params.text(&OFFSET_RESET_POLICY)? {
            "earliest" => OffsetResetPolicy::Earliest,
            _ => OffsetResetPolicy::Latest,
        };
        let allow_idle_consumers = params.flag(&ALLOW_IDLE_CONSUMERS)?;
        let exclude_persistent_lag = params.flag(&EXCLUDE_PERSISTENT_LAG)?;
        let scale_to_zero_on_invalid_offset = params.flag(&SCALE_TO_ZERO_ON_INVALID_OFFSET)?;
        let limit_to_partitions_with_lag = params.flag(&LIMIT_TO_PARTITIONS_WITH_LAG)?;
        let ensure_even_distribution_of_partitions =
            params.flag(&ENSURE_EVEN_DISTRIBUTION_OF_PARTITIONS)?;
        let full_metadata = params.flag(&FULL_METADATA)?;
        let version = params.text(&VERSION)?;
        let security = read_security(&params)?;

        if lag_threshold <= 0 {
            return Err(bad(
                "lagThreshold",
                "\"lagThreshold\" must be positive number",
            ));
        }
        if activation_lag_threshold < 0 {
            return Err(bad(
                "activationLagThreshold",
                "\"activationLagThreshold\" must be a non-negative number",
            ));
        }
        // Checked even without a topic (as KEDA does), then ignored there.
        let partition_limitation = partition_limitation
            .map(parse_partition_limitation)
            .transpose()?
            .filter(|_| topic.is_some());
        if allow_idle_consumers && limit_to_partitions_with_lag {
            return Err(bad(
                "limitToPartitionsWithLag",
                "allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously",
            ));
        }
        if topic.is_none() && limit_to_partitions_with_lag {
            return Err(bad(
                "topic",
                "topic must be specified when using limitToPartitionsWithLag",
            ));
        }
        if limit_to_partitions_with_lag && ensure_even_distribution_of_partitions {
            return Err(bad(
                "ensureEvenDistributionOfPartitions",
                "limitToPartitionsWithLag and ensureEvenDistributionOfPartitions cannot be set simultaneously",
            ));
        }
        if topic.is_none() && ensure_even_distribution_of_partitions {
            return Err(bad(
                "topic",
                "topic must be specified when using ensureEvenDistributionOfPartitions",
            ));
        }
        if !full_metadata && topic.is_none() {
            return Err(bad(
                "topic",
                "topic must be specified when fullMetadata is false",
            ));
        }
        let (tls, sasl) = parse_security(&params, security)?;
        // KEDA parses the version after the typed config.
        if let Some(v) = version {
            if !valid_version(v) {
                return Err(bad(
                    "version",
                    format!("error parsing kafka version: invalid version `{v}`"),
                ));
            }
        }
        Ok(Self {
            client: ClientConfig {
                bootstrap,
                tls,
                sasl,
            },
            group,
            topic,
            partition_limitation,
            lag_threshold,
            activation_lag_threshold,
            offset_reset_policy,
            allow_idle_consumers,
            exclude_persistent_lag,
            scale_to_zero_on_invalid_offset,
            limit_to_partitions_with_lag,
            ensure_even_distribution_of_partitions,
        })
    }

    /// KEDA's metric name before the index: `kafka-<topic>` or `kafka-<group>-topics`.
    pub fn metric_name(&self) -> String {
        match &self.topic {
            Some(t) => format!("kafka-{t}"),
            None => format!("kafka-{}-topics", self.group),
        }
    }
}

/// Committed offsets seen at the previous poll, by partition (for excludePersistentLag).
pub type PreviousOffsets = HashMap<(String, i32), i64>;

/// The lag of a whole group: what scaling uses, and what activation uses (the same unless
/// persistent lag was excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalLag {
    /// Lag for the metric, after exclusions and caps.
    pub lag: i64,
    /// Lag for activation: persistent lag included, no caps.
    pub with_persistent: i64,
}

/// One partition's (lag, lag with persistent lag), KEDA's `getLagForPartition`.
fn partition_lag(
    m: &KafkaMetadata,
    p: &PartitionOffsets,
    latest: i64,
    previous: &mut PreviousOffsets,
) -> (i64, i64) {
    if p.committed == -1 {
        match m.offset_reset_policy {
            OffsetResetPolicy::Latest => {
                let v = if m.scale_to_zero_on_invalid_offset {
                    0
                } else {
                    1
                };
                return (v, v);
            }
            OffsetResetPolicy::Earliest if m.scale_to_zero_on_invalid_offset => return (0, 0),
            OffsetResetPolicy::Earliest => return (latest, latest),
        }
    }
    let lag = latest.saturating_sub(p.committed);
    if m.exclude_persistent_lag {
        let key = (p.topic.clone(), p.partition);
        match previous.get(&key) {
            // The consumer did not move since the last poll: it may be stuck on a record,
            // and more consumers would not help.
            Some(&prev) if prev == p.committed => return (0, lag),
            _ => {
                previous.insert(key, p.committed);
            }
        }
    }
    (lag, lag)
}

/// The smallest factor of `partitions` whose consumers can take `lag` at `threshold` each
/// (so partitions divide evenly among consumers), or the partition count.
pub fn even_distribution_factor(lag: i64, partitions: i64, threshold: i64) -> i64 {
    (1..=partitions)
        .filter(|f| partitions % f == 0)
        .find(|f| f.saturating_mul(threshold) >= lag)
        .unwrap_or(partitions)
}

/// KEDA's `getTotalLag` as a pure function of the offsets (partitions the broker gave no
/// latest offset for are left out, as KEDA leaves them out) and the previous poll's
/// committed offsets, which it updates.
pub fn total_lag(
    m: &KafkaMetadata,
    offsets: &[PartitionOffsets],
    previous: &mut PreviousOffsets,
) -> TotalLag {
    let (mut lag, mut with_persistent, mut partitions, mut with_lag) = (0i64, 0i64, 0i64, 0i64);
    for p in offsets {
        let Some(latest) = p.latest else { continue };
        let (l, lp) = partition_lag(m, p, latest, previous);
        lag = lag.saturating_add(l);
        with_persistent = with_persistent.saturating_add(lp);
        partitions += 1;
        if l > 0 {
            with_lag += 1;
        }
    }
    let threshold = m.lag_threshold;
    if !m.allow_idle_consumers
        || m.limit_to_partitions_with_lag
        || m.ensure_even_distribution_of_partitions
    {
        let mut bound = partitions;
        if m.ensure_even_distribution_of_partitions {
            lag = even_distribution_factor(lag, partitions, threshold).saturating_mul(threshold);
        }
        if m.limit_to_partitions_with_lag {
            bound = with_lag;
        }
        if lag / threshold > bound {
            lag = bound.saturating_mul(threshold);
        }
    }
    TotalLag {
        lag,
        with_persistent,
    }
}

/// The kafka scaler.
#[derive(Debug)]
pub struct KafkaScaler {
    meta: KafkaMetadata,
    spec: MetricSpec,
    client: Arc<KafkaClient>,
    /// The committed offsets of the previous poll, for `excludePersistentLag`: kept as
    /// long as the scaler (built once per ScaledObject runtime, as KEDA keeps it).
    previous: Mutex<PreviousOffsets>,
}

impl KafkaScaler {
    /// Parse the trigger and find (or make) the shared client for its cluster.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let meta = KafkaMetadata::parse(&ctx)?;
        let target_type = ctx.target_type()?;
        let client = ctx.pools.kafka.shared(&meta.client).map_err(|e| {
            let text = e.to_string();
            let param = ["ca", "cert", "key"]
                .into_iter()
                .find(|p| text.starts_with(&format!("{p}:")))
                .unwrap_or("tls");
            bad(param, text)
        })?;
        Ok(Self {
            spec: MetricSpec {
                name: ctx.metric_name(&meta.metric_name()),
                target_type,
                target: MilliQuantity::from_value(meta.lag_threshold as f64),
            },
            previous: Mutex::new(PreviousOffsets::default()),
            meta,
            client,
        })
    }

    /// The parsed metadata.
    pub fn metadata(&self) -> &KafkaMetadata {
        &self.meta
    }

    /// The shared client (tests count its requests).
    pub fn client(&self) -> &Arc<KafkaClient> {
        &self.client
    }
}

#[async_trait]
impl Scaler for KafkaScaler {
    fn scaler_type(&self) -> &'static str {
        "kafka"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    fn activation_threshold(&self) -> Option<f64> {
        Some(self.meta.activation_lag_threshold as f64)
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let query = OffsetQuery {
            group: self.meta.group.clone(),
            topic: self.meta.topic.clone(),
            partitions: self.meta.partition_limitation.clone(),
        };
        let offsets = self
            .client
            .group_offsets(&query)
            .await
            .map_err(|e| ScalerError::Query(e.to_string()))?;
        let total = {
            let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
            total_lag(&self.meta, &offsets, &mut previous)
        };
        tracing::debug!(
            group = %self.meta.group,
            topic = self.meta.topic.as_deref().unwrap_or("*"),
            lag = total.lag,
            with_persistent = total.with_persistent,
            partitions = offsets.len(),
            "kafka lag"
        );
        Ok(Sample {
            value: total.lag as f64,
            active: total.with_persistent > self.meta.activation_lag_threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaled_object::ScaleTriggers;
    use crate::scalers::AuthParams;

    fn map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse_with(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<KafkaMetadata, ScalerError> {
        let trigger = ScaleTriggers {
            type_: "kafka".into(),
            metadata: map(meta).into(),
            ..Default::default()
        };
        let auth: AuthParams = map(auth);
        KafkaMetadata::parse(&TriggerContext {
            index: 0,
            trigger: &trigger,
            auth: &auth,
            namespace: "ns",
            name: "so",
            client: None,
            as_metric_source: false,
            pools: &crate::pools::Pools::default(),
        })
    }

    fn parse(meta: &[(&str, &str)]) -> Result<KafkaMetadata, ScalerError> {
        parse_with(meta, &[])
    }

    const BASE: [(&str, &str); 2] = [
        ("bootstrapServers", "foobar:9092"),
        ("consumerGroup", "my-group"),
    ];

    /// `BASE` with `extra` added (a key in both takes `extra`'s value).
    fn with_base<'a>(extra: &[(&'a str, &'a str)]) -> Pairs<'a> {
        let mut m: Pairs<'a> = BASE.to_vec();
        for &(k, v) in extra {
            m.retain(|(key, _)| *key != k);
            m.push((k, v));
        }
        m
    }

    fn parse_base(extra: &[(&str, &str)]) -> Result<KafkaMetadata, ScalerError> {
        parse(&with_base(extra))
    }

    type Pairs<'a> = Vec<(&'a str, &'a str)>;
    /// The field and a part of the message an error must have; `None` for success.
    type Expect<'a> = Option<(&'a str, &'a str)>;

    /// Check one parse against its expectation.
    fn check(label: &str, got: Result<KafkaMetadata, ScalerError>, want: Expect<'_>) {
        match (want, got) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("{label}: unexpected error {e}"),
            (Some((param, text)), Ok(m)) => {
                panic!("{label}: expected an error on {param} ({text}), parsed {m:?}")
            }
            (Some((param, text)), Err(e)) => {
                assert_eq!(e.param(), Some(param), "{label}: {e}");
                assert!(e.to_string().contains(text), "{label}: {e}");
            }
        }
    }

    /// KEDA's `validWithAuthParams` (TestGetBrokers): SASL/PLAIN from the
    /// TriggerAuthentication.
    const PLAINTEXT_AUTH: [(&str, &str); 3] = [
        ("sasl", "plaintext"),
        ("username", "admin"),
        ("password", "admin"),
    ];

    /// KEDA's parse table (kafka_scaler_test.go), and more: `None` expects success, `Some`
    /// an error naming the field with a message containing the text. As KEDA's
    /// TestGetBrokers does, every case is parsed twice, without authentication and with
    /// SASL/PLAIN from the TriggerAuthentication, and must end the same.
    #[test]
    fn metadata_table() {
        let t = &[("topic", "my-topic")];
        let cases: Vec<(Pairs<'_>, Expect<'_>)> = vec![
            (vec![], None),
            (vec![("partitionLimitation", "1,2,3,4,5,6")], None),
            (vec![("partitionLimitation", "x")], Some(("partitionLimitation", "invalid partition limitation: x"))),
            (vec![("partitionLimitation", "           ")], None),
            (vec![("partitionLimitation", "")], None),
            (vec![t[0], ("version", "1.2.3.4")], Some(("version", "error parsing kafka version"))),
            (vec![t[0], ("version", "1.0.0")], None),
            (vec![t[0], ("version", "0.10.2.1")], None),
            (vec![t[0], ("lagThreshold", "-1")], Some(("lagThreshold", "\"lagThreshold\" must be positive number"))),
            (vec![t[0], ("lagThreshold", "0")], Some(("lagThreshold", "\"lagThreshold\" must be positive number"))),
            (vec![t[0], ("lagThreshold", "-0")], Some(("lagThreshold", "\"lagThreshold\" must be positive number"))),
            (vec![t[0], ("lagThreshold", "1000000"), ("activationLagThreshold", "0")], None),
            (vec![t[0], ("lagThreshold", "10"), ("activationLagThreshold", "0")], None),
            // KEDA reads int64 parameters with Go's encoding/json: no `+`, no leading zero,
            // no fraction or exponent.
            (vec![t[0], ("lagThreshold", "5.5")], Some(("lagThreshold", "unable to set param \"lagThreshold\" value \"5.5\": unable to unmarshal to field type int64: json: cannot unmarshal number 5.5 into Go value of type int64"))),
            (vec![t[0], ("lagThreshold", "1e3")], Some(("lagThreshold", "unable to set param \"lagThreshold\" value \"1e3\": unable to unmarshal to field type int64: json: cannot unmarshal number 1e3 into Go value of type int64"))),
            (vec![t[0], ("lagThreshold", "1.0e1")], Some(("lagThreshold", "json: cannot unmarshal number 1.0e1 into Go value of type int64"))),
            (vec![t[0], ("lagThreshold", "+5")], Some(("lagThreshold", "unable to set param \"lagThreshold\" value \"+5\": unable to unmarshal to field type int64: invalid character '+' looking for beginning of value"))),
            (vec![t[0], ("lagThreshold", "05")], Some(("lagThreshold", "unable to unmarshal to field type int64: invalid character '5' after top-level value"))),
            (vec![t[0], ("lagThreshold", "05.0")], Some(("lagThreshold", "invalid character '5' after top-level value"))),
            (vec![t[0], ("lagThreshold", "5 6")], Some(("lagThreshold", "invalid character '6' after top-level value"))),
            (vec![t[0], ("lagThreshold", "5.")], Some(("lagThreshold", "unable to unmarshal to field type int64: unexpected end of JSON input"))),
            (vec![t[0], ("lagThreshold", "-")], Some(("lagThreshold", "unexpected end of JSON input"))),
            (vec![t[0], ("lagThreshold", "1e")], Some(("lagThreshold", "unexpected end of JSON input"))),
            (vec![t[0], ("lagThreshold", "-x")], Some(("lagThreshold", "invalid character 'x' in numeric literal"))),
            (vec![t[0], ("lagThreshold", "1.x")], Some(("lagThreshold", "invalid character 'x' after decimal point in numeric literal"))),
            (vec![t[0], ("lagThreshold", "1e+x")], Some(("lagThreshold", "invalid character 'x' in exponent of numeric literal"))),
            (vec![t[0], ("lagThreshold", "99999999999999999999")], Some(("lagThreshold", "json: cannot unmarshal number 99999999999999999999 into Go value of type int64"))),
            (vec![t[0], ("lagThreshold", "ten")], Some(("lagThreshold", "unable to unmarshal to field type int64: invalid character 'e' in literal true (expecting 'r')"))),
            (vec![t[0], ("lagThreshold", "true")], Some(("lagThreshold", "json: cannot unmarshal bool into Go value of type int64"))),
            (vec![t[0], ("lagThreshold", "nul")], Some(("lagThreshold", "unexpected end of JSON input"))),
            (vec![t[0], ("lagThreshold", "\"5\"")], Some(("lagThreshold", "json: cannot unmarshal string into Go value of type int64"))),
            (vec![t[0], ("lagThreshold", "'5'")], Some(("lagThreshold", r"invalid character '\'' looking for beginning of value"))),
            (vec![t[0], ("lagThreshold", "\u{e9}")], Some(("lagThreshold", "invalid character '\u{c3}' looking for beginning of value"))),
            (vec![t[0], ("lagThreshold", "10"), ("activationLagThreshold", "AA")], Some(("activationLagThreshold", "unable to set param \"activationLagThreshold\" value \"AA\": unable to unmarshal to field type int64: invalid character 'A' looking for beginning of value"))),
            (vec![t[0], ("activationLagThreshold", "+1")], Some(("activationLagThreshold", "invalid character '+' looking for beginning of value"))),
            (vec![t[0], ("activationLagThreshold", "-1")], Some(("activationLagThreshold", "\"activationLagThreshold\" must be a non-negative number"))),
            // Parameters are read and typed before KEDA's Validate runs.
            (vec![t[0], ("lagThreshold", "0"), ("allowIdleConsumers", "x")], Some(("allowIdleConsumers", "unable to parse boolean value"))),
            (vec![t[0], ("partitionLimitation", "1,2,3,4")], None),
            (vec![t[0], ("partitionLimitation", "1-4")], None),
            (vec![t[0], ("partitionLimitation", "1-4,8,10-12")], None),
            (vec![t[0], ("partitionLimitation", "a,b,c,d")], Some(("partitionLimitation", "invalid partition limitation: a"))),
            (vec![t[0], ("partitionLimitation", "1-2-3")], Some(("partitionLimitation", "invalid partition limitation range: 1-2-3"))),
            (vec![t[0], ("bootstrapServers", "foo:9092,bar:9092")], None),
            (vec![t[0], ("offsetResetPolicy", "latest")], None),
            (vec![t[0], ("offsetResetPolicy", "earliest")], None),
            (vec![t[0], ("offsetResetPolicy", "foo")], Some(("offsetResetPolicy", "parameter \"offsetResetPolicy\" value \"foo\" must be one of [latest earliest]"))),
            (vec![t[0], ("allowIdleConsumers", "notvalid")], Some(("allowIdleConsumers", "unable to set param \"allowIdleConsumers\" value \"notvalid\": unable to parse boolean value \"notvalid\": strconv.ParseBool: parsing \"notvalid\": invalid syntax"))),
            (vec![t[0], ("allowIdleConsumers", "true")], None),
            (vec![t[0], ("excludePersistentLag", "notvalid")], Some(("excludePersistentLag", "unable to set param \"excludePersistentLag\" value \"notvalid\": unable to parse boolean value"))),
            (vec![t[0], ("excludePersistentLag", "true")], None),
            (vec![t[0], ("allowIdleConsumers", "true"), ("version", "1.0.0")], None),
            (vec![t[0], ("limitToPartitionsWithLag", "true")], None),
            (vec![t[0], ("limitToPartitionsWithLag", "notvalid")], Some(("limitToPartitionsWithLag", "unable to parse boolean value \"notvalid\""))),
            (vec![t[0], ("scaleToZeroOnInvalidOffset", "notvalid")], Some(("scaleToZeroOnInvalidOffset", "unable to parse boolean value \"notvalid\""))),
            (vec![t[0], ("allowIdleConsumers", "true"), ("limitToPartitionsWithLag", "true")], Some(("limitToPartitionsWithLag", "allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously"))),
            (vec![t[0], ("allowIdleConsumers", "true"), ("limitToPartitionsWithLag", "false")], None),
            (vec![("limitToPartitionsWithLag", "true")], Some(("topic", "topic must be specified when using limitToPartitionsWithLag"))),
            (vec![t[0], ("ensureEvenDistributionOfPartitions", "true")], None),
            (vec![t[0], ("ensureEvenDistributionOfPartitions", "true"), ("limitToPartitionsWithLag", "true")], Some(("ensureEvenDistributionOfPartitions", "limitToPartitionsWithLag and ensureEvenDistributionOfPartitions cannot be set simultaneously"))),
            (vec![("ensureEvenDistributionOfPartitions", "true")], Some(("topic", "topic must be specified when using ensureEvenDistributionOfPartitions"))),
            (vec![t[0], ("fullMetadata", "true")], None),
            (vec![("fullMetadata", "true")], None),
            (vec![t[0], ("fullMetadata", "false")], None),
            (vec![("fullMetadata", "false")], Some(("topic", "topic must be specified when fullMetadata is false"))),
            (vec![t[0], ("fullMetadata", "notabool")], Some(("fullMetadata", "unable to parse boolean value \"notabool\""))),
            // unsafeSsl is read (and refused when malformed) with TLS off too.
            (vec![t[0], ("unsafeSsl", "notabool")], Some(("unsafeSsl", "unable to set param \"unsafeSsl\" value \"notabool\": unable to parse boolean value \"notabool\": strconv.ParseBool: parsing \"notabool\": invalid syntax"))),
            (vec![t[0], ("unsafeSsl", "yes"), ("tls", "disable")], Some(("unsafeSsl", "unable to parse boolean value \"yes\""))),
            (vec![t[0], ("unsafeSsl", "true")], None),
            // saslTokenProvider is checked whatever the mechanism; kerberosDisableFAST is
            // read from the TriggerAuthentication only.
            (vec![t[0], ("saslTokenProvider", "foo")], Some(("saslTokenProvider", "parameter \"saslTokenProvider\" value \"foo\" must be one of [bearer aws_msk_iam]"))),
            (vec![t[0], ("saslTokenProvider", "bearer")], None),
            (vec![t[0], ("saslTokenProvider", "aws_msk_iam")], None),
            (vec![t[0], ("kerberosDisableFAST", "notabool")], None),
            (vec![("bootstrapServers", "kafka")], Some(("bootstrapServers", "is not host:port"))),
            (vec![("bootstrapServers", "")], Some(("bootstrapServers", "missing required parameter \"bootstrapServers\" in [triggerMetadata resolvedEnv]"))),
            (vec![("consumerGroup", "  ")], Some(("consumerGroup", "missing required parameter \"consumerGroup\" in [triggerMetadata resolvedEnv]"))),
        ];
        for (extra, want) in cases {
            check(&format!("{extra:?}"), parse_base(&extra), want);
            let with_auth = parse_with(&with_base(&extra), &PLAINTEXT_AUTH);
            if let Ok(m) = &with_auth {
                assert_eq!(
                    m.client.sasl,
                    Some(Sasl::Plain {
                        user: "admin".into(),
                        password: "admin".into()
                    }),
                    "{extra:?}"
                );
            }
            check(&format!("{extra:?} with SASL/PLAIN"), with_auth, want);
        }
        // KEDA's first two cases: nothing at all, then no consumer group.
        check(
            "{}",
            parse(&[]),
            Some(("bootstrapServers", "missing required parameter")),
        );
        check(
            "no consumerGroup",
            parse_with(&[BASE[0]], &PLAINTEXT_AUTH),
            Some((
                "consumerGroup",
                "missing required parameter \"consumerGroup\" in [triggerMetadata resolvedEnv]",
            )),
        );
    }

    #[test]
    fn defaults_and_values() {
        let m = parse_base(&[("topic", "my-topic")]).expect("parses");
        assert_eq!(m.client.bootstrap, vec!["foobar:9092".to_string()]);
        assert_eq!(m.group, "my-group");
        assert_eq!(m.topic.as_deref(), Some("my-topic"));
        assert_eq!(m.lag_threshold, 10);
        assert_eq!(m.activation_lag_threshold, 0);
        assert_eq!(m.offset_reset_policy, OffsetResetPolicy::Latest);
        assert!(!m.allow_idle_consumers && !m.exclude_persistent_lag);
        assert!(!m.scale_to_zero_on_invalid_offset && !m.limit_to_partitions_with_lag);
        assert!(!m.ensure_even_distribution_of_partitions);
        assert_eq!(m.partition_limitation, None);
        assert_eq!(m.client.tls, None);
        assert_eq!(m.client.sasl, None);
        assert_eq!(m.metric_name(), "kafka-my-topic");

        let m = parse_base(&[]).expect("parses");
        assert_eq!(m.metric_name(), "kafka-my-group-topics");

        // Beyond KEDA: the seed example's '5.0' (a zero fraction) is the whole number.
        for (v, want) in [("5.0", 5), ("5.00", 5), ("0.0", 0), ("-0", 0), ("7", 7)] {
            let m = parse_base(&[("topic", "t"), ("activationLagThreshold", v)]).expect(v);
            assert_eq!(m.activation_lag_threshold, want, "{v}");
        }
        let m = parse_base(&[("topic", "t"), ("lagThreshold", "5.0")]).expect("parses");
        assert_eq!(m.lag_threshold, 5);
        let m = parse_base(&[("topic", "t"), ("lagThreshold", " 9223372036854775807 ")])
            .expect("parses");
        assert_eq!(m.lag_threshold, i64::MAX);

        let m = parse_base(&[("bootstrapServers", "foo:9092, bar:9092,")]).expect("parses");
        assert_eq!(
            m.client.bootstrap,
            vec!["foo:9092".to_string(), "bar:9092".to_string()]
        );

        let m =
            parse_base(&[("topic", "t"), ("partitionLimitation", "1-4,8,10-12")]).expect("parses");
        assert_eq!(
            m.partition_limitation,
            Some(vec![1, 2, 3, 4, 8, 10, 11, 12])
        );
        // Ignored without a topic, as KEDA does.
        let m = parse_base(&[("partitionLimitation", "1-4")]).expect("parses");
        assert_eq!(m.partition_limitation, None);

        let m = parse_base(&[
            ("topic", "t"),
            ("offsetResetPolicy", "earliest"),
            ("allowIdleConsumers", "True"),
            ("excludePersistentLag", "1"),
        ])
        .expect("parses");
        assert_eq!(m.offset_reset_policy, OffsetResetPolicy::Earliest);
        assert!(m.allow_idle_consumers && m.exclude_persistent_lag);
    }

    /// KEDA's auth tables (TestKafkaAuthParamsInTriggerAuthentication and
    /// TestKafkaAuthParamsInScaledObject): `sasl`/`tls` from metadata or the
    /// TriggerAuthentication, credentials from the TriggerAuthentication.
    #[test]
    fn auth_table() {
        let creds = [("username", "admin"), ("password", "admin")];
        let full_tls = [("ca", "caaa"), ("cert", "ceert"), ("key", "keey")];
        let join = |parts: &[&[(&'static str, &'static str)]]| -> Pairs<'static> { parts.concat() };
        let unsupported = Some(("sasl", "is not supported by eventscale yet"));
        let cases: Vec<(Pairs<'_>, Pairs<'_>, Expect<'_>)> = vec![
            // From the TriggerAuthentication.
            (vec![], join(&[&[("sasl", "plaintext")], &creds]), None),
            (vec![], join(&[&[("sasl", "scram_sha256")], &creds]), None),
            (vec![], join(&[&[("sasl", "scram_sha512")], &creds]), None),
            (vec![], join(&[&[("tls", "enable")], &full_tls]), None),
            (vec![], vec![("tls", "enable"), ("cert", "ceert"), ("key", "keey")], None),
            (vec![], vec![("tls", "enable"), ("ca", "caaa")], None),
            (vec![], join(&[&[("sasl", "plaintext"), ("tls", "enable")], &creds, &full_tls]), None),
            (vec![], join(&[&[("sasl", "plaintext"), ("tls", "disable")], &creds]), None),
            (vec![], vec![("sasl", "none")], None),
            (vec![], join(&[&[("sasl", "foo")], &creds]), Some(("sasl", "parameter \"sasl\" value \"foo\" must be one of [none plaintext scram_sha256 scram_sha512 oauthbearer gssapi]"))),
            (vec![], vec![("sasl", "plaintext"), ("password", "admin")], Some(("username", "no username given"))),
            (vec![], vec![("sasl", "plaintext"), ("username", "admin")], Some(("password", "no password given"))),
            (vec![], vec![("tls", "enable"), ("ca", "caaa"), ("key", "keey")], Some(("cert", "cert must be provided with key"))),
            (vec![], vec![("tls", "enable"), ("ca", "caaa"), ("cert", "ceert")], Some(("key", "key must be provided with cert"))),
            (vec![], join(&[&[("tls", "yes")], &full_tls]), Some(("tls", "parameter \"tls\" value \"yes\" must be one of [enable disable]"))),
            // SASL + TLS, one thing wrong.
            (vec![], join(&[&[("sasl", "foo"), ("tls", "enable")], &creds, &full_tls]), Some(("sasl", "must be one of"))),
            (vec![], join(&[&[("sasl", "plaintext"), ("tls", "foo")], &creds, &full_tls]), Some(("tls", "must be one of [enable disable]"))),
            (vec![], join(&[&[("sasl", "plaintext"), ("tls", "enable"), ("password", "admin")], &full_tls]), Some(("username", "no username given"))),
            (vec![], join(&[&[("sasl", "plaintext"), ("tls", "enable"), ("username", "admin")], &full_tls]), Some(("password", "no password given"))),
            (vec![], join(&[&[("sasl", "plaintext"), ("tls", "enable"), ("ca", "caaa"), ("key", "keey")], &creds]), Some(("cert", "cert must be provided with key"))),
            (vec![], join(&[&[("sasl", "plaintext"), ("tls", "enable"), ("ca", "caaa"), ("cert", "ceert")], &creds]), Some(("key", "key must be provided with cert"))),
            // TLS off: a lone cert or key is not checked.
            (vec![], vec![("tls", "disable"), ("cert", "ceert")], None),
            (vec![], vec![("tls", "disable"), ("key", "keey")], None),
            (vec![], vec![("cert", "ceert")], None),
            (vec![("tls", "disable")], vec![("cert", "ceert")], None),
            // KEDA trims values from the TriggerAuthentication.
            (vec![], join(&[&[("sasl", "plaintext\n")], &creds]), None),
            (vec![], join(&[&[("sasl", "plaintext ")], &creds]), None),
            (vec![], join(&[&[("sasl", "scram_sha256\n")], &creds]), None),
            (vec![], join(&[&[("sasl", "scram_sha256 ")], &creds]), None),
            (vec![], join(&[&[("sasl", "scram_sha512\n")], &creds]), None),
            (vec![], join(&[&[("sasl", "scram_sha512 ")], &creds]), None),
            (vec![], join(&[&[("tls", " enable\n")], &full_tls]), None),
            // From the ScaledObject's metadata.
            (vec![("sasl", "plaintext")], creds.to_vec(), None),
            (vec![("sasl", "scram_sha256")], creds.to_vec(), None),
            (vec![("sasl", "scram_sha512")], creds.to_vec(), None),
            (vec![("tls", "enable")], full_tls.to_vec(), None),
            (vec![("tls", "enable")], vec![("ca", "caaa")], None),
            (vec![("tls", "enable"), ("unsafeSsl", "true")], vec![("ca", "caaa")], None),
            (vec![("sasl", "plaintext"), ("tls", "enable")], join(&[&creds, &full_tls]), None),
            (vec![("sasl", "plaintext"), ("tls", "disable")], creds.to_vec(), None),
            (vec![("sasl", "scram_sha512"), ("tls", "enable")], creds.to_vec(), None),
            (vec![("sasl", "none")], vec![], None),
            (vec![("sasl", "foo")], creds.to_vec(), Some(("sasl", "must be one of"))),
            (vec![("sasl", "plaintext")], vec![("password", "admin")], Some(("username", "no username given"))),
            (vec![("sasl", "plaintext")], vec![("username", "admin")], Some(("password", "no password given"))),
            (vec![("tls", "enable")], vec![("ca", "caaa"), ("key", "keey")], Some(("cert", "cert must be provided with key"))),
            (vec![("tls", "enable")], vec![("ca", "caaa"), ("cert", "ceert")], Some(("key", "key must be provided with cert"))),
            (vec![("tls", "random")], full_tls.to_vec(), Some(("tls", "must be one of [enable disable]"))),
            (vec![("sasl", "foo"), ("tls", "enable")], join(&[&creds, &full_tls]), Some(("sasl", "must be one of"))),
            (vec![("sasl", "plaintext"), ("tls", "foo")], join(&[&creds, &full_tls]), Some(("tls", "must be one of"))),
            (vec![("sasl", "plaintext"), ("tls", "enable")], join(&[&[("password", "admin")], &full_tls]), Some(("username", "no username given"))),
            (vec![("sasl", "plaintext"), ("tls", "enable")], join(&[&[("username", "admin")], &full_tls]), Some(("password", "no password given"))),
            (vec![("sasl", "plaintext"), ("tls", "enable")], join(&[&creds, &[("ca", "caaa"), ("key", "keey")]]), Some(("cert", "cert must be provided with key"))),
            (vec![("sasl", "plaintext"), ("tls", "enable")], join(&[&creds, &[("ca", "caaa"), ("cert", "ceert")]]), Some(("key", "key must be provided with cert"))),
            // Credentials in metadata do not count.
            (join(&[&[("sasl", "plaintext")], &creds]), vec![], Some(("username", "no username given"))),
            // In both places the metadata wins; the TriggerAuthentication's value is not
            // even read (KEDA takes the first source that has one).
            (vec![("sasl", "scram_sha512")], join(&[&[("sasl", "scram_sha512")], &creds]), None),
            (vec![("tls", "enable")], join(&[&[("tls", "enable")], &full_tls]), None),
            (vec![("sasl", "none")], vec![("sasl", "plaintext")], None),
            (vec![("sasl", "plaintext")], join(&[&[("sasl", "foo")], &creds]), None),
            (vec![("tls", "disable")], vec![("tls", "enable"), ("cert", "ceert")], None),
            (vec![("tls", "enable")], vec![("tls", "disable"), ("cert", "ceert")], Some(("key", "key must be provided with cert"))),
            (vec![("tls", "disable")], vec![("tls", "foo")], None),
            // Empty metadata counts as absent.
            (vec![("sasl", " ")], vec![("sasl", "plaintext")], Some(("username", "no username given"))),
            // saslTokenProvider: checked whatever the mechanism, metadata first.
            (vec![], vec![("saslTokenProvider", "foo")], Some(("saslTokenProvider", "parameter \"saslTokenProvider\" value \"foo\" must be one of [bearer aws_msk_iam]"))),
            (vec![], join(&[&[("sasl", "plaintext"), ("saslTokenProvider", "bearer")], &creds]), None),
            (vec![("saslTokenProvider", "bearer")], vec![("saslTokenProvider", "foo")], None),
            // kerberosDisableFAST: a Go boolean from the TriggerAuthentication.
            (vec![], vec![("kerberosDisableFAST", "true")], None),
            (vec![], vec![("kerberosDisableFAST", "0")], None),
            (vec![], vec![("kerberosDisableFAST", "notabool")], Some(("kerberosDisableFAST", "unable to set param \"kerberosDisableFAST\" value \"notabool\": unable to parse boolean value \"notabool\": strconv.ParseBool: parsing \"notabool\": invalid syntax"))),
            // unsafeSsl is read from metadata only.
            (vec![], vec![("unsafeSsl", "notabool")], None),
            // OAUTHBEARER and GSSAPI are not supported yet; a malformed parameter KEDA
            // reads before its checks is still reported first.
            (vec![], join(&[&[("sasl", "oauthbearer"), ("scopes", "scope"), ("oauthTokenEndpointUri", "https://website.com"), ("tls", "disable")], &creds]), unsupported),
            (vec![], join(&[&[("sasl", "gssapi"), ("kerberosConfig", "<config>"), ("realm", "tst.com")], &creds]), unsupported),
            (vec![], vec![("sasl", "gssapi"), ("username", "admin"), ("keytab", "/path/to/keytab"), ("kerberosConfig", "<config>"), ("realm", "tst.com"), ("kerberosDisableFAST", "true")], unsupported),
            (vec![], vec![("sasl", "gssapi"), ("username", "admin"), ("keytab", "/path/to/keytab"), ("kerberosConfig", "<config>"), ("realm", "tst.com"), ("kerberosDisableFAST", "notabool")], Some(("kerberosDisableFAST", "unable to parse boolean value"))),
            (vec![], vec![("sasl", "oauthbearer"), ("saslTokenProvider", "aws_msk_iam!")], Some(("saslTokenProvider", "must be one of [bearer aws_msk_iam]"))),
            (vec![("sasl", "gssapi"), ("tls", "disable")], join(&[&creds, &[("kerberosConfig", "<config>"), ("realm", "test.com")], &full_tls]), unsupported),
            (vec![("sasl", "oauthbearer"), ("tls", "disable")], join(&[&creds, &[("oauthTokenEndpointUri", "https://website.com")]]), unsupported),
            (vec![], vec![("sasl", "oauthbearer"), ("saslTokenProvider", "aws_msk_iam"), ("tls", "enable")], Some(("sasl", "sasl \"oauthbearer\" with saslTokenProvider \"aws_msk_iam\" is not supported by eventscale yet"))),
            (vec![("sasl", "oauthbearer"), ("saslTokenProvider", "aws_msk_iam"), ("awsRegion", "eu-west-1")], vec![("tls", "enable")], Some(("sasl", "with saslTokenProvider \"aws_msk_iam\""))),
            // Only OAUTHBEARER reads the token provider: KEDA ignores it with another
            // mechanism, and so does eventscale.
            (vec![], join(&[&[("sasl", "scram_sha512"), ("saslTokenProvider", "aws_msk_iam")], &creds]), None),
            // keyPassword decrypts an encrypted PKCS#8 key (the decryption itself is tested
            // with real keys in tls::private_key); what it cannot apply to is named.
            (vec![], vec![("tls", "enable"), ("cert", "c"), ("key", "k"), ("keyPassword", "p")], Some(("keyPassword", "keyPassword: the key is not PEM"))),
            (vec![], vec![("tls", "enable"), ("cert", "c"), ("key", "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"), ("keyPassword", "p")], Some(("keyPassword", "is not encrypted, so keyPassword does not apply"))),
            (vec![], vec![("tls", "enable"), ("cert", "c"), ("key", "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nMAA=\n-----END EC PRIVATE KEY-----\n"), ("keyPassword", "p")], Some(("keyPassword", "legacy PEM encryption"))),
            // With TLS off (or without a key) KEDA never reads keyPassword.
            (vec![], vec![("tls", "disable"), ("cert", "c"), ("key", "k"), ("keyPassword", "p")], None),
            (vec![], vec![("tls", "enable"), ("ca", "caaa"), ("keyPassword", "p")], None),
        ];
        for (meta, auth, want) in cases {
            let mut m = BASE.to_vec();
            m.push(("topic", "t"));
            m.extend(meta.iter().copied());
            check(&format!("{meta:?} {auth:?}"), parse_with(&m, &auth), want);
        }
    }

    /// What the auth parameters turn into: trimmed mechanisms, the metadata's value over
    /// the TriggerAuthentication's, unsafeSsl from metadata only.
    #[test]
    fn auth_values() {
        let topic = [BASE[0], BASE[1], ("topic", "t")];
        let with = |meta: &[(&str, &str)], auth: &[(&str, &str)]| {
            let mut m = topic.to_vec();
            m.extend_from_slice(meta);
            parse_with(&m, auth).expect("parses").client
        };
        let creds = |mode: &'static str| vec![("sasl", mode), ("username", "u"), ("password", "p")];
        let plain = Some(Sasl::Plain {
            user: "u".into(),
            password: "p".into(),
        });
        let scram = |hash| {
            Some(Sasl::Scram {
                hash,
                user: "u".into(),
                password: "p".into(),
            })
        };
        assert_eq!(with(&[], &creds("plaintext\n")).sasl, plain);
        assert_eq!(
            with(&[], &creds("scram_sha256 ")).sasl,
            scram(ScramHash::Sha256)
        );
        assert_eq!(
            with(&[], &creds("scram_sha512\n")).sasl,
            scram(ScramHash::Sha512)
        );
        // The metadata wins.
        assert_eq!(
            with(&[("sasl", "scram_sha256")], &creds("scram_sha512")).sasl,
            scram(ScramHash::Sha256)
        );
        assert_eq!(with(&[("sasl", "none")], &creds("plaintext")).sasl, None);
        assert_eq!(
            with(&[("tls", "disable")], &[("tls", "enable"), ("ca", "CA")]).tls,
            None
        );
        let tls = with(&[("tls", "enable")], &[("tls", "disable"), ("ca", "CA")])
            .tls
            .expect("tls on");
        assert_eq!(tls.ca.as_deref(), Some("CA"));
        // unsafeSsl only from metadata.
        let tls = with(&[], &[("tls", "enable"), ("unsafeSsl", "true")])
            .tls
            .expect("tls on");
        assert!(!tls.unsafe_ssl);

        let m = parse_with(
            &[
                BASE[0],
                BASE[1],
                ("sasl", "scram_sha512"),
                ("tls", "enable"),
                ("unsafeSsl", "true"),
            ],
            &[("username", "u"), ("password", "p"), ("ca", "CA")],
        )
        .expect("parses");
        assert_eq!(m.client.sasl, scram(ScramHash::Sha512));
        let tls = m.client.tls.clone().expect("tls");
        assert!(tls.unsafe_ssl);
        assert_eq!(tls.ca.as_deref(), Some("CA"));
        // Secrets never reach Debug output.
        assert!(!format!("{:?}", m.client).contains("\"p\""));
    }

    /// KEDA's kafkaMetricIdentifiers, and the whole spec as the HPA gets it.
    #[test]
    fn metric_specs_match_keda() {
        let cases = [
            (0, vec![("topic", "my-topic")], "s0-kafka-my-topic", "10"),
            (1, vec![("topic", "my-topic")], "s1-kafka-my-topic", "10"),
            (1, vec![], "s1-kafka-my-group-topics", "10"),
            (
                2,
                vec![("topic", "orders.v1"), ("lagThreshold", "5.0")],
                "s2-kafka-orders-v1",
                "5",
            ),
        ];
        for (index, extra, name, target) in cases {
            let trigger = ScaleTriggers {
                type_: "kafka".into(),
                metadata: map(&with_base(&extra)).into(),
                ..Default::default()
            };
            let s = KafkaScaler::new(TriggerContext {
                index,
                trigger: &trigger,
                auth: &AuthParams::new(),
                namespace: "ns",
                name: "so",
                client: None,
                as_metric_source: false,
                pools: &crate::pools::Pools::default(),
            })
            .expect("valid trigger");
            assert_eq!(s.metric_spec().name, name);
            assert_eq!(s.metric_spec().target, target);
        }
    }

    fn meta(extra: &[(&str, &str)]) -> KafkaMetadata {
        let mut e = vec![("topic", "t"), ("lagThreshold", "5")];
        e.extend_from_slice(extra);
        parse_base(&e).expect("parses")
    }

    fn p(partition: i32, committed: i64, latest: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            topic: "t".into(),
            partition,
            committed,
            latest,
        }
    }

    fn lag(m: &KafkaMetadata, offsets: &[PartitionOffsets]) -> TotalLag {
        total_lag(m, offsets, &mut PreviousOffsets::new())
    }

    #[test]
    fn lag_per_partition_follows_keda() {
        let m = meta(&[]);
        // Lag is latest - committed, summed.
        assert_eq!(lag(&m, &[p(0, 3, Some(10)), p(1, 0, Some(2))]).lag, 9);
        // No committed offset, latest policy: 1 each (to wake a consumer)...
        assert_eq!(
            lag(&m, &[p(0, -1, Some(10)), p(1, -1, Some(0))]),
            TotalLag {
                lag: 2,
                with_persistent: 2
            }
        );
        // ...or 0 with scaleToZeroOnInvalidOffset.
        let z = meta(&[("scaleToZeroOnInvalidOffset", "true")]);
        assert_eq!(lag(&z, &[p(0, -1, Some(10))]).lag, 0);
        // Earliest policy: the whole partition, or 0 with scaleToZeroOnInvalidOffset.
        let e = meta(&[
            ("offsetResetPolicy", "earliest"),
            ("allowIdleConsumers", "true"),
        ]);
        assert_eq!(lag(&e, &[p(0, -1, Some(10)), p(1, 4, Some(6))]).lag, 12);
        let ez = meta(&[
            ("offsetResetPolicy", "earliest"),
            ("scaleToZeroOnInvalidOffset", "true"),
        ]);
        assert_eq!(lag(&ez, &[p(0, -1, Some(10))]).lag, 0);
        // A partition the broker gave no latest offset for is left out entirely.
        assert_eq!(lag(&m, &[p(0, -1, None), p(1, 1, Some(3))]).lag, 2);
    }

    #[test]
    fn lag_is_capped_at_the_partition_count() {
        let m = meta(&[]);
        // 3 partitions × threshold 5 = 15 at most.
        let offs = [p(0, 0, Some(100)), p(1, 0, Some(0)), p(2, 0, Some(0))];
        assert_eq!(
            lag(&m, &offs),
            TotalLag {
                lag: 15,
                with_persistent: 100
            }
        );
        // Not with allowIdleConsumers.
        let idle = meta(&[("allowIdleConsumers", "true")]);
        assert_eq!(lag(&idle, &offs).lag, 100);
        // limitToPartitionsWithLag: only 1 partition has lag → 5.
        let only = meta(&[("limitToPartitionsWithLag", "true")]);
        assert_eq!(lag(&only, &offs).lag, 5);
        // Under the cap nothing changes: 12 / 5 = 2 ≤ 3.
        assert_eq!(
            lag(&m, &[p(0, 0, Some(12)), p(1, 0, Some(0)), p(2, 0, Some(0))]).lag,
            12
        );
    }

    /// Offsets a broker should never send still give a number, never a panic.
    #[test]
    fn hostile_offsets_do_not_overflow() {
        let m = meta(&[("allowIdleConsumers", "true")]);
        let t = lag(
            &m,
            &[p(0, i64::MIN + 1, Some(i64::MAX)), p(1, 0, Some(i64::MAX))],
        );
        assert_eq!(t.lag, i64::MAX);
        let capped = meta(&[("ensureEvenDistributionOfPartitions", "true")]);
        assert!(lag(&capped, &[p(0, 0, Some(i64::MAX))]).lag > 0);
        // No partitions at all: nothing to scale on.
        assert_eq!(
            lag(&capped, &[]),
            TotalLag {
                lag: 0,
                with_persistent: 0
            }
        );
    }

    #[test]
    fn even_distribution_rounds_up_to_a_factor() {
        assert_eq!(even_distribution_factor(12, 12, 5), 3);
        assert_eq!(even_distribution_factor(16, 12, 5), 4);
        assert_eq!(even_distribution_factor(26, 12, 5), 6);
        assert_eq!(even_distribution_factor(31, 12, 5), 12);
        assert_eq!(even_distribution_factor(0, 12, 5), 1);
        assert_eq!(even_distribution_factor(1000, 12, 5), 12);
        assert_eq!(even_distribution_factor(5, 7, 5), 1);
        assert_eq!(even_distribution_factor(6, 7, 5), 7);
        let m = meta(&[("ensureEvenDistributionOfPartitions", "true")]);
        // 6 partitions at threshold 5, all the lag on partition 0: lag 16 would take 4
        // consumers, which do not divide 6, so 6 (30); lag 7 takes 2, which do (10).
        for (on_first, want) in [(16, 30), (7, 10)] {
            let offs: Vec<_> = (0..6)
                .map(|i| p(i, 0, Some(if i == 0 { on_first } else { 0 })))
                .collect();
            assert_eq!(lag(&m, &offs).lag, want, "lag {on_first}");
        }
    }

    #[test]
    fn persistent_lag_counts_for_activation_only() {
        let m = meta(&[
            ("excludePersistentLag", "true"),
            ("allowIdleConsumers", "true"),
        ]);
        let mut prev = PreviousOffsets::new();
        // First poll: no history, the lag counts.
        let first = total_lag(&m, &[p(0, 2, Some(10)), p(1, 5, Some(9))], &mut prev);
        assert_eq!(
            first,
            TotalLag {
                lag: 12,
                with_persistent: 12
            }
        );
        // Partition 0 did not move, partition 1 did: only partition 1 counts for scaling.
        let second = total_lag(&m, &[p(0, 2, Some(11)), p(1, 6, Some(9))], &mut prev);
        assert_eq!(
            second,
            TotalLag {
                lag: 3,
                with_persistent: 12
            }
        );
        // Partition 0 moves again: it counts again.
        let third = total_lag(&m, &[p(0, 3, Some(11)), p(1, 6, Some(9))], &mut prev);
        assert_eq!(
            third,
            TotalLag {
                lag: 8,
                with_persistent: 11
            }
        );
        // Without the option, nothing is remembered.
        let plain = meta(&[]);
        let mut none = PreviousOffsets::new();
        total_lag(&plain, &[p(0, 2, Some(10))], &mut none);
        assert!(none.is_empty());
    }

    /// Invariants over many random offset sets: the metric never exceeds the cap, never
    /// exceeds the uncapped lag unless rounding up for even distribution, and activation
    /// never sees less than scaling.
    #[test]
    fn invariants_over_random_offsets() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let options = [
            vec![],
            vec![("allowIdleConsumers", "true")],
            vec![("limitToPartitionsWithLag", "true")],
            vec![("ensureEvenDistributionOfPartitions", "true")],
            vec![("offsetResetPolicy", "earliest")],
            vec![("scaleToZeroOnInvalidOffset", "true")],
        ];
        for _ in 0..5000 {
            let opts = &options[next(options.len() as u64) as usize];
            let m = meta(opts);
            let n = 1 + next(8) as i32;
            let offs: Vec<_> = (0..n)
                .map(|i| {
                    let latest = next(200) as i64;
                    let committed = if next(5) == 0 {
                        -1
                    } else {
                        next(latest as u64 + 1) as i64
                    };
                    p(i, committed, Some(latest))
                })
                .collect();
            let t = lag(&m, &offs);
            assert!(t.lag >= 0, "{opts:?} {offs:?} {t:?}");
            assert!(t.with_persistent >= 0, "{opts:?} {offs:?} {t:?}");
            if !m.allow_idle_consumers {
                assert!(
                    t.lag / m.lag_threshold <= n as i64,
                    "{opts:?} {offs:?} {t:?}"
                );
            }
            if !m.ensure_even_distribution_of_partitions {
                assert!(t.lag <= t.with_persistent, "{opts:?} {offs:?} {t:?}");
            }
        }
    }
}
