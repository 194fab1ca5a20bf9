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
//! - A generation's indexes are `profiled_index::SearchBackend`s opened by
//!   the configured `BackendFactory` ([`StoreConfig::indexes`]); they answer
//!   everything Search needs per row (attributes, titles, users' seen items
//!   under [`SEEN_ITEMS_ATTRIBUTE`], vectors).
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
    Generation, ITEMS_INDEX, SEEN_ITEMS_ATTRIBUTE, USERS_INDEX, live_generations,
    next_generation_id,
};
pub use policy::VersionPolicy;
pub use repo::publish;
pub use store::{
    ModelSnapshot, Selector, Store, StoreConfig, VersionSnapshot, VersionState, VersionStatus,
};
pub use watch::WatcherHandle;

/// Lowers the calling thread's CPU priority by `by` nice steps (at most to
/// 19), so background work yields to request handling. On Linux the nice
/// value is per thread. Best effort: without the means (other systems, a
/// refusing kernel) the thread keeps its priority and a debug line says why.
pub fn lower_thread_priority(by: i32) {
    if by <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(Some(tid), (current + by).min(19)) {
            tracing::debug!(error = %e, "cannot lower the thread priority");
        }
    }
}
