//! The search backend trait, the local backend (exact scan + optional ANN)
//! with its per-query planner, and the lookalike helpers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use profiled_kernels::Isa;
use profiled_kernels::scan::{self, TopK};

use crate::backend::{LazyRows, TitleSource};
use crate::error::{Error, Result};
use crate::file::IndexFile;
use crate::filter::{Candidates, Filter, RowSet};

/// Largest `k` accepted.
pub const MAX_K: usize = 10_000;

/// What a search asks for (the same for every query of a batch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchParams {
    /// Hits per query (`1 ..= MAX_K`).
    pub k: usize,
    /// Force the exact path.
    pub exact: bool,
    /// Which rows may be returned.
    pub filter: Filter,
}

/// Which path answered a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchPath {
    /// Exact scan of every row (exclusions applied by over-fetching).
    ExactScan,
    /// Exact scan of an explicit candidate list.
    ExactCandidates,
    /// HNSW (filtered by predicate when a filter is set).
    Ann,
    /// HNSW ran, visited more nodes than there are candidates (or returned
    /// too few hits), and the exact candidate scan answered instead.
    AnnFallbackExact,
}

impl SearchPath {
    /// Stable lower-case name (for responses and metrics).
    pub fn name(self) -> &'static str {
        match self {
            SearchPath::ExactScan => "exact_scan",
            SearchPath::ExactCandidates => "exact_candidates",
            SearchPath::Ann => "ann",
            SearchPath::AnnFallbackExact => "ann_fallback_exact",
        }
    }

    /// Whether the answer is exact.
    pub fn is_exact(self) -> bool {
        !matches!(self, SearchPath::Ann)
    }
}

/// One returned row.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The row's id.
    pub id: String,
    /// The row number in the index.
    pub row: u32,
    /// Inner product with the query (cosine when both are normalised).
    pub score: f32,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Best first (score descending, then row ascending on exact paths).
    pub hits: Vec<SearchHit>,
    /// Which path ran.
    pub path: SearchPath,
    /// Rows the filter admitted.
    pub candidates: usize,
    /// Nodes the filtered ANN search visited, when it ran.
    pub ann_visited: Option<usize>,
}

/// A similarity search engine over one index, and everything Search needs
/// per row: attribute values, titles, users' seen items, stored vectors. The
/// server talks to this trait only (rows are named by id, never by a local
/// row number), so another engine (e.g. a remote vector database) can be
/// added with a [`BackendFactory`](crate::BackendFactory) without touching
/// the server.
pub trait SearchBackend: Send + Sync {
    /// A short name for logs and responses ("local", "qdrant", …).
    fn name(&self) -> &str;
    /// Dimensions of vectors and queries.
    fn dims(&self) -> usize;
    /// Number of rows.
    fn len(&self) -> usize;
    /// Whether there are no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether an approximate path is available.
    fn has_ann(&self) -> bool;
    /// Searches `queries` (row-major, `dims` each); one result per query.
    fn search(&self, queries: &[f32], params: &SearchParams) -> Result<Vec<QueryResult>>;
    /// The stored vector and row of `id`, when present.
    fn vector_of(&self, id: &str) -> Result<Option<(u32, Vec<f32>)>>;
    /// Attribute names of the rows, sorted.
    fn attribute_names(&self) -> Vec<String>;
    /// Whether the rows carry `attribute` (e.g.
    /// [`SEEN_ITEMS_ATTRIBUTE`](crate::SEEN_ITEMS_ATTRIBUTE)).
    fn has_attribute(&self, attribute: &str) -> bool;
    /// Every attribute value of the row `id`, by attribute name (values
    /// sorted); `None` when `id` is not in the index.
    fn attributes_of(&self, id: &str) -> Result<Option<BTreeMap<String, Vec<String>>>>;
    /// The values of `attribute` for the row `id`: `None` when `id` is not
    /// in the index, an empty list when the row has no such value.
    fn values_of(&self, id: &str, attribute: &str) -> Result<Option<Vec<String>>> {
        Ok(self
            .attributes_of(id)?
            .map(|mut a| a.remove(attribute).unwrap_or_default()))
    }
    /// The display title of `id`, when the backend knows one.
    fn title_of(&self, id: &str) -> Option<String>;
    /// Bytes the index occupies (mapped files and sidecars, or memory).
    fn bytes(&self) -> u64;
    /// The update side of a backend whose rows change (the live users
    /// index); `None` for an immutable one.
    fn live(&self) -> Option<&dyn crate::live::LiveUpdates> {
        None
    }
}

