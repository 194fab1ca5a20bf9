//! The live users index's refresher (issue 17): Track marks the users whose
//! state changed; a background task ([`Engine::run_live_refresh`]) re-encodes
//! them from their stored state — through the hot cache and the batcher, as
//! Embed by id does — and upserts them into the users index of each model's
//! serving generation (`SearchBackend::live()`), so that lookalike search
//! sees the profiles Embed serves within `index.live_refresh_ms`. DeleteUser
//! removes the user from those indexes at once ([`Engine::live_erase`]).
//!
//! Marks coalesce per user (a user tracked ten times in a tick is encoded
//! once), so the pending set is bounded by the users that changed within
//! one tick. Metrics: `profiled_live_index_lag_seconds` (the oldest change
//! not yet searchable, or the last batch's oldest), `profiled_live_index_rows`
//! (`kind` = live, delta, masked), `profiled_live_index_updates_total`
//! (`op` = upsert, delete, failed), `profiled_live_index_merges_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use profiled_index::{LiveOp, LiveRow, SEEN_ITEMS_ATTRIBUTE};
use profiled_model::{FieldValue, UserFeatures};
use profiled_store::{Generation, Selector};

use super::Engine;
use super::cache::CacheUse;
use super::users::state_features;

/// Users encoded at once by one refresh.
const ENCODE_CONCURRENCY: usize = 64;

/// The users whose state changed since the last refresh (see the module
/// docs).
#[derive(Debug)]
pub struct LiveRefresh {
    /// User id → when its first unrefreshed change was marked.
    pending: Mutex<HashMap<String, Instant>>,
    wake: tokio::sync::Notify,
    refresh: Duration,
    /// User id → when DeleteUser erased it from the live indexes. A refresh
    /// that read the user's state before that moment must not put the user
    /// back; held (see [`LiveRefresh::erasing`]) across the check and the
    /// apply on both sides, so an erasure cannot fall between them.
    erased: Mutex<HashMap<String, Instant>>,
}

impl LiveRefresh {
    /// A refresher whose changes show within `refresh`.
    pub fn new(refresh: Duration) -> LiveRefresh {
        LiveRefresh {
            pending: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            refresh,
            erased: Mutex::new(HashMap::new()),
        }
    }

