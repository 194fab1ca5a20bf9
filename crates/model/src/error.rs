//! [`Error`]: the one error type of `profiled-model`.

use std::path::PathBuf;

use profiled_kernels::KernelError;

/// Everything that can go wrong while loading a model, tokenizing features,
/// computing profiles or explaining them. Model-file errors name the file and
/// what is wrong; feature errors name the offending field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A model file is malformed or inconsistent (bad JSON, bad safetensors
    /// header, wrong tensor shape or dtype, non-finite weight, vocabulary that
    /// disagrees with its table, ...).
    #[error("{path}: {message}")]
    Model {
        /// The file at fault (`model.json` or `model.safetensors`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A golden example of `model.json` does not reproduce: the version is refused.
    #[error("{path}: golden example {index} ({note}): {message}")]
    Golden {
        /// `model.json`.
        path: PathBuf,
        /// Index of the example.
        index: usize,
        /// Its note (what it exercises).
        note: String,
        /// What went wrong (cosine below the threshold, tokenizer error, ...).
        message: String,
    },
    /// Bad request features: unknown field, wrong value kind, non-finite number, ...
    #[error("field `{field}`: {message}")]
    Feature {
        /// The offending field (`events` for behaviour events).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// One user of a batch has bad features.
    #[error("user {index} of the batch: {source}")]
    Batch {
        /// Position of the user in the batch.
        index: usize,
        /// The user's error.
        #[source]
        source: Box<Error>,
    },
    /// A bad argument that is not a feature (unknown item id in an explain
    /// target, wrong vector width, empty workspace list, ...).
    #[error("{0}")]
    Argument(String),
    /// A kernel rejected its inputs (an internal bug: shapes are validated at load).
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
}

impl Error {
    pub(crate) fn model(path: &std::path::Path, message: impl Into<String>) -> Error {
        Error::Model {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn feature(field: &str, message: impl Into<String>) -> Error {
        Error::Feature {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
