//! What the scale loop last saw and did for each object, kept so a trace can answer "why
//! N replicas?" without asking any source again: the last poll of every trigger (value or
//! error, when, and whether it was asked here or of the replica polling its question), the
//! last activation decision with its inputs and the rule that fired, the last `/scale`
//! write, the last HPA read of each metric this replica served, and for a ScaledJob its
//! last decision. One entry per object, its strings bounded, dropped with the object's
//! runtime.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::activation::{Decision, Input};

/// Longest error kept, in bytes (a source's error can be a whole HTML page).
pub const MAX_ERROR: usize = 512;

/// `e` cut to [`MAX_ERROR`] bytes at a character boundary.
pub fn bounded(e: &str) -> String {
    if e.len() <= MAX_ERROR {
        return e.to_string();
    }
    let mut end = MAX_ERROR;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &e[..end])
}

/// Where a trigger's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Asked of the source by this replica.
    Live,
    /// Asked of the replica that polls the trigger's question (`useCachedMetrics`).
    Replica(String),
}

/// One trigger's answer in a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    /// Index in `spec.triggers`.
    pub index: usize,
    /// The value and activity, or the error.
    pub result: Result<(f64, bool), String>,
    /// Where it came from.
    pub source: Source,
}

impl SampleRecord {
    /// Trigger `index`'s answer in a poll, from `source`.
    pub fn of(index: usize, sample: &crate::poll::TriggerSample, source: Source) -> Self {
        Self {
            index,
            result: sample
                .result
                .as_ref()
                .map(|s| (s.value, s.active))
                .map_err(Clone::clone),
            source,
        }
    }
}

/// A poll of an object's triggers.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRecord {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// Every trigger asked.
    pub samples: Vec<SampleRecord>,
}

/// An activation decision and what it rested on.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// Its inputs (`last_active` as counted: the status's, or this replica's memory).
    pub input: Input,
    /// What it decided, and which rule.
    pub decision: Decision,
    /// `status.lastActiveTime` as the object had it (the input may be newer).
    pub status_last_active: Option<DateTime<Utc>>,
    /// The first failing trigger's error, when any failed.
    pub failure: Option<String>,
}

/// How a `/scale` write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written.
    Scaled,
    /// The target kept changing; the next poll decides again.
    Conflicts(u32),
    /// The write failed.
    Failed(String),
}

/// A write of the target's replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// From this count.
    pub from: i32,
    /// To this one.
    pub to: i32,
    /// Why, in the decision table's words.
    pub rule: crate::activation::Rule,
    /// How it ended.
    pub outcome: WriteOutcome,
}

/// How this replica answered an HPA read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// From the `useCachedMetrics` store.
    Cache,
    /// Asked of the source.
    Live,
    /// The source failing past the fallback's threshold: the fallback's value.
    Fallback,
    /// Answered by the owner replica.
    Forwarded(String),
    /// The `scalingModifiers` formula over the named triggers.
    Composite,
}

/// The last HPA read of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaRead {
    /// When.
    pub at: DateTime<Utc>,
    /// The value served, or the error.
    pub result: Result<f64, String>,
    /// How.
    pub served: Served,
}

/// A ScaledJob's last poll: its demand and decision.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// The triggers' combined demand.
    pub demand: crate::job_scaling::Demand,
    /// What the strategy made of it, when the Jobs could be counted.
    pub decision: Option<crate::job_scaling::Decision>,
    /// Jobs created by this poll.
    pub created: i64,
}

/// Everything kept for one object: about 90 bytes inline, the rarer parts boxed (one is
/// kept for every object a replica polls or serves).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// The last poll.
    pub poll: Option<PollRecord>,
    /// The last activation decision.
    pub decision: Option<Box<DecisionRecord>>,
    /// The last `/scale` write.
    pub write: Option<Box<WriteRecord>>,
    /// The last HPA read of each metric (lowercase name) served by this replica.
    pub hpa_reads: Vec<(Box<str>, HpaRead)>,
    /// A ScaledJob's last poll.
    pub job: Option<Box<JobRecord>>,
}

impl Record {
    /// The last HPA read of `metric` (any case).
    pub fn hpa_read(&self, metric: &str) -> Option<&HpaRead> {
        self.hpa_reads
            .iter()
            .find(|(m, _)| m.eq_ignore_ascii_case(metric))
            .map(|(_, r)| r)
    }
}

/// The records of every object, by (namespace, name).
#[derive(Debug, Default)]
pub struct TraceStore {
    /// By namespace, then name: looked up by `&str`, so keeping a record allocates only
    /// the first time.
    entries: Mutex<HashMap<String, HashMap<String, Record>>>,
}

/// Cut `e` to [`MAX_ERROR`] bytes in place.
fn bound(e: &mut String) {
    if e.len() > MAX_ERROR {
        *e = bounded(e);
    }
}

