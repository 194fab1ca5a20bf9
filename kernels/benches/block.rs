//! Criterion benches of the packed GEMM, the fused multi-head attention
//! (`mha` = QKV projection + attention + output projection) and the whole
//! encoder block, single thread, d = 64, 4 heads, FFN 256, at
//! B ∈ {1, 16, 64, 256} requests × T ∈ {16, 56} tokens, on the avx512, avx2
//! and portable paths (those this CPU supports).
//!
//! Throughput is in FLOP/s ([`mha_flops`] / [`block_flops`]).
//! Run a subset with e.g. `cargo bench -p profiled-kernels --bench block -- mha/avx512`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use profiled_kernels::Isa;
use profiled_kernels::attention::{Mask, OutputRows, Sequence, Workspace, mha_flops, mha_forward};
use profiled_kernels::block::{LayerTensors, LayerWeights, block_flops, block_forward};
use profiled_kernels::gemm::{PackedMatrix, WeightPrecision, gemm};

const D: usize = 64;
const HEADS: usize = 4;
const FFN: usize = 256;

fn data(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

struct Layer {
    tensors: Vec<Vec<f32>>,
}

impl Layer {
    fn new() -> Layer {
        let s = 1.0 / (D as f32).sqrt();
        let shapes = [
            (3 * D * D, s),
            (3 * D, 0.1),
            (D * D, s),
            (D, 0.1),
            (D, 1.0),
            (D, 0.1),
            (D, 1.0),
            (D, 0.1),
            (FFN * D, s),
            (FFN, 0.1),
            (D * FFN, 1.0 / (FFN as f32).sqrt()),
            (D, 0.1),
        ];
        Layer {
            tensors: shapes
                .iter()
                .enumerate()
                .map(|(i, &(n, sc))| data(n, i as u32 + 1, sc))
                .collect(),
        }
    }

    fn weights(&self, prec: WeightPrecision) -> LayerWeights {
        let t = &self.tensors;
        LayerWeights::new(
            &LayerTensors {
                d: D,
                heads: HEADS,
                ffn: FFN,
                eps: 1e-5,
                in_proj_weight: &t[0],
                in_proj_bias: &t[1],
                out_proj_weight: &t[2],
                out_proj_bias: &t[3],
                ln1_weight: &t[4],
                ln1_bias: &t[5],
                ln2_weight: &t[6],
                ln2_bias: &t[7],
                ffn1_weight: &t[8],
                ffn1_bias: &t[9],
                ffn2_weight: &t[10],
                ffn2_bias: &t[11],
            },
            prec,
        )
        .expect("layer")
    }
}

fn isas() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2, Isa::Portable]
        .into_iter()
        .filter(|i| i.is_supported())
        .collect()
}

fn benches(c: &mut Criterion) {
    let layer = Layer::new();
    let lw = layer.weights(WeightPrecision::F32);
    let mut g = c.benchmark_group("gemm");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (k, n) in [(D, 3 * D), (D, FFN), (FFN, D)] {
        let w = PackedMatrix::from_row_major(k, n, &data(k * n, 9, 0.1), WeightPrecision::F32)
            .expect("pack");
        let m = 1024;
        let x = data(m * k, 3, 1.0);
        let mut out = vec![0.0; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for isa in isas() {
            g.bench_function(
                BenchmarkId::new(format!("{isa}/m{m}_k{k}_n{n}"), "flop"),
                |bch| bch.iter(|| gemm(isa, black_box(&x), m, &w, None, &mut out).expect("gemm")),
            );
        }
    }
    g.finish();

    for (name, is_block) in [("mha", false), ("block", true)] {
        let mut g = c.benchmark_group(name);
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for t in [16usize, 56] {
            for b in [1usize, 16, 64, 256] {
                let seqs: Vec<Sequence> = (0..b).map(|_| Sequence::new(t, Mask::None)).collect();
                let x = data(b * t * D, 5, 1.0);
                let mut out = vec![0.0; b * t * D];
                let mut ws = Workspace::new();
                let flops = if is_block {
                    block_flops(D, FFN, &seqs, OutputRows::All)
                } else {
                    mha_flops(D, &seqs, OutputRows::All)
                };
                g.throughput(Throughput::Elements(flops));
                for isa in isas() {
                    g.bench_function(
                        BenchmarkId::new(format!("{isa}/b{b}_t{t}"), "flop"),
                        |bch| {
                            bch.iter(|| {
                                if is_block {
                                    block_forward(
                                        isa,
                                        &lw,
                                        black_box(&x),
                                        &seqs,
                                        OutputRows::All,
                                        &mut out,
                                        &mut ws,
                                        None,
                                    )
                                } else {
                                    mha_forward(
                                        isa,
                                        lw.attention(),
                                        black_box(&x),
                                        &seqs,
                                        OutputRows::All,
                                        &mut out,
                                        &mut ws,
                                        None,
                                    )
                                }
                                .expect("forward")
                            })
                        },
                    );
                }
            }
        }
        g.finish();
    }
}

criterion_group!(kernel_benches, benches);
criterion_main!(kernel_benches);
