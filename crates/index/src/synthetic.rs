//! Seeded synthetic clustered, L2-normalised vectors for tests and
//! benchmarks (the project's SplitMix64 + Box–Muller; no `rand` dependency).
//! Built with the `testing` feature only.

/// The project's seeded generator ([`profiled_kernels::rng::SplitMix64`]).
pub use profiled_kernels::rng::SplitMix64 as SplitMix;

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
