//! Property tests of the fused multi-head self-attention (`mha_forward`) on
//! every supported dispatch path, over random ragged batches, head counts,
//! model widths that are not multiples of 16, and all three mask kinds.
//!
//! Reference: f64 everywhere (projections, exact `exp`, softmax, `P·V`), with
//! the f16-rounded weights when the kernel stores f16.
//! Tolerances (inputs in [-2, 2], weights ~ 1/√d): outputs
//! `|got − ref| ≤ 2e-4 + 2e-4·|ref|`; probabilities `≤ 2e-5 + 1e-4·p`
//! (f32 accumulation plus the polynomial `exp`). `LastOnly` rows must match
//! the last rows of `All` to `1e-5 + 1e-5·|x|`.

mod common;

use common::{AttnRef, Rng, assert_close, mha_ref, to_f64};
use profiled_kernels::attention::{
    AttentionWeights, Mask, OutputRows, Sequence, Workspace, mha_forward, output_rows, probs_len,
};
use profiled_kernels::gemm::WeightPrecision;
use profiled_kernels::{Isa, KernelError};
use proptest::prelude::*;

fn weights(r: &AttnRef, prec: WeightPrecision) -> AttentionWeights {
    AttentionWeights::from_pytorch(r.d, r.heads, &r.in_w, &r.in_b, &r.out_w, &r.out_b, prec)
        .expect("weights")
}

fn mask_for(kind: u8, len: usize, rng: &mut Rng) -> Mask {
    match kind % 3 {
        0 => Mask::None,
        1 => Mask::KeyPadding {
            valid: 1 + rng.below(len),
        },
        _ => Mask::PrefixCausal {
            prefix: rng.below(len + 1),
        },
    }
}

fn run(d: usize, heads: usize, lens: &[usize], mask_kinds: &[u8], seed: u64, f16: bool) {
    let mut rng = Rng::new(seed);
    let r = AttnRef::random(&mut rng, d, heads);
    let prec = if f16 {
        WeightPrecision::F16
    } else {
        WeightPrecision::F32
    };
    // The reference uses exactly the weights the kernel stores.
    let rr = if f16 { r.rounded() } else { r.clone() };
    let w = weights(&r, prec);
    let seqs: Vec<Sequence> = lens
        .iter()
        .zip(mask_kinds.iter().cycle())
        .map(|(&l, &k)| Sequence::new(l, mask_for(k, l, &mut rng)))
        .collect();
    let total: usize = lens.iter().sum();
    let x = rng.vec_f32(total * d, 2.0);
    let x64 = to_f64(&x);
    let mut ws = Workspace::new();
    for rows in [OutputRows::All, OutputRows::LastOnly] {
        let (want, want_p) = mha_ref(&rr, &x64, &seqs, rows);
        for isa in Isa::supported() {
            let mut out = vec![f32::NAN; output_rows(&seqs, rows) * d];
            let mut probs = vec![f32::NAN; probs_len(&seqs, heads, rows)];
            mha_forward(
                isa,
                &w,
                &x,
                &seqs,
                rows,
                &mut out,
                &mut ws,
                Some(&mut probs),
            )
            .expect("mha");
            assert_close(&format!("{isa} {rows:?} out"), &out, &want, 2e-4, 2e-4);
            assert_close(
                &format!("{isa} {rows:?} probs"),
                &probs,
                &want_p,
                2e-5,
                1e-4,
            );
            // Without probabilities: identical outputs.
            let mut out2 = vec![f32::NAN; out.len()];
            mha_forward(isa, &w, &x, &seqs, rows, &mut out2, &mut ws, None).expect("mha");
            assert_eq!(
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                out2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{isa}: probs must not change outputs"
            );
        }
    }
    // LastOnly == last rows of All.
    for isa in Isa::supported() {
        let mut all = vec![0.0; total * d];
        mha_forward(isa, &w, &x, &seqs, OutputRows::All, &mut all, &mut ws, None).expect("mha");
        let mut last = vec![0.0; seqs.len() * d];
        mha_forward(
            isa,
            &w,
            &x,
            &seqs,
            OutputRows::LastOnly,
            &mut last,
            &mut ws,
            None,
        )
        .expect("mha");
        let mut r0 = 0;
        for (s, seq) in seqs.iter().enumerate() {
            let l = r0 + seq.len - 1;
            for c in 0..d {
                let (a, b) = (all[l * d + c], last[s * d + c]);
                assert!(
                    (a - b).abs() <= 1e-5 + 1e-5 * a.abs(),
                    "{isa}: seq {s} col {c}: {a} vs {b}"
                );
            }
            r0 += seq.len;
        }
    }
}

const DIMS: [(usize, usize); 12] = [
    (24, 1),
    (32, 1),
    (64, 2),
    (24, 3),
    (36, 4),
    (36, 6),
    (60, 5),
    (64, 4),
    (64, 8),
    (72, 8),
    (16, 2),
    (40, 8),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(32), ..ProptestConfig::default() })]

    #[test]
    fn mha_small_ragged_batches(
        dim in 0usize..DIMS.len(),
        lens in prop::collection::vec(1usize..=24, 1..=12),
        kinds in prop::collection::vec(0u8..3, 1..=4),
        seed: u64,
        f16 in any::<bool>(),
    ) {
        let (d, heads) = DIMS[dim];
        run(d, heads, &lens, &kinds, seed, f16);
    }

    #[test]
    fn mha_long_sequences(
        dim in 0usize..DIMS.len(),
        lens in prop::collection::vec(1usize..=300, 1..=3),
        kinds in prop::collection::vec(0u8..3, 1..=3),
        seed: u64,
    ) {
        let (d, heads) = DIMS[dim];
        run(d, heads, &lens, &kinds, seed, false);
    }
}

