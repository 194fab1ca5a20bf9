//! The portable path: the `wide` crate's 8-lane vectors, no `target_feature`.
//!
//! `wide` picks instructions at compile time, so on a default x86-64 build
//! this is SSE2 (each `f32x8` is two 128-bit registers) and `mul_add` is a
//! multiply then an add. f16 ⇄ f32 conversion is done with integer bit
//! manipulation in the lanes (no F16C): exact, including subnormals,
//! infinities and NaN (quiet bit set, payload kept as `half` does).
//!
//! Every function derives its bounds from the slices it is given (reading
//! the common prefix when lengths differ); tails go through zero-padded
//! 8-lane copies.

use half::slice::HalfFloatSliceExt;
use wide::bytemuck::cast;
use wide::{f32x8, i16x8, i32x8, u16x8};

use super::{expc, geluc};
use crate::f16;

// ---------------------------------------------------------------- f16 lanes

/// Eight f16 bit patterns to f32, exactly (`half::f16::to_f32` values; a
/// NaN keeps its sign and payload but, unlike `half`, its quiet bit is not
/// forced on).
#[inline(always)]
fn h2f(h: u16x8) -> f32x8 {
    let h = i32x8::from_u16x8(h);
    let em = h & i32x8::splat(0x7fff);
    let sign = (h ^ em) << 16;
    // Normal and subnormal f16 (and zero): the bits shifted into an f32 are
    // the value scaled by 2^-112; one exact multiply by 2^112 rescales them
    // (subnormal f16 land on subnormal f32 inputs, exact products).
    let mag = cast::<i32x8, f32x8>(em << 13) * f32x8::splat(5.192_297e33);
    // Inf/NaN: the product has exponent 143 and the right mantissa; setting
    // every exponent bit turns it into inf/NaN with that mantissa.
    let special = em.simd_gt(i32x8::splat(0x7bff)) & i32x8::splat(0x7f80_0000);
    cast(cast::<f32x8, i32x8>(mag) | special | sign)
}

/// Eight f32 to f16 bit patterns, round to nearest even
/// (`half::f16::from_f32` semantics, NaN payload truncated, quiet bit set).
#[inline(always)]
fn f2h(v: f32x8) -> u16x8 {
    let x: i32x8 = cast(v);
    let sign = (x >> 16) & i32x8::splat(0x8000);
    let a = x & i32x8::splat(0x7fff_ffff);
    // NaN / infinity.
    let is_nan = a.simd_gt(i32x8::splat(0x7f80_0000));
    let nan = i32x8::splat(0x7e00) | ((a & i32x8::splat(0x007f_ffff)) >> 13);
    let inf = i32x8::splat(0x7c00);
    // Too large for f16 (≥ 65536): infinity. Values in [65520, 65536) reach
    // infinity through the rounding carry of the normal path.
    let overflow = a.simd_gt(i32x8::splat(0x477f_ffff));
    // Subnormal f16 results (|v| < 2^-14): adding 0.5 lets the FPU round the
    // mantissa (nearest even) into the low bits.
    let is_sub = a.simd_lt(i32x8::splat(0x3880_0000));
    let sub_f = cast::<i32x8, f32x8>(a) + f32x8::splat(0.5);
    let sub = cast::<f32x8, i32x8>(sub_f) - i32x8::splat(0x3f00_0000);
    // Normal: rebias the exponent and round to nearest even on bit 13.
    let odd = (a >> 13) & i32x8::splat(1);
    let normal = (a + i32x8::splat(-0x3800_0000 + 0xfff) + odd) >> 13;
    let r = is_sub.select(sub, normal);
    let r = overflow.select(inf, r);
    let r = is_nan.select(nan, r);
    let r = r | sign;
    cast(i16x8::from_i32x8_truncate(r))
}

/// Eight f32 from `s[i..i + 8]` (the caller keeps `i + 8 <= s.len()`).
#[inline(always)]
fn ld(s: &[f32], i: usize) -> f32x8 {
    f32x8::new(<[f32; 8]>::try_from(&s[i..i + 8]).unwrap_or([0.0; 8]))
}

