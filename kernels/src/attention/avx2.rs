//! The AVX2 attention kernels: 8 query rows in the 8 lanes (`attend_t8`,
//! head widths a multiple of 8), the fused per-row kernel for other shapes
//! (`attend_avx2`, up to 4 rows) and the separate score / `P·V` kernels.
//! `2^y` and the softmax `exp` (for arguments `≤ 0`) are the primitives' own
//! ([`crate::simd::avx2`]).

use std::arch::x86_64::*;

use super::{Args, QB};
use crate::simd::avx2::{exp_neg8, exp2_8};

/// Maximum of the 8 lanes, in every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast_hmax8(v: __m256) -> __m256 {
    let h = _mm256_max_ps(v, _mm256_permute2f128_ps::<1>(v, v));
    let h = _mm256_max_ps(h, _mm256_shuffle_ps::<0b0100_1110>(h, h));
    _mm256_max_ps(h, _mm256_shuffle_ps::<0b1011_0001>(h, h))
}

/// Sum of the 8 lanes, in every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast_hsum8(v: __m256) -> __m256 {
    let h = _mm256_add_ps(v, _mm256_permute2f128_ps::<1>(v, v));
    let h = _mm256_add_ps(h, _mm256_shuffle_ps::<0b0100_1110>(h, h));
    _mm256_add_ps(h, _mm256_shuffle_ps::<0b1011_0001>(h, h))
}

/// 8×8 transpose in registers: lane `i` of `out[c]` is lane `c` of `r[i]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(r: &[__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    // u0: columns 0 (low half) and 4 (high half) of rows 0..4, etc.
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// Scores of keys `j0..j0 + U` for the 8 query lanes: `Σ_c qt[c] · K[j, c]`.
///
/// # Safety
/// `qt` holds `hd·8` values; rows `j0..j0 + U` of `k` (stride `ldk`)
/// hold `hd` values each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn key_scores8<const U: usize>(
    qt: *const f32,
    k: *const f32,
    ldk: usize,
    hd: usize,
    j0: usize,
) -> [__m256; U] {
    let mut acc = [_mm256_setzero_ps(); U];
    for c in 0..hd {
        // SAFETY: c < hd (caller's contract).
        let qv = unsafe { _mm256_loadu_ps(qt.add(c * 8)) };
        for u in 0..U {
            // SAFETY: row j0 + u, column c < hd (caller's contract).
            let kv = _mm256_set1_ps(unsafe { *k.add((j0 + u) * ldk + c) });
            acc[u] = _mm256_fmadd_ps(qv, kv, acc[u]);
        }
    }
    acc
}

