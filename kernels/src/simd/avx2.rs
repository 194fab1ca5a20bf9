//! The AVX2 + FMA + F16C path (x86-64).
//!
//! Every function here is a safe `#[target_feature]` function: calling it
//! is only `unsafe` because the CPU must have the features (the dispatcher
//! checks). Loop bounds come from the slice lengths (the common prefix when
//! lengths differ), so no argument can cause an out-of-bounds access:
//! f32 tails use `vmaskmovps` (masked-off lanes are neither read nor
//! written, and cannot fault), f16 tails are read through a zero-padded
//! 8-element stack copy unless 8 elements are available in the slice.

use std::arch::x86_64::*;

use half::slice::HalfFloatSliceExt;

use super::{MAX_QUERIES, exp2c, expc, geluc};
use crate::f16;

/// Lanes `< n` set (all-ones), lanes `≥ n` clear (every lane for `n ≥ 8`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn tail_mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `[hsum(v[0]), …, hsum(v[7])]` as one vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum8(v: &[__m256; 8]) -> __m256 {
    let a01 = _mm256_hadd_ps(v[0], v[1]);
    let a23 = _mm256_hadd_ps(v[2], v[3]);
    let a45 = _mm256_hadd_ps(v[4], v[5]);
    let a67 = _mm256_hadd_ps(v[6], v[7]);
    let b0 = _mm256_hadd_ps(a01, a23);
    let b1 = _mm256_hadd_ps(a45, a67);
    let lo = _mm256_permute2f128_ps::<0x20>(b0, b1);
    let hi = _mm256_permute2f128_ps::<0x31>(b0, b1);
    _mm256_add_ps(lo, hi)
}

/// Converts 8 f16 (bit patterns) at `p` to f32.
///
/// # Safety
/// `p..p+8` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_h8(p: *const u16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable u16 (16 bytes) at `p`;
    // `loadu` has no alignment requirement.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
}

/// Converts `s[i..i+n]` (`n < 8`) to f32, zeros in lanes `≥ n`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_h_tail(s: &[u16], i: usize, n: usize) -> __m256 {
    if i + 8 <= s.len() {
        // SAFETY: `i + 8 <= s.len()`, so 8 elements at `i` are in bounds.
        let v = unsafe { load_h8(s.as_ptr().add(i)) };
        _mm256_and_ps(v, _mm256_castsi256_ps(tail_mask(n)))
    } else {
        let mut buf = [0u16; 8];
        buf[..n].copy_from_slice(&s[i..i + n]);
        // SAFETY: `buf` holds 8 elements.
        unsafe { load_h8(buf.as_ptr()) }
    }
}

/// Loads `n < 8` f32 at `p`, zeros elsewhere.
///
/// # Safety
/// `p..p+n` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_tail(p: *const f32, n: usize) -> __m256 {
    // SAFETY: masked-off lanes are not accessed (and cannot fault); the
    // caller guarantees the first `n` are readable.
    unsafe { _mm256_maskload_ps(p, tail_mask(n)) }
}

/// Stores lanes `< n` of `v` at `p`.
///
/// # Safety
/// `p..p+n` must be writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_tail(p: *mut f32, n: usize, v: __m256) {
    // SAFETY: masked-off lanes are not written; the caller guarantees the
    // first `n` are writable.
    unsafe { _mm256_maskstore_ps(p, tail_mask(n), v) }
}

// ---------------------------------------------------------------- convert

