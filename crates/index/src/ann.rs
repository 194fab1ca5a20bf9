//! HNSW through the `usearch` crate, built offline next to the index file.
//!
//! The sidecar `<index>.hnsw` is our 64-byte header followed by usearch's
//! own serialisation:
//!
//! ```text
//! 0  magic "PRFHNSW1"        8  version u32        12 dims u32
//! 16 rows u64                 24 index header crc32 (binds it to one index file)
//! 28 payload crc32            32 payload len u64
//! 40 connectivity u32         44 expansion_add u32  48 expansion_search u32
//! 52 reserved (8)             60 header crc32 over 0..60
//! 64 usearch payload (f16 vectors, inner-product metric, key = row number)
//! ```
//!
//! The whole sidecar is checksummed and bound to its index before usearch
//! sees a byte, because usearch's loader trusts its input: a corrupt graph
//! would otherwise be C++ undefined behaviour, not an error.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, MmapOptions};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{Error, Result, io};
use crate::file::IndexFile;
use crate::filter::RowSet;

const MAGIC: [u8; 8] = *b"PRFHNSW1";
const VERSION: u32 = 1;
const HEADER: usize = 64;

/// HNSW construction and search settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Graph degree `M`.
    pub connectivity: usize,
    /// Beam width while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Default beam width while searching (`ef`); raised to `k` when smaller.
    pub expansion_search: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
        }
    }
}

/// The conventional sidecar path of an index file (`items.index.hnsw`).
pub fn sidecar_path(index_path: &Path) -> PathBuf {
    let mut s = index_path.as_os_str().to_owned();
    s.push(".hnsw");
    PathBuf::from(s)
}

