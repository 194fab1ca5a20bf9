//! One consistent view of the live index, as a search sees it: the base
//! file with the bitmap of its rows still live, the delta chunks with
//! theirs, the attribute terms and the HNSW graph. Searches load the current
//! snapshot once (`ArcSwap`) and never wait for the writer.
//!
//! Row numbers ("live rows"): base rows `0 .. B`, then delta slot `s` is row
//! `B + s`. They are stable until the next merge renumbers everything, and
//! are the HNSW keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use profiled_kernels::Isa;
use profiled_kernels::scan::{self, TopK};

use super::Ann;
use super::chunk::{Chunk, bit, clear, count};
use super::terms::Terms;
use crate::backend::LazyRows;
use crate::error::{Error, Result};
use crate::file::IndexFile;
use crate::filter::{Condition, Filter, difference, intersect, sorted_unique};
use crate::search::{
    PlannerConfig, QueryResult, SearchHit, SearchParams, SearchPath, check_params,
};

/// The immutable base of a live index: an index file (the generation's,
/// or one a merge wrote).
#[derive(Debug)]
pub(crate) struct Base {
    pub(crate) file: Arc<IndexFile>,
    rows: LazyRows,
    /// Remove the file once no snapshot uses it (a merge's output).
    owned: bool,
}

impl Base {
    pub(crate) fn new(file: Arc<IndexFile>, owned: bool) -> Base {
        Base {
            file,
            rows: LazyRows::default(),
            owned,
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.file.len()
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        if self.owned {
            // The mapping stays valid after the unlink (Linux keeps the
            // inode until the last map goes); nothing else reads the path.
            let _ = std::fs::remove_file(self.file.path());
        }
    }
}

/// The rows of the base a filter admits.
#[derive(Debug)]
enum BaseAdmit {
    /// Every base row (none dead, no filter).
    All,
    /// The live rows (no filter).
    Live,
    /// The rows of this bitmap.
    Bits(Vec<u64>),
    /// These rows (sorted).
    Rows(Vec<u32>),
}

/// What a filter admits in one snapshot.
#[derive(Debug)]
pub(crate) struct Admitted {
    base: BaseAdmit,
    /// Per chunk, its admitted local rows (`None`: none).
    chunks: Vec<Option<Vec<u64>>>,
    pub(crate) count: usize,
}

/// A snapshot (see the module docs).
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) base: Arc<Base>,
    /// Bit `r` set ⇔ base row `r` is live (not replaced or deleted).
    pub(crate) base_live: Arc<Vec<u64>>,
    pub(crate) base_dead: usize,
    pub(crate) chunks: Vec<Chunk>,
    /// Delta slots used (live or dead).
    pub(crate) slots: u32,
    pub(crate) delta_live: usize,
    pub(crate) terms: Arc<Terms>,
    pub(crate) ann: Option<Arc<Ann>>,
    /// Publication number (grows by one per published change).
    pub(crate) seq: u64,
    pub(crate) isa: Isa,
    pub(crate) planner: PlannerConfig,
}

fn cond_attribute(c: &Condition) -> &str {
    match c {
        Condition::Equals { attribute, .. }
        | Condition::In { attribute, .. }
        | Condition::NotIn { attribute, .. } => attribute,
    }
}

impl Snapshot {
    pub(crate) fn dims(&self) -> usize {
        self.base.file.dims()
    }

    fn base_rows(&self) -> usize {
        self.base.rows()
    }

    /// Live rows.
    pub(crate) fn len(&self) -> usize {
        self.base_rows() - self.base_dead + self.delta_live
    }

    /// The chunk holding delta `slot`, with the slot's row in it.
    fn chunk_of(&self, slot: u32) -> Option<(usize, u32)> {
        if slot >= self.slots {
            return None;
        }
        let i = self
            .chunks
            .partition_point(|c| c.start <= slot)
            .checked_sub(1)?;
        let c = self.chunks.get(i)?;
        let local = slot - c.start;
        ((local as usize) < c.data.len()).then_some((i, local))
    }

