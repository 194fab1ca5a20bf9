//! The evaluation protocol (RecBole's `ml-1m_seq` benchmark protocol) and its baselines.
//!
//! 1. Keep interactions with rating ≥ [`ProtocolConfig::min_rating`] (3);
//!    interactions without a rating are kept and counted.
//! 2. Iterative k-core filter ([`ProtocolConfig::core`] = 10): drop users and
//!    items with fewer than k remaining interactions, repeat until stable
//!    (the result is the unique maximal k-core).
//! 3. Each user's events sorted by time, ties kept in file order.
//! 4. Chronological leave-one-out: last = test, second-to-last = validation,
//!    the rest = train. Users with fewer than 3 events cannot be split; they
//!    are counted in [`SplitStats::users_too_short`] and not evaluated.
//! 5. Full ranking over every item left after filtering ([`Split::items`]);
//!    HR@k, NDCG@k, MRR@k with ties counted against the target
//!    ([`metrics::rank_of`]).
//! 6. Two variants from the same scores: **masked** (items of the user's
//!    history before the target are excluded from the ranking, never the
//!    target itself) and **unmasked** (RecBole 1.2.1's behaviour for
//!    sequential models).
//!
//! A model is a [`Scorer`]. For the test target the history is every event
//! before it (train + validation); for the validation target, the train part.
//! Baselines ([`baselines`]) are fitted on every event before the evaluated
//! targets (train + validation for the test stage, train for validation).

pub mod baselines;
pub mod metrics;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::fetch::hex;
pub use metrics::{Metrics, MetricsAccumulator, metrics_at, rank_of};

/// Identifier of this protocol, recorded with splits and results.
pub const PROTOCOL: &str = "loo-chrono/rating>=min/k-core/full-ranking/v1";

/// Parameters of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProtocolConfig {
    /// Keep interactions with rating ≥ this (`None`: keep all).
    pub min_rating: Option<f32>,
    /// Minimum interactions per user and per item (iterative filter; 0 or 1: off).
    pub core: usize,
    /// Cut-off of the metrics.
    pub k: usize,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            min_rating: Some(3.0),
            core: 10,
            k: 10,
        }
    }
}

/// One event of a user's filtered, chronological sequence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Index into [`Dataset::interactions`].
    pub interaction: u32,
    /// Dense item index into [`Dataset::items`].
    pub item: u32,
    /// Rating, if the dataset has one.
    pub rating: Option<f32>,
    /// Timestamp.
    pub timestamp: i64,
}

/// A user's filtered events in time order (ties in file order); at least 3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSequence {
    /// Dense user index into [`Dataset::users`].
    pub user: u32,
    /// Chronological events.
    pub events: Vec<Event>,
}

impl UserSequence {
    /// The train part: all but the last two events.
    pub fn train(&self) -> &[Event] {
        &self.events[..self.events.len().saturating_sub(2)]
    }

    /// The validation event (second-to-last).
    pub fn valid(&self) -> Option<&Event> {
        let n = self.events.len();
        (n >= 3).then(|| &self.events[n - 2])
    }

    /// The test event (last).
    pub fn test(&self) -> Option<&Event> {
        let n = self.events.len();
        (n >= 3).then(|| &self.events[n - 1])
    }

    /// History and target of a stage: (events before the target, target).
    pub fn stage(&self, stage: Stage) -> Option<(&[Event], &Event)> {
        let n = self.events.len();
        if n < 3 {
            return None;
        }
        let t = match stage {
            Stage::Valid => n - 2,
            Stage::Test => n - 1,
        };
        Some((&self.events[..t], &self.events[t]))
    }
}

/// Which held-out event is the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// The second-to-last event (model selection, early stopping).
    Valid,
    /// The last event (the reported numbers).
    Test,
}

/// Counts of what the filters did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitStats {
    /// Interactions in the dataset.
    pub interactions: usize,
    /// Dropped by the rating threshold.
    pub dropped_low_rating: usize,
    /// Kept without a rating (no threshold could apply).
    pub kept_without_rating: usize,
    /// Users with at least one interaction after the rating filter.
    pub users_rated: usize,
    /// Items with at least one interaction after the rating filter.
    pub items_rated: usize,
    /// Rounds of the k-core filter until stable.
    pub core_rounds: usize,
    /// Interactions left after the k-core filter.
    pub interactions_kept: usize,
    /// Users left after the k-core filter (including too-short ones).
    pub users_kept: usize,
    /// Items left after the k-core filter (the ranking candidates).
    pub items_kept: usize,
    /// Users left with fewer than 3 events (cannot be split; not evaluated).
    pub users_too_short: usize,
}