/// f16 → f32 for the common prefix (F16C `vcvtph2ps`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let s: &[u16] = src[..n].reinterpret_cast();
    let (sp, dp) = (s.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n` and both slices hold at least `n` elements.
        unsafe {
            let a = load_h8(sp.add(i));
            let b = load_h8(sp.add(i + 8));
            _mm256_storeu_ps(dp.add(i), a);
            _mm256_storeu_ps(dp.add(i + 8), b);
        }
        i += 16;
    }
    if i + 8 <= n {
        // SAFETY: `i + 8 <= n`.
        unsafe { _mm256_storeu_ps(dp.add(i), load_h8(sp.add(i))) };
        i += 8;
    }
    if i < n {
        let v = load_h_tail(s, i, n - i);
        // SAFETY: `n - i` elements from `i` are in `dst`.
        unsafe { store_tail(dp.add(i), n - i, v) };
    }
}

/// f32 → f16 for the common prefix (F16C `vcvtps2ph`, round to nearest even).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    let d: &mut [u16] = dst[..n].reinterpret_cast_mut();
    let (sp, dp) = (src.as_ptr(), d.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`: 8 f32 readable at `sp+i`, 8 u16 writable at `dp+i`.
        unsafe {
            let v = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(sp.add(i)));
            _mm_storeu_si128(dp.add(i).cast(), v);
        }
        i += 8;
    }
    if i < n {
        let r = n - i;
        // SAFETY: `r` elements from `i` are readable in `src`.
        let v = unsafe { load_tail(sp.add(i), r) };
        let mut buf = [0u16; 8];
        // SAFETY: `buf` has room for 8 u16.
        unsafe {
            _mm_storeu_si128(
                buf.as_mut_ptr().cast(),
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v),
            )
        };
        d[i..n].copy_from_slice(&buf[..r]);
    }
}

// ---------------------------------------------------------------- dot / axpy

/// `Σ a·b` over the common prefix, eight 8-lane accumulators (two FMAs per
/// cycle need 8 chains of latency-4 FMAs).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: `i + 64 <= n`, both slices hold `n` elements.
        unsafe {
            for k in 0..8 {
                acc[k] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                    acc[k],
                );
            }
        }
        i += 64;
    }
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`.
        unsafe {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
        }
        i += 8;
    }
    if i < n {
        // SAFETY: `n - i < 8` elements from `i` are in both slices.
        unsafe {
            acc[1] = _mm256_fmadd_ps(
                load_tail(pa.add(i), n - i),
                load_tail(pb.add(i), n - i),
                acc[1],
            );
        }
    }
    let s0 = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let s1 = _mm256_add_ps(_mm256_add_ps(acc[4], acc[5]), _mm256_add_ps(acc[6], acc[7]));
    hsum(_mm256_add_ps(s0, s1))
}

/// `Σ a·b` with `a` in f16 over the common prefix.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_h(a: &[u16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: `i + 64 <= n`, both slices hold `n` elements.
        unsafe {
            for k in 0..8 {
                acc[k] = _mm256_fmadd_ps(
                    load_h8(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                    acc[k],
                );
            }
        }
        i += 64;
    }
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`.
        unsafe {
            acc[0] = _mm256_fmadd_ps(load_h8(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
        }
        i += 8;
    }
    if i < n {
        let x = load_h_tail(&a[..n], i, n - i);
        // SAFETY: `n - i < 8` elements from `i` are in `b`.
        let y = unsafe { load_tail(pb.add(i), n - i) };
        acc[1] = _mm256_fmadd_ps(x, y, acc[1]);
    }
    let s0 = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let s1 = _mm256_add_ps(_mm256_add_ps(acc[4], acc[5]), _mm256_add_ps(acc[6], acc[7]));
    hsum(_mm256_add_ps(s0, s1))
}

/// `Σ a·b` with `a` in f16.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    dot_h(a.reinterpret_cast(), b)
}

/// `y += alpha·x` over the common prefix.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let av = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`, both slices hold `n` elements.
        unsafe {
            let a = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), av, _mm256_loadu_ps(py.add(i)));
            let b = _mm256_fmadd_ps(
                _mm256_loadu_ps(px.add(i + 8)),
                av,
                _mm256_loadu_ps(py.add(i + 8)),
            );
            _mm256_storeu_ps(py.add(i), a);
            _mm256_storeu_ps(py.add(i + 8), b);
        }
        i += 16;
    }
    while i < n {
        let r = (n - i).min(8);
        // SAFETY: `r` elements from `i` are in both slices.
        unsafe {
            let v = _mm256_fmadd_ps(
                load_tail_or_full(px.add(i), r),
                av,
                load_tail_or_full(py.add(i), r),
            );
            store_tail_or_full(py.add(i), r, v);
        }
        i += r;
    }
}

