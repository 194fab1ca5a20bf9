//! The AVX-512 (F + BW + VL, with AVX2/FMA/F16C) path (x86-64).
//!
//! Same contract as the AVX2 module: safe `#[target_feature]` functions whose
//! bounds come from their slices. Tails use `k`-masked loads and stores
//! (`vmovups`/`vmovdqu16` with a mask), which neither touch nor fault on
//! masked-off elements. On Zen 4 the 512-bit instructions are split into two
//! 256-bit halves, so this path is about as fast as AVX2 there; it exists
//! (and is tested) for CPUs where it is faster.

use std::arch::x86_64::*;

use half::slice::HalfFloatSliceExt;

use super::avx2::{hsum, hsum8};
use super::{MAX_QUERIES, exp2c, expc, geluc};
use crate::f16;

/// The first `min(n, 16)` lanes.
#[inline]
pub(crate) fn mask16(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// Sum of the two 256-bit halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn fold256(v: __m512) -> __m256 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    _mm256_add_ps(_mm512_castps512_ps256(v), hi)
}

/// Loads `n ≤ 16` f32 at `p`, zeros elsewhere.
///
/// # Safety
/// `p..p+n` readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load(p: *const f32, n: usize) -> __m512 {
    // SAFETY: masked-off lanes are not accessed and cannot fault; the caller
    // guarantees the first `n` are readable.
    unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
}

/// Stores lanes `< n ≤ 16` of `v` at `p`.
///
/// # Safety
/// `p..p+n` writable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn store(p: *mut f32, n: usize, v: __m512) {
    // SAFETY: masked-off lanes are not written; the caller guarantees the
    // first `n` are writable.
    unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
}

/// Converts 16 f16 at `p` to f32.
///
/// # Safety
/// `p..p+16` readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_h16(p: *const u16) -> __m512 {
    // SAFETY: the caller guarantees 16 readable u16 (32 bytes).
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// Converts `n ≤ 16` f16 at `p` to f32, zeros elsewhere.
///
/// # Safety
/// `p..p+n` readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_h(p: *const u16, n: usize) -> __m512 {
    // SAFETY: masked-off lanes are not accessed (AVX-512BW+VL masked load);
    // the caller guarantees the first `n` are readable.
    _mm512_cvtph_ps(unsafe { _mm256_maskz_loadu_epi16(mask16(n), p.cast()) })
}

// ---------------------------------------------------------------- convert

/// f16 → f32 for the common prefix.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let s: &[u16] = src[..n].reinterpret_cast();
    let (sp, dp) = (s.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n` and both slices hold at least `n` elements.
        unsafe {
            let a = load_h16(sp.add(i));
            let b = load_h16(sp.add(i + 16));
            _mm512_storeu_ps(dp.add(i), a);
            _mm512_storeu_ps(dp.add(i + 16), b);
        }
        i += 32;
    }
    while i < n {
        let r = (n - i).min(16);
        // SAFETY: `r` elements from `i` are in both slices.
        unsafe { store(dp.add(i), r, load_h(sp.add(i), r)) };
        i += r;
    }
}

/// f32 → f16 for the common prefix (round to nearest even).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    let d: &mut [u16] = dst[..n].reinterpret_cast_mut();
    let (sp, dp) = (src.as_ptr(), d.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`: 16 f32 readable at `sp+i`, 16 u16 writable at `dp+i`.
        unsafe {
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_loadu_ps(sp.add(i)),
            );
            _mm256_storeu_si256(dp.add(i).cast(), h);
        }
        i += 16;
    }
    while i < n {
        let r = (n - i).min(16);
        // SAFETY: `r` elements from `i` are readable in `src` and writable in
        // `dst`; the masked store writes only those.
        unsafe {
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(load(
                sp.add(i),
                r,
            ));
            _mm256_mask_storeu_epi16(dp.add(i).cast(), mask16(r), h);
        }
        i += r;
    }
}

// ---------------------------------------------------------------- dot / axpy