#[inline(always)]
fn load_h(s: &[u16]) -> u16x8 {
    u16x8::from(s)
}

/// f16 → f32 for the common prefix of `src` and `dst`.
pub(crate) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let src: &[u16] = src[..n].reinterpret_cast();
    let dst = &mut dst[..n];
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(8);
    for (sc, dc) in (&mut s).zip(&mut d) {
        dc.copy_from_slice(h2f(load_h(sc)).as_array());
    }
    let (sr, dr) = (s.remainder(), d.into_remainder());
    if !sr.is_empty() {
        let v = h2f(load_h(sr)).to_array();
        dr.copy_from_slice(&v[..dr.len()]);
    }
}

/// f32 → f16 for the common prefix of `src` and `dst`.
pub(crate) fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    let src = &src[..n];
    let dst: &mut [u16] = dst[..n].reinterpret_cast_mut();
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(8);
    for (sc, dc) in (&mut s).zip(&mut d) {
        dc.copy_from_slice(f2h(f32x8::from(sc)).as_array());
    }
    let (sr, dr) = (s.remainder(), d.into_remainder());
    if !sr.is_empty() {
        let v = f2h(f32x8::from(sr)).to_array();
        dr.copy_from_slice(&v[..dr.len()]);
    }
}

// ---------------------------------------------------------------- dot / axpy

/// `Σ a·b` over the common prefix.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [f32x8::ZERO; 4];
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..4 {
            let xv = f32x8::from(&x[8 * k..8 * k + 8]);
            let yv = f32x8::from(&y[8 * k..8 * k + 8]);
            acc[k] = xv.mul_add(yv, acc[k]);
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut i = 0;
    while i + 8 <= ra.len() {
        acc[0] = ld(ra, i).mul_add(ld(rb, i), acc[0]);
        i += 8;
    }
    if i < ra.len() {
        acc[1] = f32x8::from(&ra[i..]).mul_add(f32x8::from(&rb[i..]), acc[1]);
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])).reduce_add()
}

#[inline(always)]
fn dot_h_row(a: &[u16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc0 = f32x8::ZERO;
    let mut acc1 = f32x8::ZERO;
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        acc0 = h2f(load_h(&x[..8])).mul_add(f32x8::from(&y[..8]), acc0);
        acc1 = h2f(load_h(&x[8..])).mul_add(f32x8::from(&y[8..]), acc1);
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    if ra.len() >= 8 {
        acc0 = h2f(load_h(&ra[..8])).mul_add(ld(rb, 0), acc0);
    }
    if !ra.len().is_multiple_of(8) {
        let i = ra.len() / 8 * 8;
        acc1 = h2f(load_h(&ra[i..])).mul_add(f32x8::from(&rb[i..]), acc1);
    }
    (acc0 + acc1).reduce_add()
}

/// `Σ a·b` with `a` in f16, over the common prefix.
pub(crate) fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    dot_h_row(a.reinterpret_cast(), b)
}

/// `y += alpha·x` over the common prefix.
pub(crate) fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    let av = f32x8::splat(alpha);
    let mut cx = x.chunks_exact(8);
    let mut cy = y.chunks_exact_mut(8);
    for (xc, yc) in (&mut cx).zip(&mut cy) {
        let r = f32x8::from(xc).mul_add(av, f32x8::from(&*yc));
        yc.copy_from_slice(r.as_array());
    }
    let (rx, ry) = (cx.remainder(), cy.into_remainder());
    if !rx.is_empty() {
        let r = f32x8::from(rx).mul_add(av, f32x8::from(&*ry)).to_array();
        ry.copy_from_slice(&r[..ry.len()]);
    }
}

