//! The declarative feature schema and the tokenizer (features → tokens).
//!
//! A [`FeatureConfig`] says which input columns become which prefix fields
//! (MovieLens defaults in [`FeatureConfig::movielens`]); [`FeatureSchema::fit`]
//! fills in vocabularies and normalisation statistics from a dataset; the
//! fitted schema is stored in `model.json` under `schema` and is everything a
//! reader needs to turn a [`ProfileInput`] into [`UserTokens`]
//! (`docs/model-format.md` spells out the rules this module implements).
//!
//! Table-row conventions shared by every categorical table (fields and
//! behaviour items): row [`MISSING`] = value absent, row [`OOV`] = value not
//! in the vocabulary, row `VOCAB_OFFSET + k` = vocabulary entry `k`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, FieldValue};
use crate::error::{Error, Result};

/// Row of a categorical table used when the value is absent.
pub const MISSING: u32 = 0;
/// Row of a categorical table used when the value is not in the vocabulary.
pub const OOV: u32 = 1;
/// Row of vocabulary entry 0.
pub const VOCAB_OFFSET: u32 = 2;

/// Source name of the event-count numeric field.
pub const SOURCE_EVENT_COUNT: &str = "events.count";
/// Source name of the rating-weighted genre-mix preference field.
pub const SOURCE_EVENT_GENRES: &str = "events.genres";

/// The dimension group a field belongs to (explanations report per group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Demographics (gender, occupation, location, age).
    Demographic,
    /// Numeric signals (activity count).
    Numeric,
    /// Preferences derived from the history (genre mix).
    Preference,
    /// The behaviour sequence (only behaviour tokens).
    Behaviour,
}

/// How a categorical field's value is derived from its source column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CategoricalTransform {
    /// The value's string form as is.
    Identity,
    /// The first `length` characters (Unicode scalar values) of the string form.
    Prefix {
        /// Number of characters kept.
        length: usize,
    },
    /// The source parsed as a number, then `labels[i]` where `i` is the number
    /// of `edges` that are ≤ the value (`labels.len() == edges.len() + 1`).
    Bucket {
        /// Ascending bucket edges.
        edges: Vec<f64>,
        /// One label per bucket.
        labels: Vec<String>,
    },
}

/// How a numeric field's raw value is transformed before standardisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumericTransform {
    /// `x`.
    Identity,
    /// `ln(1 + x)` (requires `x > -1`).
    Log1p,
}

/// The kind of a prefix field, with its fitted parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldKind {
    /// One learned vector per vocabulary value (+ missing, + OOV rows).
    Categorical {
        /// Derivation from the source column.
        transform: CategoricalTransform,
        /// Values seen fewer times than this when fitting map to OOV.
        #[serde(default = "default_min_count")]
        min_count: usize,
        /// Vocabulary (row `VOCAB_OFFSET + k` is `vocab[k]`), sorted.
        #[serde(default)]
        vocab: Vec<String>,
    },
    /// AutoInt style: `z × weight`, `z = clip((t(x) − mean) / std, ±clip)`.
    Numeric {
        /// Transform before standardisation.
        transform: NumericTransform,
        /// Mean of the transformed value when fitting.
        #[serde(default)]
        mean: f64,
        /// Standard deviation of the transformed value (≥ 1e-6).
        #[serde(default = "one")]
        std: f64,
        /// Clip of the standardised value.
        #[serde(default = "default_clip")]
        clip: f64,
    },
    /// Rating-weighted genre mix of the history: `Σ_g w_g × E[g]`.
    Preference,
}

fn default_min_count() -> usize {
    2
}
fn one() -> f64 {
    1.0
}
fn default_clip() -> f64 {
    5.0
}