/// `Σ a·b` over the common prefix, four 16-lane accumulators.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: `i + 64 <= n`, both slices hold `n` elements.
        unsafe {
            for k in 0..4 {
                acc[k] = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16 * k)),
                    _mm512_loadu_ps(pb.add(i + 16 * k)),
                    acc[k],
                );
            }
        }
        i += 64;
    }
    let mut k = 0;
    while i < n {
        let r = (n - i).min(16);
        // SAFETY: `r` elements from `i` are in both slices.
        unsafe {
            acc[k] = _mm512_fmadd_ps(load(pa.add(i), r), load(pb.add(i), r), acc[k]);
        }
        k = (k + 1) & 3;
        i += r;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    hsum(fold256(s))
}

/// `Σ a·b` with `a` in f16, over the common prefix.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn dot_h(a: &[u16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: `i + 64 <= n`, both slices hold `n` elements.
        unsafe {
            for k in 0..4 {
                acc[k] = _mm512_fmadd_ps(
                    load_h16(pa.add(i + 16 * k)),
                    _mm512_loadu_ps(pb.add(i + 16 * k)),
                    acc[k],
                );
            }
        }
        i += 64;
    }
    let mut k = 0;
    while i < n {
        let r = (n - i).min(16);
        // SAFETY: `r` elements from `i` are in both slices.
        unsafe {
            acc[k] = _mm512_fmadd_ps(load_h(pa.add(i), r), load(pb.add(i), r), acc[k]);
        }
        k = (k + 1) & 3;
        i += r;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    hsum(fold256(s))
}

/// `Σ a·b` with `a` in f16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    dot_h(a.reinterpret_cast(), b)
}

/// `y += alpha·x` over the common prefix.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let av = _mm512_set1_ps(alpha);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`, both slices hold `n` elements.
        unsafe {
            let v = _mm512_fmadd_ps(_mm512_loadu_ps(px.add(i)), av, _mm512_loadu_ps(py.add(i)));
            _mm512_storeu_ps(py.add(i), v);
        }
        i += 16;
    }
    if i < n {
        let r = n - i;
        // SAFETY: `r` elements from `i` are in both slices.
        unsafe {
            let v = _mm512_fmadd_ps(load(px.add(i), r), av, load(py.add(i), r));
            store(py.add(i), r, v);
        }
    }
}

/// `out = first + rest[0] + …` left to right, over `out.len()` elements
/// (every row holds at least that many: checked by the caller).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn sum_rows(first: &[f32], rest: &[&[f32]], out: &mut [f32]) {
    let n = out.len();
    assert!(first.len() >= n && rest.iter().all(|r| r.len() >= n));
    let po = out.as_mut_ptr();
    let mut i = 0;
    while i < n {
        let w = (n - i).min(16);
        // SAFETY: `w` elements from `i < n` are inside every row (asserted)
        // and inside `out`.
        unsafe {
            let mut v = load(first.as_ptr().add(i), w);
            for r in rest {
                v = _mm512_add_ps(v, load(r.as_ptr().add(i), w));
            }
            store(po.add(i), w, v);
        }
        i += 16;
    }
}

/// `y += alpha·x` with `x` in f16, over the common prefix.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let x: &[u16] = x[..n].reinterpret_cast();
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let av = _mm512_set1_ps(alpha);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`, both slices hold `n` elements.
        unsafe {
            let v = _mm512_fmadd_ps(load_h16(px.add(i)), av, _mm512_loadu_ps(py.add(i)));
            _mm512_storeu_ps(py.add(i), v);
        }
        i += 16;
    }
    if i < n {
        let r = n - i;
        // SAFETY: `r` elements from `i` are in both slices.
        unsafe {
            let v = _mm512_fmadd_ps(load_h(px.add(i), r), av, load(py.add(i), r));
            store(py.add(i), r, v);
        }
    }
}

/// Applies `$f` (an expression of the 16-lane vector `$v`) to every block of
/// the `&mut [f32]` `$x` in place, masked tail (a macro so the body is
/// compiled with this module's target features and inlined).
macro_rules! map_inplace {
    ($x:expr, |$v:ident| $f:expr) => {{
        let x: &mut [f32] = $x;
        let n = x.len();
        let p = x.as_mut_ptr();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n = x.len()`.
            let $v = unsafe { _mm512_loadu_ps(p.add(i)) };
            let out = $f;
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(p.add(i), out) };
            i += 16;
        }
        if i < n {
            let r = n - i;
            // SAFETY: `r` elements from `i` are in `x`.
            let $v = unsafe { load(p.add(i), r) };
            let out = $f;
            // SAFETY: as above.
            unsafe { store(p.add(i), r, out) };
        }
    }};
}