/// `y += alpha·x` with `x` in f16, over the common prefix.
pub(crate) fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let x: &[u16] = x[..n].reinterpret_cast();
    let y = &mut y[..n];
    let av = f32x8::splat(alpha);
    let mut cx = x.chunks_exact(8);
    let mut cy = y.chunks_exact_mut(8);
    for (xc, yc) in (&mut cx).zip(&mut cy) {
        let r = h2f(load_h(xc)).mul_add(av, f32x8::from(&*yc));
        yc.copy_from_slice(r.as_array());
    }
    let (rx, ry) = (cx.remainder(), cy.into_remainder());
    if !rx.is_empty() {
        let r = h2f(load_h(rx)).mul_add(av, f32x8::from(&*ry)).to_array();
        ry.copy_from_slice(&r[..ry.len()]);
    }
}

/// `x *= s`.
fn scale(x: &mut [f32], s: f32) {
    let sv = f32x8::splat(s);
    let mut c = x.chunks_exact_mut(8);
    for xc in &mut c {
        let r = f32x8::from(&*xc) * sv;
        xc.copy_from_slice(r.as_array());
    }
    let r = c.into_remainder();
    if !r.is_empty() {
        let v = (f32x8::from(&*r) * sv).to_array();
        let l = r.len();
        r.copy_from_slice(&v[..l]);
    }
}

/// Scales to unit norm; returns the norm (see [`crate::vector::l2_normalize`]).
pub(crate) fn l2_normalize(x: &mut [f32]) -> f32 {
    let norm = dot_f32(x, x).sqrt();
    if norm != 0.0 {
        scale(x, 1.0 / norm);
    }
    norm
}

// ---------------------------------------------------------------- exp & co

/// Polynomial `exp` in 8 lanes (see [`super::expc`]).
#[inline(always)]
fn exp8(x: f32x8) -> f32x8 {
    let xc = x
        .fast_max(f32x8::splat(expc::LO))
        .fast_min(f32x8::splat(expc::HI));
    let ni = (xc * f32x8::splat(expc::LOG2E)).fast_round_int();
    let n = f32x8::from_i32x8(ni);
    let r = n.mul_neg_add(f32x8::splat(expc::LN2_HI), xc);
    let r = n.mul_neg_add(f32x8::splat(expc::LN2_LO), r);
    let mut p = f32x8::splat(expc::C7);
    p = p.mul_add(r, f32x8::splat(expc::C6));
    p = p.mul_add(r, f32x8::splat(expc::C5));
    p = p.mul_add(r, f32x8::splat(expc::C4));
    p = p.mul_add(r, f32x8::splat(expc::C3));
    p = p.mul_add(r, f32x8::splat(expc::C2));
    p = p.mul_add(r, f32x8::ONE);
    p = p.mul_add(r, f32x8::ONE);
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1: f32x8 = cast((n1 + i32x8::splat(127)) << 23);
    let s2: f32x8 = cast((n2 + i32x8::splat(127)) << 23);
    let y = p * s1 * s2;
    x.is_nan().select(x, y)
}

/// `exp(x)` for `x ≤ 0` (or NaN), as used by softmax and GELU: magic-number
/// rounding, one multiply for `2^n`, results below ≈ 1.2e-38 flushed to 0.
#[inline(always)]
fn exp_neg8(x: f32x8) -> f32x8 {
    let lo = f32x8::splat(expc::NEG_LO);
    let xc = x.fast_max(lo);
    let magic = f32x8::splat(expc::MAGIC);
    let t = xc.mul_add(f32x8::splat(expc::LOG2E), magic);
    let n = t - magic;
    let r = n.mul_neg_add(f32x8::splat(expc::LN2_HI), xc);
    let r = n.mul_neg_add(f32x8::splat(expc::LN2_LO), r);
    let mut p = f32x8::splat(expc::C7);
    p = p.mul_add(r, f32x8::splat(expc::C6));
    p = p.mul_add(r, f32x8::splat(expc::C5));
    p = p.mul_add(r, f32x8::splat(expc::C4));
    p = p.mul_add(r, f32x8::splat(expc::C3));
    p = p.mul_add(r, f32x8::splat(expc::C2));
    p = p.mul_add(r, f32x8::ONE);
    p = p.mul_add(r, f32x8::ONE);
    // (n + 127) << 23: the magic's own bits shift out of the word.
    let s: f32x8 = cast((cast::<f32x8, i32x8>(t) + i32x8::splat(127)) << 23);
    let y = x.simd_lt(lo).select(f32x8::ZERO, p * s);
    x.is_nan().select(x, y)
}

