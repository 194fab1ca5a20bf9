//! `profiled-loadgen`: a load generator for any profiled server, reusable as
//! a library (the server report drives the server with it).
//!
//! - [`target`]: connections (one HTTP/2 connection each, TLS on/off, bearer
//!   token) and the calls with their outcome.
//! - [`workload`]: user pools (a dataset folder, a named synthetic dataset of
//!   `profiled-train`, or random users of the synthetic test model), the
//!   cache-hit ratio (misses are made unique), Embed / Search / Explain call
//!   shapes and weighted mixes.
//! - [`run`]: the open-loop scheduler (constant arrival rate; latency runs
//!   from the *intended* send time, so a slow server cannot slow the clock —
//!   no coordinated omission), the closed loop with N streams, count and
//!   duration bounds, the rate sweep, and the model swap mid-run.
//! - [`stats`]: HdrHistogram latencies, errors by gRPC code, swap phases.
//! - [`cpu`]: CPU time of this process and of a server process from
//!   `/proc/<pid>/stat` (the figures `getrusage` reports), so a report can
//!   show the client is not the bottleneck.

pub mod cpu;
pub mod run;
pub mod stats;
pub mod target;
pub mod workload;

pub use run::{Mode, RunConfig, RunReport, SwapPlan, SweepConfig, SweepReport, run, sweep};
pub use target::{Call, Outcome, Target, TargetConfig};
pub use workload::{
    EmbedSpec, ExplainSpec, Generator, SearchQuery, SearchSpec, Spec, TrackSpec, UserPool,
    Workload, Zipf,
};

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad option or workload description.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Loading the users failed.
    #[error("users: {0}")]
    Users(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of the load generator.
pub type Result<T> = std::result::Result<T, Error>;