/// `out = first + rest[0] + …` left to right, over `out.len()` elements
/// (every row holds at least that many: checked by the caller).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn sum_rows(first: &[f32], rest: &[&[f32]], out: &mut [f32]) {
    let n = out.len();
    assert!(first.len() >= n && rest.iter().all(|r| r.len() >= n));
    let po = out.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 elements from `i` are inside every row (asserted) and
        // inside `out`.
        unsafe {
            let mut v = _mm256_loadu_ps(first.as_ptr().add(i));
            for r in rest {
                v = _mm256_add_ps(v, _mm256_loadu_ps(r.as_ptr().add(i)));
            }
            _mm256_storeu_ps(po.add(i), v);
        }
        i += 8;
    }
    if i < n {
        let w = n - i;
        // SAFETY: `w` elements from `i` are inside every row and `out`.
        unsafe {
            let mut v = load_tail(first.as_ptr().add(i), w);
            for r in rest {
                v = _mm256_add_ps(v, load_tail(r.as_ptr().add(i), w));
            }
            store_tail(po.add(i), w, v);
        }
    }
}

/// `y += alpha·x` with `x` in f16 over the common prefix.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let x: &[u16] = x[..n].reinterpret_cast();
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let av = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, both slices hold `n` elements.
        unsafe {
            let v = _mm256_fmadd_ps(load_h8(px.add(i)), av, _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), v);
        }
        i += 8;
    }
    if i < n {
        let r = n - i;
        let xv = load_h_tail(x, i, r);
        // SAFETY: `r` elements from `i` are in `y`.
        unsafe {
            let v = _mm256_fmadd_ps(xv, av, load_tail(py.add(i), r));
            store_tail(py.add(i), r, v);
        }
    }
}

/// Loads `r ≤ 8` f32 (full load when `r == 8`).
///
/// # Safety
/// `p..p+r` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_tail_or_full(p: *const f32, r: usize) -> __m256 {
    if r == 8 {
        // SAFETY: 8 readable by the caller's guarantee.
        unsafe { _mm256_loadu_ps(p) }
    } else {
        // SAFETY: `r` readable by the caller's guarantee.
        unsafe { load_tail(p, r) }
    }
}

/// Stores `r ≤ 8` lanes (full store when `r == 8`).
///
/// # Safety
/// `p..p+r` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_tail_or_full(p: *mut f32, r: usize, v: __m256) {
    if r == 8 {
        // SAFETY: 8 writable by the caller's guarantee.
        unsafe { _mm256_storeu_ps(p, v) }
    } else {
        // SAFETY: `r` writable by the caller's guarantee.
        unsafe { store_tail(p, r, v) }
    }
}

