//! Kafka responses from a hostile broker: the bytes the client reads after each request it
//! sends (size prefix, response header, body), decoded by the client's own framing
//! (`scaler_core::kafka::read_response`) for each request type and version it speaks.
//! Never a panic or an abort (an array declaring billions of elements in a few bytes made
//! kafka-protocol reserve tens of GB: crates/scaler-core/src/kafka/lengths.rs); a response that
//! reads, encoded again and sent as a frame, reads the same.
//!
//! Input: one byte picks the request (ApiVersions, Metadata, FindCoordinator,
//! OffsetFetch, ListOffsets, SaslHandshake, SaslAuthenticate), one byte the version
//! within the range the client asks for, the rest is what the broker sends. The request's
//! correlation id is 1.
#![no_main]

use std::fmt::Debug;

use bytes::{BufMut, BytesMut};
use eventscale_fuzz::block_on;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest,
    OffsetFetchRequest, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, Request};
use libfuzzer_sys::fuzz_target;
use scaler_core::kafka::{ours, read_response};

const CORRELATION: i32 = 1;

fn answer<R: Request>(version: u8, mut stream: &[u8])
where
    R::Response: PartialEq + Debug,
{
    let range = ours::<R>();
    // The client opens every connection with ApiVersions v0.
    let v = if R::KEY == ApiKey::ApiVersions as i16 {
        0
    } else {
        let span = i32::from(range.max) - i32::from(range.min) + 1;
        (i32::from(range.min) + i32::from(version) % span) as i16
    };
    let Ok(resp) = block_on(read_response::<R>(&mut stream, "fuzz:9092", v, CORRELATION)) else {
        return;
    };
    let mut body = BytesMut::new();
    if resp.encode(&mut body, v).is_err() {
        // Some decoded values have no encoding in this version (a field the version lacks
        // set to a non-default); nothing more to compare.
        return;
    }
    // kafka-protocol counts a tag number above 2^31 (kept as a negative key) without
    // writing it, so that its output disagrees with its own size: nothing to compare then.
    // (Decoding that output with kafka-protocol directly, past the client's checks, aborts
    // as hostile bytes would.)
    if resp.compute_size(v).ok() != Some(body.len()) {
        return;
    }
    // Sent back as a well-formed frame, the response passes the client's checks and reads
    // the same: the length check accepts what kafka-protocol itself writes.
    let mut header = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(CORRELATION)
        .encode(&mut header, R::Response::header_version(v))
        .unwrap_or_else(|e| panic!("encoding a response header: {e}"));
    let mut frame = BytesMut::new();
    frame.put_i32((header.len() + body.len()) as i32);
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&body);
    let mut again: &[u8] = &frame;
    match block_on(read_response::<R>(&mut again, "fuzz:9092", v, CORRELATION)) {
        Ok(back) => assert_eq!(back, resp, "API key {} v{v}", R::KEY),
        Err(e) => panic!(
            "API key {} v{v}: the re-encoded response was refused: {e}",
            R::KEY
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let [which, version, stream @ ..] = data else {
        return;
    };
    match which % 7 {
        0 => answer::<ApiVersionsRequest>(*version, stream),
        1 => answer::<MetadataRequest>(*version, stream),
        2 => answer::<FindCoordinatorRequest>(*version, stream),
        3 => answer::<OffsetFetchRequest>(*version, stream),
        4 => answer::<ListOffsetsRequest>(*version, stream),
        5 => answer::<SaslHandshakeRequest>(*version, stream),
        _ => answer::<SaslAuthenticateRequest>(*version, stream),
    }
});
