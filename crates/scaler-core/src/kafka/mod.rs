//! A small Kafka client: just what the kafka scaler asks of a cluster (a consumer group's
//! committed offsets and the partitions' latest offsets), over plain TCP or TLS, with SASL
//! PLAIN or SCRAM. One client per distinct bootstrap list and security settings, shared by
//! every trigger; one connection per broker; identical questions in flight share one
//! answer.

mod conn;
mod lengths;
pub mod scram;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;

use crate::coalesce::Coalescer;
use conn::Conn;
/// The response framing and the versions this client asks for, public so that the response
/// decoding a broker drives can be fuzzed on its own (`fuzz/fuzz_targets/kafka_response.rs`).
pub use conn::{ours, read_response};
pub use scram::ScramHash;

/// One request, connecting included, may take this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// ListOffsets' timestamp for "the offset the next record will get".
const LATEST: i64 = -1;

/// TLS settings (from the trigger's authentication parameters).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsSettings {
    /// PEM CA certificates to trust instead of the system's.
    pub ca: Option<String>,
    /// PEM client certificate.
    pub cert: Option<String>,
    /// PEM client key.
    pub key: Option<String>,
    /// Skip verifying the broker's certificate.
    pub unsafe_ssl: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.cert.is_some())
            .field("unsafe_ssl", &self.unsafe_ssl)
            .finish()
    }
}

/// SASL authentication.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Sasl {
    /// SASL/PLAIN.
    Plain {
        /// User.
        user: String,
        /// Password.
        password: String,
    },
    /// SASL/SCRAM-SHA-256 or -512.
    Scram {
        /// The hash.
        hash: ScramHash,
        /// User.
        user: String,
        /// Password.
        password: String,
    },
}

impl Sasl {
    /// The SASL mechanism name the broker knows.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Sasl::Plain { .. } => "PLAIN",
            Sasl::Scram { hash, .. } => hash.mechanism(),
        }
    }
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = match self {
            Sasl::Plain { user, .. } | Sasl::Scram { user, .. } => user,
        };
        write!(f, "{} as {user:?}", self.mechanism())
    }
}

/// Where and how to connect: the key clients are shared by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientConfig {
    /// `host:port` of the bootstrap brokers.
    pub bootstrap: Vec<String>,
    /// TLS, when enabled.
    pub tls: Option<TlsSettings>,
    /// SASL, when enabled.
    pub sasl: Option<Sasl>,
}

/// A failed conversation with the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaError {
    /// The TCP connection or TLS handshake failed.
    #[error("connecting to kafka broker {broker}: {message}")]
    Connect {
        /// `host:port`.
        broker: String,
        /// Why.
        message: String,
    },
    /// Reading or writing failed on an open connection.
    #[error("kafka broker {broker}: {message}")]
    Io {
        /// `host:port`.
        broker: String,
        /// Why.
        message: String,
    },
    /// The broker said something this client cannot use.
    #[error("kafka broker {broker}: {message}")]
    Protocol {
        /// `host:port`.
        broker: String,
        /// Why.
        message: String,
    },
    /// SASL authentication failed.
    #[error("SASL authentication with kafka broker {broker} failed: {message}")]
    Auth {
        /// `host:port`.
        broker: String,
        /// Why.
        message: String,
    },
    /// No answer in time.
    #[error("kafka broker {broker}: no answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout {
        /// `host:port`.
        broker: String,
    },
    /// The cluster answered with an error, in KEDA's words.
    #[error("{0}")]
    Cluster(String),
    /// The TLS settings are unusable.
    #[error("{0}")]
    Config(String),
}

/// One partition's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset; -1 when it never committed one.
    pub committed: i64,
    /// The offset the next record will get (high watermark); `None` when the broker
    /// left the partition out of its answer.
    pub latest: Option<i64>,
}

/// What one question about a group returns: every partition asked about, in order.
pub type GroupOffsets = Vec<PartitionOffsets>;

/// The question: a group, its topic (all topics it committed to when `None`) and the
/// partitions to consider (all when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OffsetQuery {
    /// Consumer group.
    pub group: String,
    /// Topic, or every topic the group has committed offsets for.
    pub topic: Option<String>,
    /// Only these partitions (KEDA's partitionLimitation).
    pub partitions: Option<Vec<i32>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

/// A client for one cluster and one set of credentials.
pub struct KafkaClient {
    config: ClientConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Broker addresses by node id, from the last metadata answer.
    brokers: Mutex<HashMap<i32, String>>,
    /// One connection per broker address, used by one request at a time.
    conns: Mutex<HashMap<String, Slot>>,
    inflight: Arc<Coalescer<OffsetQuery, Result<Arc<GroupOffsets>, KafkaError>>>,
    /// Requests sent, for tests and metrics.
    requests: std::sync::atomic::AtomicU64,
    /// The bootstrap server to ask first.
    preferred: std::sync::atomic::AtomicUsize,
    /// When a scaler last used this client.
    last_used: Mutex<Instant>,
}

