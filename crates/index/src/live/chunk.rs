//! The delta of the live index: immutable chunks of rows appended by
//! updates, each with its vectors in the scan kernel's blocked f16 layout,
//! its ids, its rows' attribute terms (per row and as postings), and a
//! bitmap of its rows that are still live.
//!
//! A chunk covers consecutive delta slots `start .. start + len`; its data
//! never changes once built (snapshots share it through an `Arc`), only its
//! live bitmap does, copied on write. Small chunks of consecutive slots are
//! concatenated into larger ones (slots, and so row numbers, unchanged).

use std::sync::Arc;

use profiled_kernels::f16;
use profiled_kernels::scan::{BLOCK_ROWS, Blocked, blocks_for};

use crate::error::{Error, Result};

/// One row on its way into a chunk.
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    pub(crate) id: Arc<str>,
    /// f16 values, `dims` of them.
    pub(crate) vector: Vec<f16>,
    /// Sorted unique term ids of the row's attributes.
    pub(crate) terms: Vec<u32>,
}

/// A chunk's rows (see the module docs).
#[derive(Debug)]
pub(crate) struct ChunkData {
    dims: usize,
    len: usize,
    /// `blocks_for(len) · 16 · dims` values, dimension-major per block.
    blocked: Vec<f16>,
    ids: Vec<Arc<str>>,
    /// Row → its terms: `terms[term_offs[r] .. term_offs[r + 1]]`.
    term_offs: Vec<u32>,
    terms: Vec<u32>,
    /// (term, row), sorted: the rows having each term.
    postings: Vec<(u32, u32)>,
    /// Rows sorted by (id, row).
    by_id: Vec<u32>,
}

impl ChunkData {
    /// A chunk of `rows` (each `dims` values).
    pub(crate) fn build(dims: usize, rows: &[NewRow]) -> Result<ChunkData> {
        let mut b = Builder::new(dims, rows.len());
        for r in rows {
            b.push(&r.id, &r.vector, &r.terms)?;
        }
        Ok(b.finish(None))
    }

    /// The rows of `a` followed by those of `b` (consecutive slots).
    pub(crate) fn concat(a: &ChunkData, b: &ChunkData) -> Result<ChunkData> {
        let mut out = Builder::new(a.dims, a.len + b.len);
        let mut v = vec![f16::ZERO; a.dims];
        for c in [a, b] {
            for r in 0..c.len {
                c.row_f16(r, &mut v);
                out.push(&c.ids[r], &v, c.row_terms(r as u32))?;
            }
        }
        // Both id orders are sorted already: merge them (b's rows shifted).
        let shift = a.len as u32;
        let mut by_id = Vec::with_capacity(a.len + b.len);
        let (mut i, mut j) = (0, 0);
        while i < a.by_id.len() || j < b.by_id.len() {
            let take_a = match (a.by_id.get(i), b.by_id.get(j)) {
                (Some(&x), Some(&y)) => a.ids[x as usize] <= b.ids[y as usize],
                (Some(_), None) => true,
                _ => false,
            };
            if take_a {
                by_id.push(a.by_id[i]);
                i += 1;
            } else {
                by_id.push(b.by_id[j] + shift);
                j += 1;
            }
        }
        Ok(out.finish(Some(by_id)))
    }

