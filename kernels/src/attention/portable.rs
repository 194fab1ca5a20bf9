//! The portable attention kernels (`wide::f32x8`, no `target_feature`):
//! scores and `P·V` for `R` query rows at a time, with
//! [`crate::activation::softmax_row`] between them.

use wide::f32x8;

#[inline(always)]
fn ld8(s: &[f32]) -> f32x8 {
    let mut a = [0.0f32; 8];
    a.copy_from_slice(&s[..8]);
    f32x8::new(a)
}

#[inline(always)]
fn ld_part(s: &[f32], w: usize) -> f32x8 {
    if w >= 8 {
        return ld8(s);
    }
    let mut a = [0.0f32; 8];
    for (d, v) in a.iter_mut().zip(&s[..w]) {
        *d = *v;
    }
    f32x8::new(a)
}

/// See `scores_block`; `qs.len() == R`.
pub(super) fn scores<const R: usize>(
    qs: &[&[f32]],
    kt: &[f32],
    tp: usize,
    jn: usize,
    scale: f32,
    s: &mut [f32],
) {
    let hd = kt.len() / tp;
    let sc = f32x8::splat(scale);
    let mut j0 = 0;
    while j0 < jn {
        let mut a0 = [f32x8::ZERO; R];
        let mut a1 = [f32x8::ZERO; R];
        for c in 0..hd {
            let k = &kt[c * tp + j0..c * tp + j0 + 16];
            let (k0, k1) = (ld8(k), ld8(&k[8..]));
            for b in 0..R {
                let q = f32x8::splat(qs[b][c]);
                a0[b] += q * k0;
                a1[b] += q * k1;
            }
        }
        for b in 0..R {
            let o = &mut s[b * tp + j0..b * tp + j0 + 16];
            o[..8].copy_from_slice(&(a0[b] * sc).to_array());
            o[8..].copy_from_slice(&(a1[b] * sc).to_array());
        }
        j0 += 16;
    }
}

/// See `pv_block`; `lens.len() == orows.len() == R`.
#[allow(clippy::too_many_arguments)]
pub(super) fn pv<const R: usize>(
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
    let lmin = lens.iter().copied().min().unwrap_or(0);
    let mut c0 = 0;
    while c0 < hd {
        let w = (hd - c0).min(8);
        let mut acc = [f32x8::ZERO; R];
        for j in 0..lmin {
            let vv = ld_part(&v[j * ldv + c0..], w);
            for b in 0..R {
                acc[b] += f32x8::splat(p[b * tp + j]) * vv;
            }
        }
        for b in 0..R {
            for j in lmin..lens[b] {
                acc[b] += f32x8::splat(p[b * tp + j]) * ld_part(&v[j * ldv + c0..], w);
            }
            let o = &mut out[orows[b] * ldo + col0 + c0..][..w];
            for (d, v) in o.iter_mut().zip(acc[b].to_array()) {
                *d = v;
            }
        }
        c0 += 8;
    }
}
