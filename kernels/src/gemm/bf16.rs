//! The bf16 tier of the GEMM: weights packed as bf16 row pairs
//! ([`WeightPrecision::Bf16`](super::WeightPrecision::Bf16)), the input `X`
//! rounded to bf16 (round to nearest even) once per call, f32 accumulation,
//! and the same f32 epilogue (bias, residual, GELU) as the f32 kernels.
//!
//! # Kernels
//!
//! | path | tile | instruction |
//! |---|---|---|
//! | [`Isa::Avx512Bf16`] | 8 rows × 32 columns, 16 zmm accumulators | `vdpbf16ps`: per f32 lane, two bf16 products added to the accumulator |
//! | every other path | 4 rows × 16 columns, plain loops | the same arithmetic in the same order |
//!
//! For one pair `(x₀, x₁)` of `X` and `(w₀, w₁)` of `W`, both paths compute
//! `acc ← (acc + x₁·w₁) + x₀·w₀` in f32: the products of two bf16 values
//! (8-bit significands) are exact in f32, so only the two additions round
//! (to nearest even) and the result is independent of FMA. This is the
//! order Intel documents for `vdpbf16ps`; the tests check that the hardware
//! path and the emulation agree bit for bit on normal numbers.
//! (`vdpbf16ps` and the bf16 conversion flush subnormals to zero, which the
//! emulation does not; subnormal activations or weights do not occur in a
//! trained encoder.)
//!
//! # Error bound
//!
//! With `u = 2⁻²⁴` (f32) and `u_b = 2⁻⁸` (bf16 rounding, relative), a dot
//! product of length `K` differs from the exact product of the *unrounded*
//! f32 inputs by at most `(2·u_b + u_b² + (K + 2)·u)·Σ|xₖ·wₖ|` — the input
//! rounding (`|x̂ŵ − xw| ≤ (2u_b + u_b²)|xw|`) plus the `K` rounded additions
//! of an f32 sum. The property tests assert exactly this bound.

use std::cell::RefCell;

use super::{Job, PANEL, drive, store_tile};
use crate::Isa;

