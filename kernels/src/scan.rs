//! Exact similarity scan over f16 vectors with fused top-k.
//!
//! # Layouts
//!
//! * **Blocked** ([`Blocked`]): rows are grouped in blocks of [`BLOCK_ROWS`]
//!   (16) rows, and each block is stored *dimension-major*: the 16 values of
//!   dimension 0, then the 16 values of dimension 1, … A block of `dims`
//!   dimensions is `16 · dims` f16 values; the last block is zero-padded.
//!   One 32-byte load gives one dimension of 16 rows, so the kernel computes
//!   16 dot products with one FMA per dimension and never reduces across
//!   lanes. This is the layout of the full scan, and of [`scan_bitmap`]
//!   (only the rows a bitmap admits: the live rows of a mutable index).
//! * **Row-major** (`rows × dims` f16): used to gather an explicit candidate
//!   list (filtered search), where each candidate costs `2 · dims` contiguous
//!   bytes instead of a whole block.
//!
//! # Top-k and ties
//!
//! Scores are inner products accumulated in f32. [`TopK`] keeps the best `k`
//! hits in a bounded min-heap; the kernels compare each block's 16 scores
//! against the heap's current threshold with one vector compare and only
//! touch the heap for lanes that beat it, so the scan never materialises or
//! sorts all scores. Hits are ordered by score descending, then row
//! ascending: among equal scores the lower row wins. Scans visit rows in
//! ascending order, so a later row with a score *equal* to the current k-th
//! is rejected, which is exactly that rule. NaN and `-inf` scores are never
//! returned. Different instruction-set paths sum in different orders, so
//! scores agree only to f32 rounding (≈ `1e-6 · Σ|q_i·x_i|`); two rows whose
//! scores differ by less than that may swap places between paths.
//!
//! # Safety
//!
//! The safe entry points validate every length, the candidate rows (strictly
//! ascending, in range) and the query count before they enter `unsafe` code;
//! inside, block `b` is read only when `b < blocks` and row `r` only when
//! `r < rows`, which bounds every pointer offset by the checked slice length.

use std::cmp::Ordering;

use crate::error::check_len;
use crate::{Isa, KernelError, f16};

/// Rows per block of the blocked layout.
pub const BLOCK_ROWS: usize = 16;

/// Queries handled in one pass over memory; larger batches are split.
pub const MAX_QUERIES: usize = 16;

/// Number of blocks needed for `rows` rows.
pub const fn blocks_for(rows: usize) -> usize {
    rows.div_ceil(BLOCK_ROWS)
}

/// One search hit: a row number and its score (inner product).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The inner product of the query and the row.
    pub score: f32,
    /// The row number in the scanned matrix.
    pub row: u32,
}

impl Hit {
    /// `Greater` when `self` ranks before `other` (higher score, then lower row).
    fn rank_cmp(&self, other: &Hit) -> Ordering {
        match self.score.partial_cmp(&other.score) {
            Some(Ordering::Equal) | None => other.row.cmp(&self.row),
            Some(o) => o,
        }
    }
}

/// A bounded top-k collector (min-heap of the best `k` hits so far).
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    /// Binary heap whose root is the *worst* kept hit.
    heap: Vec<Hit>,
}

impl TopK {
    /// An empty collector for the best `k` hits.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: Vec::with_capacity(k.min(1 << 16)),
        }
    }

    /// The `k` this collector keeps.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of hits kept so far.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no hit is kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Removes every hit, keeping `k`.
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// A score must be strictly greater than this to enter (when rows arrive
    /// in ascending order): `-inf` until `k` hits are kept, `+inf` when `k = 0`.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.k == 0 {
            f32::INFINITY
        } else if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap[0].score
        }
    }

    /// Offers a hit; keeps it when it ranks among the best `k`.
    /// NaN and `-inf` scores are ignored.
    #[inline]
    pub fn push(&mut self, score: f32, row: u32) {
        if self.k == 0 || score.is_nan() || score == f32::NEG_INFINITY {
            return;
        }
        let hit = Hit { score, row };
        if self.heap.len() < self.k {
            self.heap.push(hit);
            self.sift_up(self.heap.len() - 1);
        } else if hit.rank_cmp(&self.heap[0]) == Ordering::Greater {
            self.heap[0] = hit;
            self.sift_down(0);
        }
    }

    /// Merges another collector's hits into this one.
    pub fn merge(&mut self, other: &TopK) {
        for h in &other.heap {
            self.push(h.score, h.row);
        }
    }

    /// The kept hits, best first (score descending, then row ascending).
    pub fn sorted(&self) -> Vec<Hit> {
        let mut v = self.heap.clone();
        v.sort_by(|a, b| b.rank_cmp(a));
        v
    }

    /// Consumes the collector, returning the hits best first.
    pub fn into_sorted(mut self) -> Vec<Hit> {
        self.heap.sort_by(|a, b| b.rank_cmp(a));
        self.heap
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            // The root is the worst: move up while worse than the parent.
            if self.heap[i].rank_cmp(&self.heap[parent]) == Ordering::Less {
                self.heap.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let mut worst = l;
            if r < n && self.heap[r].rank_cmp(&self.heap[l]) == Ordering::Less {
                worst = r;
            }
            if self.heap[worst].rank_cmp(&self.heap[i]) == Ordering::Less {
                self.heap.swap(i, worst);
                i = worst;
            } else {
                break;
            }
        }
    }
}

