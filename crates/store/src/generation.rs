//! [`Generation`]: one loaded model version plus the indexes built from it
//! (one [`SearchBackend`] per index, opened by the configured
//! [`BackendFactory`]), with a process-unique id.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use profiled_index::{
    BackendFactory, IndexRole, LocalFactory, OpenRequest, SearchBackend, TitleSource,
};
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

pub use profiled_index::{ITEMS_INDEX, SEEN_ITEMS_ATTRIBUTE, USERS_INDEX};

/// Item titles from the model's vocabulary, for the items index backend.
struct ModelTitles(Arc<Encoder>);

impl TitleSource for ModelTitles {
    fn title_of(&self, id: &str) -> Option<String> {
        item_title(&self.0, id).map(str::to_string)
    }
}

fn item_title<'a>(encoder: &'a Encoder, id: &str) -> Option<&'a str> {
    let k = encoder.tokenizer().item_index(id)?;
    encoder
        .metadata()
        .schema
        .items
        .titles
        .get(k as usize)?
        .as_deref()
}

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
    pub encoder: Arc<Encoder>,
    /// The version directory.
    pub dir: PathBuf,
    /// When loading finished.
    pub loaded_at: SystemTime,
    /// Wall time of load + validation + golden check + warm-up.
    pub load_duration: Duration,
    /// What the model crate loaded.
    pub report: LoadReport,
    /// The items index, when the version has one.
    pub items: Option<Arc<dyn SearchBackend>>,
    /// The users index (with the users' attributes and seen items), when the
    /// version has one.
    pub users: Option<Arc<dyn SearchBackend>>,
    /// Bytes the indexes occupy.
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
    /// Loads `dir` as version `version` of `model` with the local index
    /// backend; see [`Generation::load_with`].
    pub fn load(model: &str, version: u64, dir: &Path, verify_golden: bool) -> Result<Generation> {
        Generation::load_with(model, version, dir, verify_golden, &LocalFactory::default())
    }

    /// Loads `dir` as version `version` of `model` (blocking: call it off
    /// the request path): mmap + validation + golden check (model crate), a
    /// warm-up forward over the golden inputs so the first requests are not
    /// cold, then the indexes through `indexes`.
    pub fn load_with(
        model: &str,
        version: u64,
        dir: &Path,
        verify_golden: bool,
        indexes: &dyn BackendFactory,
    ) -> Result<Generation> {
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
        let encoder =
            Arc::new(Encoder::load_with(dir, &opts).map_err(|e| load_err(e.to_string()))?);
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
        let open_index = |role: IndexRole| -> Result<Option<Arc<dyn SearchBackend>>> {
            let titles = (role == IndexRole::Items)
                .then(|| Arc::new(ModelTitles(encoder.clone())) as Arc<dyn TitleSource>);
            indexes
                .open(OpenRequest {
                    dir,
                    role,
                    dims: encoder.dim(),
                    titles,
                })
                .map_err(|e| load_err(format!("{}: {e}", role.file_name())))
        };
        let items = open_index(IndexRole::Items)?;
        let users = open_index(IndexRole::Users)?;
        let index_bytes = [&items, &users]
            .into_iter()
            .flatten()
            .map(|b| b.bytes())
            .sum::<u64>();
        let report = encoder.report().clone();
        LIVE.fetch_add(1, Ordering::Relaxed);
        let mapped = report.bytes_mapped as u64 + index_bytes;
        metrics::gauge!("profiled_mapped_bytes", "model" => model.to_string(), "version" => version.to_string())
            .increment(mapped as f64);
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

    /// Bytes of model and index files mapped into memory by this generation.
    pub fn mapped_bytes(&self) -> u64 {
        self.report.bytes_mapped as u64 + self.index_bytes
    }

    /// The title of item `id` recorded in the model's item vocabulary.
    pub fn item_title(&self, id: &str) -> Option<&str> {
        item_title(&self.encoder, id)
    }

    /// The index of `role`, when the version has one.
    pub fn index(&self, role: IndexRole) -> Option<&Arc<dyn SearchBackend>> {
        match role {
            IndexRole::Items => self.items.as_ref(),
            IndexRole::Users => self.users.as_ref(),
        }
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("profiled_mapped_bytes", "model" => self.model.clone(), "version" => self.version.to_string())
            .decrement(self.mapped_bytes() as f64);
        tracing::info!(
            model = %self.model,
            version = self.version,
            generation = self.id,
            "generation released"
        );
    }
}