/// `x = exp(x)` element-wise.
pub(crate) fn exp_inplace(x: &mut [f32]) {
    let mut c = x.chunks_exact_mut(8);
    for xc in &mut c {
        let r = exp8(f32x8::from(&*xc));
        xc.copy_from_slice(r.as_array());
    }
    let r = c.into_remainder();
    if !r.is_empty() {
        let v = exp8(f32x8::from(&*r)).to_array();
        let l = r.len();
        r.copy_from_slice(&v[..l]);
    }
}

fn max_of(x: &[f32]) -> f32 {
    let mut m = f32x8::splat(f32::NEG_INFINITY);
    let mut c = x.chunks_exact(8);
    for xc in &mut c {
        m = m.fast_max(f32x8::from(xc));
    }
    let mut best = m.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max);
    for &v in c.remainder() {
        best = best.max(v);
    }
    best
}

/// In-place row softmax (see [`crate::activation::softmax_row`]).
pub(crate) fn softmax_row(x: &mut [f32]) {
    let max = max_of(x);
    if max == f32::NEG_INFINITY {
        super::fill_masked_row(x);
        return;
    }
    let mv = f32x8::splat(max);
    let mut sum = f32x8::ZERO;
    let mut c = x.chunks_exact_mut(8);
    for xc in &mut c {
        let e = exp_neg8(f32x8::from(&*xc) - mv);
        sum += e;
        xc.copy_from_slice(e.as_array());
    }
    let r = c.into_remainder();
    let mut total = sum.reduce_add();
    if !r.is_empty() {
        let e = exp_neg8(f32x8::from(&*r) - mv).to_array();
        let l = r.len();
        r.copy_from_slice(&e[..l]);
        total += r.iter().sum::<f32>();
    }
    scale(x, 1.0 / total);
}

/// LayerNorm (see [`crate::activation::layer_norm`]); common prefix.
pub(crate) fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().min(gamma.len()).min(beta.len()).min(out.len());
    let (x, gamma, beta, out) = (&x[..n], &gamma[..n], &beta[..n], &mut out[..n]);
    let cnt = n.max(1) as f32;
    let mut s = f32x8::ZERO;
    let mut i = 0;
    while i + 8 <= n {
        s += ld(x, i);
        i += 8;
    }
    if i < n {
        s += f32x8::from(&x[i..]);
    }
    let mean = s.reduce_add() / cnt;
    let mv = f32x8::splat(mean);
    let mut v = f32x8::ZERO;
    let mut i = 0;
    while i + 8 <= n {
        let d = ld(x, i) - mv;
        v = d.mul_add(d, v);
        i += 8;
    }
    let mut var = v.reduce_add();
    for &xi in &x[i..] {
        let d = xi - mean;
        var += d * d;
    }
    let inv = 1.0 / (var / cnt + eps).sqrt();
    let iv = f32x8::splat(inv);
    let mut i = 0;
    while i + 8 <= n {
        let xv = (ld(x, i) - mv) * iv;
        let r = xv.mul_add(ld(gamma, i), ld(beta, i));
        out[i..i + 8].copy_from_slice(r.as_array());
        i += 8;
    }
    if i < n {
        let xv = (f32x8::from(&x[i..]) - mv) * iv;
        let r = xv.mul_add(f32x8::from(&gamma[i..]), f32x8::from(&beta[i..]));
        out[i..].copy_from_slice(&r.as_array()[..n - i]);
    }
}

#[inline(always)]
fn gelu8(x: f32x8) -> f32x8 {
    let x3 = x * x * x;
    let t = x3.mul_add(f32x8::splat(geluc::A), x) * f32x8::splat(geluc::TWO_C);
    let e = exp_neg8(-t.abs());
    let num = t.simd_ge(f32x8::ZERO).select(f32x8::ONE, e);
    x * (num / (f32x8::ONE + e))
}