impl std::fmt::Debug for KafkaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaClient")
            .field("config", &self.config)
            .finish()
    }
}

/// A client no trigger has used for this long is closed (its ScaledObject was deleted, or
/// its credentials rotated): its connections and the credentials in its key go with it.
const IDLE_CLIENT: Duration = Duration::from_secs(15 * 60);

/// The Kafka clients of every kafka trigger (one per [`crate::pools::Pools`]): one per
/// configuration.
pub struct KafkaClients {
    clients: Mutex<HashMap<ClientConfig, Arc<KafkaClient>>>,
    /// When idle clients were last looked for.
    last_sweep: Mutex<Instant>,
}

impl Default for KafkaClients {
    fn default() -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }
}

impl std::fmt::Debug for KafkaClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaClients").finish_non_exhaustive()
    }
}

impl KafkaClients {
    /// Drop clients idle for [`IDLE_CLIENT`] that no scaler holds; at most once a minute.
    fn sweep_idle(&self) {
        {
            let mut last = lock(&self.last_sweep);
            if last.elapsed() < Duration::from_secs(60) {
                return;
            }
            *last = Instant::now();
        }
        lock(&self.clients)
            .retain(|_, c| Arc::strong_count(c) > 1 || lock(&c.last_used).elapsed() < IDLE_CLIENT);
    }

