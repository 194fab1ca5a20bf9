//! Kernel report: this machine's single-core FMA peak and memory read
//! bandwidth, then the fused attention, the whole encoder block and the f16
//! scan measured against them, on every supported path. Prints a human
//! table; the last line is one JSON object (figures of the active path's
//! f32 kernels, plus a `bf16` object when the CPU has AVX512_BF16).
//!
//! The `avx512bf16` row runs the same block with its weights packed as bf16
//! (`vdpbf16ps` GEMMs) and is judged against its own in-run peak, the bf16
//! dot-product throughput; the f32 rows against the best FP32 FMA peak.
//! The scan is judged against the best of the bandwidth probe's access
//! patterns (`probe::mem_read`).
//!
//! `cargo run --release -p profiled-benches --bin kernels-report`

use std::time::Duration;

use anyhow::Context;
use profiled_benches::{SplitMix, load_average, median_time, us};
use profiled_kernels::attention::{Mask, OutputRows, Sequence, Workspace, mha_forward};
use profiled_kernels::block::{LayerTensors, LayerWeights, block_forward};
use profiled_kernels::gemm::WeightPrecision;
use profiled_kernels::{Isa, f16, probe, vector};

const D: usize = 64;
const HEADS: usize = 4;
const FFN: usize = 256;

/// FLOPs of QKV projection + attention (unmasked) + output projection,
/// as counted by the kernel crate.
fn mha_flops(b: usize, t: usize) -> f64 {
    let seqs = vec![Sequence::new(t, Mask::None); b];
    profiled_kernels::attention::mha_flops(D, &seqs, OutputRows::All) as f64
}

/// FLOPs of the whole block: mha + the two feed-forward GEMMs.
fn block_flops(b: usize, t: usize) -> f64 {
    let seqs = vec![Sequence::new(t, Mask::None); b];
    profiled_kernels::block::block_flops(D, FFN, &seqs, OutputRows::All) as f64
}

fn model(precision: WeightPrecision) -> anyhow::Result<LayerWeights> {
    let mut rng = SplitMix::new(42);
    let s = 1.0 / (D as f32).sqrt();
    let in_w = rng.vec(3 * D * D, s);
    let in_b = rng.vec(3 * D, 0.02);
    let out_w = rng.vec(D * D, s);
    let out_b = rng.vec(D, 0.02);
    let ln1w: Vec<f32> = (0..D).map(|_| 1.0 + rng.uniform(0.1)).collect();
    let ln1b = rng.vec(D, 0.1);
    let ln2w: Vec<f32> = (0..D).map(|_| 1.0 + rng.uniform(0.1)).collect();
    let ln2b = rng.vec(D, 0.1);
    let f1w = rng.vec(FFN * D, s);
    let f1b = rng.vec(FFN, 0.02);
    let f2w = rng.vec(D * FFN, 1.0 / (FFN as f32).sqrt());
    let f2b = rng.vec(D, 0.02);
    let t = LayerTensors {
        d: D,
        heads: HEADS,
        ffn: FFN,
        eps: 1e-5,
        in_proj_weight: &in_w,
        in_proj_bias: &in_b,
        out_proj_weight: &out_w,
        out_proj_bias: &out_b,
        ln1_weight: &ln1w,
        ln1_bias: &ln1b,
        ln2_weight: &ln2w,
        ln2_bias: &ln2b,
        ffn1_weight: &f1w,
        ffn1_bias: &f1b,
        ffn2_weight: &f2w,
        ffn2_bias: &f2b,
    };
    Ok(LayerWeights::new(&t, precision)?)
}

/// The kernel under test: one call over a ragged batch.
type Forward = fn(
    Isa,
    &LayerWeights,
    &[f32],
    &[Sequence],
    &mut [f32],
    &mut Workspace,
) -> Result<(), profiled_kernels::KernelError>;

fn mha(
    isa: Isa,
    l: &LayerWeights,
    x: &[f32],
    s: &[Sequence],
    out: &mut [f32],
    ws: &mut Workspace,
) -> Result<(), profiled_kernels::KernelError> {
    mha_forward(isa, l.attention(), x, s, OutputRows::All, out, ws, None)
}

fn block(
    isa: Isa,
    l: &LayerWeights,
    x: &[f32],
    s: &[Sequence],
    out: &mut [f32],
    ws: &mut Workspace,
) -> Result<(), profiled_kernels::KernelError> {
    block_forward(isa, l, x, s, OutputRows::All, out, ws, None)
}