/// A validated view of a blocked matrix (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Blocked<'a> {
    data: &'a [f16],
    dims: usize,
    rows: usize,
}

impl<'a> Blocked<'a> {
    /// Wraps `data`, which must hold exactly `blocks_for(rows) · 16 · dims`
    /// values, `dims ≥ 1`, and `rows < 2³²`.
    pub fn new(data: &'a [f16], dims: usize, rows: usize) -> Result<Blocked<'a>, KernelError> {
        if dims == 0 {
            return Err(KernelError::Invalid {
                what: "dims",
                detail: "must be at least 1".into(),
            });
        }
        if rows > u32::MAX as usize {
            return Err(KernelError::Invalid {
                what: "rows",
                detail: format!("{rows} rows exceed u32 row ids"),
            });
        }
        let want = blocks_for(rows)
            .checked_mul(BLOCK_ROWS * dims)
            .ok_or_else(|| KernelError::Invalid {
                what: "rows × dims",
                detail: "overflows usize".into(),
            })?;
        check_len("blocked data", want, data.len())?;
        Ok(Blocked { data, dims, rows })
    }

    /// Dimensions per row.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Number of (unpadded) rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The underlying values, padding included.
    pub fn data(&self) -> &'a [f16] {
        self.data
    }

    /// The value at (`row`, `dim`), or `None` out of range.
    pub fn get(&self, row: usize, dim: usize) -> Option<f16> {
        if row >= self.rows || dim >= self.dims {
            return None;
        }
        let b = row / BLOCK_ROWS;
        self.data
            .get(b * BLOCK_ROWS * self.dims + dim * BLOCK_ROWS + row % BLOCK_ROWS)
            .copied()
    }

    /// Copies row `row` into `out` (length `dims`) as f32.
    pub fn row_f32(&self, row: usize, out: &mut [f32]) -> Result<(), KernelError> {
        check_len("row_f32 out", self.dims, out.len())?;
        for (d, o) in out.iter_mut().enumerate() {
            *o = self
                .get(row, d)
                .ok_or_else(|| KernelError::Invalid {
                    what: "row",
                    detail: format!("{row} ≥ {}", self.rows),
                })?
                .to_f32();
        }
        Ok(())
    }
}

/// Packs row-major f32 rows (`rows × dims`) into the blocked f16 layout
/// (round to nearest even; the last block zero-padded).
pub fn pack_blocked(rows_f32: &[f32], dims: usize) -> Result<Vec<f16>, KernelError> {
    if dims == 0 {
        return Err(KernelError::Invalid {
            what: "dims",
            detail: "must be at least 1".into(),
        });
    }
    if !rows_f32.len().is_multiple_of(dims) {
        return Err(KernelError::Shape {
            what: "pack_blocked rows",
            expected: rows_f32.len().div_ceil(dims) * dims,
            got: rows_f32.len(),
        });
    }
    let rows = rows_f32.len() / dims;
    let mut out = vec![f16::ZERO; blocks_for(rows) * BLOCK_ROWS * dims];
    for (r, row) in rows_f32.chunks_exact(dims).enumerate() {
        let base = (r / BLOCK_ROWS) * BLOCK_ROWS * dims + r % BLOCK_ROWS;
        for (d, v) in row.iter().enumerate() {
            out[base + d * BLOCK_ROWS] = f16::from_f32(*v);
        }
    }
    Ok(out)
}

