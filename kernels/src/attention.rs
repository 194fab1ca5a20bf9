//! Fused multi-head self-attention over a ragged batch.
//!
//! # Ragged batch
//!
//! A call covers many sequences of different lengths: their tokens are
//! concatenated row-wise into one `rows × d` matrix (`rows = Σ len`), and
//! [`Sequence`] gives each one's length and [`Mask`]. Every sequence must have
//! at least one token (a zero-length sequence is an error: it has no output
//! row, which would silently misalign [`OutputRows::LastOnly`] results).
//!
//! # Masks
//!
//! Every supported mask lets query `i` see a *prefix* of the keys,
//! `0..visible(i)`:
//!
//! | mask | `visible(i)` |
//! |------|--------------|
//! | [`Mask::None`] | `len` |
//! | [`Mask::KeyPadding { valid }`](Mask::KeyPadding) | `valid` (`1 ≤ valid ≤ len`) |
//! | [`Mask::PrefixCausal { prefix }`](Mask::PrefixCausal) | `prefix` for `i < prefix` (the prefix is bidirectional and sees no behaviour token), `i + 1` otherwise (all of the prefix plus earlier behaviour tokens and itself) |
//!
//! Hidden keys are never read by the softmax or the `·V` product, so a hidden
//! token cannot influence (not even through NaN) the outputs that must not
//! see it.
//!
//! # Computation
//!
//! 1. One GEMM over the whole batch: `X · [Wq | Wk | Wv] + b` (`M = rows`,
//!    `N = 3d`, each block padded to a multiple of 16 columns), written into a
//!    `rows × 3·pd` buffer where head `h` of Q, K or V is the column range
//!    `h·hd..(h+1)·hd` of its block. With [`OutputRows::LastOnly`] only the K/V
//!    blocks are computed for every token and Q only for each last token.
//! 2. Per sequence and head: Kᵀ is transposed into a zero-padded scratch,
//!    scores `q·Kᵀ / √hd` for blocks of query rows, row softmax over the
//!    visible keys ([`activation::softmax_row`]), then `P·V` into the
//!    per-head columns of the attention output.
//! 3. Output projection GEMM (`+ bias`, optionally fused with the residual).
//!
//! Attention probabilities are written only when a buffer is passed (layout in
//! [`probs_len`]); otherwise no extra work is done.
//!
//! On the AVX-512 path, for [`OutputRows::All`] and head widths that are a
//! multiple of 16, blocks of 16 query rows are processed with the queries in
//! the 16 lanes (`Qᵀ` by in-register transposes): scores are vectors over
//! queries, one per key, so the softmax's max and sum over keys are vertical
//! operations between registers (no horizontal reductions), `P·V`
//! broadcasts single `V` elements against probability vectors with masked
//! multiply-adds, and a final 16×16 transpose writes the rows; no `Kᵀ` is
//! built. The AVX2 path does the same with 8 query rows in 8 lanes (head
//! widths a multiple of 8; keys hidden from some lane are blended out, AVX2
//! having no masked multiply-add). Otherwise (`LastOnly`, other head widths)
//! the AVX-512 and AVX2 paths fuse scores, softmax (in
//! registers for rows of at most 16 visible keys) and `P·V` per block of 8
//! (AVX2: 4) query rows with register-resident accumulators; the portable path uses `wide`
//! kernels and [`activation::softmax_row`]; the scalar path is the plain
//! reference. Kernels assert the slice bounds they rely on at entry (cheap
//! scalar checks); tails use masked loads and stores, which neither read nor
//! fault on masked-off elements.

use crate::error::check_len;
use crate::gemm::{Operand, PANEL, PackedMatrix, Res, WeightPrecision, gemm_strided};
use crate::{Isa, KernelError, activation};

/// Attention mask of one sequence (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mask {
    /// Every token sees every token.
    #[default]
    None,
    /// Keys at positions `≥ valid` are hidden from every query.
    KeyPadding {
        /// Number of leading valid keys, `1 ≤ valid ≤ len`.
        valid: usize,
    },
    /// The first `prefix` tokens see each other (bidirectionally) and nothing
    /// else; a token at `t ≥ prefix` sees the prefix and tokens `prefix..=t`.
    PrefixCausal {
        /// Number of leading prefix (field) tokens, `0 ≤ prefix ≤ len`.
        prefix: usize,
    },
}

/// One sequence of a ragged batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sequence {
    /// Number of tokens (≥ 1).
    pub len: usize,
    /// Its attention mask.
    pub mask: Mask,
}

impl Sequence {
    /// A sequence of `len` tokens with `mask`.
    pub fn new(len: usize, mask: Mask) -> Sequence {
        Sequence { len, mask }
    }

