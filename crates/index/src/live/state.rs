//! The writer's side of the live index: the current rows (base + masks +
//! chunks) that updates change, the HNSW work they cause, the
//! concatenation of small chunks, and the snapshots it publishes.

use std::collections::HashMap;
use std::sync::Arc;

use profiled_kernels::{Isa, f16};

use super::chunk::{Chunk, ChunkData, NewRow, bit, clear, ones};
use super::snapshot::{Base, Snapshot};
use super::terms::Terms;
use super::{Ann, LiveOp};
use crate::error::{Error, Result};
use crate::search::PlannerConfig;

/// HNSW changes an applied batch implies (run after the snapshot with the
/// exact rows is published).
#[derive(Debug, Default)]
pub(crate) struct AnnWork {
    remove: Vec<u64>,
    add: Vec<(u64, Vec<f32>)>,
}

/// The live rows as the writer keeps them.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) base: Arc<Base>,
    pub(crate) base_live: Arc<Vec<u64>>,
    pub(crate) base_dead: usize,
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) slots: u32,
    pub(crate) delta_live: usize,
    pub(crate) terms: Arc<Terms>,
    pub(crate) ann: Option<Arc<Ann>>,
    pub(crate) seq: u64,
    pub(crate) isa: Isa,
    pub(crate) planner: PlannerConfig,
    /// Chunks are concatenated up to this many rows.
    pub(crate) max_chunk_rows: usize,
}

impl Live {
    /// A live index over `base` with no update yet.
    pub(crate) fn new(
        base: Arc<Base>,
        ann: Option<Arc<Ann>>,
        isa: Isa,
        planner: PlannerConfig,
        max_chunk_rows: usize,
        seq: u64,
    ) -> Live {
        let rows = base.rows();
        Live {
            base,
            base_live: Arc::new(ones(rows)),
            base_dead: 0,
            chunks: Vec::new(),
            slots: 0,
            delta_live: 0,
            terms: Arc::new(Terms::default()),
            ann,
            seq,
            isa,
            planner,
            max_chunk_rows: max_chunk_rows.max(16),
        }
    }