/// Converts one f16 bit pattern to f32 without F16C (exact, all classes).
#[inline(always)]
fn f16_bits_to_f32(h: u16) -> f32 {
    let em = (h & 0x7fff) as u32;
    let sign = ((h & 0x8000) as u32) << 16;
    // Re-bias the exponent by multiplying by 2^112; this also normalises
    // subnormal halves exactly.
    let mut bits = (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits();
    if em >= 0x7c00 {
        bits = (em << 13) | 0x7f80_0000;
    }
    f32::from_bits(bits | sign)
}

fn check_queries(dims: usize, queries: &[f32], tops: &[TopK]) -> Result<(), KernelError> {
    let want = tops
        .len()
        .checked_mul(dims)
        .ok_or_else(|| KernelError::Invalid {
            what: "queries",
            detail: "count × dims overflows".into(),
        })?;
    check_len("queries (tops.len() × dims)", want, queries.len())
}

fn check_candidates(rows: usize, candidates: &[u32]) -> Result<(), KernelError> {
    let mut prev: Option<u32> = None;
    for &r in candidates {
        if prev.is_some_and(|p| r <= p) {
            return Err(KernelError::Invalid {
                what: "candidate rows",
                detail: "must be strictly ascending".into(),
            });
        }
        prev = Some(r);
    }
    if let Some(last) = prev
        && last as usize >= rows
    {
        return Err(KernelError::Invalid {
            what: "candidate rows",
            detail: format!("row {last} ≥ {rows} rows"),
        });
    }
    Ok(())
}

/// A source of (block number, lane mask) pairs; every block < the block count.
trait BlockSource {
    fn next_block(&mut self) -> Option<(usize, u16)>;
}

/// Every block, the last one masked to the real rows.
struct AllBlocks {
    next: usize,
    blocks: usize,
    last_mask: u16,
}

impl AllBlocks {
    fn new(rows: usize) -> AllBlocks {
        let rem = rows % BLOCK_ROWS;
        AllBlocks {
            next: 0,
            blocks: blocks_for(rows),
            last_mask: if rem == 0 {
                0xffff
            } else {
                ((1u32 << rem) - 1) as u16
            },
        }
    }
}

impl BlockSource for AllBlocks {
    #[inline(always)]
    fn next_block(&mut self) -> Option<(usize, u16)> {
        if self.next >= self.blocks {
            return None;
        }
        let b = self.next;
        self.next += 1;
        Some((
            b,
            if b + 1 == self.blocks {
                self.last_mask
            } else {
                0xffff
            },
        ))
    }
}

/// Blocks holding at least one candidate row, with the candidates' lanes.
/// The candidates were checked strictly ascending and `< rows`.
struct CandidateBlocks<'c> {
    rows: &'c [u32],
    pos: usize,
}

impl BlockSource for CandidateBlocks<'_> {
    #[inline(always)]
    fn next_block(&mut self) -> Option<(usize, u16)> {
        let first = *self.rows.get(self.pos)? as usize;
        let b = first / BLOCK_ROWS;
        let mut mask = 0u16;
        while let Some(&r) = self.rows.get(self.pos) {
            let r = r as usize;
            if r / BLOCK_ROWS != b {
                break;
            }
            mask |= 1 << (r % BLOCK_ROWS);
            self.pos += 1;
        }
        Some((b, mask))
    }
}

/// Blocks holding at least one admitted row of a bitmap (bit `r % 64` of
/// word `r / 64` admits row `r`), with those rows' lanes; the length was
/// checked to be `rows.div_ceil(64)` words, so every block < the block count
/// has its word.
struct BitmapBlocks<'b> {
    words: &'b [u64],
    next: usize,
    blocks: usize,
    last_mask: u16,
}

impl BlockSource for BitmapBlocks<'_> {
    #[inline(always)]
    fn next_block(&mut self) -> Option<(usize, u16)> {
        while self.next < self.blocks {
            let b = self.next;
            let w = self.words.get(b / 4).copied().unwrap_or(0);
            if w == 0 {
                // Four blocks share a word: skip them together.
                self.next = (b / 4 + 1) * 4;
                continue;
            }
            self.next += 1;
            let mut mask = (w >> ((b % 4) * BLOCK_ROWS)) as u16;
            if b + 1 == self.blocks {
                mask &= self.last_mask;
            }
            if mask != 0 {
                return Some((b, mask));
            }
        }
        None
    }
}

/// Scans every row of `m` against `tops.len()` queries (row-major in
/// `queries`, `dims` each), offering each row to the matching [`TopK`].
/// Batches larger than [`MAX_QUERIES`] are split into passes.
pub fn scan(
    isa: Isa,
    m: &Blocked<'_>,
    queries: &[f32],
    tops: &mut [TopK],
) -> Result<(), KernelError> {
    check_queries(m.dims, queries, tops)?;
    for (q, t) in queries
        .chunks(MAX_QUERIES * m.dims)
        .zip(tops.chunks_mut(MAX_QUERIES))
    {
        run_blocks(isa, m, q, t, AllBlocks::new(m.rows));
    }
    Ok(())
}

