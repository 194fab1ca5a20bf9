//! The `model.json` format (contract: `docs/model-format.md`): the one
//! definition of its serde types, constants and tensor-shape table.
//!
//! The trainer (`profiled-train`) depends on this crate and writes model
//! files with these same types (serving never depends on the trainer);
//! [`ModelJson::validate`] checks everything the encoder relies on.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `format` value of every model.json.
pub const FORMAT: &str = "profiled-model";
/// The `format_version` this crate reads.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the metadata.
pub const METADATA_FILE: &str = "model.json";

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

/// Upper bound on any single dimension of the architecture (keeps shape
/// arithmetic far from overflow; real models are thousands of times smaller).
const MAX_DIM: usize = 1 << 16;

/// The dimension group a field belongs to (explanations report per group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

impl Group {
    /// Lower-case name (`demographic`, `numeric`, `preference`, `behaviour`).
    pub fn name(self) -> &'static str {
        match self {
            Group::Demographic => "demographic",
            Group::Numeric => "numeric",
            Group::Preference => "preference",
            Group::Behaviour => "behaviour",
        }
    }
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
    /// of `edges` that are ≤ the value.
    Bucket {
        /// Ascending bucket edges.
        edges: Vec<f64>,
        /// One label per bucket (`edges.len() + 1`).
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

fn default_min_count() -> usize {
    2
}
fn one() -> f64 {
    1.0
}
fn default_clip() -> f64 {
    5.0
}

/// The kind of a prefix field, with its fitted parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldKind {
    /// One learned vector per vocabulary value (+ missing, + OOV rows).
    Categorical {
        /// Derivation from the source column.
        transform: CategoricalTransform,
        /// Fitting threshold (informational here).
        #[serde(default = "default_min_count")]
        min_count: usize,
        /// Vocabulary (row `VOCAB_OFFSET + k` is `vocab[k]`).
        #[serde(default)]
        vocab: Vec<String>,
    },
    /// AutoInt style: `z × weight`, `z = clip((t(x) − mean) / std, ±clip)`.
    Numeric {
        /// Transform before standardisation.
        transform: NumericTransform,
        /// Mean of the transformed value.
        #[serde(default)]
        mean: f64,
        /// Standard deviation of the transformed value.
        #[serde(default = "one")]
        std: f64,
        /// Clip of the standardised value.
        #[serde(default = "default_clip")]
        clip: f64,
    },
    /// Rating-weighted genre mix of the history: `Σ_g w_g × E[g]`.
    Preference,
}

/// One prefix (field) token of the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSchema {
    /// Field name (tensor names use it: `fields.<name>.*`).
    pub name: String,
    /// Dimension group.
    pub group: Group,
    /// Input column (a key of [`UserFeatures::fields`](crate::UserFeatures::fields)) or
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
    /// Smallest rating (ratings are clamped into the range).
    pub rating_min: i32,
    /// Largest rating.
    pub rating_max: i32,
}

impl BehaviourSchema {
    /// Rows of the rating table: missing + one per integer rating.
    pub fn rating_rows(&self) -> usize {
        (i64::from(self.rating_max) - i64::from(self.rating_min) + 2).max(0) as usize
    }

    /// Rating table row: 0 when absent, else `1 + clamp(round_half_away(r), min, max) − min`.
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

    /// Time-gap bucket of a gap in seconds:
    /// `1 + min(⌊log2(1 + max(gap, 0))⌋, gap_buckets − 2)`.
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

/// The fitted feature schema (`schema` in model.json).
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

impl FeatureSchema {
    /// Rows of field `i`'s table (categorical: vocab + 2; preference: genres; numeric: 1).
    pub fn field_rows(&self, i: usize) -> usize {
        match self.fields.get(i).map(|f| &f.kind) {
            Some(FieldKind::Categorical { vocab, .. }) => vocab.len() + VOCAB_OFFSET as usize,
            Some(FieldKind::Numeric { .. }) => 1,
            Some(FieldKind::Preference) => self.genres.len(),
            None => 0,
        }
    }

