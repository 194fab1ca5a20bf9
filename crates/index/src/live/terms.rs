//! The attribute terms of the delta rows: each (attribute, value) pair gets
//! a `u32` term id, shared by every chunk of one live base (a merge starts
//! a new dictionary). Append-only behind a `RwLock`: the writer takes it
//! exclusively only to add new terms; searches read it to turn a filter's
//! values into term ids, and attribute lookups to turn ids back into text.

use std::collections::{BTreeMap, HashMap};
use std::sync::{RwLock, RwLockReadGuard};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct Inner {
    /// Attribute name → (its index in `names`, value → term id).
    attrs: HashMap<String, (u32, HashMap<String, u32>)>,
    /// Attribute names by index.
    names: Vec<String>,
    /// Term id → (attribute index, value).
    terms: Vec<(u32, String)>,
}

/// The dictionary (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Terms {
    inner: RwLock<Inner>,
}

impl Terms {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The sorted, unique term ids of one row's attributes, adding the
    /// terms not seen before.
    pub(crate) fn intern_row(&self, attrs: &BTreeMap<String, Vec<String>>) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut missing = false;
        {
            let r = self.read();
            for (name, values) in attrs {
                for v in values {
                    match r.attrs.get(name).and_then(|(_, m)| m.get(v)) {
                        Some(&t) => out.push(t),
                        None => missing = true,
                    }
                }
            }
        }
        if missing {
            out.clear();
            let mut w = self.inner.write().unwrap_or_else(|e| e.into_inner());
            let w = &mut *w;
            for (name, values) in attrs {
                if !w.attrs.contains_key(name) {
                    let idx = u32::try_from(w.names.len())
                        .map_err(|_| Error::InvalidArgument("too many attributes".into()))?;
                    w.names.push(name.clone());
                    w.attrs.insert(name.clone(), (idx, HashMap::new()));
                }
                let next = u32::try_from(w.terms.len())
                    .map_err(|_| Error::InvalidArgument("too many attribute values".into()))?;
                let Some((idx, values_of)) = w.attrs.get_mut(name) else {
                    continue;
                };
                let mut next = next;
                for v in values {
                    let t = *values_of.entry(v.clone()).or_insert_with(|| {
                        w.terms.push((*idx, v.clone()));
                        let t = next;
                        next += 1;
                        t
                    });
                    out.push(t);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Whether any delta row ever had `attribute`.
    pub(crate) fn has_attribute(&self, attribute: &str) -> bool {
        self.read().attrs.contains_key(attribute)
    }

    /// The attribute names delta rows have had, unsorted.
    pub(crate) fn attribute_names(&self) -> Vec<String> {
        self.read().names.clone()
    }

    /// The term ids of `attribute = value` for each value (unknown pairs
    /// are left out: no delta row has them).
    pub(crate) fn lookup(&self, attribute: &str, values: &[&str]) -> Vec<u32> {
        let r = self.read();
        let Some((_, m)) = r.attrs.get(attribute) else {
            return Vec::new();
        };
        let mut out: Vec<u32> = values.iter().filter_map(|v| m.get(*v).copied()).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The attributes of a row from its term ids, by name, values sorted.
    pub(crate) fn decode(&self, terms: &[u32]) -> BTreeMap<String, Vec<String>> {
        let r = self.read();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for &t in terms {
            if let Some((a, v)) = r.terms.get(t as usize)
                && let Some(name) = r.names.get(*a as usize)
            {
                out.entry(name.clone()).or_default().push(v.clone());
            }
        }
        for v in out.values_mut() {
            v.sort_unstable();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(a, vs)| (a.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn interned_terms_round_trip_and_are_shared() {
        let t = Terms::default();
        let a = t
            .intern_row(&row(&[("genre", &["b", "a"]), ("seen", &["1"])]))
            .unwrap_or_default();
        let b = t
            .intern_row(&row(&[("genre", &["a"]), ("country", &["fr"])]))
            .unwrap_or_default();
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 2);
        assert!(b.contains(&t.lookup("genre", &["a"])[0]));
        assert_eq!(
            t.decode(&a),
            row(&[("genre", &["a", "b"]), ("seen", &["1"])])
        );
        assert_eq!(t.lookup("genre", &["a", "b", "zzz"]).len(), 2);
        assert!(t.lookup("nope", &["a"]).is_empty());
        assert!(t.has_attribute("country") && !t.has_attribute("nope"));
    }
}
