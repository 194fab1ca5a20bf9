//! The model's input schema as the core reads it: which value kind each
//! input accepts. Used to validate request features and Track field
//! changes, and to read stored state written for another schema.

use std::collections::BTreeMap;

use profiled_model::format::{CategoricalTransform, FieldKind as ModelKind};
use profiled_model::{FieldValue, ModelJson};

/// The value kind an input accepts, per the model's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A categorical string.
    Categorical,
    /// A number.
    Number,
    /// Weighted tags.
    Tags,
}

impl InputKind {
    /// How messages name the kind.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Categorical => "categorical",
            InputKind::Number => "a number",
            InputKind::Tags => "tags",
        }
    }
}

/// The kind a schema field accepts; `None` for fields derived from events.
pub fn field_input_kind(f: &profiled_model::format::FieldSchema) -> Option<InputKind> {
    if f.source.starts_with("events.") {
        return None;
    }
    Some(match &f.kind {
        ModelKind::Categorical {
            transform: CategoricalTransform::Bucket { .. },
            ..
        } => InputKind::Number,
        ModelKind::Categorical { .. } => InputKind::Categorical,
        ModelKind::Numeric { .. } => InputKind::Number,
        ModelKind::Preference => InputKind::Tags,
    })
}

/// The kind the input `name` accepts (first schema field reading it), without
/// building the whole map: the request path calls this once per field.
pub fn input_kind_of(meta: &ModelJson, name: &str) -> Option<InputKind> {
    meta.schema
        .fields
        .iter()
        .filter(|f| f.source == name)
        .find_map(field_input_kind)
}

/// Input name → accepted kind, for a model.
pub fn input_kinds(meta: &ModelJson) -> BTreeMap<String, InputKind> {
    let mut out = BTreeMap::new();
    for f in &meta.schema.fields {
        if let Some(k) = field_input_kind(f) {
            out.entry(f.source.clone()).or_insert(k);
        }
    }
    out
}

impl InputKind {
    /// The kind of a value.
    pub fn of(v: &FieldValue) -> InputKind {
        match v {
            FieldValue::Categorical(_) => InputKind::Categorical,
            FieldValue::Number(_) => InputKind::Number,
            FieldValue::Tags(_) => InputKind::Tags,
        }
    }

    /// Categorical and number convert into each other where unambiguous.
    pub fn is_scalar(self) -> bool {
        matches!(self, InputKind::Categorical | InputKind::Number)
    }
}