/// Planner thresholds (see docs/search.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannerConfig {
    /// Exact when candidates × dims is at most this.
    pub max_exact_elements: usize,
    /// Exact when candidates are under this fraction of the rows.
    pub max_exact_fraction: f64,
    /// Up to this many excluded rows are handled by over-fetching a full
    /// scan (k + excluded); more become an explicit candidate list.
    pub max_overfetch: usize,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            max_exact_elements: 2_000_000,
            max_exact_fraction: 0.05,
            max_overfetch: 4096,
        }
    }
}

/// The in-process backend: an mmap'd [`IndexFile`], exact SIMD scans and,
/// with the `ann` feature, an optional HNSW sidecar.
pub struct LocalBackend {
    index: Arc<IndexFile>,
    #[cfg(feature = "ann")]
    ann: Option<crate::ann::AnnIndex>,
    planner: PlannerConfig,
    isa: Isa,
    rows: LazyRows,
    titles: Option<Arc<dyn TitleSource>>,
    bytes: u64,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("path", &self.index.path())
            .field("rows", &self.index.len())
            .field("has_ann", &self.has_ann())
            .field("planner", &self.planner)
            .field("isa", &self.isa)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl LocalBackend {
    /// Exact-only backend over `index`.
    pub fn new(index: Arc<IndexFile>) -> LocalBackend {
        let bytes = index.file_len();
        LocalBackend {
            index,
            #[cfg(feature = "ann")]
            ann: None,
            planner: PlannerConfig::default(),
            isa: Isa::active(),
            rows: LazyRows::default(),
            titles: None,
            bytes,
        }
    }

    /// Opens `path` (expecting `dims`) and, when present and the `ann`
    /// feature is on, its `.hnsw` sidecar.
    pub fn open(path: &Path, dims: usize) -> Result<LocalBackend> {
        let index = Arc::new(IndexFile::open(path, dims)?);
        #[allow(unused_mut)]
        let mut b = LocalBackend::new(index);
        #[cfg(feature = "ann")]
        {
            let side = crate::ann::sidecar_path(path);
            if side.exists() {
                b.ann = Some(crate::ann::AnnIndex::open(&side, &b.index)?);
                b.bytes += std::fs::metadata(&side).map_or(0, |m| m.len());
            }
        }
        Ok(b)
    }

    /// Serves row titles from `titles` ([`SearchBackend::title_of`]).
    pub fn with_titles(mut self, titles: Arc<dyn TitleSource>) -> LocalBackend {
        self.titles = Some(titles);
        self
    }

    /// Attaches an ANN index (already bound to this index file).
    #[cfg(feature = "ann")]
    pub fn with_ann(mut self, ann: crate::ann::AnnIndex) -> LocalBackend {
        self.ann = Some(ann);
        self
    }

    /// The attached ANN index, if any.
    #[cfg(feature = "ann")]
    pub fn ann(&self) -> Option<&crate::ann::AnnIndex> {
        self.ann.as_ref()
    }

    /// Replaces the planner thresholds.
    pub fn with_planner(mut self, planner: PlannerConfig) -> LocalBackend {
        self.planner = planner;
        self
    }

    /// Uses `isa` for the scans instead of the process default.
    pub fn with_isa(mut self, isa: Isa) -> Result<LocalBackend> {
        self.isa = isa.checked()?;
        Ok(self)
    }

    /// The index file.
    pub fn index(&self) -> &Arc<IndexFile> {
        &self.index
    }

    fn hit(&self, row: u32, score: f32) -> SearchHit {
        SearchHit {
            id: self.index.id(row).unwrap_or("").to_string(),
            row,
            score,
        }
    }

    /// Whether the planner would take the exact path for this many candidates.
    pub fn plans_exact(&self, candidates: usize, exact: bool) -> bool {
        let rows = self.index.len();
        exact
            || !self.has_ann()
            || candidates.saturating_mul(self.index.dims()) <= self.planner.max_exact_elements
            || (candidates as f64) < self.planner.max_exact_fraction * rows as f64
    }

    /// Exact scan of all rows except `excluded` (sorted), by over-fetching.
    fn exact_all(
        &self,
        queries: &[f32],
        k: usize,
        excluded: &[u32],
    ) -> Result<Vec<Vec<SearchHit>>> {
        let nq = queries.len() / self.index.dims();
        let fetch = k.saturating_add(excluded.len());
        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(fetch)).collect();
        scan::scan(self.isa, &self.index.blocked(), queries, &mut tops)?;
        Ok(tops
            .into_iter()
            .map(|t| {
                t.into_sorted()
                    .into_iter()
                    .filter(|h| excluded.binary_search(&h.row).is_err())
                    .take(k)
                    .map(|h| self.hit(h.row, h.score))
                    .collect()
            })
            .collect())
    }