/// AVX2 version of `attend_t16`: up to 8 query rows in the 8 lanes,
/// `hd` a multiple of 8, probabilities (when `norm`) left in `st[j·8 + b]`. AVX2 has no
/// masked multiply-add, so keys some lane of the block does not see
/// (`j ≥` the smallest visible count) are accumulated with a blend that
/// keeps those lanes unchanged.
///
/// # Safety
/// AVX2 and FMA are available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn attend_t8(
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
    assert!((1..=8).contains(&nb) && hd >= 8 && hd.is_multiple_of(8));
    let lmax = lens.iter().copied().max().unwrap_or(0);
    let lmin = lens.iter().copied().min().unwrap_or(0);
    assert!(lmin >= 1);
    assert!(q.len() >= (nb - 1) * ldq + hd && ldq >= hd);
    assert!(k.len() >= (lmax - 1) * ldk + hd && v.len() >= (lmax - 1) * ldv + hd);
    assert!(qt.len() >= hd * 8 && st.len() >= lmax * 8);
    assert!(out.len() >= (nb - 1) * ldo + hd);
    // Unused lanes (zero queries) see every key, so they never lower
    // `lmin`.
    let mut lv = [lmax as i32; 8];
    for b in 0..nb {
        lv[b] = lens[b] as i32;
    }
    // SAFETY: `lv` holds 8 i32.
    let lensv = unsafe { _mm256_loadu_si256(lv.as_ptr().cast()) };
    let visible =
        |j: usize| _mm256_castsi256_ps(_mm256_cmpgt_epi32(lensv, _mm256_set1_epi32(j as i32)));
    // Qᵀ: qt[c·8 + b] = q[b·ldq + c] (lanes ≥ nb zero).
    let qp = q.as_ptr();
    let mut c0 = 0;
    while c0 < hd {
        let mut r = [_mm256_setzero_ps(); 8];
        for b in 0..nb {
            // SAFETY: row b < nb, columns c0..c0 + 8 ≤ hd (asserted).
            r[b] = unsafe { _mm256_loadu_ps(qp.add(b * ldq + c0)) };
        }
        let t = transpose8(&r);
        for cc in 0..8 {
            // SAFETY: c0 + cc < hd: inside qt (asserted).
            unsafe { _mm256_storeu_ps(qt.as_mut_ptr().add((c0 + cc) * 8), t[cc]) };
        }
        c0 += 8;
    }
    // Scores in log₂ units (see `attend_t16`).
    let sc = _mm256_set1_ps(scale * std::f32::consts::LOG2_E);
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let (qtp, kp, stp) = (qt.as_ptr(), k.as_ptr(), st.as_mut_ptr());
    // Scores (masked to −inf) and their running maximum.
    let mut mx = ninf;
    let mut j0 = 0;
    while j0 < lmax {
        let u = (lmax - j0).min(8);
        let mut acc = [_mm256_setzero_ps(); 8];
        // SAFETY: rows j0..j0 + u < lmax of k hold hd values (asserted).
        unsafe {
            if u == 8 {
                acc = key_scores8::<8>(qtp, kp, ldk, hd, j0);
            } else {
                for jj in 0..u {
                    acc[jj] = key_scores8::<1>(qtp, kp, ldk, hd, j0 + jj)[0];
                }
            }
        }
        for jj in 0..u {
            let j = j0 + jj;
            let sv = _mm256_blendv_ps(ninf, _mm256_mul_ps(acc[jj], sc), visible(j));
            mx = _mm256_max_ps(mx, sv);
            // SAFETY: j < lmax: st holds lmax·8 values (asserted).
            unsafe { _mm256_storeu_ps(stp.add(j * 8), sv) };
        }
        j0 += u;
    }
    // Exponentials and their sum; unnormalised `P·V` scaled by 1/sum,
    // probabilities normalised afterwards when read (see `attend_t16`).
    let mut sum = _mm256_setzero_ps();
    let lo = _mm256_set1_ps(-126.0);
    for j in 0..lmax {
        // SAFETY: as above.
        unsafe {
            // `max` keeps a NaN (second operand); −inf − max → 2^−126,
            // which the visibility mask zeroes.
            let y = _mm256_max_ps(lo, _mm256_sub_ps(_mm256_loadu_ps(stp.add(j * 8)), mx));
            let e = _mm256_and_ps(exp2_8(y), visible(j));
            sum = _mm256_add_ps(sum, e);
            _mm256_storeu_ps(stp.add(j * 8), e);
        }
    }
    let inv = _mm256_div_ps(_mm256_set1_ps(1.0), sum);
    // P·V, 8 output columns at a time, then back to row layout.
    let vp = v.as_ptr();
    let mut c0 = 0;
    while c0 < hd {
        let mut acc = [_mm256_setzero_ps(); 8];
        for j in 0..lmin {
            // SAFETY: j < lmax (asserted st and v bounds); c0 + 8 ≤ hd.
            unsafe {
                let p = _mm256_loadu_ps(stp.add(j * 8));
                let row = vp.add(j * ldv + c0);
                for cc in 0..8 {
                    acc[cc] = _mm256_fmadd_ps(p, _mm256_set1_ps(*row.add(cc)), acc[cc]);
                }
            }
        }
        for j in lmin..lmax {
            let m = visible(j);
            // SAFETY: as above.
            unsafe {
                let p = _mm256_loadu_ps(stp.add(j * 8));
                let row = vp.add(j * ldv + c0);
                for cc in 0..8 {
                    let f = _mm256_fmadd_ps(p, _mm256_set1_ps(*row.add(cc)), acc[cc]);
                    acc[cc] = _mm256_blendv_ps(acc[cc], f, m);
                }
            }
        }
        for a in acc.iter_mut() {
            *a = _mm256_mul_ps(*a, inv);
        }
        let rows = transpose8(&acc);
        for b in 0..nb {
            // SAFETY: row b < nb of out holds hd ≥ c0 + 8 values (asserted).
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(b * ldo + c0), rows[b]) };
        }
        c0 += 8;
    }
    if norm {
        for j in 0..lmax {
            // SAFETY: as above.
            unsafe {
                let p = stp.add(j * 8);
                _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), inv));
            }
        }
    }
}

