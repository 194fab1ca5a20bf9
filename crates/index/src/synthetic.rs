//! Seeded synthetic clustered, L2-normalised vectors for tests and
//! benchmarks (no `rand` dependency: SplitMix64 + Box–Muller).

/// A small deterministic generator.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeds the generator.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// `n` unit vectors of `dims` dimensions drawn around `clusters` random unit
/// centres with per-coordinate noise `spread / sqrt(dims)`; row-major.
/// Returns the vectors and each row's cluster.
pub fn clustered(
    n: usize,
    dims: usize,
    clusters: usize,
    spread: f32,
    seed: u64,
) -> (Vec<f32>, Vec<usize>) {
    let mut g = SplitMix::new(seed);
    let clusters = clusters.max(1);
    let mut centres = vec![0.0f32; clusters * dims];
    for c in centres.chunks_exact_mut(dims) {
        c.iter_mut().for_each(|x| *x = g.normal() as f32);
        normalize(c);
    }
    let sigma = spread / (dims as f32).sqrt();
    let mut out = vec![0.0f32; n * dims];
    let mut labels = Vec::with_capacity(n);
    for row in out.chunks_exact_mut(dims) {
        let c = g.below(clusters);
        labels.push(c);
        for (x, m) in row.iter_mut().zip(&centres[c * dims..(c + 1) * dims]) {
            *x = m + sigma * g.normal() as f32;
        }
        normalize(row);
    }
    (out, labels)
}

/// `nq` held-out queries from the same distribution as
/// `clustered(n, dims, clusters, spread, seed)`: rows `n .. n + nq` of the
/// same stream (the first `n` rows of a longer stream are the same rows).
pub fn held_out_queries(
    n: usize,
    nq: usize,
    dims: usize,
    clusters: usize,
    spread: f32,
    seed: u64,
) -> Vec<f32> {
    clustered(n + nq, dims, clusters, spread, seed)
        .0
        .split_off(n * dims)
}
