//! Opening index files: mmap, validate everything, pre-fault.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, MmapOptions};
use profiled_kernels::f16;
use profiled_kernels::scan::{BLOCK_ROWS, Blocked, blocks_for};

use crate::error::{Error, Result, io};
use crate::format::{
    ALIGN, FLAG_ROW_MAJOR, HEADER_LEN, Header, HeaderError, SECTION_NAMES, SECTIONS, TableReader,
    VERSION, decode_header, sec,
};

/// How to open an index file.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Refuse the file unless it holds vectors of exactly this dimension
    /// (the serving model's). `None` accepts any.
    pub expected_dims: Option<usize>,
    /// Verify the CRC of the vector sections too (reads every page once;
    /// header and tables are always verified).
    pub verify_vectors: bool,
    /// Pre-fault: `MAP_POPULATE` + `MADV_WILLNEED`, so the first queries
    /// after a swap do not page-fault.
    pub prefault: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            expected_dims: None,
            verify_vectors: true,
            prefault: true,
        }
    }
}

/// One attribute column: value → range into the postings section.
#[derive(Debug, Clone)]
struct Attribute {
    values: BTreeMap<String, Range<usize>>,
}

/// An opened, fully validated, memory-mapped index file.
///
/// Immutable and `Send + Sync`; share it with `Arc`.
#[derive(Debug)]
pub struct IndexFile {
    map: Mmap,
    path: PathBuf,
    header: Header,
    header_crc32: u32,
    dims: usize,
    rows: usize,
    attrs: BTreeMap<String, Attribute>,
}

