//! The scalar reference path of the attention kernels: plain loops, the
//! results every other path is tested against.

/// `kt[c·tp + j] = k[j·ldk + c]` for `c < hd`, `j < t`; zero for `t ≤ j < tp`.
pub(super) fn transpose_k(k: &[f32], ldk: usize, t: usize, hd: usize, kt: &mut [f32], tp: usize) {
    for c in 0..hd {
        let row = &mut kt[c * tp..(c + 1) * tp];
        for j in 0..t {
            row[j] = k[j * ldk + c];
        }
        row[t..].fill(0.0);
    }
}

/// `s[b·tp + j] = scale · q_b · Kᵀ[:, j]` for `j < jn` (`kt` is `hd × tp`).
pub(super) fn scores(qs: &[&[f32]], kt: &[f32], tp: usize, jn: usize, scale: f32, s: &mut [f32]) {
    let hd = kt.len() / tp;
    for (b, q) in qs.iter().enumerate() {
        let row = &mut s[b * tp..b * tp + jn];
        row.fill(0.0);
        for c in 0..hd {
            let qc = q[c];
            let k = &kt[c * tp..c * tp + jn];
            for j in 0..jn {
                row[j] += qc * k[j];
            }
        }
        for v in row.iter_mut() {
            *v *= scale;
        }
    }
}

/// `out[orow_b·ldo + col0 ..][..hd] = Σ_{j < lens[b]} p[b·tp + j] · v[j·ldv ..][..hd]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn pv(
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
    for (b, &l) in lens.iter().enumerate() {
        let o = &mut out[orows[b] * ldo + col0..][..hd];
        o.fill(0.0);
        let pr = &p[b * tp..b * tp + l];
        for (j, &pj) in pr.iter().enumerate() {
            let vr = &v[j * ldv..j * ldv + hd];
            for c in 0..hd {
                o[c] += pj * vr[c];
            }
        }
    }
}