fn ann_err(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::Ann {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn new_usearch(dims: usize, p: &AnnParams, path: &Path) -> Result<Index> {
    Index::new(&IndexOptions {
        dimensions: dims,
        metric: MetricKind::IP,
        quantization: ScalarKind::F16,
        connectivity: p.connectivity,
        expansion_add: p.expansion_add,
        expansion_search: p.expansion_search,
        multi: false,
    })
    .map_err(|e| ann_err(path, e))
}

/// Builds the HNSW graph of `index` with `threads` worker threads and
/// writes it to `path` (temp file + fsync + link; never overwrites).
/// Returns the number of vectors added.
pub fn build(index: &IndexFile, path: &Path, params: &AnnParams, threads: usize) -> Result<usize> {
    if path.exists() {
        return Err(Error::AlreadyExists(path.to_path_buf()));
    }
    let dims = index.dims();
    let rows = index.len();
    let threads = threads.max(1);
    let ann = new_usearch(dims, params, path)?;
    ann.reserve_capacity_and_threads(rows, threads)
        .map_err(|e| ann_err(path, e))?;
    let failed: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for t in 0..threads {
            let ann = &ann;
            let failed = &failed;
            s.spawn(move || {
                let mut r = t;
                while r < rows {
                    let res = match index.vector(r as u32) {
                        Some(v) => ann.add(r as u64, &v).map_err(|e| e.to_string()),
                        None => Err(format!("row {r} unreadable")),
                    };
                    if let Err(e) = res {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                    r += threads;
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(ann_err(path, e));
    }
    let mut payload = vec![0u8; ann.serialized_length()];
    ann.save_to_buffer(&mut payload)
        .map_err(|e| ann_err(path, e))?;
    write_sidecar(path, index, params, &payload)?;
    Ok(rows)
}

/// Writes a sidecar for `index` at `path` around usearch's serialised
/// `payload` (our header binds it to `index`'s header CRC): temp file +
/// fsync + link, never overwriting.
fn write_sidecar(path: &Path, index: &IndexFile, params: &AnnParams, payload: &[u8]) -> Result<()> {
    let dims = index.dims();
    let rows = index.len();
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(dims as u32).to_le_bytes());
    h[16..24].copy_from_slice(&(rows as u64).to_le_bytes());
    h[24..28].copy_from_slice(&index.header_crc32().to_le_bytes());
    h[28..32].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[40..44].copy_from_slice(&(params.connectivity as u32).to_le_bytes());
    h[44..48].copy_from_slice(&(params.expansion_add as u32).to_le_bytes());
    h[48..52].copy_from_slice(&(params.expansion_search as u32).to_le_bytes());
    let crc = crc32fast::hash(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&h).map_err(io(&tmp))?;
        f.write_all(payload).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        Ok(())
    };
    let res = write().and_then(|_| {
        fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists(path.to_path_buf())
            } else {
                io(path)(e)
            }
        })
    });
    let _ = fs::remove_file(&tmp);
    res?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn rd32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn rd64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Maps the sidecar at `path` and verifies it for `index` (header CRC,
/// payload CRC, dims, rows and the binding to `index`'s header CRC), before
/// usearch sees a byte; returns the map (pre-faulted) and the recorded settings.
fn verify(path: &Path, index: &IndexFile) -> Result<(Mmap, AnnParams)> {
    let file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let corrupt = |d: &str| Error::Corrupt {
        path: path.to_path_buf(),
        detail: d.to_string(),
    };
    if len < HEADER as u64 {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            need: HEADER as u64,
            len,
        });
    }
    // SAFETY: read-only map of a file that is never modified in place
    // (published by link of a fresh inode).
    let map = unsafe { MmapOptions::new().populate().map(&file) }.map_err(io(path))?;
    let _ = map.advise(Advice::WillNeed);
    let h = &map[..HEADER];
    if h[0..8] != MAGIC {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
        });
    }
    if rd32(h, 8) != VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: rd32(h, 8),
            supported: VERSION,
        });
    }
    if crc32fast::hash(&h[..60]) != rd32(h, 60) {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            section: "ANN header",
        });
    }
    let payload_len = rd64(h, 32);
    if (HEADER as u64).checked_add(payload_len) != Some(len) {
        return Err(
            if HEADER as u64 + payload_len.min(u64::MAX - HEADER as u64) > len {
                Error::Truncated {
                    path: path.to_path_buf(),
                    need: HEADER as u64 + payload_len.min(u64::MAX - HEADER as u64),
                    len,
                }
            } else {
                corrupt("trailing bytes after the ANN payload")
            },
        );
    }
    if rd32(h, 12) as usize != index.dims() {
        return Err(Error::DimsMismatch {
            path: path.to_path_buf(),
            expected: index.dims(),
            found: rd32(h, 12) as usize,
        });
    }
    if rd64(h, 16) != index.len() as u64 || rd32(h, 24) != index.header_crc32() {
        return Err(corrupt("built for another index file"));
    }
    if crc32fast::hash(&map[HEADER..]) != rd32(h, 28) {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            section: "ANN payload",
        });
    }
    let params = AnnParams {
        connectivity: rd32(h, 40) as usize,
        expansion_add: rd32(h, 44) as usize,
        expansion_search: rd32(h, 48) as usize,
    };
    Ok((map, params))
}

/// An HNSW graph viewed (not copied) from its mmap'd sidecar.
pub struct AnnIndex {
    // Field order matters: `inner` points into `map` and must drop first.
    inner: Index,
    map: Mmap,
    path: PathBuf,
    rows: usize,
    params: AnnParams,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("params", &self.params)
            .field("bytes", &self.map.len())
            .finish()
    }
}

/// One ANN answer: hits as (row, inner product) best first, and how many
/// graph nodes the predicate was asked about (`None` without a predicate).
#[derive(Debug, Clone, PartialEq)]
pub struct AnnAnswer {
    /// (row, score) best first.
    pub hits: Vec<(u32, f32)>,
    /// Nodes the filtered search evaluated the predicate on.
    pub visited: Option<usize>,
}

