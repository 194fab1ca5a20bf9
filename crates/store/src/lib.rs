//! `profiled-store`: the model repository on disk and the registry of loaded
//! generations.
//!
//! - Layout: `<root>/<name>/<version>/` (version = positive integer, never
//!   modified once published) with an optional `labels.json` per model
//!   (`{"stable": 3, "canary": 4}`); see [`repo`].
//! - [`VersionPolicy`] per model: `latest` (default), `latest:N`, `pinned:V`.
//! - [`Generation`]: one loaded, validated (golden check), warmed version
//!   with a process-unique id. Loaded off the request path
//!   (`spawn_blocking`), then swapped in atomically (`ArcSwap`): requests
//!   call [`Store::resolve`] once and keep the `Arc` for their whole life.
//!   A version that fails to load is recorded (reason, time, count) and never
//!   replaces a serving one. An unloaded version shows as UNLOADING while
//!   requests still hold its generation.
//! - [`IndexData`]: per-row attribute values of the index files (Search's
//!   `include_attributes`) and users' item histories
//!   ([`SEEN_ITEMS_ATTRIBUTE`]).
//! - The watcher ([`Store::spawn_watcher`]): notify (debounced) + a poll.
//! - [`repo::publish`]: atomic publication (temp dir + rename).

#![forbid(unsafe_code)]

pub mod error;
pub mod generation;
pub mod policy;
pub mod repo;
pub mod store;
pub mod watch;

pub use error::{Error, Result};
pub use generation::{
    Generation, ITEMS_INDEX, IndexData, SEEN_ITEMS_ATTRIBUTE, USERS_INDEX, live_generations,
    next_generation_id,
};
pub use policy::VersionPolicy;
pub use repo::publish;
pub use store::{
    ModelSnapshot, Selector, Store, StoreConfig, VersionSnapshot, VersionState, VersionStatus,
};
pub use watch::WatcherHandle;