    /// Input column names the schema reads (sorted, deduplicated).
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
}

/// Architecture hyper-parameters (`architecture` in model.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Width of profile and item vectors.
    pub d_out: usize,
    /// LayerNorm epsilon.
    pub ln_eps: f64,
    /// Score = cosine / temperature.
    pub temperature: f64,
    /// Dropout while training (unused at inference).
    pub dropout: f64,
    /// Always `gelu_tanh`.
    pub activation: String,
    /// Always `prefix_visible_causal`.
    pub mask: String,
}

impl Default for ModelConfig {
    /// The trainer's defaults: d = 64, 4 heads, 2 layers, FFN 256, d_out 64.
    fn default() -> Self {
        ModelConfig {
            d_model: 64,
            heads: 4,
            layers: 2,
            ffn: 256,
            d_out: 64,
            ln_eps: 1e-5,
            temperature: 0.07,
            dropout: 0.1,
            activation: "gelu_tanh".into(),
            mask: "prefix_visible_causal".into(),
        }
    }
}

/// A value of one input field in a golden example (the trainer's
/// `FeatureValue`, untagged: a JSON number or string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GoldenValue {
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
}

impl GoldenValue {
    /// As a [`FieldValue`](crate::FieldValue): strings become categorical
    /// values, numbers numbers (the tokenizer parses either the same way).
    pub fn to_field_value(&self) -> crate::FieldValue {
        match self {
            GoldenValue::Number(x) => crate::FieldValue::Number(*x),
            GoldenValue::Text(s) => crate::FieldValue::Categorical(s.clone()),
        }
    }
}

/// One behaviour event of a golden input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenEvent {
    /// Original item id.
    pub item: String,
    /// Seconds.
    pub timestamp: i64,
    /// Rating, if any.
    #[serde(default)]
    pub rating: Option<f32>,
}

/// Input features of a golden example (the trainer's `ProfileInput`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GoldenInput {
    /// Informational user id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Field values by input column name.
    #[serde(default)]
    pub fields: BTreeMap<String, GoldenValue>,
    /// Behaviour events, in any order.
    #[serde(default)]
    pub events: Vec<GoldenEvent>,
}

impl GoldenInput {
    /// The golden input of `u`, the inverse of [`GoldenInput::to_features`]
    /// for the values a golden input can hold: numbers stay numbers,
    /// categorical values become text, and tag fields (which the trainer's
    /// plain input has no form for) are left out.
    pub fn from_features(u: &crate::UserFeatures) -> GoldenInput {
        use crate::FieldValue;
        GoldenInput {
            user_id: u.user_id.clone(),
            fields: u
                .fields
                .iter()
                .filter_map(|(k, v)| match v {
                    FieldValue::Number(x) => Some((k.clone(), GoldenValue::Number(*x))),
                    FieldValue::Categorical(s) => Some((k.clone(), GoldenValue::Text(s.clone()))),
                    FieldValue::Tags(_) => None,
                })
                .collect(),
            events: u
                .events
                .iter()
                .map(|e| GoldenEvent {
                    item: e.item.clone(),
                    timestamp: e.timestamp,
                    rating: e.rating,
                })
                .collect(),
        }
    }

    /// As [`UserFeatures`](crate::UserFeatures) (values by
    /// [`GoldenValue::to_field_value`]): the one conversion of the trainer's
    /// plain input (`profiled_train::schema::ProfileInput`) to the encoder's.
    pub fn to_features(&self) -> crate::UserFeatures {
        crate::UserFeatures {
            user_id: self.user_id.clone(),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_field_value()))
                .collect(),
            events: self
                .events
                .iter()
                .map(|e| crate::Event {
                    item: e.item.clone(),
                    timestamp: e.timestamp,
                    rating: e.rating,
                })
                .collect(),
        }
    }
}