    /// The erasures map, locked (for as long as an apply runs).
    fn erasing(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.erased.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `id` as changed now (a user already pending keeps its first
    /// mark: the lag counts from the oldest change).
    pub fn mark(&self, id: &str) {
        self.lock()
            .entry(id.to_string())
            .or_insert_with(Instant::now);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<(String, Instant)> {
        self.lock().drain().collect()
    }

    fn oldest(&self) -> Option<Instant> {
        self.lock().values().min().copied()
    }
}

/// The users index attributes of a user's features, as `profilectl index
/// build` writes them: each field's values (a categorical as is, an
/// integral number as an integer, a tag mix by tag name), `age_bucket` for
/// a numeric `age`, and the event items as `seen_items`.
pub fn live_attributes(f: &UserFeatures) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &f.fields {
        let values: Vec<String> = match value {
            FieldValue::Categorical(s) => vec![s.clone()],
            FieldValue::Number(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => {
                vec![format!("{}", *x as i64)]
            }
            FieldValue::Number(_) => Vec::new(),
            FieldValue::Tags(tags) => tags.iter().map(|(t, _)| t.clone()).collect(),
        };
        if !values.is_empty() {
            out.entry(name.clone()).or_default().extend(values);
        }
        if let (FieldValue::Number(age), "age") = (value, name.as_str())
            && age.is_finite()
        {
            out.entry("age_bucket".into())
                .or_default()
                .push(profiled_model::features::age_bucket(*age).to_string());
        }
    }
    let seen: Vec<String> = f.events.iter().map(|e| e.item.clone()).collect();
    if !seen.is_empty() {
        out.insert(SEEN_ITEMS_ATTRIBUTE.to_string(), seen);
    }
    for v in out.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    out
}

impl Engine {
    /// The engine with the live users index refresher (needs a state store).
    pub fn with_live_refresh(mut self, refresh: Duration) -> Engine {
        self.live = Some(Arc::new(LiveRefresh::new(refresh)));
        self
    }

    /// Marks user `id`'s state as changed (no-op without the refresher).
    pub(crate) fn live_changed(&self, id: &str) {
        if let Some(l) = &self.live {
            l.mark(id);
        }
    }

    /// The serving generation of every model whose users index is live.
    fn live_generations(&self) -> Vec<Arc<Generation>> {
        self.store
            .model_names()
            .into_iter()
            .filter_map(|m| self.store.resolve(&m, &Selector::Default).ok())
            .filter(|g| g.users.as_ref().is_some_and(|u| u.live().is_some()))
            .collect()
    }

    /// Removes `id` from the live users index of every serving generation
    /// now (DeleteUser: an erased user vanishes from lookalikes at once).
    pub(crate) async fn live_erase(&self, id: &str) {
        let Some(live) = self.live.clone() else {
            return;
        };
        for g in self.live_generations() {
            let Some(users) = g.users.clone() else {
                continue;
            };
            let op = vec![LiveOp::Delete(id.to_string())];
            let model = g.model.clone();
            let (live, user) = (Arc::clone(&live), id.to_string());
            let r = tokio::task::spawn_blocking(move || {
                let mut erased = live.erasing();
                erased.insert(user, Instant::now());
                match users.live() {
                    Some(l) => l.apply(op).map(|a| a.deleted),
                    None => Ok(0),
                }
            })
            .await;
            match r {
                Ok(Ok(n)) => {
                    metrics::counter!("profiled_live_index_updates_total", "model" => model, "op" => "delete")
                        .increment(n as u64);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, %model, "live users index: erase failed"),
                Err(e) => tracing::warn!(error = %e, %model, "live users index: erase task failed"),
            }
        }
    }

    /// Refreshes the live users indexes until `stop` turns true: wakes on a
    /// mark, lets the marks of a short window (a tenth of the bound, at most
    /// 100 ms) join, then encodes and applies them.
    pub async fn run_live_refresh(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(live) = self.live.clone() else {
            return;
        };
        let window = (live.refresh / 10).min(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = live.wake.notified() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            tokio::time::sleep(window).await;
            let batch = live.take();
            if batch.is_empty() {
                continue;
            }
            self.live_refresh_once(&live, batch).await;
        }
    }

    /// Encodes `batch` for every live generation and applies it.
    async fn live_refresh_once(&self, live: &Arc<LiveRefresh>, batch: Vec<(String, Instant)>) {
        let Some(store) = self.state.clone() else {
            return;
        };
        let oldest = batch.iter().map(|(_, t)| *t).min();
        let read_start = Instant::now();
        // Every user's state once, for all models.
        let deadline = Some(Instant::now() + live.refresh);
        let states: Vec<(String, Option<profiled_state::UserState>)> =
            futures::stream::iter(batch.into_iter().map(|(id, _)| {
                let store = store.clone();
                async move {
                    let s = match store.get(&id).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, user = %id, "live users index: state read failed");
                            None
                        }
                    };
                    (id, s)
                }
            }))
            .buffer_unordered(ENCODE_CONCURRENCY)
            .collect()
            .await;
        for g in self.live_generations() {
            let model = g.model.clone();
            let ops: Vec<Option<LiveOp>> = futures::stream::iter(states.iter().cloned().map(|(id, s)| {
                let g = g.clone();
                async move {
                    match s {
                        Some(s) if !s.erased => {
                            let f = state_features(&g, &s);
                            let p = self
                                .profile_of(&g, &f, "live", CacheUse::Use, deadline)
                                .await;
                            match p {
                                Ok(p) => Some(LiveOp::Upsert(LiveRow {
                                    id,
                                    vector: p.vector.to_vec(),
                                    attributes: live_attributes(&f),
                                })),
                                Err(e) => {
                                    tracing::debug!(error = %e, user = %id, "live users index: encoding failed");
                                    None
                                }
                            }
                        }
                        _ => Some(LiveOp::Delete(id)),
                    }
                }
            }))
            .buffer_unordered(ENCODE_CONCURRENCY)
            .collect()
            .await;
            let failed = ops.iter().filter(|o| o.is_none()).count();
            let ops: Vec<LiveOp> = ops.into_iter().flatten().collect();
            let Some(users) = g.users.clone() else {
                continue;
            };
            let erasures = Arc::clone(live);
            let r = tokio::task::spawn_blocking(move || {
                // A user erased after its state was read stays erased.
                let erased = erasures.erasing();
                let ops: Vec<LiveOp> = ops
                    .into_iter()
                    .filter(|op| match op {
                        LiveOp::Upsert(row) => erased.get(&row.id).is_none_or(|t| *t < read_start),
                        _ => true,
                    })
                    .collect();
                match users.live() {
                    Some(l) => l.apply(ops).map(|a| (a, l.stats())),
                    None => Err(profiled_index::Error::InvalidArgument(
                        "the users index is not live".into(),
                    )),
                }
            })
            .await;
            let label = model.clone();
            metrics::counter!("profiled_live_index_updates_total", "model" => label.clone(), "op" => "failed")
                .increment(failed as u64);
            match r {
                Ok(Ok((a, st))) => {
                    metrics::counter!("profiled_live_index_updates_total", "model" => label.clone(), "op" => "upsert")
                        .increment(a.upserted as u64);
                    metrics::counter!("profiled_live_index_updates_total", "model" => label.clone(), "op" => "delete")
                        .increment(a.deleted as u64);
                    for (kind, v) in [
                        ("live", st.live_rows),
                        ("delta", st.delta_rows),
                        ("masked", st.masked_base_rows),
                    ] {
                        metrics::gauge!("profiled_live_index_rows", "model" => label.clone(), "kind" => kind)
                            .set(v as f64);
                    }
                    metrics::counter!("profiled_live_index_merges_total", "model" => label.clone())
                        .absolute(st.merges);
                    if !a.ann_errors.is_empty() {
                        tracing::warn!(%model, errors = a.ann_errors.len(), first = %a.ann_errors[0],
                            "live users index: HNSW updates failed (the exact path has the rows)");
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, %model, "live users index: apply failed"),
                Err(e) => tracing::warn!(error = %e, %model, "live users index: apply task failed"),
            }
        }
        // The lag: this batch's oldest change, or an older one still waiting.
        let now = Instant::now();
        let lag = [oldest, live.oldest()]
            .into_iter()
            .flatten()
            .map(|t| now.saturating_duration_since(t))
            .max()
            .unwrap_or_default();
        metrics::gauge!("profiled_live_index_lag_seconds").set(lag.as_secs_f64());
        // Erasures older than this refresh's reads cannot race a later one.
        live.erasing().retain(|_, t| *t >= read_start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiled_model::Event;

    #[test]
    fn attributes_follow_the_index_builder() {
        let f = UserFeatures {
            user_id: Some("u".into()),
            fields: [
                (
                    "occupation".to_string(),
                    FieldValue::Categorical("engineer".into()),
                ),
                ("age".to_string(), FieldValue::Number(34.0)),
                ("score".to_string(), FieldValue::Number(0.5)),
                (
                    "genres".to_string(),
                    FieldValue::Tags(vec![("Drama".into(), 0.6), ("Comedy".into(), 0.4)]),
                ),
            ]
            .into(),
            events: vec![
                Event {
                    item: "7".into(),
                    timestamp: 2,
                    rating: None,
                },
                Event {
                    item: "3".into(),
                    timestamp: 1,
                    rating: Some(4.0),
                },
                Event {
                    item: "7".into(),
                    timestamp: 3,
                    rating: None,
                },
            ],
        };
        let a = live_attributes(&f);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(a.get("occupation"), Some(&s(&["engineer"])));
        assert_eq!(a.get("age"), Some(&s(&["34"])));
        assert_eq!(a.get("age_bucket"), Some(&s(&["25-34"])));
        assert_eq!(a.get("genres"), Some(&s(&["Comedy", "Drama"])));
        assert_eq!(a.get(SEEN_ITEMS_ATTRIBUTE), Some(&s(&["3", "7"])));
        assert!(!a.contains_key("score"));
    }
}
