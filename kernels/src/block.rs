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
    AttentionWeights, OutputRows, Sequence, grow, mha_core, output_rows, validate_seqs,
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
    check_len("block x", total * d, x.len())?;
    let nout = output_rows(seqs, rows);
    check_len("block out", nout * d, out.len())?;
    if total == 0 {
        return Ok(());
    }
    // LN1 over every token (keys and values need all of them).
    let mut ln = std::mem::take(&mut ws.ln);
    let mut resid = std::mem::take(&mut ws.resid);
    let result = (|| {
        let lnb = grow(&mut ln, total * d);
        for i in 0..total {
            activation::layer_norm(
                isa,
                &x[i * d..(i + 1) * d],
                &layer.ln1_g,
                &layer.ln1_b,
                layer.eps,
                &mut lnb[i * d..(i + 1) * d],
            )?;
        }
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
    for i in 0..n {
        activation::layer_norm(
            isa,
            &out[i * d..(i + 1) * d],
            &layer.ln2_g,
            &layer.ln2_b,
            layer.eps,
            &mut ln2[i * d..(i + 1) * d],
        )?;
    }
    let f = layer.ffn;
    let hidden = grow(&mut ws.hidden, n * f);
    gemm_strided(
        isa,
        Operand { data: ln2, ld: d },
        n,
        &layer.w1,
        Some(&layer.b1),
        true,
        Res::None,
        hidden,
        f,
        0,
        f,
    )?;
    gemm_strided(
        isa,
        Operand {
            data: hidden,
            ld: f,
        },
        n,
        &layer.w2,
        Some(&layer.b2),
        false,
        Res::Accumulate,
        out,
        d,
        0,
        d,
    )
}
