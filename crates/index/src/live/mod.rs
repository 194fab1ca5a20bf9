//! The live users index: a mutable overlay over an immutable index file.
//!
//! * **Updates** ([`LiveUpdates::apply`], a batch of [`LiveOp`]s): an
//!   upserted user is appended to the *delta* (chunks of rows in the scan
//!   kernel's blocked f16 layout, with their ids and attributes); the row it
//!   replaces — in the base file or in the delta — is masked out of a
//!   bitmap; a deleted user is masked only. The HNSW graph (loaded as a
//!   mutable copy of the base's sidecar) gets the same removals and adds in
//!   place. Attributes of delta rows (fields, `seen_items`) filter like the
//!   base's.
//! * **Searches** ([`SearchBackend`]) load the current snapshot (`ArcSwap`)
//!   and never wait for a writer: the base is scanned by the file's kernels
//!   (the full scan when nothing is masked, else `scan_bitmap`, or a
//!   candidate list for filters), every chunk by `scan_bitmap`, and the
//!   hits merged; the exact path returns exactly what a scan of the current
//!   rows returns. The planner is the local backend's: HNSW (with a
//!   predicate that admits the snapshot's live, filtered rows) when the
//!   candidates are many, the exact scan otherwise or as a fallback.
//! * **Merge**: when the delta passes [`LiveConfig::merge_share`] of the
//!   base, a background thread writes the live rows into a new index file
//!   with [`IndexBuilder`](crate::IndexBuilder) (in `merge_dir`), renumbers a
//!   copy of the graph to its rows, replays the updates that arrived
//!   meanwhile, and swaps the result in; searches never block. A merged
//!   file is removed when no snapshot uses it any more.
//!
//! Row numbers of hits (`SearchHit::row`) are live rows: base rows `0 ..
//! B`, then delta slot `s` is `B + s` — valid until the next merge. The
//! server names rows by id only.

mod chunk;
mod merge;
#[cfg(not(feature = "ann"))]
mod noann;
mod snapshot;
mod state;
mod terms;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use profiled_kernels::Isa;

#[cfg(feature = "ann")]
pub(crate) use crate::ann::LiveAnn as Ann;
#[cfg(not(feature = "ann"))]
pub(crate) use noann::LiveAnn as Ann;

use self::snapshot::{Base, Snapshot};
use self::state::Live;
use crate::backend::TitleSource;
use crate::error::{Error, Result};
use crate::file::IndexFile;
use crate::filter::Filter;
use crate::search::{MAX_K, PlannerConfig, QueryResult, SearchBackend, SearchHit, SearchParams};

/// One user's new state in the live index.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRow {
    /// The user id.
    pub id: String,
    /// The profile vector (`dims` values, finite in f16).
    pub vector: Vec<f32>,
    /// Attribute values by name (fields, `seen_items`), filterable like the
    /// base file's.
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// One change of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveOp {
    /// Insert the row, or replace the row of its id.
    Upsert(LiveRow),
    /// Remove the row of this id (absent ids are ignored).
    Delete(String),
}

impl LiveOp {
    /// The id the op is about.
    pub fn id(&self) -> &str {
        match self {
            LiveOp::Upsert(r) => &r.id,
            LiveOp::Delete(id) => id,
        }
    }
}

/// What one [`LiveUpdates::apply`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveApplied {
    /// Rows inserted or replaced.
    pub upserted: usize,
    /// Deletes that removed a row.
    pub deleted: usize,
    /// The snapshot number the batch is visible from.
    pub seq: u64,
    /// HNSW updates that failed (the exact path has the rows; the graph
    /// misses them): should stay empty.
    pub ann_errors: Vec<String>,
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// The new base file.
    pub path: PathBuf,
    /// Its rows.
    pub rows: usize,
    /// Writing the file, ms.
    pub write_ms: f64,
    /// Copying and renumbering the HNSW graph, ms.
    pub ann_ms: f64,
    /// Updates replayed onto the new base (they arrived during the merge).
    pub caught_up: usize,
    /// The whole merge, ms.
    pub total_ms: f64,
}

