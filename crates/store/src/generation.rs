//! [`Generation`]: one loaded model version (plus, once the index crate is
//! wired in, its indexes) with a process-unique id.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use profiled_index::{LocalBackend, SearchBackend};
use profiled_model::{Encoder, LoadOptions, LoadReport, UserFeatures, Workspace};

use crate::error::{Error, Result};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A fresh process-unique generation id (never 0).
pub fn next_generation_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Number of [`Generation`]s alive in this process (loaded and not yet
/// dropped). After a swap it falls back once in-flight requests release the
/// old generation.
pub fn live_generations() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// File name of the items index in a version directory.
pub const ITEMS_INDEX: &str = "items.index";
/// File name of the users index in a version directory.
pub const USERS_INDEX: &str = "users.index";

/// One loaded, verified and warmed model version. Requests hold an
/// `Arc<Generation>` for their whole duration, so a swap never changes the
/// model under a running request; the memory (mapped files, packed weights)
/// is released when the last reference drops.
pub struct Generation {
    /// Process-unique id (changes when the same version is reloaded).
    pub id: u64,
    /// Model name (directory name).
    pub model: String,
    /// Version (directory name).
    pub version: u64,
    /// The encoder: validated, packed, golden-checked.
    pub encoder: Encoder,
    /// The version directory.
    pub dir: PathBuf,
    /// When loading finished.
    pub loaded_at: SystemTime,
    /// Wall time of load + validation + golden check + warm-up.
    pub load_duration: Duration,
    /// What the model crate loaded.
    pub report: LoadReport,
    /// The items index (`items.index`), when the version has one.
    pub items: Option<Arc<dyn SearchBackend>>,
    /// The users index (`users.index`), when the version has one.
    pub users: Option<Arc<dyn SearchBackend>>,
    /// Bytes of index files mapped.
    pub index_bytes: u64,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("model", &self.model)
            .field("version", &self.version)
            .field("dir", &self.dir)
            .field("items_rows", &self.items.as_ref().map(|b| b.len()))
            .field("users_rows", &self.users.as_ref().map(|b| b.len()))
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// Loads `dir` as version `version` of `model` (blocking: call it from
    /// `spawn_blocking`): mmap + validation + golden check (model crate),
    /// then a warm-up forward over the golden inputs so the first requests
    /// are not cold.
    pub fn load(model: &str, version: u64, dir: &Path, verify_golden: bool) -> Result<Generation> {
        let t0 = Instant::now();
        let opts = LoadOptions {
            verify_golden,
            ..LoadOptions::default()
        };
        let load_err = |reason: String| Error::Load {
            model: model.to_string(),
            version,
            reason,
        };
        let encoder = Encoder::load_with(dir, &opts).map_err(|e| load_err(e.to_string()))?;
        // Warm-up: one batched forward over the golden inputs (or an empty user).
        let mut warm: Vec<UserFeatures> = encoder
            .metadata()
            .golden
            .iter()
            .map(|g| g.input.to_features())
            .collect();
        if warm.is_empty() {
            warm.push(UserFeatures::default());
        }
        let mut ws = Workspace::new();
        if let Err(e) = encoder.forward_batch(&warm, &mut ws)
            && verify_golden
        {
            return Err(load_err(format!("warm-up forward failed: {e}")));
        }
        // Indexes built from this version: validated (dims, checksums) or the
        // whole version is refused.
        let mut index_bytes = 0u64;
        let mut open_index = |file: &str| -> Result<Option<Arc<dyn SearchBackend>>> {
            let path = dir.join(file);
            if !path.exists() {
                return Ok(None);
            }
            index_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let b = LocalBackend::open(&path, encoder.dim())
                .map_err(|e| load_err(format!("{file}: {e}")))?;
            Ok(Some(Arc::new(b)))
        };
        let items = open_index(ITEMS_INDEX)?;
        let users = open_index(USERS_INDEX)?;
        let report = encoder.report().clone();
        LIVE.fetch_add(1, Ordering::Relaxed);
        Ok(Generation {
            id: next_generation_id(),
            model: model.to_string(),
            version,
            encoder,
            dir: dir.to_path_buf(),
            loaded_at: SystemTime::now(),
            load_duration: t0.elapsed(),
            report,
            items,
            users,
            index_bytes,
        })
    }

    /// Profile vector dimension.
    pub fn dim(&self) -> usize {
        self.encoder.dim()
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(
            model = %self.model,
            version = self.version,
            generation = self.id,
            "generation released"
        );
    }
}
