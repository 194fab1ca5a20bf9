//! Each mask kind hides exactly what it must: perturbing a hidden token (to a
//! very different finite value, and to NaN) leaves every output that must not
//! see it bit-for-bit unchanged, and changes the outputs that do see it.
//! Checked for `mha_forward` and `block_forward`, `All` and `LastOnly`, on
//! every supported dispatch path. Sequences of a batch never see each other.

mod common;

use common::{AttnRef, LayerRef, Rng};
use profiled_kernels::Isa;
use profiled_kernels::attention::{
    AttentionWeights, Mask, OutputRows, Sequence, Workspace, mha_forward, output_rows,
};
use profiled_kernels::block::{LayerWeights, block_forward};
use profiled_kernels::gemm::WeightPrecision;

/// 48 = 4 heads of 12 (the row-block attention kernels) or 3 heads of 16
/// (whole 16-column heads: the AVX-512 queries-in-lanes kernel).
const D: usize = 48;

enum Model {
    Mha(AttentionWeights),
    Block(Box<LayerWeights>),
}

impl Model {
    fn run(&self, isa: Isa, x: &[f32], seqs: &[Sequence], rows: OutputRows) -> Vec<f32> {
        let mut ws = Workspace::new();
        let mut out = vec![0.0; output_rows(seqs, rows) * D];
        match self {
            Model::Mha(w) => mha_forward(isa, w, x, seqs, rows, &mut out, &mut ws, None),
            Model::Block(w) => block_forward(isa, w, x, seqs, rows, &mut out, &mut ws, None),
        }
        .expect("forward");
        out
    }
}

fn models() -> Vec<Model> {
    let mut rng = Rng::new(42);
    let mut mha = |heads: usize| {
        let a = AttnRef::random(&mut rng, D, heads);
        Model::Mha(
            AttentionWeights::from_pytorch(
                D,
                heads,
                &a.in_w,
                &a.in_b,
                &a.out_w,
                &a.out_b,
                WeightPrecision::F32,
            )
            .expect("weights"),
        )
    };
    let (m4, m3) = (mha(4), mha(3));
    let l = LayerRef::random(&mut rng, D, 3, 50);
    vec![
        m4,
        m3,
        Model::Block(Box::new(
            LayerWeights::new(&l.tensors(), WeightPrecision::F16).expect("layer"),
        )),
    ]
}

/// Output row index of token `t` of sequence `s` (None when not produced).
fn out_row(seqs: &[Sequence], rows: OutputRows, s: usize, t: usize) -> Option<usize> {
    match rows {
        OutputRows::All => Some(seqs[..s].iter().map(|q| q.len).sum::<usize>() + t),
        OutputRows::LastOnly => (t == seqs[s].len - 1).then_some(s),
    }
}

/// Perturbs token `victim` of sequence 1 and checks which rows may change:
/// `sees(t)` says whether token t of sequence 1 may depend on the victim.
fn check(seq: Sequence, victim: usize, sees: impl Fn(usize) -> bool) {
    let seqs = [
        Sequence::new(5, Mask::None),
        seq,
        Sequence::new(3, Mask::PrefixCausal { prefix: 1 }),
    ];
    let total: usize = seqs.iter().map(|s| s.len).sum();
    let mut rng = Rng::new(victim as u64 + 1000 * seq.len as u64);
    let x = rng.vec_f32(total * D, 1.5);
    let vrow = 5 + victim;
    for model in models() {
        for isa in Isa::supported() {
            for rows in [OutputRows::All, OutputRows::LastOnly] {
                let base = model.run(isa, &x, &seqs, rows);
                for value in [25.0f32, f32::NAN] {
                    let mut xp = x.clone();
                    for c in 0..D {
                        xp[vrow * D + c] = if value.is_nan() {
                            value
                        } else {
                            value * (c as f32 - 17.0)
                        };
                    }
                    let pert = model.run(isa, &xp, &seqs, rows);
                    for (s, sq) in seqs.iter().enumerate() {
                        for t in 0..sq.len {
                            let Some(r) = out_row(&seqs, rows, s, t) else {
                                continue;
                            };
                            let a = &base[r * D..(r + 1) * D];
                            let b = &pert[r * D..(r + 1) * D];
                            let same = a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
                            let may = s == 1 && sees(t);
                            if !may {
                                assert!(
                                    same,
                                    "{isa} {rows:?} {seq:?}: victim {victim} leaked into seq {s} token {t}"
                                );
                            } else {
                                assert!(
                                    !same,
                                    "{isa} {rows:?} {seq:?}: token {t} should see victim {victim}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn no_mask_sees_everything_within_its_sequence_only() {
    for victim in [0, 3, 6] {
        check(Sequence::new(7, Mask::None), victim, |_| true);
    }
}

#[test]
fn key_padding_hides_padded_keys() {
    let seq = Sequence::new(9, Mask::KeyPadding { valid: 4 });
    // A padded token only influences its own output row (its own query and residual).
    for victim in [4, 6, 8] {
        check(seq, victim, |t| t == victim);
    }
    // A valid token is seen by everybody.
    check(seq, 2, |_| true);
}

#[test]
fn prefix_causal_hides_the_future() {
    let seq = Sequence::new(10, Mask::PrefixCausal { prefix: 3 });
    // A behaviour token is seen by itself and later tokens only.
    for victim in [3, 5, 9] {
        check(seq, victim, |t| t >= victim);
    }
    // A prefix token is seen by every token.
    for victim in [0, 2] {
        check(seq, victim, |_| true);
    }
    // Longer than one block of 16 query rows and 8 keys.
    let seq = Sequence::new(40, Mask::PrefixCausal { prefix: 6 });
    for victim in [4, 17, 39] {
        check(seq, victim, |t| victim < 6 || t >= victim);
    }
    // Pure causal (no prefix).
    let seq = Sequence::new(6, Mask::PrefixCausal { prefix: 0 });
    check(seq, 2, |t| t >= 2);
    // Everything is prefix: bidirectional.
    let seq = Sequence::new(6, Mask::PrefixCausal { prefix: 6 });
    check(seq, 4, |_| true);
}
