//! Encoder report: the serving encoder (`profiled-model` on the kernels)
//! against the trainer's candle forward on the same model, plus occlusion
//! explanations, with this machine's FMA peak measured in the same run.
//!
//! Model: by default a model trained here for one epoch on a synthetic
//! dataset (d = 64, 4 heads, 2 layers, FFN 256, 6 field tokens); users have
//! ≥ 50 events, so every profile reads 6 + 50 = 56 tokens. `--model DIR`
//! uses an existing version instead (its users are then synthetic too).
//! Prints a human table; the last line is one JSON object.
//!
//! On a CPU with AVX512_BF16 the `avx512bf16` row is the same encoder with
//! bf16 compute allowed ([`Encoder::set_bf16`]): its efficiency is against
//! its own in-run peak (the `vdpbf16ps` probe), `encoder_bf16_over_f32` is
//! the AVX-512 f32 time over the bf16 time at B = 64, and
//! `bf16_min_cosine` the smallest cosine between the two paths' profiles
//! of the 64 users.
//!
//! `cargo run --release -p profiled-benches --bin encoder-report [-- --model DIR]`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use profiled_benches::{load_average, median_time, us};
use profiled_kernels::gemm::WeightPrecision;
use profiled_kernels::{Isa, probe};
use profiled_model::{
    Encoder, ExplainOptions, LoadOptions, Method, Target, UserFeatures, Workspace,
};
use profiled_train::eval::{ProtocolConfig, Split};
use profiled_train::export;
use profiled_train::model::ModelConfig;
use profiled_train::pipeline::{self, RunInfo};
use profiled_train::schema::{FeatureConfig, ProfileInput, UserTokens, dataset_inputs};
use profiled_train::synthetic::{SyntheticConfig, generate};
use profiled_train::trainer::TrainOptions;

const BEHAVIOUR_TOKENS: usize = 50;

