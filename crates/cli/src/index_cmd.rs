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
use profiled_store::generation::{ITEMS_INDEX, SEEN_ITEMS_ATTRIBUTE, USERS_INDEX};
use profiled_train::data::{Dataset, FieldValue};
use profiled_train::export;
use profiled_train::schema::{FeatureSchema, ProfileInput, dataset_inputs};

use crate::parity_cmd::load_dataset;

/// `profilectl index …`
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Build `items.index` and `users.index` (+ ANN sidecars) in a model version directory.
    Build(IndexBuildArgs),
    /// Lookalike sanity check: seeds from a genre's fans retrieve other fans
    /// (precision@k against the base rate), on a version's `users.index`.
    LookalikeCheck(LookalikeCheckArgs),
}

/// Arguments of `profilectl index lookalike-check`.
#[derive(Debug, Args)]
pub struct LookalikeCheckArgs {
    /// A version folder with `users.index`, or a model folder (its latest version).
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset the index was built from (ratings and item genres define the groups).
    #[arg(long)]
    pub dataset: String,
    /// Folder of fetched datasets.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Genres to check (default: every genre of the dataset).
    #[arg(long, value_delimiter = ',')]
    pub genres: Vec<String>,
    /// A rating at or above this is a "like".
    #[arg(long, default_value_t = 4.0)]
    pub like: f32,
    /// Users need this many likes to be ranked into a genre group.
    #[arg(long, default_value_t = 10)]
    pub min_likes: usize,
    /// The genre group: this fraction of all users, those with the highest
    /// share of their likes in the genre.
    #[arg(long, default_value_t = 0.1)]
    pub group_frac: f64,
    /// Seed users per query (drawn at random from the group).
    #[arg(long, default_value_t = 10)]
    pub seeds: usize,
    /// Lookalikes retrieved per query (seeds excluded).
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Random seed draws per genre.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// RNG seed.
    #[arg(long, default_value_t = 7)]
    pub rng: u64,
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
        IndexCommand::LookalikeCheck(args) => run_lookalike_check(args),
    }
}