    /// Number of keys visible to query position `i`.
    pub fn visible(&self, i: usize) -> usize {
        match self.mask {
            Mask::None => self.len,
            Mask::KeyPadding { valid } => valid,
            Mask::PrefixCausal { prefix } => {
                if i < prefix {
                    prefix
                } else {
                    i + 1
                }
            }
        }
    }
}

/// Which rows of the output are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputRows {
    /// Every token: the output has `Σ len` rows.
    #[default]
    All,
    /// Only the last token of each sequence: the output has one row per
    /// sequence. Keys and values are still computed for every token.
    LastOnly,
}

/// Number of output rows for `seqs` under `rows`.
pub fn output_rows(seqs: &[Sequence], rows: OutputRows) -> usize {
    match rows {
        OutputRows::All => seqs.iter().fold(0usize, |a, s| a.saturating_add(s.len)),
        OutputRows::LastOnly => seqs.len(),
    }
}

/// Length of the attention-probability buffer for `seqs`.
///
/// Layout: sequences in order; within a sequence of length `T` with `R`
/// query rows (`T` for [`OutputRows::All`], 1 for `LastOnly`), heads in
/// order; within a head, `R` rows of `T` probabilities (hidden keys hold 0).
/// So sequence `s` starts at `Σ_{s' < s} heads·R(s')·T(s')` and its entry
/// `(head h, row r, key j)` is at `+ (h·R + r)·T + j`.
pub fn probs_len(seqs: &[Sequence], heads: usize, rows: OutputRows) -> usize {
    seqs.iter()
        .map(|s| {
            heads
                .saturating_mul(query_rows(s, rows))
                .saturating_mul(s.len)
        })
        .fold(0usize, usize::saturating_add)
}

/// Floating-point operations [`mha_forward`] needs for `seqs` at model width
/// `d` (a multiply-add counts 2), for FLOP-floor efficiency figures:
///
/// * QKV projection: `2·N·d·3d` for `All`; `2·N·d·2d + 2·S·d·d` for
///   `LastOnly` (K and V for all `N` tokens, Q for the `S` last tokens);
/// * attention: `4·d·visible(i)` per computed query row `i` (`q·Kᵀ` and
///   `P·V` over the visible keys, all heads);
/// * output projection: `2·R·d·d` for `R` output rows.
///
/// Softmax, bias and mask work is not counted.
pub fn mha_flops(d: usize, seqs: &[Sequence], rows: OutputRows) -> u64 {
    let d = d as u64;
    let n: u64 = seqs.iter().map(|s| s.len as u64).sum();
    let r = output_rows(seqs, rows) as u64;
    let qkv = match rows {
        OutputRows::All => 2 * n * d * 3 * d,
        OutputRows::LastOnly => 2 * n * d * 2 * d + 2 * r * d * d,
    };
    let mut att = 0u64;
    for s in seqs {
        match rows {
            OutputRows::All => {
                for i in 0..s.len {
                    att += 4 * d * s.visible(i) as u64;
                }
            }
            OutputRows::LastOnly => att += 4 * d * s.visible(s.len.saturating_sub(1)) as u64,
        }
    }
    qkv + att + 2 * r * d * d
}

fn query_rows(s: &Sequence, rows: OutputRows) -> usize {
    match rows {
        OutputRows::All => s.len,
        OutputRows::LastOnly => 1,
    }
}

/// Checks the batch description; returns the total number of tokens.
pub(crate) fn validate_seqs(seqs: &[Sequence]) -> Result<usize, KernelError> {
    let mut total = 0usize;
    for (i, s) in seqs.iter().enumerate() {
        if s.len == 0 {
            return Err(KernelError::Invalid {
                what: "sequence length",
                detail: format!("sequence {i} has no tokens"),
            });
        }
        match s.mask {
            Mask::None => {}
            Mask::KeyPadding { valid } => {
                if valid == 0 || valid > s.len {
                    return Err(KernelError::Invalid {
                        what: "key padding mask",
                        detail: format!("sequence {i}: valid = {valid} not in 1..={}", s.len),
                    });
                }
            }
            Mask::PrefixCausal { prefix } => {
                if prefix > s.len {
                    return Err(KernelError::Invalid {
                        what: "prefix-causal mask",
                        detail: format!("sequence {i}: prefix = {prefix} > len = {}", s.len),
                    });
                }
            }
        }
        total = total
            .checked_add(s.len)
            .ok_or_else(|| KernelError::Invalid {
                what: "sequence length",
                detail: "total token count overflows".into(),
            })?;
    }
    Ok(total)
}

