//! The AVX-512 attention kernels: 16 query rows in the 16 lanes
//! (`attend_t16`, head widths a multiple of 16), the fused per-row kernel
//! for other shapes (`attend_avx512`) and the in-register `Kᵀ` transpose.
//! `exp`, `2^y` and the lane masks are the primitives' own
//! ([`crate::simd::avx512`]).

use std::arch::x86_64::*;

use super::{Args, QB};
use crate::simd::avx512::{exp2_16, exp16, mask16 as lanes};

/// In-place softmax of `row[..l]` (`row.len() ≥ l`, rounded up to 16).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn softmax16(row: &mut [f32], l: usize) {
    assert!(l >= 1 && row.len() >= l);
    let p = row.as_mut_ptr();
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    if l <= 16 {
        let m = lanes(l);
        // SAFETY: the mask covers l ≤ row.len() elements.
        let x = unsafe { _mm512_mask_loadu_ps(ninf, m, p) };
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(x));
        let e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(x, mx)));
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(e));
        // SAFETY: as above.
        unsafe { _mm512_mask_storeu_ps(p, m, _mm512_mul_ps(e, inv)) };
        return;
    }
    let mut mx = ninf;
    let mut j = 0;
    while j < l {
        let m = lanes(l - j);
        // SAFETY: lanes j..min(j+16, l) are inside the row.
        mx = _mm512_max_ps(mx, unsafe { _mm512_mask_loadu_ps(ninf, m, p.add(j)) });
        j += 16;
    }
    let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    let mut sum = _mm512_setzero_ps();
    let mut j = 0;
    while j < l {
        let m = lanes(l - j);
        // SAFETY: as above.
        unsafe {
            let e = exp16(_mm512_sub_ps(_mm512_mask_loadu_ps(ninf, m, p.add(j)), mx));
            let e = _mm512_maskz_mov_ps(m, e);
            sum = _mm512_add_ps(sum, e);
            _mm512_mask_storeu_ps(p.add(j), m, e);
        }
        j += 16;
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    let mut j = 0;
    while j < l {
        let m = lanes(l - j);
        // SAFETY: as above.
        unsafe {
            let e = _mm512_maskz_loadu_ps(m, p.add(j));
            _mm512_mask_storeu_ps(p.add(j), m, _mm512_mul_ps(e, inv));
        }
        j += 16;
    }
}

/// Scores, softmax and `P·V` of a block of query rows (see `scores_block`
/// and `pv_block`); the probabilities stay in `s`.
///
/// # Safety
/// AVX-512 F/BW/VL and FMA are available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn attend_avx512(
    qs: &[&[f32]],
    lens: &[usize],
    kt: &[f32],
    tp: usize,
    jn: usize,
    scale: f32,
    s: &mut [f32],
    v: &[f32],
    ldv: usize,
    hd: usize,
    out: &mut [f32],
    ldo: usize,
    col0: usize,
    orows: &[usize],
) {
    let a = Args::checked(
        QB, qs, lens, kt, tp, jn, scale, s, v, ldv, hd, out, ldo, col0, orows,
    );
    match qs.len() {
        1 => attend_r::<1>(&a, s, out),
        2 => attend_r::<2>(&a, s, out),
        3 => attend_r::<3>(&a, s, out),
        4 => attend_r::<4>(&a, s, out),
        5 => attend_r::<5>(&a, s, out),
        6 => attend_r::<6>(&a, s, out),
        7 => attend_r::<7>(&a, s, out),
        _ => attend_r::<8>(&a, s, out),
    }
}