/// The `age_bucket` attribute value of an age (one table for the users
/// index files and the live users index).
pub use profiled_model::features::age_bucket;

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
/// reads and the full history, time-sorted (the same users as `profilectl
/// parity`).
pub fn dataset_user_features(ds: &Dataset, schema: &FeatureSchema) -> Vec<UserFeatures> {
    dataset_inputs(schema, ds)
        .iter()
        .map(ProfileInput::to_features)
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
    let features = dataset_user_features(&ds, enc.tokenizer().schema());
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
            // The user's item history, for Search's exclude_seen_items on
            // user_id queries (and filters such as seen_items = 50).
            for e in &features[u].events {
                users.add_attribute(row, SEEN_ITEMS_ATTRIBUTE, &e.item)?;
            }
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

/// Runs `profilectl index lookalike-check`.
pub fn run_lookalike_check(args: LookalikeCheckArgs) -> anyhow::Result<()> {
    use profiled_index::{LocalBackend, SearchBackend as _, SearchParams, lookalike_by_ids};

    let dir = export::resolve_version_dir(&args.model)?;
    let path = dir.join(USERS_INDEX);
    let dims = profiled_model::ModelJson::parse(
        &std::fs::read_to_string(dir.join("model.json"))
            .with_context(|| format!("reading {}/model.json", dir.display()))?,
        &dir.join("model.json"),
    )?
    .architecture
    .d_out;
    let backend = LocalBackend::open(&path, dims)
        .with_context(|| format!("opening {} (run `profilectl index build`)", path.display()))?;
    let ds = load_dataset(&args.dataset, &args.data_dir)
        .with_context(|| format!("loading dataset `{}`", args.dataset))?;

    // Likes per user, overall and per genre.
    let mut likes = vec![0usize; ds.users.len()];
    let mut per_genre: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for e in &ds.interactions {
        let (Some(r), Some(item)) = (e.rating, ds.items.get(e.item as usize)) else {
            continue;
        };
        if r < args.like || e.user as usize >= ds.users.len() {
            continue;
        }
        likes[e.user as usize] += 1;
        for g in &item.genres {
            per_genre
                .entry(g.as_str())
                .or_insert_with(|| vec![0; ds.users.len()])[e.user as usize] += 1;
        }
    }
    let genres: Vec<String> = if args.genres.is_empty() {
        per_genre.keys().map(|g| g.to_string()).collect()
    } else {
        args.genres.clone()
    };
    // Population: users present in the index.
    let indexed: Vec<usize> = (0..ds.users.len())
        .filter(|&u| backend.vector_of(&ds.users[u].id).ok().flatten().is_some())
        .collect();
    let n = indexed.len();
    let group_size = ((n as f64) * args.group_frac).round() as usize;
    if group_size <= args.seeds {
        bail!(
            "group of {group_size} users is not larger than --seeds {}",
            args.seeds
        );
    }
    let mut rng = profiled_kernels::rng::SplitMix64::new(args.rng);
    let mut rows = Vec::new();
    println!(
        "{:<14} {:>6} {:>9} {:>10} {:>7}",
        "genre", "group", "base", "prec@k", "lift"
    );
    for g in &genres {
        let Some(counts) = per_genre.get(g.as_str()) else {
            bail!("no liked item has genre `{g}`");
        };
        let mut ranked: Vec<(f64, usize)> = indexed
            .iter()
            .filter(|&&u| likes[u] >= args.min_likes && counts[u] > 0)
            .map(|&u| (counts[u] as f64 / likes[u] as f64, u))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if ranked.len() < group_size {
            // Too few fans for a group of this size (e.g. ML-100K `unknown`).
            println!("{g:<14} skipped: {} users like it", ranked.len());
            continue;
        }
        ranked.truncate(group_size);
        let group: std::collections::HashSet<&str> = ranked
            .iter()
            .map(|&(_, u)| ds.users[u].id.as_str())
            .collect();
        let base = (group.len() - args.seeds) as f64 / (n - args.seeds) as f64;
        let mut hits_in = 0usize;
        let mut hits = 0usize;
        for _ in 0..args.trials {
            // Partial Fisher–Yates over the group for the seed draw.
            let mut pool: Vec<usize> = ranked.iter().map(|&(_, u)| u).collect();
            for i in 0..args.seeds {
                let j = i + (rng.next_u64() % (pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            let seeds: Vec<&str> = pool[..args.seeds]
                .iter()
                .map(|&u| ds.users[u].id.as_str())
                .collect();
            let params = SearchParams {
                k: args.k,
                exact: true,
                filter: profiled_index::Filter::none(),
            };
            let r = lookalike_by_ids(&backend, &seeds, &params)?;
            hits += r.hits.len();
            hits_in += r
                .hits
                .iter()
                .filter(|h| group.contains(h.id.as_str()))
                .count();
        }
        let precision = hits_in as f64 / hits.max(1) as f64;
        println!(
            "{g:<14} {:>6} {base:>9.3} {precision:>10.3} {:>7.2}",
            group.len(),
            precision / base
        );
        rows.push(serde_json::json!({
            "genre": g, "group": group.len(), "base_rate": base,
            "precision": precision, "lift": precision / base,
        }));
    }
    let mean = |key: &str| {
        rows.iter().filter_map(|r| r[key].as_f64()).sum::<f64>() / rows.len().max(1) as f64
    };
    println!(
        "mean over {} genres: base {:.3}, precision@{} {:.3}, lift {:.2}",
        rows.len(),
        mean("base_rate"),
        args.k,
        mean("precision"),
        mean("lift")
    );
    println!(
        "{}",
        serde_json::json!({
            "users": n, "seeds": args.seeds, "k": args.k, "trials": args.trials,
            "group_frac": args.group_frac, "like": args.like, "min_likes": args.min_likes,
            "mean_base_rate": mean("base_rate"), "mean_precision": mean("precision"),
            "mean_lift": mean("lift"), "genres": rows,
        })
    );
    Ok(())
}
