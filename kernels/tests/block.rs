//! Property tests of the whole pre-LayerNorm encoder block (`block_forward`)
//! on every supported dispatch path, over random ragged batches, widths that
//! are not multiples of 16, 1..8 heads, all mask kinds, f32 and f16 weights,
//! `All` and `LastOnly` output rows.
//!
//! Reference: f64 LayerNorm, attention (exact `exp`), tanh-GELU and
//! projections, with the f16-rounded weights when the kernel stores f16.
//! Tolerance: `|got − ref| ≤ 5e-4 + 5e-4·|ref|` (two LayerNorms re-scale the
//! f32 rounding errors of the attention; GELU uses a polynomial `tanh`).
//! `LastOnly` rows must equal the last rows of `All` to `1e-5 + 1e-5·|x|`.

mod common;

use common::{LayerRef, Rng, assert_close, block_ref};
use profiled_kernels::attention::{Mask, OutputRows, Sequence, output_rows, probs_len};
use profiled_kernels::block::{LayerWeights, Workspace, block_flops, block_forward};
use profiled_kernels::gemm::WeightPrecision;
use profiled_kernels::{Isa, KernelError};
use proptest::prelude::*;

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

fn run(d: usize, heads: usize, ffn: usize, lens: &[usize], kinds: &[u8], seed: u64, f16: bool) {
    let mut rng = Rng::new(seed);
    let l = LayerRef::random(&mut rng, d, heads, ffn);
    let prec = if f16 {
        WeightPrecision::F16
    } else {
        WeightPrecision::F32
    };
    let lw = LayerWeights::new(&l.tensors(), prec).expect("layer");
    let lr = if f16 { l.rounded() } else { l };
    let seqs: Vec<Sequence> = lens
        .iter()
        .zip(kinds.iter().cycle())
        .map(|(&n, &k)| Sequence::new(n, mask_for(k, n, &mut rng)))
        .collect();
    let total: usize = lens.iter().sum();
    let x = rng.vec_f32(total * d, 2.0);
    let mut ws = Workspace::new();
    let mut outs = Vec::new();
    for rows in [OutputRows::All, OutputRows::LastOnly] {
        let want = block_ref(&lr, &x, &seqs, rows);
        for isa in Isa::supported() {
            let mut out = vec![f32::NAN; output_rows(&seqs, rows) * d];
            block_forward(isa, &lw, &x, &seqs, rows, &mut out, &mut ws, None).expect("block");
            assert_close(&format!("{isa} {rows:?}"), &out, &want, 5e-4, 5e-4);
            let mut probs = vec![0.0; probs_len(&seqs, heads, rows)];
            let mut out2 = vec![f32::NAN; out.len()];
            block_forward(
                isa,
                &lw,
                &x,
                &seqs,
                rows,
                &mut out2,
                &mut ws,
                Some(&mut probs),
            )
            .expect("block");
            assert!(
                out.iter()
                    .zip(&out2)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa}: probs changed outputs"
            );
            outs.push((isa, rows, out));
        }
    }
    for isa in Isa::supported() {
        let all = &outs
            .iter()
            .find(|o| o.0 == isa && o.1 == OutputRows::All)
            .expect("all")
            .2;
        let last = &outs
            .iter()
            .find(|o| o.0 == isa && o.1 == OutputRows::LastOnly)
            .expect("last")
            .2;
        let mut r0 = 0;
        for (s, seq) in seqs.iter().enumerate() {
            let t = r0 + seq.len - 1;
            for c in 0..d {
                let (a, b) = (all[t * d + c], last[s * d + c]);
                assert!(
                    (a - b).abs() <= 1e-5 + 1e-5 * a.abs(),
                    "{isa}: seq {s} col {c}: {a} vs {b}"
                );
            }
            r0 += seq.len;
        }
    }
}

const DIMS: [(usize, usize, usize); 8] = [
    (24, 3, 40),
    (36, 4, 100),
    (60, 5, 64),
    (64, 4, 256),
    (72, 8, 144),
    (64, 1, 33),
    (16, 2, 17),
    (40, 8, 96),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(24), ..ProptestConfig::default() })]

    #[test]
    fn block_small_ragged_batches(
        dim in 0usize..DIMS.len(),
        lens in prop::collection::vec(1usize..=20, 1..=16),
        kinds in prop::collection::vec(0u8..3, 1..=4),
        seed: u64,
        f16 in any::<bool>(),
    ) {
        let (d, heads, ffn) = DIMS[dim];
        run(d, heads, ffn, &lens, &kinds, seed, f16);
    }

    #[test]
    fn block_long_sequences(
        dim in 0usize..DIMS.len(),
        lens in prop::collection::vec(1usize..=300, 1..=2),
        kinds in prop::collection::vec(0u8..3, 1..=2),
        seed: u64,
    ) {
        let (d, heads, ffn) = DIMS[dim];
        run(d, heads, ffn, &lens, &kinds, seed, false);
    }
}

#[test]
fn block_batch_1024_short_sequences() {
    let mut rng = Rng::new(11);
    let lens: Vec<usize> = (0..1024).map(|_| 1 + rng.below(6)).collect();
    run(64, 4, 256, &lens, &[2, 0, 1], 3, true);
}

