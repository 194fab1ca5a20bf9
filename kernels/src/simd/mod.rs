//! The SIMD implementations behind the primitives of [`crate::convert`],
//! [`crate::vector`] and [`crate::activation`].
//!
//! * [`portable`]: the `wide` crate (SSE2 on a default x86-64 build), no
//!   `target_feature`, no `unsafe` beyond what `wide` does itself.
//! * `avx2`: `std::arch` intrinsics in `#[target_feature(enable =
//!   "avx2,fma,f16c")]` functions (x86-64 only).
//! * `avx512`: AVX-512 F/BW/VL intrinsics (x86-64 only).
//!
//! The scalar reference bodies live next to the public entry points.
//!
//! # Routing an unsupported instruction set
//!
//! Public entry points never execute instructions the CPU lacks: they call
//! [`effective`] first, which maps a requested but unsupported [`Isa`] to the
//! best supported path below it (`Avx512 → Avx2 → Portable`). The mapping is
//! silent on purpose: functions without a `Result` cannot report it, and an
//! operation that succeeds on a slower path is more useful than an error.
//! Callers who want to know use [`Isa::checked`].
//!
//! # Bounds
//!
//! The `target_feature` functions here are *safe* functions: each derives
//! its loop bounds from the lengths of the slices it is given (the minimum of
//! the lengths it reads together), so no argument can make it read or write
//! out of bounds. Tails shorter than one vector use masked loads/stores
//! (`vmaskmov` on AVX2, `k`-masks on AVX-512, which suppress faults on
//! masked-off lanes) or a small zero-padded stack buffer (f16 tails on AVX2).
//! The public entry points additionally check that the lengths agree and
//! return [`crate::KernelError::Shape`] when they do not. The only `unsafe`
//! at a call site is the promise that the CPU has the target features, which
//! [`effective`] guarantees.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::Isa;

pub(crate) mod portable;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

/// Bit 0: cache initialised; bit 1: AVX2 path supported; bit 2: AVX-512 path.
static SUPPORT: AtomicU8 = AtomicU8::new(0);

fn support_bits() -> u8 {
    let bits = SUPPORT.load(Ordering::Relaxed);
    if bits != 0 {
        return bits;
    }
    let mut bits = 1u8;
    if Isa::Avx2.is_supported() {
        bits |= 2;
    }
    if Isa::Avx512.is_supported() {
        bits |= 4;
    }
    SUPPORT.store(bits, Ordering::Relaxed);
    bits
}

/// The path that actually runs for a requested `isa`: `isa` itself when the
/// CPU supports it, otherwise the best supported path below it. Never
/// returns `Avx2`/`Avx512` unless the CPU has every feature that path uses;
/// never returns `Avx512Bf16` (the primitives have no bf16 code).
#[inline]
pub(crate) fn effective(isa: Isa) -> Isa {
    match isa {
        Isa::Scalar | Isa::Portable => isa,
        Isa::Avx2 => {
            if support_bits() & 2 != 0 {
                Isa::Avx2
            } else {
                Isa::Portable
            }
        }
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // The bf16 path's f32 primitives are the AVX-512 ones.
            let bits = support_bits();
            if bits & 4 != 0 {
                Isa::Avx512
            } else if bits & 2 != 0 {
                Isa::Avx2
            } else {
                Isa::Portable
            }
        }
    }
}

/// Dispatches one primitive to its four implementations.
///
/// `dispatch!(isa, scalar => expr, portable => expr, avx2 => expr, avx512 => expr)`;
/// the AVX arms are `target_feature` functions and are only entered when
/// [`effective`] says the CPU supports them.
macro_rules! dispatch {
    ($isa:expr, scalar => $s:expr, portable => $p:expr, avx2 => $a2:expr, avx512 => $a5:expr $(,)?) => {
        match $crate::simd::effective($isa) {
            $crate::Isa::Scalar => $s,
            $crate::Isa::Portable => $p,
            #[cfg(target_arch = "x86_64")]
            $crate::Isa::Avx2 => {
                // SAFETY: `effective` returns `Avx2` only when the CPU supports
                // AVX2, FMA and F16C, the features the callee is compiled for.
                unsafe { $a2 }
            }
            #[cfg(target_arch = "x86_64")]
            $crate::Isa::Avx512 => {
                // SAFETY: `effective` returns `Avx512` only when the CPU supports
                // AVX-512 F/BW/VL plus AVX2, FMA and F16C.
                unsafe { $a5 }
            }
            #[cfg(not(target_arch = "x86_64"))]
            $crate::Isa::Avx2 | $crate::Isa::Avx512 => $p,
            // `effective` never returns the bf16 path.
            $crate::Isa::Avx512Bf16 => unreachable!("simd::effective returned avx512bf16"),
        }
    };
}
pub(crate) use dispatch;

/// The most queries [`crate::vector::dot_f16_rows_multi`] takes per pass.
pub(crate) const MAX_QUERIES: usize = 16;

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
/// How far ahead the row scans prefetch, in bytes. The hardware prefetcher
/// alone leaves the scan at ≈ 0.65–0.75 of the streaming bandwidth on Zen 4;
/// software prefetch about 4 KiB ahead lifts it to ≈ 1.0 (measured with a
/// 1M × 64 f16 matrix).
pub(crate) const PREFETCH_BYTES: usize = 4096;

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
/// Rows to prefetch ahead: a whole number of `block`-row steps covering at
/// least [`PREFETCH_BYTES`] of f16 rows of `dim` elements (at least one step).
#[inline]
pub(crate) fn prefetch_rows(dim: usize, block: usize) -> usize {
    let step_bytes = (block * dim * 2).max(1);
    block * PREFETCH_BYTES.div_ceil(step_bytes).max(1)
}

