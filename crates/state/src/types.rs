//! The data model of user state and the [`UserStateStore`] interface.

use std::collections::BTreeMap;

use profiled_model::FieldValue;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One stored behaviour event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Item id as the dataset spells it.
    pub item: String,
    /// Seconds since the Unix epoch (UTC).
    pub timestamp: i64,
    /// Explicit rating, when known (finite).
    pub rating: Option<f32>,
    /// The client's id of this event, when it sent one: the key of
    /// idempotent apply (a second event with the same id is a duplicate).
    /// Without one, the same item at the same timestamp is a duplicate.
    pub event_id: Option<String>,
}

/// One change of a field of the user's input schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldUpdate {
    /// Set input `name` to a value.
    Set(String, FieldValue),
    /// Remove input `name` (the model then sees its "missing" token).
    Clear(String),
}

/// The update of one user: applied all-or-nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserUpdate {
    /// The user (non-empty; the server bounds its length).
    pub user_id: String,
    /// New events, in any order.
    pub events: Vec<StoredEvent>,
    /// Field changes, applied in order after the events.
    pub fields: Vec<FieldUpdate>,
}

/// The rules an apply follows; the same for every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Events kept per user (the newest by timestamp). Older ones are
    /// evicted; a new event older than the whole retained window is dropped
    /// and counted in [`Applied::dropped_too_old`].
    pub retain_events: usize,
    /// Events with a timestamp more than this many seconds after `now_s`
    /// are refused (the whole user's update fails with [`crate::Error::Invalid`]).
    pub max_clock_skew_s: i64,
    /// The current time, seconds since the Unix epoch (passed in so that
    /// tests are deterministic).
    pub now_s: i64,
}

/// Gives the [`Policy`] to apply now (for long-running appliers such as
/// [`crate::source::EventSource`], whose rules can change while they run).
pub type PolicyFn = std::sync::Arc<dyn Fn() -> Policy + Send + Sync>;

/// What an apply did for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Events stored.
    pub stored: u32,
    /// Events skipped as duplicates of stored ones (or of earlier events of
    /// the same update).
    pub duplicates: u32,
    /// Events dropped because they were older than the retained window.
    pub dropped_too_old: u32,
    /// The user's state version after this apply: monotonic per user,
    /// increased by every apply that changed something.
    pub version: u64,
}

/// A user's stored state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserState {
    /// The user.
    pub user_id: String,
    /// Monotonic per user (see [`Applied::version`]).
    pub version: u64,
    /// Field values by input name (the `source` of the model's schema).
    pub fields: BTreeMap<String, FieldValue>,
    /// The retained events, oldest first (by timestamp; ties in arrival
    /// order).
    pub events: Vec<StoredEvent>,
    /// Milliseconds since the Unix epoch of the last change.
    pub updated_ms: i64,
    /// True for the tombstone [`UserStateStore::delete`] leaves: no fields,
    /// no events. An erased user is never served from the users index
    /// snapshot either (erasure covers every profile computed from the
    /// user's events). The next apply starts a fresh state (version keeps
    /// growing) and clears the flag.
    #[serde(default)]
    pub erased: bool,
}

impl UserState {
    /// Roughly the bytes this state takes in memory (for caches' budgets).
    pub fn approx_bytes(&self) -> usize {
        let events: usize = self
            .events
            .iter()
            .map(|e| 48 + e.item.len() + e.event_id.as_ref().map_or(0, String::len))
            .sum();
        96 + self.user_id.len() + events + 64 * self.fields.len()
    }
}

/// Sizes of a store, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Users with live (not erased) stored state.
    pub users: u64,
    /// Bytes the state occupies (file size, or the Redis memory used).
    pub bytes: u64,
}

/// A durable store of user state. Shared by every request of a server (and
/// by the servers of every replica, for a networked backend).
#[async_trait::async_trait]
pub trait UserStateStore: Send + Sync + std::fmt::Debug {
    /// Names the store in errors and metrics, e.g. `embedded:/var/lib/profiled/state`
    /// or `redis-cluster:10.0.0.1:6379,...`.
    fn name(&self) -> &str;

    /// The backend kind for metric labels: `"embedded"` or `"redis"`.
    fn backend(&self) -> &'static str;

    /// Applies `updates` in order (the same user twice is applied twice, in
    /// order), each user all-or-nothing. The result has one entry per
    /// update. An `Ok` entry is durable when this returns.
    async fn apply(&self, updates: Vec<UserUpdate>, policy: Policy) -> Vec<Result<Applied>>;

    /// The stored state of `user_id`, `None` when it was never tracked, or
    /// the tombstone (`erased = true`) when it was erased.
    async fn get(&self, user_id: &str) -> Result<Option<UserState>>;

    /// Erases `user_id`'s state, leaving a tombstone; `true` when there was
    /// live state. Durable when it returns.
    async fn delete(&self, user_id: &str) -> Result<bool>;

    /// Sizes, for metrics (may be approximate for a cluster).
    async fn stats(&self) -> Result<StoreStats>;
}
