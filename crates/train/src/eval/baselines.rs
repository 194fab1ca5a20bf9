//! Baselines, fitted on every event strictly before the evaluated targets:
//! for [`Stage::Test`] the train and validation parts, for [`Stage::Valid`]
//! the train part ([`fit_sequences`]). No baseline ever sees a target.
//!
//! - [`MostPop`]: train interaction count.
//! - [`Transition`]: first-order Markov chain on consecutive train events,
//!   score(j) = count(last → j), popularity breaks ties and is the fallback.
//! - [`ItemKnn`]: item–item cosine on user co-occurrence (train parts),
//!   summed over the last 5 history items with recency weights 1/(1+age)
//!   (age 0 = most recent; [`ItemKnn::with_weights`] changes them);
//!   popularity breaks ties and is the fallback.
//!
//! The popularity tie-break adds `pop(j) / (max_pop + 1) · ε` with ε small
//! enough to never reorder items of different primary score.

use std::collections::HashMap;

use super::{Event, Scorer, Split, Stage};
use crate::error::Result;

/// Each user's events strictly before the target of `stage` (what a
/// baseline may be fitted on when evaluated on that stage).
pub fn fit_sequences(split: &Split, stage: Stage) -> impl Iterator<Item = &[Event]> + '_ {
    split
        .users
        .iter()
        .filter_map(move |u| u.stage(stage).map(|(h, _)| h))
}

/// Interaction counts per item over [`fit_sequences`].
pub fn popularity(split: &Split, n_items: usize, stage: Stage) -> Vec<u32> {
    let mut pop = vec![0u32; n_items];
    for seq in fit_sequences(split, stage) {
        for e in seq {
            if let Some(p) = pop.get_mut(e.item as usize) {
                *p += 1;
            }
        }
    }
    pop
}

/// Popularity normalised to [0, 1).
fn pop_prior(split: &Split, n_items: usize, stage: Stage) -> Vec<f32> {
    let pop = popularity(split, n_items, stage);
    let max = pop.iter().copied().max().unwrap_or(0) as f32 + 1.0;
    pop.iter().map(|&p| p as f32 / max).collect()
}

/// Most popular items in the train parts.
#[derive(Debug, Clone)]
pub struct MostPop {
    pop: Vec<f32>,
}

impl MostPop {
    /// Fits on the events before the targets of `stage`.
    pub fn fit(split: &Split, n_items: usize, stage: Stage) -> Self {
        MostPop {
            pop: popularity(split, n_items, stage)
                .into_iter()
                .map(|p| p as f32)
                .collect(),
        }
    }
}

impl Scorer for MostPop {
    fn name(&self) -> &str {
        "mostpop"
    }

    fn score_all(&self, _user: u32, _history: &[Event], out: &mut [f32]) -> Result<()> {
        for (o, p) in out.iter_mut().zip(&self.pop) {
            *o = *p;
        }
        Ok(())
    }
}

/// Last-item transition (first-order Markov) with a popularity fallback.
#[derive(Debug, Clone)]
pub struct Transition {
    next: Vec<Vec<(u32, f32)>>,
    prior: Vec<f32>,
}

impl Transition {
    /// Counts consecutive pairs of the events before the targets of `stage`.
    pub fn fit(split: &Split, n_items: usize, stage: Stage) -> Self {
        let mut counts: Vec<HashMap<u32, u32>> = vec![HashMap::new(); n_items];
        for seq in fit_sequences(split, stage) {
            for w in seq.windows(2) {
                if let Some(row) = counts.get_mut(w[0].item as usize) {
                    *row.entry(w[1].item).or_insert(0) += 1;
                }
            }
        }
        let next = counts
            .into_iter()
            .map(|row| {
                let mut v: Vec<(u32, f32)> = row.into_iter().map(|(j, c)| (j, c as f32)).collect();
                v.sort_unstable_by_key(|&(j, _)| j);
                v
            })
            .collect();
        Transition {
            next,
            prior: pop_prior(split, n_items, stage),
        }
    }
}