/// Applies `$f` (an expression of the 8-lane vector `$v`) to every 8-lane
/// block of the `&mut [f32]` `$x` in place, masked tail. A macro rather than
/// a closure so that the body is compiled with this module's target features
/// and inlined.
macro_rules! map_inplace {
    ($x:expr, |$v:ident| $f:expr) => {{
        let x: &mut [f32] = $x;
        let n = x.len();
        let p = x.as_mut_ptr();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n = x.len()`.
            let (a, b) = unsafe { (_mm256_loadu_ps(p.add(i)), _mm256_loadu_ps(p.add(i + 8))) };
            let ra = {
                let $v = a;
                $f
            };
            let rb = {
                let $v = b;
                $f
            };
            // SAFETY: as above.
            unsafe {
                _mm256_storeu_ps(p.add(i), ra);
                _mm256_storeu_ps(p.add(i + 8), rb);
            }
            i += 16;
        }
        while i < n {
            let r = (n - i).min(8);
            // SAFETY: `r` elements from `i` are in `x`.
            let $v = unsafe { load_tail_or_full(p.add(i), r) };
            let out = $f;
            // SAFETY: as above.
            unsafe { store_tail_or_full(p.add(i), r, out) };
            i += r;
        }
    }};
}

/// `x *= s`.
#[target_feature(enable = "avx2,fma,f16c")]
fn scale(x: &mut [f32], s: f32) {
    let sv = _mm256_set1_ps(s);
    map_inplace!(x, |v| _mm256_mul_ps(v, sv));
}

/// Scales to unit norm; returns the norm.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn l2_normalize(x: &mut [f32]) -> f32 {
    let norm = dot_f32(x, x).sqrt();
    if norm != 0.0 {
        scale(x, 1.0 / norm);
    }
    norm
}

// ---------------------------------------------------------------- exp & co

/// Polynomial `exp` in 8 lanes (see [`super::expc`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp8(x: __m256) -> __m256 {
    // Operand order keeps NaN: `max`/`min` return the second operand when
    // either is NaN.
    let xc = _mm256_min_ps(
        _mm256_set1_ps(expc::HI),
        _mm256_max_ps(_mm256_set1_ps(expc::LO), x),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(expc::LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(expc::LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(expc::LN2_LO), r);
    let mut p = _mm256_set1_ps(expc::C7);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
    let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
    _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
}

/// `exp(x)` for `x ≤ 0` (or NaN), as used by softmax and GELU: one
/// multiply for `2^n` (magic-number rounding leaves `n` in the mantissa of
/// `t`), results below ≈ 1.2e-38 (`x < NEG_LO`) flushed to 0, so
/// `exp(-inf) = 0`. Same polynomial and accuracy as [`exp8`] otherwise.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn exp_neg8(x: __m256) -> __m256 {
    let lo = _mm256_set1_ps(expc::NEG_LO);
    // `max` returns its second operand when either is NaN: NaN is kept.
    let xc = _mm256_max_ps(lo, x);
    let magic = _mm256_set1_ps(expc::MAGIC);
    let t = _mm256_fmadd_ps(xc, _mm256_set1_ps(expc::LOG2E), magic);
    let n = _mm256_sub_ps(t, magic);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(expc::LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(expc::LN2_LO), r);
    let mut p = _mm256_set1_ps(expc::C7);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    // (n + 127) << 23: the magic's own bits shift out of the word.
    let s = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_castps_si256(t),
        _mm256_set1_epi32(127),
    )));
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo);
    _mm256_andnot_ps(under, _mm256_mul_ps(p, s))
}

/// Horizontal maximum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// `x = exp(x)` element-wise.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn exp_inplace(x: &mut [f32]) {
    map_inplace!(x, |v| exp8(v));
}

/// In-place row softmax.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn softmax_row(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    // Pass 1: maximum (masked-off tail lanes are -inf).
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut m = [ninf; 4];
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`.
        unsafe {
            for k in 0..4 {
                m[k] = _mm256_max_ps(m[k], _mm256_loadu_ps(p.add(i + 8 * k)));
            }
        }
        i += 32;
    }
    while i < n {
        let r = (n - i).min(8);
        // SAFETY: `r` elements from `i` are in `x`.
        let v = unsafe { load_tail_or_full(p.add(i), r) };
        let v = _mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(tail_mask(r)));
        m[0] = _mm256_max_ps(m[0], v);
        i += r;
    }
    let mv = _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3]));
    let max = hmax(mv);
    if max == f32::NEG_INFINITY {
        super::fill_masked_row(x);
        return;
    }
    // Pass 2: e = exp(x - max), summed.
    let mb = _mm256_set1_ps(max);
    let mut s0 = _mm256_setzero_ps();
    let mut s1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`.
        unsafe {
            let a = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mb));
            let b = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i + 8)), mb));
            _mm256_storeu_ps(p.add(i), a);
            _mm256_storeu_ps(p.add(i + 8), b);
            s0 = _mm256_add_ps(s0, a);
            s1 = _mm256_add_ps(s1, b);
        }
        i += 16;
    }
    while i < n {
        let r = (n - i).min(8);
        let mask = _mm256_castsi256_ps(tail_mask(r));
        // SAFETY: `r` elements from `i` are in `x`.
        unsafe {
            let e = exp_neg8(_mm256_sub_ps(load_tail_or_full(p.add(i), r), mb));
            store_tail_or_full(p.add(i), r, e);
            s0 = _mm256_add_ps(s0, _mm256_and_ps(e, mask));
        }
        i += r;
    }
    let sum = hsum(_mm256_add_ps(s0, s1));
    scale(x, 1.0 / sum);
}

/// LayerNorm over the common prefix.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().min(gamma.len()).min(beta.len()).min(out.len());
    let (px, pg, pb, po) = (x.as_ptr(), gamma.as_ptr(), beta.as_ptr(), out.as_mut_ptr());
    let cnt = n.max(1) as f32;
    // Mean (masked tail lanes load as 0).
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`.
        unsafe {
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(px.add(i)));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(px.add(i + 8)));
        }
        i += 16;
    }
    while i < n {
        let r = (n - i).min(8);
        // SAFETY: `r` elements from `i` are in `x`.
        s0 = _mm256_add_ps(s0, unsafe { load_tail_or_full(px.add(i), r) });
        i += r;
    }
    let mean = hsum(_mm256_add_ps(s0, s1)) / cnt;
    let mv = _mm256_set1_ps(mean);
    // Variance, two-pass (tail lanes zeroed after the subtraction).
    let (mut q0, mut q1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`.
        let (a, b) = unsafe { (_mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(px.add(i + 8))) };
        let (da, db) = (_mm256_sub_ps(a, mv), _mm256_sub_ps(b, mv));
        q0 = _mm256_fmadd_ps(da, da, q0);
        q1 = _mm256_fmadd_ps(db, db, q1);
        i += 16;
    }
    while i < n {
        let r = (n - i).min(8);
        let mask = _mm256_castsi256_ps(tail_mask(r));
        // SAFETY: `r` elements from `i` are in `x`.
        let v = unsafe { load_tail_or_full(px.add(i), r) };
        let d = _mm256_and_ps(_mm256_sub_ps(v, mv), mask);
        q0 = _mm256_fmadd_ps(d, d, q0);
        i += r;
    }
    let var = hsum(_mm256_add_ps(q0, q1)) / cnt;
    let iv = _mm256_set1_ps(1.0 / (var + eps).sqrt());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, all four slices hold `n` elements.
        unsafe {
            let v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), mv), iv);
            let o = _mm256_fmadd_ps(v, _mm256_loadu_ps(pg.add(i)), _mm256_loadu_ps(pb.add(i)));
            _mm256_storeu_ps(po.add(i), o);
        }
        i += 8;
    }
    if i < n {
        let r = n - i;
        // SAFETY: `r` elements from `i` are in all four slices.
        unsafe {
            let v = _mm256_mul_ps(_mm256_sub_ps(load_tail(px.add(i), r), mv), iv);
            let o = _mm256_fmadd_ps(v, load_tail(pg.add(i), r), load_tail(pb.add(i), r));
            store_tail(po.add(i), r, o);
        }
    }
}

/// `2^y` for `y` already clamped to `[−126, 128]` (or NaN): `n = round(y)`
/// by magic-number rounding, `2^(y − n)` by the [`super::exp2c`]
/// polynomial, `2^n` built in the exponent bits (`n = 128` gives `+inf`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn exp2_8(y: __m256) -> __m256 {
    let magic = _mm256_set1_ps(expc::MAGIC);
    let t = _mm256_add_ps(y, magic);
    let f = _mm256_sub_ps(y, _mm256_sub_ps(t, magic));
    let mut p = _mm256_fmadd_ps(_mm256_set1_ps(exp2c::P6), f, _mm256_set1_ps(exp2c::P5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2c::P4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2c::P3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2c::P2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2c::P1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0));
    // (n + 127) << 23: the magic's own bits shift out of the word.
    let s = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_castps_si256(t),
        _mm256_set1_epi32(127),
    )));
    _mm256_mul_ps(p, s)
}

/// Tanh-GELU of 8 lanes as `x / (1 + e^(−t))` (see [`super::geluc`]), with
/// `e^(−t) = 2^y`, `y = x·(K0 + K1·x²)` clamped to `[−126, 128]`: at the top
/// `2^128 = +inf` (very negative `x` give `∓0`, true value below 1e-37;
/// `gelu(−inf) = −inf / inf = NaN`), at the bottom `2^−126` vanishes
/// against the 1 (`gelu(+inf) = inf / 1`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn gelu8(x: __m256) -> __m256 {
    let x2 = _mm256_mul_ps(x, x);
    let y = _mm256_mul_ps(
        x,
        _mm256_fmadd_ps(x2, _mm256_set1_ps(geluc::K1), _mm256_set1_ps(geluc::K0)),
    );
    // `max`/`min` return their second operand on NaN: NaN is kept.
    let y = _mm256_min_ps(
        _mm256_set1_ps(128.0),
        _mm256_max_ps(_mm256_set1_ps(-126.0), y),
    );
    let e = exp2_8(y);
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// Tanh-GELU in place.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn gelu(x: &mut [f32]) {
    map_inplace!(x, |v| gelu8(v));
}

// ---------------------------------------------------------------- row scans

/// Row scan, one query: 8 rows per step, one query load shared by them,
/// 8 independent accumulators reduced with one transpose-add.
#[target_feature(enable = "avx2,fma,f16c")]
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
    let full = dim / 8 * 8;
    let tail = dim - full;
    let (pr, pq, po) = (rows.as_ptr(), query.as_ptr(), out.as_mut_ptr());
    let qtail = if tail > 0 {
        // SAFETY: `query.len() >= dim = full + tail`.
        unsafe { load_tail(pq.add(full), tail) }
    } else {
        _mm256_setzero_ps()
    };
    let ahead = super::prefetch_rows(dim, 8);
    let mut r = 0;
    while r + 8 <= nrows {
        let base = r * dim;
        if r + ahead + 8 <= nrows {
            prefetch_rows(rows, base + ahead * dim, 8 * dim);
        }
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut c = 0;
        while c < full {
            // SAFETY: rows `r..r+8` are in `rows` (`r + 8 <= nrows`) and
            // `c + 8 <= full <= dim`, so every load is inside its row;
            // `c + 8 <= dim <= query.len()`.
            unsafe {
                let qv = _mm256_loadu_ps(pq.add(c));
                for k in 0..8 {
                    acc[k] = _mm256_fmadd_ps(load_h8(pr.add(base + k * dim + c)), qv, acc[k]);
                }
            }
            c += 8;
        }
        if tail > 0 {
            for k in 0..8 {
                let xv = load_h_tail(rows, base + k * dim + full, tail);
                acc[k] = _mm256_fmadd_ps(xv, qtail, acc[k]);
            }
        }
        // SAFETY: `r + 8 <= nrows <= out.len()`.
        unsafe { _mm256_storeu_ps(po.add(r), hsum8(&acc)) };
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
#[target_feature(enable = "avx2,fma,f16c")]
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
    let full = dim / 8 * 8;
    let tail = dim - full;
    let (pr, pq) = (rows.as_ptr(), queries.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); G]; R];
    let mut c = 0;
    while c < full {
        let mut xs = [_mm256_setzero_ps(); R];
        for k in 0..R {
            // SAFETY: `(r0 + k + 1)·dim <= rows.len()` (checked above) and
            // `c + 8 <= dim`.
            xs[k] = unsafe { load_h8(pr.add((r0 + k) * dim + c)) };
        }
        for j in 0..G {
            // SAFETY: `(q0 + j + 1)·dim <= queries.len()` and `c + 8 <= dim`.
            let qv = unsafe { _mm256_loadu_ps(pq.add((q0 + j) * dim + c)) };
            for k in 0..R {
                acc[k][j] = _mm256_fmadd_ps(xs[k], qv, acc[k][j]);
            }
        }
        c += 8;
    }
    if tail > 0 {
        let mut xs = [_mm256_setzero_ps(); R];
        for k in 0..R {
            xs[k] = load_h_tail(rows, (r0 + k) * dim + full, tail);
        }
        for j in 0..G {
            // SAFETY: `tail` elements from `(q0+j)·dim + full` end at
            // `(q0+j+1)·dim <= queries.len()`.
            let qv = unsafe { load_tail(pq.add((q0 + j) * dim + full), tail) };
            for k in 0..R {
                acc[k][j] = _mm256_fmadd_ps(xs[k], qv, acc[k][j]);
            }
        }
    }
    let mut v = [[_mm256_setzero_ps(); 8]; 2];
    for k in 0..R {
        for j in 0..G {
            let t = k * G + j;
            v[t / 8][t % 8] = acc[k][j];
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

/// All query tiles of the row block `r0..r0+R`: groups of `G` queries, then
/// the remaining `< G` queries.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
#[target_feature(enable = "avx2,fma,f16c")]
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

/// Multi-query scan (`1 ≤ nq ≤ 16`); `out` is rows × nq. Each tile keeps
/// `R·G = 8` accumulators in registers; a tile's rows stay in L1 while the
/// query groups pass over them, so memory is read once.
#[target_feature(enable = "avx2,fma,f16c")]
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
#[target_feature(enable = "avx2,fma,f16c")]
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