/// Tanh-GELU in place (see [`crate::activation::gelu`]).
pub(crate) fn gelu(x: &mut [f32]) {
    let mut c = x.chunks_exact_mut(8);
    for xc in &mut c {
        let r = gelu8(f32x8::from(&*xc));
        xc.copy_from_slice(r.as_array());
    }
    let r = c.into_remainder();
    if !r.is_empty() {
        let v = gelu8(f32x8::from(&*r)).to_array();
        let l = r.len();
        r.copy_from_slice(&v[..l]);
    }
}

// ---------------------------------------------------------------- row scans

/// `out[r] = rows[r·dim..][..dim] · query` (see [`crate::vector::dot_f16_rows`]).
/// Processes `min(out.len(), rows.len() / dim)` rows; `query.len() ≥ dim` is
/// the caller's check (a shorter query only shortens each dot).
pub(crate) fn dot_f16_rows(rows: &[f16], dim: usize, query: &[f32], out: &mut [f32]) {
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    let rows: &[u16] = rows.reinterpret_cast();
    let q = &query[..dim.min(query.len())];
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = dot_h_row(row, q);
    }
}

/// Four dot products of `x` with `q[j·dim..][..x.len()]`, `j < 4`.
#[inline(always)]
fn dot4(x: &[f32], q: &[f32], dim: usize) -> [f32; 4] {
    let n = x.len();
    let qs: [&[f32]; 4] = std::array::from_fn(|j| &q[j * dim..j * dim + n]);
    let mut acc = [f32x8::ZERO; 4];
    let mut i = 0;
    while i + 8 <= n {
        let xv = ld(x, i);
        for j in 0..4 {
            acc[j] = xv.mul_add(ld(qs[j], i), acc[j]);
        }
        i += 8;
    }
    if i < n {
        let xv = f32x8::from(&x[i..]);
        for j in 0..4 {
            acc[j] = xv.mul_add(f32x8::from(&qs[j][i..]), acc[j]);
        }
    }
    acc.map(|a| a.reduce_add())
}

/// Rows whose f32 copy fits the multi-query scan's stack buffer.
const MULTI_BUF: usize = 512;

/// Multi-query scan (see [`crate::vector::dot_f16_rows_multi`]), `nq ≤ 16`.
/// Each row is converted once into a stack buffer (when `dim ≤ 512`), then
/// dotted with the queries four at a time.
pub(crate) fn dot_f16_rows_multi(
    rows: &[f16],
    dim: usize,
    queries: &[f32],
    nq: usize,
    out: &mut [f32],
) {
    let nq = nq.min(super::MAX_QUERIES);
    if nq == 0 {
        return;
    }
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    if queries.len() < nq * dim {
        return;
    }
    let rows: &[u16] = rows.reinterpret_cast();
    let mut buf = [0f32; MULTI_BUF];
    for (o, row) in out.chunks_exact_mut(nq).zip(rows.chunks_exact(dim)) {
        if dim <= MULTI_BUF {
            let x = &mut buf[..dim];
            let mut sc = row.chunks_exact(8);
            let mut dc = x.chunks_exact_mut(8);
            for (s8, d8) in (&mut sc).zip(&mut dc) {
                d8.copy_from_slice(h2f(load_h(s8)).as_array());
            }
            let (sr, dr) = (sc.remainder(), dc.into_remainder());
            if !sr.is_empty() {
                let v = h2f(load_h(sr)).to_array();
                dr.copy_from_slice(&v[..dr.len()]);
            }
            let x = &buf[..dim];
            let mut q0 = 0;
            while q0 + 4 <= nq {
                o[q0..q0 + 4].copy_from_slice(&dot4(x, &queries[q0 * dim..], dim));
                q0 += 4;
            }
            for q in q0..nq {
                o[q] = dot_f32(x, &queries[q * dim..(q + 1) * dim]);
            }
        } else {
            for (q, oq) in o.iter_mut().enumerate() {
                *oq = dot_h_row(row, &queries[q * dim..(q + 1) * dim]);
            }
        }
    }
}