impl AnnIndex {
    /// Maps and verifies the sidecar of `index` at `path` (header CRC,
    /// payload CRC, dims, rows and the binding to `index`'s header CRC),
    /// pre-faults it, then hands it to usearch as a view.
    pub fn open(path: &Path, index: &IndexFile) -> Result<AnnIndex> {
        let (map, params) = verify(path, index)?;
        let corrupt = |d: &str| Error::Corrupt {
            path: path.to_path_buf(),
            detail: d.to_string(),
        };
        let inner = new_usearch(index.dims(), &params, path)?;
        // SAFETY: `map` is stored in the returned struct next to `inner`,
        // declared after it so that it is dropped after it; the mapping is
        // read-only and never modified, and its bytes were verified against
        // the CRC written by `build`.
        unsafe { inner.view_from_buffer(&map[HEADER..]) }.map_err(|e| ann_err(path, e))?;
        if inner.size() != index.len() || inner.dimensions() != index.dims() {
            return Err(corrupt("graph size or dims disagree with the header"));
        }
        inner.change_expansion_search(params.expansion_search.max(1));
        Ok(AnnIndex {
            inner,
            map,
            path: path.to_path_buf(),
            rows: index.len(),
            params,
        })
    }

    /// The build/search settings recorded in the sidecar.
    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Sets the search beam width (`ef`) for later searches.
    pub fn set_expansion_search(&self, ef: usize) {
        self.inner.change_expansion_search(ef.max(1));
    }

    /// Searches `k` neighbours of `query`, only among rows in `allowed` when given.
    pub fn search(&self, query: &[f32], k: usize, allowed: Option<&RowSet>) -> Result<AnnAnswer> {
        if k == 0 || self.rows == 0 {
            return Ok(AnnAnswer {
                hits: Vec::new(),
                visited: allowed.map(|_| 0),
            });
        }
        let (m, visited) = match allowed {
            None => (
                self.inner
                    .search(query, k)
                    .map_err(|e| ann_err(&self.path, e))?,
                None,
            ),
            Some(set) => {
                let calls = Cell::new(0usize);
                let m = self
                    .inner
                    .filtered_search(query, k, |key| {
                        calls.set(calls.get() + 1);
                        set.contains(key)
                    })
                    .map_err(|e| ann_err(&self.path, e))?;
                (m, Some(calls.get()))
            }
        };
        let hits = m
            .keys
            .iter()
            .zip(&m.distances)
            .filter(|(k, _)| (**k as usize) < self.rows)
            .map(|(k, d)| (*k as u32, 1.0 - *d))
            .collect();
        Ok(AnnAnswer { hits, visited })
    }
}

/// A mutable HNSW graph in memory (the live users index's): loaded as a
/// copy of a verified sidecar, then updated in place — `add` and `remove`
/// run concurrently with searches (usearch locks per node and per key
/// table). Keys are the live index's row numbers.
///
/// usearch cannot grow its capacity while other calls run, so the index
/// sits behind a `RwLock`: searches, adds and removes share it, and only a
/// capacity increase (geometric, rare) takes it exclusively.
pub struct LiveAnn {
    inner: std::sync::RwLock<Index>,
    path: PathBuf,
    dims: usize,
    params: AnnParams,
    threads: usize,
}

