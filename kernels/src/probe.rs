//! Machine baselines measured in the same run as a benchmark: the
//! single-core FP32 FMA peak and the single-core main-memory read bandwidth.
//!
//! These are deliberately independent of the kernels they judge: the FMA
//! probe runs independent chains of register-only fused multiply-adds (no
//! loads; on [`Isa::Avx512Bf16`] `vdpbf16ps`, 32 bf16 multiply-adds per
//! instruction, the peak of the bf16 GEMM), and the bandwidth probe streams a buffer far larger than the
//! last-level cache with plain vector loads. Reports divide a kernel's FLOP
//! floor or byte count by these figures to state an efficiency.
//!
//! # Read bandwidth
//!
//! One plain sequential stream is not what a single core can read: on some
//! parts (an Intel Sapphire Rapids-class server measured 15.8 GB/s with it
//! while the prefetching f16 scan read 33.6–35.6 GB/s) the hardware
//! prefetcher alone keeps too few lines in flight. [`mem_read`] therefore
//! measures four access patterns over the same buffer and
//! [`mem_read_gbps`] reports the best of them:
//!
//! | pattern | what it is |
//! |---|---|
//! | `stream` | one sequential stream, plain 32-byte loads |
//! | `prefetch` | the same with software prefetch 4 KiB ahead (`prefetcht0`), the row scans' own pattern |
//! | `streams4` | four sequential streams (the buffer's quarters) read in lockstep |
//! | `streams4_prefetch` | four streams, each prefetched ahead |
//!
//! The scans read sequentially with the same prefetch distance and do
//! arithmetic besides, so a scan cannot legitimately outrun the `prefetch`
//! pattern: an efficiency above 1.0 against the best pattern would mean the
//! probe is still wrong.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::Isa;

/// Independent accumulator chains in the FMA probe (enough to cover the FMA
/// latency × the number of FMA pipes on current x86 cores).
const FMA_CHAINS: usize = 12;

/// Measures single-thread FP32 FMA throughput in GFLOP/s (1 FMA = 2 FLOP;
/// on [`Isa::Avx512Bf16`] the `vdpbf16ps` throughput, 1 bf16 multiply-add
/// into f32 = 2 FLOP),
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
        if isa == Isa::Avx512Bf16 && Isa::Avx512Bf16.is_supported() {
            // SAFETY: AVX-512F and AVX512_BF16 support was checked just above.
            unsafe { x86::dot_bf16(iters) };
            return 32;
        }
        if isa.f32_path() == Isa::Avx512 && Isa::Avx512.is_supported() {
            // SAFETY: AVX-512F support was checked just above.
            unsafe { x86::fma_avx512(iters) };
            return 16;
        }
        if matches!(isa.f32_path(), Isa::Avx2 | Isa::Avx512) && Isa::Avx2.is_supported() {
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
    use crate::simd::PREFETCH_BYTES;

    /// Twelve named accumulator chains (not an array, so that they stay in
    /// registers: 12 + 2 constants fit the 16 ymm registers of AVX2).
    macro_rules! fma_chains {
        ($set1:ident, $fma:ident, $iters:expr) => {
            fma_chains!($set1, $set1, $fma, $iters)
        };
        ($set1:ident, $operand:ident, $fma:ident, $iters:expr) => {{
            let m = $operand(black_box(0.999_999));
            let c = $operand(black_box(1e-7));
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

    /// 32 copies of `x` as bf16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn set1_bf16(x: f32) -> __m512bh {
        _mm512_cvtne2ps_pbh(_mm512_set1_ps(x), _mm512_set1_ps(x))
    }

    /// `acc + m·c` over bf16 pairs (`vdpbf16ps`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn dp_bf16(acc: __m512, m: __m512bh, c: __m512bh) -> __m512 {
        _mm512_dpbf16_ps(acc, m, c)
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dot_bf16(iters: u64) {
        fma_chains!(_mm512_set1_ps, set1_bf16, dp_bf16, iters);
    }

    /// Sums `buf` with 256-bit loads into eight accumulators, reading `S`
    /// equal contiguous parts in lockstep (256 bytes of each per step), with
    /// `prefetcht0` [`PREFETCH_BYTES`] ahead in each part when `PF`; the
    /// elements beyond the `S` parts are added at the end.
    #[target_feature(enable = "avx2")]
    pub(super) fn sum_streams<const S: usize, const PF: bool>(buf: &[f32]) -> f32 {
        let per = buf.len() / S / 64 * 64;
        let ahead = PREFETCH_BYTES / 4;
        let mut acc = [_mm256_setzero_ps(); 8];
        let p = buf.as_ptr();
        let mut i = 0;
        while i < per {
            for s in 0..S {
                let base = s * per + i;
                if PF && i + ahead < per {
                    for line in 0..4 {
                        // `prefetcht0` is a hint that never faults; the
                        // address is inside part `s` (i + ahead < per).
                        _mm_prefetch::<_MM_HINT_T0>(
                            buf[base + ahead + line * 16..].as_ptr().cast(),
                        );
                    }
                }
                for (j, a) in acc.iter_mut().enumerate() {
                    // SAFETY: base + j·8 + 8 ≤ s·per + i + 64 ≤ S·per ≤
                    // buf.len(), so the 8 floats lie inside `buf`.
                    let v = unsafe { _mm256_loadu_ps(p.add(base + j * 8)) };
                    *a = _mm256_add_ps(*a, v);
                }
            }
            i += 64;
        }
        let mut lanes = [0.0f32; 8];
        let mut total = _mm256_setzero_ps();
        for a in acc {
            total = _mm256_add_ps(total, a);
        }
        // SAFETY: `lanes` holds exactly 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum::<f32>() + buf[S * per..].iter().sum::<f32>()
    }
}

/// The access patterns of the bandwidth probe (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPattern {
    /// One sequential stream, plain loads.
    Stream,
    /// One sequential stream with software prefetch 4 KiB ahead.
    Prefetch,
    /// Four sequential streams in lockstep.
    Streams4,
    /// Four sequential streams, each prefetched ahead.
    Streams4Prefetch,
}

impl ReadPattern {
    /// Every pattern, in the order reports print them.
    pub const ALL: [ReadPattern; 4] = [
        ReadPattern::Stream,
        ReadPattern::Prefetch,
        ReadPattern::Streams4,
        ReadPattern::Streams4Prefetch,
    ];

    /// The name reports print.
    pub fn name(self) -> &'static str {
        match self {
            ReadPattern::Stream => "stream",
            ReadPattern::Prefetch => "prefetch",
            ReadPattern::Streams4 => "streams4",
            ReadPattern::Streams4Prefetch => "streams4_prefetch",
        }
    }
}

