//! `profiled-model`: the request-path model. Loads a model version from disk
//! (mmap), turns plain-Rust [`UserFeatures`] into tokens per the model's
//! schema, computes profiles with `profiled-kernels` and explains them.
//!
//! No proto types appear here: the server converts requests into
//! [`UserFeatures`] at its edge.

pub mod features;

pub use features::{Event, FieldValue, UserFeatures};
