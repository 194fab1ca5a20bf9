//! Index files: round trip, and refusal of corrupt / truncated / mismatched files.

use std::path::{Path, PathBuf};

use profiled_index::{Error, IndexBuilder, IndexFile, OpenOptions, synthetic};

fn build(
    dir: &Path,
    name: &str,
    rows: usize,
    dims: usize,
    row_major: bool,
) -> anyhow::Result<PathBuf> {
    let (x, labels) = synthetic::clustered(rows, dims, 5, 0.5, 7);
    let mut b = IndexBuilder::new(dims)?;
    b.row_major_copy(row_major)
        .meta("{\"model\":\"test\",\"version\":1}");
    for (r, v) in x.chunks_exact(dims).enumerate() {
        let row = b.push(&format!("user-{r:04}"), v)?;
        b.add_attribute(row, "cluster", &format!("c{}", labels[r]))?;
        if r % 3 == 0 {
            b.add_attribute(row, "tag", "three")?;
        }
        if r % 2 == 0 {
            b.add_attribute(row, "tag", "two")?;
        }
    }
    let path = dir.join(name);
    b.write(&path)?;
    Ok(path)
}

#[test]
fn round_trip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for &(rows, dims, rm) in &[
        (0usize, 4usize, true),
        (1, 1, true),
        (100, 8, true),
        (37, 13, false),
    ] {
        let path = build(
            dir.path(),
            &format!("i-{rows}-{dims}-{rm}.index"),
            rows,
            dims,
            rm,
        )?;
        let f = IndexFile::open(&path, dims)?;
        assert_eq!(f.len(), rows);
        assert_eq!(f.dims(), dims);
        assert_eq!(f.row_major().is_some(), rm);
        assert_eq!(f.meta(), "{\"model\":\"test\",\"version\":1}");
        let (x, labels) = synthetic::clustered(rows, dims, 5, 0.5, 7);
        for r in 0..rows {
            let id = format!("user-{r:04}");
            assert_eq!(f.id(r as u32), Some(id.as_str()));
            assert_eq!(f.row_of(&id), Some(r as u32));
            let v = f.vector(r as u32).expect("vector");
            for (a, b) in v.iter().zip(&x[r * dims..(r + 1) * dims]) {
                assert!((a - b).abs() <= 1e-3 * b.abs().max(1e-2), "{a} vs {b}");
            }
            let c = format!("c{}", labels[r]);
            assert!(f.postings("cluster", &c)?.contains(&(r as u32)));
        }
        assert_eq!(f.row_of("nobody"), None);
        assert_eq!(f.id(rows as u32), None);
        if rows > 0 {
            let three = f.postings("tag", "three")?;
            assert_eq!(three.len(), rows.div_ceil(3));
            assert!(matches!(
                f.postings("nope", "x"),
                Err(Error::UnknownAttribute(_))
            ));
            assert!(f.postings("tag", "four")?.is_empty());
        }
    }
    Ok(())
}

#[test]
fn writer_refuses_bad_input_and_never_overwrites() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    assert!(IndexBuilder::new(0).is_err());
    let mut b = IndexBuilder::new(3)?;
    assert!(b.push("a", &[1.0, 2.0]).is_err());
    assert!(b.push("a", &[1.0, f32::NAN, 0.0]).is_err());
    assert!(b.push("a", &[1.0, 1e6, 0.0]).is_err(), "out of f16 range");
    assert_eq!(b.len(), 0);
    b.push("a", &[1.0, 0.0, 0.0])?;
    assert!(b.add_attribute(5, "x", "y").is_err());
    b.push("a", &[0.0, 1.0, 0.0])?;
    assert!(matches!(
        b.write(dir.path().join("dup.index")),
        Err(Error::DuplicateId(_))
    ));
    assert!(!dir.path().join("dup.index").exists());

    let path = build(dir.path(), "x.index", 10, 4, true)?;
    let before = std::fs::read(&path)?;
    let mut b = IndexBuilder::new(4)?;
    b.push("z", &[0.0; 4])?;
    assert!(matches!(b.write(&path), Err(Error::AlreadyExists(_))));
    assert_eq!(std::fs::read(&path)?, before);
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    Ok(())
}

#[test]
fn dims_mismatch_and_not_an_index_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = build(dir.path(), "a.index", 20, 8, true)?;
    assert!(matches!(
        IndexFile::open(&path, 16),
        Err(Error::DimsMismatch {
            expected: 16,
            found: 8,
            ..
        })
    ));
    let junk = dir.path().join("junk");
    std::fs::write(
        &junk,
        b"hello, this is not an index file at all, not at all",
    )?;
    assert!(matches!(
        IndexFile::open(&junk, 8),
        Err(Error::BadMagic { .. })
    ));
    std::fs::write(&junk, b"")?;
    assert!(matches!(
        IndexFile::open(&junk, 8),
        Err(Error::BadMagic { .. })
    ));
    assert!(matches!(
        IndexFile::open(dir.path().join("missing"), 8),
        Err(Error::Io { .. })
    ));
    Ok(())
}

