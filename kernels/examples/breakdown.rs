//! Where the time of the fused attention and the encoder block goes: each
//! GEMM of the block and the attention core timed alone, per path, against
//! that path's in-run FMA peak (single thread, d = 64, 4 heads, FFN 256).
//!
//! `cargo run --release -p profiled-kernels --example breakdown [-- PATH...]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use profiled_kernels::attention::{Mask, OutputRows, Sequence, Workspace, mha_flops, mha_forward};
use profiled_kernels::block::{LayerTensors, LayerWeights, block_flops, block_forward};
use profiled_kernels::gemm::{Epilogue, PackedMatrix, Residual, WeightPrecision, gemm_ex};

use profiled_kernels::{Isa, probe};

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

/// Minimum of 15 timings of `f`, each repeated enough for ~2 ms.
fn median(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    let one = start.elapsed().as_secs_f64().max(1e-7);
    let inner = ((2e-3 / one) as usize).max(1);
    let mut v: Vec<f64> = (0..15)
        .map(|_| {
            let s = Instant::now();
            for _ in 0..inner {
                f();
            }
            s.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[0]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let isas: Vec<Isa> = if args.is_empty() {
        Isa::supported()
            .into_iter()
            .filter(|i| *i != Isa::Scalar)
            .collect()
    } else {
        args.iter()
            .map(|a| Isa::from_name(a))
            .collect::<Result<_, _>>()?
    };
    let s = 1.0 / (D as f32).sqrt();
    let (in_w, in_b, out_w, out_b) = (
        data(3 * D * D, 1, s),
        data(3 * D, 2, 0.1),
        data(D * D, 3, s),
        data(D, 4, 0.1),
    );
    let (g1, b1, g2, b2) = (
        data(D, 5, 0.1).iter().map(|v| v + 1.0).collect::<Vec<_>>(),
        data(D, 6, 0.1),
        data(D, 7, 0.1).iter().map(|v| v + 1.0).collect::<Vec<_>>(),
        data(D, 8, 0.1),
    );
    let (f1w, f1b, f2w, f2b) = (
        data(FFN * D, 9, s),
        data(FFN, 10, 0.1),
        data(D * FFN, 11, 1.0 / 16.0),
        data(D, 12, 0.1),
    );
    let t = LayerTensors {
        d: D,
        heads: HEADS,
        ffn: FFN,
        eps: 1e-5,
        in_proj_weight: &in_w,
        in_proj_bias: &in_b,
        out_proj_weight: &out_w,
        out_proj_bias: &out_b,
        ln1_weight: &g1,
        ln1_bias: &b1,
        ln2_weight: &g2,
        ln2_bias: &b2,
        ffn1_weight: &f1w,
        ffn1_bias: &f1b,
        ffn2_weight: &f2w,
        ffn2_bias: &f2b,
    };
    let layer = LayerWeights::new(&t, WeightPrecision::F32)?;
    if let Ok(what) = std::env::var("BREAKDOWN_ONLY") {
        // Fixed work for instruction-count profiling (callgrind).
        let isa = isas[0];
        let tl = if what.ends_with("56") { 56 } else { 16 };
        let n = 64 * tl;
        let x = data(n * D, 13, 1.0);
        let seqs = vec![Sequence::new(tl, Mask::None); 64];
        let mut out = vec![0.0f32; n * D];
        let mut ws = Workspace::new();
        for _ in 0..20 {
            if what.starts_with("mha") {
                mha_forward(
                    isa,
                    layer.attention(),
                    &x,
                    &seqs,
                    OutputRows::All,
                    &mut out,
                    &mut ws,
                    None,
                )?;
            } else {
                block_forward(
                    isa,
                    &layer,
                    &x,
                    &seqs,
                    OutputRows::All,
                    &mut out,
                    &mut ws,
                    None,
                )?;
            }
        }
        black_box(&out);
        return Ok(());
    }
    let wqkv = PackedMatrix::from_out_in(3 * D, D, &in_w, WeightPrecision::F32)?;
    let wo = PackedMatrix::from_out_in(D, D, &out_w, WeightPrecision::F32)?;
    let w1 = PackedMatrix::from_out_in(FFN, D, &f1w, WeightPrecision::F32)?;
    let w2 = PackedMatrix::from_out_in(D, FFN, &f2w, WeightPrecision::F32)?;
    for isa in isas {
        let peak = probe::fma_peak_gflops(isa, Duration::from_millis(300)) * 1e9;
        println!("{isa}: FMA peak {:.1} GFLOP/s", peak / 1e9);
        let row = |name: &str, flops: f64, secs: f64| {
            println!(
                "  {name:<28} {:>9.1} µs  {:>5.2} of peak",
                secs * 1e6,
                flops / peak / secs
            );
        };
        for (b, tl) in [(64usize, 16usize), (64, 56)] {
            let n = b * tl;
            let x = data(n * D, 13, 1.0);
            let seqs = vec![Sequence::new(tl, Mask::None); b];
            let mut out = vec![0.0f32; n * D];
            let mut qkv = vec![0.0f32; n * 3 * D];
            let mut hid = vec![0.0f32; n * FFN];
            let mut ws = Workspace::new();
            let fl = |k: usize, nn: usize| 2.0 * (n * k * nn) as f64;
            let tq = median(|| {
                let e = Epilogue {
                    bias: Some(&in_b),
                    ..Epilogue::default()
                };
                black_box(gemm_ex(isa, &x, n, &wqkv, e, &mut qkv).is_ok());
            });
            row(&format!("B{b} T{tl} qkv gemm"), fl(D, 3 * D), tq);
            let to = median(|| {
                let e = Epilogue {
                    bias: Some(&out_b),
                    residual: Residual::Add(&x),
                    ..Epilogue::default()
                };
                black_box(gemm_ex(isa, &x, n, &wo, e, &mut out).is_ok());
            });
            row(&format!("B{b} T{tl} out gemm (+res)"), fl(D, D), to);
            let th = median(|| {
                let e = Epilogue {
                    bias: Some(&f1b),
                    gelu: true,
                    ..Epilogue::default()
                };
                black_box(gemm_ex(isa, &x, n, &w1, e, &mut hid).is_ok());
            });
            row(&format!("B{b} T{tl} ffn1 gemm+gelu"), fl(D, FFN), th);
            let th2 = median(|| {
                let e = Epilogue {
                    bias: Some(&f1b),
                    ..Epilogue::default()
                };
                black_box(gemm_ex(isa, &x, n, &w1, e, &mut hid).is_ok());
            });
            row(&format!("B{b} T{tl} ffn1 gemm"), fl(D, FFN), th2);
            let mut gbuf = hid.clone();
            let tg = median(|| {
                profiled_kernels::activation::gelu(isa, &mut gbuf);
                black_box(&gbuf);
            });
            row(&format!("B{b} T{tl} gelu alone"), 0.0, tg);
            let t2 = median(|| {
                let e = Epilogue {
                    bias: Some(&f2b),
                    residual: Residual::Accumulate,
                    ..Epilogue::default()
                };
                black_box(gemm_ex(isa, &hid, n, &w2, e, &mut out).is_ok());
            });
            row(&format!("B{b} T{tl} ffn2 gemm (+acc)"), fl(FFN, D), t2);
            let mf = mha_flops(D, &seqs, OutputRows::All) as f64;
            let tm = median(|| {
                black_box(
                    mha_forward(
                        isa,
                        layer.attention(),
                        &x,
                        &seqs,
                        OutputRows::All,
                        &mut out,
                        &mut ws,
                        None,
                    )
                    .is_ok(),
                );
            });
            row(&format!("B{b} T{tl} mha"), mf, tm);
            let core = tm - tq - to;
            row(
                &format!("B{b} T{tl} mha − gemms (attn)"),
                mf - fl(D, 3 * D) - fl(D, D),
                core,
            );
            let (g, bb) = (&g1, &b1);
            let tln = median(|| {
                for (xr, or) in x.chunks_exact(D).zip(out.chunks_exact_mut(D)) {
                    black_box(
                        profiled_kernels::activation::layer_norm(isa, xr, g, bb, 1e-5, or).is_ok(),
                    );
                }
            });
            row(&format!("B{b} T{tl} layer_norm rows"), 0.0, tln);
            let lnx = out.clone();
            let mut out2 = vec![0.0f32; n * D];
            let tm2 = median(|| {
                black_box(
                    mha_forward(
                        isa,
                        layer.attention(),
                        &lnx,
                        &seqs,
                        OutputRows::All,
                        &mut out2,
                        &mut ws,
                        None,
                    )
                    .is_ok(),
                );
            });
            row(&format!("B{b} T{tl} mha on LN(x)"), mf, tm2);
            let tb = median(|| {
                black_box(
                    block_forward(
                        isa,
                        &layer,
                        &x,
                        &seqs,
                        OutputRows::All,
                        &mut out,
                        &mut ws,
                        None,
                    )
                    .is_ok(),
                );
            });
            row(
                &format!("B{b} T{tl} block"),
                block_flops(D, FFN, &seqs, OutputRows::All) as f64,
                tb,
            );
        }
    }
    Ok(())
}
