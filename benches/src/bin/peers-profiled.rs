//! profiled's side of the peer comparison (`benches/peers/run`): writes the
//! shared inputs the Python side (ONNX Runtime, FAISS) reads, and times
//! profiled's encoder and search on exactly those inputs.
//!
//! ```text
//! peers-profiled prepare --out DIR (--model DIR | --synthetic-model) [--data-dir data]
//!                        [--rows 1000000] [--queries 64]
//! peers-profiled encoder --work DIR [--b1-users 256] [--reps 7]
//! peers-profiled search  --work DIR --set items|synthetic [--ann-rows N] [--ef 128] [--reps 5]
//! ```
//!
//! `prepare` writes into DIR: `users.json` (every user as a model-format
//! input: the dataset's users when the model was trained on a dataset found
//! under `--data-dir`, else seeded synthetic users), `profiles.f32`
//! (profiled's vector of every user), `items.f32` (the model's unit item
//! vectors), `synthetic.f32` + `synthetic_queries.f32` (a seeded clustered
//! unit-vector set, `--rows` × 64) and `prepare.json`. Raw files are
//! little-endian f32, row-major. `encoder` and `search` print one JSON
//! object of timings (each call's fastest of `--reps` rounds, averaged) and, for search, write the returned rows
//! (`<set>_exact.u32`, `<set>_ann.u32`, k per query) for the recall check.
//! Search runs on one thread; the encoder at 1 and 2 threads.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use profiled_index::ann::{self, AnnIndex, AnnParams};
use profiled_index::{
    Filter, IndexBuilder, IndexFile, LocalBackend, PlannerConfig, SearchBackend, SearchParams,
    synthetic,
};
use profiled_kernels::attention::{Mask, OutputRows, Sequence, Workspace as KernelWorkspace};
use profiled_kernels::block::{LayerTensors, LayerWeights, block_forward};
use profiled_kernels::gemm::WeightPrecision;
use profiled_model::format::GoldenInput;
use profiled_model::testing::{Rng, SyntheticSpec, random_user, write_synthetic_model};
use profiled_model::{Encoder, TokenBatch, UserFeatures, Workspace};
use serde_json::json;

const K: usize = 10;
const DIMS: usize = 64;
const B64: usize = 64;
const SYNTHETIC_USERS: usize = 943;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg_or<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match arg(args, name) {
        None => Ok(default),
        Some(s) => s
            .parse::<T>()
            .map_err(|_| anyhow::anyhow!("{name}: cannot parse `{s}`")),
    }
}

fn write_f32(path: &Path, v: &[f32]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for x in v {
        f.write_all(&x.to_le_bytes())?;
    }
    f.flush()?;
    Ok(())
}