#[test]
fn mha_batch_1024_short_sequences() {
    let mut rng = Rng::new(99);
    let lens: Vec<usize> = (0..1024).map(|_| 1 + rng.below(8)).collect();
    run(64, 4, &lens, &[0, 1, 2], 5, false);
}

#[test]
fn mha_validates_inputs() {
    let mut rng = Rng::new(1);
    let r = AttnRef::random(&mut rng, 24, 3);
    let w = weights(&r, WeightPrecision::F32);
    let mut ws = Workspace::new();
    let x = vec![0.1; 5 * 24];
    let mut out = vec![0.0; 5 * 24];
    for isa in Isa::supported() {
        let bad = |seqs: &[Sequence], x: &[f32], out: &mut [f32], ws: &mut Workspace| {
            mha_forward(isa, &w, x, seqs, OutputRows::All, out, ws, None)
        };
        let e = bad(&[Sequence::new(4, Mask::None)], &x, &mut out, &mut ws);
        assert!(matches!(e, Err(KernelError::Shape { .. })), "{e:?}");
        let e = bad(
            &[Sequence::new(5, Mask::KeyPadding { valid: 0 })],
            &x,
            &mut out,
            &mut ws,
        );
        assert!(matches!(e, Err(KernelError::Invalid { .. })));
        let e = bad(
            &[Sequence::new(5, Mask::KeyPadding { valid: 6 })],
            &x,
            &mut out,
            &mut ws,
        );
        assert!(matches!(e, Err(KernelError::Invalid { .. })));
        let e = bad(
            &[Sequence::new(5, Mask::PrefixCausal { prefix: 6 })],
            &x,
            &mut out,
            &mut ws,
        );
        assert!(matches!(e, Err(KernelError::Invalid { .. })));
        let e = bad(
            &[Sequence::new(5, Mask::None), Sequence::new(0, Mask::None)],
            &x,
            &mut out,
            &mut ws,
        );
        assert!(matches!(e, Err(KernelError::Invalid { .. })));
        let e = bad(&[Sequence::new(5, Mask::None)], &x, &mut out[..24], &mut ws);
        assert!(matches!(e, Err(KernelError::Shape { .. })));
        let mut probs = vec![0.0; 3];
        let e = mha_forward(
            isa,
            &w,
            &x,
            &[Sequence::new(5, Mask::None)],
            OutputRows::All,
            &mut out,
            &mut ws,
            Some(&mut probs),
        );
        assert!(matches!(e, Err(KernelError::Shape { .. })));
        // Absurd lengths are errors, not overflows or panics.
        let huge = [
            Sequence::new(usize::MAX / 2 + 1, Mask::None),
            Sequence::new(usize::MAX / 2 + 1, Mask::None),
        ];
        assert!(bad(&huge, &x, &mut out, &mut ws).is_err());
        let e = bad(
            &[Sequence::new(usize::MAX / 8, Mask::None)],
            &x,
            &mut out,
            &mut ws,
        );
        assert!(matches!(e, Err(KernelError::Shape { .. })));
        assert!(
            mha_forward(
                isa,
                &w,
                &x,
                &[Sequence::new(usize::MAX / 8, Mask::None)],
                OutputRows::LastOnly,
                &mut out[..24],
                &mut ws,
                Some(&mut [])
            )
            .is_err()
        );
        // Empty batch is fine.
        assert!(mha_forward(isa, &w, &[], &[], OutputRows::All, &mut [], &mut ws, None).is_ok());
    }
    assert!(
        AttentionWeights::from_pytorch(
            24,
            5,
            &r.in_w,
            &r.in_b,
            &r.out_w,
            &r.out_b,
            WeightPrecision::F32
        )
        .is_err()
    );
    assert!(
        AttentionWeights::from_pytorch(
            24,
            0,
            &r.in_w,
            &r.in_b,
            &r.out_w,
            &r.out_b,
            WeightPrecision::F32
        )
        .is_err()
    );
    assert!(
        AttentionWeights::from_pytorch(
            24,
            3,
            &r.in_w[1..],
            &r.in_b,
            &r.out_w,
            &r.out_b,
            WeightPrecision::F32
        )
        .is_err()
    );
}

#[test]
fn mha_nan_and_inf_stay_in_their_sequence() {
    let mut rng = Rng::new(3);
    let r = AttnRef::random(&mut rng, 36, 4);
    let w = weights(&r, WeightPrecision::F32);
    let seqs = [
        Sequence::new(7, Mask::None),
        Sequence::new(9, Mask::None),
        Sequence::new(5, Mask::None),
    ];
    let mut x = rng.vec_f32(21 * 36, 1.0);
    x[3 * 36 + 2] = f32::NAN;
    x[(7 + 9 + 1) * 36 + 5] = f32::INFINITY;
    let mut ws = Workspace::new();
    for isa in Isa::supported() {
        let mut out = vec![0.0; 21 * 36];
        mha_forward(isa, &w, &x, &seqs, OutputRows::All, &mut out, &mut ws, None)
            .expect("no error on NaN");
        assert!(
            out[..7 * 36].iter().all(|v| v.is_nan()),
            "{isa}: sequence 0 sees the NaN"
        );
        assert!(
            out[7 * 36..16 * 36].iter().all(|v| v.is_finite()),
            "{isa}: sequence 1 is clean"
        );
        assert!(
            out[16 * 36..].iter().any(|v| !v.is_finite()),
            "{isa}: sequence 2 sees the inf"
        );
    }
}