/// Scans only the rows in `candidates` (strictly ascending, each `< rows`)
/// of the blocked matrix: every block holding a candidate is computed whole
/// and masked to the candidates' lanes.
pub fn scan_candidates_blocked(
    isa: Isa,
    m: &Blocked<'_>,
    candidates: &[u32],
    queries: &[f32],
    tops: &mut [TopK],
) -> Result<(), KernelError> {
    check_queries(m.dims, queries, tops)?;
    check_candidates(m.rows, candidates)?;
    for (q, t) in queries
        .chunks(MAX_QUERIES * m.dims)
        .zip(tops.chunks_mut(MAX_QUERIES))
    {
        run_blocks(
            isa,
            m,
            q,
            t,
            CandidateBlocks {
                rows: candidates,
                pos: 0,
            },
        );
    }
    Ok(())
}

/// Scans the rows of the blocked matrix admitted by the bitmap `admitted`
/// (bit `r % 64` of word `r / 64` admits row `r`; exactly
/// `rows.div_ceil(64)` words, bits past `rows` ignored): blocks without an
/// admitted row are skipped, the others computed whole and masked to the
/// admitted lanes — the same arithmetic as [`scan`] for every admitted row.
/// For rows masked out of a mostly live matrix (deleted or replaced rows).
pub fn scan_bitmap(
    isa: Isa,
    m: &Blocked<'_>,
    admitted: &[u64],
    queries: &[f32],
    tops: &mut [TopK],
) -> Result<(), KernelError> {
    check_queries(m.dims, queries, tops)?;
    check_len("admitted bitmap words", m.rows.div_ceil(64), admitted.len())?;
    let all = AllBlocks::new(m.rows);
    for (q, t) in queries
        .chunks(MAX_QUERIES * m.dims)
        .zip(tops.chunks_mut(MAX_QUERIES))
    {
        run_blocks(
            isa,
            m,
            q,
            t,
            BitmapBlocks {
                words: admitted,
                next: 0,
                blocks: all.blocks,
                last_mask: all.last_mask,
            },
        );
    }
    Ok(())
}

/// Scans the rows in `candidates` (strictly ascending, each `< rows`) of a
/// row-major f16 matrix (`rows × dims` values in `data`).
pub fn scan_candidates_rows(
    isa: Isa,
    data: &[f16],
    dims: usize,
    candidates: &[u32],
    queries: &[f32],
    tops: &mut [TopK],
) -> Result<(), KernelError> {
    if dims == 0 {
        return Err(KernelError::Invalid {
            what: "dims",
            detail: "must be at least 1".into(),
        });
    }
    if !data.len().is_multiple_of(dims) {
        return Err(KernelError::Shape {
            what: "row-major data",
            expected: data.len().div_ceil(dims) * dims,
            got: data.len(),
        });
    }
    let rows = data.len() / dims;
    check_queries(dims, queries, tops)?;
    check_candidates(rows, candidates)?;
    for (q, t) in queries
        .chunks(MAX_QUERIES * dims)
        .zip(tops.chunks_mut(MAX_QUERIES))
    {
        run_rows(isa, data, dims, candidates, q, t);
    }
    Ok(())
}

/// Dispatches a block scan; `queries.len() == tops.len() · dims`, `tops.len() ≤ 16`.
fn run_blocks<B: BlockSource>(
    isa: Isa,
    m: &Blocked<'_>,
    queries: &[f32],
    tops: &mut [TopK],
    src: B,
) {
    debug_assert!(tops.len() <= MAX_QUERIES);
    let isa = isa.f32_path();
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && Isa::Avx512.is_supported() {
            x86::blocks_avx512(m, queries, tops, src);
            return;
        }
        if matches!(isa, Isa::Avx2 | Isa::Avx512) && Isa::Avx2.is_supported() {
            x86::blocks_avx2(m, queries, tops, src);
            return;
        }
    }
    if isa == Isa::Scalar {
        blocks_scalar(m, queries, tops, src);
    } else {
        blocks_portable(m, queries, tops, src);
    }
}

fn run_rows(isa: Isa, data: &[f16], dims: usize, cand: &[u32], queries: &[f32], tops: &mut [TopK]) {
    let isa = isa.f32_path();
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && Isa::Avx512.is_supported() {
            // SAFETY: AVX-512 F/BW/VL, FMA and F16C were checked just above;
            // the caller validated data = rows × dims, every candidate < rows
            // and queries = tops.len() × dims.
            unsafe { x86::rows_avx512(data, dims, cand, queries, tops) };
            return;
        }
        if matches!(isa, Isa::Avx2 | Isa::Avx512) && Isa::Avx2.is_supported() {
            // SAFETY: AVX2, FMA and F16C were checked just above; lengths as above.
            unsafe { x86::rows_avx2(data, dims, cand, queries, tops) };
            return;
        }
    }
    let _ = isa;
    rows_scalar(data, dims, cand, queries, tops);
}

