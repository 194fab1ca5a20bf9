//! `profilectl train`, `profilectl export` and `profilectl inspect`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use profiled_train::eval::{ProtocolConfig, Split};
use profiled_train::export;
use profiled_train::model::ModelConfig;
use profiled_train::pipeline::{self, RunInfo};
use profiled_train::schema::FeatureConfig;
use profiled_train::synthetic::{SyntheticConfig, generate};
use profiled_train::trainer::{Ablation, TrainOptions};

/// Model ablations (see `docs/model-format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AblationArg {
    /// Every field of the feature config.
    Full,
    /// Behaviour tokens only.
    BehaviourOnly,
    /// Behaviour + demographics.
    Demographics,
    /// Behaviour + demographics + preferences.
    Preferences,
    /// Full model with each user's sequence order shuffled.
    Shuffled,
}

impl From<AblationArg> for Ablation {
    fn from(a: AblationArg) -> Self {
        match a {
            AblationArg::Full => Ablation::Full,
            AblationArg::BehaviourOnly => Ablation::BehaviourOnly,
            AblationArg::Demographics => Ablation::Demographics,
            AblationArg::Preferences => Ablation::Preferences,
            AblationArg::Shuffled => Ablation::Shuffled,
        }
    }
}

/// Arguments of `profilectl train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset: a fetched name (`ml-100k`), a folder of RecBole atomic files,
    /// or `synthetic[:SEED]` for the built-in generator.
    #[arg(long)]
    pub dataset: String,
    /// Folder of fetched datasets.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Model folder (`models/<name>`); the version is written inside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of initialisation, dropout and sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Tensor threads (re-runs itself with RAYON_NUM_THREADS set when needed).
    /// Default 1: candle's CPU pool spin-waits at every op, and with these
    /// small matrices one thread is several times faster than two on a busy
    /// 2-core machine. Results are bit-identical across thread counts.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Maximum epochs (early stopping on validation NDCG@10 usually ends sooner).
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Epochs without improvement before stopping.
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    /// Windows per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Attention heads (2–4 for d = 64).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Transformer layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Dropout while training.
    #[arg(long, default_value_t = 0.2)]
    pub dropout: f64,
    /// Softmax temperature (score = cosine / temperature).
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
    /// Train on every event (the served model); such a model cannot be evaluated.
    #[arg(long)]
    pub all_events: bool,
    /// Keep already-seen items in the training softmax (default: excluded,
    /// like the history-masked evaluation).
    #[arg(long)]
    pub no_mask_seen: bool,
    /// Stop training after this many seconds, keeping the best validated
    /// weights (0 = no budget). Keeps `train` under 5 minutes on a busy machine.
    #[arg(long, default_value_t = 240.0)]
    pub time_budget: f64,
    /// Ablation.
    #[arg(long, value_enum, default_value = "full")]
    pub ablation: AblationArg,
    /// Column → field mapping (JSON `FeatureConfig`); MovieLens defaults otherwise.
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Store the weights as f16.
    #[arg(long)]
    pub f16: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the final summary as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `profilectl export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A version folder, or a model folder (its latest version).
    #[arg(long)]
    pub model: PathBuf,
    /// Write the weights as f16 (otherwise f32).
    #[arg(long)]
    pub f16: bool,
}

/// Arguments of `profilectl inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A version folder, or a model folder (its latest version).
    #[arg(long)]
    pub model: PathBuf,
    /// Print model.json without the vocabularies and golden examples as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Re-runs this process with `RAYON_NUM_THREADS=n` unless already set so.