/// AVX2 version of `attend_avx512` (up to 4 rows; rows of at most 16
/// keys get their softmax in registers).
///
/// # Safety
/// AVX2 and FMA are available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn attend_avx2(
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
    let rows = QB / 2;
    let a = Args::checked(
        rows, qs, lens, kt, tp, jn, scale, s, v, ldv, hd, out, ldo, col0, orows,
    );
    // SAFETY: `Args::checked` asserted the bounds the kernels rely on.
    unsafe {
        match qs.len() {
            1 => attend2_r::<1>(&a, s, out),
            2 => attend2_r::<2>(&a, s, out),
            3 => attend2_r::<3>(&a, s, out),
            _ => attend2_r::<4>(&a, s, out),
        }
    }
}

/// # Safety
/// AVX2+FMA available, `R == a.qs.len()`, `a` came from `Args::checked`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend2_r<const R: usize>(a: &Args<'_>, s: &mut [f32], out: &mut [f32]) {
    let sc = _mm256_set1_ps(a.scale);
    let sp = s.as_mut_ptr();
    let ktp = a.kt.as_ptr();
    let mut qp = [std::ptr::null::<f32>(); R];
    let mut lens = [0usize; R];
    for b in 0..R {
        qp[b] = a.qs[b].as_ptr();
        lens[b] = a.lens[b];
    }
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let iota0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let iota1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    let mut j0 = 0;
    while j0 < a.jn {
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        for c in 0..a.hd {
            // SAFETY: c < hd, j0 + 16 ≤ jn ≤ tp: inside kt (asserted).
            let (k0, k1) = unsafe {
                let p = ktp.add(c * a.tp + j0);
                (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
            };
            for b in 0..R {
                // SAFETY: c < hd ≤ qs[b].len() (asserted).
                let qv = _mm256_set1_ps(unsafe { *qp[b].add(c) });
                acc0[b] = _mm256_fmadd_ps(qv, k0, acc0[b]);
                acc1[b] = _mm256_fmadd_ps(qv, k1, acc1[b]);
            }
        }
        if a.jn == 16 {
            for b in 0..R {
                let lv = _mm256_set1_epi32(lens[b] as i32);
                let m0 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lv, iota0));
                let m1 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lv, iota1));
                let x0 = _mm256_blendv_ps(ninf, _mm256_mul_ps(acc0[b], sc), m0);
                let x1 = _mm256_blendv_ps(ninf, _mm256_mul_ps(acc1[b], sc), m1);
                let mx = bcast_hmax8(_mm256_max_ps(x0, x1));
                let e0 = _mm256_and_ps(exp_neg8(_mm256_sub_ps(x0, mx)), m0);
                let e1 = _mm256_and_ps(exp_neg8(_mm256_sub_ps(x1, mx)), m1);
                let inv = _mm256_div_ps(_mm256_set1_ps(1.0), bcast_hsum8(_mm256_add_ps(e0, e1)));
                // SAFETY: b·tp + 16 ≤ R·tp ≤ s.len() (asserted).
                unsafe {
                    _mm256_storeu_ps(sp.add(b * a.tp), _mm256_mul_ps(e0, inv));
                    _mm256_storeu_ps(sp.add(b * a.tp + 8), _mm256_mul_ps(e1, inv));
                }
            }
        } else {
            for b in 0..R {
                // SAFETY: b·tp + j0 + 16 ≤ s.len() (asserted).
                unsafe {
                    let p = sp.add(b * a.tp + j0);
                    _mm256_storeu_ps(p, _mm256_mul_ps(acc0[b], sc));
                    _mm256_storeu_ps(p.add(8), _mm256_mul_ps(acc1[b], sc));
                }
            }
        }
        j0 += 16;
    }
    if a.jn > 16 {
        for b in 0..R {
            crate::activation::softmax_row(crate::Isa::Avx2, &mut s[b * a.tp..b * a.tp + lens[b]]);
        }
    }
    // SAFETY: `Args::checked` asserted what `pv_checks` would.
    unsafe {
        pv_avx2_r::<R>(
            s, a.tp, &lens, a.v, a.ldv, a.hd, out, a.ldo, a.col0, a.orows,
        )
    };
}

