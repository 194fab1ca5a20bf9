//! Live users index report (issue 17): a 1 M × 64 users index with its
//! HNSW graph takes 100,000 updates (replaced users, new users, deletes) in
//! batches of 1,000 through `LiveIndex`, and the report measures what the
//! overlay costs and whether the answers stay right — next to in-run
//! baselines: the same searches before any update, the scan kernel alone on
//! the same rows (the f16 scan floor of search-report), and this machine's
//! memory read bandwidth.
//!
//! * `live_recall_at_100_exact` / `live_recall_at_100_ann`: top 100 of the
//!   live index (exact path / HNSW at the default ef_search 128) against an
//!   f64 brute force over every current row after the updates. A hit counts
//!   when its true score is at least the brute force's 100th minus 1e-4
//!   (f16 rows summed in another order can swap exact near-ties; nothing
//!   else may differ). The HNSW recall is also given at ef 256 and 512, and
//!   for the graph before any update (the yardstick: what the updates cost
//!   the graph, apart from what k = 100 at that ef costs anyway).
//! * `search_qps_with_overlay_over_without`: exact k = 10 queries per second
//!   on one thread after the updates (≈ 10 % of the rows in the delta and
//!   as many masked) over the same before; the same for 16-query batches
//!   and for the HNSW path.
//! * `index_update_to_searchable_*_ms`: from the start of `apply` of a
//!   1,000-update batch until another thread finds the batch's new user
//!   (exact visibility; the HNSW work follows within the same apply).
//! * `search_p99_ms_*`: exact k = 10 latency on one thread, idle vs while
//!   the writer applies batches and while a merge runs (searches never wait
//!   for the writer's lock; on 2 shared cores they do share the CPU).
//! * `audience_1m_rows_top100k_ms`: the best 100,000 live rows for a query
//!   (`LiveIndex::exact_top`: scan, top-k heap, ids); the floor is the scan
//!   kernel with the same heap over the base file's blocked rows, no
//!   overlay, no ids.
//! * `merge_*`: the background merge into a new file (write, graph copy and
//!   renumbering, catch-up), and whether exact results are bit-identical
//!   before and after.
//!
//! `cargo run --release -p profiled-benches --bin live-index-report`
//! (`-- --quick`: 100 K rows, 10 K updates, a smoke run). The last line of
//! stdout is one JSON object.

// serde_json::json! of the report's many fields.
#![recursion_limit = "256"]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use profiled_index::ann::{self, AnnParams};
use profiled_index::{
    Filter, IndexBuilder, IndexFile, LiveConfig, LiveIndex, LiveOp, LiveRow, LiveUpdates,
    SearchBackend, SearchParams, SearchPath, TopK, synthetic,
};
use profiled_kernels::scan;
use profiled_kernels::{Isa, f16};

const DIMS: usize = 64;
const BATCH: usize = 1000;

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn exact_k(k: usize) -> SearchParams {
    SearchParams {
        k,
        exact: true,
        filter: Filter::none(),
    }
}

fn ann_k(k: usize) -> SearchParams {
    SearchParams {
        k,
        exact: false,
        filter: Filter::none(),
    }
}

