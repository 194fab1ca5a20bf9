//! The on-disk layout of an index file (see docs/search.md for the prose).
//!
//! ```text
//! offset 0     header, 256 bytes (little-endian), CRC-32 over bytes 0..252
//! then         sections, each starting at a multiple of 64 bytes, zero-filled gaps:
//!   0 blocked   f16  [blocks · 16 · dims]   rows in blocks of 16, dimension-major per block
//!   1 rows      f16  [rows · dims]          row-major copy for candidate gathers (optional)
//!   2 id_offs   u64  [rows + 1]             byte offsets into id_bytes (0 … len)
//!   3 id_bytes  u8   [..]                   UTF-8 ids, concatenated
//!   4 id_order  u32  [rows]                 rows sorted by id bytes (binary search)
//!   5 attrs     u8   [..]                   attribute table (names, values, posting ranges)
//!   6 postings  u32  [..]                   per-value sorted row lists, concatenated
//!   7 meta      u8   [..]                   free UTF-8 (provenance JSON), may be empty
//! ```
//!
//! Header fields: magic `PRFIDX\0\x01` (8), version u32, header_len u32 (256),
//! dims u32, flags u32 (bit 0: row-major copy present), rows u64, blocks u64,
//! section count u32 (8), reserved u32, then 8 × {offset u64, len u64,
//! crc32 u32, reserved u32}, file_len u64, header crc32 u32, reserved u32.
//! Every section (vectors included) carries a CRC-32 of its bytes.

/// The first 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"PRFIDX\0\x01";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 256;
/// Alignment of every section.
pub const ALIGN: u64 = 64;
/// Number of sections.
pub const SECTIONS: usize = 8;
/// Flag: the row-major copy (section 1) is present.
pub const FLAG_ROW_MAJOR: u32 = 1;

/// Section indices.
pub(crate) mod sec {
    pub const BLOCKED: usize = 0;
    pub const ROWS: usize = 1;
    pub const ID_OFFS: usize = 2;
    pub const ID_BYTES: usize = 3;
    pub const ID_ORDER: usize = 4;
    pub const ATTRS: usize = 5;
    pub const POSTINGS: usize = 6;
    pub const META: usize = 7;
}

/// Human names of the sections, for errors and `inspect`.
pub const SECTION_NAMES: [&str; SECTIONS] = [
    "blocked vectors",
    "row-major vectors",
    "id offsets",
    "id bytes",
    "id order",
    "attribute table",
    "postings",
    "meta",
];

/// Where one section lives and its checksum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Section {
    /// Byte offset from the start of the file (multiple of 64).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the section's bytes.
    pub crc32: u32,
}

/// The decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Dimensions per vector.
    pub dims: u32,
    /// Flags (`FLAG_*`).
    pub flags: u32,
    /// Number of rows.
    pub rows: u64,
    /// Number of 16-row blocks.
    pub blocks: u64,
    /// The sections, indexed as in the module docs.
    pub sections: [Section; SECTIONS],
    /// Total file length.
    pub file_len: u64,
}

impl Header {
    /// Encodes the header, CRC included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.dims.to_le_bytes());
        b[20..24].copy_from_slice(&self.flags.to_le_bytes());
        b[24..32].copy_from_slice(&self.rows.to_le_bytes());
        b[32..40].copy_from_slice(&self.blocks.to_le_bytes());
        b[40..44].copy_from_slice(&(SECTIONS as u32).to_le_bytes());
        for (i, s) in self.sections.iter().enumerate() {
            let o = 48 + 24 * i;
            b[o..o + 8].copy_from_slice(&s.offset.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&s.len.to_le_bytes());
            b[o + 16..o + 20].copy_from_slice(&s.crc32.to_le_bytes());
        }
        b[240..248].copy_from_slice(&self.file_len.to_le_bytes());
        let crc = crc32fast::hash(&b[..252]);
        b[252..256].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// Why a header could not be decoded (the reader adds the path).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Short,
    Magic,
    Version(u32),
    Checksum,
    Layout(String),
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Decodes and checks the header (magic, version, CRC, fixed fields).
/// Section bounds are checked by the reader against the file length.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    if bytes.len() < 8 {
        return Err(HeaderError::Short);
    }
    if bytes[0..8] != MAGIC {
        return Err(HeaderError::Magic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(HeaderError::Short);
    }
    let b = &bytes[..HEADER_LEN];
    let version = u32_at(b, 8);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    if crc32fast::hash(&b[..252]) != u32_at(b, 252) {
        return Err(HeaderError::Checksum);
    }
    if u32_at(b, 12) as usize != HEADER_LEN {
        return Err(HeaderError::Layout(format!(
            "header length {}",
            u32_at(b, 12)
        )));
    }
    if u32_at(b, 40) as usize != SECTIONS {
        return Err(HeaderError::Layout(format!(
            "section count {}",
            u32_at(b, 40)
        )));
    }
    let mut sections = [Section::default(); SECTIONS];
    for (i, s) in sections.iter_mut().enumerate() {
        let o = 48 + 24 * i;
        *s = Section {
            offset: u64_at(b, o),
            len: u64_at(b, o + 8),
            crc32: u32_at(b, o + 16),
        };
    }
    Ok(Header {
        version,
        dims: u32_at(b, 16),
        flags: u32_at(b, 20),
        rows: u64_at(b, 24),
        blocks: u64_at(b, 32),
        sections,
        file_len: u64_at(b, 240),
    })
}

/// Rounds up to the section alignment.
pub(crate) fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// Little-endian writer for the attribute table.
#[derive(Default)]
pub(crate) struct TableWriter {
    pub buf: Vec<u8>,
}

impl TableWriter {
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
    }
}

/// Bounds-checked little-endian reader for the attribute table.
pub(crate) struct TableReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> TableReader<'a> {
    pub fn new(buf: &'a [u8]) -> TableReader<'a> {
        TableReader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32_at(s, 0))
    }
    pub fn u64(&mut self) -> Option<u64> {
        let s = self.take(8)?;
        Some(u64_at(s, 0))
    }
    pub fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_flips() {
        let mut h = Header {
            version: VERSION,
            dims: 64,
            flags: FLAG_ROW_MAJOR,
            rows: 1000,
            blocks: 63,
            sections: [Section::default(); SECTIONS],
            file_len: 4096,
        };
        h.sections[3] = Section {
            offset: 256,
            len: 10,
            crc32: 7,
        };
        let b = h.encode();
        assert_eq!(decode_header(&b), Ok(h));
        for i in 8..HEADER_LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(decode_header(&c).is_err(), "flip at {i}");
        }
    }
}