#[test]
fn block_validates_inputs() {
    let mut rng = Rng::new(2);
    let l = LayerRef::random(&mut rng, 36, 4, 50);
    let lw = LayerWeights::new(&l.tensors(), WeightPrecision::F32).expect("layer");
    let mut bad = l.tensors();
    bad.heads = 5;
    assert!(LayerWeights::new(&bad, WeightPrecision::F32).is_err());
    let mut bad = l.tensors();
    bad.ffn1_bias = &l.b1[1..];
    assert!(LayerWeights::new(&bad, WeightPrecision::F32).is_err());
    let mut bad = l.tensors();
    bad.eps = f32::NAN;
    assert!(LayerWeights::new(&bad, WeightPrecision::F32).is_err());
    let mut ws = Workspace::new();
    let x = vec![0.5; 6 * 36];
    for isa in Isa::supported() {
        let seqs = [
            Sequence::new(2, Mask::None),
            Sequence::new(4, Mask::PrefixCausal { prefix: 2 }),
        ];
        let mut out = vec![0.0; 2 * 36];
        // LastOnly output has one row per sequence; All needs 6 rows.
        assert!(
            block_forward(
                isa,
                &lw,
                &x,
                &seqs,
                OutputRows::LastOnly,
                &mut out,
                &mut ws,
                None
            )
            .is_ok()
        );
        let e = block_forward(
            isa,
            &lw,
            &x,
            &seqs,
            OutputRows::All,
            &mut out,
            &mut ws,
            None,
        );
        assert!(matches!(e, Err(KernelError::Shape { .. })));
        let e = block_forward(
            isa,
            &lw,
            &x[1..],
            &seqs,
            OutputRows::LastOnly,
            &mut out,
            &mut ws,
            None,
        );
        assert!(matches!(e, Err(KernelError::Shape { .. })));
    }
}

#[test]
fn block_nan_stays_in_its_sequence() {
    let mut rng = Rng::new(4);
    let l = LayerRef::random(&mut rng, 24, 3, 40);
    let lw = LayerWeights::new(&l.tensors(), WeightPrecision::F16).expect("layer");
    let seqs = [
        Sequence::new(4, Mask::None),
        Sequence::new(6, Mask::PrefixCausal { prefix: 1 }),
    ];
    let mut x = rng.vec_f32(10 * 24, 1.0);
    x[7] = f32::NAN;
    let mut ws = Workspace::new();
    for isa in Isa::supported() {
        let mut out = vec![0.0; 10 * 24];
        block_forward(
            isa,
            &lw,
            &x,
            &seqs,
            OutputRows::All,
            &mut out,
            &mut ws,
            None,
        )
        .expect("block");
        assert!(out[..4 * 24].iter().all(|v| v.is_nan()), "{isa}");
        assert!(out[4 * 24..].iter().all(|v| v.is_finite()), "{isa}");
    }
}

#[test]
fn flop_counts() {
    // B = 64 × T = 16, d = 64, 4 heads, no mask: the 322 µs floor at
    // 117 GFLOP/s is 37.7 MFLOP of mha.
    let seqs = vec![Sequence::new(16, Mask::None); 64];
    let mha = profiled_kernels::attention::mha_flops(64, &seqs, OutputRows::All);
    assert_eq!(
        mha,
        2 * 1024 * 64 * 192 + 4 * 64 * 16 * 16 * 64 + 2 * 1024 * 64 * 64
    );
    assert_eq!(
        block_flops(64, 256, &seqs, OutputRows::All),
        mha + 4 * 1024 * 64 * 256
    );
    // LastOnly with a prefix-causal mask counts only what is computed.
    let s = [Sequence::new(10, Mask::PrefixCausal { prefix: 3 })];
    let last = profiled_kernels::attention::mha_flops(8, &s, OutputRows::LastOnly);
    assert_eq!(last, 2 * 10 * 8 * 16 + 2 * 8 * 8 + 4 * 8 * 10 + 2 * 8 * 8);
}

#[test]
fn workspace_stops_growing() {
    let mut rng = Rng::new(8);
    let l = LayerRef::random(&mut rng, 36, 4, 50);
    let lw = LayerWeights::new(&l.tensors(), WeightPrecision::F32).expect("layer");
    let big: Vec<Sequence> = (0..20)
        .map(|i| Sequence::new(1 + i % 9, Mask::PrefixCausal { prefix: 1 }))
        .collect();
    let small = &big[..5];
    let total: usize = big.iter().map(|s| s.len).sum();
    let x = rng.vec_f32(total * 36, 1.0);
    let ts: usize = small.iter().map(|s| s.len).sum();
    for isa in Isa::supported() {
        let mut ws = Workspace::new();
        let mut out = vec![0.0; total * 36];
        block_forward(isa, &lw, &x, &big, OutputRows::All, &mut out, &mut ws, None).expect("block");
        let mut last = vec![0.0; big.len() * 36];
        block_forward(
            isa,
            &lw,
            &x,
            &big,
            OutputRows::LastOnly,
            &mut last,
            &mut ws,
            None,
        )
        .expect("block");
        let grown = ws.bytes();
        assert!(grown > 0);
        for _ in 0..3 {
            block_forward(isa, &lw, &x, &big, OutputRows::All, &mut out, &mut ws, None)
                .expect("block");
            block_forward(
                isa,
                &lw,
                &x[..ts * 36],
                small,
                OutputRows::All,
                &mut out[..ts * 36],
                &mut ws,
                None,
            )
            .expect("block");
            let mut last = vec![0.0; big.len() * 36];
            block_forward(
                isa,
                &lw,
                &x,
                &big,
                OutputRows::LastOnly,
                &mut last,
                &mut ws,
                None,
            )
            .expect("block");
            assert_eq!(
                ws.bytes(),
                grown,
                "{isa}: the workspace must not grow again"
            );
        }
    }
}