/// One golden example: input features and the trainer's expected profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Golden {
    /// What the example exercises.
    pub note: String,
    /// Input features.
    pub input: GoldenInput,
    /// Expected unit profile vector (`d_out` values).
    pub profile: Vec<f32>,
}

/// The contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelJson {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Model name.
    pub name: String,
    /// Version number (the folder name).
    pub version: u32,
    /// Storage dtype of the weights: `f32` or `f16`.
    pub dtype: String,
    /// Architecture.
    pub architecture: ModelConfig,
    /// Feature schema with vocabularies and statistics.
    pub schema: FeatureSchema,
    /// Dataset provenance.
    #[serde(default)]
    pub dataset: serde_json::Value,
    /// Training provenance.
    #[serde(default)]
    pub training: serde_json::Value,
    /// The split the model was fitted on.
    #[serde(default)]
    pub split: serde_json::Value,
    /// Evaluation metrics.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Golden examples.
    #[serde(default)]
    pub golden: Vec<Golden>,
}

/// Storage dtype of the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
}

impl Dtype {
    /// `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }

    /// The minimum golden cosine for weights of this dtype (0.9999 / 0.999).
    pub fn golden_threshold(self) -> f64 {
        match self {
            Dtype::F32 => 0.9999,
            Dtype::F16 => 0.999,
        }
    }
}

impl ModelJson {
    /// Parses `model.json` text (`path` names the file in errors).
    pub fn parse(text: &str, path: &Path) -> Result<ModelJson> {
        serde_json::from_str(text)
            .map_err(|e| Error::model(path, format!("invalid model.json: {e}")))
    }

    /// The weights' dtype.
    pub fn dtype(&self, path: &Path) -> Result<Dtype> {
        match self.dtype.as_str() {
            "f32" => Ok(Dtype::F32),
            "f16" => Ok(Dtype::F16),
            other => Err(Error::model(
                path,
                format!("dtype `{other}` is neither f32 nor f16"),
            )),
        }
    }

