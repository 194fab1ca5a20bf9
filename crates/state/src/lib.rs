//! `profiled-state`: live per-user state — the fields and the most recent
//! events of every user tracked through `Track`, `TrackStream` or an event
//! stream — kept durably so that the next profile served for that user, on
//! any replica, reflects what was tracked.
//!
//! - [`UserStateStore`]: the one interface the server uses. Every
//!   [`UserStateStore::apply`] of one user is all-or-nothing, and an `Ok`
//!   means durable (it survives a crash of the server and a restart of the
//!   store). Concurrent updates of the same user, from any number of
//!   processes, never lose an event.
//! - [`merge`](mod@merge): the pure rules every backend applies (time order, duplicate
//!   skipping, the retained window, clock skew), so both backends agree.
//! - Backends: [`embedded`] (the default: a file under a data directory,
//!   group commit) and [`redis`] (a single node or a Redis Cluster; one
//!   hash-tagged key per user, atomic compare-and-set).
//! - [`source`]: event ingestion from outside the API (Redis Streams,
//!   consumer group, at-least-once with idempotent apply).
//! - [`codec`]: the versioned binary record both backends store.
//! - [`config`]: [`StateConfig`] (serde, every field defaulted) and
//!   [`open()`], the factory returning an `Arc<dyn UserStateStore>`.

#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod embedded;
pub mod error;
pub mod merge;
pub mod redis;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

pub use config::{Backend, StateConfig, open};
pub use error::{Error, Result};
pub use merge::merge;
pub use types::{
    Applied, FieldUpdate, Policy, PolicyFn, StoreStats, StoredEvent, UserState, UserStateStore,
    UserUpdate,
};