/// Median time of `f` over `b` unmasked sequences of `t` tokens (one
/// checked call first, so the timed calls cannot fail on shapes).
fn time_forward(
    f: Forward,
    isa: Isa,
    layer: &LayerWeights,
    b: usize,
    t: usize,
    reps: usize,
) -> anyhow::Result<Duration> {
    let x = SplitMix::new(7).vec(b * t * D, 1.0);
    let seqs = vec![Sequence::new(t, Mask::None); b];
    let mut out = vec![0.0f32; b * t * D];
    let mut ws = Workspace::new();
    f(isa, layer, &x, &seqs, &mut out, &mut ws)?;
    Ok(median_time(3, reps, Duration::from_millis(300), || {
        let r = f(isa, layer, &x, &seqs, &mut out, &mut ws);
        std::hint::black_box(r.is_ok());
        std::hint::black_box(&out);
    }))
}

/// Scans 1M × 64 f16 rows (row-major) against one query; returns GB/s.
fn scan_gbps(isa: Isa, rows: &[f16], query: &[f32], out: &mut [f32]) -> anyhow::Result<f64> {
    vector::dot_f16_rows(isa, rows, D, query, out)?;
    let t = median_time(1, 7, Duration::from_millis(500), || {
        let r = vector::dot_f16_rows(isa, rows, D, query, out);
        std::hint::black_box(r.is_ok());
        std::hint::black_box(&out);
    });
    Ok((rows.len() * 2) as f64 / t.as_secs_f64() / 1e9)
}