impl std::fmt::Debug for LiveAnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveAnn")
            .field("path", &self.path)
            .field("size", &self.size())
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl LiveAnn {
    /// Loads a mutable copy of the verified sidecar of `index` at `path`,
    /// with room for `extra` more vectors and `threads` concurrent calls
    /// (a search that finds no free slot is an error the caller answers
    /// exactly instead).
    pub fn load(path: &Path, index: &IndexFile, extra: usize, threads: usize) -> Result<LiveAnn> {
        let (map, params) = verify(path, index)?;
        let live =
            LiveAnn::from_payload(&map[HEADER..], path, index.dims(), params, extra, threads)?;
        if live.size() != index.len() {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: "graph size disagrees with the header".into(),
            });
        }
        Ok(live)
    }

    /// A mutable graph from usearch's serialisation (`payload`, trusted:
    /// verified by [`LiveAnn::load`] or written by [`LiveAnn::save`]).
    fn from_payload(
        payload: &[u8],
        path: &Path,
        dims: usize,
        params: AnnParams,
        extra: usize,
        threads: usize,
    ) -> Result<LiveAnn> {
        let inner = new_usearch(dims, &params, path)?;
        inner
            .load_from_buffer(payload)
            .map_err(|e| ann_err(path, e))?;
        if inner.dimensions() != dims {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: "graph dims disagree with the index".into(),
            });
        }
        let threads = threads.max(1);
        inner
            .reserve_capacity_and_threads(inner.size() + extra.max(64), threads)
            .map_err(|e| ann_err(path, e))?;
        inner.change_expansion_search(params.expansion_search.max(1));
        Ok(LiveAnn {
            inner: std::sync::RwLock::new(inner),
            path: path.to_path_buf(),
            dims,
            params,
            threads,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Vectors in the graph (removed ones excluded).
    pub fn size(&self) -> usize {
        self.read().size()
    }

    /// The build/search settings.
    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Sets the search beam width (`ef`) for later searches.
    pub fn set_expansion_search(&self, ef: usize) {
        self.read().change_expansion_search(ef.max(1));
    }

    /// Searches `k` neighbours of `query` among the keys `allowed` admits,
    /// counting the keys it was asked about.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: impl Fn(u64) -> bool,
    ) -> Result<AnnAnswer> {
        let calls = Cell::new(0usize);
        let m = {
            let inner = self.read();
            if k == 0 || inner.size() == 0 {
                return Ok(AnnAnswer {
                    hits: Vec::new(),
                    visited: Some(0),
                });
            }
            inner
                .filtered_search(query, k, |key| {
                    calls.set(calls.get() + 1);
                    allowed(key)
                })
                .map_err(|e| ann_err(&self.path, e))?
        };
        let hits = m
            .keys
            .iter()
            .zip(&m.distances)
            .filter(|(k, _)| **k <= u32::MAX as u64)
            .map(|(k, d)| (*k as u32, 1.0 - *d))
            .collect();
        Ok(AnnAnswer {
            hits,
            visited: Some(calls.get()),
        })
    }

    /// Adds `vector` under `key` (growing the capacity by half when full).
    pub fn add(&self, key: u64, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dims {
            return Err(Error::InvalidArgument(format!(
                "ANN vector has {} values, expected {}",
                vector.len(),
                self.dims
            )));
        }
        {
            let inner = self.read();
            if inner.size() < inner.capacity() {
                return inner.add(key, vector).map_err(|e| ann_err(&self.path, e));
            }
        }
        let inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.size() >= inner.capacity() {
            let want = inner.capacity() + inner.capacity() / 2 + 64;
            inner
                .reserve_capacity_and_threads(want, self.threads)
                .map_err(|e| ann_err(&self.path, e))?;
        }
        inner.add(key, vector).map_err(|e| ann_err(&self.path, e))
    }

    /// Removes `key` (absent keys are ignored); its node is reused by a
    /// later add.
    pub fn remove(&self, key: u64) -> Result<()> {
        self.read()
            .remove(key)
            .map(|_| ())
            .map_err(|e| ann_err(&self.path, e))
    }

    /// Renames `from` to `to` (`to` must be free).
    pub fn rename(&self, from: u64, to: u64) -> Result<()> {
        self.read()
            .rename(from, to)
            .map(|_| ())
            .map_err(|e| ann_err(&self.path, e))
    }

    /// usearch's serialisation of the graph now (call with no add or
    /// remove running: the live index's writer lock guarantees it).
    pub fn save(&self) -> Result<Vec<u8>> {
        let inner = self.read();
        let mut payload = vec![0u8; inner.serialized_length()];
        inner
            .save_to_buffer(&mut payload)
            .map_err(|e| ann_err(&self.path, e))?;
        Ok(payload)
    }

    /// A second, independent graph from `payload` (a [`LiveAnn::save`] of
    /// this one), with room for `extra` more vectors.
    pub fn copy_from(&self, payload: &[u8], extra: usize) -> Result<LiveAnn> {
        LiveAnn::from_payload(
            payload,
            &self.path,
            self.dims,
            self.params,
            extra,
            self.threads,
        )
    }

    /// Writes the graph as the sidecar of `index` at `path` (its keys must
    /// be `index`'s rows) and names it as this graph's file.
    pub fn write_sidecar(&mut self, index: &IndexFile, path: &Path) -> Result<()> {
        let payload = self.save()?;
        write_sidecar(path, index, &self.params, &payload)?;
        self.path = path.to_path_buf();
        Ok(())
    }
}
