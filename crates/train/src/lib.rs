//! `profiled-train`: dataset loaders (RecBole atomic files, ML-100K fetch),
//! the seeded synthetic generator, the candle trainer, the evaluation
//! protocol with its baselines, and model export.
#![forbid(unsafe_code)]

pub mod data;
