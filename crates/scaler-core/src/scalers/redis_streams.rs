//! The `redis-streams` trigger: a stream's pending entries for a consumer group, its
//! length, or the group's lag, as KEDA chooses among them:
//!
//! - `consumerGroup` and a non-zero `lagCount`: the group's lag (`XINFO GROUPS`, Redis 7
//!   and later; a group not made yet lags by the whole stream), target `lagCount`;
//! - `consumerGroup` alone: its pending entries (`XPENDING`), target `pendingEntriesCount`
//!   (default 5);
//! - no `consumerGroup`: the stream's length (`XLEN`), target `streamLength` (default 5).
//!
//! Active strictly above `activationLagCount` (default 0) in every mode. The connection is
//! the `redis` trigger's ([`super::redis::RedisConnection`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::params::Source::Meta;
use super::params::{Defaulted, Param, Required};
use super::redis::{Question, RedisClients, RedisConnection};
use super::{MetricSpec, Sample, Scaler, ScalerError, TriggerContext};
use crate::quantity::MilliQuantity;

/// `stream`.
const STREAM: Param<Required> = Param::new("stream").from(&[Meta]).required();
/// `consumerGroup`.
const CONSUMER_GROUP: Param = Param::new("consumerGroup").from(&[Meta]);
/// `pendingEntriesCount`: the target in the pending mode.
const PENDING_ENTRIES_COUNT: Param<Defaulted> =
    Param::new("pendingEntriesCount").from(&[Meta]).default("5");
/// `streamLength`: the target in the length mode.
const STREAM_LENGTH: Param<Defaulted> = Param::new("streamLength").from(&[Meta]).default("5");
/// `lagCount`: the target in the lag mode (and what chooses it).
const LAG_COUNT: Param<Defaulted> = Param::new("lagCount").from(&[Meta]).default("0");
/// `activationLagCount`: active strictly above this, in every mode.
const ACTIVATION_LAG_COUNT: Param<Defaulted> =
    Param::new("activationLagCount").from(&[Meta]).default("0");

/// Parsed `redis-streams` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStreamsMetadata {
    /// Where.
    pub connection: RedisConnection,
    /// The stream.
    pub stream: String,
    /// What is asked of it.
    pub question: Question,
    /// Target per replica.
    pub target: i64,
    /// Active strictly above this.
    pub activation_lag_count: i64,
}

impl RedisStreamsMetadata {
    /// Parse with KEDA's rules.
    pub fn parse(ctx: &TriggerContext<'_>) -> Result<Self, ScalerError> {
        let params = ctx.params();
        let stream = params.text(&STREAM)?.to_string();
        let pending = params.int(&PENDING_ENTRIES_COUNT)?;
        let length = params.int(&STREAM_LENGTH)?;
        let lag = params.int(&LAG_COUNT)?;
        let activation_lag_count = params.int(&ACTIVATION_LAG_COUNT)?;
        let connection = RedisConnection::parse(&params)?;
        let (question, target) = match params.text(&CONSUMER_GROUP)? {
            Some(group) if lag != 0 => (
                Question::Lag {
                    stream: stream.clone(),
                    group: group.to_string(),
                },
                lag,
            ),
            Some(group) => (
                Question::Pending {
                    stream: stream.clone(),
                    group: group.to_string(),
                },
                pending,
            ),
            None => (Question::StreamLength(stream.clone()), length),
        };
        Ok(Self {
            connection,
            stream,
            question,
            target,
            activation_lag_count,
        })
    }
}

/// The redis-streams scaler.
#[derive(Debug, Clone)]
pub struct RedisStreamsScaler {
    metadata: RedisStreamsMetadata,
    spec: MetricSpec,
    shared: Arc<RedisClients>,
}

