//! Every array a broker's response declares must fit in the bytes that follow it, checked
//! before kafka-protocol decodes the response.
//!
//! kafka-protocol 0.18 reserves room for as many elements as an array's length field says
//! (`Vec::with_capacity(n)`) before it reads one. A response of a few bytes declaring 2^31
//! elements makes it ask for tens of GB; the allocation fails and the process aborts, taking
//! every ScaledObject's metrics with it (found by fuzzing `read_response`; the same bug is
//! reported upstream as kafka-protocol-rs pull requests 152, 161 and 200). This walks the
//! response as kafka-protocol reads it, for the responses this client decodes, and refuses
//! one whose arrays claim more elements than bytes remain (each element takes at least a
//! byte). What it accepts, kafka-protocol decodes with allocations bounded by the frame.
//! Once kafka-protocol bounds its own reservations this check can go.

use kafka_protocol::messages::ApiKey;

/// The rest of a response, read as kafka-protocol reads it, values discarded.
struct Walk<'a> {
    buf: &'a [u8],
    /// Compact lengths and tagged fields (the message's flexible versions).
    flexible: bool,
}

type Checked = Result<(), String>;

impl Walk<'_> {
    fn skip(&mut self, n: usize) -> Checked {
        match self.buf.get(n..) {
            Some(rest) => {
                self.buf = rest;
                Ok(())
            }
            None => Err(format!("{n} bytes expected, {} left", self.buf.len())),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let head = self
            .buf
            .first_chunk::<N>()
            .copied()
            .ok_or_else(|| format!("{N} bytes expected, {} left", self.buf.len()))?;
        self.buf = &self.buf[N..];
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, String> {
        self.bytes::<2>().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, String> {
        self.bytes::<4>().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Checked {
        self.skip(8)
    }

    fn boolean(&mut self) -> Checked {
        self.skip(1)
    }

    fn uuid(&mut self) -> Checked {
        self.skip(16)
    }

    /// kafka-protocol's unsigned varint: at most five bytes, high bits of the fifth lost.
    fn uvarint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = self.bytes::<1>()?;
            value |= u32::from(b & 0x7F) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// A string or byte string: compact (varint length + 1, 0 for null) in flexible
    /// versions, else an `i16` (strings) or `i32` (bytes) length, -1 for null.
    fn sized(&mut self, wide: bool) -> Checked {
        let len = if self.flexible {
            match self.uvarint()? {
                0 => return Ok(()),
                n => i64::from(n) - 1,
            }
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match len {
            -1 => Ok(()),
            n if n < 0 => Err(format!("negative length {n}")),
            n => self.skip(usize::try_from(n).map_err(|_| format!("length {n}"))?),
        }
    }

    fn string(&mut self) -> Checked {
        self.sized(false)
    }

    fn byte_string(&mut self) -> Checked {
        self.sized(true)
    }

    /// An array: its length, no more than the bytes left, then each element.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Checked) -> Checked {
        let n = if self.flexible {
            match self.uvarint()? {
                0 => return Ok(()),
                n => u64::from(n - 1),
            }
        } else {
            match self.i32()? {
                -1 => return Ok(()),
                n => u64::try_from(n).map_err(|_| format!("negative array length {n}"))?,
            }
        };
        if n > self.buf.len() as u64 {
            return Err(format!(
                "an array of {n} elements in the {} bytes left",
                self.buf.len()
            ));
        }
        (0..n).try_for_each(|_| element(self))
    }

    /// Tagged fields none of which kafka-protocol decodes as a structure (flexible versions).
    fn tags(&mut self) -> Checked {
        if !self.flexible {
            return Ok(());
        }
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }

    fn array_of_i32(&mut self) -> Checked {
        self.array(|w| w.i32().map(drop))
    }
}

fn api_versions(w: &mut Walk<'_>, v: i16) -> Checked {
    w.i16()?;
    w.array(|w| {
        w.skip(6)?;
        w.tags()
    })?;
    if v >= 1 {
        w.i32()?;
    }
    if !w.flexible {
        return Ok(());
    }
    // Tags 0 and 2 are arrays of features, decoded whatever size the tag declares.
    for _ in 0..w.uvarint()? {
        let tag = w.uvarint()?;
        let size = w.uvarint()?;
        match tag {
            0 | 2 => w.array(|w| {
                w.string()?;
                w.skip(4)?;
                w.tags()
            })?,
            1 => w.i64()?,
            3 => w.boolean()?,
            _ => w.skip(size as usize)?,
        }
    }
    Ok(())
}

fn metadata(w: &mut Walk<'_>, v: i16) -> Checked {
    if v >= 3 {
        w.i32()?;
    }
    w.array(|w| {
        w.i32()?;
        w.string()?;
        w.i32()?;
        if v >= 1 {
            w.string()?;
        }
        w.tags()
    })?;
    if v >= 2 {
        w.string()?;
    }
    if v >= 1 {
        w.i32()?;
    }
    w.array(|w| {
        w.i16()?;
        w.string()?;
        if v >= 10 {
            w.uuid()?;
        }
        if v >= 1 {
            w.boolean()?;
        }
        w.array(|w| {
            w.i16()?;
            w.i32()?;
            w.i32()?;
            if v >= 7 {
                w.i32()?;
            }
            w.array_of_i32()?;
            w.array_of_i32()?;
            if v >= 5 {
                w.array_of_i32()?;
            }
            w.tags()
        })?;
        if v >= 8 {
            w.i32()?;
        }
        w.tags()
    })?;
    if (8..=10).contains(&v) {
        w.i32()?;
    }
    if v >= 13 {
        w.i16()?;
    }
    w.tags()
}

fn find_coordinator(w: &mut Walk<'_>, v: i16) -> Checked {
    if v >= 1 {
        w.i32()?;
    }
    if v <= 3 {
        w.i16()?;
        if v >= 1 {
            w.string()?;
        }
        w.i32()?;
        w.string()?;
        w.i32()?;
    } else {
        w.array(|w| {
            w.string()?;
            w.i32()?;
            w.string()?;
            w.i32()?;
            w.i16()?;
            w.string()?;
            w.tags()
        })?;
    }
    w.tags()
}

fn offset_fetch(w: &mut Walk<'_>, v: i16) -> Checked {
    if v >= 3 {
        w.i32()?;
    }
    if v <= 7 {
        w.array(|w| {
            w.string()?;
            w.array(|w| {
                w.i32()?;
                w.i64()?;
                if v >= 5 {
                    w.i32()?;
                }
                w.string()?;
                w.i16()?;
                w.tags()
            })?;
            w.tags()
        })?;
        if v >= 2 {
            w.i16()?;
        }
    } else {
        w.array(|w| {
            w.string()?;
            w.array(|w| {
                if v >= 10 {
                    w.uuid()?;
                } else {
                    w.string()?;
                }
                w.array(|w| {
                    w.i32()?;
                    w.i64()?;
                    w.i32()?;
                    w.string()?;
                    w.i16()?;
                    w.tags()
                })?;
                w.tags()
            })?;
            w.i16()?;
            w.tags()
        })?;
    }
    w.tags()
}

fn list_offsets(w: &mut Walk<'_>, v: i16) -> Checked {
    if v >= 2 {
        w.i32()?;
    }
    w.array(|w| {
        w.string()?;
        w.array(|w| {
            w.i32()?;
            w.i16()?;
            w.i64()?;
            w.i64()?;
            if v >= 4 {
                w.i32()?;
            }
            w.tags()
        })?;
        w.tags()
    })?;
    w.tags()
}

fn sasl_handshake(w: &mut Walk<'_>, _v: i16) -> Checked {
    w.i16()?;
    w.array(|w| w.string())
}

fn sasl_authenticate(w: &mut Walk<'_>, v: i16) -> Checked {
    w.i16()?;
    w.string()?;
    w.byte_string()?;
    if v >= 1 {
        w.i64()?;
    }
    w.tags()
}

/// Check the body (after the response header) of the response to API `key` version `v`.
/// Trailing bytes are left to the decoder (which ignores them).
pub(crate) fn check(key: i16, v: i16, body: &[u8]) -> Result<(), String> {
    let (walk, flexible_from): (fn(&mut Walk<'_>, i16) -> Checked, i16) =
        match ApiKey::try_from(key) {
            Ok(ApiKey::ApiVersions) => (api_versions, 3),
            Ok(ApiKey::Metadata) => (metadata, 9),
            Ok(ApiKey::FindCoordinator) => (find_coordinator, 3),
            Ok(ApiKey::OffsetFetch) => (offset_fetch, 6),
            Ok(ApiKey::ListOffsets) => (list_offsets, 6),
            Ok(ApiKey::SaslHandshake) => (sasl_handshake, i16::MAX),
            Ok(ApiKey::SaslAuthenticate) => (sasl_authenticate, 2),
            _ => {
                return Err(format!(
                    "no length check for the responses to API key {key}"
                ))
            }
        };
    walk(
        &mut Walk {
            buf: body,
            flexible: v >= flexible_from,
        },
        v,
    )
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::api_versions_response::{
        ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
    };
    use kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, HeaderVersion, Request, StrBytes};

    use crate::kafka::{ours, read_response, KafkaError};

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    /// `body` framed as a broker sends it: size, header with correlation id 1, body.
    fn framed<R: Request>(v: i16, body: &[u8]) -> Vec<u8> {
        let mut header = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(1)
            .encode(&mut header, R::Response::header_version(v))
            .expect("a header");
        let mut frame = BytesMut::new();
        frame.put_i32((header.len() + body.len()) as i32);
        frame.extend_from_slice(&header);
        frame.extend_from_slice(body);
        frame.to_vec()
    }

    fn read<R: Request>(v: i16, frame: &[u8]) -> Result<R::Response, KafkaError> {
        let mut stream = frame;
        futures::executor::block_on(read_response::<R>(&mut stream, "broker:9092", v, 1))
    }

    /// A response kafka-protocol encodes passes the check and reads back the same.
    fn round_trip<R: Request>(v: i16, resp: &R::Response)
    where
        R::Response: PartialEq + std::fmt::Debug,
    {
        let mut body = BytesMut::new();
        resp.encode(&mut body, v)
            .unwrap_or_else(|e| panic!("API key {} v{v}: {e}", R::KEY));
        match read::<R>(v, &framed::<R>(v, &body)) {
            Ok(back) => assert_eq!(&back, resp, "API key {} v{v}", R::KEY),
            Err(e) => panic!("API key {} v{v}: {e}", R::KEY),
        }
    }

    fn versions<R: Request>() -> std::ops::RangeInclusive<i16> {
        let r = ours::<R>();
        r.min..=r.max
    }

    #[test]
    fn every_response_and_version_the_client_reads_passes() {
        for v in 0..=4 {
            let mut resp = ApiVersionsResponse::default().with_api_keys(vec![
                ApiVersion::default().with_api_key(3).with_max_version(12),
                ApiVersion::default().with_api_key(9).with_max_version(9),
            ]);
            if v >= 3 {
                resp = resp
                    .with_supported_features(vec![SupportedFeatureKey::default()
                        .with_name(s("metadata.version"))
                        .with_max_version(20)])
                    .with_finalized_features_epoch(4)
                    .with_finalized_features(vec![FinalizedFeatureKey::default()
                        .with_name(s("metadata.version"))
                        .with_max_version_level(20)]);
            }
            round_trip::<ApiVersionsRequest>(v, &resp);
        }
        for v in versions::<MetadataRequest>() {
            let partition = MetadataResponsePartition::default()
                .with_partition_index(2)
                .with_leader_id(BrokerId(1))
                .with_replica_nodes([1, 2, 3].map(BrokerId).to_vec())
                .with_isr_nodes([1, 2].map(BrokerId).to_vec())
                .with_offline_replicas(if v >= 5 { vec![BrokerId(3)] } else { vec![] });
            let resp = MetadataResponse::default()
                .with_brokers(vec![
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(1))
                        .with_host(s("kafka-0"))
                        .with_port(9092),
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(2))
                        .with_host(s("kafka-1"))
                        .with_port(9092),
                ])
                .with_cluster_id((v >= 2).then(|| s("cluster")))
                .with_topics(vec![MetadataResponseTopic::default()
                    .with_name(Some(TopicName(s("orders"))))
                    .with_partitions(vec![partition.clone(), partition])]);
            round_trip::<MetadataRequest>(v, &resp);
        }
        for v in versions::<FindCoordinatorRequest>() {
            let resp = FindCoordinatorResponse::default()
                .with_node_id(BrokerId(1))
                .with_host(s("kafka-0"))
                .with_port(9092);
            round_trip::<FindCoordinatorRequest>(v, &resp);
        }
        for v in versions::<OffsetFetchRequest>() {
            let resp = if v >= 8 {
                let partition = OffsetFetchResponsePartitions::default()
                    .with_partition_index(1)
                    .with_committed_offset(42)
                    .with_metadata(Some(s("")));
                OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default(
                )
                .with_group_id(GroupId(s("workers")))
                .with_topics(vec![OffsetFetchResponseTopics::default()
                    .with_name(TopicName(s("orders")))
                    .with_partitions(vec![partition.clone(), partition])])])
            } else {
                let partition = OffsetFetchResponsePartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(42)
                    .with_metadata(Some(s("")));
                OffsetFetchResponse::default()
                    .with_topics(vec![OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s("orders")))
                        .with_partitions(vec![partition.clone(), partition])])
            };
            round_trip::<OffsetFetchRequest>(v, &resp);
        }
        for v in versions::<ListOffsetsRequest>() {
            let partition = ListOffsetsPartitionResponse::default()
                .with_partition_index(1)
                .with_offset(1000);
            let resp = ListOffsetsResponse::default().with_topics(vec![
                ListOffsetsTopicResponse::default()
                    .with_name(TopicName(s("orders")))
                    .with_partitions(vec![partition.clone(), partition]),
            ]);
            round_trip::<ListOffsetsRequest>(v, &resp);
        }
        for v in versions::<SaslHandshakeRequest>() {
            let resp = SaslHandshakeResponse::default()
                .with_mechanisms(vec![s("PLAIN"), s("SCRAM-SHA-512")]);
            round_trip::<SaslHandshakeRequest>(v, &resp);
        }
        for v in versions::<SaslAuthenticateRequest>() {
            let resp = SaslAuthenticateResponse::default()
                .with_error_message(Some(s("")))
                .with_auth_bytes(bytes::Bytes::from_static(b"r=nonce,s=c2FsdA==,i=4096"));
            round_trip::<SaslAuthenticateRequest>(v, &resp);
        }
    }

    /// A few bytes claiming 2^31 elements (fixed-size length) or 2^32 - 2 (compact length)
    /// are refused before kafka-protocol reserves room for them (which aborted the process).
    #[test]
    fn an_array_longer_than_the_response_is_an_error_not_an_abort() {
        // ListOffsets v1: topics array of i32::MAX elements.
        let frame = framed::<ListOffsetsRequest>(1, &i32::MAX.to_be_bytes());
        let err = read::<ListOffsetsRequest>(1, &frame).expect_err("refused");
        assert!(
            matches!(&err, KafkaError::Protocol { message, .. }
                if message.contains("an array of 2147483647 elements in the 0 bytes left")),
            "{err}"
        );
        // Metadata v12: throttle time, then brokers as a compact array of u32::MAX - 1.
        let frame = framed::<MetadataRequest>(12, &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1]);
        let err = read::<MetadataRequest>(12, &frame).expect_err("refused");
        assert!(
            err.to_string().contains("an array of 4294967294 elements"),
            "{err}"
        );
        // What the fuzzer found: an OffsetFetch v6 answer whose partitions claim 40 GB.
        let found = [
            0x00, 0x00, 0x00, 0x31, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x18, 0x01, 0x01, 0x01,
            0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0xff, 0x24, 0x06, 0x0a, 0x93, 0x93, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0x01, 0x01, 0x01, 0x01, 0x00, 0x01, 0x10, 0x00, 0x00, 0x0a, 0x04, 0x01,
        ];
        assert!(read::<OffsetFetchRequest>(6, &found).is_err());
    }

    #[test]
    fn a_short_or_oversized_frame_is_an_error() {
        let frame = framed::<ListOffsetsRequest>(1, &0i32.to_be_bytes());
        for cut in 0..frame.len() {
            assert!(
                read::<ListOffsetsRequest>(1, &frame[..cut]).is_err(),
                "{cut} bytes"
            );
        }
        assert!(read::<ListOffsetsRequest>(1, &frame).is_ok());
        let huge = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1];
        let err = read::<ListOffsetsRequest>(1, &huge).expect_err("refused");
        assert!(err.to_string().contains("bad response length"), "{err}");
    }
}