/// Packed weights of one multi-head self-attention.
#[derive(Debug, Clone)]
pub struct AttentionWeights {
    d: usize,
    heads: usize,
    hd: usize,
    /// Padded width of each of the Q, K, V blocks (multiple of 16).
    pd: usize,
    wqkv: PackedMatrix,
    bqkv: Vec<f32>,
    wo: PackedMatrix,
    bo: Vec<f32>,
}

impl AttentionWeights {
    /// Builds from PyTorch `nn.MultiheadAttention` tensors: `in_proj_weight`
    /// `[3d × d]` (rows: q, k, v), `in_proj_bias` `[3d]`, `out_proj.weight`
    /// `[d × d]` (`[out, in]`), `out_proj.bias` `[d]`.
    pub fn from_pytorch(
        d: usize,
        heads: usize,
        in_proj_weight: &[f32],
        in_proj_bias: &[f32],
        out_weight: &[f32],
        out_bias: &[f32],
        precision: WeightPrecision,
    ) -> Result<AttentionWeights, KernelError> {
        check_len("in_proj_weight", 3 * d * d, in_proj_weight.len())?;
        check_len("in_proj_bias", 3 * d, in_proj_bias.len())?;
        let dd = d * d;
        Self::from_separate(
            d,
            heads,
            [
                &in_proj_weight[..dd],
                &in_proj_weight[dd..2 * dd],
                &in_proj_weight[2 * dd..],
            ],
            [
                &in_proj_bias[..d],
                &in_proj_bias[d..2 * d],
                &in_proj_bias[2 * d..],
            ],
            out_weight,
            out_bias,
            precision,
        )
    }

    /// Builds from separate `Linear` layers: `w_qkv = [Wq, Wk, Wv]`, each
    /// `[d × d]` in PyTorch `[out, in]` layout, `b_qkv` their biases, and
    /// the output projection `out_weight` `[d × d]`, `out_bias` `[d]`.
    pub fn from_separate(
        d: usize,
        heads: usize,
        w_qkv: [&[f32]; 3],
        b_qkv: [&[f32]; 3],
        out_weight: &[f32],
        out_bias: &[f32],
        precision: WeightPrecision,
    ) -> Result<AttentionWeights, KernelError> {
        if d == 0 || heads == 0 || !d.is_multiple_of(heads) {
            return Err(KernelError::Invalid {
                what: "attention heads",
                detail: format!("d = {d} must be a positive multiple of heads = {heads}"),
            });
        }
        for (w, b) in w_qkv.iter().zip(&b_qkv) {
            check_len("q/k/v weight", d * d, w.len())?;
            check_len("q/k/v bias", d, b.len())?;
        }
        check_len("out_proj weight", d * d, out_weight.len())?;
        check_len("out_proj bias", d, out_bias.len())?;
        let (wqkv, widths) = PackedMatrix::from_out_in_blocks(
            d,
            &[(d, w_qkv[0]), (d, w_qkv[1]), (d, w_qkv[2])],
            precision,
        )?;
        let pd = widths[0];
        let mut bqkv = vec![0.0; 3 * pd];
        for (i, b) in b_qkv.iter().enumerate() {
            bqkv[i * pd..i * pd + d].copy_from_slice(b);
        }
        Ok(AttentionWeights {
            d,
            heads,
            hd: d / heads,
            pd,
            wqkv,
            bqkv,
            wo: PackedMatrix::from_out_in(d, d, out_weight, precision)?,
            bo: out_bias.to_vec(),
        })
    }

    /// Model dimension `d`.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Head dimension `d / heads`.
    pub fn head_dim(&self) -> usize {
        self.hd
    }

    /// Bytes of packed weights.
    pub fn packed_bytes(&self) -> usize {
        self.wqkv.packed_bytes() + self.wo.packed_bytes() + 4 * (self.bqkv.len() + self.bo.len())
    }
}

/// Reusable scratch buffers for [`mha_forward`] and
/// [`block_forward`](crate::block::block_forward). They grow to the largest
/// batch seen and are then reused without allocating.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    pub(crate) qkv: Vec<f32>,
    pub(crate) qlast: Vec<f32>,
    pub(crate) xlast: Vec<f32>,
    pub(crate) attn: Vec<f32>,
    pub(crate) kt: Vec<f32>,
    pub(crate) scores: Vec<f32>,
    pub(crate) ln: Vec<f32>,
    pub(crate) ln2: Vec<f32>,
    pub(crate) hidden: Vec<f32>,
    pub(crate) resid: Vec<f32>,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Workspace {
        Workspace::default()
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        4 * [
            &self.qkv,
            &self.qlast,
            &self.xlast,
            &self.attn,
            &self.kt,
            &self.scores,
            &self.ln,
            &self.ln2,
            &self.hidden,
            &self.resid,
        ]
        .iter()
        .map(|v| v.capacity())
        .sum::<usize>()
    }
}

