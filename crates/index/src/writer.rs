//! Building index files: vectors + ids + attributes → one immutable file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use profiled_kernels::f16;
use profiled_kernels::scan::{BLOCK_ROWS, blocks_for};

use crate::error::{Error, Result, io};
use crate::format::{
    FLAG_ROW_MAJOR, HEADER_LEN, Header, SECTIONS, Section, TableWriter, VERSION, align_up, sec,
};

/// Accumulates rows in memory, then writes one index file.
///
/// ```
/// # fn main() -> Result<(), profiled_index::Error> {
/// let dir = tempfile::tempdir().map_err(|e| profiled_index::Error::InvalidArgument(e.to_string()))?;
/// let mut b = profiled_index::IndexBuilder::new(2)?;
/// let row = b.push("item-1", &[0.6, 0.8])?;
/// b.add_attribute(row, "genre", "Comedy")?;
/// b.write(dir.path().join("items.index"))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct IndexBuilder {
    dims: usize,
    vectors: Vec<f16>,
    ids: Vec<String>,
    /// attribute → value → rows (pushed in ascending order, deduplicated on write).
    attrs: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    row_major: bool,
    meta: String,
}

/// What [`IndexBuilder::write`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    /// The published file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
    /// Rows written.
    pub rows: usize,
    /// The header CRC (identifies this exact file; the ANN sidecar records it).
    pub header_crc32: u32,
}