    /// Checks format, architecture and schema (everything but the weights).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::model(path, m));
        if self.format != FORMAT || self.format_version != FORMAT_VERSION {
            return bad(format!(
                "format `{}` v{} is not {FORMAT} v{FORMAT_VERSION}",
                self.format, self.format_version
            ));
        }
        self.dtype(path)?;
        let a = &self.architecture;
        for (what, v) in [
            ("d_model", a.d_model),
            ("heads", a.heads),
            ("layers", a.layers),
            ("ffn", a.ffn),
            ("d_out", a.d_out),
        ] {
            if v == 0 || v > MAX_DIM {
                return bad(format!("architecture.{what} = {v} is not in 1..={MAX_DIM}"));
            }
        }
        if !a.d_model.is_multiple_of(a.heads) {
            return bad(format!(
                "architecture.d_model = {} is not a multiple of heads = {}",
                a.d_model, a.heads
            ));
        }
        if !(a.ln_eps.is_finite() && a.ln_eps >= 0.0 && (a.ln_eps as f32).is_finite()) {
            return bad(format!(
                "architecture.ln_eps = {} is not a finite non-negative number",
                a.ln_eps
            ));
        }
        if !(a.temperature.is_finite() && a.temperature > 0.0) {
            return bad(format!(
                "architecture.temperature = {} must be > 0",
                a.temperature
            ));
        }
        if a.activation != "gelu_tanh" {
            return bad(format!(
                "architecture.activation `{}` is not gelu_tanh",
                a.activation
            ));
        }
        if a.mask != "prefix_visible_causal" {
            return bad(format!(
                "architecture.mask `{}` is not prefix_visible_causal",
                a.mask
            ));
        }
        self.validate_schema(path)
    }

    fn validate_schema(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::model(path, m));
        let s = &self.schema;
        let b = &s.behaviour;
        if b.max_events == 0 || b.max_events > MAX_DIM {
            return bad(format!(
                "schema.behaviour.max_events = {} is not in 1..={MAX_DIM}",
                b.max_events
            ));
        }
        if b.gap_buckets < 2 || b.gap_buckets > MAX_DIM {
            return bad(format!(
                "schema.behaviour.gap_buckets = {} is not in 2..={MAX_DIM}",
                b.gap_buckets
            ));
        }
        let span = i64::from(b.rating_max) - i64::from(b.rating_min);
        if !(0..=MAX_DIM as i64).contains(&span) {
            return bad(format!(
                "schema.behaviour rating range {}..={} is empty or too wide",
                b.rating_min, b.rating_max
            ));
        }
        let mut genres = HashSet::new();
        for g in &s.genres {
            if !genres.insert(g.as_str()) {
                return bad(format!("schema.genres: `{g}` appears twice"));
            }
        }
        let it = &s.items;
        if it.ids.is_empty() {
            return bad("schema.items: the model has no items".into());
        }
        if it.titles.len() != it.ids.len() || it.genres.len() != it.ids.len() {
            return bad(format!(
                "schema.items: {} ids but {} titles and {} genre lists",
                it.ids.len(),
                it.titles.len(),
                it.genres.len()
            ));
        }
        let mut ids = HashSet::new();
        for id in &it.ids {
            if !ids.insert(id.as_str()) {
                return bad(format!("schema.items: item id `{id}` appears twice"));
            }
        }
        for (k, gs) in it.genres.iter().enumerate() {
            if gs.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!(
                    "schema.items.genres[{k}] is not strictly ascending"
                ));
            }
            if let Some(g) = gs.iter().find(|&&g| g as usize >= s.genres.len()) {
                return bad(format!(
                    "schema.items.genres[{k}] names genre {g}, but there are {} genres",
                    s.genres.len()
                ));
            }
        }
        let mut names = HashSet::new();
        for f in &s.fields {
            let n = &f.name;
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return bad(format!(
                    "schema field name `{n}` must be non-empty [A-Za-z0-9_]"
                ));
            }
            if !names.insert(n.as_str()) {
                return bad(format!("schema field `{n}` appears twice"));
            }
            match &f.kind {
                FieldKind::Categorical {
                    transform, vocab, ..
                } => {
                    if f.source.starts_with("events.") {
                        return bad(format!(
                            "categorical field `{n}` needs a user column, not `{}`",
                            f.source
                        ));
                    }
                    if let CategoricalTransform::Bucket { edges, labels } = transform
                        && (labels.len() != edges.len() + 1
                            || edges.windows(2).any(|w| w[0] >= w[1])
                            || edges.iter().any(|e| !e.is_finite()))
                    {
                        return bad(format!(
                            "field `{n}`: bucket edges must be finite and ascend, and labels = edges + 1"
                        ));
                    }
                    let mut seen = HashSet::new();
                    for v in vocab {
                        if !seen.insert(v.as_str()) {
                            return bad(format!(
                                "field `{n}`: vocabulary value `{v}` appears twice"
                            ));
                        }
                    }
                }
                FieldKind::Numeric {
                    mean, std, clip, ..
                } => {
                    if f.source == SOURCE_EVENT_GENRES {
                        return bad(format!(
                            "numeric field `{n}`: source `{}` is not a number",
                            f.source
                        ));
                    }
                    if !(mean.is_finite()
                        && std.is_finite()
                        && *std > 0.0
                        && clip.is_finite()
                        && *clip > 0.0)
                    {
                        return bad(format!(
                            "numeric field `{n}`: mean {mean}, std {std}, clip {clip} must be finite with std, clip > 0"
                        ));
                    }
                }
                FieldKind::Preference => {
                    if f.source != SOURCE_EVENT_GENRES {
                        return bad(format!(
                            "preference field `{n}` must have source `{SOURCE_EVENT_GENRES}`"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Expected tensor shapes by name (see [`tensor_shapes`]).
    pub fn tensor_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        tensor_shapes(&self.schema, &self.architecture)
    }
}

/// Tensor shapes by name for a schema and architecture: the names and shapes
/// of `model.safetensors` (the trainer creates its parameters from this table).
pub fn tensor_shapes(s: &FeatureSchema, cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
    let d = cfg.d_model;
    let mut m = BTreeMap::new();
    let p = s.fields.len();
    m.insert("embed.type".to_string(), vec![p + 1, d]);
    for (i, f) in s.fields.iter().enumerate() {
        let rows = s.field_rows(i);
        match f.kind {
            FieldKind::Categorical { .. } => {
                m.insert(format!("fields.{}.embedding", f.name), vec![rows, d]);
            }
            FieldKind::Numeric { .. } => {
                m.insert(format!("fields.{}.weight", f.name), vec![d]);
                m.insert(format!("fields.{}.missing", f.name), vec![d]);
            }
            FieldKind::Preference => {
                m.insert(format!("fields.{}.embedding", f.name), vec![rows, d]);
                m.insert(format!("fields.{}.missing", f.name), vec![d]);
            }
        }
    }
    let b = &s.behaviour;
    let n_items = s.items.ids.len();
    let g = s.genres.len();
    m.insert(
        "behaviour.item".into(),
        vec![n_items + VOCAB_OFFSET as usize, d],
    );
    m.insert("behaviour.genre".into(), vec![g, d]);
    m.insert("behaviour.rating".into(), vec![b.rating_rows(), d]);
    m.insert("behaviour.gap".into(), vec![b.gap_buckets, d]);
    m.insert("behaviour.position".into(), vec![b.max_events, d]);
    for l in 0..cfg.layers {
        for ln in ["ln1", "ln2"] {
            m.insert(format!("layers.{l}.{ln}.weight"), vec![d]);
            m.insert(format!("layers.{l}.{ln}.bias"), vec![d]);
        }
        for proj in ["q", "k", "v", "o"] {
            m.insert(format!("layers.{l}.attn.{proj}.weight"), vec![d, d]);
            m.insert(format!("layers.{l}.attn.{proj}.bias"), vec![d]);
        }
        m.insert(format!("layers.{l}.ffn.up.weight"), vec![cfg.ffn, d]);
        m.insert(format!("layers.{l}.ffn.up.bias"), vec![cfg.ffn]);
        m.insert(format!("layers.{l}.ffn.down.weight"), vec![d, cfg.ffn]);
        m.insert(format!("layers.{l}.ffn.down.bias"), vec![d]);
    }
    m.insert("final_norm.weight".into(), vec![d]);
    m.insert("final_norm.bias".into(), vec![d]);
    m.insert("head.weight".into(), vec![cfg.d_out, d]);
    m.insert("head.bias".into(), vec![cfg.d_out]);
    m.insert("items.embedding".into(), vec![n_items, cfg.d_out]);
    m.insert("items.genre".into(), vec![g, cfg.d_out]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Rng, random_user};

    #[test]
    fn golden_inputs_round_trip_features() {
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            let u = random_user(&mut rng, 30, 12);
            let g = GoldenInput::from_features(&u);
            assert_eq!(g.to_features(), u);
        }
        // Tags have no golden form: left out, the rest kept.
        let mut u = random_user(&mut rng, 30, 12);
        u.fields.insert(
            "genres".into(),
            crate::FieldValue::Tags(vec![("Drama".into(), 1.0)]),
        );
        let back = GoldenInput::from_features(&u).to_features();
        assert!(!back.fields.contains_key("genres"));
        assert_eq!(back.fields.len(), u.fields.len() - 1);
        assert_eq!(back.events, u.events);
    }
}
