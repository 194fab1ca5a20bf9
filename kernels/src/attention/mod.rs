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
//!
//! # Layout
//!
//! This file is the driver: the types, validation, [`mha_forward`], the
//! batch loop (`mha_core`) and the dispatch to one path per instruction set,
//! split like [`crate::simd`]: `scalar.rs` (the reference loops),
//! `portable.rs` (`wide`), `avx2.rs` and `avx512.rs` (`std::arch`, x86-64
//! only). The SIMD helpers they share with the primitives (`exp`, `2^y`,
//! lane masks, horizontal sums) are the ones in `crate::simd`, not copies.

use crate::error::check_len;
use crate::gemm::{Operand, PANEL, PackedMatrix, Res, WeightPrecision, gemm_strided};
use crate::{Isa, KernelError, activation};

mod portable;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

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
    // `isa` goes to the projections (a bf16 GEMM when the weights are
    // bf16); the attention core is f32 on every path (`fisa`).
    let isa = isa.checked()?;
    let fisa = isa.f32_path();
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
    let lanes: usize = match fisa {
        Isa::Avx512 if rows == OutputRows::All && hd.is_multiple_of(16) => 16,
        Isa::Avx2 if rows == OutputRows::All && hd.is_multiple_of(8) => 8,
        _ => 0,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let lanes: usize = 0;
    let qb = if fisa == Isa::Avx512 { QB } else { QB / 2 };
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
                        avx512::attend_t16
                    } else {
                        avx2::attend_t8
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
                fisa,
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
                let fused = fisa == Isa::Avx512 || fisa == Isa::Avx2;
                #[cfg(not(target_arch = "x86_64"))]
                let fused = false;
                if fused {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `isa` was checked to be supported (AVX-512 or
                    // AVX2+FMA); the kernels assert every slice bound they
                    // rely on.
                    unsafe {
                        let kernel: AttendFn = if fisa == Isa::Avx512 {
                            avx512::attend_avx512
                        } else {
                            avx2::attend_avx2
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
                    scores_block(fisa, &qs[..nb], kt_h, tp, jn, scale, sc_blk);
                    for b in 0..nb {
                        activation::softmax_row(fisa, &mut sc_blk[b * tp..b * tp + lens[b]]);
                    }
                    pv_block(
                        fisa,
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
        unsafe { avx512::transpose_avx512(k, ldk, t, hd, kt, tp) };
        return;
    }
    let _ = isa;
    scalar::transpose_k(k, ldk, t, hd, kt, tp);
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
    debug_assert!(jn <= tp && jn.is_multiple_of(PANEL) && s.len() >= qs.len() * tp);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the caller checked the ISA (mha_core calls
            // isa.checked()), so AVX2+FMA are present; bounds asserted inside.
            unsafe { avx2::scores_avx2(qs, kt, tp, jn, scale, s) }
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
        _ => scalar::scores(qs, kt, tp, jn, scale, s),
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
            unsafe { avx2::pv_avx2(p, tp, lens, v, ldv, hd, out, ldo, col0, orows) }
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
        _ => scalar::pv(p, tp, lens, v, ldv, hd, out, ldo, col0, orows),
    }
}

/// Signature shared by `avx512::attend_avx512` and `avx2::attend_avx2`.
#[cfg(target_arch = "x86_64")]
type AttendFn = unsafe fn(
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

/// Checked arguments of the fused score / softmax / `P·V` kernels of a block
/// of query rows (`avx512::attend_avx512`, `avx2::attend_avx2`).
#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
impl<'a> Args<'a> {
    /// Asserts every bound the kernels rely on: at most `max_rows` query
    /// rows of at least `hd` values, `jn ≤ tp` keys (a multiple of 16) in
    /// `kt` (`hd × tp`) and `s` (`rows × tp`), and per row `1 ≤ lens[b] ≤ jn`
    /// keys of `v` and an `hd`-wide output slot (scalar checks, so the
    /// freshly written `lens` are not read with vector loads).
    #[allow(clippy::too_many_arguments)]
    fn checked(
        max_rows: usize,
        qs: &'a [&'a [f32]],
        lens: &'a [usize],
        kt: &'a [f32],
        tp: usize,
        jn: usize,
        scale: f32,
        s: &[f32],
        v: &'a [f32],
        ldv: usize,
        hd: usize,
        out: &[f32],
        ldo: usize,
        col0: usize,
        orows: &'a [usize],
    ) -> Args<'a> {
        let nb = qs.len();
        assert!((1..=max_rows).contains(&nb) && lens.len() == nb && orows.len() == nb);
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
        Args {
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
        }
    }
}