/// A leave-one-out split: which events are train, validation and test.
///
/// Deterministic given the dataset and the [`ProtocolConfig`]; serialisable.
/// For a compact record to store with a model use [`Split::record`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// [`PROTOCOL`].
    pub protocol: String,
    /// Dataset name.
    pub dataset: String,
    /// Parameters used.
    pub config: ProtocolConfig,
    /// Candidate items (dense item indexes, ascending): every item left after filtering.
    pub items: Vec<u32>,
    /// Evaluable users (≥ 3 events), ascending by user index.
    pub users: Vec<UserSequence>,
    /// Filter counts.
    pub stats: SplitStats,
}

/// What a model stores about the split it was trained on (in `model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    /// [`PROTOCOL`].
    pub protocol: String,
    /// Dataset name.
    pub dataset: String,
    /// Parameters used.
    pub config: ProtocolConfig,
    /// Evaluable users.
    pub users: usize,
    /// Candidate items.
    pub items: usize,
    /// Events in the split (train + valid + test).
    pub events: usize,
    /// sha256 over every event with its role ([`Split::fingerprint`]).
    pub split_fingerprint: String,
    /// sha256 over the test events ([`Split::test_fingerprint`]).
    pub test_fingerprint: String,
}

impl Split {
    /// Applies the protocol to a dataset.
    pub fn new(ds: &Dataset, config: ProtocolConfig) -> Result<Split> {
        if config.k == 0 {
            return Err(Error::Config("metric cut-off k must be ≥ 1".into()));
        }
        let n_users = ds.users.len();
        let n_items = ds.items.len();
        let mut stats = SplitStats {
            interactions: ds.interactions.len(),
            ..SplitStats::default()
        };
        // 1. Rating threshold.
        let mut keep: Vec<u32> = Vec::with_capacity(ds.interactions.len());
        for (i, it) in ds.interactions.iter().enumerate() {
            if (it.user as usize) >= n_users || (it.item as usize) >= n_items {
                return Err(Error::Config(format!(
                    "interaction {i} refers to user {} / item {} outside the dataset",
                    it.user, it.item
                )));
            }
            match (config.min_rating, it.rating) {
                (Some(min), Some(r)) if r < min => stats.dropped_low_rating += 1,
                (Some(_), None) => {
                    stats.kept_without_rating += 1;
                    keep.push(i as u32);
                }
                _ => keep.push(i as u32),
            }
        }
        {
            let mut u = vec![false; n_users];
            let mut it = vec![false; n_items];
            for &i in &keep {
                let x = &ds.interactions[i as usize];
                u[x.user as usize] = true;
                it[x.item as usize] = true;
            }
            stats.users_rated = u.iter().filter(|&&b| b).count();
            stats.items_rated = it.iter().filter(|&&b| b).count();
        }
        // 2. Iterative k-core.
        let (kept, rounds) = k_core(ds, &keep, config.core);
        stats.core_rounds = rounds;
        stats.interactions_kept = kept.len();
        // 3. Per-user chronological sequences (stable sort: ties keep file order).
        let mut per_user: Vec<Vec<Event>> = vec![Vec::new(); n_users];
        let mut item_seen = vec![false; n_items];
        for &i in &kept {
            let x = &ds.interactions[i as usize];
            item_seen[x.item as usize] = true;
            per_user[x.user as usize].push(Event {
                interaction: i,
                item: x.item,
                rating: x.rating,
                timestamp: x.timestamp,
            });
        }
        let items: Vec<u32> = (0..n_items as u32)
            .filter(|&i| item_seen[i as usize])
            .collect();
        stats.items_kept = items.len();
        let mut users = Vec::new();
        for (u, mut events) in per_user.into_iter().enumerate() {
            if events.is_empty() {
                continue;
            }
            stats.users_kept += 1;
            if events.len() < 3 {
                stats.users_too_short += 1;
                continue;
            }
            events.sort_by_key(|e| e.timestamp);
            users.push(UserSequence {
                user: u as u32,
                events,
            });
        }
        if users.is_empty() {
            return Err(Error::EmptyDataset(format!(
                "`{}`: no user has ≥ 3 events after rating ≥ {:?} and {}-core filtering \
                 ({} of {} interactions left)",
                ds.name,
                config.min_rating,
                config.core,
                stats.interactions_kept,
                stats.interactions
            )));
        }
        Ok(Split {
            protocol: PROTOCOL.to_string(),
            dataset: ds.name.clone(),
            config,
            items,
            users,
            stats,
        })
    }