/// One prefix (field) token of the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSchema {
    /// Field name (tensor names use it: `fields.<name>.*`).
    pub name: String,
    /// Dimension group.
    pub group: Group,
    /// Input column (a key of [`ProfileInput::fields`]) or
    /// [`SOURCE_EVENT_COUNT`] / [`SOURCE_EVENT_GENRES`].
    pub source: String,
    /// Kind and fitted parameters.
    pub kind: FieldKind,
}

/// Parameters of the behaviour-sequence tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviourSchema {
    /// Most recent events kept (positions `0..max_events`, oldest first).
    pub max_events: usize,
    /// Rows of the time-gap table (bucket 0 = no previous event).
    pub gap_buckets: usize,
    /// Smallest rating (integer; ratings are clamped into the range).
    pub rating_min: i32,
    /// Largest rating.
    pub rating_max: i32,
}

impl BehaviourSchema {
    /// Rows of the rating table: missing + one per integer rating.
    pub fn rating_rows(&self) -> usize {
        (self.rating_max - self.rating_min + 2) as usize
    }

    /// Rating table row of an event: 0 when absent, else
    /// `1 + clamp(round_half_away(r), min, max) − min`.
    pub fn rating_row(&self, rating: Option<f32>) -> u32 {
        match rating {
            None => 0,
            Some(r) => {
                let r = (r.round() as i64)
                    .clamp(i64::from(self.rating_min), i64::from(self.rating_max));
                (1 + r - i64::from(self.rating_min)) as u32
            }
        }
    }

    /// Preference weight of an event: `clamp(r, min, max) − min + 1`, or
    /// `(max − min) / 2 + 1` without a rating.
    pub fn rating_weight(&self, rating: Option<f32>) -> f64 {
        let (lo, hi) = (f64::from(self.rating_min), f64::from(self.rating_max));
        match rating {
            None => (hi - lo) / 2.0 + 1.0,
            Some(r) => f64::from(r).clamp(lo, hi) - lo + 1.0,
        }
    }

    /// Time-gap bucket of a gap in seconds: `1 + min(⌊log2(1 + max(gap, 0))⌋, gap_buckets − 2)`
    /// (the "no previous event" bucket 0 is assigned by the caller).
    pub fn gap_bucket(&self, gap: i64) -> u32 {
        let g = gap.max(0) as u64;
        let log2 = 63 - (g.saturating_add(1)).leading_zeros();
        1 + log2.min(self.gap_buckets.saturating_sub(2) as u32)
    }
}

/// The item vocabulary (the model's item universe, in output-row order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemVocab {
    /// Original item ids; item `k` is output row `k` and behaviour row `VOCAB_OFFSET + k`.
    pub ids: Vec<String>,
    /// Titles (may be `null`).
    pub titles: Vec<Option<String>>,
    /// Genre indexes (into [`FeatureSchema::genres`]) per item, ascending.
    pub genres: Vec<Vec<u32>>,
}

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
}

/// The fitted feature schema stored in `model.json` (`schema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    /// Prefix fields, in token order.
    pub fields: Vec<FieldSchema>,
    /// Behaviour token parameters.
    pub behaviour: BehaviourSchema,
    /// Genre vocabulary (rows of the genre tables).
    pub genres: Vec<String>,
    /// Item vocabulary.
    pub items: ItemVocab,
}

/// A value of one input field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
}

impl FeatureValue {
    /// The string form: text as is; integral numbers without a decimal point
    /// (`24`), other numbers in shortest round-trip form.
    pub fn as_text(&self) -> String {
        match self {
            FeatureValue::Text(s) => s.clone(),
            FeatureValue::Number(x) => {
                if x.fract() == 0.0 && x.abs() < 1e15 {
                    format!("{}", *x as i64)
                } else {
                    format!("{x}")
                }
            }
        }
    }

    /// The numeric value: numbers as is, text parsed (after trimming).
    pub fn as_number(&self) -> Option<f64> {
        match self {
            FeatureValue::Number(x) => Some(*x),
            FeatureValue::Text(s) => s.trim().parse::<f64>().ok(),
        }
    }

