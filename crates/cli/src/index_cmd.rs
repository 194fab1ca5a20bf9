//! `profilectl index build`: the embedding indexes of a model version.
//!
//! Writes `items.index` (the model's item vectors, ids = the dataset's item
//! ids, attribute `genre` plus the items' categorical / integral fields such
//! as `release_year`) and `users.index` (the serving encoder's profiles of
//! the dataset's users from their fields and full history, attributes from
//! the users' categorical fields plus `age_bucket`) into the version
//! directory, next to `model.json`, under the names `profiled-store` loads
//! (`generation::ITEMS_INDEX` / `USERS_INDEX`), plus HNSW sidecars
//! (`*.index.hnsw`) unless `--no-ann`. Published versions are immutable: an
//! existing index or sidecar is never overwritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use profiled_index::{IndexBuilder, IndexFile, ann};
use profiled_model::{Encoder, LoadOptions, UserFeatures};
use profiled_store::generation::{ITEMS_INDEX, USERS_INDEX};
use profiled_train::data::{Dataset, FieldValue};
use profiled_train::export;
use profiled_train::schema::{EventInput, FeatureValue, ProfileInput};

use crate::parity_cmd::{load_dataset, to_features};

/// `profilectl index …`
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Build `items.index` and `users.index` (+ ANN sidecars) in a model version directory.
    Build(IndexBuildArgs),
}

/// Arguments of `profilectl index build`.
#[derive(Debug, Args)]
pub struct IndexBuildArgs {
    /// A version folder, or a model folder (its latest version).
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset whose items and users are indexed: a fetched name (`ml-100k`),
    /// an atomic-file folder, or `synthetic[:SEED]` / `synthetic-small[:SEED]`.
    #[arg(long)]
    pub dataset: String,
    /// Folder of fetched datasets.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Skip the HNSW sidecars (exact search only).
    #[arg(long)]
    pub no_ann: bool,
    /// Worker threads for profiles and ANN construction (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `profilectl index …`.
pub fn run(cmd: IndexCommand) -> anyhow::Result<()> {
    match cmd {
        IndexCommand::Build(args) => run_build(args),
    }
}

/// Bucket of an age in years (the MovieLens-1M convention).
pub fn age_bucket(age: f64) -> &'static str {
    match age {
        a if a < 18.0 => "under-18",
        a if a < 25.0 => "18-24",
        a if a < 35.0 => "25-34",
        a if a < 45.0 => "35-44",
        a if a < 50.0 => "45-49",
        a if a < 56.0 => "50-55",
        _ => "56+",
    }
}

/// Attribute values of one dataset field: tokens as they are, token lists
/// one value per token, integral numbers (years, counts) as integers; other
/// numbers have no attribute value.
fn field_attribute_values(v: &FieldValue) -> Vec<String> {
    match v {
        FieldValue::Token(s) => vec![s.clone()],
        FieldValue::TokenSeq(ts) => ts.clone(),
        FieldValue::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => {
            vec![format!("{}", *x as i64)]
        }
        FieldValue::Float(_) => Vec::new(),
    }
}

/// Every user of `ds` as the serving encoder's input: the fields the model
/// reads (same conversion as `profilectl parity`) and the full history,
/// time-sorted.
pub fn dataset_user_features(ds: &Dataset, columns: &[String]) -> Vec<UserFeatures> {
    let mut per_user: Vec<Vec<EventInput>> = vec![Vec::new(); ds.users.len()];
    for e in &ds.interactions {
        if let (Some(v), Some(item)) = (
            per_user.get_mut(e.user as usize),
            ds.items.get(e.item as usize),
        ) {
            v.push(EventInput {
                item: item.id.clone(),
                timestamp: e.timestamp,
                rating: e.rating,
            });
        }
    }
    ds.users
        .iter()
        .zip(per_user)
        .map(|(u, mut events)| {
            events.sort_by_key(|e| e.timestamp);
            let fields: BTreeMap<String, FeatureValue> = columns
                .iter()
                .filter_map(|c| {
                    u.fields
                        .get(c)
                        .map(|v| (c.clone(), FeatureValue::from_field(v)))
                })
                .collect();
            to_features(&ProfileInput {
                user_id: Some(u.id.clone()),
                fields,
                events,
            })
        })
        .collect()
}

/// Fails when any of the files this command writes already exists.
fn refuse_existing(dir: &Path) -> anyhow::Result<()> {
    for name in [ITEMS_INDEX, USERS_INDEX] {
        let p = dir.join(name);
        for f in [p.clone(), ann::sidecar_path(&p)] {
            if f.exists() {
                bail!(
                    "{} already exists: indexes of a version are immutable \
                     (build them into a new version, e.g. `profilectl export`)",
                    f.display()
                );
            }
        }
    }
    Ok(())
}

