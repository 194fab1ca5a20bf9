//! [`Error`]: the one error type of `profiled-store`.

use std::path::PathBuf;

/// Everything that can go wrong in the model store: resolving a model for a
/// request, loading a version, labels, publishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A model name that is not a valid directory name (`[A-Za-z0-9_.-]`, 1–64
    /// characters, not starting with `.`).
    #[error(
        "invalid model name {0:?}: use 1-64 characters of [A-Za-z0-9_.-], not starting with '.'"
    )]
    InvalidName(String),
    /// A version number that is not a positive integer.
    #[error("invalid version {0}: versions are positive integers")]
    InvalidVersion(u64),
    /// A label name that is not 1–32 characters of `[a-z0-9_-]`.
    #[error("invalid label {0:?}: use 1-32 characters of [a-z0-9_-]")]
    InvalidLabel(String),
    /// An unparsable version policy.
    #[error(
        "invalid version policy {0:?}: expected \"latest\", \"latest:N\" (N >= 1) or \"pinned:V\" (V >= 1)"
    )]
    InvalidPolicy(String),
    /// No model name was given and there is no default model.
    #[error("no model name given and no default model (models: {available})")]
    NoDefaultModel {
        /// The models the store knows, comma separated.
        available: String,
    },
    /// The model is not in the repository.
    #[error("unknown model {name:?} (models: {available})")]
    UnknownModel {
        /// The requested name.
        name: String,
        /// The models the store knows, comma separated.
        available: String,
    },
    /// The pinned version is unknown or not READY.
    #[error("model {model:?} version {version} is not available ({state})")]
    VersionNotReady {
        /// Model name.
        model: String,
        /// The version.
        version: u64,
        /// Its state, e.g. "unknown", "FAILED: ...", "LOADING".
        state: String,
    },
    /// The label does not exist for this model.
    #[error("model {model:?} has no label {label:?}")]
    UnknownLabel {
        /// Model name.
        model: String,
        /// The label.
        label: String,
    },
    /// The model has no READY version (startup, or every version failed).
    #[error("model {model:?} has no ready version yet")]
    NoReadyVersion {
        /// Model name.
        model: String,
    },
    /// A version failed to load (invalid files, golden check, index mismatch).
    #[error("model {model:?} version {version}: {reason}")]
    Load {
        /// Model name.
        model: String,
        /// Version.
        version: u64,
        /// Why, naming the file and the problem.
        reason: String,
    },
    /// An operation is not allowed in the current state (e.g. labelling a
    /// version that is not READY, unloading the only READY version).
    #[error("{0}")]
    Precondition(String),
    /// Bad publish source or repository layout.
    #[error("publish: {0}")]
    Publish(String),
    /// The labels file of a model is malformed.
    #[error("{path}: {message}")]
    Labels {
        /// The labels file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A path in the repository resolves (through `..` or a symlink) outside
    /// the repository root, or cannot be resolved.
    #[error("{path}: {why} (the repository root is {root})")]
    PathEscape {
        /// The path as found or named.
        path: PathBuf,
        /// What is wrong, e.g. "symlink resolves to /etc/x, outside the repository".
        why: String,
        /// The repository root (resolved).
        root: PathBuf,
    },
    /// A loading task panicked or was cancelled (a bug).
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `text` as error messages show caller input: whole up to 64 bytes, else its
/// first 64 bytes (on a character boundary), an ellipsis and its length, so a
/// message never echoes unbounded input.
pub fn shown(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn shown_input_is_bounded() {
        assert_eq!(shown("ml100k"), "ml100k");
        let long = "é".repeat(50_000);
        let s = shown(&long);
        assert!(s.len() < 100, "{s}");
        assert!(s.ends_with("… (100000 bytes)"), "{s}");
        assert!(s.starts_with("éé"));
    }
}