    /// The live row of `id`, if `id` is in the index now.
    pub(crate) fn locate(&self, id: &str) -> Option<u32> {
        let b = self.base_rows() as u32;
        for c in self.chunks.iter().rev() {
            if let Some(local) = c.data.latest(id) {
                // The newest row of an id is its state: live, or deleted.
                return c.is_live(local).then_some(b + c.start + local);
            }
        }
        self.base
            .file
            .row_of(id)
            .filter(|&r| bit(&self.base_live, r as usize))
    }

    /// The id of live row `row` (dead rows too).
    pub(crate) fn id_of(&self, row: u32) -> Option<&str> {
        let b = self.base_rows();
        if (row as usize) < b {
            return self.base.file.id(row);
        }
        let (i, local) = self.chunk_of(row - b as u32)?;
        self.chunks[i].data.id(local).map(|s| &**s)
    }

    /// The stored vector of live row `row`.
    pub(crate) fn vector(&self, row: u32) -> Option<Vec<f32>> {
        let b = self.base_rows();
        if (row as usize) < b {
            return self.base.file.vector(row);
        }
        let (i, local) = self.chunk_of(row - b as u32)?;
        self.chunks[i].data.vector(local)
    }

    /// Every attribute value of live row `row`, by name (values sorted).
    pub(crate) fn attributes(&self, row: u32) -> BTreeMap<String, Vec<String>> {
        let b = self.base_rows();
        if (row as usize) < b {
            return self.base.rows.get(&self.base.file).row(row);
        }
        match self.chunk_of(row - b as u32) {
            Some((i, local)) => self.terms.decode(self.chunks[i].data.row_terms(local)),
            None => BTreeMap::new(),
        }
    }