/// `R` query rows with accumulators in registers.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn attend_r<const R: usize>(a: &Args<'_>, s: &mut [f32], out: &mut [f32]) {
    let sc = _mm512_set1_ps(a.scale);
    let sp = s.as_mut_ptr();
    let ktp = a.kt.as_ptr();
    let mut qp = [std::ptr::null::<f32>(); R];
    let mut lens = [0usize; R];
    for b in 0..R {
        qp[b] = a.qs[b].as_ptr();
        lens[b] = a.lens[b];
    }
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut j0 = 0;
    while j0 < a.jn {
        let mut acc = [_mm512_setzero_ps(); R];
        for c in 0..a.hd {
            // SAFETY: c < hd, j0 + 16 ≤ jn ≤ tp: inside kt (asserted).
            let k = unsafe { _mm512_loadu_ps(ktp.add(c * a.tp + j0)) };
            for b in 0..R {
                // SAFETY: c < hd ≤ qs[b].len() (asserted).
                let qv = _mm512_set1_ps(unsafe { *qp[b].add(c) });
                acc[b] = _mm512_fmadd_ps(qv, k, acc[b]);
            }
        }
        if a.jn == 16 {
            // Whole rows in one register: softmax without leaving them.
            for b in 0..R {
                let m = lanes(lens[b]);
                let x = _mm512_mask_mul_ps(ninf, m, acc[b], sc);
                let mx = _mm512_set1_ps(_mm512_reduce_max_ps(x));
                let e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(x, mx)));
                let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(e));
                // SAFETY: b·tp + 16 ≤ R·tp ≤ s.len() (asserted).
                unsafe { _mm512_storeu_ps(sp.add(b * a.tp), _mm512_mul_ps(e, inv)) };
            }
        } else {
            for b in 0..R {
                // SAFETY: b·tp + j0 + 16 ≤ s.len() (asserted).
                unsafe { _mm512_storeu_ps(sp.add(b * a.tp + j0), _mm512_mul_ps(acc[b], sc)) };
            }
        }
        j0 += 16;
    }
    if a.jn > 16 {
        for b in 0..R {
            softmax16(&mut s[b * a.tp..(b + 1) * a.tp], lens[b]);
        }
    }
    let sp = s.as_ptr();
    let lmin = lens.iter().copied().min().unwrap_or(0);
    let vp = a.v.as_ptr();
    let mut c0 = 0;
    while c0 < a.hd {
        let m = lanes(a.hd - c0);
        let mut acc = [_mm512_setzero_ps(); R];
        for j in 0..lmin {
            // SAFETY: j < lens ≤ lmax rows of v, columns c0.. < hd under the
            // mask (pv_checks).
            let vv = unsafe { _mm512_maskz_loadu_ps(m, vp.add(j * a.ldv + c0)) };
            for b in 0..R {
                // SAFETY: b·tp + j < s.len().
                let pb = _mm512_set1_ps(unsafe { *sp.add(b * a.tp + j) });
                acc[b] = _mm512_fmadd_ps(pb, vv, acc[b]);
            }
        }
        for b in 0..R {
            for j in lmin..lens[b] {
                // SAFETY: as above.
                let vv = unsafe { _mm512_maskz_loadu_ps(m, vp.add(j * a.ldv + c0)) };
                // SAFETY: as above.
                let pb = _mm512_set1_ps(unsafe { *sp.add(b * a.tp + j) });
                acc[b] = _mm512_fmadd_ps(pb, vv, acc[b]);
            }
            // SAFETY: the output row slot holds hd values (pv_checks); the
            // mask limits the store to hd − c0 lanes.
            unsafe {
                _mm512_mask_storeu_ps(
                    out.as_mut_ptr().add(a.orows[b] * a.ldo + a.col0 + c0),
                    m,
                    acc[b],
                )
            };
        }
        c0 += 16;
    }
}

