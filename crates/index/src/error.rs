//! The index crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong building, opening or searching an index.
///
/// Opening never panics on file content: every malformed byte becomes one of
/// the file variants below, naming the file and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the index magic.
    #[error("{path}: not a profiled index file (bad magic)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by an unsupported format version.
    #[error("{path}: unsupported index format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is shorter than its header says.
    #[error("{path}: truncated: {need} bytes needed, {len} present")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header requires.
        need: u64,
        /// Bytes present.
        len: u64,
    },
    /// A checksum does not match the bytes it covers.
    #[error("{path}: checksum mismatch in {section}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The header or the section name.
        section: &'static str,
    },
    /// A structural inconsistency (sizes, alignment, offsets, tables).
    #[error("{path}: corrupt index: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        detail: String,
    },
    /// The index holds vectors of another dimension than the model's.
    #[error("{path}: index has {found} dimensions, expected {expected}")]
    DimsMismatch {
        /// The file.
        path: PathBuf,
        /// The dimension the caller expects (the model's).
        expected: usize,
        /// The dimension in the file.
        found: usize,
    },
    /// The target of a write already exists (published files are immutable).
    #[error("{0} already exists; index files are never overwritten")]
    AlreadyExists(PathBuf),
    /// Two rows have the same id.
    #[error("duplicate id {0:?}")]
    DuplicateId(String),
    /// A caller-supplied value is invalid (vector length, non-finite value, k, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A filter names an attribute the index does not have.
    #[error("unknown attribute {0:?}")]
    UnknownAttribute(String),
    /// An id given as a seed or query is not in the index.
    #[error("unknown id {0:?}")]
    UnknownId(String),
    /// The kernel rejected its arguments (a bug in this crate if it happens).
    #[error(transparent)]
    Kernel(#[from] profiled_kernels::KernelError),
    /// The ANN library failed.
    #[error("ANN index {path}: {detail}")]
    Ann {
        /// The ANN file.
        path: PathBuf,
        /// The library's message.
        detail: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