    /// Rows in the chunk (live or not).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The vectors, ready for the scan kernel.
    pub(crate) fn blocked(&self) -> Result<Blocked<'_>> {
        Ok(Blocked::new(&self.blocked, self.dims, self.len)?)
    }

    /// The id of `row`.
    pub(crate) fn id(&self, row: u32) -> Option<&Arc<str>> {
        self.ids.get(row as usize)
    }

    /// The last row holding `id` (the only one that can be live).
    pub(crate) fn latest(&self, id: &str) -> Option<u32> {
        let end = self
            .by_id
            .partition_point(|&r| &*self.ids[r as usize] <= id);
        let r = *self.by_id.get(end.checked_sub(1)?)?;
        (&*self.ids[r as usize] == id).then_some(r)
    }

    fn row_f16(&self, row: usize, out: &mut [f16]) {
        let base = (row / BLOCK_ROWS) * BLOCK_ROWS * self.dims + row % BLOCK_ROWS;
        for (d, o) in out.iter_mut().enumerate() {
            *o = self
                .blocked
                .get(base + d * BLOCK_ROWS)
                .copied()
                .unwrap_or(f16::ZERO);
        }
    }

    /// The vector of `row` as f32 (exact: the stored values are f16).
    pub(crate) fn vector(&self, row: u32) -> Option<Vec<f32>> {
        if row as usize >= self.len {
            return None;
        }
        let mut v = vec![f16::ZERO; self.dims];
        self.row_f16(row as usize, &mut v);
        Some(v.iter().map(|h| h.to_f32()).collect())
    }

    /// The sorted term ids of `row`.
    pub(crate) fn row_terms(&self, row: u32) -> &[u32] {
        let r = row as usize;
        match (self.term_offs.get(r), self.term_offs.get(r + 1)) {
            (Some(&a), Some(&b)) => self.terms.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Sets in `bits` every row having one of `terms` (sorted).
    pub(crate) fn rows_with_any(&self, terms: &[u32], bits: &mut [u64]) {
        for &t in terms {
            let start = self.postings.partition_point(|&(pt, _)| pt < t);
            for &(pt, r) in &self.postings[start..] {
                if pt != t {
                    break;
                }
                if let Some(w) = bits.get_mut(r as usize / 64) {
                    *w |= 1 << (r % 64);
                }
            }
        }
    }

    /// Approximate heap bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.blocked.len() * 2
            + self.ids.iter().map(|s| s.len() + 16).sum::<usize>()
            + self.terms.len() * 4
            + self.term_offs.len() * 4
            + self.postings.len() * 8
            + self.by_id.len() * 4
    }
}

/// Assembles a [`ChunkData`] row by row.
struct Builder {
    data: ChunkData,
}

impl Builder {
    fn new(dims: usize, rows: usize) -> Builder {
        let mut term_offs = Vec::with_capacity(rows + 1);
        term_offs.push(0);
        Builder {
            data: ChunkData {
                dims,
                len: 0,
                blocked: Vec::with_capacity(blocks_for(rows) * BLOCK_ROWS * dims),
                ids: Vec::with_capacity(rows),
                term_offs,
                terms: Vec::new(),
                postings: Vec::new(),
                by_id: Vec::new(),
            },
        }
    }

    fn push(&mut self, id: &Arc<str>, vector: &[f16], terms: &[u32]) -> Result<()> {
        let d = &mut self.data;
        if vector.len() != d.dims {
            return Err(Error::InvalidArgument(format!(
                "vector for {id:?} has {} values, expected {}",
                vector.len(),
                d.dims
            )));
        }
        let row = d.len;
        if row.is_multiple_of(BLOCK_ROWS) {
            d.blocked
                .resize(d.blocked.len() + BLOCK_ROWS * d.dims, f16::ZERO);
        }
        let base = (row / BLOCK_ROWS) * BLOCK_ROWS * d.dims + row % BLOCK_ROWS;
        for (k, v) in vector.iter().enumerate() {
            if let Some(slot) = d.blocked.get_mut(base + k * BLOCK_ROWS) {
                *slot = *v;
            }
        }
        d.ids.push(id.clone());
        d.terms.extend_from_slice(terms);
        let end = u32::try_from(d.terms.len())
            .map_err(|_| Error::InvalidArgument("too many attribute values in a chunk".into()))?;
        d.term_offs.push(end);
        for &t in terms {
            d.postings.push((t, row as u32));
        }
        d.len += 1;
        Ok(())
    }

    fn finish(mut self, by_id: Option<Vec<u32>>) -> ChunkData {
        let d = &mut self.data;
        d.postings.sort_unstable();
        d.by_id = by_id.unwrap_or_else(|| {
            let mut v: Vec<u32> = (0..d.len as u32).collect();
            v.sort_by(|&a, &b| d.ids[a as usize].cmp(&d.ids[b as usize]).then(a.cmp(&b)));
            v
        });
        self.data
    }
}

/// A chunk in a snapshot: its shared rows, first slot and live bitmap.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// The delta slot of row 0.
    pub(crate) start: u32,
    pub(crate) data: Arc<ChunkData>,
    /// Bit `r` set ⇔ row `r` is live; `len.div_ceil(64)` words.
    pub(crate) live: Arc<Vec<u64>>,
    pub(crate) live_count: usize,
}

impl Chunk {
    /// A chunk whose rows are all live.
    pub(crate) fn new(start: u32, data: ChunkData) -> Chunk {
        let len = data.len();
        Chunk {
            start,
            live: Arc::new(ones(len)),
            live_count: len,
            data: Arc::new(data),
        }
    }

    /// Whether local `row` is live.
    pub(crate) fn is_live(&self, row: u32) -> bool {
        bit(&self.live, row as usize)
    }