    /// Converts a dataset attribute (token lists are joined with spaces).
    pub fn from_field(v: &FieldValue) -> Self {
        match v {
            FieldValue::Token(s) => FeatureValue::Text(s.clone()),
            FieldValue::Float(x) => FeatureValue::Number(*x),
            FieldValue::TokenSeq(v) => FeatureValue::Text(v.join(" ")),
        }
    }
}

/// One behaviour event of a [`ProfileInput`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInput {
    /// Original item id.
    pub item: String,
    /// Seconds (the dataset's time unit).
    pub timestamp: i64,
    /// Rating, if any.
    #[serde(default)]
    pub rating: Option<f32>,
}

/// A user's features in plain form (the golden-example input format).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProfileInput {
    /// Informational user id (not a feature).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Field values by input column name.
    #[serde(default)]
    pub fields: BTreeMap<String, FeatureValue>,
    /// Behaviour events, in any order.
    #[serde(default)]
    pub events: Vec<EventInput>,
}

/// An event with its item resolved to a model item index (`None` = OOV).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedEvent {
    /// Model item index (output row), `None` when the id is unknown.
    pub item: Option<u32>,
    /// Seconds.
    pub timestamp: i64,
    /// Rating, if any.
    pub rating: Option<f32>,
}

/// One prefix token, ready for the embedding lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum PrefixToken {
    /// Row of the field's categorical table.
    Categorical(u32),
    /// Standardised value, `None` = missing.
    Numeric(Option<f32>),
    /// Genre weights summing to 1, `None` = missing (no genre in the history).
    Preference(Option<Vec<f32>>),
}

/// One behaviour token (position = index in [`UserTokens::events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventToken {
    /// Row of `behaviour.item` (`OOV` or `VOCAB_OFFSET + item`).
    pub item_row: u32,
    /// Row of `behaviour.rating`.
    pub rating_row: u32,
    /// Row of `behaviour.gap`.
    pub gap_row: u32,
}

/// A tokenized user: prefix tokens in schema order, then ≤ `max_events`
/// behaviour tokens, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct UserTokens {
    /// One token per schema field.
    pub prefix: Vec<PrefixToken>,
    /// Behaviour tokens.
    pub events: Vec<EventToken>,
}

impl UserTokens {
    /// Total number of tokens.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.events.len()
    }

    /// True when there is no token at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts of values fitted into each categorical vocabulary, for reports.
pub type VocabReport = Vec<(String, usize)>;