    /// Exact scan of an explicit sorted candidate list.
    fn exact_rows(&self, queries: &[f32], k: usize, rows: &[u32]) -> Result<Vec<Vec<SearchHit>>> {
        let dims = self.index.dims();
        let nq = queries.len() / dims;
        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        // A gather costs ~2·dims bytes per candidate from the row-major copy,
        // a block scan 32·dims per touched block: gather while sparse.
        match self.index.row_major() {
            Some(rm) if rows.len() * 8 < self.index.len() => {
                scan::scan_candidates_rows(self.isa, rm, dims, rows, queries, &mut tops)?
            }
            _ => scan::scan_candidates_blocked(
                self.isa,
                &self.index.blocked(),
                rows,
                queries,
                &mut tops,
            )?,
        }
        Ok(tops
            .into_iter()
            .map(|t| {
                t.into_sorted()
                    .into_iter()
                    .map(|h| self.hit(h.row, h.score))
                    .collect()
            })
            .collect())
    }

    fn exact(
        &self,
        queries: &[f32],
        k: usize,
        c: &Candidates,
    ) -> Result<(Vec<Vec<SearchHit>>, SearchPath)> {
        match c {
            Candidates::AllExcept(x) if x.len() <= self.planner.max_overfetch => {
                Ok((self.exact_all(queries, k, x)?, SearchPath::ExactScan))
            }
            Candidates::Only(rows) => Ok((
                self.exact_rows(queries, k, rows)?,
                SearchPath::ExactCandidates,
            )),
            Candidates::AllExcept(_) => Ok((
                self.exact_rows(queries, k, &c.to_rows(self.index.len()))?,
                SearchPath::ExactCandidates,
            )),
        }
    }
}

pub(crate) fn check_params(dims: usize, queries: &[f32], params: &SearchParams) -> Result<usize> {
    if params.k == 0 || params.k > MAX_K {
        return Err(Error::InvalidArgument(format!(
            "k = {} not in 1..={MAX_K}",
            params.k
        )));
    }
    if queries.is_empty() || !queries.len().is_multiple_of(dims) {
        return Err(Error::InvalidArgument(format!(
            "queries hold {} values, not a positive multiple of {dims}",
            queries.len()
        )));
    }
    if queries.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(
            "query has a non-finite value".into(),
        ));
    }
    Ok(queries.len() / dims)
}

impl SearchBackend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn dims(&self) -> usize {
        self.index.dims()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn has_ann(&self) -> bool {
        #[cfg(feature = "ann")]
        {
            self.ann.is_some()
        }
        #[cfg(not(feature = "ann"))]
        {
            false
        }
    }

    fn search(&self, queries: &[f32], params: &SearchParams) -> Result<Vec<QueryResult>> {
        let dims = self.index.dims();
        let nq = check_params(dims, queries, params)?;
        let k = params.k;
        let cands = params.filter.resolve(&self.index)?;
        let count = cands.count(self.index.len());
        if count == 0 {
            return Ok((0..nq)
                .map(|_| QueryResult {
                    hits: Vec::new(),
                    path: SearchPath::ExactCandidates,
                    candidates: 0,
                    ann_visited: None,
                })
                .collect());
        }
        let wrap = |(hits, path): (Vec<Vec<SearchHit>>, SearchPath)| -> Vec<QueryResult> {
            hits.into_iter()
                .map(|hits| QueryResult {
                    hits,
                    path,
                    candidates: count,
                    ann_visited: None,
                })
                .collect()
        };
        if self.plans_exact(count, params.exact) {
            return Ok(wrap(self.exact(queries, k, &cands)?));
        }
        #[cfg(feature = "ann")]
        if let Some(ann) = &self.ann {
            let filtered = !matches!(&cands, Candidates::AllExcept(x) if x.is_empty());
            let set = filtered.then(|| RowSet::from_candidates(&cands, self.index.len()));
            let mut out = Vec::with_capacity(nq);
            for q in queries.chunks_exact(dims) {
                // usearch has a fixed number of thread slots (one per core):
                // a search beyond them fails, and is answered exactly.
                let ans = match ann.search(q, k, set.as_ref()) {
                    Ok(a) => a,
                    // No hits: the too-few check below answers exactly.
                    Err(_) => crate::ann::AnnAnswer {
                        hits: Vec::new(),
                        visited: None,
                    },
                };
                let hits: Vec<SearchHit> = ans
                    .hits
                    .iter()
                    .filter(|(r, _)| set.as_ref().is_none_or(|s| s.contains(*r as u64)))
                    .map(|&(r, s)| self.hit(r, s))
                    .collect();
                let too_many = ans.visited.is_some_and(|v| v > count);
                let too_few = hits.len() < k.min(count);
                if too_many || too_few {
                    let (mut h, _) = self.exact(q, k, &cands)?;
                    out.push(QueryResult {
                        hits: h.pop().unwrap_or_default(),
                        path: SearchPath::AnnFallbackExact,
                        candidates: count,
                        ann_visited: ans.visited,
                    });
                } else {
                    out.push(QueryResult {
                        hits,
                        path: SearchPath::Ann,
                        candidates: count,
                        ann_visited: ans.visited,
                    });
                }
            }
            return Ok(out);
        }
        let _ = RowSet::from_candidates;
        Ok(wrap(self.exact(queries, k, &cands)?))
    }