/// Grows `v` to at least `n` elements and returns the first `n`.
pub(crate) fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Query rows processed together by the score / `P·V` kernels (the AVX-512
/// path; the others use half).
const QB: usize = 8;

/// `out = MHA(x)`: QKV projection, masked softmax attention and output
/// projection (with its bias) for a ragged batch.
///
/// `x` is `rows × d` (`rows = Σ len`); `out` is `output_rows(seqs, rows) × d`.
/// `probs`, when given, must have [`probs_len`] elements and receives the
/// attention probabilities.
pub fn mha_forward(
    isa: Isa,
    w: &AttentionWeights,
    x: &[f32],
    seqs: &[Sequence],
    rows: OutputRows,
    out: &mut [f32],
    ws: &mut Workspace,
    probs: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let total = validate_seqs(seqs)?;
    check_len("mha x", total.saturating_mul(w.d), x.len())?;
    check_len(
        "mha out",
        output_rows(seqs, rows).saturating_mul(w.d),
        out.len(),
    )?;
    mha_core(isa, w, x, seqs, total, rows, None, out, ws, probs)
}

/// The body of [`mha_forward`], with an optional residual (`out = r +
/// MHA(x)`, `r` shaped like `out`). Lengths of `x` and `out` must already be
/// checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mha_core(
    isa: Isa,
    w: &AttentionWeights,
    x: &[f32],
    seqs: &[Sequence],
    total: usize,
    rows: OutputRows,
    residual: Option<&[f32]>,
    out: &mut [f32],
    ws: &mut Workspace,
    probs: Option<&mut [f32]>,
) -> Result<(), KernelError> {
    let isa = isa.checked()?;
    let (d, pd, hd, heads) = (w.d, w.pd, w.hd, w.heads);
    let ldq = 3 * pd;
    let nout = output_rows(seqs, rows);
    if let Some(p) = &probs {
        check_len("attention probs", probs_len(seqs, heads, rows), p.len())?;
    }
    if total == 0 {
        return Ok(());
    }
    let Workspace {
        qkv,
        qlast,
        xlast,
        attn,
        kt,
        scores,
        ..
    } = ws;
    let qkv = grow(qkv, total * ldq);
    let x_op = Operand { data: x, ld: d };
    match rows {
        OutputRows::All => {
            gemm_strided(
                isa,
                x_op,
                total,
                &w.wqkv,
                Some(&w.bqkv),
                false,
                Res::None,
                qkv,
                ldq,
                0,
                ldq,
            )?;
        }
        OutputRows::LastOnly => {
            // K and V for every token, Q only for the last token of each sequence.
            gemm_strided(
                isa,
                x_op,
                total,
                &w.wqkv,
                Some(&w.bqkv[pd..]),
                false,
                Res::None,
                &mut qkv[pd..],
                ldq,
                pd,
                2 * pd,
            )?;
            let xl = grow(xlast, nout * d);
            let mut r0 = 0;
            for (s, seq) in seqs.iter().enumerate() {
                let last = r0 + seq.len - 1;
                xl[s * d..(s + 1) * d].copy_from_slice(&x[last * d..(last + 1) * d]);
                r0 += seq.len;
            }
            let ql = grow(qlast, nout * pd);
            gemm_strided(
                isa,
                Operand { data: xl, ld: d },
                nout,
                &w.wqkv,
                Some(&w.bqkv[..pd]),
                false,
                Res::None,
                ql,
                pd,
                0,
                pd,
            )?;
        }
    }
    let tmax = seqs.iter().map(|s| s.len).max().unwrap_or(0);
    let tp_max = tmax.div_ceil(PANEL) * PANEL;
    let kt = grow(kt, hd * tp_max);
    let sc = grow(scores, 2 * QB * tp_max);
    // AVX-512 with whole 16-column heads: blocks of 16 query rows in the
    // lanes (`attend_t16`); otherwise blocks of `qb` rows with Kᵀ.
    // (AVX2: 8 rows in the lanes, `attend_t8`, head widths a multiple of 8.)
    #[cfg(target_arch = "x86_64")]
    let lanes: usize = match isa {
        Isa::Avx512 if rows == OutputRows::All && hd.is_multiple_of(16) => 16,
        Isa::Avx2 if rows == OutputRows::All && hd.is_multiple_of(8) => 8,
        _ => 0,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let lanes: usize = 0;
    let qb = if isa == Isa::Avx512 { QB } else { QB / 2 };
    let attn = grow(attn, nout * d);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut probs = probs;
    let mut probs_base = 0;
    let mut r0 = 0;
    let qlast: &[f32] = qlast;
    for (s, seq) in seqs.iter().enumerate() {
        let t = seq.len;
        let tp = t.div_ceil(PANEL) * PANEL;
        let nq = query_rows(seq, rows);
        for h in 0..heads {
            let koff = pd + h * hd;
            #[cfg(target_arch = "x86_64")]
            if lanes > 0 {
                let voff = 2 * pd + h * hd;
                let mut i0 = 0;
                while i0 < nq {
                    // The partial block (nq mod lanes queries) goes first:
                    // under a causal mask the first queries see the fewest
                    // keys, so its lanes wait on fewer keys than at the end.
                    let nb = match nq % lanes {
                        r if i0 == 0 && r != 0 => r,
                        _ => lanes.min(nq - i0),
                    };
                    let mut lens = [0usize; 16];
                    for b in 0..nb {
                        lens[b] = seq.visible(i0 + b);
                    }
                    let lmax = lens.iter().copied().max().unwrap_or(0);
                    let kernel = if lanes == 16 {
                        x86::attend_t16
                    } else {
                        x86::attend_t8
                    };
                    // SAFETY: `isa` was checked (AVX-512 for 16 lanes, AVX2 +
                    // FMA for 8); the kernels assert every slice bound they
                    // rely on.
                    unsafe {
                        kernel(
                            &qkv[(r0 + i0) * ldq + h * hd..],
                            ldq,
                            &lens[..nb],
                            &qkv[r0 * ldq + koff..],
                            ldq,
                            &qkv[r0 * ldq + voff..],
                            ldq,
                            hd,
                            scale,
                            kt,
                            &mut sc[..lanes * lmax],
                            &mut attn[(r0 + i0) * d + h * hd..],
                            d,
                            probs.is_some(),
                        )
                    };
                    if let Some(p) = probs.as_deref_mut() {
                        for b in 0..nb {
                            let off = probs_base + (h * nq + i0 + b) * t;
                            let dst = &mut p[off..off + t];
                            for (j, o) in dst.iter_mut().enumerate() {
                                *o = if j < lens[b] { sc[j * lanes + b] } else { 0.0 };
                            }
                        }
                    }
                    i0 += nb;
                }
                continue;
            }
            // Kᵀ of this head: kt[c·tp + j] = K[j, c], zero-padded to tp keys.
            transpose_k(
                isa,
                &qkv[r0 * ldq + koff..],
                ldq,
                t,
                hd,
                &mut kt[..hd * tp],
                tp,
            );
            let kt_h = &kt[..hd * tp];
            let voff = 2 * pd + h * hd;
            let mut i0 = 0;
            while i0 < nq {
                let nb = qb.min(nq - i0);
                let mut qs: [&[f32]; QB] = [&[]; QB];
                let mut lens = [0usize; QB];
                let mut orows = [0usize; QB];
                let mut lmax = 0;
                for b in 0..nb {
                    let (qrow, pos, orow) = match rows {
                        OutputRows::All => {
                            let i = i0 + b;
                            (&qkv[(r0 + i) * ldq + h * hd..][..hd], i, r0 + i)
                        }
                        OutputRows::LastOnly => (&qlast[s * pd + h * hd..][..hd], t - 1, s),
                    };
                    qs[b] = qrow;
                    lens[b] = seq.visible(pos);
                    lmax = lmax.max(lens[b]);
                    orows[b] = orow;
                }
                let jn = lmax.div_ceil(PANEL) * PANEL;
                let sc_blk = &mut sc[..nb * tp];
                let v_h = &qkv[r0 * ldq + voff..];
                #[cfg(target_arch = "x86_64")]
                let fused = isa == Isa::Avx512 || isa == Isa::Avx2;
                #[cfg(not(target_arch = "x86_64"))]
                let fused = false;
                if fused {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `isa` was checked to be supported (AVX-512 or
                    // AVX2+FMA); the kernels assert every slice bound they
                    // rely on.
                    unsafe {
                        let kernel: x86::AttendFn = if isa == Isa::Avx512 {
                            x86::attend_avx512
                        } else {
                            x86::attend_avx2
                        };
                        kernel(
                            &qs[..nb],
                            &lens[..nb],
                            kt_h,
                            tp,
                            jn,
                            scale,
                            sc_blk,
                            v_h,
                            ldq,
                            hd,
                            attn,
                            d,
                            h * hd,
                            &orows[..nb],
                        )
                    };
                } else {
                    scores_block(isa, &qs[..nb], kt_h, tp, jn, scale, sc_blk);
                    for b in 0..nb {
                        activation::softmax_row(isa, &mut sc_blk[b * tp..b * tp + lens[b]]);
                    }
                    pv_block(
                        isa,
                        sc_blk,
                        tp,
                        &lens[..nb],
                        v_h,
                        ldq,
                        hd,
                        attn,
                        d,
                        h * hd,
                        &orows[..nb],
                    );
                }
                if let Some(p) = probs.as_deref_mut() {
                    for b in 0..nb {
                        let off = probs_base + (h * nq + i0 + b) * t;
                        let dst = &mut p[off..off + t];
                        dst[..lens[b]].copy_from_slice(&sc_blk[b * tp..b * tp + lens[b]]);
                        dst[lens[b]..].fill(0.0);
                    }
                }
                i0 += nb;
            }
        }
        probs_base += heads * nq * t;
        r0 += t;
    }
    let res = match residual {
        Some(r) => Res::Add(r, d),
        None => Res::None,
    };
    gemm_strided(
        isa,
        Operand { data: attn, ld: d },
        nout,
        &w.wo,
        Some(&w.bo),
        false,
        res,
        out,
        d,
        0,
        d,
    )
}

/// `kt[c·tp + j] = k[j·ldk + c]` for `c < hd`, `j < t`; zero for `t ≤ j < tp`.
fn transpose_k(isa: Isa, k: &[f32], ldk: usize, t: usize, hd: usize, kt: &mut [f32], tp: usize) {
    assert!(t >= 1 && t <= tp && kt.len() >= hd * tp && k.len() >= (t - 1) * ldk + hd);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: AVX-512 was checked by the caller; bounds asserted above.
        unsafe { x86::transpose_avx512(k, ldk, t, hd, kt, tp) };
        return;
    }
    let _ = isa;
    for c in 0..hd {
        let row = &mut kt[c * tp..(c + 1) * tp];
        for j in 0..t {
            row[j] = k[j * ldk + c];
        }
        row[t..].fill(0.0);
    }
}

/// Scores of a block of query rows: `s[b·tp + j] = scale · q_b · Kᵀ[:, j]`
/// for `j < jn` (`jn ≤ tp`, both multiples of 16; `kt` is `hd × tp`).
fn scores_block(
    isa: Isa,
    qs: &[&[f32]],
    kt: &[f32],
    tp: usize,
    jn: usize,
    scale: f32,
    s: &mut [f32],
) {
    let hd = kt.len() / tp;
    debug_assert!(jn <= tp && jn.is_multiple_of(PANEL) && s.len() >= qs.len() * tp);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the caller checked the ISA (mha_core calls
            // isa.checked()), so AVX2+FMA are present; bounds asserted inside.
            unsafe { x86::scores_avx2(qs, kt, tp, jn, scale, s) }
        }
        Isa::Portable => match qs.len() {
            1 => portable::scores::<1>(qs, kt, tp, jn, scale, s),
            2 => portable::scores::<2>(qs, kt, tp, jn, scale, s),
            3 => portable::scores::<3>(qs, kt, tp, jn, scale, s),
            _ => {
                for (i, q4) in qs.chunks(4).enumerate() {
                    let s4 = &mut s[i * 4 * tp..];
                    match q4.len() {
                        1 => portable::scores::<1>(q4, kt, tp, jn, scale, s4),
                        2 => portable::scores::<2>(q4, kt, tp, jn, scale, s4),
                        3 => portable::scores::<3>(q4, kt, tp, jn, scale, s4),
                        _ => portable::scores::<4>(q4, kt, tp, jn, scale, s4),
                    }
                }
            }
        },
        _ => {
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
    }
}

/// `out[orow_b·ldo + col0 ..][..hd] = Σ_{j < lens[b]} p[b·tp + j] · v[j·ldv ..][..hd]`.
#[allow(clippy::too_many_arguments)]
fn pv_block(
    isa: Isa,
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
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: ISA checked by the caller; bounds asserted inside.
            unsafe { x86::pv_avx2(p, tp, lens, v, ldv, hd, out, ldo, col0, orows) }
        }
        Isa::Portable => {
            let mut b0 = 0;
            while b0 < lens.len() {
                let n = (lens.len() - b0).min(4);
                let (p4, l4, o4) = (&p[b0 * tp..], &lens[b0..b0 + n], &orows[b0..b0 + n]);
                match n {
                    1 => portable::pv::<1>(p4, tp, l4, v, ldv, hd, out, ldo, col0, o4),
                    2 => portable::pv::<2>(p4, tp, l4, v, ldv, hd, out, ldo, col0, o4),
                    3 => portable::pv::<3>(p4, tp, l4, v, ldv, hd, out, ldo, col0, o4),
                    _ => portable::pv::<4>(p4, tp, l4, v, ldv, hd, out, ldo, col0, o4),
                }
                b0 += n;
            }
        }
        _ => {
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
    }
}