/// AVX2 scores; see `scores_block`.
///
/// # Safety
/// AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scores_avx2(
    qs: &[&[f32]],
    kt: &[f32],
    tp: usize,
    jn: usize,
    scale: f32,
    s: &mut [f32],
) {
    let hd = kt.len() / tp;
    let nb = qs.len();
    assert!((1..=QB).contains(&nb) && jn <= tp && jn.is_multiple_of(16) && s.len() >= nb * tp);
    for q in qs {
        assert!(q.len() >= hd);
    }
    assert!(kt.len() >= hd * tp);
    // SAFETY: the bounds the kernels rely on were asserted just above.
    unsafe {
        match nb {
            1 => scores_avx2_r::<1>(qs, kt, tp, jn, scale, s),
            2 => scores_avx2_r::<2>(qs, kt, tp, jn, scale, s),
            3 => scores_avx2_r::<3>(qs, kt, tp, jn, scale, s),
            _ => scores_avx2_r::<4>(qs, kt, tp, jn, scale, s),
        }
    }
}

/// # Safety
/// AVX2+FMA available; `qs.len() == R`, the bounds of `scores_avx2` hold.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_avx2_r<const R: usize>(
    qs: &[&[f32]],
    kt: &[f32],
    tp: usize,
    jn: usize,
    scale: f32,
    s: &mut [f32],
) {
    let hd = kt.len() / tp;
    let sc = _mm256_set1_ps(scale);
    let mut qp = [std::ptr::null::<f32>(); R];
    for b in 0..R {
        qp[b] = qs[b].as_ptr();
    }
    let mut j0 = 0;
    while j0 < jn {
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        for c in 0..hd {
            // SAFETY: c < hd, j0 + 16 ≤ jn ≤ tp: inside kt (caller).
            let (k0, k1) = unsafe {
                let p = kt.as_ptr().add(c * tp + j0);
                (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
            };
            for b in 0..R {
                // SAFETY: c < hd ≤ qs[b].len() (caller).
                let qv = _mm256_set1_ps(unsafe { *qp[b].add(c) });
                acc0[b] = _mm256_fmadd_ps(qv, k0, acc0[b]);
                acc1[b] = _mm256_fmadd_ps(qv, k1, acc1[b]);
            }
        }
        for b in 0..R {
            // SAFETY: b·tp + j0 + 16 ≤ s.len() (caller).
            unsafe {
                let p = s.as_mut_ptr().add(b * tp + j0);
                _mm256_storeu_ps(p, _mm256_mul_ps(acc0[b], sc));
                _mm256_storeu_ps(p.add(8), _mm256_mul_ps(acc1[b], sc));
            }
        }
        j0 += 16;
    }
}

fn pv_checks(
    p: &[f32],
    tp: usize,
    lens: &[usize],
    v: &[f32],
    ldv: usize,
    hd: usize,
    out: &[f32],
    ldo: usize,
    col0: usize,
    orows: &[usize],
) {
    assert!(lens.len() <= QB && orows.len() == lens.len() && p.len() >= lens.len() * tp);
    let lmax = lens.iter().copied().max().unwrap_or(0);
    assert!(lmax <= tp);
    assert!(lmax == 0 || v.len() >= (lmax - 1) * ldv + hd);
    for &o in orows {
        assert!(o * ldo + col0 + hd <= out.len());
    }
}

/// AVX2 `P·V`; see `pv_block`.
///
/// # Safety
/// AVX2 and FMA are available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pv_avx2(
    p: &[f32],
    tp: usize,
    lens: &[usize],
    v: &[f32],
    ldv: usize,
    hd: usize,
    out: &mut [f32],
    ldo: usize,
    col0: usize,
    orows: &[usize],
) {
    pv_checks(p, tp, lens, v, ldv, hd, out, ldo, col0, orows);
    // SAFETY: pv_checks asserted every bound the kernels rely on.
    unsafe {
        match lens.len() {
            0 => {}
            1 => pv_avx2_r::<1>(p, tp, lens, v, ldv, hd, out, ldo, col0, orows),
            2 => pv_avx2_r::<2>(p, tp, lens, v, ldv, hd, out, ldo, col0, orows),
            3 => pv_avx2_r::<3>(p, tp, lens, v, ldv, hd, out, ldo, col0, orows),
            _ => pv_avx2_r::<4>(p, tp, lens, v, ldv, hd, out, ldo, col0, orows),
        }
    }
}