impl FeatureSchema {
    /// Fits vocabularies and statistics: categorical vocabularies from all
    /// users' values (count ≥ `min_count`, sorted), numeric statistics from
    /// users' values (column sources) or from `history_lengths` (event count),
    /// genres and items from the dataset, rating range from its ratings.
    pub fn fit(
        config: &FeatureConfig,
        dataset: &Dataset,
        history_lengths: &[usize],
    ) -> Result<Self> {
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
                            let fv = FeatureValue::from_field(v);
                            if let Some(s) = categorical_value(&f.name, transform, &fv)? {
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
                            if let Some(v) = u.fields.get(&f.source) {
                                let fv = FeatureValue::from_field(v);
                                if let Some(x) = parse_number(&f.name, &fv)? {
                                    xs.push(apply_numeric(&f.name, *transform, x)?);
                                }
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

    /// Number of rows of field `i`'s table (categorical: vocab + 2;
    /// preference: genres; numeric: 1).
    pub fn field_rows(&self, i: usize) -> usize {
        match &self.fields[i].kind {
            FieldKind::Categorical { vocab, .. } => vocab.len() + VOCAB_OFFSET as usize,
            FieldKind::Numeric { .. } => 1,
            FieldKind::Preference => self.genres.len(),
        }
    }

    /// Input column names the schema reads (keys allowed in [`ProfileInput::fields`]).
    pub fn input_columns(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .fields
            .iter()
            .filter(|f| !f.source.starts_with("events."))
            .map(|f| f.source.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Builds the lookup tables of a tokenizer.
    pub fn tokenizer(&self) -> Tokenizer<'_> {
        let vocabs = self
            .fields
            .iter()
            .map(|f| match &f.kind {
                FieldKind::Categorical { vocab, .. } => vocab
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.clone(), VOCAB_OFFSET + i as u32))
                    .collect(),
                _ => HashMap::new(),
            })
            .collect();
        let items = self
            .items
            .ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        Tokenizer {
            schema: self,
            vocabs,
            items,
        }
    }
}

fn parse_number(field: &str, v: &FeatureValue) -> Result<Option<f64>> {
    if let FeatureValue::Text(s) = v
        && s.trim().is_empty()
    {
        return Ok(None);
    }
    match v.as_number() {
        Some(x) if x.is_finite() => Ok(Some(x)),
        Some(x) => Err(Error::Feature {
            field: field.to_string(),
            message: format!("value {x} is not finite"),
        }),
        None => Err(Error::Feature {
            field: field.to_string(),
            message: format!("`{}` is not a number", v.as_text()),
        }),
    }
}

fn apply_numeric(field: &str, t: NumericTransform, x: f64) -> Result<f64> {
    match t {
        NumericTransform::Identity => Ok(x),
        NumericTransform::Log1p => {
            if x <= -1.0 {
                Err(Error::Feature {
                    field: field.to_string(),
                    message: format!("value {x} is ≤ -1 (log1p transform)"),
                })
            } else {
                Ok(x.ln_1p())
            }
        }
    }
}

/// The categorical value of a field (`None` = missing: empty string).
fn categorical_value(
    field: &str,
    t: &CategoricalTransform,
    v: &FeatureValue,
) -> Result<Option<String>> {
    if let FeatureValue::Number(x) = v
        && !x.is_finite()
    {
        return Err(Error::Feature {
            field: field.to_string(),
            message: format!("value {x} is not finite"),
        });
    }
    match t {
        CategoricalTransform::Identity => {
            let s = v.as_text();
            Ok((!s.is_empty()).then_some(s))
        }
        CategoricalTransform::Prefix { length } => {
            let s: String = v.as_text().chars().take(*length).collect();
            Ok((!s.is_empty()).then_some(s))
        }
        CategoricalTransform::Bucket { edges, labels } => match parse_number(field, v)? {
            None => Ok(None),
            Some(x) => {
                let i = edges.iter().filter(|&&e| e <= x).count();
                Ok(labels.get(i).cloned())
            }
        },
    }
}

/// Turns features into tokens according to a [`FeatureSchema`].
#[derive(Debug, Clone)]
pub struct Tokenizer<'a> {
    schema: &'a FeatureSchema,
    vocabs: Vec<HashMap<String, u32>>,
    items: HashMap<String, u32>,
}

impl Tokenizer<'_> {
    /// Model item index of an original item id.
    pub fn item_index(&self, id: &str) -> Option<u32> {
        self.items.get(id).copied()
    }