/// `x *= s`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn scale(x: &mut [f32], s: f32) {
    let sv = _mm512_set1_ps(s);
    map_inplace!(x, |v| _mm512_mul_ps(v, sv));
}

/// Scales to unit norm; returns the norm.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn l2_normalize(x: &mut [f32]) -> f32 {
    let norm = dot_f32(x, x).sqrt();
    if norm != 0.0 {
        scale(x, 1.0 / norm);
    }
    norm
}

// ---------------------------------------------------------------- exp & co

/// Polynomial `exp` in 16 lanes (see [`super::expc`]); `vscalefps` applies
/// `2^n` with correct overflow and gradual underflow.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn exp16(x: __m512) -> __m512 {
    // NaN-preserving operand order (second operand returned on NaN).
    let xc = _mm512_min_ps(
        _mm512_set1_ps(expc::HI),
        _mm512_max_ps(_mm512_set1_ps(expc::LO), x),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(xc, _mm512_set1_ps(expc::LOG2E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(expc::LN2_HI), xc);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(expc::LN2_LO), r);
    let mut p = _mm512_set1_ps(expc::C7);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
    _mm512_scalef_ps(p, n)
}

/// `x = exp(x)` element-wise.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn exp_inplace(x: &mut [f32]) {
    map_inplace!(x, |v| exp16(v));
}

/// In-place row softmax.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn softmax_row(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut m = [ninf; 2];
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`.
        unsafe {
            m[0] = _mm512_max_ps(m[0], _mm512_loadu_ps(p.add(i)));
            m[1] = _mm512_max_ps(m[1], _mm512_loadu_ps(p.add(i + 16)));
        }
        i += 32;
    }
    while i < n {
        let r = (n - i).min(16);
        // SAFETY: `r` elements from `i` are in `x`; masked-off lanes keep -inf.
        let v = unsafe { _mm512_mask_loadu_ps(ninf, mask16(r), p.add(i)) };
        m[0] = _mm512_max_ps(m[0], v);
        i += r;
    }
    let max = _mm512_reduce_max_ps(_mm512_max_ps(m[0], m[1]));
    if max == f32::NEG_INFINITY {
        super::fill_masked_row(x);
        return;
    }
    let mb = _mm512_set1_ps(max);
    let mut s = [_mm512_setzero_ps(); 2];
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`.
        unsafe {
            let a = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mb));
            let b = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i + 16)), mb));
            _mm512_storeu_ps(p.add(i), a);
            _mm512_storeu_ps(p.add(i + 16), b);
            s[0] = _mm512_add_ps(s[0], a);
            s[1] = _mm512_add_ps(s[1], b);
        }
        i += 32;
    }
    while i < n {
        let r = (n - i).min(16);
        let k = mask16(r);
        // SAFETY: `r` elements from `i` are in `x`.
        unsafe {
            let e = exp16(_mm512_sub_ps(load(p.add(i), r), mb));
            store(p.add(i), r, e);
            s[0] = _mm512_mask_add_ps(s[0], k, s[0], e);
        }
        i += r;
    }
    let sum = _mm512_reduce_add_ps(_mm512_add_ps(s[0], s[1]));
    scale(x, 1.0 / sum);
}

