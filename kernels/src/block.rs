//! A whole pre-LayerNorm transformer encoder layer in one call:
//!
//! ```text
//! h   = x + MHA(LN1(x))
//! out = h + W2 · GELU(W1 · LN2(h) + b1) + b2
//! ```
//!
//! GELU is the tanh approximation ([`activation::gelu`]). The residual adds
//! are fused into the output-projection and second FFN GEMMs, the GELU into
//! the first FFN GEMM. With [`OutputRows::LastOnly`] keys and values are
//! computed for every token but the query, attention row, output projection
//! and feed-forward only for each sequence's last token, and `out` has one row
//! per sequence (used by the encoder's final layer).

use crate::attention::{
    AttentionWeights, OutputRows, Sequence, grow, mha_core, output_rows, probs_len, validate_seqs,
};
use crate::error::check_len;
use crate::gemm::{Operand, PackedMatrix, Res, WeightPrecision, gemm_strided};
use crate::{Isa, KernelError, activation};

pub use crate::attention::Workspace;

/// The tensors of one layer in PyTorch layout (all row-major f32; convert f16
/// checkpoints with [`convert::f16_to_f32`](crate::convert::f16_to_f32) first).
#[derive(Debug, Clone, Copy)]
pub struct LayerTensors<'a> {
    /// Model dimension `d`.
    pub d: usize,
    /// Number of attention heads (divides `d`).
    pub heads: usize,
    /// Feed-forward hidden width.
    pub ffn: usize,
    /// LayerNorm epsilon (PyTorch default 1e-5).
    pub eps: f32,
    /// `[3d × d]`: rows of Wq, Wk, Wv (`nn.MultiheadAttention.in_proj_weight`).
    pub in_proj_weight: &'a [f32],
    /// `[3d]`.
    pub in_proj_bias: &'a [f32],
    /// `[d × d]`, `[out, in]`.
    pub out_proj_weight: &'a [f32],
    /// `[d]`.
    pub out_proj_bias: &'a [f32],
    /// LayerNorm before attention: gamma `[d]`.
    pub ln1_weight: &'a [f32],
    /// LayerNorm before attention: beta `[d]`.
    pub ln1_bias: &'a [f32],
    /// LayerNorm before the feed-forward: gamma `[d]`.
    pub ln2_weight: &'a [f32],
    /// LayerNorm before the feed-forward: beta `[d]`.
    pub ln2_bias: &'a [f32],
    /// First feed-forward linear `[ffn × d]` (`[out, in]`).
    pub ffn1_weight: &'a [f32],
    /// `[ffn]`.
    pub ffn1_bias: &'a [f32],
    /// Second feed-forward linear `[d × ffn]` (`[out, in]`).
    pub ffn2_weight: &'a [f32],
    /// `[d]`.
    pub ffn2_bias: &'a [f32],
}

/// Packed weights of one encoder layer.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    attn: AttentionWeights,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
    w1: PackedMatrix,
    b1: Vec<f32>,
    w2: PackedMatrix,
    b2: Vec<f32>,
    ffn: usize,
    eps: f32,
}