fn main() -> anyhow::Result<()> {
    let selection = Isa::selection();
    let active = selection.isa;
    let load_before = load_average();
    println!("profiled kernels report");
    println!(
        "active path: {active} (detected {}; PROFILED_KERNELS={})",
        selection.detected,
        selection.requested.as_deref().unwrap_or("unset")
    );
    if let Some(e) = &selection.rejected {
        println!("note: PROFILED_KERNELS ignored: {e}");
    }

    // In-run baselines.
    let mut peaks = Vec::new();
    for isa in Isa::supported() {
        peaks.push((isa, probe::fma_peak_gflops(isa, Duration::from_millis(600))));
    }
    // The f32 paths are judged against the best FP32 FMA peak; the bf16
    // path's probe is its `vdpbf16ps` peak, a different yardstick.
    let peak = peaks
        .iter()
        .filter(|p| p.0 != Isa::Avx512Bf16)
        .map(|p| p.1)
        .fold(0.0f64, f64::max);
    let patterns = probe::mem_read(512 << 20, 5);
    let bw = probe::best_read(&patterns);
    println!();
    println!("baselines (single core)");
    for (isa, g) in &peaks {
        let what = if *isa == Isa::Avx512Bf16 {
            "bf16 dot"
        } else {
            "FMA peak"
        };
        println!("  {what} {isa:<11} {g:8.1} GFLOP/s");
    }
    for (p, g) in &patterns {
        println!("  memory read {:<18} {g:8.1} GB/s (512 MiB)", p.name());
    }
    println!("  memory read best               {bw:8.1} GB/s");

    let m = model(WeightPrecision::F32)?;
    let m_bf16 = model(WeightPrecision::Bf16)?;
    let mut rng = SplitMix::new(3);
    let n_rows = 1 << 20;
    let rows: Vec<f16> = (0..n_rows * D)
        .map(|_| f16::from_f32(rng.uniform(1.0)))
        .collect();
    let query = rng.vec(D, 1.0);
    let mut scores = vec![0.0f32; n_rows];

    println!();
    println!(
        "{:<10} {:>12} {:>12} {:>7} {:>14} {:>7} {:>9} {:>12} {:>7}",
        "path",
        "mha b1 t16",
        "mha b64 t16",
        "eff",
        "block b64 t56",
        "eff",
        "own-peak",
        "f16 scan",
        "eff"
    );
    let mut figures = Vec::new();
    for isa in Isa::supported() {
        // The bf16 path: the same block with bf16 weights, against its own peak.
        let (layer, yardstick) = if isa == Isa::Avx512Bf16 {
            let own = peaks.iter().find(|p| p.0 == isa).map_or(peak, |p| p.1);
            (&m_bf16, own)
        } else {
            (&m, peak)
        };
        let mha1 = time_forward(mha, isa, layer, 1, 16, 30)?;
        let mha64 = time_forward(mha, isa, layer, 64, 16, 30)?;
        let blk = time_forward(block, isa, layer, 64, 56, 20)?;
        let gbps = scan_gbps(isa, &rows, &query, &mut scores)?;
        let mha_eff = mha_flops(64, 16) / (yardstick * 1e9) / mha64.as_secs_f64();
        let blk_eff = block_flops(64, 56) / (yardstick * 1e9) / blk.as_secs_f64();
        let scan_eff = gbps / bw;
        let own_peak = peaks.iter().find(|p| p.0 == isa).map_or(peak, |p| p.1);
        let own_eff = block_flops(64, 56) / (own_peak * 1e9) / blk.as_secs_f64();
        println!(
            "{:<10} {:>9.1} µs {:>9.1} µs {:>7.2} {:>11.1} µs {:>7.2} {:>9.2} {:>7.1} GB/s {:>7.2}",
            isa.name(),
            us(mha1),
            us(mha64),
            mha_eff,
            us(blk),
            blk_eff,
            own_eff,
            gbps,
            scan_eff
        );
        figures.push((isa, mha1, mha64, mha_eff, blk, blk_eff, gbps, scan_eff));
    }
    println!();
    println!(
        "FLOP floors: mha = B·(2·T·d·3d + 4·T²·d + 2·T·d²), block = mha + B·4·T·d·ffn; \
         efficiency = floor ÷ best measured FP32 FMA peak ({peak:.1} GFLOP/s) ÷ time \
         (avx512bf16: bf16 weights, ÷ its own bf16 dot peak); \
         own-peak = block efficiency against that path's own peak; \
         scan efficiency = GB/s ÷ best read pattern ({bw:.1} GB/s)"
    );
    let best_block = figures
        .iter()
        .filter(|f| f.0 != Isa::Avx512Bf16)
        .map(|f| f.4)
        .min()
        .context("no kernel path ran")?;
    if let Some(p) = figures.iter().find(|f| f.0 == Isa::Portable) {
        println!(
            "portable path: block {:.2}× the best path's time",
            p.4.as_secs_f64() / best_block.as_secs_f64()
        );
    }
    let load_after = load_average();
    println!(
        "load average before/after: {:?} / {:?}",
        load_before.map(|l| l[0]),
        load_after.map(|l| l[0])
    );
    // The headline figures are the active path's f32 kernels.
    let f = figures
        .iter()
        .find(|f| f.0 == active.f32_path())
        .context("active path did not run")?;
    let bf16 = figures.iter().find(|f| f.0 == Isa::Avx512Bf16).map(|b| {
        let own = peaks
            .iter()
            .find(|p| p.0 == Isa::Avx512Bf16)
            .map_or(0.0, |p| p.1);
        serde_json::json!({
            "dot_peak_gflops": own,
            "mha_b1_t16_us": us(b.1),
            "mha_b64_t16_us": us(b.2),
            "mha_b64_t16_efficiency": b.3,
            "block_b64_t56_us": us(b.4),
            "block_b64_t56_efficiency": b.5,
            "block_bf16_over_f32": f.4.as_secs_f64() / b.4.as_secs_f64(),
        })
    });
    let portable_ratio = figures
        .iter()
        .find(|f| f.0 == Isa::Portable)
        .map(|p| p.4.as_secs_f64() / best_block.as_secs_f64());
    println!(
        "{}",
        serde_json::json!({
            "isa": active.f32_path().name(),
            "fma_peak_gflops": peak,
            "mem_read_gbps": bw,
            "mem_read_patterns_gbps": patterns.iter().map(|(p, g)| (p.name().to_string(), serde_json::json!(g))).collect::<serde_json::Map<_, _>>(),
            "mha_b1_t16_us": us(f.1),
            "mha_b64_t16_us": us(f.2),
            "mha_b64_t16_efficiency": f.3,
            "block_b64_t56_us": us(f.4),
            "block_b64_t56_efficiency": f.5,
            "f16_dot_scan_gbps": f.6,
            "f16_dot_scan_efficiency": f.7,
            "portable_block_slowdown": portable_ratio,
            "bf16": bf16,
            "load_avg_1m": load_after.map(|l| l[0]),
        })
    );
    Ok(())
}