    /// Marks local `row` dead (copying the bitmap if a snapshot shares it);
    /// `true` when it was live.
    pub(crate) fn kill(&mut self, row: u32) -> bool {
        if !self.is_live(row) {
            return false;
        }
        let live = Arc::make_mut(&mut self.live);
        clear(live, row as usize);
        self.live_count -= 1;
        true
    }

    /// `self` followed by `next` (whose slots follow this chunk's).
    pub(crate) fn concat(&self, next: &Chunk) -> Result<Chunk> {
        let data = ChunkData::concat(&self.data, &next.data)?;
        let a = self.data.len();
        let mut live = vec![0u64; data.len().div_ceil(64)];
        for r in 0..a {
            if self.is_live(r as u32) {
                set(&mut live, r);
            }
        }
        for r in 0..next.data.len() {
            if next.is_live(r as u32) {
                set(&mut live, a + r);
            }
        }
        Ok(Chunk {
            start: self.start,
            data: Arc::new(data),
            live: Arc::new(live),
            live_count: self.live_count + next.live_count,
        })
    }
}

/// A bitmap of `n` set bits (`n.div_ceil(64)` words, no bit past `n`).
pub(crate) fn ones(n: usize) -> Vec<u64> {
    let mut v = vec![u64::MAX; n.div_ceil(64)];
    if !n.is_multiple_of(64)
        && let Some(last) = v.last_mut()
    {
        *last = (1u64 << (n % 64)) - 1;
    }
    v
}

/// Bit `i` of `bits` (false past the end).
#[inline]
pub(crate) fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Sets bit `i` (ignored past the end).
#[inline]
pub(crate) fn set(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

/// Clears bit `i` (ignored past the end).
#[inline]
pub(crate) fn clear(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w &= !(1 << (i % 64));
    }
}

/// Number of set bits.
pub(crate) fn count(bits: &[u64]) -> usize {
    bits.iter().map(|w| w.count_ones() as usize).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, x: f32, terms: &[u32]) -> NewRow {
        NewRow {
            id: Arc::from(id),
            vector: vec![f16::from_f32(x), f16::from_f32(-x), f16::ONE],
            terms: terms.to_vec(),
        }
    }

    #[test]
    fn rows_survive_building_and_concatenation() {
        let a: Vec<NewRow> = (0..21)
            .map(|i| row(&format!("u{}", i % 7), i as f32 / 8.0, &[i % 3, 10]))
            .collect();
        let b: Vec<NewRow> = (0..18)
            .map(|i| row(&format!("v{}", i % 5), -(i as f32) / 4.0, &[i % 2]))
            .collect();
        let ca = Chunk::new(0, ChunkData::build(3, &a).unwrap_or_else(|e| panic!("{e}")));
        let mut cb = Chunk::new(
            21,
            ChunkData::build(3, &b).unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(cb.kill(4) && !cb.kill(4));
        let c = ca.concat(&cb).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.data.len(), 39);
        assert_eq!(c.live_count, 38);
        assert!(!c.is_live(21 + 4) && c.is_live(21 + 5));
        for (i, r) in a.iter().chain(&b).enumerate() {
            let want: Vec<f32> = r.vector.iter().map(|h| h.to_f32()).collect();
            assert_eq!(c.data.vector(i as u32), Some(want), "row {i}");
            assert_eq!(c.data.row_terms(i as u32), &r.terms[..], "row {i}");
            assert_eq!(c.data.id(i as u32).map(|s| &**s), Some(&*r.id));
        }
        // The latest row of an id, across both halves.
        assert_eq!(c.data.latest("u3"), Some(17));
        assert_eq!(c.data.latest("v0"), Some(21 + 15));
        assert_eq!(c.data.latest("w"), None);
        let blocked = c.data.blocked().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blocked.rows(), 39);
        let mut bits = vec![0u64; 1];
        c.data.rows_with_any(&[10], &mut bits);
        assert_eq!(count(&bits), 21);
        let mut bits = vec![0u64; 1];
        c.data.rows_with_any(&[1, 2], &mut bits);
        // a: i%3 in {1,2} → 14 rows; b: i%2 == 1 → 9 rows.
        assert_eq!(count(&bits), 14 + 9);
    }

    #[test]
    fn bitmaps() {
        let o = ones(70);
        assert_eq!(o.len(), 2);
        assert_eq!(count(&o), 70);
        assert!(bit(&o, 69) && !bit(&o, 70) && !bit(&o, 1000));
        assert_eq!(ones(64), vec![u64::MAX]);
        assert!(ones(0).is_empty());
    }
}
