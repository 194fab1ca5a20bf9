//! The merge of a live index: its live rows written into a new immutable
//! index file with [`IndexBuilder`] (base rows in order, then delta rows by
//! slot — the order of live rows is kept, so equal scores still break ties
//! the same way), and the renumbering of the HNSW keys that goes with it.

use std::path::Path;

use super::chunk::bit;
use super::snapshot::Snapshot;
use crate::error::{Error, Result};
use crate::writer::{IndexBuilder, WriteSummary};

/// What [`write_merged`] produced.
#[derive(Debug)]
pub(crate) struct Merged {
    pub(crate) summary: WriteSummary,
    /// (old live row, new row) for every live row whose number changed,
    /// old rows ascending (new ≤ old, so renaming in this order never
    /// meets a key still in use).
    pub(crate) renames: Vec<(u32, u32)>,
}

/// Writes the live rows of `snap` to `path` (which must not exist).
pub(crate) fn write_merged(snap: &Snapshot, path: &Path) -> Result<Merged> {
    let file = &snap.base.file;
    let dims = file.dims();
    let b = file.len();
    let mut out = IndexBuilder::new(dims)?;
    out.row_major_copy(file.row_major().is_some());
    out.meta(file.meta());
    let mut renames = Vec::new();
    let mut new_of_base = vec![u32::MAX; b];
    let unreadable = |row: u32| Error::Corrupt {
        path: file.path().to_path_buf(),
        detail: format!("live row {row} unreadable during a merge"),
    };
    for (r, slot) in new_of_base.iter_mut().enumerate() {
        if !bit(&snap.base_live, r) {
            continue;
        }
        let row = r as u32;
        let (Some(id), Some(v)) = (file.id(row), file.vector(row)) else {
            return Err(unreadable(row));
        };
        let new = out.push(id, &v)?;
        *slot = new;
        if new != row {
            renames.push((row, new));
        }
    }
    for name in file.attributes() {
        for (value, _) in file.attribute_values(name).unwrap_or_default() {
            for &r in file.postings(name, value)? {
                if let Some(&new) = new_of_base.get(r as usize)
                    && new != u32::MAX
                {
                    out.add_attribute(new, name, value)?;
                }
            }
        }
    }
    drop(new_of_base);
    for c in &snap.chunks {
        for local in 0..c.data.len() as u32 {
            if !c.is_live(local) {
                continue;
            }
            let old = b as u32 + c.start + local;
            let (Some(id), Some(v)) = (c.data.id(local), c.data.vector(local)) else {
                return Err(unreadable(old));
            };
            let new = out.push(id, &v)?;
            if new != old {
                renames.push((old, new));
            }
            for (name, values) in snap.terms.decode(c.data.row_terms(local)) {
                for value in values {
                    out.add_attribute(new, &name, &value)?;
                }
            }
        }
    }
    let summary = out.write(path)?;
    Ok(Merged { summary, renames })
}