/// LayerNorm over the common prefix.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().min(gamma.len()).min(beta.len()).min(out.len());
    let (px, pg, pb, po) = (x.as_ptr(), gamma.as_ptr(), beta.as_ptr(), out.as_mut_ptr());
    let cnt = n.max(1) as f32;
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`.
        unsafe {
            s0 = _mm512_add_ps(s0, _mm512_loadu_ps(px.add(i)));
            s1 = _mm512_add_ps(s1, _mm512_loadu_ps(px.add(i + 16)));
        }
        i += 32;
    }
    while i < n {
        let r = (n - i).min(16);
        // SAFETY: `r` elements from `i` are in `x` (masked lanes read as 0).
        s0 = _mm512_add_ps(s0, unsafe { load(px.add(i), r) });
        i += r;
    }
    let mean = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / cnt;
    let mv = _mm512_set1_ps(mean);
    let (mut q0, mut q1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`.
        let (a, b) = unsafe { (_mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(px.add(i + 16))) };
        let (da, db) = (_mm512_sub_ps(a, mv), _mm512_sub_ps(b, mv));
        q0 = _mm512_fmadd_ps(da, da, q0);
        q1 = _mm512_fmadd_ps(db, db, q1);
        i += 32;
    }
    while i < n {
        let r = (n - i).min(16);
        // SAFETY: `r` elements from `i` are in `x`.
        let v = unsafe { load(px.add(i), r) };
        let d = _mm512_maskz_sub_ps(mask16(r), v, mv);
        q0 = _mm512_fmadd_ps(d, d, q0);
        i += r;
    }
    let var = _mm512_reduce_add_ps(_mm512_add_ps(q0, q1)) / cnt;
    let iv = _mm512_set1_ps(1.0 / (var + eps).sqrt());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`, all four slices hold `n` elements.
        unsafe {
            let v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(px.add(i)), mv), iv);
            let o = _mm512_fmadd_ps(v, _mm512_loadu_ps(pg.add(i)), _mm512_loadu_ps(pb.add(i)));
            _mm512_storeu_ps(po.add(i), o);
        }
        i += 16;
    }
    if i < n {
        let r = n - i;
        // SAFETY: `r` elements from `i` are in all four slices.
        unsafe {
            let v = _mm512_mul_ps(_mm512_sub_ps(load(px.add(i), r), mv), iv);
            let o = _mm512_fmadd_ps(v, load(pg.add(i), r), load(pb.add(i), r));
            store(po.add(i), r, o);
        }
    }
}

/// `2^y` for `y` already clamped to `[−151, 129]` (or NaN): `n = round(y)`,
/// `2^(y − n)` by the [`super::exp2c`] polynomial, `vscalefps` for `2^n`
/// (overflow to `+inf`, gradual underflow to 0).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn exp2_16(y: __m512) -> __m512 {
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
    let f = _mm512_sub_ps(y, n);
    let mut p = _mm512_fmadd_ps(_mm512_set1_ps(exp2c::P6), f, _mm512_set1_ps(exp2c::P5));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(exp2c::P4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(exp2c::P3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(exp2c::P2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(exp2c::P1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0));
    _mm512_scalef_ps(p, n)
}

/// Tanh-GELU of 16 lanes as `x / (1 + e^(−t))` (see [`super::geluc`]), with
/// `e^(−t) = 2^y`, `y = x·(K0 + K1·x²)` clamped to `[−151, 129]`: for very
/// negative `x` the power overflows to `+inf` and the quotient is `∓0` (the
/// true value is below 1e-37); `gelu(−inf) = −inf / inf = NaN`,
/// `gelu(+inf) = inf / 1`. `y` carries a relative error of a few ulp, i.e.
/// `e^(−t)` one of about `|t|` ulp, inside the documented tolerance.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn gelu16(x: __m512) -> __m512 {
    let x2 = _mm512_mul_ps(x, x);
    let y = _mm512_mul_ps(
        x,
        _mm512_fmadd_ps(x2, _mm512_set1_ps(geluc::K1), _mm512_set1_ps(geluc::K0)),
    );
    // NaN-preserving operand order (second operand returned on NaN).
    let y = _mm512_min_ps(
        _mm512_set1_ps(129.0),
        _mm512_max_ps(_mm512_set1_ps(-151.0), y),
    );
    let e = exp2_16(y);
    _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
}

/// Tanh-GELU in place.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn gelu(x: &mut [f32]) {
    map_inplace!(x, |v| gelu16(v));
}

// ---------------------------------------------------------------- row scans

/// Row scan, one query: 8 rows per step sharing each query load.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn dot_f16_rows(rows: &[f16], dim: usize, query: &[f32], out: &mut [f32]) {
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    if query.len() < dim {
        return;
    }
    let rows: &[u16] = rows.reinterpret_cast();
    let nrows = out.len().min(rows.len() / dim);
    let rows = &rows[..nrows * dim];
    let full = dim / 16 * 16;
    let tail = dim - full;
    let (pr, pq, po) = (rows.as_ptr(), query.as_ptr(), out.as_mut_ptr());
    // SAFETY: `query.len() >= dim = full + tail`.
    let qtail = unsafe { load(pq.add(full), tail) };
    let ahead = super::prefetch_rows(dim, 8);
    let mut r = 0;
    while r + 8 <= nrows {
        let base = r * dim;
        if r + ahead + 8 <= nrows {
            prefetch_rows(rows, base + ahead * dim, 8 * dim);
        }
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut c = 0;
        while c < full {
            // SAFETY: rows `r..r+8` are in `rows` and `c + 16 <= dim`, so
            // every load stays inside its row; `c + 16 <= query.len()`.
            unsafe {
                let qv = _mm512_loadu_ps(pq.add(c));
                for k in 0..8 {
                    acc[k] = _mm512_fmadd_ps(load_h16(pr.add(base + k * dim + c)), qv, acc[k]);
                }
            }
            c += 16;
        }
        if tail > 0 {
            // SAFETY: `tail` elements from `full` are inside each row.
            unsafe {
                for k in 0..8 {
                    acc[k] =
                        _mm512_fmadd_ps(load_h(pr.add(base + k * dim + full), tail), qtail, acc[k]);
                }
            }
        }
        let folded = [
            fold256(acc[0]),
            fold256(acc[1]),
            fold256(acc[2]),
            fold256(acc[3]),
            fold256(acc[4]),
            fold256(acc[5]),
            fold256(acc[6]),
            fold256(acc[7]),
        ];
        // SAFETY: `r + 8 <= nrows <= out.len()`.
        unsafe { _mm256_storeu_ps(po.add(r), hsum8(&folded)) };
        r += 8;
    }
    while r < nrows {
        out[r] = dot_h(&rows[r * dim..(r + 1) * dim], &query[..dim]);
        r += 1;
    }
}

/// One tile of the multi-query scan: rows `r0..r0+R` × queries
/// `q0..q0+G` (`R·G` accumulators, 8 in the tiles used), written to `out[(r0+k)·nq + q0+j]`.
/// Returns without doing anything if the tile is not inside the slices.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn multi_tile<const R: usize, const G: usize>(
    rows: &[u16],
    r0: usize,
    dim: usize,
    queries: &[f32],
    q0: usize,
    nq: usize,
    out: &mut [f32],
) {
    const { assert!(R * G <= 16 && R > 0 && G > 0) };
    if (r0 + R) * dim > rows.len()
        || (q0 + G) * dim > queries.len()
        || (r0 + R - 1) * nq + q0 + G > out.len()
    {
        return;
    }
    let full = dim / 16 * 16;
    let tail = dim - full;
    let (pr, pq) = (rows.as_ptr(), queries.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); G]; R];
    let mut c = 0;
    while c < full {
        let mut xs = [_mm512_setzero_ps(); R];
        for k in 0..R {
            // SAFETY: `(r0 + k + 1)·dim <= rows.len()` (checked above) and
            // `c + 16 <= dim`.
            xs[k] = unsafe { load_h16(pr.add((r0 + k) * dim + c)) };
        }
        for j in 0..G {
            // SAFETY: `(q0 + j + 1)·dim <= queries.len()` and `c + 16 <= dim`.
            let qv = unsafe { _mm512_loadu_ps(pq.add((q0 + j) * dim + c)) };
            for k in 0..R {
                acc[k][j] = _mm512_fmadd_ps(xs[k], qv, acc[k][j]);
            }
        }
        c += 16;
    }
    if tail > 0 {
        let mut xs = [_mm512_setzero_ps(); R];
        for k in 0..R {
            // SAFETY: `tail` elements from `(r0+k)·dim + full` end inside the row.
            xs[k] = unsafe { load_h(pr.add((r0 + k) * dim + full), tail) };
        }
        for j in 0..G {
            // SAFETY: `tail` elements from `(q0+j)·dim + full` end inside the query.
            let qv = unsafe { load(pq.add((q0 + j) * dim + full), tail) };
            for k in 0..R {
                acc[k][j] = _mm512_fmadd_ps(xs[k], qv, acc[k][j]);
            }
        }
    }
    let mut v = [[_mm256_setzero_ps(); 8]; 2];
    for k in 0..R {
        for j in 0..G {
            let t = k * G + j;
            v[t / 8][t % 8] = fold256(acc[k][j]);
        }
    }
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` holds 16 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), hsum8(&v[0])) };
    if R * G > 8 {
        // SAFETY: `lanes[8..]` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes[8..].as_mut_ptr(), hsum8(&v[1])) };
    }
    for k in 0..R {
        for j in 0..G {
            out[(r0 + k) * nq + q0 + j] = lanes[k * G + j];
        }
    }
}