/// The size of the overlay and the merge state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveStats {
    /// Rows of the base file.
    pub base_rows: usize,
    /// Rows a search sees.
    pub live_rows: usize,
    /// Delta rows (appended since the base, live or replaced since).
    pub delta_rows: usize,
    /// Delta rows still live.
    pub delta_live: usize,
    /// Base rows masked out (replaced or deleted).
    pub masked_base_rows: usize,
    /// Delta chunks.
    pub chunks: usize,
    /// Approximate heap bytes of the overlay.
    pub delta_bytes: usize,
    /// The current snapshot number.
    pub seq: u64,
    /// Merges done.
    pub merges: u64,
    /// Whether a merge is running.
    pub merging: bool,
    /// The last merge.
    pub last_merge: Option<MergeReport>,
    /// The last failed merge's error.
    pub last_merge_error: Option<String>,
}

/// A backend whose rows can change (the live users index). A remote
/// vector engine would implement it beside [`SearchBackend`].
pub trait LiveUpdates: Send + Sync {
    /// Applies a batch in order (a later op on the same id wins); visible
    /// to searches when it returns. A bad op (wrong dimension, non-finite
    /// value, empty id) refuses the whole batch.
    fn apply(&self, ops: Vec<LiveOp>) -> Result<LiveApplied>;
    /// Overlay size and merge state.
    fn stats(&self) -> LiveStats;
}

/// Settings of a [`LiveIndex`].
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Merge when the delta rows, or the masked base rows, reach this share
    /// of the base rows (and at least `min_merge_rows`).
    pub merge_share: f64,
    /// No merge below this many overlay rows.
    pub min_merge_rows: usize,
    /// Where merged files are written; `None`: never merge automatically
    /// (and [`LiveIndex::merge_now`] is an error).
    pub merge_dir: Option<PathBuf>,
    /// Small delta chunks are concatenated up to this many rows.
    pub max_chunk_rows: usize,
    /// Planner thresholds.
    pub planner: PlannerConfig,
    /// Scan kernels' path.
    pub isa: Isa,
    /// Concurrent HNSW calls (usearch thread slots): a search finding none
    /// free is answered exactly.
    pub ann_threads: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            merge_share: 0.1,
            min_merge_rows: 4096,
            merge_dir: None,
            max_chunk_rows: 65_536,
            planner: PlannerConfig::default(),
            isa: Isa::active(),
            ann_threads: 64,
        }
    }
}

/// The live users index (see the module docs). Cheap to clone (shared).
#[derive(Clone)]
pub struct LiveIndex {
    inner: Arc<Inner>,
}

struct Inner {
    snap: ArcSwap<Snapshot>,
    writer: Mutex<Writer>,
    config: LiveConfig,
    dims: usize,
    titles: Option<Arc<dyn TitleSource>>,
    merges: AtomicU64,
    merge_running: AtomicBool,
    last_merge: Mutex<(Option<MergeReport>, Option<String>)>,
    /// When the last merge failed: automatic merges wait
    /// [`MERGE_RETRY`] before trying again (a full disk, say).
    failed_at: Mutex<Option<Instant>>,
    /// Process-unique: live indexes can share a `merge_dir`.
    instance: u64,
}

/// The pause of automatic merges after a failed one.
const MERGE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Numbers the live indexes of this process.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

struct Writer {
    live: Live,
    /// While a merge runs: the batches applied since it started.
    log: Option<Vec<LiveOp>>,
    merge_no: u64,
}

impl std::fmt::Debug for LiveIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveIndex")
            .field("stats", &self.stats())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// HNSW room to reserve up front for `rows` base rows: the delta a merge
/// lets grow, with margin.
fn ann_room(rows: usize, config: &LiveConfig) -> usize {
    ((rows as f64 * config.merge_share.clamp(0.0, 4.0) * 1.5) as usize).saturating_add(1024)
}