impl TraceStore {
    fn with(&self, ns: &str, name: &str, f: impl FnOnce(&mut Record)) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = entries.get_mut(ns).and_then(|names| names.get_mut(name)) {
            return f(r);
        }
        let mut r = Record::default();
        f(&mut r);
        entries
            .entry(ns.to_string())
            .or_default()
            .insert(name.to_string(), r);
    }

    /// Keep a poll of `ns/name` at `at` (its samples replace the last poll's, in place).
    pub fn poll(
        &self,
        ns: &str,
        name: &str,
        at: DateTime<Utc>,
        samples: impl IntoIterator<Item = SampleRecord>,
    ) {
        self.with(ns, name, |r| {
            let poll = r.poll.get_or_insert_with(|| PollRecord {
                at,
                samples: Vec::new(),
            });
            poll.at = at;
            poll.samples.clear();
            poll.samples.extend(samples.into_iter().map(|mut s| {
                if let Err(e) = &mut s.result {
                    bound(e);
                }
                s
            }));
        });
    }

    /// Keep a decision about `ns/name`.
    pub fn decision(&self, ns: &str, name: &str, mut d: DecisionRecord) {
        if let Some(f) = &mut d.failure {
            bound(f);
        }
        self.with(ns, name, |r| match &mut r.decision {
            Some(last) => **last = d,
            None => r.decision = Some(Box::new(d)),
        });
    }

    /// Keep a write of `ns/name`'s target.
    pub fn write(&self, ns: &str, name: &str, mut w: WriteRecord) {
        if let WriteOutcome::Failed(e) = &mut w.outcome {
            bound(e);
        }
        self.with(ns, name, |r| r.write = Some(Box::new(w)));
    }

    /// Keep an HPA read of `metric` of `ns/name`.
    pub fn hpa_read(&self, ns: &str, name: &str, metric: &str, mut read: HpaRead) {
        if let Err(e) = &mut read.result {
            bound(e);
        }
        self.with(ns, name, |r| {
            let full = r.hpa_reads.len() >= 64;
            match r
                .hpa_reads
                .iter_mut()
                .find(|(m, _)| m.eq_ignore_ascii_case(metric))
            {
                Some((_, last)) => *last = read,
                // A ScaledObject has a handful of metrics; a read of a name it does not
                // have is refused before it gets here.
                None if !full => r
                    .hpa_reads
                    .push((metric.to_ascii_lowercase().into_boxed_str(), read)),
                None => {}
            }
        });
    }

    /// Keep a ScaledJob's poll.
    pub fn job(&self, ns: &str, name: &str, job: JobRecord) {
        self.with(ns, name, |r| match &mut r.job {
            Some(last) => **last = job,
            None => r.job = Some(Box::new(job)),
        });
    }

    /// What is kept for `ns/name`.
    pub fn get(&self, ns: &str, name: &str) -> Option<Record> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
            .and_then(|names| names.get(name))
            .cloned()
    }

    /// Forget every object `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|ns, names| {
            names.retain(|name, _| keep(ns, name));
            !names.is_empty()
        });
    }

    /// How many objects have records.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    #[test]
    fn records_are_kept_per_object_replaced_and_forgotten() {
        let t = TraceStore::default();
        let poll = |v: f64| {
            [SampleRecord {
                index: 0,
                result: Ok((v, true)),
                source: Source::Live,
            }]
        };
        t.poll("a", "x", at(0), poll(1.0));
        t.poll("a", "x", at(1), poll(2.0));
        t.poll("b", "x", at(0), poll(3.0));
        let got = t.get("a", "x").and_then(|r| r.poll).expect("poll");
        assert_eq!((got.at, got.samples.len()), (at(1), 1));
        assert_eq!(got.samples[0].result, Ok((2.0, true)));
        assert_eq!(t.len(), 2);
        t.hpa_read(
            "a",
            "x",
            "S0-Cron",
            HpaRead {
                at: at(1),
                result: Ok(2.0),
                served: Served::Live,
            },
        );
        let r = t.get("a", "x").expect("record");
        assert!(r.poll.is_some(), "a read keeps the poll");
        assert_eq!(
            r.hpa_read("s0-cron").map(|h| &h.served),
            Some(&Served::Live)
        );
        t.retain(|ns, _| ns == "b");
        assert!(t.get("a", "x").is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn errors_are_bounded_at_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_ERROR + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("short"), "short");
        let t = TraceStore::default();
        t.write(
            "a",
            "x",
            WriteRecord {
                at: at(0),
                from: 0,
                to: 1,
                rule: crate::activation::Rule::Activate,
                outcome: WriteOutcome::Failed(long.clone()),
            },
        );
        let w = t.get("a", "x").and_then(|r| r.write).expect("write");
        assert!(matches!(w.outcome, WriteOutcome::Failed(e) if e.len() < 600));
    }

    #[test]
    fn hpa_reads_of_one_object_are_capped() {
        assert!(
            std::mem::size_of::<Record>() <= 96,
            "{}",
            std::mem::size_of::<Record>()
        );
        let t = TraceStore::default();
        for i in 0..100 {
            t.hpa_read(
                "a",
                "x",
                &format!("m{i}"),
                HpaRead {
                    at: at(0),
                    result: Ok(1.0),
                    served: Served::Cache,
                },
            );
        }
        assert_eq!(t.get("a", "x").expect("r").hpa_reads.len(), 64);
    }
}