    /// The client shared by every trigger with this configuration.
    pub fn shared(&self, config: &ClientConfig) -> Result<Arc<KafkaClient>, KafkaError> {
        self.sweep_idle();
        if let Some(c) = lock(&self.clients).get(config) {
            *lock(&c.last_used) = Instant::now();
            return Ok(c.clone());
        }
        let client = Arc::new(KafkaClient::new(config)?);
        Ok(lock(&self.clients)
            .entry(config.clone())
            .or_insert(client)
            .clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn kafka_error(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}

impl KafkaClient {
    fn new(config: &ClientConfig) -> Result<KafkaClient, KafkaError> {
        let tls = config
            .tls
            .as_ref()
            .map(tls::client_config)
            .transpose()
            .map_err(KafkaError::Config)?;
        Ok(KafkaClient {
            config: config.clone(),
            tls,
            brokers: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            inflight: Arc::new(Coalescer::default()),
            requests: std::sync::atomic::AtomicU64::new(0),
            preferred: std::sync::atomic::AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
        })
    }

    /// How many requests this client has sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn slot(&self, addr: &str) -> Slot {
        lock(&self.conns)
            .entry(addr.to_string())
            .or_default()
            .clone()
    }

    /// Send the request `build` makes to the broker at `addr`, connecting when needed.
    /// The connection is out of its slot while in use, so a failed, timed-out or cancelled
    /// call drops it rather than leaving a half-read answer for the next request. One that
    /// had been idle (and may have been closed by the broker) gets one retry on a fresh
    /// connection, within the same deadline: waiting for the connection, the call and the
    /// retry together take at most [`REQUEST_TIMEOUT`], so a broker that stopped answering
    /// holds a metric read (and the HPA controller's worker waiting on it) for no longer.
    async fn request<R: Request>(
        &self,
        addr: &str,
        build: &(impl Fn(i16) -> R + Sync),
    ) -> Result<(i16, R::Response), KafkaError> {
        let slot = self.slot(addr);
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        // Waiting for the connection counts against the timeout too: a broker that stopped
        // answering must not queue every other question behind it for long.
        let mut idle = tokio::time::timeout_at(deadline, slot.lock())
            .await
            .map_err(|_| KafkaError::Timeout {
                broker: addr.to_string(),
            })?;
        let mut attempt = 0;
        loop {
            let existing = idle.take();
            let reused = existing.is_some();
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let call = async {
                let mut conn = match existing {
                    Some(c) => c,
                    None => Conn::open(addr, self.tls.as_ref(), self.config.sasl.as_ref()).await?,
                };
                let answer = conn.call(build).await?;
                Ok((conn, answer))
            };
            let result = match tokio::time::timeout_at(deadline, call).await {
                Ok(r) => r,
                Err(_) => Err(KafkaError::Timeout {
                    broker: addr.to_string(),
                }),
            };
            match result {
                Ok((conn, answer)) => {
                    *idle = Some(conn);
                    return Ok(answer);
                }
                // A connection closed while idle fails at once: once more on a new
                // connection, in what is left of the deadline. (One that timed out has
                // none left.)
                Err(e @ KafkaError::Io { .. }) if reused && attempt == 0 => {
                    tracing::debug!(broker = addr, error = %e, "reconnecting after an idle connection failed");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Send `req` to the first bootstrap broker that answers.
    async fn any<R: Request>(
        &self,
        build: &(impl Fn(i16) -> R + Sync),
    ) -> Result<R::Response, KafkaError> {
        let mut last = KafkaError::Config("no bootstrap servers".into());
        let n = self.config.bootstrap.len();
        // Start with the server that answered last time, so a dead first entry costs one
        // timeout, not one per question.
        let first = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        for i in (0..n).map(|i| (first + i) % n) {
            let addr = &self.config.bootstrap[i];
            match self.request(addr, build).await {
                Ok((_, r)) => {
                    self.preferred
                        .store(i, std::sync::atomic::Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e @ KafkaError::Auth { .. }) | Err(e @ KafkaError::Config(_)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn metadata(&self, topics: &[String]) -> Result<MetadataResponse, KafkaError> {
        let topics: Vec<MetadataRequestTopic> = topics
            .iter()
            .map(|t| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
            })
            .collect();
        // Versions before 4 cannot carry the flag (and always create missing topics when
        // the broker is configured so); from 4 on, never create a topic by asking about it.
        let build = |v: i16| {
            MetadataRequest::default()
                .with_topics(Some(topics.clone()))
                .with_allow_auto_topic_creation(v < 4)
        };
        let resp = self.any(&build).await?;
        let mut brokers = lock(&self.brokers);
        for b in &resp.brokers {
            brokers.insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        Ok(resp)
    }

    async fn coordinator(&self, group: &str) -> Result<String, KafkaError> {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let resp = self.any(&|_| req.clone()).await?;
        if let Some(e) = kafka_error(resp.error_code) {
            return Err(KafkaError::Cluster(format!(
                "error finding the coordinator of consumer group {group}: {e}"
            )));
        }
        Ok(format!("{}:{}", resp.host.as_str(), resp.port))
    }

    /// Committed offsets of `group` on `coordinator`: for `topics` (topic → partitions),
    /// or for every topic it committed to when `None`. Versions 8 and up ask by group,
    /// older ones by topic; both answers read the same.
    async fn committed(
        &self,
        coordinator: &str,
        group: &str,
        topics: Option<&BTreeMap<String, Vec<i32>>>,
    ) -> Result<BTreeMap<(String, i32), Result<i64, ResponseError>>, KafkaError> {
        let group_id = GroupId(StrBytes::from_string(group.to_string()));
        let build = |v: i16| {
            let req = OffsetFetchRequest::default();
            if v >= 8 {
                req.with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(group_id.clone())
                    .with_topics(topics.map(|t| {
                        t.iter()
                            .map(|(name, parts)| {
                                OffsetFetchRequestTopics::default()
                                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                                    .with_partition_indexes(parts.clone())
                            })
                            .collect()
                    }))])
            } else {
                req.with_group_id(group_id.clone())
                    .with_topics(topics.map(|t| {
                        t.iter()
                            .map(|(name, parts)| {
                                OffsetFetchRequestTopic::default()
                                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                                    .with_partition_indexes(parts.clone())
                            })
                            .collect()
                    }))
            }
        };
        let (v, resp) = self.request(coordinator, &build).await?;
        let failed = |e: ResponseError| {
            KafkaError::Cluster(format!("error listing consumer group offsets: {e}"))
        };
        let offset = |code: i16, offset: i64| match kafka_error(code) {
            None => Ok(offset),
            Some(e) => Err(e),
        };
        let mut out = BTreeMap::new();
        if v >= 8 {
            let g = resp.groups.first().ok_or_else(|| {
                KafkaError::Cluster(format!(
                    "error listing consumer group offsets: no answer for group {group}"
                ))
            })?;
            if let Some(e) = kafka_error(g.error_code) {
                return Err(failed(e));
            }
            for t in &g.topics {
                for p in &t.partitions {
                    out.insert(
                        (t.name.to_string(), p.partition_index),
                        offset(p.error_code, p.committed_offset),
                    );
                }
            }
        } else {
            if let Some(e) = kafka_error(resp.error_code) {
                return Err(failed(e));
            }
            for t in &resp.topics {
                for p in &t.partitions {
                    out.insert(
                        (t.name.to_string(), p.partition_index),
                        offset(p.error_code, p.committed_offset),
                    );
                }
            }
        }
        Ok(out)
    }

    /// Latest offsets of `partitions` (topic, partition, leader), one request per leader,
    /// all leaders at once.
    async fn latest(
        &self,
        partitions: &[(String, i32, i32)],
    ) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
        for (topic, partition, leader) in partitions {
            by_leader
                .entry(*leader)
                .or_default()
                .entry(topic)
                .or_default()
                .push(*partition);
        }
        let calls = by_leader.into_iter().map(|(leader, topics)| async move {
            let addr = lock(&self.brokers).get(&leader).cloned().ok_or_else(|| {
                KafkaError::Cluster(format!(
                    "the leader {leader} of a partition is not among the brokers the cluster listed"
                ))
            })?;
            let req = ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, parts)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(p)
                                                .with_current_leader_epoch(-1)
                                                .with_timestamp(LATEST)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            let (_, resp) = self.request(&addr, &|_| req.clone()).await?;
            let mut out = Vec::new();
            for t in &resp.topics {
                for p in &t.partitions {
                    if let Some(e) = kafka_error(p.error_code) {
                        return Err(KafkaError::Cluster(format!(
                            "error listing the latest offset of topic {} partition {}: {e}",
                            t.name.as_str(),
                            p.partition_index
                        )));
                    }
                    out.push(((t.name.to_string(), p.partition_index), p.offset));
                }
            }
            Ok::<_, KafkaError>(out)
        });
        let mut latest = BTreeMap::new();
        for r in join_all(calls).await {
            latest.extend(r?);
        }
        Ok(latest)
    }

    /// Answer `q`: the partitions it covers with their committed and latest offsets.
    /// Identical questions asked at the same time share one round of requests.
    pub async fn group_offsets(
        self: &Arc<Self>,
        q: &OffsetQuery,
    ) -> Result<Arc<GroupOffsets>, KafkaError> {
        let this = self.clone();
        let query = q.clone();
        self.inflight
            .run(
                q.clone(),
                async move { this.ask(&query).await.map(Arc::new) },
            )
            .await
            .0
    }

    async fn ask(&self, q: &OffsetQuery) -> Result<GroupOffsets, KafkaError> {
        let coordinator = self.coordinator(&q.group).await?;
        let topics: Vec<String> = match &q.topic {
            Some(t) => vec![t.clone()],
            None => {
                let all = self.committed(&coordinator, &q.group, None).await?;
                let mut names: Vec<String> = all.into_keys().map(|(t, _)| t).collect();
                names.dedup();
                names
            }
        };
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let meta = self.metadata(&topics).await?;
        if q.topic.is_some() && meta.topics.len() != 1 {
            return Err(KafkaError::Cluster(format!(
                "expected only 1 topic metadata, got {}",
                meta.topics.len()
            )));
        }
        let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        let mut leaders = Vec::new();
        for t in &meta.topics {
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            if let Some(e) = kafka_error(t.error_code) {
                return Err(KafkaError::Cluster(format!(
                    "error describing topics: {e} (topic {name:?})"
                )));
            }
            let mut parts: Vec<i32> = t
                .partitions
                .iter()
                .filter(|p| {
                    q.partitions
                        .as_ref()
                        .is_none_or(|only| only.contains(&p.partition_index))
                })
                .map(|p| {
                    leaders.push((name.clone(), p.partition_index, p.leader_id.0));
                    p.partition_index
                })
                .collect();
            if parts.is_empty() {
                return Err(KafkaError::Cluster(format!(
                    "expected at least one active partition within the topic '{name}'"
                )));
            }
            parts.sort_unstable();
            wanted.insert(name, parts);
        }
        let (committed, latest) = futures::join!(
            self.committed(&coordinator, &q.group, Some(&wanted)),
            self.latest(&leaders)
        );
        let (committed, latest) = (committed?, latest?);
        let mut out = Vec::new();
        for (topic, parts) in wanted {
            for partition in parts {
                let key = (topic.clone(), partition);
                // A partition the leader left out of its answer is left out here too (as
                // KEDA's loop over the latest offsets leaves it out).
                let Some(&latest) = latest.get(&key) else {
                    continue;
                };
                let committed = match committed.get(&key) {
                    None => {
                        return Err(KafkaError::Cluster(format!(
                            "error finding offset block for topic {topic} and partition {partition}"
                        )))
                    }
                    Some(Err(e)) => {
                        return Err(KafkaError::Cluster(format!(
                            "error finding offset block for topic {topic} and partition {partition}: {e}"
                        )))
                    }
                    Some(Ok(o)) => *o,
                };
                out.push(PartitionOffsets {
                    latest: Some(latest),
                    topic: key.0,
                    partition,
                    committed,
                });
            }
        }
        Ok(out)
    }
}
