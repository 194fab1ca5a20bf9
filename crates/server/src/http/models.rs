//! Model status as JSON (`GET /v1/models`, `GET /v1/models/{name}`, the
//! admin answers). The status is built once, by the gRPC edge's
//! `convert::model_info` (versions, states, architecture, schema, metrics,
//! provenance, indexes), and rendered here field for field, so both ports
//! report the same model the same way.

use std::collections::BTreeMap;

use profiled_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The lower-case name of a proto enum value without its type prefix
/// (`VERSION_STATE_READY` → `ready`).
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// Architecture of a loaded version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Profile vector length.
    pub dim: u32,
    /// Encoder layers.
    pub layers: u32,
    /// Attention heads per layer.
    pub heads: u32,
    /// Feed-forward width.
    pub ffn_dim: u32,
    /// Most tokens of one user (fields + events).
    pub max_tokens: u32,
    /// Parameters.
    pub parameters: u64,
    /// Weight dtype as loaded.
    pub weight_dtype: String,
}

/// One input field of the model's schema.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSchema {
    /// Schema field name.
    pub name: String,
    /// What a request sends for it: `categorical`, `number`, `tags`, or
    /// `unspecified` for fields derived from the events.
    pub kind: String,
    /// Its dimension group.
    pub group: String,
    /// Vocabulary size (categorical).
    pub vocabulary_size: u32,
    /// The vocabulary when small (≤ 100 values).
    pub vocabulary: Vec<String>,
    /// The request input it reads (`fields` key), or `events.*`.
    pub source: String,
    /// How the value is transformed.
    pub transform: String,
}

/// The feature schema of a version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureSchema {
    /// Input fields.
    pub fields: Vec<FieldSchema>,
    /// Most recent events kept.
    pub max_events: u32,
    /// Items the model knows.
    pub item_vocabulary_size: u32,
    /// Event ratings are used.
    pub uses_ratings: bool,
}

/// An index of a version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexInfo {
    /// Rows.
    pub rows: u64,
    /// Vector length.
    pub dim: u32,
    /// Attribute names (filterable).
    pub attributes: Vec<String>,
    /// Has an HNSW sidecar.
    pub has_ann: bool,
    /// Users: has seen-item histories.
    pub has_histories: bool,
}

/// One version of a model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionInfo {
    /// Version number.
    pub version: u64,
    /// `loading`, `ready`, `failed`, `unloading` or `unloaded`.
    pub state: String,
    /// Why it failed or was unloaded.
    pub reason: String,
    /// Generation id while ready (0 otherwise).
    pub generation_id: u64,
    /// Labels pointing to it.
    pub labels: Vec<String>,
    /// The default version of its model.
    pub is_default: bool,
    /// When it entered its state (Unix milliseconds).
    pub state_since_unix_ms: i64,
    /// Duration of its last load (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_duration_ms: Option<f64>,
    /// Architecture (ready versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
    /// Feature schema (ready versions, when asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<FeatureSchema>,
    /// Evaluation metrics recorded at training.
    pub metrics: BTreeMap<String, f64>,
    /// Dataset and training provenance.
    pub provenance: BTreeMap<String, String>,
    /// The items index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_index: Option<IndexInfo>,
    /// The users index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_index: Option<IndexInfo>,
    /// Bytes mapped from the version's files.
    pub mapped_bytes: u64,
    /// Bytes of packed weights.
    pub packed_bytes: u64,
}

/// A model and its versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// The default version (0 when none is ready).
    pub default_version: u64,
    /// Label → version.
    pub labels: BTreeMap<String, u64>,
    /// Version policy, e.g. `latest`.
    pub version_policy: String,
    /// Every known version, newest first.
    pub versions: Vec<VersionInfo>,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListModelsResponse {
    /// Every model.
    pub models: Vec<ModelInfo>,
    /// The model requests without a name get (empty when none).
    pub default_model: String,
}

fn index(i: &pb::IndexInfo) -> IndexInfo {
    IndexInfo {
        rows: i.rows,
        dim: i.dim,
        attributes: i.attributes.clone(),
        has_ann: i.has_ann,
        has_histories: i.has_histories,
    }
}

fn schema(s: &pb::FeatureSchema) -> FeatureSchema {
    FeatureSchema {
        fields: s
            .fields
            .iter()
            .map(|f| FieldSchema {
                name: f.name.clone(),
                kind: enum_name(f.kind().as_str_name(), "FIELD_KIND_"),
                group: enum_name(f.group().as_str_name(), "DIMENSION_GROUP_"),
                vocabulary_size: f.vocabulary_size,
                vocabulary: f.vocabulary.clone(),
                source: f.source.clone(),
                transform: f.transform.clone(),
            })
            .collect(),
        max_events: s.max_events,
        item_vocabulary_size: s.item_vocabulary_size,
        uses_ratings: s.uses_ratings,
    }
}

impl From<&pb::ModelInfo> for ModelInfo {
    fn from(m: &pb::ModelInfo) -> ModelInfo {
        ModelInfo {
            name: m.name.clone(),
            default_version: m.default_version,
            labels: m.labels.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            version_policy: m.version_policy.clone(),
            versions: m
                .versions
                .iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    state: enum_name(v.state().as_str_name(), "VERSION_STATE_"),
                    reason: v.reason.clone(),
                    generation_id: v.generation_id,
                    labels: v.labels.clone(),
                    is_default: v.is_default,
                    state_since_unix_ms: v.state_since.as_ref().map_or(0, |t| {
                        t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
                    }),
                    load_duration_ms: v
                        .load_duration
                        .as_ref()
                        .map(|d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6),
                    architecture: v.architecture.as_ref().map(|a| Architecture {
                        dim: a.dim,
                        layers: a.layers,
                        heads: a.heads,
                        ffn_dim: a.ffn_dim,
                        max_tokens: a.max_tokens,
                        parameters: a.parameters,
                        weight_dtype: a.weight_dtype.clone(),
                    }),
                    schema: v.schema.as_ref().map(schema),
                    metrics: v.metrics.iter().map(|(k, x)| (k.clone(), *x)).collect(),
                    provenance: v
                        .provenance
                        .iter()
                        .map(|(k, x)| (k.clone(), x.clone()))
                        .collect(),
                    items_index: v.items_index.as_ref().map(index),
                    users_index: v.users_index.as_ref().map(index),
                    mapped_bytes: v.mapped_bytes,
                    packed_bytes: v.packed_bytes,
                })
                .collect(),
        }
    }
}

// ----------------------------------------------------------------- admin --

/// Reload: rescan one model (or all), or load exactly `version`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(example = json!({"model": "synth", "wait": true}))]
pub struct ReloadRequest {
    /// Model name (empty = every model).
    pub model: String,
    /// Load exactly this version (needs `model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Answer when the reload is done.
    pub wait: bool,
}

/// Point a label at a version, or remove it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(example = json!({"model": "synth", "label": "stable", "version": 1}))]
pub struct SetLabelRequest {
    /// Model name.
    pub model: String,
    /// Label.
    pub label: String,
    /// The version (a positive integer) unless `remove`.
    pub version: u64,
    /// Remove the label.
    pub remove: bool,
}

/// Unload a version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(example = json!({"model": "synth", "version": 1, "force": false}))]
pub struct UnloadRequest {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Unload even the last ready version.
    pub force: bool,
}

/// The models an admin call answers with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminResponse {
    /// The model(s) after the call.
    pub models: Vec<ModelInfo>,
}