    /// Number of events in train + validation + test.
    pub fn event_count(&self) -> usize {
        self.users.iter().map(|u| u.events.len()).sum()
    }

    /// Iterates over (user, train events).
    pub fn train_sequences(&self) -> impl Iterator<Item = (u32, &[Event])> + '_ {
        self.users.iter().map(|u| (u.user, u.train()))
    }

    /// Indexes into [`Dataset::interactions`] of the test events, ascending.
    pub fn test_interactions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .users
            .iter()
            .filter_map(|u| u.test().map(|e| e.interaction))
            .collect();
        v.sort_unstable();
        v
    }

    /// sha256 (hex) over every event of the split with its role, keyed by the
    /// original user / item ids (stable across reloads of the same files).
    pub fn fingerprint(&self, ds: &Dataset) -> String {
        let mut h = Sha256::new();
        h.update(self.protocol.as_bytes());
        h.update(format!("{:?}", self.config).as_bytes());
        for u in &self.users {
            let n = u.events.len();
            put_str(&mut h, user_id(ds, u.user));
            for (j, e) in u.events.iter().enumerate() {
                let role = if j + 1 == n {
                    b'T'
                } else if j + 2 == n {
                    b'V'
                } else {
                    b'R'
                };
                h.update([role]);
                put_str(&mut h, item_id(ds, e.item));
                h.update(e.timestamp.to_le_bytes());
            }
        }
        hex(&h.finalize())
    }

    /// sha256 (hex) over the test events only: (user id, item id, timestamp),
    /// sorted, so that it is independent of user order.
    pub fn test_fingerprint(&self, ds: &Dataset) -> String {
        let mut rows: Vec<(&str, &str, i64)> = self
            .users
            .iter()
            .filter_map(|u| {
                u.test()
                    .map(|e| (user_id(ds, u.user), item_id(ds, e.item), e.timestamp))
            })
            .collect();
        rows.sort_unstable();
        let mut h = Sha256::new();
        for (u, i, t) in rows {
            put_str(&mut h, u);
            put_str(&mut h, i);
            h.update(t.to_le_bytes());
        }
        hex(&h.finalize())
    }

    /// The compact record a model stores in `model.json`.
    pub fn record(&self, ds: &Dataset) -> SplitRecord {
        SplitRecord {
            protocol: self.protocol.clone(),
            dataset: self.dataset.clone(),
            config: self.config,
            users: self.users.len(),
            items: self.items.len(),
            events: self.event_count(),
            split_fingerprint: self.fingerprint(ds),
            test_fingerprint: self.test_fingerprint(ds),
        }
    }

    /// Refuses (with [`Error::Eval`]) a model that may have seen this split's
    /// test events: one trained with `all_events`, one without a split record,
    /// or one whose record does not match this split.
    pub fn check_model(
        &self,
        ds: &Dataset,
        record: Option<&SplitRecord>,
        all_events: bool,
    ) -> Result<()> {
        if all_events {
            return Err(Error::Eval(
                "the model was trained with --all-events (it saw the test events); \
                 train without --all-events to evaluate"
                    .into(),
            ));
        }
        let Some(r) = record else {
            return Err(Error::Eval(
                "the model records no training split, so it may have seen the test events".into(),
            ));
        };
        let mine = self.record(ds);
        if r.test_fingerprint != mine.test_fingerprint
            || r.split_fingerprint != mine.split_fingerprint
        {
            return Err(Error::Eval(format!(
                "the model was trained on a different split (dataset `{}`, {} users, {} items, \
                 protocol {:?}) than this evaluation (dataset `{}`, {} users, {} items, \
                 protocol {:?}); its training data may contain these test events",
                r.dataset,
                r.users,
                r.items,
                r.config,
                mine.dataset,
                mine.users,
                mine.items,
                mine.config
            )));
        }
        Ok(())
    }
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn user_id(ds: &Dataset, u: u32) -> &str {
    ds.users
        .get(u as usize)
        .map(|x| x.id.as_str())
        .unwrap_or("")
}

