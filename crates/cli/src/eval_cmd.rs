//! `profilectl eval`: the leave-one-out evaluation protocol.

/// `println!` that ignores a closed stdout (e.g. `| head`) instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use profiled_train::eval::{self, EvalResult, ProtocolConfig, Split, Stage, baselines};
use profiled_train::{export, pipeline};

/// Arguments of `profilectl eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model to evaluate: a version folder (`models/<name>/<version>`) or a
    /// model folder (its highest version). Repeat for ablations / seeds.
    #[arg(long, required_unless_present = "baselines_only")]
    pub model: Vec<PathBuf>,
    /// Only the baselines (no model needed).
    #[arg(long, conflicts_with = "model")]
    pub baselines_only: bool,
    /// Dataset: a fetched name (e.g. `ml-100k`), a folder of atomic files, or
    /// `synthetic[:SEED]` / `synthetic-small[:SEED]` (the built-in generator).
    #[arg(long)]
    pub dataset: String,
    /// Folder of fetched datasets.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Evaluate the validation target instead of the test target.
    #[arg(long)]
    pub valid: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// Runs `profilectl eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let (ds, report) =
        profiled_train::atomic::resolve_dataset_with_report(&args.dataset, &args.data_dir)
            .with_context(|| format!("loading dataset `{}`", args.dataset))?;
    let split = Split::new(&ds, ProtocolConfig::default())?;
    let s = &split.stats;
    let stage = if args.valid {
        Stage::Valid
    } else {
        Stage::Test
    };
    say!(
        "dataset {}: {} users, {} items, {} interactions ({} bare users, {} bare items)",
        ds.name,
        ds.users.len(),
        ds.items.len(),
        ds.interactions.len(),
        report.bare_users,
        report.bare_items
    );
    say!(
        "protocol: rating ≥ {} drops {} ({} kept without rating), {}-core ({} rounds) keeps \
         {} interactions, {} users, {} items; {} users too short (< 3 events, not evaluated); \
         {} users evaluated on the {} target; baselines fitted on the events before it",
        split
            .config
            .min_rating
            .map_or_else(|| "-".to_string(), |r| r.to_string()),
        s.dropped_low_rating,
        s.kept_without_rating,
        split.config.core,
        s.core_rounds,
        s.interactions_kept,
        s.users_kept,
        s.items_kept,
        s.users_too_short,
        split.users.len(),
        if args.valid { "validation" } else { "test" }
    );
    let n_items = ds.items.len();
    let mut results: Vec<EvalResult> = Vec::new();
    for b in baselines::all(&split, n_items, stage) {
        results.push(eval::evaluate(&split, n_items, b.as_ref(), stage)?);
    }
    let mut names: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
    let mut model_info = serde_json::Map::new();
    // Ablation name → indexes into `results` (for mean ± std over seeds).
    let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for path in &args.model {
        let dir = export::resolve_version_dir(path)
            .with_context(|| format!("finding the model in {}", path.display()))?;
        let (model, meta) = export::load_version(&dir)
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        split
            .check_model(
                &ds,
                pipeline::split_record(&meta).as_ref(),
                export::saw_all_events(&meta),
            )
            .with_context(|| format!("refusing to evaluate {}", dir.display()))?;
        let ablation = meta
            .training
            .get("ablation")
            .and_then(|a| a.as_str())
            .unwrap_or("full")
            .replace('_', "-");
        let base = if ablation == "full" {
            "model".to_string()
        } else {
            format!("model-{ablation}")
        };
        // Same ablation twice (e.g. seeds): name by seed, else by count.
        let seed = meta.training.get("seed").and_then(|s| s.as_u64());
        let mut name = base.clone();
        if names.contains(&name)
            && let Some(seed) = seed
        {
            name = format!("{base}-seed{seed}");
        }
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        names.push(name.clone());
        groups.entry(base).or_default().push(results.len());
        let scorer = pipeline::ModelScorer::new(&name, &model, Some(&meta), &ds)?;
        results.push(eval::evaluate(&split, n_items, &scorer, stage)?);
        model_info.insert(
            name,
            serde_json::json!({
                "dir": dir.display().to_string(),
                "name": meta.name,
                "version": meta.version,
                "ablation": ablation,
                "seed": meta.training.get("seed"),
            }),
        );
    }
    print_table(&results);
    let summary = summarise(&results, &groups);
    for (name, g) in &summary {
        say!(
            "{name} over {} models: masked NDCG@{k} {:.4} ± {:.4}, HR@{k} {:.4} ± {:.4}, \
             MRR@{k} {:.4} ± {:.4}; unmasked NDCG@{k} {:.4} ± {:.4}",
            g.n,
            g.masked[1].0,
            g.masked[1].1,
            g.masked[0].0,
            g.masked[0].1,
            g.masked[2].0,
            g.masked[2].1,
            g.unmasked[1].0,
            g.unmasked[1].1,
            k = split.config.k,
        );
    }
    if args.json {
        say!(
            "{}",
            json_line(&results, &split, &ds.name, stage, model_info, &summary)
        );
    }
    Ok(())
}