fn corrupt(path: &Path, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

impl IndexFile {
    /// Opens `path` with the default options, requiring `expected_dims`.
    pub fn open(path: impl AsRef<Path>, expected_dims: usize) -> Result<IndexFile> {
        IndexFile::open_with(
            path,
            &OpenOptions {
                expected_dims: Some(expected_dims),
                ..OpenOptions::default()
            },
        )
    }

    /// Opens `path`: maps it read-only, checks magic, version, header CRC,
    /// dims, every section's bounds, alignment, size and CRC, the id table
    /// (monotone offsets, UTF-8, sorted unique order) and the attribute
    /// table (every posting list strictly ascending and in range), then
    /// pre-faults. Any inconsistency is an [`Error`], never a panic.
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<IndexFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len < HEADER_LEN as u64 {
            // Distinguish "not ours" from "ours but cut short".
            let mut head = [0u8; 8];
            let n = std::io::Read::read(&mut &file, &mut head).map_err(io(path))?;
            if n < 8 || head != crate::format::MAGIC {
                return Err(Error::BadMagic {
                    path: path.to_path_buf(),
                });
            }
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                need: HEADER_LEN as u64,
                len,
            });
        }
        let mut mo = MmapOptions::new();
        if opts.prefault {
            mo.populate();
        }
        // SAFETY: the file is opened read-only and index files are never
        // modified in place (they are published by link/rename of a new
        // inode), so the mapping's contents do not change under us.
        let map = unsafe { mo.map(&file) }.map_err(io(path))?;
        if opts.prefault {
            // Advisory only: failure to advise is not an error.
            let _ = map.advise(Advice::WillNeed);
        }
        let header = decode_header(&map).map_err(|e| match e {
            HeaderError::Short => Error::Truncated {
                path: path.to_path_buf(),
                need: HEADER_LEN as u64,
                len,
            },
            HeaderError::Magic => Error::BadMagic {
                path: path.to_path_buf(),
            },
            HeaderError::Version(found) => Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: VERSION,
            },
            HeaderError::Checksum => Error::Checksum {
                path: path.to_path_buf(),
                section: "header",
            },
            HeaderError::Layout(d) => corrupt(path, d),
        })?;
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&map[252..256]);
        let header_crc32 = u32::from_le_bytes(crc);

        if header.file_len != len {
            return Err(if header.file_len > len {
                Error::Truncated {
                    path: path.to_path_buf(),
                    need: header.file_len,
                    len,
                }
            } else {
                corrupt(
                    path,
                    format!("file is {len} bytes, header says {}", header.file_len),
                )
            });
        }
        let dims = header.dims as usize;
        if dims == 0 {
            return Err(corrupt(path, "zero dimensions"));
        }
        if let Some(want) = opts.expected_dims
            && want != dims
        {
            return Err(Error::DimsMismatch {
                path: path.to_path_buf(),
                expected: want,
                found: dims,
            });
        }
        if header.rows >= u32::MAX as u64 {
            return Err(corrupt(
                path,
                format!("{} rows exceed u32 row ids", header.rows),
            ));
        }
        let rows = header.rows as usize;
        if header.blocks != blocks_for(rows) as u64 {
            return Err(corrupt(
                path,
                format!("{} blocks for {rows} rows", header.blocks),
            ));
        }
        if header.flags & !FLAG_ROW_MAJOR != 0 {
            return Err(corrupt(path, format!("unknown flags {:#x}", header.flags)));
        }
        let row_major = header.flags & FLAG_ROW_MAJOR != 0;

        // Expected section sizes (checked arithmetic: the header is untrusted).
        let mul = |a: usize, b: usize| {
            a.checked_mul(b)
                .ok_or_else(|| corrupt(path, "size overflow"))
        };
        let blocked_len = mul(mul(blocks_for(rows), BLOCK_ROWS * 2)?, dims)?;
        let rows_len = if row_major {
            mul(mul(rows, dims)?, 2)?
        } else {
            0
        };
        let expect: [Option<usize>; SECTIONS] = [
            Some(blocked_len),
            Some(rows_len),
            Some(mul(rows + 1, 8)?),
            None,
            Some(mul(rows, 4)?),
            None,
            None,
            None,
        ];
        let mut prev_end = HEADER_LEN as u64;
        for (i, s) in header.sections.iter().enumerate() {
            let name = SECTION_NAMES[i];
            if s.offset % ALIGN != 0 {
                return Err(corrupt(
                    path,
                    format!("{name} at {} is not 64-byte aligned", s.offset),
                ));
            }
            let end = s
                .offset
                .checked_add(s.len)
                .ok_or_else(|| corrupt(path, format!("{name} bounds overflow")))?;
            if s.offset < prev_end || end > len {
                return Err(corrupt(
                    path,
                    format!(
                        "{name} [{}, {end}) out of order or out of the file",
                        s.offset
                    ),
                ));
            }
            if map[prev_end as usize..s.offset as usize]
                .iter()
                .any(|&b| b != 0)
            {
                return Err(corrupt(path, format!("non-zero padding before {name}")));
            }
            prev_end = end;
            if let Some(want) = expect[i]
                && want as u64 != s.len
            {
                return Err(corrupt(
                    path,
                    format!("{name} is {} bytes, expected {want}", s.len),
                ));
            }
            if (i == sec::POSTINGS && s.len % 4 != 0) || (i == sec::ID_BYTES && s.len > len) {
                return Err(corrupt(path, format!("{name} length {}", s.len)));
            }
            let verify = opts.verify_vectors || !(i == sec::BLOCKED || i == sec::ROWS);
            if verify {
                let bytes = &map[s.offset as usize..end as usize];
                if crc32fast::hash(bytes) != s.crc32 {
                    return Err(Error::Checksum {
                        path: path.to_path_buf(),
                        section: name,
                    });
                }
            }
        }

        if map[prev_end as usize..].iter().any(|&b| b != 0) {
            return Err(corrupt(path, "non-zero padding at the end"));
        }
        let mut f = IndexFile {
            map,
            path: path.to_path_buf(),
            header,
            header_crc32,
            dims,
            rows,
            attrs: BTreeMap::new(),
        };
        f.validate_ids()?;
        f.attrs = f.parse_attrs()?;
        if std::str::from_utf8(f.section(sec::META)).is_err() {
            return Err(corrupt(path, "meta is not UTF-8"));
        }
        // Alignment of the typed views (mmap is page-aligned, sections 64-aligned).
        if bytemuck::try_cast_slice::<u8, u16>(f.section(sec::BLOCKED)).is_err()
            || bytemuck::try_cast_slice::<u8, u64>(f.section(sec::ID_OFFS)).is_err()
            || bytemuck::try_cast_slice::<u8, u32>(f.section(sec::ID_ORDER)).is_err()
            || bytemuck::try_cast_slice::<u8, u32>(f.section(sec::POSTINGS)).is_err()
        {
            return Err(corrupt(path, "misaligned section"));
        }
        Ok(f)
    }

    fn section(&self, i: usize) -> &[u8] {
        let s = self.header.sections[i];
        // Bounds were validated in open_with.
        self.map
            .get(s.offset as usize..(s.offset + s.len) as usize)
            .unwrap_or(&[])
    }

    fn u64s(&self, i: usize) -> &[u64] {
        bytemuck::try_cast_slice(self.section(i)).unwrap_or(&[])
    }

    fn u32s(&self, i: usize) -> &[u32] {
        bytemuck::try_cast_slice(self.section(i)).unwrap_or(&[])
    }

    fn f16s(&self, i: usize) -> &[f16] {
        bytemuck::try_cast_slice(self.section(i)).unwrap_or(&[])
    }

    fn validate_ids(&self) -> Result<()> {
        let path = &self.path;
        let offs = self.u64s(sec::ID_OFFS);
        let bytes = self.section(sec::ID_BYTES);
        if offs.len() != self.rows + 1
            || offs.first() != Some(&0)
            || offs.last() != Some(&(bytes.len() as u64))
        {
            return Err(corrupt(path, "id offsets do not span the id bytes"));
        }
        if offs.windows(2).any(|w| w[0] > w[1]) {
            return Err(corrupt(path, "id offsets are not monotone"));
        }
        if std::str::from_utf8(bytes).is_err() {
            return Err(corrupt(path, "ids are not UTF-8"));
        }
        for r in 0..self.rows {
            if self.id(r as u32).is_none() {
                return Err(corrupt(path, format!("id of row {r} is not UTF-8")));
            }
        }
        let order = self.u32s(sec::ID_ORDER);
        let mut seen = vec![false; self.rows];
        let mut prev: Option<&[u8]> = None;
        for &r in order {
            let slot = seen
                .get_mut(r as usize)
                .ok_or_else(|| corrupt(path, format!("id order names row {r}")))?;
            if std::mem::replace(slot, true) {
                return Err(corrupt(path, format!("id order repeats row {r}")));
            }
            let id = self.id_bytes(r).unwrap_or(&[]);
            if prev.is_some_and(|p| p >= id) {
                return Err(corrupt(path, "id order is not strictly ascending"));
            }
            prev = Some(id);
        }
        Ok(())
    }

    fn parse_attrs(&self) -> Result<BTreeMap<String, Attribute>> {
        let path = &self.path;
        let bad = || corrupt(path, "attribute table is malformed");
        let postings = self.u32s(sec::POSTINGS);
        let mut t = TableReader::new(self.section(sec::ATTRS));
        let mut out = BTreeMap::new();
        let n = t.u32().ok_or_else(bad)?;
        for _ in 0..n {
            let name = t.str().ok_or_else(bad)?.to_string();
            let nv = t.u32().ok_or_else(bad)?;
            let mut values = BTreeMap::new();
            for _ in 0..nv {
                let value = t.str().ok_or_else(bad)?.to_string();
                let start = t.u64().ok_or_else(bad)?;
                let count = t.u64().ok_or_else(bad)?;
                let end = start.checked_add(count).ok_or_else(bad)?;
                if end > postings.len() as u64 {
                    return Err(corrupt(
                        path,
                        format!("postings of {name}={value} out of range"),
                    ));
                }
                let range = start as usize..end as usize;
                let list = &postings[range.clone()];
                if list.windows(2).any(|w| w[0] >= w[1])
                    || list.last().is_some_and(|&r| r as usize >= self.rows)
                {
                    return Err(corrupt(
                        path,
                        format!("postings of {name}={value} unsorted or out of range"),
                    ));
                }
                if values.insert(value, range).is_some() {
                    return Err(corrupt(path, format!("attribute {name} repeats a value")));
                }
            }
            if out.insert(name, Attribute { values }).is_some() {
                return Err(corrupt(path, "attribute table repeats a name"));
            }
        }
        if !t.at_end() {
            return Err(bad());
        }
        Ok(out)
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Dimensions per vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the index has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The CRC-32 of the header: identifies this exact file (the ANN
    /// sidecar records it to refuse pairing with another index).
    pub fn header_crc32(&self) -> u32 {
        self.header_crc32
    }

    /// The decoded header (for `inspect`).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Total bytes mapped.
    pub fn file_len(&self) -> u64 {
        self.header.file_len
    }

    /// The blocked vectors, ready for the scan kernel.
    pub fn blocked(&self) -> Blocked<'_> {
        match Blocked::new(self.f16s(sec::BLOCKED), self.dims, self.rows) {
            Ok(b) => b,
            // Unreachable: sizes were validated at open. An empty view keeps it panic-free.
            Err(_) => Blocked::new(&[], self.dims, 0).unwrap_or_else(|_| unreachable_blocked()),
        }
    }

    /// The row-major copy (`rows × dims`), when the file has one.
    pub fn row_major(&self) -> Option<&[f16]> {
        if self.header.flags & FLAG_ROW_MAJOR != 0 {
            Some(self.f16s(sec::ROWS))
        } else {
            None
        }
    }

    fn id_bytes(&self, row: u32) -> Option<&[u8]> {
        let offs = self.u64s(sec::ID_OFFS);
        let a = *offs.get(row as usize)? as usize;
        let b = *offs.get(row as usize + 1)? as usize;
        self.section(sec::ID_BYTES).get(a..b)
    }

    /// The id of `row`.
    pub fn id(&self, row: u32) -> Option<&str> {
        std::str::from_utf8(self.id_bytes(row)?).ok()
    }

    /// The row holding `id` (binary search over the sorted id order).
    pub fn row_of(&self, id: &str) -> Option<u32> {
        let order = self.u32s(sec::ID_ORDER);
        let i = order
            .binary_search_by(|&r| self.id_bytes(r).unwrap_or(&[]).cmp(id.as_bytes()))
            .ok()?;
        order.get(i).copied()
    }

    /// The vector of `row` as f32.
    pub fn vector(&self, row: u32) -> Option<Vec<f32>> {
        if row as usize >= self.rows {
            return None;
        }
        if let Some(rm) = self.row_major() {
            let r = row as usize;
            return rm
                .get(r * self.dims..(r + 1) * self.dims)
                .map(|s| s.iter().map(|h| h.to_f32()).collect());
        }
        let mut out = vec![0.0; self.dims];
        self.blocked().row_f32(row as usize, &mut out).ok()?;
        Some(out)
    }

    /// Attribute names, sorted.
    pub fn attributes(&self) -> impl Iterator<Item = &str> {
        self.attrs.keys().map(String::as_str)
    }

    /// Whether the index has attribute `name`.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attrs.contains_key(name)
    }

    /// The values of attribute `name` with their row counts, sorted by value.
    pub fn attribute_values(&self, name: &str) -> Option<Vec<(&str, usize)>> {
        let a = self.attrs.get(name)?;
        Some(
            a.values
                .iter()
                .map(|(v, r)| (v.as_str(), r.len()))
                .collect(),
        )
    }

    /// The sorted rows with `attribute = value`: `Err` for an unknown
    /// attribute, an empty list for an unknown value.
    pub fn postings(&self, attribute: &str, value: &str) -> Result<&[u32]> {
        let a = self
            .attrs
            .get(attribute)
            .ok_or_else(|| Error::UnknownAttribute(attribute.to_string()))?;
        Ok(match a.values.get(value) {
            Some(r) => self.u32s(sec::POSTINGS).get(r.clone()).unwrap_or(&[]),
            None => &[],
        })
    }

    /// The free-form metadata string.
    pub fn meta(&self) -> &str {
        std::str::from_utf8(self.section(sec::META)).unwrap_or("")
    }
}

fn unreachable_blocked() -> Blocked<'static> {
    // Blocked::new(&[], 1, 0) always succeeds; this only satisfies the types.
    match Blocked::new(&[], 1, 0) {
        Ok(b) => b,
        Err(_) => unreachable!("an empty blocked view is always valid"),
    }
}
