//! A trigger's `metadata`: KEDA's `map[string]string`, kept as a sorted list.
//!
//! A `BTreeMap<String, String>` allocates a node for eleven entries whatever it holds
//! (544 bytes for a trigger's usual three to six parameters), and a `String` per name and
//! value; with 100,000 ScaledObjects in the store those were most of each one's
//! allocations. This keeps only the entries, sorted by name, in one allocation: names and
//! values of up to 24 bytes (nearly all of them) are stored inline ([`CompactString`]).
//! It has the reading API of a map (`get`, `contains_key`, `iter`, `keys`, ...) over
//! `&str`, the same JSON (an object, keys in order) and the same schema.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A trigger's parameters by name, sorted by name, each name once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TriggerMetadata(Vec<(CompactString, CompactString)>);

impl TriggerMetadata {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.0[i].1.as_str())
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Set `key` to `value`; the value it had.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Option<String> {
        let value = CompactString::from(value.as_ref());
        match self.find(key.as_ref()) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value).into_string()),
            Err(i) => {
                self.0.insert(i, (CompactString::from(key.as_ref()), value));
                None
            }
        }
    }

    /// Unset `key`; the value it had.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.find(key)
            .ok()
            .map(|i| self.0.remove(i).1.into_string())
    }

    /// The parameters in name order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The names in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// How many parameters are set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameters as a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl FromIterator<(String, String)> for TriggerMetadata {
    /// Later entries win, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut all: Vec<(CompactString, CompactString)> = iter
            .into_iter()
            .map(|(k, v)| (CompactString::from(k), CompactString::from(v)))
            .collect();
        // Stable: of equal names the last one is kept below.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(CompactString, CompactString)> = Vec::with_capacity(all.len());
        for (k, v) in all {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.shrink_to_fit();
        Self(out)
    }
}

impl<const N: usize> From<[(String, String); N]> for TriggerMetadata {
    fn from(entries: [(String, String); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for TriggerMetadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        map.into_iter().collect()
    }
}

impl From<TriggerMetadata> for BTreeMap<String, String> {
    fn from(m: TriggerMetadata) -> Self {
        m.to_map()
    }
}

impl IntoIterator for TriggerMetadata {
    type Item = (String, String);
    type IntoIter = std::iter::Map<
        std::vec::IntoIter<(CompactString, CompactString)>,
        fn((CompactString, CompactString)) -> (String, String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0
            .into_iter()
            .map(|(k, v)| (k.into_string(), v.into_string()))
    }
}

impl<'a> IntoIterator for &'a TriggerMetadata {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (CompactString, CompactString)>,
        fn(&'a (CompactString, CompactString)) -> (&'a str, &'a str),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl std::ops::Index<&str> for TriggerMetadata {
    type Output = str;
    /// Panics when `key` is not set, as a map's index does.
    fn index(&self, key: &str) -> &str {
        self.get(key).expect("no such trigger parameter")
    }
}

impl Serialize for TriggerMetadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for TriggerMetadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // KEDA's map[string]string: a string for every value (the API server enforces it).
        let map = BTreeMap::<CompactString, CompactString>::deserialize(d)?;
        let mut entries: Vec<(CompactString, CompactString)> = map.into_iter().collect();
        entries.shrink_to_fit();
        Ok(Self(entries))
    }
}

impl schemars::JsonSchema for TriggerMetadata {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, String> as schemars::JsonSchema>::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, String> as schemars::JsonSchema>::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <BTreeMap<String, String> as schemars::JsonSchema>::json_schema(generator)
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(entries: &[(&str, &str)]) -> TriggerMetadata {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_like_a_map_and_keeps_names_sorted_and_unique() {
        let mut m = md(&[("query", "up"), ("threshold", "1"), ("query", "down")]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("query"), Some("down"));
        assert!(m.contains_key("threshold") && !m.contains_key("serverAddress"));
        assert_eq!(m.insert("serverAddress", "x"), None);
        assert_eq!(m.insert("threshold", "2").as_deref(), Some("1"));
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            ["query", "serverAddress", "threshold"]
        );
        assert_eq!(m.remove("serverAddress").as_deref(), Some("x"));
        assert_eq!(m.remove("serverAddress"), None);
        assert_eq!(&m["threshold"], "2");
        // Long values are kept whole.
        let long = "sum(rate(http_requests_total{job=\"web\"}[2m]))";
        m.insert("query", long);
        assert_eq!(m.get("query"), Some(long));
        let as_map: BTreeMap<String, String> = m.clone().into();
        assert_eq!(TriggerMetadata::from(as_map), m);
    }

    #[test]
    fn json_and_schema_are_a_maps() {
        let m: TriggerMetadata =
            serde_json::from_value(serde_json::json!({"b": "2", "a": "1"})).expect("metadata");
        assert_eq!(
            serde_json::to_string(&m).expect("json"),
            r#"{"a":"1","b":"2"}"#
        );
        assert!(serde_json::from_value::<TriggerMetadata>(serde_json::json!({"a": 1})).is_err());
        let ours = schemars::schema_for!(TriggerMetadata);
        let map = schemars::schema_for!(BTreeMap<String, String>);
        assert_eq!(
            serde_json::to_value(&ours).expect("schema")["additionalProperties"],
            serde_json::to_value(&map).expect("schema")["additionalProperties"]
        );
    }
}
