//! `profiled-benches`: report binaries and the helpers they share — timing
//! with medians, a seeded generator for synthetic inputs, and the machine
//! context (load average) every report prints next to its figures; and
//! [`loadgen`], the load generator behind `profiled-loadgen` and
//! `server-report`.
//!
//! In-run baselines (FMA peak, memory read bandwidth) come from
//! [`profiled_kernels::probe`], so each report measures its own yardstick in
//! the same run as the figures it judges.
#![forbid(unsafe_code)]

pub mod harness;
pub mod loadgen;

use std::time::{Duration, Instant};

/// Median wall time of one call of `f`, over at least `min_reps` calls and
/// at least `min_total` of measured time, after `warmup` untimed calls.
pub fn median_time<F: FnMut()>(
    warmup: usize,
    min_reps: usize,
    min_total: Duration,
    mut f: F,
) -> Duration {
    for _ in 0..warmup {
        f();
    }
    let mut samples = Vec::with_capacity(min_reps.max(8));
    let start = Instant::now();
    while samples.len() < min_reps.max(1) || start.elapsed() < min_total {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
        if samples.len() > 1_000_000 {
            break;
        }
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Reproducible synthetic f32 inputs from the project's generator
/// ([`profiled_kernels::rng::SplitMix64`]), in the reports' terms.
#[derive(Debug, Clone)]
pub struct SplitMix(profiled_kernels::rng::SplitMix64);

impl SplitMix {
    /// A generator with `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(profiled_kernels::rng::SplitMix64::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[-scale, scale)`.
    pub fn uniform(&mut self, scale: f32) -> f32 {
        self.0.uniform_f32(scale)
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        self.0.vec_f32(n, scale)
    }
}

/// The 1-, 5- and 15-minute load averages from `/proc/loadavg`, when readable.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Microseconds in a duration, as f64.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_in_range() {
        let a = SplitMix::new(7).vec(1000, 0.5);
        let b = SplitMix::new(7).vec(1000, 0.5);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        assert_ne!(a, SplitMix::new(8).vec(1000, 0.5));
    }

    #[test]
    fn median_time_runs_at_least_min_reps() {
        let mut calls = 0;
        let _ = median_time(2, 9, Duration::ZERO, || calls += 1);
        assert_eq!(calls, 11);
    }
}
