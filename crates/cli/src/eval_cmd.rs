//! `profilectl eval`: the leave-one-out evaluation protocol.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use profiled_train::eval::{self, EvalResult, ProtocolConfig, Split, Stage, baselines};

/// Arguments of `profilectl eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model version folder (`models/<name>/<version>`) to evaluate.
    #[arg(long, required_unless_present = "baselines_only")]
    pub model: Option<PathBuf>,
    /// Only the baselines (no model needed).
    #[arg(long, conflicts_with = "model")]
    pub baselines_only: bool,
    /// Dataset: a fetched name (e.g. `ml-100k`) or a folder of atomic files.
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
    println!(
        "dataset {}: {} users, {} items, {} interactions ({} bare users, {} bare items)",
        ds.name,
        ds.users.len(),
        ds.items.len(),
        ds.interactions.len(),
        report.bare_users,
        report.bare_items
    );
    println!(
        "protocol: rating ≥ {:?} drops {}, {}-core ({} rounds) keeps {} interactions, \
         {} users, {} items; {} users too short (< 3 events, not evaluated); \
         {} users evaluated",
        split.config.min_rating,
        s.dropped_low_rating,
        split.config.core,
        s.core_rounds,
        s.interactions_kept,
        s.users_kept,
        s.items_kept,
        s.users_too_short,
        split.users.len()
    );
    let stage = if args.valid {
        Stage::Valid
    } else {
        Stage::Test
    };
    let n_items = ds.items.len();
    let mut results: Vec<EvalResult> = Vec::new();
    for b in baselines::all(&split, n_items, stage) {
        results.push(eval::evaluate(&split, n_items, b.as_ref(), stage)?);
    }
    if let Some(model) = &args.model {
        anyhow::bail!(
            "model evaluation of {} is not available yet",
            model.display()
        );
    }
    print_table(&results);
    if args.json {
        println!("{}", json_line(&results, &split, &ds.name, stage));
    }
    Ok(())
}

fn print_table(results: &[EvalResult]) {
    let k = results.first().map(|r| r.k).unwrap_or(10);
    println!(
        "{:<28} {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}",
        "", "masked", "", "", "unmasked", "", ""
    );
    println!(
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
        println!(
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

fn json_line(results: &[EvalResult], split: &Split, dataset: &str, stage: Stage) -> String {
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
        "masked": masked,
        "unmasked": unmasked,
    })
    .to_string()
}
