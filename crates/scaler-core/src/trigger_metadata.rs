//! A trigger's `metadata`: KEDA's `map[string]string`, kept as a sorted list.
//!
//! A `BTreeMap<String, String>` allocates a node for eleven entries whatever it holds
//! (544 bytes for a trigger's usual three to six parameters); with 100,000 ScaledObjects in
//! the store that was the largest allocation of each. This keeps only the entries, sorted
//! by key, with the same reading API (`get`, `contains_key`, `iter`, `keys`, ...), the same
//! JSON (an object, keys in order) and the same schema.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A trigger's parameters by name, sorted by name, each name once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TriggerMetadata(Vec<(String, String)>);

impl TriggerMetadata {
    /// No parameters.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&String>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    /// The value of `key`, to change it.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut String>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(move |i| &mut self.0[i].1)
    }

    /// Whether `key` is set.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// Set `key` to `value`; the value it had.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.find(key.as_str()) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Unset `key`; the value it had.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<String>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    /// The parameters in name order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &String)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The names in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values in name order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// How many parameters are set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keep the parameters `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut String) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }
}

impl Extend<(String, String)> for TriggerMetadata {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl FromIterator<(String, String)> for TriggerMetadata {
    /// Later entries win, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut all: Vec<(String, String)> = iter.into_iter().collect();
        // Stable: of equal names the last one is kept below.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(all.len());
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
        Self(map.into_iter().collect())
    }
}

impl From<TriggerMetadata> for BTreeMap<String, String> {
    fn from(m: TriggerMetadata) -> Self {
        m.0.into_iter().collect()
    }
}

impl IntoIterator for TriggerMetadata {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a TriggerMetadata {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<Q> std::ops::Index<&Q> for TriggerMetadata
where
    String: Borrow<Q>,
    Q: Ord + ?Sized,
{
    type Output = String;
    /// Panics when `key` is not set, as a map's index does.
    fn index(&self, key: &Q) -> &String {
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
        let map = BTreeMap::<String, String>::deserialize(d)?;
        let mut entries: Vec<(String, String)> = map.into_iter().collect();
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
        assert_eq!(m.get("query").map(String::as_str), Some("down"));
        assert!(m.contains_key("threshold") && !m.contains_key("serverAddress"));
        assert_eq!(m.insert("serverAddress".into(), "x".into()), None);
        assert_eq!(
            m.insert("threshold".into(), "2".into()).as_deref(),
            Some("1")
        );
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>(),
            ["query", "serverAddress", "threshold"]
        );
        assert_eq!(m.remove("serverAddress").as_deref(), Some("x"));
        assert_eq!(m.remove("serverAddress"), None);
        assert_eq!(&m["threshold"], "2");
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