impl Scorer for Transition {
    fn name(&self) -> &str {
        "transition"
    }

    fn score_all(&self, _user: u32, history: &[Event], out: &mut [f32]) -> Result<()> {
        // Counts are integers ≥ 1 and the prior is < 1: it only breaks ties.
        for (o, p) in out.iter_mut().zip(&self.prior) {
            *o = *p;
        }
        if let Some(last) = history.last()
            && let Some(row) = self.next.get(last.item as usize)
        {
            for &(j, c) in row {
                if let Some(o) = out.get_mut(j as usize) {
                    *o += c;
                }
            }
        }
        Ok(())
    }
}

/// Item-kNN over the last [`ItemKnn::WINDOW`] history items.
#[derive(Debug, Clone)]
pub struct ItemKnn {
    sim: Vec<Vec<(u32, f32)>>,
    weights: Vec<f32>,
    prior: Vec<f32>,
}

impl ItemKnn {
    /// History items used by default (most recent first).
    pub const WINDOW: usize = 5;
    /// Weight of the popularity tie-break relative to similarities.
    const EPS: f32 = 1e-6;

    /// Cosine similarity on user co-occurrence in the events before the
    /// targets of `stage`: sim(i, j) = |U_i ∩ U_j| / sqrt(|U_i| · |U_j|).
    pub fn fit(split: &Split, n_items: usize, stage: Stage) -> Self {
        let mut co: Vec<HashMap<u32, u32>> = vec![HashMap::new(); n_items];
        let mut users_of = vec![0u32; n_items];
        let mut items: Vec<u32> = Vec::new();
        for seq in fit_sequences(split, stage) {
            items.clear();
            items.extend(
                seq.iter()
                    .map(|e| e.item)
                    .filter(|&i| (i as usize) < n_items),
            );
            items.sort_unstable();
            items.dedup();
            for (a, &i) in items.iter().enumerate() {
                users_of[i as usize] += 1;
                for &j in &items[a + 1..] {
                    *co[i as usize].entry(j).or_insert(0) += 1;
                    *co[j as usize].entry(i).or_insert(0) += 1;
                }
            }
        }
        let sim = co
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let ni = users_of[i] as f32;
                let mut v: Vec<(u32, f32)> = row
                    .into_iter()
                    .map(|(j, c)| (j, c as f32 / (ni * users_of[j as usize] as f32).sqrt()))
                    .collect();
                v.sort_unstable_by_key(|&(j, _)| j);
                v
            })
            .collect();
        ItemKnn {
            sim,
            weights: (0..Self::WINDOW).map(|a| 1.0 / (1.0 + a as f32)).collect(),
            prior: pop_prior(split, n_items, stage),
        }
    }
}

impl ItemKnn {
    /// Replaces the recency weights: `weights[a]` multiplies the similarity to
    /// the history item of age `a` (0 = most recent); the window is their count.
    pub fn with_weights(mut self, weights: Vec<f32>) -> Self {
        self.weights = weights;
        self
    }
}

impl Scorer for ItemKnn {
    fn name(&self) -> &str {
        "item-knn"
    }

    fn score_all(&self, _user: u32, history: &[Event], out: &mut [f32]) -> Result<()> {
        for (o, p) in out.iter_mut().zip(&self.prior) {
            *o = *p * Self::EPS;
        }
        for (e, &w) in history.iter().rev().zip(&self.weights) {
            if let Some(row) = self.sim.get(e.item as usize) {
                for &(j, s) in row {
                    if let Some(o) = out.get_mut(j as usize) {
                        *o += w * s;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Fits every baseline for evaluation on `stage`, in table order.
pub fn all(split: &Split, n_items: usize, stage: Stage) -> Vec<Box<dyn Scorer>> {
    vec![
        Box::new(MostPop::fit(split, n_items, stage)),
        Box::new(Transition::fit(split, n_items, stage)),
        Box::new(ItemKnn::fit(split, n_items, stage)),
    ]
}