/// Sums a buffer with the widest plain loads available, in the given
/// pattern (bandwidth probe body; without AVX2, every pattern is one plain
/// stream).
fn stream_sum(buf: &[f32], pattern: ReadPattern) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if Isa::Avx2.is_supported() {
            // SAFETY: AVX2 support was checked just above.
            return unsafe {
                match pattern {
                    ReadPattern::Stream => x86::sum_streams::<1, false>(buf),
                    ReadPattern::Prefetch => x86::sum_streams::<1, true>(buf),
                    ReadPattern::Streams4 => x86::sum_streams::<4, false>(buf),
                    ReadPattern::Streams4Prefetch => x86::sum_streams::<4, true>(buf),
                }
            };
        }
    }
    let _ = pattern;
    let mut acc = [0.0f32; 16];
    let mut chunks = buf.chunks_exact(16);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Single-thread main-memory read bandwidth (GB/s, 10⁹ bytes/s) of each
/// [`ReadPattern`], measured by streaming a `bytes`-sized buffer (use ≥ 8×
/// the last-level cache, e.g. 512 MiB), best of `reps` passes per pattern
/// after one warm-up pass; the patterns' passes are interleaved so that a
/// burst of load from other processes does not single one out.
///
/// This allocates the buffer; it is a benchmark helper, not a kernel.
pub fn mem_read(bytes: usize, reps: usize) -> Vec<(ReadPattern, f64)> {
    let n = (bytes / 4).max(64);
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    black_box(stream_sum(&buf, ReadPattern::Stream));
    let mut best = ReadPattern::ALL.map(|p| (p, 0.0f64));
    for _ in 0..reps.max(1) {
        for (pattern, b) in best.iter_mut() {
            let start = Instant::now();
            black_box(stream_sum(black_box(&buf), *pattern));
            let secs = start.elapsed().as_secs_f64();
            *b = b.max((n * 4) as f64 / secs / 1e9);
        }
    }
    best.to_vec()
}

/// The single-thread read bandwidth a kernel is judged against: the best
/// pattern of [`mem_read`] (GB/s).
pub fn mem_read_gbps(bytes: usize, reps: usize) -> f64 {
    best_read(&mem_read(bytes, reps))
}

/// The best figure of a [`mem_read`] result.
pub fn best_read(patterns: &[(ReadPattern, f64)]) -> f64 {
    patterns.iter().map(|p| p.1).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_sum_matches_plain_sum_in_every_pattern() {
        // Past 4 × 1024 + 64 floats the prefetching patterns prefetch.
        for n in [
            0usize, 1, 63, 64, 65, 255, 256, 257, 1000, 4099, 20_000, 70_001,
        ] {
            let buf: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
            let want: f32 = buf.iter().sum();
            for p in ReadPattern::ALL {
                assert_eq!(stream_sum(&buf, p), want, "n = {n}, {}", p.name());
            }
        }
    }

    #[test]
    fn probes_return_positive_finite_figures() {
        for isa in Isa::supported() {
            let g = fma_peak_gflops(isa, Duration::from_millis(20));
            assert!(g.is_finite() && g > 0.0, "{isa}: {g}");
        }
        let patterns = mem_read(1 << 20, 2);
        assert_eq!(patterns.len(), ReadPattern::ALL.len());
        for (p, g) in &patterns {
            assert!(g.is_finite() && *g > 0.0, "{}: {g}", p.name());
        }
    }
}
