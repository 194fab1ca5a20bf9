//! [`UserFeatures`]: one user's raw dimensions, and their canonical bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The value of one profile field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldValue {
    /// A categorical value, e.g. `occupation = "engineer"`.
    Categorical(String),
    /// A number, e.g. `age = 34`.
    Number(f64),
    /// Weighted tags, e.g. a genre mix `{"Drama": 0.6, "Comedy": 0.4}`.
    Tags(Vec<(String, f32)>),
}

/// The `age_bucket` attribute value of an age in years (the MovieLens-1M
/// convention), as users indexes store it (`profilectl index build` and the live users index).
pub fn age_bucket(age: f64) -> &'static str {
    match age {
        a if a < 18.0 => "under-18",
        a if a < 25.0 => "18-24",
        a if a < 35.0 => "25-34",
        a if a < 45.0 => "35-44",
        a if a < 50.0 => "45-49",
        a if a < 56.0 => "50-55",
        _ => "56+",
    }
}

/// One behaviour event: the user interacted with `item` at `timestamp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Item id as the dataset spells it.
    pub item: String,
    /// Seconds since the Unix epoch.
    pub timestamp: i64,
    /// Explicit rating, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<f32>,
}

/// A user's features as the encoder consumes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserFeatures {
    /// The user's id, when known (labels only; never a model input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Field values by schema field name.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldValue>,
    /// Behaviour events in any order (the tokenizer sorts them by time).
    #[serde(default)]
    pub events: Vec<Event>,
}

const TAG_CATEGORICAL: u8 = 1;
const TAG_NUMBER: u8 = 2;
const TAG_TAGS: u8 = 3;
const TAG_EVENTS: u8 = 4;
const NO_RATING: u8 = 0;
const HAS_RATING: u8 = 1;

impl UserFeatures {
    /// Canonical bytes of everything that can change the profile, for cache
    /// keys: fields in name order, tags in name order, events in the order
    /// the tokenizer will use (by timestamp, ties in given order). Numbers are
    /// written as IEEE bits with `-0.0` folded into `0.0`. The user id is not
    /// included (it never changes the vector). Every variable-length part is
    /// length-prefixed, so two different inputs never share an encoding.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut w = CanonicalWriter::new(self.fields.len(), self.events.len());
        for (name, value) in &self.fields {
            match value {
                FieldValue::Categorical(s) => w.categorical(name, s),
                FieldValue::Number(x) => w.number(name, *x),
                FieldValue::Tags(tags) => {
                    let mut sorted: Vec<(&str, f32)> =
                        tags.iter().map(|(t, x)| (t.as_str(), *x)).collect();
                    sort_tags(&mut sorted);
                    w.tags(name, &sorted);
                }
            }
        }
        w.events(self.events.len());
        let mut order: Vec<usize> = (0..self.events.len()).collect();
        order.sort_by_key(|&i| self.events[i].timestamp);
        for i in order {
            let e = &self.events[i];
            w.event(&e.item, e.timestamp, e.rating);
        }
        w.finish()
    }
}

/// Sorts tags into canonical order: by name, then weight.
pub fn sort_tags(tags: &mut [(&str, f32)]) {
    tags.sort_by(|a, b| a.0.cmp(b.0).then(a.1.total_cmp(&b.1)));
}

/// The canonical encoding of [`UserFeatures::canonical_bytes`] written piece
/// by piece, for callers that hold the features in another shape (a request
/// message) and want the same bytes without building a `UserFeatures`. The
/// caller supplies, in order: the fields in name order (byte order, as a
/// `BTreeMap<String, _>` iterates), each field's tags in [`sort_tags`] order,
/// then the events in timestamp order with ties in given order.
#[derive(Debug)]
pub struct CanonicalWriter {
    out: Vec<u8>,
}

impl CanonicalWriter {
    /// Starts an encoding of `fields` fields (and about `events` events,
    /// a capacity hint).
    pub fn new(fields: usize, events: usize) -> CanonicalWriter {
        let mut out = Vec::with_capacity(64 + 32 * events);
        put_len(&mut out, fields);
        CanonicalWriter { out }
    }

    /// A categorical field.
    pub fn categorical(&mut self, name: &str, value: &str) {
        put_str(&mut self.out, name);
        self.out.push(TAG_CATEGORICAL);
        put_str(&mut self.out, value);
    }

    /// A numeric field (`-0.0` is written as `0.0`).
    pub fn number(&mut self, name: &str, x: f64) {
        put_str(&mut self.out, name);
        self.out.push(TAG_NUMBER);
        let x = if x == 0.0 { 0.0 } else { x };
        self.out.extend_from_slice(&x.to_bits().to_le_bytes());
    }