/// Returns `Some(exit code)` when the child ran.
fn reexec_with_threads(n: usize) -> anyhow::Result<Option<i32>> {
    if n == 0 {
        bail!("--threads must be ≥ 1");
    }
    if std::env::var("RAYON_NUM_THREADS").ok().as_deref() == Some(n.to_string().as_str()) {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("cannot find the profilectl executable")?;
    // The child handles ctrl-c; the parent only waits.
    let _ = ctrlc::set_handler(|| {});
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("RAYON_NUM_THREADS", n.to_string())
        .status()
        .context("cannot re-run profilectl with RAYON_NUM_THREADS")?;
    Ok(Some(status.code().unwrap_or(1)))
}

fn load_dataset(args: &TrainArgs) -> anyhow::Result<profiled_train::data::Dataset> {
    if let Some(rest) = args.dataset.strip_prefix("synthetic") {
        let seed = match rest.strip_prefix(':') {
            Some(s) => s
                .parse::<u64>()
                .with_context(|| format!("bad synthetic seed `{s}`"))?,
            None if rest.is_empty() => 7,
            None => bail!("use `synthetic` or `synthetic:SEED`"),
        };
        return Ok(generate(&SyntheticConfig {
            seed,
            ..SyntheticConfig::default()
        }));
    }
    Ok(profiled_train::atomic::resolve_dataset(
        &args.dataset,
        &args.data_dir,
    )?)
}

/// Runs `profilectl train`.
pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(code) = reexec_with_threads(args.threads)? {
        std::process::exit(code);
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond ctrl-c: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\nctrl-c: finishing the current batch and writing the best weights so far");
        })
        .context("cannot install the ctrl-c handler")?;
    }
    let features = match &args.features {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str::<FeatureConfig>(&text)
                .with_context(|| format!("{}: not a feature config", p.display()))?
        }
        None => FeatureConfig::movielens(),
    };
    let t0 = std::time::Instant::now();
    let ds = load_dataset(&args)?;
    let split = Split::new(&ds, ProtocolConfig::default())?;
    eprintln!(
        "dataset {}: {} users, {} items, {} events → protocol split: {} users, {} items, {} events ({} users too short)",
        ds.name,
        ds.users.len(),
        ds.items.len(),
        ds.interactions.len(),
        split.users.len(),
        split.items.len(),
        split.event_count(),
        split.stats.users_too_short
    );
    let opts = TrainOptions {
        model: ModelConfig {
            heads: args.heads,
            layers: args.layers,
            dropout: args.dropout,
            temperature: args.temperature,
            ..ModelConfig::default()
        },
        features,
        ablation: args.ablation.into(),
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        patience: args.patience,
        seed: args.seed,
        all_events: args.all_events,
        mask_seen_in_loss: !args.no_mask_seen,
        progress: !args.quiet,
        stop: Some(stop.clone()),
        time_budget: (args.time_budget > 0.0).then_some(args.time_budget),
    };
    let name = args
        .out
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let info = RunInfo {
        name,
        source: args.dataset.clone(),
        threads: candle_threads(),
    };
    let (trained, meta) = pipeline::train_and_describe(&ds, &split, &opts, &info)?;
    let metrics = meta.metrics.clone();
    let (version, dir) = pipeline::write(&args.out, &trained, meta, args.f16)?;
    let secs = t0.elapsed().as_secs_f64();
    let r = &trained.report;
    eprintln!(
        "wrote {} (version {version}){}: {} parameters, best epoch {}/{}, {:.1} s total",
        dir.display(),
        if r.interrupted {
            ", interrupted"
        } else if r.time_budget_hit {
            ", time budget reached"
        } else {
            ""
        },
        r.parameters,
        r.best_epoch,
        r.epochs.len(),
        secs
    );
    for stage in ["valid", "test"] {
        if let Some(m) = metrics.get(stage) {
            eprintln!(
                "{stage:>5}: masked NDCG@10 {:.4} HR@10 {:.4} MRR@10 {:.4} | unmasked NDCG@10 {:.4} HR@10 {:.4}",
                num(m, "masked", "ndcg@10"),
                num(m, "masked", "hr@10"),
                num(m, "masked", "mrr@10"),
                num(m, "unmasked", "ndcg@10"),
                num(m, "unmasked", "hr@10"),
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "dir": dir,
                "version": version,
                "seconds": secs,
                "threads": info.threads,
                "interrupted": r.interrupted,
                "best_epoch": r.best_epoch,
                "metrics": metrics,
            })
        );
    }
    Ok(())
}

fn num(m: &serde_json::Value, a: &str, b: &str) -> f64 {
    m.get(a)
        .and_then(|x| x.get(b))
        .and_then(|x| x.as_f64())
        .unwrap_or(f64::NAN)
}

fn candle_threads() -> usize {
    pipeline::tensor_threads()
}

/// Runs `profilectl export`: re-writes a version as a new version (e.g. f16).
pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let dir = export::resolve_version_dir(&args.model)?;
    let (model, meta) = export::load_version(&dir)?;
    let root = dir
        .parent()
        .map(Path::to_path_buf)
        .context("the version folder has no parent")?;
    let (version, out) = export::write_version(&root, &model, meta, args.f16)?;
    eprintln!(
        "wrote {} (version {version}, {})",
        out.display(),
        if args.f16 { "f16" } else { "f32" }
    );
    Ok(())
}

/// Runs `profilectl inspect`.
pub fn run_inspect(args: InspectArgs) -> anyhow::Result<()> {
    let dir = export::resolve_version_dir(&args.model)?;
    let (model, meta) = export::load_version(&dir)?;
    if args.json {
        let mut v = serde_json::to_value(&meta)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("golden");
            o.remove("schema");
        }
        println!("{v}");
        return Ok(());
    }
    println!("{} version {} ({})", meta.name, meta.version, dir.display());
    println!(
        "  {} parameters, dtype {}, d={} heads={} layers={} ffn={} d_out={}",
        model.parameter_count(),
        meta.dtype,
        meta.architecture.d_model,
        meta.architecture.heads,
        meta.architecture.layers,
        meta.architecture.ffn,
        meta.architecture.d_out
    );
    println!(
        "  fields: {}",
        meta.schema
            .fields
            .iter()
            .map(|f| format!("{} ({:?})", f.name, f.group))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  items {}, genres {}, max events {}, golden examples {}",
        meta.schema.items.ids.len(),
        meta.schema.genres.len(),
        meta.schema.behaviour.max_events,
        meta.golden.len()
    );
    println!("  split: {}", meta.split);
    println!("  metrics: {}", meta.metrics);
    Ok(())
}