impl LiveIndex {
    /// Opens the index file at `path` (expecting `dims`) and, with the
    /// `ann` feature, a mutable copy of its `.hnsw` sidecar when present.
    pub fn open(path: &Path, dims: usize, config: LiveConfig) -> Result<LiveIndex> {
        let file = Arc::new(IndexFile::open(path, dims)?);
        #[cfg(feature = "ann")]
        {
            let side = crate::ann::sidecar_path(path);
            if side.exists() {
                let ann = crate::ann::LiveAnn::load(
                    &side,
                    &file,
                    ann_room(file.len(), &config),
                    config.ann_threads,
                )?;
                return LiveIndex::build(file, Some(ann), config);
            }
        }
        LiveIndex::build(file, None, config)
    }

    /// An exact-only live index over `file`.
    pub fn new(file: Arc<IndexFile>, config: LiveConfig) -> Result<LiveIndex> {
        LiveIndex::build(file, None, config)
    }

    /// A live index over `file` with `ann`, a graph of exactly its rows
    /// (keys = rows), e.g. [`LiveAnn::load`](crate::ann::LiveAnn::load).
    #[cfg(feature = "ann")]
    pub fn with_graph(
        file: Arc<IndexFile>,
        ann: crate::ann::LiveAnn,
        config: LiveConfig,
    ) -> Result<LiveIndex> {
        LiveIndex::build(file, Some(ann), config)
    }

    fn build(file: Arc<IndexFile>, ann: Option<Ann>, config: LiveConfig) -> Result<LiveIndex> {
        let isa = config.isa.checked()?;
        let dims = file.dims();
        let live = Live::new(
            Arc::new(Base::new(file, false)),
            ann.map(Arc::new),
            isa,
            config.planner,
            config.max_chunk_rows,
            0,
        );
        Ok(LiveIndex {
            inner: Arc::new(Inner {
                snap: ArcSwap::new(live.snapshot()),
                writer: Mutex::new(Writer {
                    live,
                    log: None,
                    merge_no: 0,
                }),
                config,
                dims,
                titles: None,
                merges: AtomicU64::new(0),
                merge_running: AtomicBool::new(false),
                last_merge: Mutex::new((None, None)),
                failed_at: Mutex::new(None),
                instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            }),
        })
    }

    /// Serves titles from `titles` (before the index is shared).
    pub fn with_titles(mut self, titles: Arc<dyn TitleSource>) -> Result<LiveIndex> {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.titles = Some(titles),
            None => {
                return Err(Error::InvalidArgument(
                    "titles must be set before the live index is shared".into(),
                ));
            }
        }
        Ok(self)
    }

    /// Sets the HNSW search beam width (`ef`) of the current graph.
    pub fn set_expansion_search(&self, ef: usize) {
        if let Some(a) = &self.inner.snap.load().ann {
            a.set_expansion_search(ef);
        }
    }

    /// The base file searches use now.
    pub fn base(&self) -> Arc<IndexFile> {
        self.inner.snap.load().base.file.clone()
    }

    /// The best `n` live rows for `query` by an exact scan (no `k` limit:
    /// audiences), among the rows `filter` admits, best first.
    pub fn exact_top(&self, query: &[f32], n: usize, filter: &Filter) -> Result<Vec<SearchHit>> {
        let snap = self.inner.snap.load_full();
        crate::search::check_params(
            snap.dims(),
            query,
            &SearchParams {
                k: 1,
                ..SearchParams::default()
            },
        )?;
        if query.len() != snap.dims() {
            return Err(Error::InvalidArgument("exact_top takes one query".into()));
        }
        let adm = snap.resolve(filter)?;
        if n == 0 || adm.count == 0 {
            return Ok(Vec::new());
        }
        Ok(snap
            .exact(query, n.min(adm.count), &adm)?
            .pop()
            .unwrap_or_default())
    }

    /// Runs a merge now on this thread (see the module docs). `Ok(None)`
    /// when one is already running.
    pub fn merge_now(&self) -> Result<Option<MergeReport>> {
        if self.inner.merge_running.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let r = self.inner.merge();
        self.inner.finish_merge(&r);
        r.map(Some)
    }

    /// Blocks until no merge runs (tests, shutdown).
    pub fn wait_for_merge(&self) {
        while self.inner.merge_running.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snap.load_full()
    }
}

