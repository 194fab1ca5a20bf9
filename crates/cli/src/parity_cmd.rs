//! `profilectl parity`: the serving encoder (`profiled-model` on the kernels)
//! against the trainer's candle forward, on every user of the model's
//! dataset and on every kernel path this CPU supports.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use profiled_kernels::Isa;
use profiled_model::{Encoder, LoadOptions, UserFeatures, Workspace, cosine};
use profiled_train::export;
use profiled_train::schema::dataset_inputs;
use profiled_train::synthetic::{SyntheticConfig, generate};

/// Arguments of `profilectl parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// A version folder, or a model folder (its latest version).
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset whose users are profiled (default: the one in model.json,
    /// `dataset.source`). Also `synthetic[:SEED]` and `synthetic-small[:SEED]`.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder of fetched datasets.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Users per forward batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Also run the explanation faithfulness check: mask the top-K tokens of
    /// each explanation method versus K random tokens and report how far the
    /// profile moves (0 = skip).
    #[arg(long, default_value_t = 0)]
    pub faithfulness: usize,
}

/// Loads a dataset by name: a fetched name or atomic-file folder, or the
/// synthetic generator (`synthetic[:SEED]` = ML-100K-sized, `synthetic-small[:SEED]`
/// = the test-sized configuration).
pub fn load_dataset(
    name: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<profiled_train::data::Dataset> {
    let seed_of = |rest: &str, default: u64| -> anyhow::Result<u64> {
        match rest.strip_prefix(':') {
            Some(s) => s
                .parse::<u64>()
                .with_context(|| format!("bad synthetic seed `{s}`")),
            None if rest.is_empty() => Ok(default),
            None => bail!("use `synthetic[:SEED]` or `synthetic-small[:SEED]`"),
        }
    };
    if let Some(rest) = name.strip_prefix("synthetic-small") {
        return Ok(generate(&SyntheticConfig::small(seed_of(rest, 7)?)));
    }
    if let Some(rest) = name.strip_prefix("synthetic") {
        return Ok(generate(&SyntheticConfig {
            seed: seed_of(rest, 7)?,
            ..SyntheticConfig::default()
        }));
    }
    Ok(profiled_train::atomic::resolve_dataset(name, data_dir)?)
}

/// Cosine statistics of one kernel path.
#[derive(Debug, Clone, Copy)]
struct PathStats {
    isa: Isa,
    min: f64,
    mean: f64,
    seconds: f64,
}

/// Runs `profilectl parity`.
pub fn run(args: ParityArgs) -> anyhow::Result<()> {
    let dir = export::resolve_version_dir(&args.model)?;
    let (model, meta) = export::load_version(&dir)?;
    let name = match &args.dataset {
        Some(n) => n.clone(),
        None => meta
            .dataset
            .get("source")
            .or_else(|| meta.dataset.get("name"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .context("model.json names no dataset (dataset.source); pass --dataset")?,
    };
    let ds =
        load_dataset(&name, &args.data_dir).with_context(|| format!("loading dataset `{name}`"))?;

    // Every user with every event of the dataset, time-sorted.
    let tk = model.tokenizer();
    let mut inputs: Vec<UserFeatures> = Vec::with_capacity(ds.users.len());
    let mut tokens = Vec::with_capacity(ds.users.len());
    let mut skipped = 0usize;
    for input in dataset_inputs(&model.schema, &ds) {
        let features = input.to_features();
        match tk.tokenize(&features) {
            Ok(t) => {
                tokens.push(t);
                inputs.push(features);
            }
            Err(_) => skipped += 1,
        }
    }
    if inputs.is_empty() {
        bail!("no user of `{name}` can be profiled by this model");
    }
    let t0 = Instant::now();
    let reference = model.profiles_vec(&tokens, args.batch.max(1))?;
    let candle_s = t0.elapsed().as_secs_f64();
    // Baseline: how alike two different users' profiles are (parity figures
    // mean something only when this is well below them).
    let pairs = reference.len().saturating_sub(1).max(1);
    let pairwise = reference
        .windows(2)
        .map(|w| cosine(&w[0], &w[1]))
        .sum::<f64>()
        / pairs as f64;

    let mut stats = Vec::new();
    for isa in Isa::supported() {
        let enc = Encoder::load_with(
            &dir,
            &LoadOptions {
                isa: Some(isa),
                verify_golden: true,
            },
        )
        .with_context(|| format!("loading {} with the {isa} kernels", dir.display()))?;
        let mut ws = Workspace::new();
        let (mut min, mut sum) = (f64::INFINITY, 0.0);
        let t0 = Instant::now();
        for (chunk, refs) in inputs
            .chunks(args.batch.max(1))
            .zip(reference.chunks(args.batch.max(1)))
        {
            let p = enc.forward_batch(chunk, &mut ws)?;
            for (i, r) in refs.iter().enumerate() {
                let c = cosine(p.row(i).context("missing profile")?, r);
                min = min.min(c);
                sum += c;
            }
        }
        stats.push(PathStats {
            isa,
            min,
            mean: sum / inputs.len() as f64,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let threshold = if meta.dtype == "f16" { 0.999 } else { 0.9999 };
    let min = stats.iter().map(|s| s.min).fold(f64::INFINITY, f64::min);
    let mean = stats.iter().map(|s| s.mean).sum::<f64>() / stats.len() as f64;
    println!(
        "parity of {} ({} weights) on {} users of {name} ({} skipped: no token), candle forward {:.2} s",
        dir.display(),
        meta.dtype,
        inputs.len(),
        skipped,
        candle_s
    );
    println!("baseline: mean cosine between consecutive users' profiles {pairwise:.4}");
    println!(
        "{:<10} {:>12} {:>12} {:>10}",
        "kernels", "min cosine", "mean cosine", "seconds"
    );
    for s in &stats {
        println!(
            "{:<10} {:>12.7} {:>12.7} {:>10.3}",
            s.isa.name(),
            s.min,
            s.mean,
            s.seconds
        );
    }
    let pass = min >= threshold;
    println!(
        "required min cosine ≥ {threshold} on every path: {}",
        if pass { "PASS" } else { "FAIL" }
    );
    let faith = if args.faithfulness > 0 {
        let enc = Encoder::load(&dir)?;
        let (rows, n) = enc.faithfulness(&inputs, args.faithfulness, 42)?;
        println!(
            "faithfulness: mean profile drop (1 − cosine) with the top-{} tokens of each method masked, {n} users",
            args.faithfulness
        );
        for (m, v) in &rows {
            println!("  {m:<18} {v:.4}");
        }
        Some((rows, n))
    } else {
        None
    };
    if args.json {
        let faith_json = faith.as_ref().map(|(rows, n)| {
            let mut m: serde_json::Map<String, serde_json::Value> = rows
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect();
            m.insert("users".into(), serde_json::json!(n));
            m.insert("k".into(), serde_json::json!(args.faithfulness));
            serde_json::Value::Object(m)
        });
        let paths: serde_json::Map<String, serde_json::Value> = stats
            .iter()
            .map(|s| {
                (
                    s.isa.name().to_string(),
                    serde_json::json!({"min_cosine": s.min, "mean_cosine": s.mean, "seconds": s.seconds}),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": dir,
                "dtype": meta.dtype,
                "dataset": name,
                "users": inputs.len(),
                "skipped": skipped,
                "min_cosine": min,
                "mean_cosine": mean,
                "threshold": threshold,
                "pairwise_mean_cosine": pairwise,
                "pass": pass,
                "paths": paths,
                "faithfulness": faith_json,
            })
        );
    }
    if !pass {
        bail!("parity failed: min cosine {min:.7} < {threshold}");
    }
    Ok(())
}