fn open_bytes(dir: &Path, bytes: &[u8], n: usize) -> Result<IndexFile, Error> {
    let p = dir.join(format!("mut-{n}.index"));
    std::fs::write(&p, bytes).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let r = IndexFile::open_with(
        &p,
        &OpenOptions {
            expected_dims: Some(8),
            ..OpenOptions::default()
        },
    );
    let _ = std::fs::remove_file(&p);
    r
}

#[test]
fn every_single_byte_flip_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = build(dir.path(), "a.index", 40, 8, true)?;
    let good = std::fs::read(&path)?;
    assert!(open_bytes(dir.path(), &good, 0).is_ok());
    for i in 0..good.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = good.clone();
            b[i] ^= mask;
            let r = open_bytes(dir.path(), &b, 1);
            assert!(
                r.is_err(),
                "flip {mask:#x} at byte {i} of {} was accepted",
                good.len()
            );
        }
    }
    Ok(())
}

#[test]
fn every_truncation_and_extension_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = build(dir.path(), "a.index", 40, 8, true)?;
    let good = std::fs::read(&path)?;
    for n in 0..good.len() {
        let r = open_bytes(dir.path(), &good[..n], 2);
        assert!(r.is_err(), "truncation to {n} bytes accepted");
        if n >= 256 {
            assert!(
                matches!(r, Err(Error::Truncated { .. })),
                "truncation to {n}: {r:?}"
            );
        }
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&[0u8; 64]);
    assert!(open_bytes(dir.path(), &longer, 3).is_err());
    Ok(())
}

#[test]
fn random_multi_byte_corruption_never_panics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = build(dir.path(), "a.index", 40, 8, true)?;
    let good = std::fs::read(&path)?;
    let mut g = synthetic::SplitMix::new(99);
    for _ in 0..2000 {
        let mut b = good.clone();
        for _ in 0..1 + g.below(8) {
            let i = g.below(b.len());
            b[i] = g.next_u64() as u8;
        }
        if b != good {
            assert!(open_bytes(dir.path(), &b, 4).is_err());
        }
    }
    Ok(())
}

/// A structurally hostile file with *valid* checksums must still be refused
/// (checks beyond the CRCs): recompute the CRCs after corrupting the tables.
#[test]
fn checksummed_but_inconsistent_tables_are_refused() -> anyhow::Result<()> {
    use profiled_index::format::{HEADER_LEN, Header, SECTIONS, Section};
    let dir = tempfile::tempdir()?;
    let path = build(dir.path(), "a.index", 40, 8, true)?;
    let good = std::fs::read(&path)?;
    let f = IndexFile::open(&path, 8)?;
    let h = f.header().clone();
    drop(f);
    let reseal = |bytes: &mut Vec<u8>, h: &Header| {
        let mut h = h.clone();
        for i in 0..SECTIONS {
            let s: Section = h.sections[i];
            let end = (s.offset + s.len) as usize;
            if end <= bytes.len() {
                h.sections[i].crc32 = crc32fast::hash(&bytes[s.offset as usize..end]);
            }
        }
        bytes[..HEADER_LEN].copy_from_slice(&h.encode());
    };
    // Flip bytes inside each table section (not the vectors) and reseal.
    for sec in 2..SECTIONS {
        let s = h.sections[sec];
        for j in 0..s.len.min(64) {
            let mut b = good.clone();
            b[(s.offset + j) as usize] ^= 0x41;
            reseal(&mut b, &h);
            // Either refused, or (for a change that is still consistent,
            // e.g. a different but valid id character) opened without panic.
            if let Ok(f) = open_bytes(dir.path(), &b, 5) {
                for r in 0..f.len() as u32 {
                    let _ = f.id(r);
                    let _ = f.vector(r);
                }
            }
        }
    }
    // Header fields that checksums cannot catch once resealed.
    let mut bad = h.clone();
    bad.rows += 1;
    let mut b = good.clone();
    reseal(&mut b, &bad);
    assert!(open_bytes(dir.path(), &b, 6).is_err());
    let mut bad = h.clone();
    bad.sections[3].offset += 1;
    let mut b = good.clone();
    reseal(&mut b, &bad);
    assert!(open_bytes(dir.path(), &b, 7).is_err());
    let mut bad = h.clone();
    bad.dims = 16;
    let mut b = good;
    reseal(&mut b, &bad);
    assert!(open_bytes(dir.path(), &b, 8).is_err());
    Ok(())
}