fn meta_json(kind: &str, dir: &Path, dataset: &str, enc: &Encoder) -> String {
    serde_json::json!({
        "kind": kind,
        "model_dir": dir.display().to_string(),
        "dataset": dataset,
        "dims": enc.dim(),
        "profiled_cli": env!("CARGO_PKG_VERSION"),
    })
    .to_string()
}

/// Runs `profilectl index build`.
pub fn run_build(args: IndexBuildArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let dir = export::resolve_version_dir(&args.model)?;
    refuse_existing(&dir)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let enc = Encoder::load_with(&dir, &LoadOptions::default())
        .with_context(|| format!("loading model version {}", dir.display()))?;
    let dims = enc.dim();
    let ds = load_dataset(&args.dataset, &args.data_dir)
        .with_context(|| format!("loading dataset `{}`", args.dataset))?;
    eprintln!(
        "model {} (dims {dims}); dataset {}: {} users, {} items, {} events",
        dir.display(),
        ds.name,
        ds.users.len(),
        ds.items.len(),
        ds.interactions.len()
    );

    // Items: the model's vectors, dataset ids and attributes.
    let mut items = IndexBuilder::new(dims)?;
    items.meta(meta_json("items", &dir, &args.dataset, &enc));
    let mut items_missing = 0usize;
    for it in &ds.items {
        let Some(v) = enc.item_vector(&it.id) else {
            items_missing += 1;
            continue;
        };
        let row = items.push(&it.id, v)?;
        for g in &it.genres {
            items.add_attribute(row, "genre", g)?;
        }
        for (name, value) in &it.fields {
            for s in field_attribute_values(value) {
                items.add_attribute(row, name, &s)?;
            }
        }
    }
    if items.is_empty() {
        bail!("no item of `{}` is known to the model", args.dataset);
    }

    // Users: profiles in chunks (progress bar); users the model cannot
    // profile are skipped and counted.
    let columns = enc.tokenizer().input_columns().to_vec();
    let features = dataset_user_features(&ds, &columns);
    let mut users = IndexBuilder::new(dims)?;
    users.meta(meta_json("users", &dir, &args.dataset, &enc));
    let pb = ProgressBar::new(features.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("profiles {bar:30} {pos}/{len} users {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut users_skipped = 0usize;
    let chunk = 64 * threads;
    for (c, part) in features.chunks(chunk).enumerate() {
        let base = c * chunk;
        let profiled: Vec<(usize, Vec<f32>)> = match enc.export_profiles(part, threads) {
            Ok(flat) => flat
                .chunks(dims)
                .enumerate()
                .map(|(i, v)| (base + i, v.to_vec()))
                .collect(),
            // One bad user fails the whole batch: redo it one by one.
            Err(_) => part
                .iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    enc.export_profiles(std::slice::from_ref(f), 1)
                        .ok()
                        .map(|v| (base + i, v))
                })
                .collect(),
        };
        users_skipped += part.len() - profiled.len();
        for (u, v) in profiled {
            let user = &ds.users[u];
            let row = users.push(&user.id, &v)?;
            for (name, value) in &user.fields {
                for s in field_attribute_values(value) {
                    users.add_attribute(row, name, &s)?;
                }
                let age = match value {
                    FieldValue::Float(a) => Some(*a),
                    FieldValue::Token(s) => s.trim().parse::<f64>().ok(),
                    FieldValue::TokenSeq(_) => None,
                };
                if name == "age"
                    && let Some(a) = age
                    && a.is_finite()
                {
                    users.add_attribute(row, "age_bucket", age_bucket(a))?;
                }
            }
        }
        pb.inc(part.len() as u64);
    }
    pb.finish_and_clear();
    if users.is_empty() {
        bail!(
            "no user of `{}` can be profiled by this model",
            args.dataset
        );
    }

    for (name, builder) in [(ITEMS_INDEX, &items), (USERS_INDEX, &users)] {
        let path = dir.join(name);
        let s = builder
            .write(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}: {} rows, {} bytes", s.path.display(), s.rows, s.bytes);
        if !args.no_ann {
            let t = Instant::now();
            let file = IndexFile::open(&path, dims)?;
            let side = ann::sidecar_path(&path);
            let n = ann::build(&file, &side, &ann::AnnParams::default(), threads)
                .with_context(|| format!("building {}", side.display()))?;
            println!(
                "{}: {n} vectors in {:.1}s",
                side.display(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "indexed {} items ({items_missing} unknown to the model), {} users \
         ({users_skipped} not profiled) in {:.1}s",
        items.len(),
        users.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