/// Best-of-3 queries per second over `qs`, one query (or `batch` queries)
/// per call.
fn qps(live: &LiveIndex, qs: &[f32], batch: usize, p: &SearchParams, reps: usize) -> Result<f64> {
    let n = qs.len() / DIMS / batch;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        for i in 0..reps {
            let j = i % n;
            let q = &qs[j * batch * DIMS..(j + 1) * batch * DIMS];
            std::hint::black_box(live.search(q, p)?);
        }
        best = best.max((reps * batch) as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Per-query latencies (ms) of exact k = 10 searches until `stop`.
fn search_until(live: &LiveIndex, qs: &[f32], stop: &AtomicBool) -> Result<(Vec<f64>, usize)> {
    let mut lat = Vec::new();
    let mut failed = 0;
    let n = qs.len() / DIMS;
    let mut i = 0;
    while !stop.load(Ordering::Acquire) {
        let q = &qs[(i % n) * DIMS..(i % n + 1) * DIMS];
        let t = Instant::now();
        match live.search(q, &exact_k(10)) {
            Ok(r) if r[0].hits.len() == 10 => {}
            _ => failed += 1,
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        i += 1;
    }
    Ok((lat, failed))
}

/// The current rows as the brute force sees them: id → f32 vector (the
/// stored f16 values).
struct Current {
    ids: Vec<String>,
    vectors: Vec<f32>,
    live: Vec<bool>,
    index_of: std::collections::HashMap<String, usize>,
}

impl Current {
    fn set(&mut self, id: &str, v: &[f32]) {
        let v: Vec<f32> = v.iter().map(|x| f16::from_f32(*x).to_f32()).collect();
        match self.index_of.get(id) {
            Some(&i) => {
                self.vectors[i * DIMS..(i + 1) * DIMS].copy_from_slice(&v);
                self.live[i] = true;
            }
            None => {
                self.index_of.insert(id.to_string(), self.ids.len());
                self.ids.push(id.to_string());
                self.vectors.extend_from_slice(&v);
                self.live.push(true);
            }
        }
    }

    fn delete(&mut self, id: &str) {
        if let Some(&i) = self.index_of.get(id) {
            self.live[i] = false;
        }
    }

    /// (score, id) of every live row, best first, the first `k`.
    fn top(&self, q: &[f32], k: usize) -> Vec<(f64, &str)> {
        let mut all: Vec<(f64, usize)> = self
            .live
            .iter()
            .enumerate()
            .filter(|(_, l)| **l)
            .map(|(i, _)| {
                let row = &self.vectors[i * DIMS..(i + 1) * DIMS];
                (
                    row.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum(),
                    i,
                )
            })
            .collect();
        let k = k.min(all.len());
        all.select_nth_unstable_by(k.saturating_sub(1), |a, b| b.0.total_cmp(&a.0));
        all.truncate(k);
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.into_iter()
            .map(|(s, i)| (s, self.ids[i].as_str()))
            .collect()
    }

    fn len(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }
}

/// Recall@k with the near-tie tolerance of the module docs.
fn recall(
    live: &LiveIndex,
    cur: &Current,
    qs: &[f32],
    k: usize,
    p: &SearchParams,
) -> Result<(f64, Vec<SearchPath>)> {
    let mut ok = 0usize;
    let mut paths = Vec::new();
    for q in qs.chunks_exact(DIMS) {
        let truth = cur.top(q, k);
        let kth = truth.last().map_or(f64::NEG_INFINITY, |t| t.0);
        let score: std::collections::HashMap<&str, f64> =
            truth.iter().map(|(s, id)| (*id, *s)).collect();
        let r = live.search(q, p)?;
        paths.push(r[0].path);
        for h in &r[0].hits {
            let true_score = match score.get(h.id.as_str()) {
                Some(s) => *s,
                // Not in the brute force's top k: its true score decides.
                None => match cur.index_of.get(&h.id) {
                    Some(&i) if cur.live[i] => cur.vectors[i * DIMS..(i + 1) * DIMS]
                        .iter()
                        .zip(q)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum(),
                    _ => f64::NEG_INFINITY,
                },
            };
            if true_score >= kth - 1e-4 {
                ok += 1;
            }
        }
    }
    Ok((ok as f64 / (qs.len() / DIMS * k) as f64, paths))
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let isa = Isa::active();
    let (rows, updates) = if quick {
        (100_000usize, 10_000usize)
    } else {
        (1_000_000, 100_000)
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "live-index-report: cpu {} ({cores} cores), isa {isa}, load {} (1/5/15 min), quick = {quick}",
        cpu_model(),
        loadavg()
    );
    let patterns = profiled_kernels::probe::mem_read(256 << 20, 3);
    let bw = profiled_kernels::probe::best_read(&patterns);
    println!("memory read bandwidth (single thread, best pattern): {bw:.1} GB/s");

    // ---------------- the base: rows × 64 with its graph ----------------
    let dir = tempfile::tempdir()?;
    let merges = tempfile::tempdir()?;
    let t = Instant::now();
    let (x, _) = synthetic::clustered(rows, DIMS, 1000, 0.7, 1);
    let mut b = IndexBuilder::new(DIMS)?;
    let mut cur = Current {
        ids: Vec::with_capacity(rows + updates),
        vectors: Vec::with_capacity((rows + updates) * DIMS),
        live: Vec::with_capacity(rows + updates),
        index_of: std::collections::HashMap::with_capacity(rows + updates),
    };
    for (r, v) in x.chunks_exact(DIMS).enumerate() {
        let id = format!("u{r}");
        let row = b.push(&id, v)?;
        b.add_attribute(row, "bucket", &format!("b{}", r % 100))?;
        cur.set(&id, v);
    }
    drop(x);
    let path = dir.path().join("users.index");
    b.write(&path)?;
    drop(b);
    let file = Arc::new(IndexFile::open(&path, DIMS)?);
    let t_build = Instant::now();
    ann::build(
        &file,
        &ann::sidecar_path(&path),
        &AnnParams::default(),
        cores,
    )?;
    let ann_build_s = t_build.elapsed().as_secs_f64();
    println!(
        "base: {rows} × {DIMS} written and its HNSW built ({cores} threads, {ann_build_s:.1} s) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let live = LiveIndex::open(
        &path,
        DIMS,
        LiveConfig {
            merge_dir: Some(merges.path().to_path_buf()),
            // Merges run when the report asks.
            min_merge_rows: usize::MAX,
            ..LiveConfig::default()
        },
    )?;
    ensure!(live.has_ann(), "the live index did not load the graph");

    // Queries: half from the base's distribution, half from the updates'.
    let nq = if quick { 32 } else { 64 };
    let mut qs = synthetic::held_out_queries(rows, nq / 2, DIMS, 1000, 0.7, 1);
    qs.extend(synthetic::held_out_queries(
        updates,
        nq / 2,
        DIMS,
        1000,
        0.7,
        99,
    ));

    // ---------------- before any update ----------------
    let reps = if quick { 300 } else { 200 };
    let qps_before = qps(&live, &qs, 1, &exact_k(10), reps)?;
    let qps16_before = qps(&live, &qs, 16, &exact_k(10), reps / 8)?;
    let ann_qps_before = qps(&live, &qs, 1, &ann_k(10), reps * 10)?;
    let stop = AtomicBool::new(false);
    let (mut idle_lat, _) = std::thread::scope(|s| {
        let h = s.spawn(|| search_until(&live, &qs, &stop));
        std::thread::sleep(Duration::from_millis(if quick { 500 } else { 1500 }));
        stop.store(true, Ordering::Release);
        h.join().map_err(|_| anyhow::anyhow!("searcher panicked"))?
    })?;
    let search_p99_idle = percentile(&mut idle_lat, 0.99);
    let search_p50_idle = percentile(&mut idle_lat, 0.5);
    // The graph before any update, as the yardstick of the HNSW recall.
    let efs = [128usize, 256, 512];
    let mut ann_recall_base = Vec::new();
    for ef in efs {
        live.set_expansion_search(ef);
        ann_recall_base.push(recall(&live, &cur, &qs, 100, &ann_k(100))?.0);
    }
    live.set_expansion_search(AnnParams::default().expansion_search);

    // Scan-kernel floors on the same rows: k = 10, and the audience heap.
    let blocked = file.blocked();
    let floor = |k: usize, reps: usize| -> Result<f64> {
        let mut best = f64::INFINITY;
        for i in 0..reps {
            let mut tops = vec![TopK::new(k)];
            let t = Instant::now();
            scan::scan(
                isa,
                &blocked,
                &qs[(i % nq) * DIMS..(i % nq + 1) * DIMS],
                &mut tops,
            )?;
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(tops);
        }
        Ok(best)
    };
    let scan_floor_k10_ms = floor(10, 10)?;
    let audience_n = rows / 10;
    let audience_floor_ms = floor(audience_n, 5)?;

    // ---------------- the updates ----------------
    // 90 % replace distinct existing users, 5 % add users, 5 % delete.
    let (nx, _) = synthetic::clustered(updates, DIMS, 1000, 0.7, 99);
    let mut ops_all: Vec<LiveOp> = Vec::with_capacity(updates);
    let mut deleted: HashSet<String> = HashSet::new();
    for i in 0..updates {
        let v = nx[i * DIMS..(i + 1) * DIMS].to_vec();
        let op = match i % 20 {
            0 => LiveOp::Upsert(LiveRow {
                id: format!("n{i}"),
                vector: v,
                attributes: [("bucket".to_string(), vec![format!("b{}", i % 100)])].into(),
            }),
            1 => {
                let id = format!("u{}", (i * 7919 + 13) % rows);
                deleted.insert(id.clone());
                LiveOp::Delete(id)
            }
            _ => {
                let id = format!("u{}", (i * 7919) % rows);
                deleted.remove(&id);
                LiveOp::Upsert(LiveRow {
                    id,
                    vector: v,
                    attributes: [("bucket".to_string(), vec![format!("b{}", i % 100)])].into(),
                })
            }
        };
        match &op {
            LiveOp::Upsert(r) => cur.set(&r.id, &r.vector),
            LiveOp::Delete(id) => cur.delete(id),
        }
        ops_all.push(op);
    }
    drop(nx);
    let batches: Vec<Vec<LiveOp>> = ops_all.chunks(BATCH).map(<[LiveOp]>::to_vec).collect();
    drop(ops_all);
    let half = batches.len() / 2;

    // Phase A: the writer applies while one thread searches.
    let stop = AtomicBool::new(false);
    let mut apply_ms: Vec<f64> = Vec::new();
    let mut ann_errors = 0usize;
    let t_updates = Instant::now();
    let (mut busy_lat, busy_failed) = std::thread::scope(|s| -> Result<(Vec<f64>, usize)> {
        let h = s.spawn(|| search_until(&live, &qs, &stop));
        for b in &batches[..half] {
            let t = Instant::now();
            let a = live.apply(b.clone())?;
            apply_ms.push(t.elapsed().as_secs_f64() * 1e3);
            ann_errors += a.ann_errors.len();
        }
        stop.store(true, Ordering::Release);
        h.join().map_err(|_| anyhow::anyhow!("searcher panicked"))?
    })?;
    // Phase B: the writer alone, with a thread watching for each batch's
    // first new user.
    let mut visible_ms: Vec<f64> = Vec::new();
    for b in &batches[half..] {
        let target = b
            .iter()
            .find_map(|o| match o {
                LiveOp::Upsert(r) if r.id.starts_with('n') => Some(r.id.clone()),
                _ => None,
            })
            .context("a batch without a new user")?;
        let t0 = Instant::now();
        let seen = std::thread::scope(|s| -> Result<f64> {
            let watcher = s.spawn(|| -> Result<f64> {
                loop {
                    if live.vector_of(&target)?.is_some() {
                        return Ok(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    std::thread::yield_now();
                }
            });
            let a = live.apply(b.clone())?;
            apply_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            ann_errors += a.ann_errors.len();
            watcher
                .join()
                .map_err(|_| anyhow::anyhow!("watcher panicked"))?
        })?;
        visible_ms.push(seen);
    }
    let updates_s = t_updates.elapsed().as_secs_f64();
    let updates_per_s = updates as f64 / updates_s;
    let st = live.stats();
    ensure!(
        st.live_rows == cur.len(),
        "{} live rows, {} expected",
        st.live_rows,
        cur.len()
    );
    let overlay_share = st.delta_rows as f64 / st.base_rows as f64;
    println!(
        "updates: {updates} in {updates_s:.1} s ({updates_per_s:.0}/s incl. HNSW, a search thread in the first half); \
         delta {} rows ({:.1} % of the base), {} base rows masked, {} chunks, {:.0} MB",
        st.delta_rows,
        overlay_share * 100.0,
        st.masked_base_rows,
        st.chunks,
        st.delta_bytes as f64 / 1e6
    );

    // ---------------- after the updates ----------------
    let qps_after = qps(&live, &qs, 1, &exact_k(10), reps)?;
    let qps16_after = qps(&live, &qs, 16, &exact_k(10), reps / 8)?;
    let ann_qps_after = qps(&live, &qs, 1, &ann_k(10), reps * 10)?;
    let (recall_exact, _) = recall(&live, &cur, &qs, 100, &exact_k(100))?;
    let (recall_ann, paths) = recall(&live, &cur, &qs, 100, &ann_k(100))?;
    let ann_answered = paths.iter().filter(|p| **p == SearchPath::Ann).count();
    let mut ann_recall_live = Vec::new();
    for ef in efs {
        live.set_expansion_search(ef);
        ann_recall_live.push(recall(&live, &cur, &qs, 100, &ann_k(100))?.0);
    }
    live.set_expansion_search(AnnParams::default().expansion_search);
    // Deleted users never come back.
    for q in qs.chunks_exact(DIMS) {
        for p in [exact_k(100), ann_k(100)] {
            for h in &live.search(q, &p)?[0].hits {
                ensure!(!deleted.contains(&h.id), "deleted user {} returned", h.id);
            }
        }
    }

    // Audience: the best 10 % of the rows for one query.
    let mut audience = Vec::new();
    for i in 0..5 {
        let q = &qs[(i % nq) * DIMS..(i % nq + 1) * DIMS];
        let t = Instant::now();
        let hits = live.exact_top(q, audience_n, &Filter::none())?;
        audience.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(hits.len() == audience_n, "audience of {}", hits.len());
    }
    let audience_ms = percentile(&mut audience, 0.5);

    // ---------------- the merge, with a searcher running ----------------
    let probe: Vec<Vec<(String, f32)>> = live
        .search(&qs[..16 * DIMS], &exact_k(100))?
        .into_iter()
        .map(|r| r.hits.into_iter().map(|h| (h.id, h.score)).collect())
        .collect();
    let stop = AtomicBool::new(false);
    let (report, (mut merge_lat, merge_failed)) = std::thread::scope(
        |s| -> Result<(profiled_index::MergeReport, (Vec<f64>, usize))> {
            let h = s.spawn(|| search_until(&live, &qs, &stop));
            let r = live.merge_now();
            stop.store(true, Ordering::Release);
            let lat = h
                .join()
                .map_err(|_| anyhow::anyhow!("searcher panicked"))??;
            Ok((r?.context("a merge was already running")?, lat))
        },
    )?;
    let after_merge: Vec<Vec<(String, f32)>> = live
        .search(&qs[..16 * DIMS], &exact_k(100))?
        .into_iter()
        .map(|r| r.hits.into_iter().map(|h| (h.id, h.score)).collect())
        .collect();
    let merge_identical = probe == after_merge;
    let qps_after_merge = qps(&live, &qs, 1, &exact_k(10), reps)?;
    let (recall_ann_merged, _) = recall(&live, &cur, &qs, 100, &ann_k(100))?;
    live.set_expansion_search(256);
    let (recall_ann_merged_256, _) = recall(&live, &cur, &qs, 100, &ann_k(100))?;
    live.set_expansion_search(AnnParams::default().expansion_search);

    let ratio = qps_after / qps_before;
    let ratio16 = qps16_after / qps16_before;
    let ann_ratio = ann_qps_after / ann_qps_before;
    let mut apply_sorted = apply_ms.clone();
    let apply_p99 = percentile(&mut apply_sorted, 0.99);
    let visible_p50 = percentile(&mut visible_ms, 0.5);
    let visible_p99 = percentile(&mut visible_ms, 0.99);
    let busy_p99 = percentile(&mut busy_lat, 0.99);
    let busy_p50 = percentile(&mut busy_lat, 0.5);
    let merge_p99 = percentile(&mut merge_lat, 0.99);
    let merge_max = merge_lat.iter().copied().fold(0.0f64, f64::max);

    println!();
    println!("{:<58} {:>14}", "figure", "value");
    let table: Vec<(&str, String)> = vec![
        ("memory read bandwidth GB/s", format!("{bw:.1}")),
        ("rows / updates", format!("{rows} / {updates}")),
        (
            "overlay after the updates (delta rows ÷ base rows)",
            format!("{:.3}", overlay_share),
        ),
        ("live recall@100, exact path", format!("{recall_exact:.4}")),
        (
            "live recall@100, HNSW (answered by the graph)",
            format!("{recall_ann:.4} ({ann_answered}/{})", paths.len()),
        ),
        (
            "live recall@100, HNSW after the merge",
            format!("{recall_ann_merged:.4}"),
        ),
        (
            "HNSW recall@100 at ef 128/256/512, before updates",
            ann_recall_base
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" / "),
        ),
        (
            "HNSW recall@100 at ef 128/256/512, after updates",
            ann_recall_live
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" / "),
        ),
        (
            "HNSW recall@100 at ef 256 after the merge",
            format!("{recall_ann_merged_256:.4}"),
        ),
        ("exact k=10 QPS without overlay", format!("{qps_before:.0}")),
        ("exact k=10 QPS with overlay", format!("{qps_after:.0}")),
        (
            "search_qps_with_overlay_over_without",
            format!("{ratio:.3}"),
        ),
        ("  same, 16 queries per call", format!("{ratio16:.3}")),
        (
            "  same, HNSW k=10",
            format!("{ann_ratio:.3} ({ann_qps_before:.0} → {ann_qps_after:.0})"),
        ),
        (
            "exact k=10 QPS after the merge",
            format!("{qps_after_merge:.0}"),
        ),
        (
            "scan floor k=10 ms (kernel, base rows)",
            format!("{scan_floor_k10_ms:.3}"),
        ),
        (
            "audience top 10 % ms (live index, median)",
            format!("{audience_ms:.2}"),
        ),
        (
            "audience floor ms (kernel + same heap, base)",
            format!("{audience_floor_ms:.2}"),
        ),
        (
            "updates/s (batches of 1000, incl. HNSW)",
            format!("{updates_per_s:.0}"),
        ),
        ("apply batch p99 ms (incl. HNSW)", format!("{apply_p99:.1}")),
        (
            "update → searchable p50 / p99 ms (batch of 1000)",
            format!("{visible_p50:.1} / {visible_p99:.1}"),
        ),
        (
            "search p50 / p99 ms idle",
            format!("{search_p50_idle:.2} / {search_p99_idle:.2}"),
        ),
        (
            "search p50 / p99 ms while applying",
            format!("{busy_p50:.2} / {busy_p99:.2}"),
        ),
        (
            "search p99 / max ms during the merge",
            format!("{merge_p99:.2} / {merge_max:.1}"),
        ),
        (
            "failed searches (updates / merge)",
            format!("{busy_failed} / {merge_failed}"),
        ),
        (
            "merge ms (write / graph / total)",
            format!(
                "{:.0} / {:.0} / {:.0}",
                report.write_ms, report.ann_ms, report.total_ms
            ),
        ),
        (
            "merge: exact results bit-identical",
            format!("{merge_identical}"),
        ),
        ("HNSW update errors", format!("{ann_errors}")),
    ];
    for (k, v) in &table {
        println!("{k:<58} {v:>14}");
    }
    println!("load after run: {}", loadavg());
    let scale = if quick { "100k" } else { "1m" };
    let json = serde_json::json!({
        "cpu": cpu_model(),
        "cores": cores,
        "isa": isa.name(),
        "quick": quick,
        "rows": rows,
        "updates": updates,
        "load_end": loadavg(),
        "mem_read_gbps": bw,
        "overlay_share": overlay_share,
        "live_recall_at_100_exact": recall_exact,
        "live_recall_at_100_ann": recall_ann,
        "live_recall_at_100_ann_after_merge": recall_ann_merged,
        "ann_ef": [128, 256, 512],
        "ann_recall_at_100_base_by_ef": ann_recall_base,
        "ann_recall_at_100_live_by_ef": ann_recall_live,
        "live_recall_at_100_ann_ef256": ann_recall_live.get(1),
        "live_recall_at_100_ann_ef256_after_merge": recall_ann_merged_256,
        "search_qps_with_overlay_over_without": ratio,
        "search_qps16_with_overlay_over_without": ratio16,
        "ann_qps_with_overlay_over_without": ann_ratio,
        "exact_qps_without_overlay": qps_before,
        "exact_qps_with_overlay": qps_after,
        "exact_qps_after_merge": qps_after_merge,
        "scan_floor_k10_ms": scan_floor_k10_ms,
        (format!("audience_{scale}_rows_top{}k_ms", audience_n / 1000)): audience_ms,
        (format!("audience_{scale}_rows_top{}k_floor_ms", audience_n / 1000)): audience_floor_ms,
        "updates_per_s": updates_per_s,
        "apply_batch_p99_ms": apply_p99,
        "index_update_to_searchable_p50_ms": visible_p50,
        "index_update_to_searchable_p99_ms": visible_p99,
        "search_p99_ms_idle": search_p99_idle,
        "search_p99_ms_during_updates": busy_p99,
        "search_p50_ms_during_updates": busy_p50,
        "search_p99_ms_during_merge": merge_p99,
        "search_max_ms_during_merge": merge_max,
        "failed_searches": busy_failed + merge_failed,
        "merge_ms": report.total_ms,
        "merge_write_ms": report.write_ms,
        "merge_graph_ms": report.ann_ms,
        "merge_identical_results": merge_identical,
        "ann_build_s": ann_build_s,
        "ann_update_errors": ann_errors,
    });
    println!("{json}");
    Ok(())
}
