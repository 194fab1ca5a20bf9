//! `profiled-train`: dataset loaders (RecBole atomic files, ML-100K fetch),
//! the seeded synthetic generator, the candle trainer, the evaluation
//! protocol with its baselines, and model export.
#![forbid(unsafe_code)]

pub mod atomic;
pub mod data;
pub mod error;
pub mod eval;
pub mod export;
pub mod fetch;
pub mod model;
pub mod pipeline;
pub mod schema;
pub mod synthetic;
pub mod trainer;

pub use atomic::{ColumnMap, LoadReport, resolve_dataset};
pub use error::{Error, Result};