impl Inner {
    fn publish(&self, live: &Live) {
        self.snap.store(live.snapshot());
    }

    fn overlay_due(&self, w: &Writer) -> bool {
        let Some(_) = &self.config.merge_dir else {
            return false;
        };
        if w.log.is_some() || self.merge_running.load(Ordering::Acquire) {
            return false;
        }
        if lock(&self.failed_at).is_some_and(|t| t.elapsed() < MERGE_RETRY) {
            return false;
        }
        let overlay = w.live.delta_rows().max(w.live.base_dead);
        overlay >= self.config.min_merge_rows
            && overlay as f64 >= self.config.merge_share * w.live.base.rows() as f64
    }

    fn finish_merge(&self, r: &Result<MergeReport>) {
        {
            let mut last = lock(&self.last_merge);
            match r {
                Ok(m) => {
                    self.merges.fetch_add(1, Ordering::AcqRel);
                    last.0 = Some(m.clone());
                    *lock(&self.failed_at) = None;
                }
                Err(e) => {
                    last.1 = Some(e.to_string());
                    *lock(&self.failed_at) = Some(Instant::now());
                }
            }
        }
        self.merge_running.store(false, Ordering::Release);
    }

    fn spawn_merge(self: &Arc<Self>) {
        if self.merge_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("live-merge".into())
            .spawn(move || {
                let r = inner.merge();
                inner.finish_merge(&r);
            });
        if let Err(e) = spawned {
            self.finish_merge(&Err(Error::InvalidArgument(format!(
                "cannot start the merge thread: {e}"
            ))));
        }
    }

    /// Applies a batch to `live` including its HNSW work and chunk
    /// concatenation (no publication: the merge's private state).
    fn replay(live: &mut Live, ops: &[LiveOp]) -> Result<()> {
        let (work, _, _) = live.stage(ops)?;
        let _ = live.run_ann(work);
        live.compact()?;
        Ok(())
    }

    fn merge(&self) -> Result<MergeReport> {
        let t0 = Instant::now();
        let dir = self.config.merge_dir.clone().ok_or_else(|| {
            Error::InvalidArgument("this live index has no merge_dir to merge into".into())
        })?;
        std::fs::create_dir_all(&dir).map_err(crate::error::io(&dir))?;
        // 1. Under the writer lock: the rows to merge, a copy of the graph
        //    that has exactly them, and the start of the catch-up log.
        let (snap, payload, no) = {
            let mut w = lock(&self.writer);
            let payload = match &w.live.ann {
                Some(a) => Some(a.save()?),
                None => None,
            };
            w.log = Some(Vec::new());
            w.merge_no += 1;
            (w.live.snapshot(), payload, w.merge_no)
        };
        let r = self.merge_from(&dir, &snap, payload, no, t0);
        if r.is_err() {
            lock(&self.writer).log = None;
        }
        r
    }

