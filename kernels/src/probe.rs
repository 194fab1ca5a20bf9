//! Machine baselines measured in the same run as a benchmark: the
//! single-core FP32 FMA peak and the single-core main-memory read bandwidth.
//!
//! These are deliberately independent of the kernels they judge: the FMA
//! probe runs independent chains of register-only fused multiply-adds (no
//! loads), and the bandwidth probe streams a buffer far larger than the
//! last-level cache with plain vector loads. Reports divide a kernel's FLOP
//! floor or byte count by these figures to state an efficiency.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::Isa;

/// Independent accumulator chains in the FMA probe (enough to cover the FMA
/// latency × the number of FMA pipes on current x86 cores).
const FMA_CHAINS: usize = 12;

/// Measures single-thread FP32 FMA throughput in GFLOP/s (1 FMA = 2 FLOP),
/// taking the best of several repetitions of about `budget / reps` each.
///
/// On the scalar and portable paths this measures what those paths can
/// reach, which is the honest peak for them; reports normally quote the peak
/// of the best supported path.
pub fn fma_peak_gflops(isa: Isa, budget: Duration) -> f64 {
    let reps = 5u32;
    let per_rep = budget / reps;
    let mut best = 0.0f64;
    for _ in 0..reps {
        let mut iters: u64 = 1 << 14;
        loop {
            let start = Instant::now();
            let lanes = fma_run(isa, iters);
            let elapsed = start.elapsed();
            if elapsed >= per_rep / 4 || iters >= 1 << 40 {
                let flops = 2.0 * lanes as f64 * iters as f64 * FMA_CHAINS as f64;
                best = best.max(flops / elapsed.as_secs_f64() / 1e9);
                break;
            }
            iters *= 2;
        }
    }
    best
}

/// Runs `iters` rounds of `FMA_CHAINS` independent FMAs; returns the lane count.
fn fma_run(isa: Isa, iters: u64) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && Isa::Avx512.is_supported() {
            // SAFETY: AVX-512F support was checked just above.
            unsafe { x86::fma_avx512(iters) };
            return 16;
        }
        if matches!(isa, Isa::Avx2 | Isa::Avx512) && Isa::Avx2.is_supported() {
            // SAFETY: AVX2 and FMA support was checked just above.
            unsafe { x86::fma_avx2(iters) };
            return 8;
        }
    }
    if isa == Isa::Portable {
        fma_portable(iters);
        return 8;
    }
    fma_scalar(iters);
    1
}

fn fma_scalar(iters: u64) {
    let mut acc = [0.0f32; FMA_CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = i as f32 * 1e-3;
    }
    let m = black_box(0.999_999f32);
    let c = black_box(1e-7f32);
    // Separate multiply and add: the scalar path is compiled for the x86-64
    // baseline, where `mul_add` would be a libm call rather than the
    // arithmetic scalar kernels actually run.
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * m + c;
        }
    }
    black_box(acc);
}

fn fma_portable(iters: u64) {
    use wide::f32x8;
    let mut acc = [f32x8::splat(0.0); FMA_CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = f32x8::splat(i as f32 * 1e-3);
    }
    let m = f32x8::splat(black_box(0.999_999f32));
    let c = f32x8::splat(black_box(1e-7f32));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(m, c);
        }
    }
    black_box(acc);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    use super::FMA_CHAINS;

    /// Twelve named accumulator chains (not an array, so that they stay in
    /// registers: 12 + 2 constants fit the 16 ymm registers of AVX2).
    macro_rules! fma_chains {
        ($set1:ident, $fma:ident, $iters:expr) => {{
            let m = $set1(black_box(0.999_999));
            let c = $set1(black_box(1e-7));
            let (mut a0, mut a1, mut a2, mut a3) = ($set1(0.0), $set1(0.1), $set1(0.2), $set1(0.3));
            let (mut a4, mut a5, mut a6, mut a7) = ($set1(0.4), $set1(0.5), $set1(0.6), $set1(0.7));
            let (mut a8, mut a9, mut a10, mut a11) =
                ($set1(0.8), $set1(0.9), $set1(1.0), $set1(1.1));
            for _ in 0..$iters {
                a0 = $fma(a0, m, c);
                a1 = $fma(a1, m, c);
                a2 = $fma(a2, m, c);
                a3 = $fma(a3, m, c);
                a4 = $fma(a4, m, c);
                a5 = $fma(a5, m, c);
                a6 = $fma(a6, m, c);
                a7 = $fma(a7, m, c);
                a8 = $fma(a8, m, c);
                a9 = $fma(a9, m, c);
                a10 = $fma(a10, m, c);
                a11 = $fma(a11, m, c);
            }
            black_box((a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11));
        }};
    }

    const _: () = assert!(FMA_CHAINS == 12);

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_avx2(iters: u64) {
        fma_chains!(_mm256_set1_ps, _mm256_fmadd_ps, iters);
    }

    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn fma_avx512(iters: u64) {
        fma_chains!(_mm512_set1_ps, _mm512_fmadd_ps, iters);
    }

    /// Sums `buf` with 256-bit loads into eight accumulators.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sum_avx2(buf: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 8];
        let chunks = buf.len() / 64;
        let p = buf.as_ptr();
        for i in 0..chunks {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: i < chunks = len / 64, so the 8 floats at
                // offset i*64 + j*8 (j < 8) lie inside `buf`.
                let v = unsafe { _mm256_loadu_ps(p.add(i * 64 + j * 8)) };
                *a = _mm256_add_ps(*a, v);
            }
        }
        let mut lanes = [0.0f32; 8];
        let mut total = _mm256_setzero_ps();
        for a in acc {
            total = _mm256_add_ps(total, a);
        }
        // SAFETY: `lanes` holds exactly 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum::<f32>() + buf[chunks * 64..].iter().sum::<f32>()
    }
}

/// Sums a buffer with the widest plain loads available (bandwidth probe body).
fn stream_sum(buf: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if Isa::Avx2.is_supported() {
            // SAFETY: AVX2 support was checked just above.
            return unsafe { x86::sum_avx2(buf) };
        }
    }
    let mut acc = [0.0f32; 16];
    let mut chunks = buf.chunks_exact(16);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Measures single-thread main-memory read bandwidth in GB/s (10⁹ bytes/s)
/// by streaming a `bytes`-sized buffer (use ≥ 8× the last-level cache,
/// e.g. 512 MiB), best of `reps` passes after one warm-up pass.
///
/// This allocates the buffer; it is a benchmark helper, not a kernel.
pub fn mem_read_gbps(bytes: usize, reps: usize) -> f64 {
    let n = (bytes / 4).max(64);
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    black_box(stream_sum(&buf));
    let mut best = 0.0f64;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        black_box(stream_sum(black_box(&buf)));
        let secs = start.elapsed().as_secs_f64();
        best = best.max((n * 4) as f64 / secs / 1e9);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_sum_matches_plain_sum() {
        for n in [0usize, 1, 63, 64, 65, 1000, 4099] {
            let buf: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
            let want: f32 = buf.iter().sum();
            assert_eq!(stream_sum(&buf), want, "n = {n}");
        }
    }

    #[test]
    fn probes_return_positive_finite_figures() {
        for isa in Isa::supported() {
            let g = fma_peak_gflops(isa, Duration::from_millis(20));
            assert!(g.is_finite() && g > 0.0, "{isa}: {g}");
        }
        let bw = mem_read_gbps(1 << 20, 2);
        assert!(bw.is_finite() && bw > 0.0);
    }
}
