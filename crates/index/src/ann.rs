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

    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(dims as u32).to_le_bytes());
    h[16..24].copy_from_slice(&(rows as u64).to_le_bytes());
    h[24..28].copy_from_slice(&index.header_crc32().to_le_bytes());
    h[28..32].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
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
        f.write_all(&payload).map_err(io(&tmp))?;
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
    Ok(rows)
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
