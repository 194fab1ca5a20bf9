//! Live user state through the core: Track (store events and field
//! changes), GetUser, DeleteUser, and the one resolution of a user id that
//! Embed, Search and Explain share — the user's live stored state (the
//! profile is computed from it, through the hot cache and the batcher), else
//! the users index snapshot, else NOT_FOUND — with request-time context
//! merged on top for one call.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use profiled_model::{Event, UserFeatures};
use profiled_state::{Applied, Policy, UserState, UserStateStore, UserUpdate};
use profiled_store::Generation;

use super::schema::{InputKind, input_kind_of};
use super::{Deadline, Engine, FeatureInput, ModelSel, Profile};
use crate::config::Limits;
use crate::error::ApiError;

/// One user of a Track call, as an edge received it: validated and
/// converted against the model's schema only by the core.
pub trait TrackInput: Send + Sync {
    /// The user id as sent.
    fn user_id(&self) -> &str;
    /// Number of events (for the per-call limit, before any conversion).
    fn event_count(&self) -> usize;
    /// Validates and converts against `generation`'s input schema; errors
    /// name the offending field under `path` (e.g. `users[2]`).
    fn to_update(
        &self,
        path: &str,
        generation: &Generation,
        limits: &Limits,
    ) -> Result<UserUpdate, ApiError>;
}

/// Plain updates (tests, the stream source): already converted.
impl TrackInput for UserUpdate {
    fn user_id(&self) -> &str {
        &self.user_id
    }

    fn event_count(&self) -> usize {
        self.events.len()
    }

    fn to_update(&self, _: &str, _: &Generation, _: &Limits) -> Result<UserUpdate, ApiError> {
        Ok(self.clone())
    }
}

/// A Track call.
#[derive(Debug, Clone)]
pub struct TrackQuery<T> {
    /// The model whose input schema validates the field changes.
    pub model: ModelSel,
    /// The users, in request order (the same user may come twice).
    pub users: Vec<T>,
    /// Store the valid users and answer each bad one in place.
    pub allow_partial: bool,
}

/// The outcome for one user of a Track call.
#[derive(Debug, Clone)]
pub struct TrackedUser {
    /// The user id as sent.
    pub user_id: String,
    /// What was stored, or this user's error (only with `allow_partial`).
    pub result: Result<Applied, ApiError>,
}

/// A user id with request-time context for one call.
#[derive(Debug, Clone)]
pub struct UserRef<F> {
    /// The user.
    pub id: String,
    /// Fields and events merged on top of the stored state for this call
    /// only (never stored).
    pub context: Option<F>,
}

impl<F> UserRef<F> {
    /// A plain id without context.
    pub fn id(id: impl Into<String>) -> UserRef<F> {
        UserRef {
            id: id.into(),
            context: None,
        }
    }
}

/// What a user id resolved to.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// Features from the live state (and context): computed through the
    /// cache and the batcher.
    Live(UserFeatures),
    /// The users index snapshot's stored profile.
    Snapshot(Profile),
}

/// One page of a user's stored state ([`Engine::get_user`]).
#[derive(Debug, Clone)]
pub struct UserPage {
    /// The state; `events` holds this page only, newest first.
    pub state: UserState,
    /// Retained events in all.
    pub total_events: usize,
    /// The token of the next page, when older events remain.
    pub next_token: Option<String>,
}

