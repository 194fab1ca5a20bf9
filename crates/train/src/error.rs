//! The one error type of `profiled-train`.
//!
//! Every fallible function of the crate returns [`Result`]. Errors about a
//! file name the file and, for row-level problems, the 1-based line number,
//! so a user can fix their data without reading code.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading, fetching, splitting,
/// training, evaluating or exporting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A required file does not exist.
    #[error("missing file {}{}", path.display(), if hint.is_empty() { String::new() } else { format!(" ({hint})") })]
    MissingFile {
        /// The file that was expected.
        path: PathBuf,
        /// What to do about it (may be empty).
        hint: String,
    },
    /// A row (or the header) of a data file cannot be parsed.
    #[error("{}:{line}: {message}", file.display())]
    Malformed {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A configured column does not exist in a file's header.
    #[error(
        "{}: unknown column `{column}` (mapped by the `{key}` key of columns.json, see docs/datasets.md; columns present: {available})",
        file.display()
    )]
    UnknownColumn {
        /// The file.
        file: PathBuf,
        /// The column that was asked for.
        column: String,
        /// The `columns.json` ([`crate::ColumnMap`]) key that maps it.
        key: String,
        /// Comma-separated columns the header has.
        available: String,
    },
    /// A rating outside the configured range (or not finite).
    #[error("{}:{line}: rating {value} is outside the allowed range [{min}, {max}]", file.display())]
    RatingOutOfRange {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending value.
        value: f64,
        /// Lower bound (inclusive).
        min: f64,
        /// Upper bound (inclusive).
        max: f64,
    },
    /// The same user or item id appears twice in a `.user` / `.item` file.
    #[error("{}:{line}: duplicate {kind} id `{id}` (first seen on line {first_line})", file.display())]
    DuplicateId {
        /// The file.
        file: PathBuf,
        /// 1-based line number of the second occurrence.
        line: usize,
        /// `user` or `item`.
        kind: &'static str,
        /// The id.
        id: String,
        /// 1-based line number of the first occurrence.
        first_line: usize,
    },
    /// A dataset (or what is left of it after filtering) has no usable data.
    #[error("empty dataset: {0}")]
    EmptyDataset(String),
    /// A dataset name is neither a known fetched dataset nor a folder.
    #[error("unknown dataset `{name}`: {hint}")]
    UnknownDataset {
        /// The name or path given.
        name: String,
        /// What was tried and what to do.
        hint: String,
    },
    /// A column-mapping or evaluation configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Fetching a dataset failed (pip missing, network down, …).
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// A downloaded file does not have the expected sha256.
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {actual}", path.display())]
    ChecksumMismatch {
        /// The file checked.
        path: PathBuf,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
    /// A zip archive is unreadable or lacks a required member.
    #[error("archive {}: {message}", path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The evaluation protocol cannot be applied (e.g. a model saw test events).
    #[error("evaluation: {0}")]
    Eval(String),
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A user's features do not fit the model's feature schema.
    #[error("feature `{field}`: {message}")]
    Feature {
        /// The offending field (input column) name, or `events`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor operation of the trainer failed (shape bug, out of memory, …).
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// A model file (model.json / model.safetensors) is unusable.
    #[error("model {}: {message}", path.display())]
    Model {
        /// The model file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Training cannot proceed (bad options, no training examples, …).
    #[error("training: {0}")]
    Train(String),
    /// The shared model-format code (`profiled-model`) refused something that
    /// is not a feature (feature errors become [`Error::Feature`]).
    #[error("model format: {0}")]
    Format(#[source] profiled_model::Error),
}

impl From<profiled_model::Error> for Error {
    fn from(e: profiled_model::Error) -> Self {
        match e {
            profiled_model::Error::Feature { field, message } => Error::Feature { field, message },
            other => Error::Format(other),
        }
    }
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
