//! A user's extra attributes (`spec.attributes`): a few named text values.
//!
//! A run holds one of these per directory entry and per registry record, a
//! hundred thousand or more of each at once, and a mapping names one or two
//! extra attributes. A `BTreeMap` allocates a whole node (eleven slots) for its
//! first key; a sorted vector holds exactly what it has, and nothing when empty.
//! It serialises as a map, exactly as the `BTreeMap` it stands for.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Index;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};

/// Name → value, each name once, kept sorted by name.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes(Vec<(String, String)>);

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&String> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Set `name` to `value`; returns the value it replaced.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let name = name.into();
        let value = value.into();
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    /// The pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// The same pairs as a map (for API types, which keep a `BTreeMap`).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

/// Later pairs win over earlier ones with the same name, as with a map.
impl FromIterator<(String, String)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut pairs: Vec<(String, String)> = iter.into_iter().collect();
        // A stable sort keeps equal names in arrival order; keep the last.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match kept.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => kept.push(pair),
            }
        }
        kept.shrink_to_fit();
        Self(kept)
    }
}

impl From<BTreeMap<String, String>> for Attributes {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique.
        Self(map.into_iter().collect())
    }
}

impl From<&BTreeMap<String, String>> for Attributes {
    fn from(map: &BTreeMap<String, String>) -> Self {
        Self(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for Attributes {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Index<&str> for Attributes {
    type Output = String;

    fn index(&self, name: &str) -> &String {
        self.get(name)
            .unwrap_or_else(|| panic!("no attribute {name:?}"))
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn attributes_behave_like_the_map_they_replace() {
        let pairs = [pair("b", "2"), pair("a", "1"), pair("b", "3")];
        let attributes: Attributes = pairs.iter().cloned().collect();
        let map: BTreeMap<String, String> = pairs.iter().cloned().collect();
        assert_eq!(attributes.to_map(), map);
        assert_eq!(attributes.len(), 2);
        assert_eq!(attributes["b"], "3");
        assert_eq!(attributes.get("c"), None);
        assert_eq!(
            serde_json::to_string(&attributes).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let back: Attributes = serde_json::from_str(r#"{"z":"26","a":"1"}"#).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ["a", "z"]);
        assert_eq!(Attributes::from(map.clone()), attributes);
    }

    #[test]
    fn insert_keeps_names_sorted_and_unique() {
        let mut attributes = Attributes::new();
        assert!(attributes.is_empty());
        assert_eq!(attributes.insert("m", "1"), None);
        assert_eq!(attributes.insert("a", "2"), None);
        assert_eq!(attributes.insert("z", "3"), None);
        assert_eq!(attributes.insert("m", "4"), Some("1".to_owned()));
        assert_eq!(
            attributes.iter().collect::<Vec<_>>(),
            [
                (&"a".to_owned(), &"2".to_owned()),
                (&"m".to_owned(), &"4".to_owned()),
                (&"z".to_owned(), &"3".to_owned())
            ]
        );
        assert!(attributes.contains_key("z") && !attributes.contains_key("b"));
    }
}