/// Events per GetUser page by default, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Engine {
    /// The user state store, or FAILED_PRECONDITION when the server runs
    /// without one.
    fn state_store(&self) -> Result<&Arc<dyn UserStateStore>, ApiError> {
        self.state.as_ref().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "this server keeps no live user state (config state.backend = \"off\")".into(),
            )
        })
    }

    /// INVALID_ARGUMENT for an empty user id or one over
    /// `limits.max_user_id_bytes` (named by `field`, never echoed).
    pub fn check_user_id(&self, field: impl FnOnce() -> String, id: &str) -> Result<(), ApiError> {
        if id.is_empty() {
            return Err(ApiError::invalid(field(), "a user id is required"));
        }
        let max = self.cfg.limits.max_user_id_bytes;
        if id.len() > max {
            return Err(ApiError::Limit {
                field: field(),
                got: format!("{} bytes", id.len()),
                limit: "max_user_id_bytes",
                value: max as u64,
            });
        }
        Ok(())
    }

    /// The apply rules now: `state.retain_events`, raised to the largest
    /// `max_events` of any model this server has resolved (so no model ever
    /// sees fewer events than it reads).
    fn state_policy(&self, generation: &Generation) -> Policy {
        let max_events = generation.encoder.metadata().schema.behaviour.max_events;
        let floor = self.retain_floor.fetch_max(max_events, Ordering::Relaxed);
        Policy {
            retain_events: self.cfg.state.retain_events.max(floor).max(max_events),
            max_clock_skew_s: self.cfg.state.max_clock_skew_s,
            now_s: now_ms() / 1000,
        }
    }

    /// The apply rules for writers outside a request (the event stream):
    /// [`Self::state_policy`]'s, raised to the largest `max_events` of the
    /// default version of every model loaded now, so that events ingested
    /// before any request named a model are kept for it too.
    pub fn ingest_policy(&self) -> Policy {
        let loaded = self
            .store
            .model_names()
            .iter()
            .filter_map(|m| {
                self.store
                    .resolve(m, &profiled_store::Selector::Default)
                    .ok()
            })
            .map(|g| g.encoder.metadata().schema.behaviour.max_events)
            .max()
            .unwrap_or(0);
        let floor = self
            .retain_floor
            .fetch_max(loaded, Ordering::Relaxed)
            .max(loaded);
        Policy {
            retain_events: self.cfg.state.retain_events.max(floor),
            max_clock_skew_s: self.cfg.state.max_clock_skew_s,
            now_s: now_ms() / 1000,
        }
    }

    /// Runs a store operation within the call's deadline (the store
    /// records its own latency per backend and operation).
    async fn within_deadline<T>(
        &self,
        store: &Arc<dyn UserStateStore>,
        op: &'static str,
        deadline: Deadline,
        f: impl Future<Output = Result<T, profiled_state::Error>>,
    ) -> Result<T, ApiError> {
        let r = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), f).await.map_err(|_| {
                ApiError::DeadlineExceeded(format!(
                    "deadline exceeded waiting for the user state store {} ({op})",
                    store.name()
                ))
            })?,
            None => f.await,
        };
        Ok(r?)
    }

    /// Track: validates every user first (nothing is stored when one is bad
    /// and `allow_partial` is off), then stores the valid ones in one apply
    /// (each user all-or-nothing, durable when this returns).
    pub async fn track<T: TrackInput>(
        &self,
        q: TrackQuery<T>,
        deadline: Deadline,
    ) -> Result<Vec<TrackedUser>, ApiError> {
        self.check_serving(deadline)?;
        let store = self.state_store()?.clone();
        let limits = &self.cfg.limits;
        if q.users.is_empty() {
            return Err(ApiError::invalid("users", "at least one user is required"));
        }
        if q.users.len() > limits.max_track_users_per_call {
            return Err(ApiError::Limit {
                field: "users".into(),
                got: format!("{} users", q.users.len()),
                limit: "max_track_users_per_call",
                value: limits.max_track_users_per_call as u64,
            });
        }
        let events: usize = q.users.iter().map(TrackInput::event_count).sum();
        if events > limits.max_track_events_per_call {
            return Err(ApiError::Limit {
                field: "users[].events".into(),
                got: format!("{events} events"),
                limit: "max_track_events_per_call",
                value: limits.max_track_events_per_call as u64,
            });
        }
        let generation = self.resolve(&q.model)?;
        let policy = self.state_policy(&generation);
        let mut answers: Vec<TrackedUser> = Vec::with_capacity(q.users.len());
        let mut updates = Vec::with_capacity(q.users.len());
        let mut slots = Vec::with_capacity(q.users.len());
        for (i, u) in q.users.iter().enumerate() {
            let path = format!("users[{i}]");
            let r = self
                .check_user_id(|| format!("{path}.user_id"), u.user_id())
                .and_then(|()| u.to_update(&path, &generation, limits))
                .and_then(|up| check_clock(&path, up, policy));
            match r {
                Ok(up) => {
                    slots.push(answers.len());
                    updates.push(up);
                    answers.push(TrackedUser {
                        user_id: u.user_id().to_string(),
                        result: Ok(Applied::default()),
                    });
                }
                Err(e) if q.allow_partial => answers.push(TrackedUser {
                    user_id: u.user_id().to_string(),
                    result: Err(e),
                }),
                Err(e) => return Err(e),
            }
        }
        if updates.is_empty() {
            return Ok(answers);
        }
        let results = self
            .within_deadline(&store, "apply", deadline, async {
                Ok(store.apply(updates, policy).await)
            })
            .await?;
        if results.len() != slots.len() {
            return Err(ApiError::Internal(format!(
                "the state store answered {} of {} users",
                results.len(),
                slots.len()
            )));
        }
        let backend = store.backend();
        for (slot, r) in slots.into_iter().zip(results) {
            match r {
                Ok(a) => {
                    metrics::counter!("profiled_track_events_total", "backend" => backend, "outcome" => "stored")
                        .increment(u64::from(a.stored));
                    metrics::counter!("profiled_track_events_total", "backend" => backend, "outcome" => "duplicate")
                        .increment(u64::from(a.duplicates));
                    metrics::counter!("profiled_track_events_total", "backend" => backend, "outcome" => "dropped_too_old")
                        .increment(u64::from(a.dropped_too_old));
                    self.live_changed(&answers[slot].user_id);
                    answers[slot].result = Ok(a);
                }
                // Per user: the rules refused it, or too many writers raced.
                Err(
                    e @ (profiled_state::Error::Invalid { .. }
                    | profiled_state::Error::Contended { .. }),
                ) => {
                    let e = match ApiError::from(e) {
                        ApiError::Invalid { message, .. } => {
                            ApiError::invalid(format!("users[{slot}]"), message)
                        }
                        other => other,
                    };
                    if !q.allow_partial {
                        return Err(e);
                    }
                    answers[slot].result = Err(e);
                }
                // The store failed: the call fails (some users may be
                // stored; a retry with the same event ids is idempotent).
                Err(e) => return Err(e.into()),
            }
        }
        Ok(answers)
    }

    /// One page of `user_id`'s stored state, events newest first.
    /// `page_token` is opaque (from a previous page): it names the state
    /// version it was cut from, and a state that changed since is ABORTED
    /// (start again from the first page).
    pub async fn get_user(
        &self,
        user_id: &str,
        page_size: usize,
        page_token: &str,
        deadline: Deadline,
    ) -> Result<UserPage, ApiError> {
        self.check_serving(deadline)?;
        let store = self.state_store()?.clone();
        self.check_user_id(|| "user_id".into(), user_id)?;
        if page_size > MAX_PAGE {
            return Err(ApiError::invalid(
                "page_size",
                format!("{page_size} is over the largest page of {MAX_PAGE} events"),
            ));
        }
        let size = if page_size == 0 {
            DEFAULT_PAGE
        } else {
            page_size
        };
        let start = parse_page_token(page_token)?;
        let state = self
            .within_deadline(&store, "get", deadline, store.get(user_id))
            .await?
            .filter(|s| !s.erased)
            .ok_or_else(|| {
                ApiError::NotFound(format!("user_id: user {user_id:?} has no live state"))
            })?;
        let offset = match start {
            None => 0,
            Some((version, _)) if version != state.version => {
                return Err(ApiError::Aborted(format!(
                    "page_token: the state of user {user_id:?} changed since that page \
                     (version {version} -> {}); start again without a page token",
                    state.version
                )));
            }
            Some((_, offset)) => offset,
        };
        let total = state.events.len();
        if offset > total {
            return Err(ApiError::invalid(
                "page_token",
                "points past the last event",
            ));
        }
        let end = (offset + size).min(total);
        let page: Vec<_> = state
            .events
            .iter()
            .rev()
            .skip(offset)
            .take(end - offset)
            .cloned()
            .collect();
        let next_token = (end < total).then(|| format!("{}.{end}", state.version));
        Ok(UserPage {
            state: UserState {
                events: page,
                ..state
            },
            total_events: total,
            next_token,
        })
    }

    /// Erases `user_id`'s state; `true` when there was live state. After
    /// it returns no call resolves the user by id (its users index snapshot
    /// is hidden too), and lookalike searches no longer return it (it is
    /// removed from the live users indexes).
    pub async fn delete_user(&self, user_id: &str, deadline: Deadline) -> Result<bool, ApiError> {
        self.check_serving(deadline)?;
        let store = self.state_store()?.clone();
        self.check_user_id(|| "user_id".into(), user_id)?;
        let existed = self
            .within_deadline(&store, "delete", deadline, store.delete(user_id))
            .await?;
        // Out of the live users indexes at once; and once more by the next
        // refresh, in case one encoding the old state was in flight.
        self.live_erase(user_id).await;
        self.live_changed(user_id);
        Ok(existed)
    }

    /// Resolves a user id on `generation`: live state (merged with the
    /// context), else — when the call can use a stored vector
    /// (`snapshot_ok`) and sent no context — the users index snapshot,
    /// else NOT_FOUND. `path` names the id in errors (e.g.
    /// `users[2].user_id`).
    pub(crate) async fn resolve_user<F: FeatureInput>(
        &self,
        generation: &Generation,
        user: &UserRef<F>,
        path: &str,
        snapshot_ok: bool,
        deadline: Deadline,
    ) -> Result<Resolved, ApiError> {
        let id = user.id.as_str();
        self.check_user_id(|| path.to_string(), id)?;
        let context = match &user.context {
            None => None,
            Some(c) => {
                let cpath = format!("{}context", path.trim_end_matches("user_id"));
                if !c.user_id().is_empty() {
                    return Err(ApiError::invalid(
                        format!("{cpath}.user_id"),
                        "must be empty: the context belongs to the user id given beside it",
                    ));
                }
                Some(c.to_features(&cpath, generation, &self.cfg.limits)?)
            }
        };
        if let Some(store) = &self.state {
            match self
                .within_deadline(store, "get", deadline, store.get(id))
                .await?
            {
                Some(s) if s.erased => {
                    return Err(ApiError::NotFound(format!(
                        "{path}: user {id:?} was erased"
                    )));
                }
                Some(s) => {
                    let mut f = state_features(generation, &s);
                    if let Some(c) = context {
                        f.fields.extend(c.fields);
                        f.events.extend(c.events);
                    }
                    return Ok(Resolved::Live(f));
                }
                None => {}
            }
        }
        if let Some(mut c) = context {
            c.user_id = Some(id.to_string());
            return Ok(Resolved::Live(c));
        }
        if !snapshot_ok {
            return Err(ApiError::NotFound(format!(
                "{path}: user {id:?} has no live state (explanations need the user's events \
                 and fields: send features, or Track the user first)"
            )));
        }
        self.stored_profile(generation, id, path)
            .map(Resolved::Snapshot)
    }
}

