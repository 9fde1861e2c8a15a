//! Shared by the test binaries that use the Kafka brokers of `e2e/sources.sh`: the
//! independent client (`e2e/kafka_tool.py`, librdkafka) that creates topics, produces
//! records one per batch and commits group offsets. Included with `#[path]` beside
//! `sources.rs`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;

/// A name no earlier run used (the brokers keep their in-memory state while they run).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Run the tool against `bootstrap` with `security` flags (`--ca`, `--sasl-mechanism`...).
pub fn tool_at(
    env: &BTreeMap<String, String>,
    bootstrap: &str,
    security: &[&str],
    args: &[&str],
) -> String {
    let program = env
        .get("EVENTSCALE_KAFKA_TOOL")
        .expect("sources.sh env names EVENTSCALE_KAFKA_TOOL");
    let out = Command::new(program)
        .args(["--bootstrap", bootstrap])
        .args(security)
        .args(args)
        .output()
        .expect("the kafka tool runs");
    assert!(
        out.status.success(),
        "kafka tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A new topic at `bootstrap` with `partitions` partitions and `records[i]` records in
/// partition i.
pub fn topic_at(
    env: &BTreeMap<String, String>,
    bootstrap: &str,
    security: &[&str],
    partitions: usize,
    records: &[usize],
) -> String {
    let topic = unique("t");
    let partitions = partitions.to_string();
    tool_at(
        env,
        bootstrap,
        security,
        &["create-topic", &topic, "--partitions", &partitions],
    );
    for (p, n) in records.iter().enumerate().filter(|(_, n)| **n > 0) {
        let (p, n) = (p.to_string(), n.to_string());
        tool_at(
            env,
            bootstrap,
            security,
            &["produce", &topic, "--partition", &p, "--count", &n],
        );
    }
    topic
}

/// Commit `offset` for `group` on `topic`'s `partition` at `bootstrap`.
pub fn commit_at(
    env: &BTreeMap<String, String>,
    bootstrap: &str,
    security: &[&str],
    (group, topic): (&str, &str),
    partition: i32,
    offset: i64,
) {
    let (p, o) = (partition.to_string(), offset.to_string());
    tool_at(
        env,
        bootstrap,
        security,
        &["commit", group, topic, "--partition", &p, "--offset", &o],
    );
}

/// [`topic_at`] on the plain broker.
pub fn topic_with(env: &BTreeMap<String, String>, partitions: usize, records: &[usize]) -> String {
    topic_at(
        env,
        &env["EVENTSCALE_KAFKA_BOOTSTRAP"],
        &[],
        partitions,
        records,
    )
}

/// [`commit_at`] on the plain broker.
pub fn commit(
    env: &BTreeMap<String, String>,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    commit_at(
        env,
        &env["EVENTSCALE_KAFKA_BOOTSTRAP"],
        &[],
        (group, topic),
        partition,
        offset,
    );
}