    fn merge_from(
        &self,
        dir: &Path,
        snap: &Arc<Snapshot>,
        payload: Option<Vec<u8>>,
        no: u64,
        t0: Instant,
    ) -> Result<MergeReport> {
        // 2. Off the lock: the new file and the renumbered graph.
        let path = dir.join(format!(
            "users.live-{}-{}-{no}.index",
            std::process::id(),
            self.instance
        ));
        let merged = merge::write_merged(snap, &path)?;
        let file = match IndexFile::open(&path, self.dims) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        // From here the file belongs to its Base: removed when dropped.
        let base = Arc::new(Base::new(file, true));
        let write_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let ann = match (&snap.ann, payload) {
            (Some(old), Some(p)) => {
                let a = old.copy_from(&p, ann_room(base.rows(), &self.config))?;
                drop(p);
                for &(from, to) in &merged.renames {
                    a.rename(from as u64, to as u64)?;
                }
                Some(Arc::new(a))
            }
            _ => None,
        };
        let ann_ms = t1.elapsed().as_secs_f64() * 1e3;
        let mut live = Live::new(
            base,
            ann,
            snap.isa,
            snap.planner,
            self.config.max_chunk_rows,
            snap.seq,
        );
        // 3. Catch up with the updates that arrived meanwhile: off the lock
        //    while they are many, then the rest under it, and swap.
        let mut caught_up = 0;
        loop {
            let mut w = lock(&self.writer);
            let log = w.log.as_mut().map(std::mem::take).unwrap_or_default();
            caught_up += log.len();
            if log.len() <= 1024 {
                Inner::replay(&mut live, &log)?;
                live.seq = w.live.seq + 1;
                self.publish(&live);
                w.live = live;
                w.log = None;
                break;
            }
            drop(w);
            Inner::replay(&mut live, &log)?;
        }
        Ok(MergeReport {
            path,
            rows: merged.summary.rows,
            write_ms,
            ann_ms,
            caught_up,
            total_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }
}

impl LiveUpdates for LiveIndex {
    fn apply(&self, ops: Vec<LiveOp>) -> Result<LiveApplied> {
        let inner = &self.inner;
        let mut w = lock(&inner.writer);
        w.live.validate(&ops)?;
        let (work, upserted, deleted) = w.live.stage(&ops)?;
        inner.publish(&w.live);
        let seq = w.live.seq;
        let ann_errors = w.live.run_ann(work);
        if w.live.compact()? {
            inner.publish(&w.live);
        }
        if let Some(log) = &mut w.log {
            log.extend(ops);
        }
        let due = inner.overlay_due(&w);
        drop(w);
        if due {
            inner.spawn_merge();
        }
        Ok(LiveApplied {
            upserted,
            deleted,
            seq,
            ann_errors,
        })
    }

    fn stats(&self) -> LiveStats {
        let snap = self.snapshot();
        let (last_merge, last_merge_error) = lock(&self.inner.last_merge).clone();
        LiveStats {
            base_rows: snap.base.rows(),
            live_rows: snap.len(),
            delta_rows: snap.slots as usize,
            delta_live: snap.delta_live,
            masked_base_rows: snap.base_dead,
            chunks: snap.chunks.len(),
            delta_bytes: snap.delta_bytes(),
            seq: snap.seq,
            merges: self.inner.merges.load(Ordering::Acquire),
            merging: self.inner.merge_running.load(Ordering::Acquire),
            last_merge,
            last_merge_error,
        }
    }
}

impl SearchBackend for LiveIndex {
    fn name(&self) -> &str {
        "live"
    }

    fn dims(&self) -> usize {
        self.inner.dims
    }

    fn len(&self) -> usize {
        self.inner.snap.load().len()
    }

    fn has_ann(&self) -> bool {
        self.inner.snap.load().ann.is_some()
    }

    fn search(&self, queries: &[f32], params: &SearchParams) -> Result<Vec<QueryResult>> {
        if params.k > MAX_K {
            return Err(Error::InvalidArgument(format!(
                "k = {} not in 1..={MAX_K}",
                params.k
            )));
        }
        self.snapshot().search(queries, params)
    }

    fn vector_of(&self, id: &str) -> Result<Option<(u32, Vec<f32>)>> {
        let snap = self.snapshot();
        Ok(snap.locate(id).and_then(|r| snap.vector(r).map(|v| (r, v))))
    }

    fn attribute_names(&self) -> Vec<String> {
        self.snapshot().attribute_names()
    }

    fn has_attribute(&self, attribute: &str) -> bool {
        self.inner.snap.load().has_attribute(attribute)
    }

    fn attributes_of(&self, id: &str) -> Result<Option<BTreeMap<String, Vec<String>>>> {
        let snap = self.snapshot();
        Ok(snap.locate(id).map(|r| snap.attributes(r)))
    }

    fn title_of(&self, id: &str) -> Option<String> {
        self.inner.titles.as_ref()?.title_of(id)
    }

    fn bytes(&self) -> u64 {
        let snap = self.snapshot();
        snap.base.file.file_len() + snap.delta_bytes() as u64
    }

    fn live(&self) -> Option<&dyn LiveUpdates> {
        Some(self)
    }
}