fn item_id(ds: &Dataset, i: u32) -> &str {
    ds.items
        .get(i as usize)
        .map(|x| x.id.as_str())
        .unwrap_or("")
}

/// Iterative k-core over the interactions `keep` (indexes into the dataset):
/// returns the surviving indexes (in input order) and the number of rounds.
pub fn k_core(ds: &Dataset, keep: &[u32], core: usize) -> (Vec<u32>, usize) {
    let mut cur: Vec<u32> = keep.to_vec();
    if core <= 1 {
        return (cur, 0);
    }
    let mut rounds = 0;
    let mut uc = vec![0usize; ds.users.len()];
    let mut ic = vec![0usize; ds.items.len()];
    loop {
        rounds += 1;
        uc.iter_mut().for_each(|c| *c = 0);
        ic.iter_mut().for_each(|c| *c = 0);
        for &i in &cur {
            let x = &ds.interactions[i as usize];
            uc[x.user as usize] += 1;
            ic[x.item as usize] += 1;
        }
        let before = cur.len();
        cur.retain(|&i| {
            let x = &ds.interactions[i as usize];
            uc[x.user as usize] >= core && ic[x.item as usize] >= core
        });
        if cur.len() == before {
            return (cur, rounds);
        }
    }
}

/// Scores every item for a user; what baselines and models implement.
pub trait Scorer {
    /// Short name used in tables and JSON (e.g. `mostpop`).
    fn name(&self) -> &str;

    /// Writes a score for every item of the dataset into `out`
    /// (`out.len() == dataset.items.len()`; higher is better; items outside
    /// [`Split::items`] are ignored). `history` is the user's chronological
    /// filtered history strictly before the target.
    fn score_all(&self, user: u32, history: &[Event], out: &mut [f32]) -> Result<()>;
}

/// Results of one scorer on one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Scorer name.
    pub name: String,
    /// Stage evaluated.
    pub stage: Stage,
    /// Metric cut-off.
    pub k: usize,
    /// Users evaluated.
    pub users: usize,
    /// History masked (default).
    pub masked: Metrics,
    /// History not masked.
    pub unmasked: Metrics,
}

/// Evaluates a scorer on every evaluable user of a split.
pub fn evaluate(
    split: &Split,
    n_items: usize,
    scorer: &dyn Scorer,
    stage: Stage,
) -> Result<EvalResult> {
    let k = split.config.k;
    let mut masked = MetricsAccumulator::default();
    let mut unmasked = MetricsAccumulator::default();
    let mut scores = vec![0f32; n_items];
    // stamp[i] == user position + 1 marks item i as in the current history.
    let mut stamp = vec![0u32; n_items];
    for (pos, u) in split.users.iter().enumerate() {
        let Some((history, target)) = u.stage(stage) else {
            continue;
        };
        scores.iter_mut().for_each(|s| *s = 0.0);
        scorer.score_all(u.user, history, &mut scores)?;
        let mark = pos as u32 + 1;
        for e in history {
            if let Some(s) = stamp.get_mut(e.item as usize) {
                *s = mark;
            }
        }
        let t = target.item;
        let r_unmasked = rank_of(t, &split.items, &scores, |_| false);
        let r_masked = rank_of(t, &split.items, &scores, |c| {
            stamp.get(c as usize).is_some_and(|&s| s == mark)
        });
        unmasked.add_rank(r_unmasked, k);
        masked.add_rank(r_masked, k);
    }
    Ok(EvalResult {
        name: scorer.name().to_string(),
        stage,
        k,
        users: masked.count(),
        masked: masked.mean(),
        unmasked: unmasked.mean(),
    })
}

/// Results of several scorers keyed by name, for JSON output.
pub type ResultTable = BTreeMap<String, EvalResult>;