    /// Approximate heap bytes of the overlay (delta chunks and bitmaps).
    pub(crate) fn delta_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.data.bytes() + c.live.len() * 8)
            .sum::<usize>()
            + self.base_live.len() * 8
    }

    /// Whether the base or any delta row has `attribute`.
    pub(crate) fn has_attribute(&self, attribute: &str) -> bool {
        self.base.file.has_attribute(attribute) || self.terms.has_attribute(attribute)
    }

    /// Attribute names of the base and the delta, sorted.
    pub(crate) fn attribute_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.base.file.attributes().map(str::to_string).collect();
        names.extend(self.terms.attribute_names());
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The rows `filter` admits among the live rows.
    pub(crate) fn resolve(&self, f: &Filter) -> Result<Admitted> {
        for c in &f.conditions {
            let a = cond_attribute(c);
            if !self.has_attribute(a) {
                return Err(Error::UnknownAttribute(a.to_string()));
            }
        }
        let file = &self.base.file;
        let b = self.base_rows();
        let allow: Option<Vec<u32>> = f
            .allow_ids
            .as_ref()
            .map(|ids| sorted_unique(ids.iter().filter_map(|id| self.locate(id)).collect()));
        let mut neg: Vec<u32> = f.deny_ids.iter().filter_map(|id| self.locate(id)).collect();
        neg.extend_from_slice(&f.exclude_rows);
        let neg = sorted_unique(neg);

        // The base: postings of its file, intersected, minus the negatives.
        let mut pos: Vec<Vec<u32>> = Vec::new();
        let split = neg.partition_point(|&r| (r as usize) < b);
        let mut base_neg: Vec<u32> = neg[..split].to_vec();
        for c in &f.conditions {
            match c {
                Condition::Equals { attribute, value } => {
                    pos.push(if file.has_attribute(attribute) {
                        file.postings(attribute, value)?.to_vec()
                    } else {
                        Vec::new()
                    })
                }
                Condition::In { attribute, values } => {
                    let mut u = Vec::new();
                    if file.has_attribute(attribute) {
                        for v in values {
                            u.extend_from_slice(file.postings(attribute, v)?);
                        }
                    }
                    pos.push(sorted_unique(u));
                }
                Condition::NotIn { attribute, values } => {
                    if file.has_attribute(attribute) {
                        for v in values {
                            base_neg.extend_from_slice(file.postings(attribute, v)?);
                        }
                    }
                }
            }
        }
        if let Some(a) = &allow {
            let end = a.partition_point(|&r| (r as usize) < b);
            pos.push(a[..end].to_vec());
        }
        let base_neg = sorted_unique(base_neg);
        let base = if pos.is_empty() {
            if base_neg.is_empty() {
                if self.base_dead == 0 {
                    BaseAdmit::All
                } else {
                    BaseAdmit::Live
                }
            } else {
                let mut bits = (*self.base_live).clone();
                for &r in &base_neg {
                    clear(&mut bits, r as usize);
                }
                BaseAdmit::Bits(bits)
            }
        } else {
            pos.sort_by_key(Vec::len);
            let mut acc = pos.swap_remove(0);
            for p in &pos {
                acc = intersect(&acc, p);
            }
            let mut acc = difference(&acc, &base_neg);
            if self.base_dead > 0 {
                acc.retain(|&r| bit(&self.base_live, r as usize));
            }
            BaseAdmit::Rows(acc)
        };
        let base_count = match &base {
            BaseAdmit::All => b,
            BaseAdmit::Live => b - self.base_dead,
            BaseAdmit::Bits(bits) => count(bits),
            BaseAdmit::Rows(r) => r.len(),
        };

        // The chunks: their postings of the same terms, as bitmaps.
        let terms: Vec<(bool, Vec<u32>)> = f
            .conditions
            .iter()
            .map(|c| match c {
                Condition::Equals { attribute, value } => {
                    (true, self.terms.lookup(attribute, &[value.as_str()]))
                }
                Condition::In { attribute, values } => {
                    let vs: Vec<&str> = values.iter().map(String::as_str).collect();
                    (true, self.terms.lookup(attribute, &vs))
                }
                Condition::NotIn { attribute, values } => {
                    let vs: Vec<&str> = values.iter().map(String::as_str).collect();
                    (false, self.terms.lookup(attribute, &vs))
                }
            })
            .collect();
        let mut total = base_count;
        let mut chunks = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            if c.live_count == 0 {
                chunks.push(None);
                continue;
            }
            let n = c.data.len();
            let lo = b as u32 + c.start;
            let hi = lo + n as u32;
            let mut bits = (*c.live).clone();
            for (positive, t) in &terms {
                if *positive && t.is_empty() {
                    bits.iter_mut().for_each(|w| *w = 0);
                    break;
                }
                if t.is_empty() {
                    continue;
                }
                let mut m = vec![0u64; bits.len()];
                c.data.rows_with_any(t, &mut m);
                for (w, m) in bits.iter_mut().zip(&m) {
                    *w &= if *positive { *m } else { !*m };
                }
            }
            if let Some(a) = &allow {
                let mut m = vec![0u64; bits.len()];
                let from = a.partition_point(|&r| r < lo);
                for &r in a[from..].iter().take_while(|&&r| r < hi) {
                    super::chunk::set(&mut m, (r - lo) as usize);
                }
                for (w, m) in bits.iter_mut().zip(&m) {
                    *w &= *m;
                }
            }
            let from = neg.partition_point(|&r| r < lo);
            for &r in neg[from..].iter().take_while(|&&r| r < hi) {
                clear(&mut bits, (r - lo) as usize);
            }
            let k = count(&bits);
            total += k;
            chunks.push((k > 0).then_some(bits));
        }
        Ok(Admitted {
            base,
            chunks,
            count: total,
        })
    }

    /// Whether `adm` admits live row `key` (the HNSW predicate).
    fn admits(&self, adm: &Admitted, key: u64) -> bool {
        let b = self.base_rows() as u64;
        if key < b {
            return match &adm.base {
                BaseAdmit::All => true,
                BaseAdmit::Live => bit(&self.base_live, key as usize),
                BaseAdmit::Bits(bits) => bit(bits, key as usize),
                BaseAdmit::Rows(r) => r.binary_search(&(key as u32)).is_ok(),
            };
        }
        let Ok(slot) = u32::try_from(key - b) else {
            return false;
        };
        match self.chunk_of(slot) {
            Some((i, local)) => adm
                .chunks
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|bits| bit(bits, local as usize)),
            None => false,
        }
    }

    fn hit(&self, row: u32, score: f32) -> SearchHit {
        SearchHit {
            id: self.id_of(row).unwrap_or("").to_string(),
            row,
            score,
        }
    }

    /// The best `k` admitted rows of each query by an exact scan: the
    /// base with the file's kernels (full, bitmap, or candidate list), each
    /// chunk with the bitmap scan, merged (score descending, then row).
    pub(crate) fn exact(
        &self,
        queries: &[f32],
        k: usize,
        adm: &Admitted,
    ) -> Result<Vec<Vec<SearchHit>>> {
        let dims = self.dims();
        let nq = queries.len() / dims;
        let file = &self.base.file;
        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        match &adm.base {
            BaseAdmit::All => scan::scan(self.isa, &file.blocked(), queries, &mut tops)?,
            BaseAdmit::Live => scan::scan_bitmap(
                self.isa,
                &file.blocked(),
                &self.base_live,
                queries,
                &mut tops,
            )?,
            BaseAdmit::Bits(bits) => {
                scan::scan_bitmap(self.isa, &file.blocked(), bits, queries, &mut tops)?
            }
            BaseAdmit::Rows(rows) if rows.is_empty() => {}
            BaseAdmit::Rows(rows) => match file.row_major() {
                // Gather while sparse (as LocalBackend does).
                Some(rm) if rows.len() * 8 < file.len() => {
                    scan::scan_candidates_rows(self.isa, rm, dims, rows, queries, &mut tops)?
                }
                _ => scan::scan_candidates_blocked(
                    self.isa,
                    &file.blocked(),
                    rows,
                    queries,
                    &mut tops,
                )?,
            },
        }
        let b = self.base_rows() as u32;
        for (c, bits) in self.chunks.iter().zip(&adm.chunks) {
            let Some(bits) = bits else { continue };
            let mut ct: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
            scan::scan_bitmap(self.isa, &c.data.blocked()?, bits, queries, &mut ct)?;
            for (t, c2) in tops.iter_mut().zip(ct) {
                for h in c2.into_sorted() {
                    t.push(h.score, b + c.start + h.row);
                }
            }
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

    /// Whether the planner takes the exact path for `candidates`.
    fn plans_exact(&self, candidates: usize, exact: bool) -> bool {
        exact
            || self.ann.is_none()
            || candidates.saturating_mul(self.dims()) <= self.planner.max_exact_elements
            || (candidates as f64) < self.planner.max_exact_fraction * self.len() as f64
    }

    /// [`SearchBackend::search`](crate::SearchBackend::search) on this
    /// snapshot: the planner of the local backend over the live rows.
    pub(crate) fn search(
        &self,
        queries: &[f32],
        params: &SearchParams,
    ) -> Result<Vec<QueryResult>> {
        let dims = self.dims();
        let nq = check_params(dims, queries, params)?;
        let k = params.k;
        let adm = self.resolve(&params.filter)?;
        let count = adm.count;
        let result = |hits, path, ann_visited| QueryResult {
            hits,
            path,
            candidates: count,
            ann_visited,
        };
        if count == 0 {
            return Ok((0..nq)
                .map(|_| result(Vec::new(), SearchPath::ExactCandidates, None))
                .collect());
        }
        let exact_path = match adm.base {
            BaseAdmit::All | BaseAdmit::Live if params.filter.is_empty() => SearchPath::ExactScan,
            _ => SearchPath::ExactCandidates,
        };
        let ann = match &self.ann {
            Some(a) if !self.plans_exact(count, params.exact) => a,
            _ => {
                return Ok(self
                    .exact(queries, k, &adm)?
                    .into_iter()
                    .map(|h| result(h, exact_path, None))
                    .collect());
            }
        };
        let mut out = Vec::with_capacity(nq);
        for q in queries.chunks_exact(dims) {
            let answer = ann.search(q, k, |key| self.admits(&adm, key));
            let (hits, visited, ok) = match answer {
                Ok(a) => {
                    let hits: Vec<SearchHit> = a
                        .hits
                        .iter()
                        .filter(|(r, _)| self.admits(&adm, *r as u64))
                        .map(|&(r, s)| self.hit(r, s))
                        .collect();
                    let too_many = a.visited.is_some_and(|v| v > count);
                    let too_few = hits.len() < k.min(count);
                    (hits, a.visited, !(too_many || too_few))
                }
                // No free usearch slot, say: answer exactly.
                Err(_) => (Vec::new(), None, false),
            };
            if ok {
                out.push(result(hits, SearchPath::Ann, visited));
            } else {
                let mut h = self.exact(q, k, &adm)?;
                out.push(result(
                    h.pop().unwrap_or_default(),
                    SearchPath::AnnFallbackExact,
                    visited,
                ));
            }
        }
        Ok(out)
    }
}
