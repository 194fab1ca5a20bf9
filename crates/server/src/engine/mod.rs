//! The core: every request the server answers, in plain domain types (no
//! proto type below this line). The gRPC service (and any other edge) turns
//! its messages into the queries here with `crate::convert`, calls one
//! function, and turns the answer back.
//!
//! - [`Engine`] (this file): the model store, the hot cache, the per-model
//!   batchers, the drain flag and the Explain slots; model resolution.
//! - [`cache`]: the cache key, cache modes, hit-first lookup and coalesced
//!   misses ([`Engine::profile`]).
//! - [`embed`]: [`EmbedQuery`] → [`Embedded`].
//! - [`search`]: [`SearchQuery`] → [`Found`] (nearest items, lookalikes).
//! - [`explain`]: [`ExplainQuery`] → [`Explained`].
//! - [`models`]: model status and the admin operations.
//! - [`users`]: live user state (Track, GetUser, DeleteUser) and the one
//!   resolution of a user id (live state, else users index, else
//!   NOT_FOUND) that Embed, Search and Explain share.
//! - [`live`]: the refresher that keeps the live users index current with
//!   the user state (tracked users re-encoded, erased users removed).
//! - [`schema`]: the value kind each model input accepts.
//!
//! Features arrive as anything that implements [`FeatureInput`]: the edge's
//! message (converted only on a cache miss) or plain `UserFeatures`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use profiled_model::UserFeatures;
use profiled_store::{Generation, Selector, Store};

use crate::batcher::Batcher;
use crate::config::{Config, Limits};
use crate::error::ApiError;

pub mod cache;
pub mod embed;
pub mod explain;
pub mod live;
pub mod models;
pub mod schema;
pub mod search;
#[cfg(test)]
mod tests;
pub mod users;

pub use cache::{CacheKey, CacheUse, Profile};
pub use embed::{EmbedQuery, Embedded, EmbeddedUser, ProfileSource, UserQuery};
pub use explain::{ExplainQuery, ExplainTarget, Explained};
pub use search::{Found, FoundRow, SearchFilter, SearchQuery, SearchTarget, Seeds};
pub use users::{TrackInput, TrackQuery, TrackedUser, UserPage, UserRef};

/// The deadline of a call (`None`: no deadline).
pub type Deadline = Option<Instant>;

/// Which model version a request asks for: a model name (empty = the
/// default model) and a selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelSel {
    /// Model name; empty for the default model.
    pub name: String,
    /// Default version, a pinned version or a label.
    pub selector: Selector,
}

/// A user's features as an edge received them. The core asks for the cache
/// key first, so a cache hit needs no conversion; only a miss converts (and
/// validates) them against the generation's schema.
pub trait FeatureInput: Send + Sync {
    /// The user id the client sent ("" when none).
    fn user_id(&self) -> &str;
    /// Exactly `UserFeatures::canonical_bytes()` of what
    /// [`FeatureInput::to_features`] builds, or `None` for input that can
    /// never be valid.
    fn cache_bytes(&self) -> Option<Vec<u8>>;
    /// Validates and converts against `generation`'s schema; errors name
    /// the offending field under `path` (e.g. `users[2].features`).
    fn to_features(
        &self,
        path: &str,
        generation: &Generation,
        limits: &Limits,
    ) -> Result<UserFeatures, ApiError>;
    /// The item ids of the user's events (Search's `exclude_seen_items`).
    fn event_items(&self) -> Vec<String>;
}

/// Plain features (tests, tools, and state read from a store): already
/// validated by their producer; the tokenizer checks the rest.
impl FeatureInput for UserFeatures {
    fn user_id(&self) -> &str {
        self.user_id.as_deref().unwrap_or("")
    }

    fn cache_bytes(&self) -> Option<Vec<u8>> {
        Some(self.canonical_bytes())
    }

    fn to_features(&self, _: &str, _: &Generation, _: &Limits) -> Result<UserFeatures, ApiError> {
        Ok(self.clone())
    }

    fn event_items(&self) -> Vec<String> {
        self.events.iter().map(|e| e.item.clone()).collect()
    }
}

/// The shared state of the services.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    cfg: Config,
    cache: cache::HotCache,
    batchers: DashMap<String, Arc<Batcher>>,
    draining: AtomicBool,
    explain_slots: tokio::sync::Semaphore,
    stream_users: Arc<tokio::sync::Semaphore>,
    /// Live user state (`None`: `state.backend = "off"`).
    state: Option<Arc<dyn profiled_state::UserStateStore>>,
    /// The largest `max_events` of the models resolved so far: the state
    /// keeps at least this many events per user.
    retain_floor: AtomicUsize,
    /// The live users index refresher (`None`: no state, or `index.live`
    /// off).
    live: Option<Arc<live::LiveRefresh>>,
}

