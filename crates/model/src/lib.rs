//! `profiled-model`: the request-path model. Loads a model version from disk
//! (mmap), turns plain-Rust [`UserFeatures`] into tokens per the model's
//! schema, computes profiles with `profiled-kernels` and explains them.
//!
//! No proto types appear here: the server converts requests into
//! [`UserFeatures`] at its edge. The trainer (`profiled-train`) writes the
//! files this crate reads; the contract is `docs/model-format.md`. This
//! crate holds the one definition of the format types ([`format`]) and of the
//! tokenizer ([`tokenizer`]); the trainer depends on it for both, so serving
//! never depends on the trainer or candle.
//!
//! ```no_run
//! use profiled_model::{Encoder, UserFeatures, Workspace};
//! # fn main() -> Result<(), profiled_model::Error> {
//! let enc = Encoder::load(std::path::Path::new("models/ml-100k/1"))?;
//! let mut ws = Workspace::new();
//! let users = vec![UserFeatures::default()];
//! let profiles = enc.forward_batch(&users, &mut ws)?;
//! assert_eq!(profiles.len(), 1);
//! # Ok(()) }
//! ```

pub mod encoder;
pub mod error;
pub mod explain;
pub mod features;
pub mod format;
pub mod testing;
pub mod tokenizer;
mod weights;

pub use encoder::{Encoder, LoadOptions, LoadReport, Profiles, Workspace, cosine};
pub use error::{Error, Result};
pub use explain::{
    ExplainOptions, Explanation, GroupAttribution, LayerAttention, Method, Target,
    TokenAttribution, TokenInfo,
};
pub use features::{Event, FieldValue, UserFeatures};
pub use format::{Dtype, Group, ModelJson};
pub use tokenizer::{ResolvedEvent, TokenBatch, TokenStats, Tokenizer, UserTokens};