impl LayerWeights {
    /// Validates every shape and packs the matrices in `precision`.
    pub fn new(
        t: &LayerTensors<'_>,
        precision: WeightPrecision,
    ) -> Result<LayerWeights, KernelError> {
        let d = t.d;
        let attn = AttentionWeights::from_pytorch(
            d,
            t.heads,
            t.in_proj_weight,
            t.in_proj_bias,
            t.out_proj_weight,
            t.out_proj_bias,
            precision,
        )?;
        if t.ffn == 0 {
            return Err(KernelError::Invalid {
                what: "ffn width",
                detail: "must be positive".into(),
            });
        }
        if !(t.eps.is_finite() && t.eps >= 0.0) {
            return Err(KernelError::Invalid {
                what: "layer norm eps",
                detail: format!("{} is not a finite non-negative number", t.eps),
            });
        }
        for (what, v) in [
            ("ln1 weight", t.ln1_weight),
            ("ln1 bias", t.ln1_bias),
            ("ln2 weight", t.ln2_weight),
            ("ln2 bias", t.ln2_bias),
            ("ffn2 bias", t.ffn2_bias),
        ] {
            check_len(what, d, v.len())?;
        }
        check_len("ffn1 bias", t.ffn, t.ffn1_bias.len())?;
        Ok(LayerWeights {
            attn,
            ln1_g: t.ln1_weight.to_vec(),
            ln1_b: t.ln1_bias.to_vec(),
            ln2_g: t.ln2_weight.to_vec(),
            ln2_b: t.ln2_bias.to_vec(),
            w1: PackedMatrix::from_out_in(t.ffn, d, t.ffn1_weight, precision)?,
            b1: t.ffn1_bias.to_vec(),
            w2: PackedMatrix::from_out_in(d, t.ffn, t.ffn2_weight, precision)?,
            b2: t.ffn2_bias.to_vec(),
            ffn: t.ffn,
            eps: t.eps,
        })
    }

    /// The attention part.
    pub fn attention(&self) -> &AttentionWeights {
        &self.attn
    }

    /// Model dimension.
    pub fn d(&self) -> usize {
        self.attn.d()
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.attn.heads()
    }

    /// Feed-forward hidden width.
    pub fn ffn(&self) -> usize {
        self.ffn
    }

    /// LayerNorm epsilon.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Bytes of packed weights and parameters.
    pub fn packed_bytes(&self) -> usize {
        self.attn.packed_bytes()
            + self.w1.packed_bytes()
            + self.w2.packed_bytes()
            + 4 * (4 * self.d() + self.b1.len() + self.b2.len())
    }
}

/// Floating-point operations [`block_forward`] needs (multiply-add = 2):
/// [`mha_flops`](crate::attention::mha_flops) plus the feed-forward,
/// `4·R·d·ffn` for `R` output rows. LayerNorm, GELU, softmax and bias work
/// is not counted.
pub fn block_flops(d: usize, ffn: usize, seqs: &[Sequence], rows: OutputRows) -> u64 {
    let r = output_rows(seqs, rows) as u64;
    crate::attention::mha_flops(d, seqs, rows) + 4 * r * d as u64 * ffn as u64
}

/// One encoder layer over a ragged batch (see the module docs).
///
/// `x` is `Σ len × d`; `out` is [`output_rows`]`(seqs, rows) × d`. `probs`
/// (optional, [`probs_len`](crate::attention::probs_len) elements) receives
/// the attention probabilities.
pub fn block_forward(
    isa: Isa,
    layer: &LayerWeights,
    x: &[f32],
    seqs: &[Sequence],
    rows: OutputRows,
    out: &mut [f32],
    ws: &mut Workspace,
    probs: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let isa = isa.checked()?;
    let d = layer.d();
    let total = validate_seqs(seqs)?;
    check_len("block x", total.saturating_mul(d), x.len())?;
    let nout = output_rows(seqs, rows);
    check_len("block out", nout.saturating_mul(d), out.len())?;
    let heads = layer.heads();
    let mut probs = probs;
    if let Some(p) = &probs {
        check_len("attention probs", probs_len(seqs, heads, rows), p.len())?;
    }
    if total == 0 {
        return Ok(());
    }
    // Groups of whole sequences of at most `BLOCK_TOKENS` tokens (at least
    // one sequence each) go through the whole layer one after the other, so
    // that a group's intermediates (LN, QKV, attention rows, hidden
    // activations) stay in L2 instead of streaming through L3.
    let (mut s0, mut x0, mut o0, mut p0) = (0usize, 0usize, 0usize, 0usize);
    while s0 < seqs.len() {
        let mut s1 = s0;
        let mut tokens = 0usize;
        while s1 < seqs.len() && (s1 == s0 || tokens + seqs[s1].len <= BLOCK_TOKENS) {
            tokens += seqs[s1].len;
            s1 += 1;
        }
        let group = &seqs[s0..s1];
        let gout = output_rows(group, rows);
        let gp = probs_len(group, heads, rows);
        let gprobs = probs.as_deref_mut().map(|p| &mut p[p0..p0 + gp]);
        block_group(
            isa,
            layer,
            &x[x0 * d..(x0 + tokens) * d],
            group,
            tokens,
            rows,
            &mut out[o0 * d..(o0 + gout) * d],
            ws,
            gprobs,
        )?;
        s0 = s1;
        x0 += tokens;
        o0 += gout;
        p0 += gp;
    }
    Ok(())
}