/// DEADLINE_EXCEEDED when `deadline` has passed.
pub(crate) fn remaining(deadline: Deadline) -> Result<(), ApiError> {
    if deadline.is_some_and(|d| d <= Instant::now()) {
        return Err(ApiError::DeadlineExceeded(
            "deadline exceeded before the work started".into(),
        ));
    }
    Ok(())
}

impl Engine {
    /// An engine over `store` with `cfg`.
    pub fn new(store: Store, cfg: Config) -> Engine {
        let workers = if cfg.batcher.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.batcher.workers
        };
        Engine {
            store,
            cache: cache::HotCache::new(&cfg.cache),
            stream_users: Arc::new(tokio::sync::Semaphore::new(Engine::stream_capacity(&cfg))),
            cfg,
            batchers: DashMap::new(),
            draining: AtomicBool::new(false),
            explain_slots: tokio::sync::Semaphore::new(workers),
            state: None,
            retain_floor: AtomicUsize::new(0),
            live: None,
        }
    }

    /// The engine with a live user state store (Track, GetUser, DeleteUser,
    /// and user ids resolving to live state first).
    pub fn with_state(mut self, state: Arc<dyn profiled_state::UserStateStore>) -> Engine {
        self.state = Some(state);
        self
    }

    /// The user state store, when there is one.
    pub fn state(&self) -> Option<&Arc<dyn profiled_state::UserStateStore>> {
        self.state.as_ref()
    }

    /// Users that all streams together may have in the core at once: half
    /// the batcher queue (the other half stays for unary calls), at least
    /// one call's worth.
    fn stream_capacity(cfg: &Config) -> usize {
        (cfg.batcher.queue_capacity / 2)
            .max(cfg.limits.max_users_per_call)
            .min(cfg.batcher.queue_capacity)
            .max(1)
    }

    /// Admits the next batch of a stream: waits until its `users` fit in the
    /// streams' shared budget ([`Engine::stream_capacity`]) and holds them
    /// until the permit drops (when the batch is answered). A stream that
    /// waits here reads no further message, so HTTP/2 flow control pushes
    /// back on its client instead of the batcher queue shedding its batches.
    pub async fn admit_stream_batch(
        &self,
        users: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let cap = Engine::stream_capacity(&self.cfg);
        let n = u32::try_from(users.clamp(1, cap)).unwrap_or(u32::MAX);
        self.stream_users
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))
    }

    /// The request limits (`limits.*`).
    pub fn limits(&self) -> &Limits {
        &self.cfg.limits
    }

    /// Starts the drain: new data-plane calls answer UNAVAILABLE.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True while draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// True when at least one model can serve (for health).
    pub fn any_ready(&self) -> bool {
        self.store.any_ready()
    }

    /// UNAVAILABLE while draining (the one draining message), then the
    /// deadline check.
    pub fn check_serving(&self, deadline: Deadline) -> Result<(), ApiError> {
        if self.is_draining() {
            return Err(ApiError::Unavailable(
                "the server is draining (shutting down); retry on another replica".into(),
            ));
        }
        remaining(deadline)
    }

    fn batcher(&self, model: &str) -> Result<Arc<Batcher>, ApiError> {
        if let Some(b) = self.batchers.get(model) {
            return Ok(b.clone());
        }
        let b = Arc::new(Batcher::new(model, &self.cfg.batcher)?);
        Ok(self
            .batchers
            .entry(model.to_string())
            .or_insert(b)
            .value()
            .clone())
    }

    /// The generation a request runs on (taken once, kept for the whole call).
    pub fn resolve(&self, model: &ModelSel) -> Result<Arc<Generation>, ApiError> {
        self.check_name("model.name", &model.name)?;
        if let Selector::Label(label) = &model.selector {
            self.check_name("model.label", label)?;
        }
        Ok(self.store.resolve(&model.name, &model.selector)?)
    }

    /// INVALID_ARGUMENT for a caller-given name or id over
    /// `limits.max_string_bytes` (named by `field`, never echoed).
    pub fn check_name(&self, field: &str, value: &str) -> Result<(), ApiError> {
        ApiError::check_string(|| field.into(), value, self.cfg.limits.max_string_bytes)
    }
}
