//! Model status → proto: `ModelInfo` (versions, states, architecture,
//! schema, metrics, provenance, index info) and the dimension groups.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use profiled_index::{SEEN_ITEMS_ATTRIBUTE, SearchBackend};
use profiled_model::format::{CategoricalTransform, FieldKind as ModelKind};
use profiled_model::{Group, ModelJson};
use profiled_proto::v1 as pb;
use profiled_store::{Generation, ModelSnapshot, VersionState};

use crate::engine::schema::{InputKind, field_input_kind};

/// A proto `DimensionGroup` of a model group.
pub fn group(g: Group) -> pb::DimensionGroup {
    match g {
        Group::Demographic => pb::DimensionGroup::Demographic,
        Group::Behaviour => pb::DimensionGroup::Behaviour,
        Group::Preference => pb::DimensionGroup::Preference,
        Group::Numeric => pb::DimensionGroup::Numeric,
    }
}

fn transform_text(f: &profiled_model::format::FieldSchema) -> String {
    match &f.kind {
        ModelKind::Categorical { transform, .. } => match transform {
            CategoricalTransform::Identity => "identity".into(),
            CategoricalTransform::Prefix { length } => format!("prefix {length}"),
            CategoricalTransform::Bucket { labels, .. } => format!("bucket {}", labels.join("|")),
        },
        ModelKind::Numeric { transform, .. } => match transform {
            profiled_model::format::NumericTransform::Identity => "standardised".into(),
            profiled_model::format::NumericTransform::Log1p => "log1p, standardised".into(),
        },
        ModelKind::Preference => "rating-weighted genre mix".into(),
    }
}

/// The proto feature schema of a model.
pub fn schema(meta: &ModelJson) -> pb::FeatureSchema {
    let fields = meta
        .schema
        .fields
        .iter()
        .map(|f| {
            let (vocab_size, vocabulary) = match &f.kind {
                ModelKind::Categorical { vocab, .. } => (
                    vocab.len() as u32,
                    if vocab.len() <= 100 {
                        vocab.clone()
                    } else {
                        Vec::new()
                    },
                ),
                _ => (0, Vec::new()),
            };
            pb::FieldSchema {
                name: f.name.clone(),
                kind: match field_input_kind(f) {
                    None => pb::FieldKind::Unspecified,
                    Some(InputKind::Categorical) => pb::FieldKind::Categorical,
                    Some(InputKind::Number) => pb::FieldKind::Number,
                    Some(InputKind::Tags) => pb::FieldKind::Tags,
                } as i32,
                group: group(f.group) as i32,
                vocabulary_size: vocab_size,
                vocabulary,
                description: String::new(),
                source: f.source.clone(),
                transform: transform_text(f),
            }
        })
        .collect();
    pb::FeatureSchema {
        fields,
        max_events: meta.schema.behaviour.max_events as u32,
        item_vocabulary_size: meta.schema.items.ids.len() as u32,
        uses_ratings: meta.schema.behaviour.rating_rows() > 1,
    }
}

fn flat_json(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flat_json(&key, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Metrics (numbers) and provenance (strings) recorded in model.json.
pub fn metrics_and_provenance(
    meta: &ModelJson,
) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut m = BTreeMap::new();
    flat_json("", &meta.metrics, &mut m);
    let metrics = m
        .into_iter()
        .filter_map(|(k, v)| v.as_f64().map(|x| (k, x)))
        .collect();
    let mut p = BTreeMap::new();
    flat_json("dataset", &meta.dataset, &mut p);
    flat_json("training", &meta.training, &mut p);
    let provenance = p
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            serde_json::Value::Bool(b) => Some((k, b.to_string())),
            _ => None,
        })
        .collect();
    (metrics, provenance)
}

/// The architecture of a loaded generation.
pub fn architecture(g: &Generation) -> pb::Architecture {
    let a = &g.encoder.metadata().architecture;
    pb::Architecture {
        dim: a.d_out as u32,
        layers: a.layers as u32,
        heads: a.heads as u32,
        ffn_dim: a.ffn as u32,
        max_tokens: (g.encoder.metadata().schema.fields.len()
            + g.encoder.metadata().schema.behaviour.max_events) as u32,
        parameters: g.report.parameters as u64,
        weight_dtype: g.report.dtype.name().to_string(),
    }
}

fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn index_info(b: &dyn SearchBackend) -> pb::IndexInfo {
    pb::IndexInfo {
        rows: b.len() as u64,
        dim: b.dims() as u32,
        attributes: b.attribute_names(),
        has_ann: b.has_ann(),
        has_histories: b.has_attribute(SEEN_ITEMS_ATTRIBUTE),
    }
}

/// The `ModelRef` of a generation.
pub fn model_ref(g: &Generation) -> pb::ModelRef {
    pb::ModelRef {
        name: g.model.clone(),
        version: g.version,
        generation_id: g.id,
    }
}

/// The proto `ModelInfo` of a snapshot.
pub fn model_info(s: &ModelSnapshot, include_schema: bool) -> pb::ModelInfo {
    let versions = s
        .versions
        .iter()
        .map(|v| {
            let g = v.generation.as_ref();
            let (metrics, provenance) = g
                .map(|g| metrics_and_provenance(g.encoder.metadata()))
                .unwrap_or_default();
            pb::VersionInfo {
                version: v.version,
                state: match v.status.state {
                    VersionState::Loading => pb::VersionState::Loading,
                    VersionState::Ready => pb::VersionState::Ready,
                    VersionState::Failed => pb::VersionState::Failed,
                    VersionState::Unloading => pb::VersionState::Unloading,
                    VersionState::Unloaded => pb::VersionState::Unloaded,
                } as i32,
                reason: v.status.reason.clone(),
                generation_id: g.map_or(0, |g| g.id),
                labels: v.labels.clone(),
                is_default: v.is_default,
                state_since: Some(timestamp(v.status.since)),
                load_duration: v.status.load_duration.map(duration),
                architecture: g.map(|g| architecture(g)),
                schema: if include_schema {
                    g.map(|g| schema(g.encoder.metadata()))
                } else {
                    None
                },
                metrics: metrics.into_iter().collect(),
                provenance: provenance.into_iter().collect(),
                items_index: g.and_then(|g| g.items.as_deref()).map(index_info),
                users_index: g.and_then(|g| g.users.as_deref()).map(index_info),
                mapped_bytes: g.map_or(0, |g| g.mapped_bytes()),
                packed_bytes: g.map_or(0, |g| g.report.bytes_packed as u64),
            }
        })
        .collect();
    pb::ModelInfo {
        name: s.name.clone(),
        default_version: s.default_version,
        labels: s.labels.clone().into_iter().collect(),
        version_policy: s.policy.to_string(),
        versions,
    }
}

/// The ListModels answer.
pub fn list_models(
    (snapshots, default_model): (Vec<ModelSnapshot>, String),
    include_schema: bool,
) -> pb::ListModelsResponse {
    pb::ListModelsResponse {
        models: snapshots
            .iter()
            .map(|s| model_info(s, include_schema))
            .collect(),
        default_model,
    }
}