/// # Safety
/// AVX2+FMA available; `lens.len() == R`; `pv_checks` passed.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pv_avx2_r<const R: usize>(
    p: &[f32],
    tp: usize,
    lens: &[usize],
    v: &[f32],
    ldv: usize,
    hd: usize,
    out: &mut [f32],
    ldo: usize,
    col0: usize,
    orows: &[usize],
) {
    let mut ls = [0usize; R];
    ls.copy_from_slice(&lens[..R]);
    let lmin = ls.iter().copied().min().unwrap_or(0);
    let pp = p.as_ptr();
    let vp = v.as_ptr();
    let mut c0 = 0;
    while c0 < hd {
        let w = (hd - c0).min(8);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m = _mm256_cmpgt_epi32(_mm256_set1_epi32(w as i32), lanes);
        let mut acc = [_mm256_setzero_ps(); R];
        for j in 0..lmin {
            // SAFETY: j < lmax, columns c0..c0+w < hd: inside v (checked);
            // masked lanes are not read.
            let vv = unsafe { _mm256_maskload_ps(vp.add(j * ldv + c0), m) };
            for b in 0..R {
                // SAFETY: b·tp + j < p.len() (checked).
                let pb = _mm256_set1_ps(unsafe { *pp.add(b * tp + j) });
                acc[b] = _mm256_fmadd_ps(pb, vv, acc[b]);
            }
        }
        for b in 0..R {
            for j in lmin..ls[b] {
                // SAFETY: as above.
                let vv = unsafe { _mm256_maskload_ps(vp.add(j * ldv + c0), m) };
                // SAFETY: as above.
                let pb = _mm256_set1_ps(unsafe { *pp.add(b * tp + j) });
                acc[b] = _mm256_fmadd_ps(pb, vv, acc[b]);
            }
            // SAFETY: the row slot holds hd ≥ c0 + w values (checked);
            // the mask limits the store to w lanes.
            unsafe {
                _mm256_maskstore_ps(out.as_mut_ptr().add(orows[b] * ldo + col0 + c0), m, acc[b])
            };
        }
        c0 += 8;
    }
}