impl RedisStreamsScaler {
    /// Parse and validate the trigger.
    pub fn new(ctx: TriggerContext<'_>) -> Result<Self, ScalerError> {
        let metadata = RedisStreamsMetadata::parse(&ctx)?;
        Ok(Self {
            spec: MetricSpec {
                name: ctx.metric_name(&format!("redis-streams-{}", metadata.stream)),
                target_type: ctx.target_type()?,
                target: MilliQuantity::from_value(metadata.target as f64),
            },
            metadata,
            shared: ctx.pools.redis.clone(),
        })
    }
}

#[async_trait]
impl Scaler for RedisStreamsScaler {
    fn scaler_type(&self) -> &'static str {
        "redis-streams"
    }

    fn metric_spec(&self) -> &MetricSpec {
        &self.spec
    }

    fn activation_threshold(&self) -> Option<f64> {
        Some(self.metadata.activation_lag_count as f64)
    }

    async fn sample(&self) -> Result<Sample, ScalerError> {
        let m = &self.metadata;
        let n = self.shared.ask(&m.connection, &m.question).await?;
        Ok(Sample {
            // An unknown lag (-1) is reported as 0, as KEDA reports negative values.
            value: n.max(0.0),
            active: n > m.activation_lag_count as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalers::test_support::with_ctx;

    fn parse(meta: &[(&str, &str)]) -> Result<(RedisStreamsMetadata, MetricSpec), ScalerError> {
        with_ctx("redis-streams", meta, &[], false, |ctx| {
            let m = RedisStreamsMetadata::parse(&ctx)?;
            let s = RedisStreamsScaler::new(ctx)?;
            Ok((m, s.spec))
        })
    }

    #[test]
    fn the_mode_follows_keda() {
        let base = [("address", "h:1"), ("stream", "my-stream")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut m = base.to_vec();
            m.extend_from_slice(extra);
            parse(&m).expect("valid")
        };
        let (m, spec) = with(&[]);
        assert_eq!(m.question, Question::StreamLength("my-stream".into()));
        assert_eq!(m.target, 5);
        assert_eq!(spec.name, "s1-redis-streams-my-stream");
        let (m, _) = with(&[("consumerGroup", "g")]);
        assert!(matches!(m.question, Question::Pending { .. }));
        assert_eq!(m.target, 5);
        let (m, _) = with(&[
            ("consumerGroup", "g"),
            ("pendingEntriesCount", "7"),
            ("lagCount", "0"),
        ]);
        assert!(matches!(m.question, Question::Pending { .. }));
        assert_eq!(m.target, 7);
        let (m, _) = with(&[
            ("consumerGroup", "g"),
            ("lagCount", "3"),
            ("activationLagCount", "1"),
        ]);
        assert!(matches!(m.question, Question::Lag { .. }));
        assert_eq!((m.target, m.activation_lag_count), (3, 1));
        // Without a group, lagCount and pendingEntriesCount play no part.
        let (m, _) = with(&[("lagCount", "3"), ("streamLength", "9")]);
        assert_eq!(
            (m.question.clone(), m.target),
            (Question::StreamLength("my-stream".into()), 9)
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (meta, field) in [
            (vec![("address", "h:1")], "stream"),
            (vec![("stream", "s")], "address"),
            (
                vec![("address", "h:1"), ("stream", "s"), ("lagCount", "junk")],
                "lagCount",
            ),
            (
                vec![
                    ("address", "h:1"),
                    ("stream", "s"),
                    ("pendingEntriesCount", "junk"),
                ],
                "pendingEntriesCount",
            ),
            (
                vec![
                    ("address", "h:1"),
                    ("stream", "s"),
                    ("streamLength", "junk"),
                ],
                "streamLength",
            ),
            (
                vec![
                    ("address", "h:1"),
                    ("stream", "s"),
                    ("databaseIndex", "junk"),
                ],
                "databaseIndex",
            ),
            (
                vec![("address", "h:1"), ("stream", "s"), ("enableTLS", "no")],
                "enableTLS",
            ),
        ] {
            let e = parse(&meta).expect_err(&format!("{meta:?}"));
            assert_eq!(e.param(), Some(field), "{meta:?}: {e}");
        }
    }
}