/// Tokens per group of sequences in [`block_forward`]: at d = 64, FFN 256 a
/// group's intermediates (≈ 1.5 KiB per token) stay in the 1 MiB L2 (on the
/// 2-core Zen 5 development VM, B = 64 × T = 56 in one call: 2.20–2.35 ms
/// ungrouped, 2.17–2.20 ms with groups of 128–1024 tokens, i.e. a small
/// gain at the edge of the noise).
const BLOCK_TOKENS: usize = 512;

/// [`block_forward`] of one group of sequences (`total` tokens; lengths
/// checked by the caller).
#[allow(clippy::too_many_arguments)]
fn block_group(
    isa: Isa,
    layer: &LayerWeights,
    x: &[f32],
    seqs: &[Sequence],
    total: usize,
    rows: OutputRows,
    out: &mut [f32],
    ws: &mut Workspace,
    probs: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let d = layer.d();
    let nout = output_rows(seqs, rows);
    // LN1 over every token (keys and values need all of them).
    let mut ln = std::mem::take(&mut ws.ln);
    let mut resid = std::mem::take(&mut ws.resid);
    let result = (|| {
        let lnb = grow(&mut ln, total * d);
        layer_norm_rows(isa, x, d, &layer.ln1_g, &layer.ln1_b, layer.eps, lnb)?;
        // h = x + MHA(LN1(x)) into `out`.
        let res: &[f32] = match rows {
            OutputRows::All => x,
            OutputRows::LastOnly => {
                let r = grow(&mut resid, nout * d);
                let mut r0 = 0;
                for (s, seq) in seqs.iter().enumerate() {
                    let last = r0 + seq.len - 1;
                    r[s * d..(s + 1) * d].copy_from_slice(&x[last * d..(last + 1) * d]);
                    r0 += seq.len;
                }
                r
            }
        };
        mha_core(
            isa,
            &layer.attn,
            lnb,
            seqs,
            total,
            rows,
            Some(res),
            out,
            ws,
            probs,
        )?;
        ffn_residual(isa, layer, nout, out, ws)
    })();
    ws.ln = ln;
    ws.resid = resid;
    result
}

/// `out += W2 · GELU(W1 · LN2(out) + b1) + b2` over `n` rows.
fn ffn_residual(
    isa: Isa,
    layer: &LayerWeights,
    n: usize,
    out: &mut [f32],
    ws: &mut Workspace,
) -> Result<(), KernelError> {
    let d = layer.d();
    let ln2 = grow(&mut ws.ln2, n * d);
    layer_norm_rows(
        isa,
        &out[..n * d],
        d,
        &layer.ln2_g,
        &layer.ln2_b,
        layer.eps,
        ln2,
    )?;
    let f = layer.ffn;
    // Row chunks small enough that the hidden activations (chunk × ffn)
    // stay in L1/L2 between the two GEMMs.
    let chunk = (32 * 1024 / (4 * f)).clamp(8, 256);
    let hidden = grow(&mut ws.hidden, chunk.min(n) * f);
    let mut r0 = 0;
    while r0 < n {
        let rows = chunk.min(n - r0);
        let h = &mut hidden[..rows * f];
        gemm_strided(
            isa,
            Operand {
                data: &ln2[r0 * d..(r0 + rows) * d],
                ld: d,
            },
            rows,
            &layer.w1,
            Some(&layer.b1),
            true,
            Res::None,
            h,
            f,
            0,
            f,
        )?;
        gemm_strided(
            isa,
            Operand { data: h, ld: f },
            rows,
            &layer.w2,
            Some(&layer.b2),
            false,
            Res::Accumulate,
            &mut out[r0 * d..(r0 + rows) * d],
            d,
            0,
            d,
        )?;
        r0 += rows;
    }
    Ok(())
}

