//! [`Error`]: the one error type of `profiled-state`.

/// Everything that can go wrong storing or reading user state. The server
/// maps each variant to one gRPC status code (see `profiled-server`'s
/// `error.rs`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The update of one user is invalid (e.g. an event further in the
    /// future than the allowed clock skew). Nothing of this user was stored.
    /// INVALID_ARGUMENT.
    #[error("{message}")]
    Invalid {
        /// Names the user and, where there is one, the event or field, e.g.
        /// `user "u1" event 3: timestamp 1900000000 is 3600 s in the future
        /// (state.max_clock_skew_s = 300)`.
        message: String,
    },
    /// The store cannot be reached or refused the operation for a reason
    /// that may pass (connection refused, node restarting, timeout).
    /// UNAVAILABLE; the message names the store.
    #[error("user state store {store} is unavailable: {message}")]
    Unavailable {
        /// Which store (backend and address or path).
        store: String,
        /// What failed.
        message: String,
    },
    /// The store is out of space (disk full, Redis `maxmemory`). Nothing was
    /// half-written. RESOURCE_EXHAUSTED.
    #[error("user state store {store} is full: {message}")]
    Full {
        /// Which store.
        store: String,
        /// What failed.
        message: String,
    },
    /// A stored record could not be read back (wrong format version,
    /// truncated). DATA_LOSS; the record is left as it is.
    #[error("user state store {store}: the record of user {user:?} is unreadable: {message}")]
    Corrupt {
        /// Which store.
        store: String,
        /// The user whose record is bad.
        user: String,
        /// What is wrong with it.
        message: String,
    },
    /// Optimistic concurrency gave up after its retry budget (a user written
    /// by many writers at once). ABORTED: the caller may retry; nothing of
    /// this user was stored.
    #[error("user {user:?}: gave up after {attempts} conflicting concurrent updates")]
    Contended {
        /// The user.
        user: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Bad store configuration (address, path, options). Found at start.
    #[error("user state configuration: {0}")]
    Config(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
