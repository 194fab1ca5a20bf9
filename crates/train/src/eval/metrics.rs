//! Ranking metrics with ties counted against the target.

use serde::{Deserialize, Serialize};

/// Rank (1-based) of `target` among `candidates` by `scores`.
///
/// rank = 1 + #{c ≠ target : score(c) > score(target)} + #{c ≠ target : score(c) == score(target)}:
/// ties count **against** the target, so a constant scorer ranks the target last.
/// Candidates with `excluded(c)` true are skipped, except the target itself,
/// which is never excluded. A NaN target score ranks last among the counted
/// candidates; NaN scores of other candidates never beat the target.
pub fn rank_of(
    target: u32,
    candidates: &[u32],
    scores: &[f32],
    mut excluded: impl FnMut(u32) -> bool,
) -> usize {
    let t = scores.get(target as usize).copied().unwrap_or(f32::NAN);
    let mut rank = 1usize;
    for &c in candidates {
        if c == target || excluded(c) {
            continue;
        }
        let s = scores.get(c as usize).copied().unwrap_or(f32::NAN);
        if t.is_nan() || s >= t {
            rank += 1;
        }
    }
    rank
}

/// HR@k, NDCG@k and MRR@k of one rank.
pub fn metrics_at(rank: usize, k: usize) -> Metrics {
    if rank == 0 || rank > k {
        return Metrics::default();
    }
    Metrics {
        hr: 1.0,
        ndcg: 1.0 / ((rank as f64) + 1.0).log2(),
        mrr: 1.0 / rank as f64,
    }
}

/// Mean HR@k, NDCG@k, MRR@k (or, inside an accumulator, their sums).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Hit ratio: fraction of users whose target is in the top k.
    pub hr: f64,
    /// Normalised discounted cumulative gain (one relevant item: 1/log2(rank+1)).
    pub ndcg: f64,
    /// Mean reciprocal rank, 0 beyond k.
    pub mrr: f64,
}

/// Sums per-user metrics and returns their means.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccumulator {
    sum: Metrics,
    n: usize,
}

impl MetricsAccumulator {
    /// Adds one user's target rank.
    pub fn add_rank(&mut self, rank: usize, k: usize) {
        let m = metrics_at(rank, k);
        self.sum.hr += m.hr;
        self.sum.ndcg += m.ndcg;
        self.sum.mrr += m.mrr;
        self.n += 1;
    }

    /// Number of users added.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Means over the users added (zeros if none).
    pub fn mean(&self) -> Metrics {
        if self.n == 0 {
            return Metrics::default();
        }
        let n = self.n as f64;
        Metrics {
            hr: self.sum.hr / n,
            ndcg: self.sum.ndcg / n,
            mrr: self.sum.mrr / n,
        }
    }
}