impl IndexBuilder {
    /// An empty builder for `dims`-dimensional vectors (`1 ..= 65535`).
    pub fn new(dims: usize) -> Result<IndexBuilder> {
        if dims == 0 || dims > u16::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "dims {dims} not in 1..=65535"
            )));
        }
        Ok(IndexBuilder {
            dims,
            vectors: Vec::new(),
            ids: Vec::new(),
            attrs: BTreeMap::new(),
            row_major: true,
            meta: String::new(),
        })
    }

    /// Dimensions per vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no row was pushed.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether to store the row-major copy used by filtered (candidate-list)
    /// search. Default on; off halves the file but candidate scans then read
    /// whole 16-row blocks.
    pub fn row_major_copy(&mut self, on: bool) -> &mut Self {
        self.row_major = on;
        self
    }

    /// Free-form UTF-8 stored in the file (e.g. provenance JSON).
    pub fn meta(&mut self, meta: impl Into<String>) -> &mut Self {
        self.meta = meta.into();
        self
    }

    /// Appends a row; returns its row number. Values are stored as f16
    /// (round to nearest even) and must be finite and within f16 range.
    pub fn push(&mut self, id: &str, vector: &[f32]) -> Result<u32> {
        if vector.len() != self.dims {
            return Err(Error::InvalidArgument(format!(
                "vector for {id:?} has {} values, expected {}",
                vector.len(),
                self.dims
            )));
        }
        if self.ids.len() >= u32::MAX as usize - BLOCK_ROWS {
            return Err(Error::InvalidArgument("too many rows".into()));
        }
        if id.len() > u32::MAX as usize {
            return Err(Error::InvalidArgument("id too long".into()));
        }
        let start = self.vectors.len();
        for v in vector {
            let h = f16::from_f32(*v);
            if !h.is_finite() {
                self.vectors.truncate(start);
                return Err(Error::InvalidArgument(format!(
                    "vector for {id:?} has a value ({v}) that is not finite in f16"
                )));
            }
            self.vectors.push(h);
        }
        self.ids.push(id.to_string());
        Ok((self.ids.len() - 1) as u32)
    }

    /// Tags `row` with `attribute = value` (an attribute may hold several
    /// values per row, e.g. several genres).
    pub fn add_attribute(&mut self, row: u32, attribute: &str, value: &str) -> Result<()> {
        if row as usize >= self.ids.len() {
            return Err(Error::InvalidArgument(format!("row {row} not pushed yet")));
        }
        let rows = self
            .attrs
            .entry(attribute.to_string())
            .or_default()
            .entry(value.to_string())
            .or_default();
        if rows.last() != Some(&row) {
            rows.push(row);
        }
        Ok(())
    }

    /// Writes the file: to a temporary file in the same directory, fsync,
    /// then linked to `path` (which must not exist — published files are
    /// immutable), and the directory synced.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<WriteSummary> {
        let path = path.as_ref();
        if path.exists() {
            return Err(Error::AlreadyExists(path.to_path_buf()));
        }
        let rows = self.ids.len();
        let dims = self.dims;

        // Ids: sorted order, duplicates refused.
        let mut order: Vec<u32> = (0..rows as u32).collect();
        order.sort_unstable_by(|a, b| {
            self.ids[*a as usize]
                .as_bytes()
                .cmp(self.ids[*b as usize].as_bytes())
        });
        for w in order.windows(2) {
            if self.ids[w[0] as usize] == self.ids[w[1] as usize] {
                return Err(Error::DuplicateId(self.ids[w[0] as usize].clone()));
            }
        }
        let mut id_offs = Vec::with_capacity(rows + 1);
        let mut off = 0u64;
        id_offs.push(0u64);
        for id in &self.ids {
            off += id.len() as u64;
            id_offs.push(off);
        }

        // Attribute table + postings.
        let mut table = TableWriter::default();
        let mut postings: Vec<u32> = Vec::new();
        table.u32(self.attrs.len() as u32);
        for (name, values) in &self.attrs {
            table.str(name);
            table.u32(values.len() as u32);
            for (value, rows) in values {
                let mut rows = rows.clone();
                rows.sort_unstable();
                rows.dedup();
                table.str(value);
                table.u64(postings.len() as u64);
                table.u64(rows.len() as u64);
                postings.extend_from_slice(&rows);
            }
        }

        let blocks = blocks_for(rows);
        let lens: [u64; SECTIONS] = [
            (blocks * BLOCK_ROWS * dims * 2) as u64,
            if self.row_major {
                (rows * dims * 2) as u64
            } else {
                0
            },
            (id_offs.len() * 8) as u64,
            off,
            (rows * 4) as u64,
            table.buf.len() as u64,
            (postings.len() * 4) as u64,
            self.meta.len() as u64,
        ];
        let mut sections = [Section::default(); SECTIONS];
        let mut pos = HEADER_LEN as u64;
        for (s, len) in sections.iter_mut().zip(lens) {
            pos = align_up(pos);
            s.offset = pos;
            s.len = len;
            pos += len;
        }
        let file_len = pos;

        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "index".into());
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let result = self.write_tmp(
            &tmp, &order, &id_offs, &table.buf, &postings, sections, file_len,
        );
        let header_crc32 = match result {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // hard_link fails if `path` appeared meanwhile: never clobbers.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        linked.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists(path.to_path_buf())
            } else {
                io(path)(e)
            }
        })?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(WriteSummary {
            path: path.to_path_buf(),
            bytes: file_len,
            rows,
            header_crc32,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn write_tmp(
        &self,
        tmp: &Path,
        order: &[u32],
        id_offs: &[u64],
        table: &[u8],
        postings: &[u32],
        mut sections: [Section; SECTIONS],
        file_len: u64,
    ) -> Result<u32> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(io(tmp))?;
        let mut w = SectionWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            pos: 0,
            path: tmp,
        };
        w.write(&[0u8; HEADER_LEN])?;
        let dims = self.dims;
        let rows = self.ids.len();

        // 0: blocked vectors, written block by block.
        w.pad_to(sections[sec::BLOCKED].offset)?;
        let mut crc = crc32fast::Hasher::new();
        let mut block = vec![0u8; BLOCK_ROWS * dims * 2];
        for b in 0..blocks_for(rows) {
            block.fill(0);
            for lane in 0..BLOCK_ROWS {
                let r = b * BLOCK_ROWS + lane;
                if r >= rows {
                    break;
                }
                for d in 0..dims {
                    let o = (d * BLOCK_ROWS + lane) * 2;
                    block[o..o + 2]
                        .copy_from_slice(&self.vectors[r * dims + d].to_bits().to_le_bytes());
                }
            }
            crc.update(&block);
            w.write(&block)?;
        }
        sections[sec::BLOCKED].crc32 = crc.finalize();

        // 1: row-major copy.
        w.pad_to(sections[sec::ROWS].offset)?;
        if self.row_major {
            let bytes: Vec<u8> = self
                .vectors
                .iter()
                .flat_map(|h| h.to_bits().to_le_bytes())
                .collect();
            sections[sec::ROWS].crc32 = crc32fast::hash(&bytes);
            w.write(&bytes)?;
        } else {
            sections[sec::ROWS].crc32 = crc32fast::hash(&[]);
        }

        let id_offs_bytes: Vec<u8> = id_offs.iter().flat_map(|v| v.to_le_bytes()).collect();
        let id_bytes: Vec<u8> = self.ids.iter().flat_map(|s| s.bytes()).collect();
        let order_bytes: Vec<u8> = order.iter().flat_map(|v| v.to_le_bytes()).collect();
        let post_bytes: Vec<u8> = postings.iter().flat_map(|v| v.to_le_bytes()).collect();
        let rest: [(usize, &[u8]); 6] = [
            (sec::ID_OFFS, &id_offs_bytes),
            (sec::ID_BYTES, &id_bytes),
            (sec::ID_ORDER, &order_bytes),
            (sec::ATTRS, table),
            (sec::POSTINGS, &post_bytes),
            (sec::META, self.meta.as_bytes()),
        ];
        for (i, bytes) in rest {
            w.pad_to(sections[i].offset)?;
            sections[i].crc32 = crc32fast::hash(bytes);
            w.write(bytes)?;
        }
        w.pad_to(file_len)?;

        let header = Header {
            version: VERSION,
            dims: dims as u32,
            flags: if self.row_major { FLAG_ROW_MAJOR } else { 0 },
            rows: rows as u64,
            blocks: blocks_for(rows) as u64,
            sections,
            file_len,
        };
        let hb = header.encode();
        let mut file = w.out.into_inner().map_err(|e| io(tmp)(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io(tmp))?;
        file.write_all(&hb).map_err(io(tmp))?;
        file.sync_all().map_err(io(tmp))?;
        let mut c = [0u8; 4];
        c.copy_from_slice(&hb[252..256]);
        Ok(u32::from_le_bytes(c))
    }
}

struct SectionWriter<'p> {
    out: BufWriter<File>,
    pos: u64,
    path: &'p Path,
}

impl SectionWriter<'_> {
    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(io(self.path))?;
        self.pos += b.len() as u64;
        Ok(())
    }
    fn pad_to(&mut self, target: u64) -> Result<()> {
        while self.pos < target {
            let n = ((target - self.pos) as usize).min(64);
            self.write(&[0u8; 64][..n])?;
        }
        Ok(())
    }
}