/// LayerNorm of every `d`-wide row of `x` into `out` (same shape). The
/// AVX-512 and AVX2 paths normalise four rows at a time so that their
/// reduction chains overlap; the other paths call [`activation::layer_norm`]
/// per row.
fn layer_norm_rows(
    isa: Isa,
    x: &[f32],
    d: usize,
    g: &[f32],
    b: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("layer norm out", x.len(), out.len())?;
    check_len("layer norm gamma", d, g.len())?;
    check_len("layer norm beta", d, b.len())?;
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(KernelError::Invalid {
            what: "layer norm rows",
            detail: format!("{} values are not rows of {d}", x.len()),
        });
    }
    let isa = isa.f32_path();
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the caller checked the ISA (AVX-512 F/BW/VL + FMA).
        unsafe { x86::ln_rows_avx512(x, d, g, b, eps, out) };
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: the caller checked the ISA (AVX2 + FMA).
        unsafe { x86::ln_rows_avx2(x, d, g, b, eps, out) };
        return Ok(());
    }
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        activation::layer_norm(isa, xr, g, b, eps, or)?;
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::simd::avx2::{hsum, tail_mask as mask8};
    use crate::simd::avx512::mask16 as lanes;

    /// Rows of `d` values, four at a time (see `layer_norm_rows`).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and FMA are available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn ln_rows_avx512(
        x: &[f32],
        d: usize,
        g: &[f32],
        b: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        assert!(d > 0 && x.len().is_multiple_of(d) && out.len() == x.len());
        assert!(g.len() == d && b.len() == d);
        let n = x.len() / d;
        let mut i = 0;
        while i + 4 <= n {
            rows::<4>(x, i, d, g, b, eps, out);
            i += 4;
        }
        while i < n {
            rows::<1>(x, i, d, g, b, eps, out);
            i += 1;
        }
    }

    /// Normalises rows `i..i + R` (`i + R ≤ rows`, checked by the caller).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn rows<const R: usize>(
        x: &[f32],
        i: usize,
        d: usize,
        g: &[f32],
        b: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        assert!((i + R) * d <= x.len() && x.len() == out.len() && g.len() == d && b.len() == d);
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let inv_d = 1.0 / d as f32;
        let mut sum = [_mm512_setzero_ps(); R];
        let mut c = 0;
        while c < d {
            let m = lanes(d - c);
            for r in 0..R {
                // SAFETY: row i + r < rows, columns c.. < d under the mask.
                let v = unsafe { _mm512_maskz_loadu_ps(m, xp.add((i + r) * d + c)) };
                sum[r] = _mm512_add_ps(sum[r], v);
            }
            c += 16;
        }
        let mut mean = [_mm512_setzero_ps(); R];
        for r in 0..R {
            mean[r] = _mm512_set1_ps(_mm512_reduce_add_ps(sum[r]) * inv_d);
        }
        let mut sq = [_mm512_setzero_ps(); R];
        let mut c = 0;
        while c < d {
            let m = lanes(d - c);
            for r in 0..R {
                // SAFETY: as above.
                let v = unsafe { _mm512_maskz_loadu_ps(m, xp.add((i + r) * d + c)) };
                let t = _mm512_maskz_sub_ps(m, v, mean[r]);
                sq[r] = _mm512_fmadd_ps(t, t, sq[r]);
            }
            c += 16;
        }
        let mut inv = [_mm512_setzero_ps(); R];
        for r in 0..R {
            let var = _mm512_reduce_add_ps(sq[r]) * inv_d;
            inv[r] = _mm512_set1_ps(1.0 / (var + eps).sqrt());
        }
        let mut c = 0;
        while c < d {
            let m = lanes(d - c);
            // SAFETY: columns c.. < d under the mask, inside gamma and beta.
            let (gv, bv) = unsafe {
                (
                    _mm512_maskz_loadu_ps(m, g.as_ptr().add(c)),
                    _mm512_maskz_loadu_ps(m, b.as_ptr().add(c)),
                )
            };
            for r in 0..R {
                // SAFETY: as above, for x and out.
                unsafe {
                    let v = _mm512_maskz_loadu_ps(m, xp.add((i + r) * d + c));
                    let y =
                        _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(v, mean[r]), inv[r]), gv, bv);
                    _mm512_mask_storeu_ps(op.add((i + r) * d + c), m, y);
                }
            }
            c += 16;
        }
    }

    /// The AVX2 version of `ln_rows_avx512` (8 lanes, masked tails).
    ///
    /// # Safety
    /// AVX2 and FMA are available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn ln_rows_avx2(
        x: &[f32],
        d: usize,
        g: &[f32],
        b: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        assert!(d > 0 && x.len().is_multiple_of(d) && out.len() == x.len());
        assert!(g.len() == d && b.len() == d);
        let n = x.len() / d;
        let mut i = 0;
        while i + 4 <= n {
            rows8::<4>(x, i, d, g, b, eps, out);
            i += 4;
        }
        while i < n {
            rows8::<1>(x, i, d, g, b, eps, out);
            i += 1;
        }
    }

    /// Normalises rows `i..i + R` (`i + R ≤ rows`, checked by the caller).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn rows8<const R: usize>(
        x: &[f32],
        i: usize,
        d: usize,
        g: &[f32],
        b: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        assert!((i + R) * d <= x.len() && x.len() == out.len() && g.len() == d && b.len() == d);
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let inv_d = 1.0 / d as f32;
        let mut sum = [_mm256_setzero_ps(); R];
        let mut c = 0;
        while c < d {
            let m = mask8(d - c);
            for r in 0..R {
                // SAFETY: row i + r < rows, columns c.. < d under the mask.
                let v = unsafe { _mm256_maskload_ps(xp.add((i + r) * d + c), m) };
                sum[r] = _mm256_add_ps(sum[r], v);
            }
            c += 8;
        }
        let mut mean = [_mm256_setzero_ps(); R];
        for r in 0..R {
            mean[r] = _mm256_set1_ps(hsum(sum[r]) * inv_d);
        }
        let mut sq = [_mm256_setzero_ps(); R];
        let mut c = 0;
        while c < d {
            let m = mask8(d - c);
            for r in 0..R {
                // SAFETY: as above.
                let v = unsafe { _mm256_maskload_ps(xp.add((i + r) * d + c), m) };
                let t = _mm256_and_ps(_mm256_sub_ps(v, mean[r]), _mm256_castsi256_ps(m));
                sq[r] = _mm256_fmadd_ps(t, t, sq[r]);
            }
            c += 8;
        }
        let mut inv = [_mm256_setzero_ps(); R];
        for r in 0..R {
            let var = hsum(sq[r]) * inv_d;
            inv[r] = _mm256_set1_ps(1.0 / (var + eps).sqrt());
        }
        let mut c = 0;
        while c < d {
            let m = mask8(d - c);
            // SAFETY: columns c.. < d under the mask, inside gamma and beta.
            let (gv, bv) = unsafe {
                (
                    _mm256_maskload_ps(g.as_ptr().add(c), m),
                    _mm256_maskload_ps(b.as_ptr().add(c), m),
                )
            };
            for r in 0..R {
                // SAFETY: as above, for x and out.
                unsafe {
                    let v = _mm256_maskload_ps(xp.add((i + r) * d + c), m);
                    let y =
                        _mm256_fmadd_ps(_mm256_mul_ps(_mm256_sub_ps(v, mean[r]), inv[r]), gv, bv);
                    _mm256_maskstore_ps(op.add((i + r) * d + c), m, y);
                }
            }
            c += 8;
        }
    }
}