/// The softmax of a row whose maximum is `-inf`: all NaN when the row holds
/// a NaN (NaN propagates), zeros otherwise (every position masked).
#[cold]
pub(crate) fn fill_masked_row(x: &mut [f32]) {
    let fill = if x.iter().any(|v| v.is_nan()) {
        f32::NAN
    } else {
        0.0
    };
    x.iter_mut().for_each(|v| *v = fill);
}

/// Constants of the polynomial `exp` shared by the SIMD paths.
///
/// `exp(x) = 2^n · p(r)` with `n = round(x·log2 e)` and
/// `r = x − n·ln 2` (Cody–Waite: `ln 2` split into a part exact in f32 and a
/// correction), `|r| ≤ ln2/2`; `p` is the degree-7 Taylor polynomial of
/// `e^r`, whose truncation error on that interval is below `6e-9` relative,
/// so the result is limited by f32 rounding in the Horner steps: measured max
/// relative error 7.6e-8 with FMA, 9.7e-8 without (the `exp` test prints it).
/// Inputs are clamped to `[LO, HI]`; `2^n` is applied in two halves (AVX2,
/// portable) or with `vscalefps` (AVX-512) so that results in the subnormal
/// range and overflow to `+inf` come out right; `exp(-inf) = 0`,
/// `exp(+inf) = +inf`, `exp(NaN) = NaN`.
pub(crate) mod expc {
    /// Below this, `exp` underflows to zero in f32 (`e^-104 < 2^-150`).
    pub const LO: f32 = -104.0;
    /// Above this, `exp` overflows to `+inf` (`e^89 > f32::MAX`).
    pub const HI: f32 = 89.0;
    /// Lower clamp of the `exp` of non-positive inputs used inside softmax
    /// and GELU: below it the result (< 1.2e-38, subnormal) is flushed to 0,
    /// which lets that variant apply `2^n` with a single multiply.
    pub const NEG_LO: f32 = -87.3;
    /// `1.5·2^23`: adding it rounds to an integer (nearest even) and leaves
    /// that integer in the low mantissa bits.
    pub const MAGIC: f32 = 12_582_912.0;
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// `ln 2` rounded to 9 significant bits (355/512): `n · LN2_HI` is exact for |n| < 2^15.
    pub const LN2_HI: f32 = 0.693_359_4; // parses to exactly 355/512
    /// `ln 2 − LN2_HI`.
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const C2: f32 = 1.0 / 2.0;
    pub const C3: f32 = 1.0 / 6.0;
    pub const C4: f32 = 1.0 / 24.0;
    pub const C5: f32 = 1.0 / 120.0;
    pub const C6: f32 = 1.0 / 720.0;
    pub const C7: f32 = 1.0 / 5040.0;
}

/// `2^f` for `|f| ≤ 1/2`: degree-6 polynomial fitted for minimum relative
/// error (Lawson-weighted least squares; 2.0e-9 in exact arithmetic, 7.9e-8
/// measured in f32 Horner form with FMA, the same as the degree-7 Taylor
/// polynomial of [`expc`] on its `ln 2`-reduced argument). Used where the
/// argument is already in log₂ units (`2^y = 2^n · 2^(y − n)`,
/// `n = round(y)`): the GELU and the attention softmax, which fold `log₂ e`
/// into their own constants and so skip the two-step `ln 2` reduction.
pub(crate) mod exp2c {
    pub const P1: f32 = std::f32::consts::LN_2; // the fitted value rounds to it
    pub const P2: f32 = 0.240_226_48;
    pub const P3: f32 = 0.055_503_324;
    pub const P4: f32 = 0.009_618_437;
    pub const P5: f32 = 0.001_339_887_5;
    pub const P6: f32 = 0.000_153_533_62;
}

/// The tanh-GELU constants: `gelu(x) = x · sigmoid(2u)`,
/// `u = √(2/π)·(x + 0.044715·x³)`, which equals `0.5·x·(1 + tanh(u))`.
pub(crate) mod geluc {
    /// `2·√(2/π)`.
    pub const TWO_C: f32 = 1.595_769;
    /// The cubic coefficient of the tanh approximation.
    pub const A: f32 = 0.044_715;
    /// `−2·√(2/π)·log₂e` and `−2·√(2/π)·0.044715·log₂e`, each rounded
    /// once: `−t·log₂e = x·(K0 + K1·x²)`, the exponent of `e^(−t)` in log₂
    /// units.
    pub const K0: f32 = -2.302_208_2;
    /// See [`K0`].
    pub const K1: f32 = -0.102_943_24;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_never_exceeds_the_request_or_the_cpu() {
        for isa in Isa::ALL {
            let e = effective(isa);
            assert!(e.is_supported(), "{isa} -> {e}");
            assert!(e <= isa.f32_path(), "{isa} -> {e}");
            if isa.is_supported() {
                assert_eq!(e, isa.f32_path());
            }
        }
    }

    #[test]
    fn prefetch_distance_covers_the_target() {
        assert_eq!(prefetch_rows(64, 8), 32);
        assert_eq!(prefetch_rows(1024, 8), 8);
        assert_eq!(prefetch_rows(1, 2), 2048);
    }
}