/// 16×16 transpose in registers: lane `i` of `out[c]` is lane `c` of `r[i]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
    let mut tt = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        tt[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        tt[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        u[4 * i] = _mm512_shuffle_ps::<0x44>(tt[4 * i], tt[4 * i + 2]);
        u[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(tt[4 * i], tt[4 * i + 2]);
        u[4 * i + 2] = _mm512_shuffle_ps::<0x44>(tt[4 * i + 1], tt[4 * i + 3]);
        u[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(tt[4 * i + 1], tt[4 * i + 3]);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for mm in 0..4 {
        let (a, b, c, d) = (u[mm], u[4 + mm], u[8 + mm], u[12 + mm]);
        let v0 = _mm512_shuffle_f32x4::<0x44>(a, b);
        let v1 = _mm512_shuffle_f32x4::<0x44>(c, d);
        let v2 = _mm512_shuffle_f32x4::<0xEE>(a, b);
        let v3 = _mm512_shuffle_f32x4::<0xEE>(c, d);
        out[mm] = _mm512_shuffle_f32x4::<0x88>(v0, v1);
        out[4 + mm] = _mm512_shuffle_f32x4::<0xDD>(v0, v1);
        out[8 + mm] = _mm512_shuffle_f32x4::<0x88>(v2, v3);
        out[12 + mm] = _mm512_shuffle_f32x4::<0xDD>(v2, v3);
    }
    out
}

/// Scores of keys `j0..j0 + U` for the 16 query lanes: `Σ_c qt[c] · K[j, c]`.
///
/// # Safety
/// `qt` holds `hd·16` values; rows `j0..j0 + U` of `k` (stride `ldk`)
/// hold `hd` values each.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn key_scores<const U: usize>(
    qt: *const f32,
    k: *const f32,
    ldk: usize,
    hd: usize,
    j0: usize,
) -> [__m512; U] {
    let mut acc = [_mm512_setzero_ps(); U];
    for c in 0..hd {
        // SAFETY: c < hd (caller's contract).
        let qv = unsafe { _mm512_loadu_ps(qt.add(c * 16)) };
        for u in 0..U {
            // SAFETY: row j0 + u, column c < hd (caller's contract).
            let kv = _mm512_set1_ps(unsafe { *k.add((j0 + u) * ldk + c) });
            acc[u] = _mm512_fmadd_ps(qv, kv, acc[u]);
        }
    }
    acc
}

/// Attention of up to 16 query rows of one head with the queries in the
/// 16 lanes: every reduction of the softmax (over keys) is then a
/// vertical operation between registers, and `P·V` broadcasts `V`
/// elements against probability vectors. `q[b·ldq + c]` (`b < nb`,
/// `c < hd`) are the queries, `k`/`v` (strides `ldk`/`ldv`) the keys and
/// values from the sequence's first token, `lens[b]` the keys query `b`
/// sees (a prefix); `hd` is a multiple of 16. Writes `out[b·ldo + c]`
/// and leaves in `st[j·16 + b]` (hidden keys 0) the probabilities when
/// `norm`, the unnormalised exponentials otherwise.
///
/// Hidden keys never reach a query's lanes: their scores are replaced by
/// `−inf` and their exponentials by 0 under a mask, and the `P·V`
/// multiply-adds are masked per lane, so not even a NaN leaks.
///
/// # Safety
/// AVX-512 F/BW/VL and FMA are available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn attend_t16(
    q: &[f32],
    ldq: usize,
    lens: &[usize],
    k: &[f32],
    ldk: usize,
    v: &[f32],
    ldv: usize,
    hd: usize,
    scale: f32,
    qt: &mut [f32],
    st: &mut [f32],
    out: &mut [f32],
    ldo: usize,
    norm: bool,
) {
    let nb = lens.len();
    assert!((1..=16).contains(&nb) && hd >= 16 && hd.is_multiple_of(16));
    let lmax = lens.iter().copied().max().unwrap_or(0);
    assert!(lens.iter().all(|&l| l >= 1) && lmax >= 1);
    assert!(q.len() >= (nb - 1) * ldq + hd && ldq >= hd);
    assert!(k.len() >= (lmax - 1) * ldk + hd && v.len() >= (lmax - 1) * ldv + hd);
    assert!(qt.len() >= hd * 16 && st.len() >= lmax * 16);
    assert!(out.len() >= (nb - 1) * ldo + hd);
    // Qᵀ: qt[c·16 + b] = q[b·ldq + c] (rows ≥ nb zero).
    // SAFETY: AVX-512 (this function's contract); bounds asserted above.
    unsafe { transpose_avx512(q, ldq, nb, hd, qt, 16) };
    let mut lv = [1i32; 16];
    for b in 0..nb {
        lv[b] = lens[b] as i32;
    }
    // SAFETY: `lv` holds 16 i32.
    let lensv = unsafe { _mm512_loadu_si512(lv.as_ptr().cast()) };
    let visible = |j: usize| _mm512_cmpgt_epi32_mask(lensv, _mm512_set1_epi32(j as i32));
    // Scores in log₂ units (`scale·log₂e` folded in), so that the
    // softmax takes `2^(s − max)` directly.
    let sc = _mm512_set1_ps(scale * std::f32::consts::LOG2_E);
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let (qtp, kp, stp) = (qt.as_ptr(), k.as_ptr(), st.as_mut_ptr());
    // Scores (masked to −inf) and their running maximum.
    let mut mx = ninf;
    let mut j0 = 0;
    while j0 < lmax {
        let u = (lmax - j0).min(8);
        let mut acc = [_mm512_setzero_ps(); 8];
        // SAFETY: rows j0..j0 + u < lmax of k hold hd values (asserted).
        unsafe {
            if u == 8 {
                acc = key_scores::<8>(qtp, kp, ldk, hd, j0);
            } else {
                for jj in 0..u {
                    acc[jj] = key_scores::<1>(qtp, kp, ldk, hd, j0 + jj)[0];
                }
            }
        }
        for jj in 0..u {
            let j = j0 + jj;
            let sv = _mm512_mask_mul_ps(ninf, visible(j), acc[jj], sc);
            mx = _mm512_max_ps(mx, sv);
            // SAFETY: j < lmax: st holds lmax·16 values (asserted).
            unsafe { _mm512_storeu_ps(stp.add(j * 16), sv) };
        }
        j0 += u;
    }
    // Exponentials and their sum; `P·V` runs on the unnormalised
    // exponentials and its rows are scaled by 1/sum, and the
    // probabilities are normalised in place afterwards only when the
    // caller reads them (`norm`), so they cannot change the outputs.
    let mut sum = _mm512_setzero_ps();
    let lo = _mm512_set1_ps(-151.0);
    for j in 0..lmax {
        // SAFETY: as above.
        unsafe {
            // `max` keeps a NaN (second operand); −inf − max → 0.
            let y = _mm512_max_ps(lo, _mm512_sub_ps(_mm512_loadu_ps(stp.add(j * 16)), mx));
            let e = _mm512_maskz_mov_ps(visible(j), exp2_16(y));
            sum = _mm512_add_ps(sum, e);
            _mm512_storeu_ps(stp.add(j * 16), e);
        }
    }
    let inv = _mm512_div_ps(_mm512_set1_ps(1.0), sum);
    // P·V, 16 output columns at a time, then back to row layout.
    let vp = v.as_ptr();
    let mut c0 = 0;
    while c0 < hd {
        let mut acc = [_mm512_setzero_ps(); 16];
        for j in 0..lmax {
            let m = visible(j);
            // SAFETY: j < lmax (asserted st and v bounds); c0 + 16 ≤ hd.
            unsafe {
                let p = _mm512_loadu_ps(stp.add(j * 16));
                let row = vp.add(j * ldv + c0);
                for cc in 0..16 {
                    acc[cc] = _mm512_mask3_fmadd_ps(p, _mm512_set1_ps(*row.add(cc)), acc[cc], m);
                }
            }
        }
        for a in acc.iter_mut() {
            *a = _mm512_mul_ps(*a, inv);
        }
        let rows = transpose16(&acc);
        for b in 0..nb {
            // SAFETY: row b < nb of out holds hd ≥ c0 + 16 values (asserted).
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(b * ldo + c0), rows[b]) };
        }
        c0 += 16;
    }
    if norm {
        for j in 0..lmax {
            // SAFETY: as above.
            unsafe {
                let p = stp.add(j * 16);
                _mm512_storeu_ps(p, _mm512_mul_ps(_mm512_loadu_ps(p), inv));
            }
        }
    }
}