/// FLOPs (multiply-adds × 2 of every matrix product) of the pruned forward of
/// one user with `t` tokens of which `p` are field tokens: `layers − 1` full
/// layers, then K/V for all tokens and everything else only at the last
/// position, then the head. LayerNorm, softmax, GELU and embedding sums are
/// not counted (they are O(t·d), not O(t·d²)).
fn pruned_flops(t: usize, p: usize, d: usize, ffn: usize, layers: usize, d_out: usize) -> f64 {
    let (t, p, d, f) = (t as f64, p as f64, d as f64, ffn as f64);
    // Σ_i visible(i) for the prefix-visible + causal mask.
    let vis = p * p + (t * (t + 1.0) - p * (p + 1.0)) / 2.0;
    let full = 2.0 * t * d * 3.0 * d + 4.0 * d * vis + 2.0 * t * d * d + 4.0 * t * d * f;
    let last = 2.0 * t * d * 2.0 * d + 2.0 * d * d + 4.0 * d * t + 2.0 * d * d + 4.0 * d * f;
    (layers.saturating_sub(1) as f64) * full + last + 2.0 * d * d_out as f64
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model_arg = args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let load = load_average();
    // The f32 kernels of the active path (avx512bf16 runs the AVX-512 f32
    // kernels unless bf16 compute is allowed, which only its own row does).
    let isa = Isa::active().f32_path();

    // The dataset (users with ≥ 50 events) and, unless given, a model.
    let ds = generate(&SyntheticConfig {
        users: 160,
        items: 400,
        min_events: 60,
        mean_events: 70,
        latent_dim: 6,
        sequence_weight: 2.0,
        seed: 11,
    });
    let tmp = tempfile_dir()?;
    let dir = match model_arg {
        Some(d) => export::resolve_version_dir(&d)?,
        None => {
            eprintln!("training a one-epoch model on a synthetic dataset …");
            let split = Split::new(&ds, ProtocolConfig::default())?;
            let mut features = FeatureConfig::movielens();
            features.fields.retain(|f| f.name != "age");
            let opts = TrainOptions {
                model: ModelConfig::default(),
                features,
                epochs: 1,
                batch_size: 64,
                ..TrainOptions::default()
            };
            let info = RunInfo {
                name: "bench".into(),
                source: "synthetic".into(),
                threads: pipeline::tensor_threads(),
            };
            let (trained, meta) = pipeline::train_and_describe(&ds, &split, &opts, &info)?;
            pipeline::write(&tmp, &trained, meta, false)?.1
        }
    };
    let (cmodel, meta) = export::load_version(&dir)?;
    let enc = Encoder::load_with(
        &dir,
        &LoadOptions {
            isa: Some(isa),
            verify_golden: true,
        },
    )
    .context("loading the serving encoder")?;
    let cfg = &meta.architecture;
    let p = meta.schema.fields.len();

    // 64 users with their last ≥ 50 events (the model keeps the 50 most recent).
    let inputs: Vec<ProfileInput> = dataset_inputs(&meta.schema, &ds)
        .into_iter()
        .filter(|p| p.events.len() >= BEHAVIOUR_TOKENS)
        .take(64)
        .collect();
    anyhow::ensure!(
        inputs.len() == 64,
        "only {} users with ≥ 50 events",
        inputs.len()
    );
    let users: Vec<UserFeatures> = inputs.iter().map(ProfileInput::to_features).collect();
    let tk = cmodel.tokenizer();
    let tokens: Vec<UserTokens> = users
        .iter()
        .map(|u| tk.tokenize(u))
        .collect::<Result<_, _>>()?;
    let t = tokens[0].len();
    anyhow::ensure!(
        tokens
            .iter()
            .all(|x| x.len() == p + BEHAVIOUR_TOKENS.min(meta.schema.behaviour.max_events)),
        "users do not all have {p} + 50 tokens"
    );

    // The FMA peak is probed before and after the timings; the larger one is
    // used (a busy machine only ever lowers a probe, so the max is the honest
    // yardstick).
    let peak_before = probe::fma_peak_gflops(isa, Duration::from_millis(600));
    let bf16_isa = Isa::supported().contains(&Isa::Avx512Bf16);
    let bf16_peak_before = if bf16_isa {
        probe::fma_peak_gflops(Isa::Avx512Bf16, Duration::from_millis(600))
    } else {
        0.0
    };
    let flops = pruned_flops(t, p, cfg.d_model, cfg.ffn, cfg.layers, cfg.d_out);
    let min_total = Duration::from_millis(500);

    // Serving encoder on every path.
    let mut rows = Vec::new();
    let mut enc = enc;
    for path in Isa::supported() {
        enc.set_isa(path)?;
        if path == Isa::Avx512Bf16 {
            let p = enc.set_bf16(true)?;
            anyhow::ensure!(p == WeightPrecision::Bf16, "bf16 compute not taken: {p:?}");
        }
        let mut ws = Workspace::new();
        let b1 = median_time(20, 200, min_total, || {
            let _ = enc.forward_batch(&users[..1], &mut ws).map(|p| p.len());
        });
        let b64 = median_time(3, 40, 2 * min_total, || {
            let _ = enc.forward_batch(&users, &mut ws).map(|p| p.len());
        });
        rows.push((path, us(b1), us(b64) / 64.0));
    }
    // Parity of bf16 compute with the f32 path, the same 64 users.
    let bf16_min_cosine = if bf16_isa {
        let mut ws = Workspace::new();
        let bf = enc.forward_batch(&users, &mut ws)?;
        let bf: Vec<Vec<f32>> = (0..users.len())
            .map(|i| bf.row(i).map(<[f32]>::to_vec).context("bf16 row"))
            .collect::<anyhow::Result<_>>()?;
        enc.set_bf16(false)?;
        enc.set_isa(Isa::Avx512)?;
        let f = enc.forward_batch(&users, &mut ws)?;
        let mut min = f64::INFINITY;
        for (i, b) in bf.iter().enumerate() {
            let a = f.row(i).context("f32 row")?;
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            min = min.min(dot / (na * nb));
        }
        Some(min)
    } else {
        None
    };
    enc.set_bf16(false)?;
    enc.set_isa(isa)?;

    // B=64 by the number of tokens per kernel call (the batch is split into
    // chunks of whole users; smaller chunks keep activations in cache).
    let default_budget = enc.max_tokens_per_call();
    let choices = [usize::MAX, 2048, 1024, 512, 256];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); choices.len()];
    let mut ws = Workspace::new();
    // Interleaved (round-robin) so that load changes hit every choice alike.
    let t_end = std::time::Instant::now() + 4 * min_total;
    while std::time::Instant::now() < t_end || samples[0].len() < 15 {
        for (i, &budget) in choices.iter().enumerate() {
            enc.set_max_tokens_per_call(budget);
            let t0 = std::time::Instant::now();
            let _ = enc.forward_batch(&users, &mut ws).map(|p| p.len());
            samples[i].push(us(t0.elapsed()) / 64.0);
        }
    }
    let budgets: Vec<(usize, f64)> = choices
        .iter()
        .zip(samples.iter_mut())
        .map(|(&b, v)| {
            v.sort_by(f64::total_cmp);
            (b, v[v.len() / 2])
        })
        .collect();
    enc.set_max_tokens_per_call(default_budget);

    // Tokenization alone (part of the serving figures above).
    let mut tb = profiled_model::TokenBatch::new();
    let tok64 = median_time(3, 50, min_total, || {
        tb.clear();
        for u in &users {
            let _ = enc.tokenizer().push(u, &mut tb);
        }
    });

    // Candle (the trainer's forward; tokens precomputed, so it is not charged
    // for tokenization while the serving figures are).
    let refs: Vec<&UserTokens> = tokens.iter().collect();
    let candle_b1 = median_time(3, 20, min_total, || {
        let _ = cmodel.profiles(&refs[..1]);
    });
    let candle_b64 = median_time(1, 5, min_total, || {
        let _ = cmodel.profiles(&refs);
    });

    // Occlusion explanations of one user.
    let mut ws = Workspace::new();
    let groups_opts = ExplainOptions {
        tokens: false,
        max_tokens: 0,
    };
    let groups = median_time(5, 50, min_total, || {
        let _ = enc.explain_in(
            &users[0],
            &Target::Profile,
            Method::Occlusion,
            &groups_opts,
            &mut ws,
        );
    });
    let all = ExplainOptions::default();
    let tok = median_time(3, 20, min_total, || {
        let _ = enc.explain_in(
            &users[0],
            &Target::Profile,
            Method::Occlusion,
            &all,
            &mut ws,
        );
    });
    let variants = enc
        .explain_in(
            &users[0],
            &Target::Profile,
            Method::Occlusion,
            &all,
            &mut ws,
        )?
        .variants;

    let peak_after = probe::fma_peak_gflops(isa, Duration::from_millis(600));
    let peak = peak_before.max(peak_after);
    let bf16_peak = if bf16_isa {
        bf16_peak_before.max(probe::fma_peak_gflops(
            Isa::Avx512Bf16,
            Duration::from_millis(600),
        ))
    } else {
        0.0
    };
    // Each path against its own peak.
    let own_peak = |p: Isa| {
        if p == Isa::Avx512Bf16 {
            bf16_peak
        } else {
            peak
        }
    };
    let bf16_row = rows.iter().copied().find(|r| r.0 == Isa::Avx512Bf16);
    let (_, b1_us, b64_per_user) = rows
        .iter()
        .copied()
        .find(|r| r.0 == isa)
        .context("active path not measured")?;
    let efficiency = flops / (peak * 1e3) / b64_per_user;
    let candle_b1_us = us(candle_b1);
    let candle_b64_per_user = us(candle_b64) / 64.0;

    println!(
        "encoder-report: d={} heads={} layers={} ffn={} d_out={}, {} tokens/user ({} fields + {} events), {} weights",
        cfg.d_model,
        cfg.heads,
        cfg.layers,
        cfg.ffn,
        cfg.d_out,
        t,
        p,
        t - p,
        meta.dtype
    );
    println!(
        "machine: isa {isa}, FMA peak {peak:.1} GFLOP/s (in-run, best of {peak_before:.1} before / {peak_after:.1} after the timings), load average {}",
        load.map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
            .unwrap_or_else(|| "n/a".into())
    );
    println!(
        "pruned forward floor: {:.2} MFLOP/user = {:.1} µs/user at peak",
        flops / 1e6,
        flops / (peak * 1e3)
    );
    println!(
        "{:<10} {:>10} {:>16} {:>12}",
        "kernels", "B=1 µs", "B=64 µs/user", "efficiency"
    );
    for (path, b1, b64) in &rows {
        println!(
            "{:<10} {:>10.1} {:>16.1} {:>12.2}",
            path.name(),
            b1,
            b64,
            flops / (own_peak(*path) * 1e3) / b64
        );
    }
    if let (Some((_, bb1, bb64)), Some(c)) = (bf16_row, bf16_min_cosine) {
        println!(
            "bf16 compute (avx512bf16 row, bf16 dot peak {bf16_peak:.1} GFLOP/s): B=1 {bb1:.1} µs, \
             B=64 {bb64:.1} µs/user, ×{:.2} the {isa} f32 time at B=64; min cosine to f32 over \
             64 users {c:.6}",
            b64_per_user / bb64
        );
    }
    println!(
        "{:<10} {:>10.1} {:>16.1}   (×{:.1} / ×{:.1} slower than {isa})",
        "candle",
        candle_b1_us,
        candle_b64_per_user,
        candle_b1_us / b1_us,
        candle_b64_per_user / b64_per_user
    );
    println!(
        "B=64 µs/user by tokens per kernel call: {}",
        budgets
            .iter()
            .map(|(b, t)| {
                let b = if *b == usize::MAX {
                    "all".to_string()
                } else {
                    b.to_string()
                };
                format!("{b}: {t:.1}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "tokenization alone: {:.2} µs/user (included in the figures above)",
        us(tok64) / 64.0
    );
    println!(
        "occlusion: groups {:.1} µs, every token ({variants} variants in one batch) {:.1} µs",
        us(groups),
        us(tok)
    );
    println!(
        "{}",
        serde_json::json!({
            "isa": isa.name(),
            "fma_peak_gflops": peak,
            "load_average": load,
            "tokens": t,
            "mflop_per_user": flops / 1e6,
            "b1_us": b1_us,
            "b64_us_per_user": b64_per_user,
            "b64_efficiency": efficiency,
            "candle_b1_us": candle_b1_us,
            "candle_b64_us_per_user": candle_b64_per_user,
            "speedup_b1": candle_b1_us / b1_us,
            "speedup_b64": candle_b64_per_user / b64_per_user,
            "tokenize_us_per_user": us(tok64) / 64.0,
            "explain_occlusion_groups_us": us(groups),
            "explain_occlusion_tokens_us": us(tok),
            "explain_occlusion_variants": variants,
            "paths": rows.iter().map(|(p, b1, b64)| (p.name().to_string(), serde_json::json!({"b1_us": b1, "b64_us_per_user": b64, "b64_efficiency_own_peak": flops / (own_peak(*p) * 1e3) / b64}))).collect::<serde_json::Map<_, _>>(),
            "bf16_dot_peak_gflops": bf16_isa.then_some(bf16_peak),
            "encoder_bf16_over_f32": bf16_row.map(|r| b64_per_user / r.2),
            "bf16_b1_us": bf16_row.map(|r| r.1),
            "bf16_b64_us_per_user": bf16_row.map(|r| r.2),
            "bf16_min_cosine": bf16_min_cosine,
        })
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// A fresh temporary folder under the system temp dir (kept small; removed at exit).
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("encoder-report-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