    fn vector_of(&self, id: &str) -> Result<Option<(u32, Vec<f32>)>> {
        Ok(self
            .index
            .row_of(id)
            .and_then(|r| self.index.vector(r).map(|v| (r, v))))
    }

    fn attribute_names(&self) -> Vec<String> {
        self.index.attributes().map(str::to_string).collect()
    }

    fn has_attribute(&self, attribute: &str) -> bool {
        self.index.has_attribute(attribute)
    }

    fn attributes_of(&self, id: &str) -> Result<Option<BTreeMap<String, Vec<String>>>> {
        Ok(self
            .index
            .row_of(id)
            .map(|row| self.rows.get(&self.index).row(row)))
    }

    fn title_of(&self, id: &str) -> Option<String> {
        self.titles.as_ref()?.title_of(id)
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Mean of the L2-normalised `seeds`, re-normalised: the query of a
/// lookalike search for a seed set. Zero vectors are skipped; an empty or
/// all-zero seed set is an error.
pub fn seed_centroid(seeds: &[&[f32]]) -> Result<Vec<f32>> {
    let dims = seeds
        .first()
        .map(|s| s.len())
        .ok_or_else(|| Error::InvalidArgument("empty seed set".into()))?;
    let mut acc = vec![0.0f64; dims];
    let mut used = 0;
    for s in seeds {
        if s.len() != dims {
            return Err(Error::InvalidArgument(
                "seed vectors of different lengths".into(),
            ));
        }
        if s.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(
                "seed vector has a non-finite value".into(),
            ));
        }
        let n = s
            .iter()
            .map(|v| (*v as f64) * (*v as f64))
            .sum::<f64>()
            .sqrt();
        if n > 0.0 {
            for (a, v) in acc.iter_mut().zip(*s) {
                *a += *v as f64 / n;
            }
            used += 1;
        }
    }
    let n = acc.iter().map(|v| v * v).sum::<f64>().sqrt();
    if used == 0 || n == 0.0 {
        return Err(Error::InvalidArgument(
            "seed vectors are all zero or cancel out".into(),
        ));
    }
    Ok(acc.iter().map(|v| (v / n) as f32).collect())
}

/// Lookalikes of one query vector (no exclusion beyond `params.filter`).
pub fn lookalike_by_vector(
    backend: &dyn SearchBackend,
    vector: &[f32],
    params: &SearchParams,
) -> Result<QueryResult> {
    let q = seed_centroid(&[vector])?;
    backend
        .search(&q, params)?
        .pop()
        .ok_or_else(|| Error::InvalidArgument("no result".into()))
}

/// Lookalikes of a seed set of vectors: the query is [`seed_centroid`].
/// Pass the seeds' ids in `params.filter.deny_ids` to exclude them.
pub fn lookalike_by_vectors(
    backend: &dyn SearchBackend,
    seeds: &[&[f32]],
    params: &SearchParams,
) -> Result<QueryResult> {
    let q = seed_centroid(seeds)?;
    backend
        .search(&q, params)?
        .pop()
        .ok_or_else(|| Error::InvalidArgument("no result".into()))
}

/// Lookalikes of indexed rows given by id (one user or a seed set): looks
/// the seed vectors up, searches their centroid and excludes the seeds.
/// Unknown ids are an error ([`Error::UnknownId`]).
pub fn lookalike_by_ids(
    backend: &dyn SearchBackend,
    ids: &[&str],
    params: &SearchParams,
) -> Result<QueryResult> {
    let mut vectors = Vec::with_capacity(ids.len());
    for id in ids {
        let (_, v) = backend
            .vector_of(id)?
            .ok_or_else(|| Error::UnknownId(id.to_string()))?;
        vectors.push(v);
    }
    let refs: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
    let mut p = params.clone();
    p.filter.deny_ids.extend(ids.iter().map(|s| s.to_string()));
    lookalike_by_vectors(backend, &refs, &p)
}
