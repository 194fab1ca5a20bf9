//! The trainer's side of the feature schema: which input columns become
//! which prefix fields ([`FeatureConfig`], MovieLens defaults in
//! [`FeatureConfig::movielens`]), fitting vocabularies and normalisation
//! statistics from a dataset ([`FeatureConfig::fit`]), and a dataset's users
//! as plain inputs ([`dataset_inputs`]).
//!
//! The fitted [`FeatureSchema`] (stored in `model.json` under `schema`), its
//! parts and row constants, the plain input types and the [`Tokenizer`] are
//! `profiled-model`'s, re-exported here: trainer and serving encoder share one
//! definition, so the tokens a model is trained on are the tokens it serves
//! (`docs/model-format.md` spells out the rules). The trainer tokenizes with
//! [`Tokenizer::tokenize_resolved`] (events already resolved to item
//! indexes), plain inputs with `Tokenizer::tokenize(&input.to_features())`.
//!
//! Table-row conventions shared by every categorical table (fields and
//! behaviour items): row [`MISSING`] = value absent, row [`OOV`] = value not
//! in the vocabulary, row `VOCAB_OFFSET + k` = vocabulary entry `k`.

use std::collections::{BTreeMap, HashMap};

use profiled_model::tokenizer::{apply_numeric, categorical_value, numeric_value};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, FieldValue};
use crate::error::{Error, Result};

/// One behaviour event of a [`ProfileInput`] (item id, seconds, optional rating).
pub use profiled_model::format::GoldenEvent as EventInput;
/// A user's features in plain form (the golden-example input format);
/// `input.to_features()` is the encoder's `UserFeatures`.
pub use profiled_model::format::GoldenInput as ProfileInput;
/// A value of one input field: a number or a string (JSON untagged).
pub use profiled_model::format::GoldenValue as FeatureValue;
pub use profiled_model::format::{
    BehaviourSchema, CategoricalTransform, FeatureSchema, FieldKind, FieldSchema, Group, ItemVocab,
    MISSING, NumericTransform, OOV, SOURCE_EVENT_COUNT, SOURCE_EVENT_GENRES, VOCAB_OFFSET,
};
pub use profiled_model::tokenizer::{EventToken, FieldToken, ResolvedEvent, Tokenizer, UserTokens};

/// Column → field mapping (an unfitted schema) plus behaviour options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// Prefix fields in token order.
    pub fields: Vec<FieldSchema>,
    /// Most recent events kept.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Rows of the time-gap table.
    #[serde(default = "default_gap_buckets")]
    pub gap_buckets: usize,
}

fn default_max_events() -> usize {
    50
}
fn default_gap_buckets() -> usize {
    32
}

impl FeatureConfig {
    /// MovieLens defaults: gender, occupation, zip3, age bucket (categorical),
    /// age and activity (numeric), genre mix (preference).
    pub fn movielens() -> Self {
        let cat = |name: &str, source: &str, transform| FieldSchema {
            name: name.to_string(),
            group: Group::Demographic,
            source: source.to_string(),
            kind: FieldKind::Categorical {
                transform,
                min_count: 2,
                vocab: Vec::new(),
            },
        };
        let num = |name: &str, group, source: &str, transform| FieldSchema {
            name: name.to_string(),
            group,
            source: source.to_string(),
            kind: FieldKind::Numeric {
                transform,
                mean: 0.0,
                std: 1.0,
                clip: 5.0,
            },
        };
        FeatureConfig {
            fields: vec![
                cat("gender", "gender", CategoricalTransform::Identity),
                cat("occupation", "occupation", CategoricalTransform::Identity),
                cat(
                    "zip3",
                    "zip_code",
                    CategoricalTransform::Prefix { length: 3 },
                ),
                cat(
                    "age_bucket",
                    "age",
                    CategoricalTransform::Bucket {
                        edges: vec![18.0, 25.0, 35.0, 45.0, 50.0, 56.0],
                        labels: ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
                            .iter()
                            .map(|s| s.to_string())
                            .collect(),
                    },
                ),
                num("age", Group::Demographic, "age", NumericTransform::Identity),
                num(
                    "activity",
                    Group::Numeric,
                    SOURCE_EVENT_COUNT,
                    NumericTransform::Log1p,
                ),
                FieldSchema {
                    name: "genre_mix".to_string(),
                    group: Group::Preference,
                    source: SOURCE_EVENT_GENRES.to_string(),
                    kind: FieldKind::Preference,
                },
            ],
            max_events: default_max_events(),
            gap_buckets: default_gap_buckets(),
        }
    }