fn print_table(results: &[EvalResult]) {
    let k = results.first().map(|r| r.k).unwrap_or(10);
    say!(
        "{:<28} {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}",
        "",
        "masked",
        "",
        "",
        "unmasked",
        "",
        ""
    );
    say!(
        "{:<28} {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}",
        "scorer",
        format!("HR@{k}"),
        format!("NDCG@{k}"),
        format!("MRR@{k}"),
        format!("HR@{k}"),
        format!("NDCG@{k}"),
        format!("MRR@{k}")
    );
    for r in results {
        say!(
            "{:<28} {:>9.4} {:>9.4} {:>9.4}   {:>9.4} {:>9.4} {:>9.4}",
            r.name,
            r.masked.hr,
            r.masked.ndcg,
            r.masked.mrr,
            r.unmasked.hr,
            r.unmasked.ndcg,
            r.unmasked.mrr
        );
    }
}

fn json_line(
    results: &[EvalResult],
    split: &Split,
    dataset: &str,
    stage: Stage,
    models: serde_json::Map<String, serde_json::Value>,
    summary: &[(String, Summary)],
) -> String {
    let metrics = |m: &eval::Metrics, k: usize| {
        serde_json::json!({
            format!("hr@{k}"): m.hr,
            format!("ndcg@{k}"): m.ndcg,
            format!("mrr@{k}"): m.mrr,
        })
    };
    let mut masked = serde_json::Map::new();
    let mut unmasked = serde_json::Map::new();
    for r in results {
        masked.insert(r.name.clone(), metrics(&r.masked, r.k));
        unmasked.insert(r.name.clone(), metrics(&r.unmasked, r.k));
    }
    serde_json::json!({
        "dataset": dataset,
        "protocol": split.protocol,
        "stage": match stage { Stage::Valid => "valid", Stage::Test => "test" },
        "users": split.users.len(),
        "items": split.items.len(),
        "users_too_short": split.stats.users_too_short,
        "models": models,
        "summary": summary
            .iter()
            .map(|(name, g)| {
                let k = split.config.k;
                let ms = |v: &[(f64, f64); 3]| {
                    serde_json::json!({
                        format!("hr@{k}"): {"mean": v[0].0, "std": v[0].1},
                        format!("ndcg@{k}"): {"mean": v[1].0, "std": v[1].1},
                        format!("mrr@{k}"): {"mean": v[2].0, "std": v[2].1},
                    })
                };
                (
                    name.clone(),
                    serde_json::json!({"n": g.n, "masked": ms(&g.masked), "unmasked": ms(&g.unmasked)}),
                )
            })
            .collect::<serde_json::Map<_, _>>(),
        "masked": masked,
        "unmasked": unmasked,
    })
    .to_string()
}

/// Mean and (sample) standard deviation of HR, NDCG, MRR over several models.
struct Summary {
    n: usize,
    /// (mean, std) of HR, NDCG, MRR.
    masked: [(f64, f64); 3],
    unmasked: [(f64, f64); 3],
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn summarise(
    results: &[EvalResult],
    groups: &std::collections::BTreeMap<String, Vec<usize>>,
) -> Vec<(String, Summary)> {
    let stats = |idx: &[usize], f: &dyn Fn(&EvalResult) -> eval::Metrics| {
        let ms: Vec<eval::Metrics> = idx.iter().filter_map(|&i| results.get(i)).map(f).collect();
        [
            mean_std(&ms.iter().map(|m| m.hr).collect::<Vec<_>>()),
            mean_std(&ms.iter().map(|m| m.ndcg).collect::<Vec<_>>()),
            mean_std(&ms.iter().map(|m| m.mrr).collect::<Vec<_>>()),
        ]
    };
    groups
        .iter()
        .filter(|(_, idx)| idx.len() > 1)
        .map(|(name, idx)| {
            (
                name.clone(),
                Summary {
                    n: idx.len(),
                    masked: stats(idx, &|r| r.masked),
                    unmasked: stats(idx, &|r| r.unmasked),
                },
            )
        })
        .collect()
}