/// Refuses an update with an event further in the future than the clock
/// skew allows (before anything is stored), naming it.
fn check_clock(path: &str, up: UserUpdate, policy: Policy) -> Result<UserUpdate, ApiError> {
    let latest = policy.now_s.saturating_add(policy.max_clock_skew_s);
    if let Some((j, e)) = up
        .events
        .iter()
        .enumerate()
        .find(|(_, e)| e.timestamp > latest)
    {
        return Err(ApiError::invalid(
            format!("{path}.events[{j}].timestamp"),
            format!(
                "{} is {} s in the future (state.max_clock_skew_s = {}) for user {:?}",
                e.timestamp,
                e.timestamp - policy.now_s,
                policy.max_clock_skew_s,
                up.user_id
            ),
        ));
    }
    Ok(up)
}

/// The features of a stored state for `generation`'s schema: the fields the
/// model reads, in a kind it accepts (a categorical and a number convert
/// into each other; anything else is left out, so the model sees its
/// "missing" token), and every retained event. Fields the model does not
/// know are ignored (a state written for another schema).
pub fn state_features(generation: &Generation, s: &UserState) -> UserFeatures {
    let meta = generation.encoder.metadata();
    let fields = s
        .fields
        .iter()
        .filter(|(name, value)| {
            let Some(want) = input_kind_of(meta, name) else {
                return false;
            };
            let got = InputKind::of(value);
            got == want || (got.is_scalar() && want.is_scalar())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let events = s
        .events
        .iter()
        .map(|e| Event {
            item: e.item.clone(),
            timestamp: e.timestamp,
            rating: e.rating,
        })
        .collect();
    UserFeatures {
        user_id: Some(s.user_id.clone()),
        fields,
        events,
    }
}

/// `<version>.<offset>` → (version, offset); empty → `None`.
fn parse_page_token(token: &str) -> Result<Option<(u64, usize)>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || ApiError::invalid("page_token", "not a token from a previous GetUser page");
    let (v, o) = token.split_once('.').ok_or_else(bad)?;
    Ok(Some((
        v.parse().map_err(|_| bad())?,
        o.parse().map_err(|_| bad())?,
    )))
}
