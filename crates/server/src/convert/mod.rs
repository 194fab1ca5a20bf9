//! The edge: the only code that touches proto types, in both directions.
//! Requests become the core's plain queries (`crate::engine`), validated as
//! far as the message alone allows, with the offending field named in
//! request terms; the core's answers become responses.
//!
//! - [`features`]: `UserFeatures` (the core's `FeatureInput`), the cache key
//!   written straight from the message, and the inverse for clients.
//! - [`embed`], [`search`] (with `TryFrom<&pb::Filter>`), [`explain`]: one
//!   request → query and answer → response pair each.
//! - [`models`]: model status messages (`ModelInfo`, schema, architecture).
//! - [`users`]: Track (`UserTrack` is the core's `TrackInput`), GetUser.

use profiled_proto::v1 as pb;
use profiled_store::Selector;

use crate::engine::{CacheUse, ModelSel};
use crate::error::ApiError;

pub mod embed;
pub mod explain;
pub mod features;
pub mod models;
pub mod search;
pub mod users;

pub use features::{cache_key, features, to_proto};
pub use models::{group, model_info, model_ref};

/// The model selection of a `ModelSpec` (unset = default model, default version).
pub fn model_sel(spec: Option<&pb::ModelSpec>) -> Result<ModelSel, ApiError> {
    let Some(spec) = spec else {
        return Ok(ModelSel::default());
    };
    let selector = match &spec.selector {
        None => Selector::Default,
        Some(pb::model_spec::Selector::Version(0)) => {
            return Err(ApiError::invalid(
                "model.version",
                "versions are positive integers",
            ));
        }
        Some(pb::model_spec::Selector::Version(v)) => Selector::Version(*v),
        Some(pb::model_spec::Selector::Label(l)) if l.is_empty() => {
            return Err(ApiError::invalid("model.label", "empty label"));
        }
        Some(pb::model_spec::Selector::Label(l)) => Selector::Label(l.clone()),
    };
    Ok(ModelSel {
        name: spec.name.clone(),
        selector,
    })
}

/// The cache use of a `CacheMode` (unknown numbers = default).
pub fn cache_use(v: i32) -> CacheUse {
    match pb::CacheMode::try_from(v) {
        Ok(pb::CacheMode::Bypass) => CacheUse::Bypass,
        Ok(pb::CacheMode::Refresh) => CacheUse::Refresh,
        _ => CacheUse::Use,
    }
}

/// Whether vectors are to be answered in f16.
pub fn wants_f16(encoding: i32) -> bool {
    matches!(
        pb::VectorEncoding::try_from(encoding),
        Ok(pb::VectorEncoding::F16)
    )
}

/// A vector in the answer's encoding.
pub fn vector(values: &[f32], f16: bool) -> pb::Vector {
    if f16 {
        pb::Vector::from_f32_as_f16(values)
    } else {
        pb::Vector::from_f32(values.to_vec())
    }
}

/// A request vector's components (either encoding); the core checks the
/// dimension and finiteness.
pub fn vector_values(path: &str, v: &pb::Vector) -> Result<Vec<f32>, ApiError> {
    v.to_f32()
        .map_err(|e| ApiError::invalid(path, e.to_string()))
}