/// Offers the lanes of `mask` whose score beats the threshold.
#[inline(always)]
fn emit(scores: &[f32; BLOCK_ROWS], mask: u16, block: usize, top: &mut TopK) {
    let thr = top.threshold();
    let mut m = mask;
    while m != 0 {
        let lane = m.trailing_zeros() as usize;
        m &= m - 1;
        let s = scores[lane];
        if s > thr {
            top.push(s, (block * BLOCK_ROWS + lane) as u32);
        }
    }
}

/// The reference: plain f32 loops, dimension order, one accumulator per lane.
fn blocks_scalar<B: BlockSource>(m: &Blocked<'_>, queries: &[f32], tops: &mut [TopK], mut src: B) {
    let dims = m.dims;
    while let Some((b, mask)) = src.next_block() {
        let block = &m.data[b * BLOCK_ROWS * dims..(b + 1) * BLOCK_ROWS * dims];
        for (q, top) in queries.chunks_exact(dims).zip(tops.iter_mut()) {
            let mut acc = [0.0f32; BLOCK_ROWS];
            for (d, qd) in q.iter().enumerate() {
                let lanes = &block[d * BLOCK_ROWS..(d + 1) * BLOCK_ROWS];
                for (a, v) in acc.iter_mut().zip(lanes) {
                    *a += f16_bits_to_f32(v.to_bits()) * qd;
                }
            }
            emit(&acc, mask, b, top);
        }
    }
}

