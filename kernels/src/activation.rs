//! Row softmax, LayerNorm, GELU and a vectorised `exp`.
//!
//! The SIMD paths share one polynomial `exp`: `2^n · p(r)` with
//! `n = round(x·log2 e)`, `r = x − n·ln 2` (Cody–Waite split of `ln 2`),
//! `p` the degree-7 Taylor polynomial of `e^r` on `|r| ≤ ln2/2` evaluated
//! with FMA (a multiply and an add on the portable path). Measured max
//! relative error over `[−87.3, 88.7]`: 7.6e-8 on AVX2/AVX-512, 9.7e-8 on the
//! portable path (≈ 1.3–1.6 ulp; the tests assert ≤ 2e-7 plus 2⁻¹⁴⁹ absolute
//! in the subnormal range). `exp(x)` is 0 below ≈ −103.97 (where the true
//! value rounds to 0), `+inf` above ≈ 88.72, `exp(−inf) = 0`,
//! `exp(+inf) = +inf`, `exp(NaN) = NaN`. Inside `softmax_row` and `gelu`
//! the AVX2 and portable paths use a variant for non-positive arguments that
//! flushes results below ≈ 1.2e-38 (the subnormal range) to 0, saving the
//! second scaling multiply. `gelu` on the AVX2 and AVX-512 paths (and the
//! lanes-as-queries attention softmax) instead fold `log₂ e` into their own
//! constants and take `2^y` directly: `n = round(y)`, a degree-6 polynomial
//! for `2^(y − n)` fitted for relative error (7.9e-8 measured in f32, like
//! the degree-7 `exp`), no `ln 2` reduction. The scalar path
//! uses the standard library's `exp`/`sqrt`.
//!
//! An `isa` the CPU does not support runs on the best supported path below
//! it (see the crate README, "Dispatch").

use crate::error::check_len;
use crate::simd::{dispatch, portable};
use crate::{Isa, KernelError};

/// In-place softmax of one row. The maximum is subtracted first, so large
/// inputs do not overflow.
///
/// Special values: a row whose entries are all `-inf` (everything masked)
/// becomes zeros; an empty row stays empty; a NaN anywhere makes the whole
/// row NaN; a `+inf` entry makes the whole row NaN (`inf − inf`), as plain
/// IEEE evaluation of `exp(x − max) / Σ` gives.
pub fn softmax_row(isa: Isa, x: &mut [f32]) {
    dispatch!(isa,
        scalar => {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                crate::simd::fill_masked_row(x);
                return;
            }
            let mut sum = 0.0;
            for v in x.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            x.iter_mut().for_each(|v| *v *= inv);
        },
        portable => portable::softmax_row(x),
        avx2 => crate::simd::avx2::softmax_row(x),
        avx512 => crate::simd::avx512::softmax_row(x),
    )
}

/// `x[i] = exp(x[i])` in place (the polynomial `exp` of the module docs on
/// the SIMD paths, `f32::exp` on the scalar path).
pub fn exp_inplace(isa: Isa, x: &mut [f32]) {
    dispatch!(isa,
        scalar => x.iter_mut().for_each(|v| *v = v.exp()),
        portable => portable::exp_inplace(x),
        avx2 => crate::simd::avx2::exp_inplace(x),
        avx512 => crate::simd::avx512::exp_inplace(x),
    )
}

/// LayerNorm of one row: `(x − mean) / sqrt(var + eps) · gamma + beta`,
/// written to `out` (may not alias `x`). Mean and (biased) variance are
/// computed in two passes in f32; an empty row is a no-op.
pub fn layer_norm(
    isa: Isa,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("layer_norm gamma", x.len(), gamma.len())?;
    check_len("layer_norm beta", x.len(), beta.len())?;
    check_len("layer_norm out", x.len(), out.len())?;
    dispatch!(isa,
        scalar => {
            let n = x.len().max(1) as f32;
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + eps).sqrt();
            for i in 0..x.len() {
                out[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
            }
        },
        portable => portable::layer_norm(x, gamma, beta, eps, out),
        avx2 => crate::simd::avx2::layer_norm(x, gamma, beta, eps, out),
        avx512 => crate::simd::avx512::layer_norm(x, gamma, beta, eps, out),
    );
    Ok(())
}

/// GELU, tanh approximation (PyTorch `approximate="tanh"`, candle `gelu`):
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, in place.
///
/// Evaluated in the algebraically identical form `x · sigmoid(2u)` =
/// `x / (1 + e^(−2u))`, `u = √(2/π)·(x + 0.044715·x³)`, which avoids the
/// cancellation of `1 + tanh(u)` for negative `x`. The portable path
/// computes `e = exp(−2|u|) ≤ 1` and takes `(u ≥ 0 ? 1 : e) / (1 + e)`; the
/// AVX2 and AVX-512 paths take `x / (1 + 2^y)` with `y = −2u·log₂e =
/// x·(K0 + K1·x²)` clamped to about `[−150, 128]`, where `2^y` overflows to
/// `+inf` only when the true result is below 1e-37 in magnitude (the
/// quotient is then `∓0`). Both stay within the documented tolerance (worst
/// 0.31 of it on the AVX paths over a dense sweep of `[−30, 30]` and
/// `±2^−40..2^40`). `gelu(+inf) = +inf`, `gelu(−inf) = NaN`
/// (`−inf · 0`, as the tanh formula gives in IEEE arithmetic),
/// `gelu(NaN) = NaN`.
pub fn gelu(isa: Isa, x: &mut [f32]) {
    dispatch!(isa,
        scalar => {
            const TWO_C: f32 = 1.595_769; // 2·sqrt(2/pi)
            for v in x.iter_mut() {
                let u = *v;
                let t = TWO_C * (u + 0.044_715 * u * u * u);
                let e = (-t.abs()).exp();
                let s = if t >= 0.0 { 1.0 } else { e };
                *v = u * (s / (1.0 + e));
            }
        },
        portable => portable::gelu(x),
        avx2 => crate::simd::avx2::gelu(x),
        avx512 => crate::simd::avx512::gelu(x),
    )
}