fn write_u32(path: &Path, v: &[u32]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn read_f32(path: &Path) -> anyhow::Result<Vec<f32>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if b.len() % 4 != 0 {
        bail!(
            "{}: length {} is not a multiple of 4",
            path.display(),
            b.len()
        );
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Every user of the model's dataset (fields the model reads + full history),
/// when the dataset is found under `data_dir`.
fn dataset_users(enc: &Encoder, data_dir: &Path) -> Option<(String, Vec<GoldenInput>)> {
    let name = enc.metadata().dataset.get("name")?.as_str()?.to_string();
    if name.starts_with("synthetic") {
        return None;
    }
    let ds = profiled_train::resolve_dataset(&name, data_dir).ok()?;
    let users = profiled_train::schema::dataset_inputs(&enc.metadata().schema, &ds);
    Some((format!("{name} (all users)"), users))
}

fn synthetic_users(enc: &Encoder, n: usize) -> Vec<GoldenInput> {
    let mut rng = Rng::new(4242);
    let items = enc.item_ids().len();
    let w = enc.metadata().schema.behaviour.max_events;
    (0..n)
        .map(|_| GoldenInput::from_features(&random_user(&mut rng, items, w)))
        .collect()
}

fn load_users(work: &Path) -> anyhow::Result<Vec<UserFeatures>> {
    let p = work.join("users.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let users: Vec<GoldenInput> = serde_json::from_str(&text)?;
    Ok(users.iter().map(GoldenInput::to_features).collect())
}

fn model_dir(work: &Path) -> anyhow::Result<PathBuf> {
    let p = work.join("prepare.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(PathBuf::from(
        v.get("model_dir")
            .and_then(|m| m.as_str())
            .context("prepare.json has no model_dir")?,
    ))
}

fn prepare(args: &[String]) -> anyhow::Result<()> {
    let out = PathBuf::from(arg(args, "--out").context("--out DIR is required")?);
    std::fs::create_dir_all(&out)?;
    let data_dir = PathBuf::from(arg(args, "--data-dir").unwrap_or_else(|| "data".into()));
    let rows: usize = arg_or(args, "--rows", 1_000_000)?;
    let nq: usize = arg_or(args, "--queries", 64)?;
    let (dir, label) = if args.iter().any(|a| a == "--synthetic-model") {
        let dir = out.join("synthetic-model");
        if !dir.join("model.json").exists() {
            write_synthetic_model(
                &dir,
                &SyntheticSpec {
                    d_model: 64,
                    heads: 4,
                    layers: 2,
                    ffn: 256,
                    d_out: 64,
                    items: 1682,
                    max_events: 50,
                    golden: 16,
                    seed: 7,
                    ..SyntheticSpec::default()
                },
            )?;
        }
        (dir, "SYNTHETIC random-weight model (d 64, 4 heads, 2 layers, ffn 256) — not the trained default".to_string())
    } else {
        let m = PathBuf::from(arg(args, "--model").context("--model DIR or --synthetic-model")?);
        let dir = profiled_train::export::resolve_version_dir(&m)?;
        let label = format!("trained model {}", dir.display());
        (dir, label)
    };
    let enc = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let (source, users) = match dataset_users(&enc, &data_dir) {
        Some(x) => x,
        None => (
            format!("{SYNTHETIC_USERS} seeded synthetic users"),
            synthetic_users(&enc, SYNTHETIC_USERS),
        ),
    };
    std::fs::write(out.join("users.json"), serde_json::to_string(&users)?)?;
    let features: Vec<UserFeatures> = users.iter().map(GoldenInput::to_features).collect();
    let mut ws = Workspace::new();
    let mut profiles = Vec::with_capacity(features.len() * enc.dim());
    for chunk in features.chunks(B64) {
        profiles.extend_from_slice(enc.forward_batch(chunk, &mut ws)?.as_slice());
    }
    write_f32(&out.join("profiles.f32"), &profiles)?;
    write_f32(&out.join("items.f32"), enc.item_vectors())?;
    let (x, _) = synthetic::clustered(rows, DIMS, 1000, 0.7, 1);
    write_f32(&out.join("synthetic.f32"), &x)?;
    drop(x);
    let q = synthetic::held_out_queries(rows, nq, DIMS, 1000, 0.7, 1);
    write_f32(&out.join("synthetic_queries.f32"), &q)?;
    let meta = enc.metadata();
    let tokens: Vec<usize> = {
        let p = meta.schema.fields.len();
        let w = meta.schema.behaviour.max_events;
        users.iter().map(|u| p + u.events.len().min(w)).collect()
    };
    let summary = json!({
        "model_dir": dir.display().to_string(),
        "model_label": label,
        "users_source": source,
        "users": users.len(),
        "dims": enc.dim(),
        "items": enc.item_ids().len(),
        "d_model": meta.architecture.d_model,
        "heads": meta.architecture.heads,
        "layers": meta.architecture.layers,
        "ffn": meta.architecture.ffn,
        "fields": meta.schema.fields.len(),
        "mean_tokens": tokens.iter().sum::<usize>() as f64 / tokens.len().max(1) as f64,
        "synthetic_rows": rows,
        "synthetic_queries": nq,
        "isa": enc.isa().name(),
    });
    std::fs::write(out.join("prepare.json"), summary.to_string())?;
    println!("{summary}");
    Ok(())
}

/// Each call's fastest wall time over `reps` rounds (after one warm-up
/// round), averaged over the `n` calls, in µs. On a shared machine the
/// fastest of several runs of the same call is the least disturbed one;
/// the Python side (peers.py) measures ORT and FAISS the same way.
fn fastest_calls(
    reps: usize,
    n: usize,
    mut call: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut best = vec![f64::INFINITY; n];
    for round in 0..=reps.max(1) {
        for (i, b) in best.iter_mut().enumerate() {
            let s = Instant::now();
            call(i)?;
            let t = s.elapsed().as_secs_f64() * 1e6;
            if round > 0 {
                *b = b.min(t);
            }
        }
    }
    Ok(best.iter().sum::<f64>() / n.max(1) as f64)
}

/// Diagnostic: the encoder layers alone at B = 1 — `block_forward` of every
/// layer (the last one at the output position only) on each user's token
/// count, random weights of the model's shape, no tokenizer, embedding sums,
/// final norm or head. µs per user, same estimator as the full forward.
fn layers_only_b1(enc: &Encoder, users: &[UserFeatures], reps: usize) -> anyhow::Result<f64> {
    let meta = enc.metadata();
    let a = &meta.architecture;
    let (d, ffn) = (a.d_model, a.ffn);
    let p = meta.schema.fields.len();
    let w = meta.schema.behaviour.max_events;
    let precision = match enc.report().dtype {
        profiled_model::Dtype::F32 => WeightPrecision::F32,
        profiled_model::Dtype::F16 => WeightPrecision::F16,
    };
    let mut g = profiled_benches::SplitMix::new(31);
    let mut layers = Vec::with_capacity(a.layers);
    for _ in 0..a.layers {
        let (in_w, in_b) = (g.vec(3 * d * d, 0.1), g.vec(3 * d, 0.1));
        let (ow, ob) = (g.vec(d * d, 0.1), g.vec(d, 0.1));
        let (f1w, f1b) = (g.vec(ffn * d, 0.1), g.vec(ffn, 0.1));
        let (f2w, f2b) = (g.vec(d * ffn, 0.1), g.vec(d, 0.1));
        let (ones, zeros) = (vec![1.0f32; d], vec![0.0f32; d]);
        let t = LayerTensors {
            d,
            heads: a.heads,
            ffn,
            eps: a.ln_eps as f32,
            in_proj_weight: &in_w,
            in_proj_bias: &in_b,
            out_proj_weight: &ow,
            out_proj_bias: &ob,
            ln1_weight: &ones,
            ln1_bias: &zeros,
            ln2_weight: &ones,
            ln2_bias: &zeros,
            ffn1_weight: &f1w,
            ffn1_bias: &f1b,
            ffn2_weight: &f2w,
            ffn2_bias: &f2b,
        };
        layers.push(LayerWeights::new(&t, precision)?);
    }
    let tokens: Vec<usize> = users.iter().map(|u| p + u.events.len().min(w)).collect();
    let tmax = tokens.iter().copied().max().unwrap_or(1);
    let x = g.vec(tmax * d, 1.0);
    let mut y = vec![0f32; tmax * d];
    let mut z = vec![0f32; tmax * d];
    let mut kws = KernelWorkspace::new();
    let isa = enc.isa();
    fastest_calls(reps, users.len(), |i| {
        let t = tokens[i];
        let seqs = [Sequence::new(t, Mask::PrefixCausal { prefix: p.min(t) })];
        y[..t * d].copy_from_slice(&x[..t * d]);
        for (l, layer) in layers.iter().enumerate() {
            let (rows, n) = if l + 1 == layers.len() {
                (OutputRows::LastOnly, 1)
            } else {
                (OutputRows::All, t)
            };
            block_forward(
                isa,
                layer,
                &y[..t * d],
                &seqs,
                rows,
                &mut z[..n * d],
                &mut kws,
                None,
            )?;
            std::mem::swap(&mut y, &mut z);
        }
        std::hint::black_box(&y);
        Ok(())
    })
}

fn encoder(args: &[String]) -> anyhow::Result<()> {
    let work = PathBuf::from(arg(args, "--work").context("--work DIR is required")?);
    let b1_users: usize = arg_or(args, "--b1-users", 256)?;
    let reps: usize = arg_or(args, "--reps", 7)?;
    let enc = Encoder::load(&model_dir(&work)?)?;
    let users = load_users(&work)?;
    let b1 = &users[..b1_users.min(users.len())];
    let full = users.len() / B64 * B64;
    let batches = &users[..full];
    let mut ws: Vec<Workspace> = (0..2).map(|_| Workspace::new()).collect();
    let mut out = serde_json::Map::new();
    for threads in [1usize, 2] {
        // B = 1: one user per call. A single user's forward runs on one
        // thread (a server runs concurrent requests on separate workers), so
        // the 2-thread figure is the same code measured again.
        let us_b1 = fastest_calls(reps, b1.len(), |i| {
            std::hint::black_box(enc.forward_batch(&b1[i..=i], &mut ws[0])?);
            Ok(())
        })?;
        // B = 64: each batch split over `threads` workers.
        let chunks: Vec<&[UserFeatures]> = batches.chunks(B64).collect();
        let us_b64 = fastest_calls(reps, chunks.len(), |j| {
            let batch = chunks[j];
            if threads == 1 {
                std::hint::black_box(enc.forward_batch(batch, &mut ws[0])?);
            } else {
                std::hint::black_box(enc.forward_batch_parallel(
                    batch,
                    &mut ws[..threads],
                    B64.div_ceil(threads),
                )?);
            }
            Ok(())
        })? / B64 as f64;
        out.insert(
            format!("t{threads}"),
            json!({"b1_us_per_user": us_b1, "b64_us_per_user": us_b64}),
        );
    }
    // Diagnostic: the tokenizer alone (raw features → token rows; the ORT
    // side starts after this step and after the embedding sums).
    let mut batch = TokenBatch::new();
    let tok_b1 = fastest_calls(reps, b1.len(), |i| {
        batch.clear();
        std::hint::black_box(enc.tokenizer().push(&b1[i], &mut batch)?);
        Ok(())
    })?;
    let chunks: Vec<&[UserFeatures]> = batches.chunks(B64).collect();
    let tok_b64 = fastest_calls(reps, chunks.len(), |j| {
        batch.clear();
        for u in chunks[j] {
            std::hint::black_box(enc.tokenizer().push(u, &mut batch)?);
        }
        Ok(())
    })? / B64 as f64;
    out.insert(
        "layers_b1_us_per_user".into(),
        json!(layers_only_b1(&enc, b1, reps)?),
    );
    out.insert("tokenize_b1_us_per_user".into(), json!(tok_b1));
    out.insert("tokenize_b64_us_per_user".into(), json!(tok_b64));
    out.insert("b1_users".into(), json!(b1.len()));
    out.insert("b64_users".into(), json!(full));
    out.insert("reps".into(), json!(reps));
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

fn search(args: &[String]) -> anyhow::Result<()> {
    let work = PathBuf::from(arg(args, "--work").context("--work DIR is required")?);
    let set = arg(args, "--set").context("--set items|synthetic is required")?;
    let reps: usize = arg_or(args, "--reps", 5)?;
    let ef: usize = arg_or(args, "--ef", 128)?;
    let (vectors, queries) = match set.as_str() {
        "items" => (
            read_f32(&work.join("items.f32"))?,
            read_f32(&work.join("profiles.f32"))?,
        ),
        "synthetic" => (
            read_f32(&work.join("synthetic.f32"))?,
            read_f32(&work.join("synthetic_queries.f32"))?,
        ),
        other => bail!("unknown set `{other}`"),
    };
    let rows = vectors.len() / DIMS;
    let ann_rows: usize = arg_or(args, "--ann-rows", rows)?;
    let ann_rows = ann_rows.min(rows);
    // At most 64 queries (a multiple of 16).
    let nq = (queries.len() / DIMS).min(64) / 16 * 16;
    if nq == 0 {
        bail!("need at least 16 queries");
    }
    let queries = &queries[..nq * DIMS];
    let tmp = tempfile::tempdir()?;
    let build = |name: &str, n: usize| -> anyhow::Result<PathBuf> {
        let mut b = IndexBuilder::new(DIMS)?;
        b.row_major_copy(false);
        for (r, v) in vectors.chunks_exact(DIMS).take(n).enumerate() {
            b.push(&format!("r{r}"), v)?;
        }
        let p = tmp.path().join(name);
        b.write(&p)?;
        Ok(p)
    };
    let path = build("exact.index", rows)?;
    let backend = LocalBackend::new(Arc::new(IndexFile::open(&path, DIMS)?));
    let exact = SearchParams {
        k: K,
        exact: true,
        filter: Filter::none(),
    };
    let mut exact_rows = Vec::with_capacity(nq * K);
    for q in queries.chunks_exact(DIMS) {
        for h in &backend.search(q, &exact)?[0].hits {
            exact_rows.push(h.row);
        }
    }
    write_u32(&work.join(format!("{set}_exact.u32")), &exact_rows)?;
    let qs: Vec<&[f32]> = queries.chunks_exact(DIMS).collect();
    let q1_ms = fastest_calls(reps, qs.len(), |i| {
        std::hint::black_box(backend.search(qs[i], &exact)?);
        Ok(())
    })? / 1e3;
    let q16s: Vec<&[f32]> = queries.chunks_exact(16 * DIMS).collect();
    let q16_ms = fastest_calls(reps, q16s.len(), |i| {
        std::hint::black_box(backend.search(q16s[i], &exact)?);
        Ok(())
    })? / 16.0
        / 1e3;
    drop(backend);

    // ANN (usearch HNSW, f16, M 16, ef_construction 128) over the first `ann_rows`.
    let apath = if ann_rows == rows {
        path.clone()
    } else {
        build("ann.index", ann_rows)?
    };
    let af = Arc::new(IndexFile::open(&apath, DIMS)?);
    let side = ann::sidecar_path(&apath);
    let params = AnnParams::default();
    let t = Instant::now();
    ann::build(&af, &side, &params, 2)?;
    let ann_build_s = t.elapsed().as_secs_f64();
    let ab = LocalBackend::new(af.clone())
        .with_ann(AnnIndex::open(&side, &af)?)
        .with_planner(PlannerConfig {
            max_exact_elements: 0,
            max_exact_fraction: 0.0,
            ..PlannerConfig::default()
        });
    if let Some(a) = ab.ann() {
        a.set_expansion_search(ef);
    }
    let approx = SearchParams {
        k: K,
        exact: false,
        filter: Filter::none(),
    };
    let mut ann_rows_out = Vec::with_capacity(nq * K);
    for q in queries.chunks_exact(DIMS) {
        let r = &ab.search(q, &approx)?[0];
        if r.path.is_exact() {
            bail!("the planner did not take the ANN path ({:?})", r.path);
        }
        let mut got: Vec<u32> = r.hits.iter().map(|h| h.row).collect();
        got.resize(K, u32::MAX);
        ann_rows_out.extend(got);
    }
    write_u32(&work.join(format!("{set}_ann.u32")), &ann_rows_out)?;
    let ann_q1_ms = fastest_calls(reps, qs.len(), |i| {
        std::hint::black_box(ab.search(qs[i], &approx)?);
        Ok(())
    })? / 1e3;
    println!(
        "{}",
        json!({
            "set": set,
            "rows": rows,
            "queries": nq,
            "k": K,
            "threads": 1,
            "exact_q1_ms": q1_ms,
            "exact_q16_ms_per_query": q16_ms,
            "ann_rows": ann_rows,
            "ann_ef": ef,
            "ann_build_s_2_threads": ann_build_s,
            "ann_q1_ms": ann_q1_ms,
        })
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("prepare") => prepare(&args[1..]),
        Some("encoder") => encoder(&args[1..]),
        Some("search") => search(&args[1..]),
        _ => bail!("usage: peers-profiled prepare|encoder|search … (see the file's docs)"),
    }
}