/// Portable SIMD (`wide`): converts each dimension's 16 lanes once, then two
/// 8-wide multiply-adds per query.
fn blocks_portable<B: BlockSource>(
    m: &Blocked<'_>,
    queries: &[f32],
    tops: &mut [TopK],
    mut src: B,
) {
    use wide::f32x8;
    let dims = m.dims;
    let nq = tops.len();
    while let Some((b, mask)) = src.next_block() {
        let block = &m.data[b * BLOCK_ROWS * dims..(b + 1) * BLOCK_ROWS * dims];
        let mut acc = [[f32x8::ZERO; 2]; MAX_QUERIES];
        for d in 0..dims {
            let mut v = [0.0f32; BLOCK_ROWS];
            for (o, h) in v
                .iter_mut()
                .zip(&block[d * BLOCK_ROWS..(d + 1) * BLOCK_ROWS])
            {
                *o = f16_bits_to_f32(h.to_bits());
            }
            let lo = f32x8::from([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
            let hi = f32x8::from([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]);
            for (j, a) in acc.iter_mut().enumerate().take(nq) {
                let qd = f32x8::splat(queries[j * dims + d]);
                a[0] = lo.mul_add(qd, a[0]);
                a[1] = hi.mul_add(qd, a[1]);
            }
        }
        for (j, top) in tops.iter_mut().enumerate() {
            let lo = acc[j][0].to_array();
            let hi = acc[j][1].to_array();
            let mut s = [0.0f32; BLOCK_ROWS];
            s[..8].copy_from_slice(&lo);
            s[8..].copy_from_slice(&hi);
            emit(&s, mask, b, top);
        }
    }
}

/// Row-major gather reference (also the portable path: the gather is
/// latency-bound, not compute-bound).
fn rows_scalar(data: &[f16], dims: usize, cand: &[u32], queries: &[f32], tops: &mut [TopK]) {
    for &r in cand {
        let row = &data[r as usize * dims..(r as usize + 1) * dims];
        for (q, top) in queries.chunks_exact(dims).zip(tops.iter_mut()) {
            let mut acc = [0.0f32; 4];
            let mut chunks = row.chunks_exact(4);
            let mut qc = q.chunks_exact(4);
            for (x, y) in (&mut chunks).zip(&mut qc) {
                for i in 0..4 {
                    acc[i] += f16_bits_to_f32(x[i].to_bits()) * y[i];
                }
            }
            let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            for (x, y) in chunks.remainder().iter().zip(qc.remainder()) {
                s += f16_bits_to_f32(x.to_bits()) * y;
            }
            if s > top.threshold() {
                top.push(s, r);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK_ROWS, BlockSource, Blocked, MAX_QUERIES, TopK, emit};

    /// Dispatches the AVX-512 block kernel on the query count, choosing how
    /// many independent accumulator sets (`S`) split the dimension loop so
    /// that at least ~8 FMA chains are in flight.
    pub(super) fn blocks_avx512<B: BlockSource>(
        m: &Blocked<'_>,
        q: &[f32],
        tops: &mut [TopK],
        src: B,
    ) {
        macro_rules! go {
            ($nq:literal, $s:literal) => {
                // SAFETY: the caller (run_blocks) checked AVX-512 F/BW/VL,
                // FMA and F16C support; q.len() == tops.len() · dims was
                // validated and tops.len() == $nq here; every block from
                // `src` is < blocks_for(rows), and m.data holds exactly
                // blocks_for(rows) · 16 · dims values (Blocked::new).
                unsafe { blocks_avx512_n::<$nq, $s, B>(m, q, tops, src) }
            };
        }
        match tops.len() {
            0 => {}
            1 => go!(1, 8),
            2 => go!(2, 4),
            3 => go!(3, 3),
            4 => go!(4, 2),
            5 => go!(5, 2),
            6 => go!(6, 2),
            7 => go!(7, 1),
            8 => go!(8, 1),
            9 => go!(9, 1),
            10 => go!(10, 1),
            11 => go!(11, 1),
            12 => go!(12, 1),
            13 => go!(13, 1),
            14 => go!(14, 1),
            15 => go!(15, 1),
            _ => go!(16, 1),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn blocks_avx512_n<const NQ: usize, const S: usize, B: BlockSource>(
        m: &Blocked<'_>,
        q: &[f32],
        tops: &mut [TopK],
        mut src: B,
    ) {
        let dims = m.dims;
        let base = m.data.as_ptr() as *const u16;
        let qp = q.as_ptr();
        let mut thr = [f32::NEG_INFINITY; NQ];
        for (t, top) in thr.iter_mut().zip(tops.iter()) {
            *t = if top.len() < top.k() {
                f32::NEG_INFINITY
            } else {
                top.threshold()
            };
        }
        let mut scores = [0.0f32; BLOCK_ROWS];
        while let Some((b, mask)) = src.next_block() {
            // SAFETY: b < blocks, so the block's 16·dims values are inside m.data.
            let p = unsafe { base.add(b * BLOCK_ROWS * dims) };
            let mut acc = [[_mm512_setzero_ps(); NQ]; S];
            let mut d = 0;
            while d + S <= dims {
                for (s, accs) in acc.iter_mut().enumerate() {
                    // SAFETY: d + s < dims: 16 values at (d+s)·16 lie in the block.
                    let v = unsafe {
                        _mm512_cvtph_ps(_mm256_loadu_si256(
                            p.add((d + s) * BLOCK_ROWS) as *const __m256i
                        ))
                    };
                    for (j, a) in accs.iter_mut().enumerate() {
                        // SAFETY: j < NQ = tops.len() and d + s < dims, so the
                        // index j·dims + d + s < q.len().
                        let qs = unsafe { *qp.add(j * dims + d + s) };
                        *a = _mm512_fmadd_ps(v, _mm512_set1_ps(qs), *a);
                    }
                }
                d += S;
            }
            while d < dims {
                // SAFETY: d < dims, as above.
                let v = unsafe {
                    _mm512_cvtph_ps(_mm256_loadu_si256(p.add(d * BLOCK_ROWS) as *const __m256i))
                };
                for (j, a) in acc[0].iter_mut().enumerate() {
                    // SAFETY: j < NQ and d < dims.
                    let qs = unsafe { *qp.add(j * dims + d) };
                    *a = _mm512_fmadd_ps(v, _mm512_set1_ps(qs), *a);
                }
                d += 1;
            }
            for j in 0..NQ {
                let mut sum = acc[0][j];
                for accs in acc.iter().skip(1) {
                    sum = _mm512_add_ps(sum, accs[j]);
                }
                let hit = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(sum, _mm512_set1_ps(thr[j])) & mask;
                if hit != 0 {
                    // SAFETY: `scores` holds exactly 16 f32.
                    unsafe { _mm512_storeu_ps(scores.as_mut_ptr(), sum) };
                    emit(&scores, hit, b, &mut tops[j]);
                    let top = &tops[j];
                    thr[j] = if top.len() < top.k() {
                        f32::NEG_INFINITY
                    } else {
                        top.threshold()
                    };
                }
            }
        }
    }

    /// AVX2: each block is two halves of 8 lanes; queries go in groups of
    /// at most 8 (a group of 16 queries makes two groups over the same
    /// block, which is then in L1).
    pub(super) fn blocks_avx2<B: BlockSource>(
        m: &Blocked<'_>,
        q: &[f32],
        tops: &mut [TopK],
        mut src: B,
    ) {
        let dims = m.dims;
        let nq = tops.len();
        let mut thr = [f32::NEG_INFINITY; MAX_QUERIES];
        let refresh = |t: &TopK| {
            if t.len() < t.k() {
                f32::NEG_INFINITY
            } else {
                t.threshold()
            }
        };
        for (t, top) in thr.iter_mut().zip(tops.iter()) {
            *t = refresh(top);
        }
        let mut scores = [[0.0f32; BLOCK_ROWS]; MAX_QUERIES];
        while let Some((b, mask)) = src.next_block() {
            let mut g = 0;
            while g < nq {
                let n = (nq - g).min(8);
                let qg = &q[g * dims..(g + n) * dims];
                let out = &mut scores[g..g + n];
                macro_rules! go {
                    ($nq:literal, $s:literal) => {
                        // SAFETY: the caller (run_blocks) checked AVX2, FMA
                        // and F16C; b < blocks so the block lies in m.data;
                        // qg holds $nq · dims values and out $nq rows.
                        unsafe { block_avx2_n::<$nq, $s>(m, b, qg, out) }
                    };
                }
                match n {
                    1 => go!(1, 8),
                    2 => go!(2, 4),
                    3 => go!(3, 2),
                    4 => go!(4, 2),
                    5 => go!(5, 1),
                    6 => go!(6, 1),
                    7 => go!(7, 1),
                    _ => go!(8, 1),
                }
                g += n;
            }
            for j in 0..nq {
                let s = &scores[j];
                let mut hit = 0u16;
                for (lane, v) in s.iter().enumerate() {
                    hit |= ((*v > thr[j]) as u16) << lane;
                }
                hit &= mask;
                if hit != 0 {
                    emit(s, hit, b, &mut tops[j]);
                    thr[j] = refresh(&tops[j]);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_avx2_n<const NQ: usize, const S: usize>(
        m: &Blocked<'_>,
        b: usize,
        q: &[f32],
        out: &mut [[f32; BLOCK_ROWS]],
    ) {
        let dims = m.dims;
        // SAFETY: b < blocks (caller), so the block's 16·dims values are in m.data.
        let p = unsafe { (m.data.as_ptr() as *const u16).add(b * BLOCK_ROWS * dims) };
        let qp = q.as_ptr();
        for half in 0..2 {
            let mut acc = [[_mm256_setzero_ps(); NQ]; S];
            let mut d = 0;
            while d + S <= dims {
                for (s, accs) in acc.iter_mut().enumerate() {
                    // SAFETY: d + s < dims and half·8 + 8 ≤ 16: inside the block.
                    let v = unsafe {
                        _mm256_cvtph_ps(_mm_loadu_si128(
                            p.add((d + s) * BLOCK_ROWS + half * 8) as *const __m128i
                        ))
                    };
                    for (j, a) in accs.iter_mut().enumerate() {
                        // SAFETY: j < NQ and d + s < dims: inside q (NQ · dims).
                        let qs = unsafe { *qp.add(j * dims + d + s) };
                        *a = _mm256_fmadd_ps(v, _mm256_set1_ps(qs), *a);
                    }
                }
                d += S;
            }
            while d < dims {
                // SAFETY: d < dims, as above.
                let v = unsafe {
                    _mm256_cvtph_ps(_mm_loadu_si128(
                        p.add(d * BLOCK_ROWS + half * 8) as *const __m128i
                    ))
                };
                for (j, a) in acc[0].iter_mut().enumerate() {
                    // SAFETY: j < NQ and d < dims.
                    let qs = unsafe { *qp.add(j * dims + d) };
                    *a = _mm256_fmadd_ps(v, _mm256_set1_ps(qs), *a);
                }
                d += 1;
            }
            for j in 0..NQ {
                let mut sum = acc[0][j];
                for accs in acc.iter().skip(1) {
                    sum = _mm256_add_ps(sum, accs[j]);
                }
                // SAFETY: out has NQ rows of 16 f32; half·8 + 8 ≤ 16.
                unsafe { _mm256_storeu_ps(out[j].as_mut_ptr().add(half * 8), sum) };
            }
        }
    }

    /// How many rows ahead the gather prefetches.
    const PREFETCH_ROWS: usize = 24;

    #[inline(always)]
    unsafe fn prefetch_row(base: *const u16, dims: usize, cand: &[u32], i: usize) {
        if let Some(&r) = cand.get(i + PREFETCH_ROWS) {
            let p = base.wrapping_add(r as usize * dims) as *const i8;
            let bytes = dims * 2;
            let mut off = 0;
            while off < bytes {
                // SAFETY: prefetch never faults; the address is inside the
                // row (r < rows) anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
                off += 64;
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn rows_avx512(
        data: &[half::f16],
        dims: usize,
        cand: &[u32],
        q: &[f32],
        tops: &mut [TopK],
    ) {
        let base = data.as_ptr() as *const u16;
        let full = dims / 16;
        let tail = dims % 16;
        let tmask: u16 = if tail == 0 {
            0
        } else {
            ((1u32 << tail) - 1) as u16
        };
        for (i, &r) in cand.iter().enumerate() {
            // SAFETY: prefetch only (see prefetch_row).
            unsafe { prefetch_row(base, dims, cand, i) };
            // SAFETY: r < rows (validated), so row r's dims values are in data.
            let row = unsafe { base.add(r as usize * dims) };
            for (j, top) in tops.iter_mut().enumerate() {
                let qr = q[j * dims..(j + 1) * dims].as_ptr();
                let mut a0 = _mm512_setzero_ps();
                let mut a1 = _mm512_setzero_ps();
                let mut c = 0;
                while c + 1 < full {
                    // SAFETY: (c+2)·16 ≤ full·16 ≤ dims: inside the row and the query.
                    unsafe {
                        let v0 =
                            _mm512_cvtph_ps(_mm256_loadu_si256(row.add(c * 16) as *const __m256i));
                        let v1 = _mm512_cvtph_ps(_mm256_loadu_si256(
                            row.add(c * 16 + 16) as *const __m256i
                        ));
                        a0 = _mm512_fmadd_ps(v0, _mm512_loadu_ps(qr.add(c * 16)), a0);
                        a1 = _mm512_fmadd_ps(v1, _mm512_loadu_ps(qr.add(c * 16 + 16)), a1);
                    }
                    c += 2;
                }
                if c < full {
                    // SAFETY: (c+1)·16 ≤ dims.
                    unsafe {
                        let v0 =
                            _mm512_cvtph_ps(_mm256_loadu_si256(row.add(c * 16) as *const __m256i));
                        a0 = _mm512_fmadd_ps(v0, _mm512_loadu_ps(qr.add(c * 16)), a0);
                    }
                }
                if tail != 0 {
                    // SAFETY: masked loads touch only the `tail` lanes
                    // full·16 .. dims, inside the row and the query.
                    unsafe {
                        let h = _mm256_maskz_loadu_epi16(tmask, row.add(full * 16) as *const i16);
                        let v = _mm512_cvtph_ps(h);
                        let qv = _mm512_maskz_loadu_ps(tmask, qr.add(full * 16));
                        a1 = _mm512_fmadd_ps(v, qv, a1);
                    }
                }
                let s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
                if s > top.threshold() {
                    top.push(s, r);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_avx2(
        data: &[half::f16],
        dims: usize,
        cand: &[u32],
        q: &[f32],
        tops: &mut [TopK],
    ) {
        let base = data.as_ptr() as *const u16;
        let full = dims / 8;
        for (i, &r) in cand.iter().enumerate() {
            // SAFETY: prefetch only (see prefetch_row).
            unsafe { prefetch_row(base, dims, cand, i) };
            // SAFETY: r < rows (validated), so row r's dims values are in data.
            let row = unsafe { base.add(r as usize * dims) };
            for (j, top) in tops.iter_mut().enumerate() {
                let qs = &q[j * dims..(j + 1) * dims];
                let qr = qs.as_ptr();
                let mut a0 = _mm256_setzero_ps();
                let mut a1 = _mm256_setzero_ps();
                let mut c = 0;
                while c + 1 < full {
                    // SAFETY: (c+2)·8 ≤ dims: inside the row and the query.
                    unsafe {
                        let v0 = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c * 8) as *const __m128i));
                        let v1 =
                            _mm256_cvtph_ps(_mm_loadu_si128(row.add(c * 8 + 8) as *const __m128i));
                        a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(qr.add(c * 8)), a0);
                        a1 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(qr.add(c * 8 + 8)), a1);
                    }
                    c += 2;
                }
                if c < full {
                    // SAFETY: (c+1)·8 ≤ dims.
                    unsafe {
                        let v0 = _mm256_cvtph_ps(_mm_loadu_si128(row.add(c * 8) as *const __m128i));
                        a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(qr.add(c * 8)), a0);
                    }
                }
                let mut lanes = [0.0f32; 8];
                // SAFETY: lanes holds 8 f32.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a0, a1)) };
                let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                    + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
                for d in full * 8..dims {
                    // SAFETY: d < dims: inside the row.
                    let h = unsafe { *row.add(d) };
                    s += super::f16_bits_to_f32(h) * qs[d];
                }
                if s > top.threshold() {
                    top.push(s, r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_bits_conversion_is_exact_for_every_pattern() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = f16_bits_to_f32(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#x}");
            }
        }
    }

    #[test]
    fn topk_keeps_best_with_ties_to_lower_rows() {
        let mut t = TopK::new(3);
        for (s, r) in [
            (1.0, 0),
            (2.0, 1),
            (2.0, 2),
            (0.5, 3),
            (2.0, 4),
            (3.0, 5),
            (f32::NAN, 6),
        ] {
            t.push(s, r);
        }
        let rows: Vec<u32> = t.into_sorted().iter().map(|h| h.row).collect();
        assert_eq!(rows, vec![5, 1, 2]);
        let mut z = TopK::new(0);
        z.push(1.0, 0);
        assert!(z.is_empty());
    }
}