/// All query tiles of the row block `r0..r0+R`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn multi_rows<const R: usize, const G: usize>(
    rows: &[u16],
    r0: usize,
    dim: usize,
    queries: &[f32],
    nq: usize,
    out: &mut [f32],
) {
    let mut q0 = 0;
    while q0 + G <= nq {
        multi_tile::<R, G>(rows, r0, dim, queries, q0, nq, out);
        q0 += G;
    }
    match nq - q0 {
        0 => {}
        1 => multi_tile::<R, 1>(rows, r0, dim, queries, q0, nq, out),
        2 => multi_tile::<R, 2>(rows, r0, dim, queries, q0, nq, out),
        _ => multi_tile::<R, 3>(rows, r0, dim, queries, q0, nq, out),
    }
}

/// The multi-query scan over all rows with `R`-row tiles.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn multi_scan<const R: usize, const G: usize>(
    rows: &[u16],
    nrows: usize,
    dim: usize,
    queries: &[f32],
    nq: usize,
    out: &mut [f32],
) {
    let ahead = super::prefetch_rows(dim, R);
    let mut r = 0;
    while r + R <= nrows {
        if r + ahead + R <= nrows {
            prefetch_rows(rows, (r + ahead) * dim, R * dim);
        }
        multi_rows::<R, G>(rows, r, dim, queries, nq, out);
        r += R;
    }
    while r < nrows {
        multi_rows::<1, G>(rows, r, dim, queries, nq, out);
        r += 1;
    }
}