thread_local! {
    /// `X` rounded to bf16 pairs for the GEMM running on this thread,
    /// reused across calls (grown, never shrunk).
    static PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// `x` rounded to the nearest bf16 (ties to even), as f32.
pub fn round(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// The bf16 bits of `lo` and `hi` as one word (`lo` in the low half).
#[inline]
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(half::bf16::from_f32(lo).to_bits())
        | (u32::from(half::bf16::from_f32(hi).to_bits()) << 16)
}

/// The bf16 in the low (`shift = 0`) or high (`shift = 16`) half of `w`, as f32.
#[inline(always)]
fn half_of(w: u32, shift: u32) -> f32 {
    f32::from_bits(((w >> shift) & 0xffff) << 16)
}

/// Runs the validated `job` (bf16 weights) over `m` rows: rounds `X` to
/// bf16 pairs (`abf`) and drives the tiles of `isa`'s kernel.
pub(super) fn gemm(isa: Isa, job: &mut Job, m: usize) {
    let kp = job.k.div_ceil(2);
    PAIRS.with_borrow_mut(|buf| {
        if buf.len() < m * kp {
            buf.resize(m * kp, 0);
        }
        for i in 0..m {
            // SAFETY: row i < m of `a` holds k values (Job contract).
            let row = unsafe { std::slice::from_raw_parts(job.a.add(i * job.lda), job.k) };
            let dst = &mut buf[i * kp..(i + 1) * kp];
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512Bf16 {
                // SAFETY: the caller checked the ISA (AVX-512 + AVX512_BF16).
                unsafe { x86::round_row(row, dst) };
                continue;
            }
            round_row(row, dst);
        }
        job.abf = buf.as_ptr();
        let job: &Job = job;
        // Rows per chunk: about 16 KiB of pairs, as the f32 kernels do.
        let mc_target = (16 * 1024 / (4 * kp)).max(1);
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512Bf16 {
            drive(job, m, mc_target, 8, 2, &|t, r, np, c0, cols| {
                // SAFETY: the caller checked the ISA; `drive` passes only
                // tiles inside the validated job, and `abf` holds m rows.
                unsafe { x86::tile(job, t, r, np, c0, cols) }
            });
            return;
        }
        drive(job, m, mc_target, 4, 1, &|t, r, np, c0, cols| {
            scalar_tile(job, t, r, np, c0, cols)
        });
    });
}

/// `dst[p] = pair(row[2p], row[2p + 1])`, zero beyond the row.
fn round_row(row: &[f32], dst: &mut [u32]) {
    for (p, d) in dst.iter_mut().enumerate() {
        let lo = row.get(2 * p).copied().unwrap_or(0.0);
        let hi = row.get(2 * p + 1).copied().unwrap_or(0.0);
        *d = pair(lo, hi);
    }
}

/// The emulation of `vdpbf16ps` (every path without AVX512_BF16).
fn scalar_tile(job: &Job, r0: usize, rows: usize, np: usize, c0: usize, cols: usize) {
    debug_assert!(np == 1 && rows <= 4);
    let kp = job.pstride / PANEL;
    let b = job.b.cast::<u32>();
    let base = (c0 / PANEL) * job.pstride;
    let mut acc = [0.0f32; 4 * PANEL];
    for r in 0..rows {
        for p in 0..kp {
            // SAFETY: row r0 + r < m of `abf` holds kp pairs (set by `gemm`).
            let a = unsafe { *job.abf.add((r0 + r) * kp + p) };
            let (a0, a1) = (half_of(a, 0), half_of(a, 16));
            for j in 0..PANEL {
                // SAFETY: panel c0/16 exists and holds kp·16 pairs.
                let w = unsafe { *b.add(base + p * PANEL + j) };
                let t = acc[r * PANEL + j] + a1 * half_of(w, 16);
                acc[r * PANEL + j] = t + a0 * half_of(w, 0);
            }
        }
    }
    // SAFETY: tile bounds come from `drive` (rows, cols inside the job).
    unsafe { store_tile(job, &acc, PANEL, r0, rows, c0, cols) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::avx512::epilogue;
    use super::{Job, PANEL};

    /// [`super::round_row`] with `vcvtne2ps2bf16` (32 values per step,
    /// masked tails).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c,avx512bf16")]
    pub(super) fn round_row(row: &[f32], dst: &mut [u32]) {
        let k = row.len().min(2 * dst.len());
        let mut c = 0;
        while c < k {
            let lo = crate::simd::avx512::mask16(k - c);
            let hi = crate::simd::avx512::mask16(k.saturating_sub(c + 16));
            let words = crate::simd::avx512::mask16((k - c).div_ceil(2));
            // SAFETY: the masks cover only elements c.. < k ≤ row.len() and
            // words c/2.. < ceil(k/2) ≤ dst.len(); masked-off lanes are not
            // accessed.
            unsafe {
                let a = _mm512_maskz_loadu_ps(lo, row.as_ptr().add(c));
                let b = _mm512_maskz_loadu_ps(hi, row.as_ptr().add((c + 16).min(k)));
                let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
                _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(c / 2).cast(), words, v);
            }
            c += 32;
        }
    }

    /// AVX512_BF16 tile: up to 8 rows × one or two panels.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL, FMA, F16C and AVX512_BF16; the
    /// tile is inside the job and `job.abf` holds its rows.
    pub(super) unsafe fn tile(
        job: &Job,
        r0: usize,
        rows: usize,
        np: usize,
        c0: usize,
        cols: usize,
    ) {
        macro_rules! by_rows {
            ($np:literal) => {
                match rows {
                    1 => run::<1, $np>(job, r0, c0, cols),
                    2 => run::<2, $np>(job, r0, c0, cols),
                    3 => run::<3, $np>(job, r0, c0, cols),
                    4 => run::<4, $np>(job, r0, c0, cols),
                    5 => run::<5, $np>(job, r0, c0, cols),
                    6 => run::<6, $np>(job, r0, c0, cols),
                    7 => run::<7, $np>(job, r0, c0, cols),
                    _ => run::<8, $np>(job, r0, c0, cols),
                }
            };
        }
        // SAFETY: forwarded contract.
        unsafe { if np == 1 { by_rows!(1) } else { by_rows!(2) } }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c,avx512bf16")]
    unsafe fn run<const R: usize, const NP: usize>(job: &Job, r0: usize, c0: usize, cols: usize) {
        let kp = job.pstride / PANEL;
        let b = job.b.cast::<u32>();
        let base = (c0 / PANEL) * job.pstride;
        let mut acc = [[_mm512_setzero_ps(); NP]; R];
        let mut arow = [std::ptr::null::<u32>(); R];
        for r in 0..R {
            // SAFETY: row r0 + r < m of `abf` (contract).
            arow[r] = unsafe { job.abf.add((r0 + r) * kp) };
        }
        for p in 0..kp {
            let mut w = [_mm512_setzero_si512(); NP];
            for q in 0..NP {
                // SAFETY: panel c0/16 + q exists (np panels were requested)
                // and holds 16 words at pair p.
                w[q] =
                    unsafe { _mm512_loadu_si512(b.add(base + q * job.pstride + p * PANEL).cast()) };
            }
            for r in 0..R {
                // SAFETY: p < kp: inside row r0 + r of `abf`.
                let a = _mm512_set1_epi32(unsafe { *arow[r].add(p) } as i32);
                for q in 0..NP {
                    // SAFETY: `__m512i` and `__m512bh` are both 64-byte
                    // vectors; the reinterpretation is what `vdpbf16ps` reads.
                    let (av, wv) = unsafe {
                        (
                            std::mem::transmute::<__m512i, __m512bh>(a),
                            std::mem::transmute::<__m512i, __m512bh>(w[q]),
                        )
                    };
                    acc[r][q] = _mm512_dpbf16_ps(acc[r][q], av, wv);
                }
            }
        }
        // SAFETY: forwarded contract (the tile is inside the job).
        unsafe { epilogue::<R, NP>(job, r0, c0, cols, &acc) };
    }
}