/// `kt[c·tp + j] = k[j·ldk + c]` (`c < hd`, `j < t`), zero for `t ≤ j < tp`,
/// with 16×16 in-register transposes.
///
/// # Safety
/// AVX-512F is available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn transpose_avx512(
    k: &[f32],
    ldk: usize,
    t: usize,
    hd: usize,
    kt: &mut [f32],
    tp: usize,
) {
    assert!(t >= 1 && t <= tp && tp.is_multiple_of(16) && kt.len() >= hd * tp);
    assert!(k.len() >= (t - 1) * ldk + hd);
    let kp = k.as_ptr();
    let mut j0 = 0;
    while j0 < tp {
        let mut c0 = 0;
        while c0 < hd {
            let w = (hd - c0).min(16);
            let m = lanes(w);
            let mut r = [_mm512_setzero_ps(); 16];
            for i in 0..16 {
                if j0 + i < t {
                    // SAFETY: row j0 + i < t, columns c0..c0+w ≤ hd: inside k.
                    r[i] = unsafe { _mm512_maskz_loadu_ps(m, kp.add((j0 + i) * ldk + c0)) };
                }
            }
            let cols = transpose16(&r);
            for (cc, &val) in cols.iter().enumerate().take(w) {
                // SAFETY: c0 + cc < hd and j0 + 16 ≤ tp: inside kt.
                unsafe { _mm512_storeu_ps(kt.as_mut_ptr().add((c0 + cc) * tp + j0), val) };
            }
            c0 += 16;
        }
        j0 += 16;
    }
}