    /// The snapshot of the rows now.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            base: self.base.clone(),
            base_live: self.base_live.clone(),
            base_dead: self.base_dead,
            chunks: self.chunks.clone(),
            slots: self.slots,
            delta_live: self.delta_live,
            terms: self.terms.clone(),
            ann: self.ann.clone(),
            seq: self.seq,
            isa: self.isa,
            planner: self.planner,
        })
    }

    /// The current live row of `id`.
    fn locate(&self, id: &str) -> Option<u32> {
        let b = self.base.rows() as u32;
        for c in self.chunks.iter().rev() {
            if let Some(local) = c.data.latest(id) {
                return c.is_live(local).then_some(b + c.start + local);
            }
        }
        self.base
            .file
            .row_of(id)
            .filter(|&r| bit(&self.base_live, r as usize))
    }

    /// Marks live row `row` dead; `true` when it was live.
    fn kill(&mut self, row: u32) -> bool {
        let b = self.base.rows();
        if (row as usize) < b {
            if !bit(&self.base_live, row as usize) {
                return false;
            }
            let live: &mut Vec<u64> = Arc::make_mut(&mut self.base_live);
            clear(live, row as usize);
            self.base_dead += 1;
            return true;
        }
        let slot = row - b as u32;
        let i = match self
            .chunks
            .partition_point(|c| c.start <= slot)
            .checked_sub(1)
        {
            Some(i) => i,
            None => return false,
        };
        let Some(c) = self.chunks.get_mut(i) else {
            return false;
        };
        if c.kill(slot - c.start) {
            self.delta_live -= 1;
            true
        } else {
            false
        }
    }

    /// Checks a batch before anything of it is applied: ids non-empty,
    /// vectors of `dims` values finite in f16.
    pub(crate) fn validate(&self, ops: &[LiveOp]) -> Result<()> {
        let dims = self.base.file.dims();
        for op in ops {
            match op {
                LiveOp::Upsert(r) => {
                    if r.id.is_empty() {
                        return Err(Error::InvalidArgument("empty id".into()));
                    }
                    if r.vector.len() != dims {
                        return Err(Error::InvalidArgument(format!(
                            "vector for {:?} has {} values, expected {dims}",
                            r.id,
                            r.vector.len()
                        )));
                    }
                    if let Some(v) = r.vector.iter().find(|v| !f16::from_f32(**v).is_finite()) {
                        return Err(Error::InvalidArgument(format!(
                            "vector for {:?} has a value ({v}) that is not finite in f16",
                            r.id
                        )));
                    }
                }
                LiveOp::Delete(id) => {
                    if id.is_empty() {
                        return Err(Error::InvalidArgument("empty id".into()));
                    }
                }
            }
        }
        let new_rows = ops
            .iter()
            .filter(|o| matches!(o, LiveOp::Upsert(_)))
            .count();
        let room = (u32::MAX as usize - 1)
            .saturating_sub(self.base.rows())
            .saturating_sub(self.slots as usize);
        if new_rows > room {
            return Err(Error::InvalidArgument(
                "the live index is out of row numbers: merge it first".into(),
            ));
        }
        Ok(())
    }

    /// Applies a validated batch to the exact rows (in order: a later op on
    /// the same id wins); returns the HNSW work and (upserts, deletes that
    /// found a row).
    pub(crate) fn stage(&mut self, ops: &[LiveOp]) -> Result<(AnnWork, usize, usize)> {
        // Everything that can fail runs before the first change.
        let mut terms_of = Vec::new();
        for op in ops {
            if let LiveOp::Upsert(r) = op {
                terms_of.push(self.terms.intern_row(&r.attributes)?);
            }
        }
        let mut terms_of = terms_of.into_iter();
        let mut work = AnnWork::default();
        let mut pending: Vec<Option<NewRow>> = Vec::new();
        let mut pending_of: HashMap<&str, usize> = HashMap::new();
        let (mut upserts, mut deletes) = (0, 0);
        for op in ops {
            let id = op.id();
            if let Some(p) = pending_of.remove(id) {
                pending[p] = None;
                if matches!(op, LiveOp::Delete(_)) {
                    deletes += 1;
                }
            } else if let Some(row) = self.locate(id)
                && self.kill(row)
            {
                work.remove.push(row as u64);
                if matches!(op, LiveOp::Delete(_)) {
                    deletes += 1;
                }
            }
            if let LiveOp::Upsert(r) = op {
                let terms = terms_of.next().unwrap_or_default();
                pending_of.insert(id, pending.len());
                pending.push(Some(NewRow {
                    id: Arc::from(r.id.as_str()),
                    vector: r.vector.iter().map(|v| f16::from_f32(*v)).collect(),
                    terms,
                }));
                upserts += 1;
            }
        }
        let rows: Vec<NewRow> = pending.into_iter().flatten().collect();
        if !rows.is_empty() {
            let b = self.base.rows() as u64;
            for (i, r) in rows.iter().enumerate() {
                let key = b + self.slots as u64 + i as u64;
                work.add
                    .push((key, r.vector.iter().map(|h| h.to_f32()).collect()));
            }
            let data = ChunkData::build(self.base.file.dims(), &rows)?;
            self.chunks.push(Chunk::new(self.slots, data));
            self.slots += rows.len() as u32;
            self.delta_live += rows.len();
        }
        self.seq += 1;
        Ok((work, upserts, deletes))
    }

    /// Runs the HNSW work of a staged batch; returns the errors (the exact
    /// rows are already right: a missed add only makes the graph miss a
    /// row, which a search then finds only on the exact path).
    pub(crate) fn run_ann(&self, work: AnnWork) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(ann) = &self.ann else {
            return errors;
        };
        for key in work.remove {
            if let Err(e) = ann.remove(key) {
                errors.push(e.to_string());
            }
        }
        for (key, v) in work.add {
            if let Err(e) = ann.add(key, &v) {
                errors.push(e.to_string());
            }
        }
        errors
    }

    /// Concatenates the newest chunks while the newer is at least half the
    /// older and the result fits `max_chunk_rows` (so chunks stay few:
    /// about log₂ of the delta in small sizes); `true` when it changed.
    pub(crate) fn compact(&mut self) -> Result<bool> {
        let mut changed = false;
        while self.chunks.len() >= 2 {
            let n = self.chunks.len();
            let (a, b) = (&self.chunks[n - 2], &self.chunks[n - 1]);
            let (la, lb) = (a.data.len(), b.data.len());
            if lb * 2 < la || la + lb > self.max_chunk_rows {
                break;
            }
            let c = a.concat(b)?;
            self.chunks.truncate(n - 2);
            self.chunks.push(c);
            changed = true;
        }
        if changed {
            self.seq += 1;
        }
        Ok(changed)
    }

    /// Delta slots used (live or dead).
    pub(crate) fn delta_rows(&self) -> usize {
        self.slots as usize
    }
}