/// The portable (`wide::f32x8`) score and `P·V` kernels, `R` rows at a time.
mod portable {
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
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::QB;
    use crate::simd::{exp2c, expc};
    use std::arch::x86_64::*;

    /// Signature shared by `attend_avx512` and `attend_avx2`.
    pub(super) type AttendFn = unsafe fn(
        &[&[f32]],
        &[usize],
        &[f32],
        usize,
        usize,
        f32,
        &mut [f32],
        &[f32],
        usize,
        usize,
        &mut [f32],
        usize,
        usize,
        &[usize],
    );

    /// The first `n ≤ 16` lanes.
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// `exp` in 16 lanes: `2^n · p(r)`, `n = round(x·log2 e)`, `r = x − n·ln 2`
    /// (two-part ln 2), degree-7 Taylor polynomial, `vscalefps` for `2^n`.
    /// NaN propagates; inputs are clamped to the f32 exp range.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    fn exp16(x: __m512) -> __m512 {
        let xc = _mm512_min_ps(
            _mm512_set1_ps(expc::HI),
            _mm512_max_ps(_mm512_set1_ps(expc::LO), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(xc, _mm512_set1_ps(expc::LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(expc::LN2_HI), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(expc::LN2_LO), r);
        let mut p = _mm512_fmadd_ps(_mm512_set1_ps(expc::C7), r, _mm512_set1_ps(expc::C6));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C5));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C4));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(expc::C2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }

    /// `2^y` in 16 lanes for `y ∈ [−151, 0]` (or NaN): `n = round(y)`,
    /// `2^(y − n)` by the degree-6 polynomial of `simd::exp2c`,
    /// `vscalefps` for `2^n` (gradual underflow to 0).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    fn exp2_16(y: __m512) -> __m512 {
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

    /// In-place softmax of `row[..l]` (`row.len() ≥ l`, rounded up to 16).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
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
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
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
        let nb = qs.len();
        assert!((1..=QB).contains(&nb) && lens.len() == nb && orows.len() == nb);
        assert!(jn <= tp && jn.is_multiple_of(16) && s.len() >= nb * tp && kt.len() >= hd * tp);
        for q in qs {
            assert!(q.len() >= hd);
        }
        // Scalar per-row checks (what `pv_checks` asserts, without reading
        // the freshly written `lens` with vector loads).
        for b in 0..nb {
            let l = lens[b];
            assert!(l >= 1 && l <= jn && l <= tp);
            assert!((l - 1) * ldv + hd <= v.len());
            assert!(orows[b] * ldo + col0 + hd <= out.len());
        }
        let a = Args {
            qs,
            lens,
            kt,
            tp,
            jn,
            scale,
            v,
            ldv,
            hd,
            ldo,
            col0,
            orows,
        };
        match nb {
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

    /// Checked arguments of `attend_r` (see `attend_avx512` for the asserts).
    struct Args<'a> {
        qs: &'a [&'a [f32]],
        lens: &'a [usize],
        kt: &'a [f32],
        tp: usize,
        jn: usize,
        scale: f32,
        v: &'a [f32],
        ldv: usize,
        hd: usize,
        ldo: usize,
        col0: usize,
        orows: &'a [usize],
    }

    /// `R` query rows with accumulators in registers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
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
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
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
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
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
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
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
                        acc[cc] =
                            _mm512_mask3_fmadd_ps(p, _mm512_set1_ps(*row.add(cc)), acc[cc], m);
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
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
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
                // u[4i + m] lane L = column 4L + m of rows 4i..4i+4.
                for mm in 0..4 {
                    let (a, b, c, d) = (u[mm], u[4 + mm], u[8 + mm], u[12 + mm]);
                    let v0 = _mm512_shuffle_f32x4::<0x44>(a, b);
                    let v1 = _mm512_shuffle_f32x4::<0x44>(c, d);
                    let v2 = _mm512_shuffle_f32x4::<0xEE>(a, b);
                    let v3 = _mm512_shuffle_f32x4::<0xEE>(c, d);
                    let cols = [
                        (mm, _mm512_shuffle_f32x4::<0x88>(v0, v1)),
                        (4 + mm, _mm512_shuffle_f32x4::<0xDD>(v0, v1)),
                        (8 + mm, _mm512_shuffle_f32x4::<0x88>(v2, v3)),
                        (12 + mm, _mm512_shuffle_f32x4::<0xDD>(v2, v3)),
                    ];
                    for (cc, val) in cols {
                        if cc < w {
                            // SAFETY: c0 + cc < hd and j0 + 16 ≤ tp: inside kt.
                            unsafe {
                                _mm512_storeu_ps(kt.as_mut_ptr().add((c0 + cc) * tp + j0), val)
                            };
                        }
                    }
                }
                c0 += 16;
            }
            j0 += 16;
        }
    }

    /// `exp` in 8 lanes for softmax arguments: inputs are clamped to
    /// `[-87, 88]` so that `2^n` can be built in the exponent bits (values
    /// below `e^-87` come out as about `1.6e-38`); NaN propagates.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(
            _mm256_set1_ps(88.0),
            _mm256_max_ps(_mm256_set1_ps(-87.0), x),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(xc, _mm256_set1_ps(expc::LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(expc::LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(expc::LN2_LO), r);
        let mut p = _mm256_fmadd_ps(_mm256_set1_ps(expc::C7), r, _mm256_set1_ps(expc::C6));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C5));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C4));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(expc::C2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    /// `2^y` in 8 lanes for `y ∈ [−126, 0]` (or NaN): magic-number
    /// rounding, the degree-6 polynomial of `simd::exp2c`, `2^n` built in
    /// the exponent bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp2_8(y: __m256) -> __m256 {
        let magic = _mm256_set1_ps(expc::MAGIC);
        let t = _mm256_add_ps(y, magic);
        let f = _mm256_sub_ps(y, _mm256_sub_ps(t, magic));
        let mut p = _mm256_fmadd_ps(_mm256_set1_ps(exp2c::P6), f, _mm256_set1_ps(exp2c::P5));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2c::P4));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2c::P3));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2c::P2));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2c::P1));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0));
        let s = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_castps_si256(t),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(s))
    }

    /// Maximum of the 8 lanes, in every lane.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hmax8(v: __m256) -> __m256 {
        let h = _mm256_max_ps(v, _mm256_permute2f128_ps::<1>(v, v));
        let h = _mm256_max_ps(h, _mm256_shuffle_ps::<0b0100_1110>(h, h));
        _mm256_max_ps(h, _mm256_shuffle_ps::<0b1011_0001>(h, h))
    }

    /// Sum of the 8 lanes, in every lane.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum8(v: __m256) -> __m256 {
        let h = _mm256_add_ps(v, _mm256_permute2f128_ps::<1>(v, v));
        let h = _mm256_add_ps(h, _mm256_shuffle_ps::<0b0100_1110>(h, h));
        _mm256_add_ps(h, _mm256_shuffle_ps::<0b1011_0001>(h, h))
    }

    /// 8×8 transpose in registers: lane `i` of `out[c]` is lane `c` of `r[i]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
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
    #[target_feature(enable = "avx2,fma")]
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
    #[target_feature(enable = "avx2,fma")]
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
    #[target_feature(enable = "avx2,fma")]
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
        let nb = qs.len();
        assert!((1..=QB / 2).contains(&nb) && lens.len() == nb && orows.len() == nb);
        assert!(jn <= tp && jn.is_multiple_of(16) && s.len() >= nb * tp && kt.len() >= hd * tp);
        for q in qs {
            assert!(q.len() >= hd);
        }
        for b in 0..nb {
            let l = lens[b];
            assert!(l >= 1 && l <= jn && l <= tp);
            assert!((l - 1) * ldv + hd <= v.len());
            assert!(orows[b] * ldo + col0 + hd <= out.len());
        }
        let a = Args {
            qs,
            lens,
            kt,
            tp,
            jn,
            scale,
            v,
            ldv,
            hd,
            ldo,
            col0,
            orows,
        };
        // SAFETY: the bounds the kernels rely on were asserted above.
        unsafe {
            match nb {
                1 => attend2_r::<1>(&a, s, out),
                2 => attend2_r::<2>(&a, s, out),
                3 => attend2_r::<3>(&a, s, out),
                _ => attend2_r::<4>(&a, s, out),
            }
        }
    }

    /// # Safety
    /// AVX2+FMA available, `R == a.qs.len()`, the asserts of `attend_avx2` hold.
    #[target_feature(enable = "avx2,fma")]
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
                    let mx = hmax8(_mm256_max_ps(x0, x1));
                    let e0 = _mm256_and_ps(exp8(_mm256_sub_ps(x0, mx)), m0);
                    let e1 = _mm256_and_ps(exp8(_mm256_sub_ps(x1, mx)), m1);
                    let inv = _mm256_div_ps(_mm256_set1_ps(1.0), hsum8(_mm256_add_ps(e0, e1)));
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
                crate::activation::softmax_row(
                    crate::Isa::Avx2,
                    &mut s[b * a.tp..b * a.tp + lens[b]],
                );
            }
        }
        // SAFETY: `attend_avx2` asserted what `pv_checks` would.
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
    #[target_feature(enable = "avx2,fma")]
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
    #[target_feature(enable = "avx2,fma")]
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
    #[target_feature(enable = "avx2,fma")]
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
    #[target_feature(enable = "avx2,fma")]
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
}