    /// Keeps only the fields whose group is in `groups`.
    pub fn retain_groups(&mut self, groups: &[Group]) {
        self.fields.retain(|f| groups.contains(&f.group));
    }

    /// Checks names, sources and transforms.
    pub fn validate(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        if self.max_events == 0 {
            return Err(Error::Config("max_events must be ≥ 1".into()));
        }
        if self.gap_buckets < 2 {
            return Err(Error::Config("gap_buckets must be ≥ 2".into()));
        }
        for f in &self.fields {
            if f.name.is_empty()
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Error::Config(format!(
                    "field name `{}` must be non-empty [A-Za-z0-9_]",
                    f.name
                )));
            }
            if !names.insert(f.name.clone()) {
                return Err(Error::Config(format!("duplicate field `{}`", f.name)));
            }
            match &f.kind {
                FieldKind::Categorical { transform, .. } => {
                    if f.source.starts_with("events.") {
                        return Err(Error::Config(format!(
                            "categorical field `{}` needs a user column, not `{}`",
                            f.name, f.source
                        )));
                    }
                    if let CategoricalTransform::Bucket { edges, labels } = transform
                        && (labels.len() != edges.len() + 1
                            || edges.windows(2).any(|w| w[0] >= w[1])
                            || edges.iter().any(|e| !e.is_finite()))
                    {
                        return Err(Error::Config(format!(
                            "field `{}`: bucket edges must ascend and labels = edges + 1",
                            f.name
                        )));
                    }
                }
                FieldKind::Numeric { clip, .. } => {
                    if f.source == SOURCE_EVENT_GENRES || !(clip.is_finite() && *clip > 0.0) {
                        return Err(Error::Config(format!(
                            "numeric field `{}`: bad source or clip",
                            f.name
                        )));
                    }
                }
                FieldKind::Preference => {
                    if f.source != SOURCE_EVENT_GENRES {
                        return Err(Error::Config(format!(
                            "preference field `{}` must have source `{SOURCE_EVENT_GENRES}`",
                            f.name
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Fits vocabularies and statistics: categorical vocabularies from all
    /// users' values (count ≥ `min_count`, sorted), numeric statistics from
    /// users' values (column sources) or from `history_lengths` (event count),
    /// genres and items from the dataset, rating range from its ratings.
    pub fn fit(&self, dataset: &Dataset, history_lengths: &[usize]) -> Result<FeatureSchema> {
        let config = self;
        config.validate()?;
        // Genres: sorted distinct names.
        let mut genre_set: Vec<String> = dataset
            .items
            .iter()
            .flat_map(|i| i.genres.iter().cloned())
            .collect();
        genre_set.sort();
        genre_set.dedup();
        let genre_index: HashMap<&str, u32> = genre_set
            .iter()
            .enumerate()
            .map(|(i, g)| (g.as_str(), i as u32))
            .collect();
        let items = ItemVocab {
            ids: dataset.items.iter().map(|i| i.id.clone()).collect(),
            titles: dataset.items.iter().map(|i| i.title.clone()).collect(),
            genres: dataset
                .items
                .iter()
                .map(|i| {
                    let mut g: Vec<u32> = i
                        .genres
                        .iter()
                        .filter_map(|g| genre_index.get(g.as_str()).copied())
                        .collect();
                    g.sort_unstable();
                    g.dedup();
                    g
                })
                .collect(),
        };
        let (mut rmin, mut rmax) = (i32::MAX, i32::MIN);
        for e in &dataset.interactions {
            if let Some(r) = e.rating {
                if !r.is_finite() {
                    return Err(Error::Config(format!(
                        "non-finite rating for user {}",
                        e.user
                    )));
                }
                let r = r.round() as i32;
                rmin = rmin.min(r);
                rmax = rmax.max(r);
            }
        }
        if rmin > rmax {
            (rmin, rmax) = (1, 5);
        }
        let behaviour = BehaviourSchema {
            max_events: config.max_events,
            gap_buckets: config.gap_buckets,
            rating_min: rmin,
            rating_max: rmax,
        };

        let mut fields = Vec::with_capacity(config.fields.len());
        for f in &config.fields {
            let kind = match &f.kind {
                FieldKind::Categorical {
                    transform,
                    min_count,
                    ..
                } => {
                    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                    let mut present = 0usize;
                    for u in &dataset.users {
                        if let Some(v) = u.fields.get(&f.source) {
                            present += 1;
                            if let Some(s) = categorical_value(&f.name, transform, &field_value(v))?
                            {
                                *counts.entry(s).or_default() += 1;
                            }
                        }
                    }
                    if present == 0 && !dataset.users.is_empty() {
                        return Err(Error::Config(format!(
                            "field `{}`: no user has column `{}`",
                            f.name, f.source
                        )));
                    }
                    let vocab: Vec<String> = counts
                        .into_iter()
                        .filter(|(_, c)| *c >= (*min_count).max(1))
                        .map(|(s, _)| s)
                        .collect();
                    FieldKind::Categorical {
                        transform: transform.clone(),
                        min_count: *min_count,
                        vocab,
                    }
                }
                FieldKind::Numeric {
                    transform, clip, ..
                } => {
                    let mut xs = Vec::new();
                    if f.source == SOURCE_EVENT_COUNT {
                        for &n in history_lengths {
                            xs.push(apply_numeric(&f.name, *transform, n as f64)?);
                        }
                    } else {
                        for u in &dataset.users {
                            if let Some(v) = u.fields.get(&f.source)
                                && let Some(x) =
                                    numeric_value(&f.name, *transform, &field_value(v))?
                            {
                                xs.push(x);
                            }
                        }
                    }
                    let n = xs.len().max(1) as f64;
                    let mean = xs.iter().sum::<f64>() / n;
                    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
                    FieldKind::Numeric {
                        transform: *transform,
                        mean,
                        std: var.sqrt().max(1e-6),
                        clip: *clip,
                    }
                }
                FieldKind::Preference => FieldKind::Preference,
            };
            fields.push(FieldSchema {
                name: f.name.clone(),
                group: f.group,
                source: f.source.clone(),
                kind,
            });
        }
        Ok(FeatureSchema {
            fields,
            behaviour,
            genres: genre_set,
            items,
        })
    }
}

/// A dataset attribute as an input value: tokens as text, numbers as
/// numbers, token lists joined with spaces.
pub fn feature_value(v: &FieldValue) -> FeatureValue {
    match v {
        FieldValue::Token(s) => FeatureValue::Text(s.clone()),
        FieldValue::Float(x) => FeatureValue::Number(*x),
        FieldValue::TokenSeq(v) => FeatureValue::Text(v.join(" ")),
    }
}

/// A dataset attribute as the tokenizer's value.
fn field_value(v: &FieldValue) -> profiled_model::FieldValue {
    feature_value(v).to_field_value()
}

/// The input fields of a dataset user restricted to the schema's columns.
pub fn user_fields(
    schema: &FeatureSchema,
    user: &crate::data::User,
) -> BTreeMap<String, FeatureValue> {
    schema
        .input_columns()
        .into_iter()
        .filter_map(|c| {
            user.fields
                .get(c)
                .map(|v| (c.to_string(), feature_value(v)))
        })
        .collect()
}

/// The input fields of a dataset user as the tokenizer reads them (what
/// [`Tokenizer::tokenize_resolved`] takes).
pub fn user_field_values(
    schema: &FeatureSchema,
    user: &crate::data::User,
) -> BTreeMap<String, profiled_model::FieldValue> {
    schema
        .input_columns()
        .into_iter()
        .filter_map(|c| user.fields.get(c).map(|v| (c.to_string(), field_value(v))))
        .collect()
}

/// Every user of `dataset` as a [`ProfileInput`]: the input columns `schema`
/// reads and the user's whole history, time-sorted (ties in dataset order).
/// `input.to_features()` is what the serving encoder takes.
pub fn dataset_inputs(schema: &FeatureSchema, dataset: &Dataset) -> Vec<ProfileInput> {
    let mut per_user: Vec<Vec<EventInput>> = vec![Vec::new(); dataset.users.len()];
    for e in &dataset.interactions {
        if let (Some(v), Some(item)) = (
            per_user.get_mut(e.user as usize),
            dataset.items.get(e.item as usize),
        ) {
            v.push(EventInput {
                item: item.id.clone(),
                timestamp: e.timestamp,
                rating: e.rating,
            });
        }
    }
    dataset
        .users
        .iter()
        .zip(per_user)
        .map(|(u, mut events)| {
            events.sort_by_key(|e| e.timestamp);
            ProfileInput {
                user_id: Some(u.id.clone()),
                fields: user_fields(schema, u),
                events,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SyntheticConfig, generate};

    fn schema() -> FeatureSchema {
        let d = generate(&SyntheticConfig::small(5));
        FeatureConfig::movielens()
            .fit(&d, &[10, 20, 30])
            .expect("fit")
    }

    fn tokenize(tk: &Tokenizer, input: &ProfileInput) -> profiled_model::Result<UserTokens> {
        tk.tokenize(&input.to_features())
    }

    fn ev(item: &str, t: i64, r: Option<f32>) -> EventInput {
        EventInput {
            item: item.into(),
            timestamp: t,
            rating: r,
        }
    }

    #[test]
    fn missing_oov_and_known_values() {
        let s = schema();
        let tk = Tokenizer::new(s.clone());
        let mut input = ProfileInput::default();
        input
            .fields
            .insert("gender".into(), FeatureValue::Text("M".into()));
        input
            .fields
            .insert("occupation".into(), FeatureValue::Text("astronaut".into()));
        input
            .fields
            .insert("age".into(), FeatureValue::Number(30.0));
        let t = tokenize(&tk, &input).expect("tokenize");
        assert_eq!(t.fields.len(), 7);
        assert!(matches!(t.fields[0], FieldToken::Categorical(r) if r >= VOCAB_OFFSET));
        assert_eq!(t.fields[1], FieldToken::Categorical(OOV));
        assert_eq!(t.fields[2], FieldToken::Categorical(MISSING)); // zip absent
        assert!(matches!(t.fields[3], FieldToken::Categorical(r) if r >= VOCAB_OFFSET));
        assert!(matches!(t.fields[4], FieldToken::Numeric(Some(_))));
        // activity with no events is present (0 events), genre mix is missing.
        assert!(matches!(t.fields[5], FieldToken::Numeric(Some(_))));
        assert_eq!(t.fields[6], FieldToken::Preference(None));
        assert!(t.events.is_empty());
        // Empty strings count as missing.
        input
            .fields
            .insert("gender".into(), FeatureValue::Text(String::new()));
        let t = tokenize(&tk, &input).expect("tokenize");
        assert_eq!(t.fields[0], FieldToken::Categorical(MISSING));
    }

    #[test]
    fn unknown_field_and_bad_numbers_are_errors() {
        let s = schema();
        let tk = Tokenizer::new(s.clone());
        let mut input = ProfileInput::default();
        input
            .fields
            .insert("shoe_size".into(), FeatureValue::Number(42.0));
        let e = tokenize(&tk, &input).expect_err("unknown field");
        assert!(e.to_string().contains("shoe_size"), "{e}");
        let mut input = ProfileInput::default();
        input
            .fields
            .insert("age".into(), FeatureValue::Text("old".into()));
        let e = tokenize(&tk, &input).expect_err("not a number");
        assert!(e.to_string().contains("age"), "{e}");
        let mut input = ProfileInput::default();
        input
            .fields
            .insert("age".into(), FeatureValue::Number(f64::NAN));
        assert!(tokenize(&tk, &input).is_err());
        let mut input = ProfileInput::default();
        input.events.push(ev("1", 5, Some(f32::INFINITY)));
        assert!(tokenize(&tk, &input).is_err());
    }

    #[test]
    fn events_are_sorted_truncated_and_oov_mapped() {
        let s = schema();
        let tk = Tokenizer::new(s.clone());
        let max = s.behaviour.max_events;
        let mut input = ProfileInput::default();
        // 60 events given newest first; item ids cycle through known items.
        for k in (0..60i64).rev() {
            let id = s.items.ids[(k as usize) % s.items.ids.len()].clone();
            input.events.push(ev(&id, 1000 + k * 10, Some(4.0)));
        }
        input.events.push(ev("no-such-item", 2000, None));
        let t = tokenize(&tk, &input).expect("tokenize");
        assert_eq!(t.events.len(), max);
        // The most recent event (the OOV one at t = 2000) is last.
        let last = t.events[max - 1];
        assert_eq!(last.item_row, OOV);
        assert_eq!(last.rating_row, 0);
        // Kept window = events at k = 11..59 then the OOV one; oldest first.
        let first = t.events[0];
        let expect_id = &s.items.ids[11 % s.items.ids.len()];
        assert_eq!(
            first.item_row,
            VOCAB_OFFSET + tk.item_index(expect_id).expect("known")
        );
        // Gaps of 10 s → bucket 1 + floor(log2(11)) = 4; window's first event still has a predecessor.
        assert_eq!(first.gap_row, 4);
        assert_eq!(t.events[1].gap_row, 4);
        // Rating 4 with range 1..5 → row 4.
        assert_eq!(first.rating_row, 4);
        // Activity counts all 61 events, not only the kept ones.
        let s2 = s.clone();
        let z61 = match t.fields[5] {
            FieldToken::Numeric(Some(z)) => z,
            ref other => panic!("unexpected {other:?}"),
        };
        let mut short = input.clone();
        short.events.truncate(50);
        let t50 = tokenize(&Tokenizer::new(s2), &short).expect("tokenize");
        assert!(matches!(t50.fields[5], FieldToken::Numeric(Some(z)) if z < z61));
    }

    /// Event token rows without `source` (the index in the given events).
    fn rows(t: &UserTokens) -> Vec<(u32, u32, u32)> {
        t.events
            .iter()
            .map(|e| (e.item_row, e.rating_row, e.gap_row))
            .collect()
    }

    #[test]
    fn training_tokens_equal_serving_tokens() {
        // The trainer tokenizes dataset users from resolved item indexes; the
        // server tokenizes the same users from item ids: the tokens must agree
        // (including an unknown item, and fields given as text or numbers).
        let d = generate(&SyntheticConfig::small(9));
        let s = FeatureConfig::movielens()
            .fit(&d, &[10, 20, 30])
            .expect("fit");
        let tk = Tokenizer::new(s.clone());
        let inputs = dataset_inputs(&s, &d);
        assert_eq!(inputs.len(), d.users.len());
        let mut compared = 0;
        for (u, input) in d.users.iter().zip(&inputs) {
            let mut input = input.clone();
            input.events.push(ev("no-such-item", i64::MAX, Some(3.0)));
            let resolved: Vec<ResolvedEvent> = input
                .events
                .iter()
                .map(|e| ResolvedEvent {
                    item: tk.item_index(&e.item),
                    timestamp: e.timestamp,
                    rating: e.rating,
                })
                .collect();
            let train = tk
                .tokenize_resolved(&user_field_values(&s, u), &resolved)
                .expect("training tokens");
            let serve = tokenize(&tk, &input).expect("serving tokens");
            assert_eq!(train, serve, "user {}", u.id);
            assert_eq!(serve.events.last().map(|e| e.item_row), Some(OOV));
            compared += 1;
        }
        assert!(compared > 10);
        // An index outside the item vocabulary is an error, not a panic.
        let bad = ResolvedEvent {
            item: Some(u32::MAX),
            timestamp: 0,
            rating: None,
        };
        let e = tk
            .tokenize_resolved(&BTreeMap::new(), &[bad])
            .expect_err("bad index");
        assert!(e.to_string().contains("item index"), "{e}");
        // The inputs are time-sorted with the fields the schema reads.
        assert!(inputs.iter().all(|p| {
            p.events
                .windows(2)
                .all(|w| w[0].timestamp <= w[1].timestamp)
        }));
        assert!(inputs.iter().any(|p| p.fields.contains_key("zip_code")));
    }

    #[test]
    fn unsorted_events_give_the_same_tokens_as_sorted() {
        let s = schema();
        let tk = Tokenizer::new(s.clone());
        let ids: Vec<String> = s.items.ids.iter().take(5).cloned().collect();
        let sorted: Vec<EventInput> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ev(id, 100 * i as i64, Some(1.0 + i as f32)))
            .collect();
        let mut shuffled = sorted.clone();
        shuffled.swap(0, 4);
        shuffled.swap(1, 3);
        let a = tokenize(
            &tk,
            &ProfileInput {
                events: sorted,
                ..Default::default()
            },
        )
        .expect("a");
        let b = tokenize(
            &tk,
            &ProfileInput {
                events: shuffled,
                ..Default::default()
            },
        )
        .expect("b");
        assert_eq!(a.fields, b.fields);
        assert_eq!(rows(&a), rows(&b));
        assert_eq!(a.events[0].gap_row, 0);
        // Genre mix is a distribution.
        match &a.fields[6] {
            FieldToken::Preference(Some(w)) => {
                assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn gap_buckets_are_exact_powers_of_two() {
        let b = BehaviourSchema {
            max_events: 50,
            gap_buckets: 32,
            rating_min: 1,
            rating_max: 5,
        };
        assert_eq!(b.gap_bucket(0), 1);
        assert_eq!(b.gap_bucket(1), 2);
        assert_eq!(b.gap_bucket(2), 2);
        assert_eq!(b.gap_bucket(3), 3);
        assert_eq!(b.gap_bucket(-5), 1);
        assert_eq!(b.gap_bucket(i64::MAX), 31);
        assert_eq!(b.rating_row(Some(2.5)), 3); // half away from zero → 3
        assert_eq!(b.rating_row(Some(9.0)), 5);
        assert_eq!(b.rating_row(Some(-3.0)), 1);
    }

    #[test]
    fn schema_round_trips_through_json() {
        let s = schema();
        let j = serde_json::to_string(&s).expect("ser");
        let back: FeatureSchema = serde_json::from_str(&j).expect("de");
        assert_eq!(s, back);
    }
}
