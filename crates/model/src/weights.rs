//! `model.safetensors`, memory-mapped: an owned index of byte ranges kept
//! next to the [`Mmap`], zero-copy typed views on demand.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use profiled_kernels::f16;
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::format::Dtype;

/// Index of a tensor inside [`Weights`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TensorId(usize);

/// Where a tensor's elements live.
#[derive(Debug)]
enum Storage {
    /// Byte range of the mapping (aligned for the dtype).
    Mapped(Range<usize>),
    /// Decoded copy (the mapped bytes were not aligned for the dtype).
    Owned(Vec<f32>),
}

#[derive(Debug)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    storage: Storage,
}

/// A typed view of one tensor's elements (row-major).
#[derive(Debug, Clone, Copy)]
pub(crate) enum View<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// f16 elements.
    F16(&'a [f16]),
}

impl<'a> View<'a> {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            View::F32(v) => v.len(),
            View::F16(v) => v.len(),
        }
    }

    /// Row `r` of width `w`, or `None` when out of range.
    pub(crate) fn row(&self, r: usize, w: usize) -> Option<View<'a>> {
        let start = r.checked_mul(w)?;
        let end = start.checked_add(w)?;
        match self {
            View::F32(v) => v.get(start..end).map(View::F32),
            View::F16(v) => v.get(start..end).map(View::F16),
        }
    }

    /// All elements widened to f32.
    pub(crate) fn to_f32(self) -> Vec<f32> {
        match self {
            View::F32(v) => v.to_vec(),
            View::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// The memory-mapped weights file.
#[derive(Debug)]
pub(crate) struct Weights {
    path: PathBuf,
    mmap: Mmap,
    dtype: Dtype,
    entries: Vec<Entry>,
    by_name: BTreeMap<String, usize>,
}

impl Weights {
    /// Maps `path` and indexes its tensors; every tensor must have `dtype`.
    pub(crate) fn open(path: &Path, dtype: Dtype) -> Result<Weights> {
        if cfg!(target_endian = "big") {
            return Err(Error::model(
                path,
                "safetensors data is little-endian; this platform is big-endian",
            ));
        }
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the mapping is read-only and private to this process. Model
        // versions are immutable once published (written to a temporary folder
        // and renamed; never modified in place, see DESIGN.md), so the bytes do
        // not change under us; every access below goes through bounds-checked
        // slices of the mapping.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_mmap(path, mmap, dtype)
    }

    fn from_mmap(path: &Path, mmap: Mmap, dtype: Dtype) -> Result<Weights> {
        let (header, meta) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::model(path, format!("invalid safetensors file: {e}")))?;
        let base = 8usize
            .checked_add(header)
            .ok_or_else(|| Error::model(path, "header length overflows"))?;
        let mut entries = Vec::new();
        let mut by_name = BTreeMap::new();
        let mut names = meta.offset_keys();
        names.sort();
        for name in names {
            let Some(info) = meta.info(&name) else {
                return Err(Error::model(
                    path,
                    format!("tensor `{name}` vanished from the index"),
                ));
            };
            let want = match dtype {
                Dtype::F32 => safetensors::Dtype::F32,
                Dtype::F16 => safetensors::Dtype::F16,
            };
            if info.dtype != want {
                return Err(Error::model(
                    path,
                    format!(
                        "tensor `{name}` has dtype {:?}, model.json says {}",
                        info.dtype,
                        dtype.name()
                    ),
                ));
            }
            let (s, e) = info.data_offsets;
            let range = base
                .checked_add(s)
                .zip(base.checked_add(e))
                .map(|(a, b)| a..b)
                .filter(|r| r.start <= r.end && r.end <= mmap.len())
                .ok_or_else(|| {
                    Error::model(path, format!("tensor `{name}`: data offsets out of range"))
                })?;
            let bytes = &mmap[range.clone()];
            let storage = match dtype {
                Dtype::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                    Ok(_) => Storage::Mapped(range),
                    Err(_) => Storage::Owned(
                        bytes
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    ),
                },
                Dtype::F16 => match bytemuck::try_cast_slice::<u8, f16>(bytes) {
                    Ok(_) => Storage::Mapped(range),
                    Err(_) => Storage::Owned(
                        bytes
                            .chunks_exact(2)
                            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                            .collect(),
                    ),
                },
            };
            by_name.insert(name.clone(), entries.len());
            entries.push(Entry {
                name,
                shape: info.shape.clone(),
                storage,
            });
        }
        Ok(Weights {
            path: path.to_path_buf(),
            mmap,
            dtype,
            entries,
            by_name,
        })
    }

    /// Bytes mapped.
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.mmap.len()
    }

    /// Tensor names in sorted order with their shapes.
    pub(crate) fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.shape.as_slice()))
    }

    /// The id of tensor `name`.
    pub(crate) fn id(&self, name: &str) -> Result<TensorId> {
        self.by_name
            .get(name)
            .map(|&i| TensorId(i))
            .ok_or_else(|| Error::model(&self.path, format!("tensor `{name}` is missing")))
    }

    /// The elements of a tensor.
    pub(crate) fn view(&self, id: TensorId) -> View<'_> {
        let Some(e) = self.entries.get(id.0) else {
            return View::F32(&[]);
        };
        match &e.storage {
            Storage::Owned(v) => View::F32(v),
            Storage::Mapped(r) => {
                let bytes = self.mmap.get(r.clone()).unwrap_or(&[]);
                match self.dtype {
                    // Alignment and length were checked when the index was built.
                    Dtype::F32 => View::F32(bytemuck::try_cast_slice(bytes).unwrap_or(&[])),
                    Dtype::F16 => View::F16(bytemuck::try_cast_slice(bytes).unwrap_or(&[])),
                }
            }
        }
    }

    /// Tensor `name` as f32 (a copy).
    pub(crate) fn f32_copy(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.view(self.id(name)?).to_f32())
    }
}
