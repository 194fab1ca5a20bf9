//! `profiled-index`: embedding index files and similarity search.
//!
//! * [`IndexBuilder`] writes an immutable index file: f16 vectors in blocks
//!   of 16 rows stored dimension-major (the layout of the scan kernel,
//!   `profiled_kernels::scan`), an optional row-major copy for filtered
//!   gathers, string ids, attribute columns with per-value sorted row lists,
//!   and a header with magic, version, dims, counts, 64-byte aligned section
//!   offsets and a CRC-32 per section (see [`format`] and docs/search.md).
//! * [`IndexFile`] maps a file, validates all of it before use and refuses
//!   corrupt, truncated or mismatched files with a typed [`Error`], then
//!   pre-faults it.
//! * [`LocalBackend`] answers searches: exact SIMD scans with fused top-k
//!   (batched up to 16 queries per pass), candidate-list scans for filters,
//!   and — with the `ann` feature — HNSW through `usearch`, chosen per query
//!   by a planner. It implements [`SearchBackend`], the trait the server
//!   uses, so other engines can be added beside it.
//!   The trait also answers everything Search needs per row by id
//!   (attribute values, titles, seen items, stored vectors), and a
//!   [`BackendFactory`] (config-chosen; [`LocalFactory`] is the default) opens
//!   a version's indexes by [`IndexRole`].
//! * [`LiveIndex`]: the live users index — a mutable overlay over an index
//!   file (updated and new rows in a delta scanned by the same kernels,
//!   replaced and deleted rows masked, the HNSW updated in place), merged
//!   into a new file in the background; it implements [`SearchBackend`] and
//!   [`LiveUpdates`].
//! * [`Filter`] (attribute equals / in / not-in, id allow/deny lists, row
//!   exclusions) and the lookalike helpers ([`lookalike_by_ids`],
//!   [`seed_centroid`], the one seed-set centroid of the project).

mod backend;
mod error;
mod file;
mod filter;
pub mod format;
mod live;
mod search;
#[cfg(any(test, feature = "testing"))]
pub mod synthetic;
mod writer;

#[cfg(feature = "ann")]
pub mod ann;

pub use backend::{
    BackendFactory, ITEMS_INDEX, IndexRole, LocalFactory, OpenRequest, SEEN_ITEMS_ATTRIBUTE,
    TitleSource, USERS_INDEX,
};
pub use error::{Error, Result};
pub use file::{IndexFile, OpenOptions};
pub use filter::{Candidates, Condition, Filter, RowSet};
pub use live::{
    LiveApplied, LiveConfig, LiveIndex, LiveOp, LiveRow, LiveStats, LiveUpdates, MergeReport,
};
pub use profiled_kernels::scan::{BLOCK_ROWS, Hit, TopK};
pub use search::{
    LocalBackend, MAX_K, PlannerConfig, QueryResult, SearchBackend, SearchHit, SearchParams,
    SearchPath, lookalike_by_ids, lookalike_by_vector, lookalike_by_vectors, seed_centroid,
};
pub use writer::{IndexBuilder, WriteSummary};