    /// A tags field; `tags` in [`sort_tags`] order.
    pub fn tags(&mut self, name: &str, tags: &[(&str, f32)]) {
        put_str(&mut self.out, name);
        self.out.push(TAG_TAGS);
        put_len(&mut self.out, tags.len());
        for (tag, w) in tags {
            put_str(&mut self.out, tag);
            let w = if *w == 0.0 { 0.0f32 } else { *w };
            self.out.extend_from_slice(&w.to_bits().to_le_bytes());
        }
    }

    /// Starts the events: `n` of them follow.
    pub fn events(&mut self, n: usize) {
        self.out.push(TAG_EVENTS);
        put_len(&mut self.out, n);
    }

    /// One event (in timestamp order, ties in given order).
    pub fn event(&mut self, item: &str, timestamp: i64, rating: Option<f32>) {
        put_str(&mut self.out, item);
        self.out.extend_from_slice(&timestamp.to_le_bytes());
        match rating {
            None => self.out.push(NO_RATING),
            Some(r) => {
                self.out.push(HAS_RATING);
                let r = if r == 0.0 { 0.0f32 } else { r };
                self.out.extend_from_slice(&r.to_bits().to_le_bytes());
            }
        }
    }

    /// The bytes.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(fields: &[(&str, FieldValue)], events: &[(&str, i64, Option<f32>)]) -> UserFeatures {
        UserFeatures {
            user_id: None,
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            events: events
                .iter()
                .map(|(item, timestamp, rating)| Event {
                    item: item.to_string(),
                    timestamp: *timestamp,
                    rating: *rating,
                })
                .collect(),
        }
    }

    #[test]
    fn canonical_bytes_ignore_field_event_and_tag_order() {
        let a = user(
            &[
                ("gender", FieldValue::Categorical("F".into())),
                ("age", FieldValue::Number(34.0)),
                (
                    "genres",
                    FieldValue::Tags(vec![("Drama".into(), 0.6), ("Comedy".into(), 0.4)]),
                ),
            ],
            &[("50", 10, Some(5.0)), ("7", 5, None)],
        );
        let b = user(
            &[
                (
                    "genres",
                    FieldValue::Tags(vec![("Comedy".into(), 0.4), ("Drama".into(), 0.6)]),
                ),
                ("age", FieldValue::Number(34.0)),
                ("gender", FieldValue::Categorical("F".into())),
            ],
            &[("7", 5, None), ("50", 10, Some(5.0))],
        );
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    }

    #[test]
    fn canonical_bytes_separate_different_inputs() {
        let base = user(&[("occupation", FieldValue::Categorical("ab".into()))], &[]);
        let variants = [
            user(&[("occupation", FieldValue::Categorical("a".into()))], &[]),
            user(&[("occupationa", FieldValue::Categorical("b".into()))], &[]),
            user(&[("occupation", FieldValue::Number(1.0))], &[]),
            user(
                &[("occupation", FieldValue::Categorical("ab".into()))],
                &[("1", 0, None)],
            ),
            user(
                &[("occupation", FieldValue::Categorical("ab".into()))],
                &[("1", 0, Some(0.0))],
            ),
        ];
        let mut seen = vec![base.canonical_bytes()];
        for v in &variants {
            let bytes = v.canonical_bytes();
            assert!(!seen.contains(&bytes), "collision for {v:?}");
            seen.push(bytes);
        }
    }

    #[test]
    fn negative_zero_equals_zero_and_user_id_is_ignored() {
        let mut a = user(&[("age", FieldValue::Number(0.0))], &[("1", 3, Some(0.0))]);
        let b = user(
            &[("age", FieldValue::Number(-0.0))],
            &[("1", 3, Some(-0.0))],
        );
        a.user_id = Some("42".into());
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    }

    proptest::proptest! {
        #[test]
        fn canonical_bytes_stable_under_event_permutation(
            events in proptest::collection::vec((0u8..20, 0i64..50, proptest::option::of(0u8..6)), 0..30),
            seed in 0u64..1000,
        ) {
            // Distinct timestamps: with ties, order is part of the input by design.
            let mut events = events;
            events.sort_by_key(|e| e.1);
            events.dedup_by_key(|e| e.1);
            let mk = |evs: &[(u8, i64, Option<u8>)]| UserFeatures {
                user_id: None,
                fields: BTreeMap::new(),
                events: evs.iter().map(|(i, t, r)| Event {
                    item: i.to_string(), timestamp: *t, rating: r.map(f32::from),
                }).collect(),
            };
            let a = mk(&events);
            let mut shuffled = events.clone();
            // Deterministic pseudo-shuffle.
            let n = shuffled.len();
            for i in 0..n {
                let j = ((seed as usize).wrapping_mul(31).wrapping_add(i * 17)) % n;
                shuffled.swap(i, j);
            }
            proptest::prop_assert_eq!(a.canonical_bytes(), mk(&shuffled).canonical_bytes());
        }
    }
}