    /// Tokenizes plain features: unknown input columns and bad values are
    /// errors naming the field; unknown items and values go to OOV rows.
    pub fn tokenize(&self, input: &ProfileInput) -> Result<UserTokens> {
        let allowed = self.schema.input_columns();
        for k in input.fields.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(Error::Feature {
                    field: k.clone(),
                    message: format!("unknown field (the model reads: {})", allowed.join(", ")),
                });
            }
        }
        let mut events = Vec::with_capacity(input.events.len());
        for e in &input.events {
            if let Some(r) = e.rating
                && !r.is_finite()
            {
                return Err(Error::Feature {
                    field: "events".into(),
                    message: format!("rating of item `{}` is not finite", e.item),
                });
            }
            events.push(ResolvedEvent {
                item: self.item_index(&e.item),
                timestamp: e.timestamp,
                rating: e.rating,
            });
        }
        // Stable sort by time: ties keep the given order.
        events.sort_by_key(|e| e.timestamp);
        self.tokenize_resolved(&input.fields, &events)
    }

    /// Tokenizes fields plus events that are already resolved and sorted by time.
    pub fn tokenize_resolved(
        &self,
        fields: &BTreeMap<String, FeatureValue>,
        events: &[ResolvedEvent],
    ) -> Result<UserTokens> {
        let s = self.schema;
        let b = &s.behaviour;
        let mut prefix = Vec::with_capacity(s.fields.len());
        for (fi, f) in s.fields.iter().enumerate() {
            let tok = match &f.kind {
                FieldKind::Categorical { transform, .. } => match fields.get(&f.source) {
                    None => PrefixToken::Categorical(MISSING),
                    Some(v) => match categorical_value(&f.source, transform, v)? {
                        None => PrefixToken::Categorical(MISSING),
                        Some(val) => PrefixToken::Categorical(
                            self.vocabs[fi].get(&val).copied().unwrap_or(OOV),
                        ),
                    },
                },
                FieldKind::Numeric {
                    transform,
                    mean,
                    std,
                    clip,
                } => {
                    let raw = if f.source == SOURCE_EVENT_COUNT {
                        Some(events.len() as f64)
                    } else {
                        match fields.get(&f.source) {
                            None => None,
                            Some(v) => parse_number(&f.source, v)?,
                        }
                    };
                    match raw {
                        None => PrefixToken::Numeric(None),
                        Some(x) => {
                            let t = apply_numeric(&f.source, *transform, x)?;
                            let z = ((t - mean) / std).clamp(-clip, *clip);
                            PrefixToken::Numeric(Some(z as f32))
                        }
                    }
                }
                FieldKind::Preference => {
                    let mut w = vec![0.0f64; s.genres.len()];
                    let mut total = 0.0;
                    for e in events {
                        if let Some(i) = e.item {
                            let rho = b.rating_weight(e.rating);
                            for &g in &s.items.genres[i as usize] {
                                w[g as usize] += rho;
                                total += rho;
                            }
                        }
                    }
                    if total > 0.0 {
                        PrefixToken::Preference(Some(
                            w.iter().map(|x| (x / total) as f32).collect(),
                        ))
                    } else {
                        PrefixToken::Preference(None)
                    }
                }
            };
            prefix.push(tok);
        }
        let start = events.len().saturating_sub(b.max_events);
        let mut out = Vec::with_capacity(events.len() - start);
        for (i, e) in events.iter().enumerate().skip(start) {
            let gap_row = if i == 0 {
                0
            } else {
                b.gap_bucket(e.timestamp.saturating_sub(events[i - 1].timestamp))
            };
            out.push(EventToken {
                item_row: e.item.map_or(OOV, |i| VOCAB_OFFSET + i),
                rating_row: b.rating_row(e.rating),
                gap_row,
            });
        }
        if prefix.is_empty() && out.is_empty() {
            return Err(Error::Feature {
                field: "events".into(),
                message: "this model has no field tokens, so at least one event is needed".into(),
            });
        }
        Ok(UserTokens {
            prefix,
            events: out,
        })
    }
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
                .map(|v| (c.to_string(), FeatureValue::from_field(v)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SyntheticConfig, generate};

    fn schema() -> FeatureSchema {
        let d = generate(&SyntheticConfig::small(5));
        FeatureSchema::fit(&FeatureConfig::movielens(), &d, &[10, 20, 30]).expect("fit")
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
        let tk = s.tokenizer();
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
        let t = tk.tokenize(&input).expect("tokenize");
        assert_eq!(t.prefix.len(), 7);
        assert!(matches!(t.prefix[0], PrefixToken::Categorical(r) if r >= VOCAB_OFFSET));
        assert_eq!(t.prefix[1], PrefixToken::Categorical(OOV));
        assert_eq!(t.prefix[2], PrefixToken::Categorical(MISSING)); // zip absent
        assert!(matches!(t.prefix[3], PrefixToken::Categorical(r) if r >= VOCAB_OFFSET));
        assert!(matches!(t.prefix[4], PrefixToken::Numeric(Some(_))));
        // activity with no events is present (0 events), genre mix is missing.
        assert!(matches!(t.prefix[5], PrefixToken::Numeric(Some(_))));
        assert_eq!(t.prefix[6], PrefixToken::Preference(None));
        assert!(t.events.is_empty());
        // Empty strings count as missing.
        input
            .fields
            .insert("gender".into(), FeatureValue::Text(String::new()));
        let t = tk.tokenize(&input).expect("tokenize");
        assert_eq!(t.prefix[0], PrefixToken::Categorical(MISSING));
    }

    #[test]
    fn unknown_field_and_bad_numbers_are_errors() {
        let s = schema();
        let tk = s.tokenizer();
        let mut input = ProfileInput::default();
        input
            .fields
            .insert("shoe_size".into(), FeatureValue::Number(42.0));
        let e = tk.tokenize(&input).expect_err("unknown field");
        assert!(e.to_string().contains("shoe_size"), "{e}");
        let mut input = ProfileInput::default();
        input
            .fields
            .insert("age".into(), FeatureValue::Text("old".into()));
        let e = tk.tokenize(&input).expect_err("not a number");
        assert!(e.to_string().contains("age"), "{e}");
        let mut input = ProfileInput::default();
        input
            .fields
            .insert("age".into(), FeatureValue::Number(f64::NAN));
        assert!(tk.tokenize(&input).is_err());
        let mut input = ProfileInput::default();
        input.events.push(ev("1", 5, Some(f32::INFINITY)));
        assert!(tk.tokenize(&input).is_err());
    }

    #[test]
    fn events_are_sorted_truncated_and_oov_mapped() {
        let s = schema();
        let tk = s.tokenizer();
        let max = s.behaviour.max_events;
        let mut input = ProfileInput::default();
        // 60 events given newest first; item ids cycle through known items.
        for k in (0..60i64).rev() {
            let id = s.items.ids[(k as usize) % s.items.ids.len()].clone();
            input.events.push(ev(&id, 1000 + k * 10, Some(4.0)));
        }
        input.events.push(ev("no-such-item", 2000, None));
        let t = tk.tokenize(&input).expect("tokenize");
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
        let z61 = match t.prefix[5] {
            PrefixToken::Numeric(Some(z)) => z,
            ref other => panic!("unexpected {other:?}"),
        };
        let mut short = input.clone();
        short.events.truncate(50);
        let t50 = s2.tokenizer().tokenize(&short).expect("tokenize");
        assert!(matches!(t50.prefix[5], PrefixToken::Numeric(Some(z)) if z < z61));
    }

    #[test]
    fn unsorted_events_give_the_same_tokens_as_sorted() {
        let s = schema();
        let tk = s.tokenizer();
        let ids: Vec<String> = s.items.ids.iter().take(5).cloned().collect();
        let sorted: Vec<EventInput> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ev(id, 100 * i as i64, Some(1.0 + i as f32)))
            .collect();
        let mut shuffled = sorted.clone();
        shuffled.swap(0, 4);
        shuffled.swap(1, 3);
        let a = tk
            .tokenize(&ProfileInput {
                events: sorted,
                ..Default::default()
            })
            .expect("a");
        let b = tk
            .tokenize(&ProfileInput {
                events: shuffled,
                ..Default::default()
            })
            .expect("b");
        assert_eq!(a, b);
        assert_eq!(a.events[0].gap_row, 0);
        // Genre mix is a distribution.
        match &a.prefix[6] {
            PrefixToken::Preference(Some(w)) => {
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