/// Multi-query scan (`1 ≤ nq ≤ 16`); `out` is rows × nq (see the AVX2 path).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn dot_f16_rows_multi(
    rows: &[f16],
    dim: usize,
    queries: &[f32],
    nq: usize,
    out: &mut [f32],
) {
    let nq = nq.min(MAX_QUERIES);
    if nq == 0 {
        return;
    }
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    if nq == 1 {
        return dot_f16_rows(rows, dim, queries, out);
    }
    if queries.len() < nq * dim {
        return;
    }
    let bits: &[u16] = rows.reinterpret_cast();
    let nrows = (out.len() / nq).min(bits.len() / dim);
    if nq == 2 {
        multi_scan::<4, 2>(bits, nrows, dim, queries, nq, out);
    } else {
        multi_scan::<2, 4>(bits, nrows, dim, queries, nq, out);
    }
}

/// Prefetches (T0) the cache lines of `rows[start..start+len]` (clamped).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn prefetch_rows(rows: &[u16], start: usize, len: usize) {
    let end = (start + len).min(rows.len());
    let mut i = start;
    while i < end {
        // `prefetcht0` is a hint: it never faults and has no effect on
        // program semantics; the address is inside `rows`.
        _mm_prefetch::<_MM_HINT_T0>(rows[i..].as_ptr().cast());
        i += 32;
    }
}
