//! [`Generation`]: one loaded model version plus the indexes built from it,
//! with a process-unique id; [`IndexData`]: per-row attribute values, item
//! titles and users' seen items, read from the index files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use profiled_index::{IndexFile, LocalBackend, SearchBackend};
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

/// Attribute of the users index that holds each user's item history: one
/// value per item the user interacted with (the item id). Used by Search's
/// `exclude_seen_items` for `user_id` queries (`IndexInfo.has_histories`),
/// and filterable like any attribute ("users who saw item 50").
pub const SEEN_ITEMS_ATTRIBUTE: &str = "seen_items";

/// Per-row view of one index file's attribute columns, built on first use
/// from the value → rows posting lists (the file stores only that direction).
#[derive(Debug)]
struct RowTable {
    /// Attribute names, sorted.
    names: Vec<String>,
    /// Per attribute: its distinct values.
    values: Vec<Vec<String>>,
    /// Per row: (attribute, value) index pairs, by attribute then value.
    rows: Vec<Vec<(u32, u32)>>,
}

/// One opened index of a generation: the search backend plus the file, for
/// per-row attribute values.
pub struct IndexData {
    /// The search engine over the file.
    pub backend: Arc<dyn SearchBackend>,
    /// The validated, mapped file.
    pub file: Arc<IndexFile>,
    /// Bytes of the index file and its ANN sidecar, when present.
    pub bytes: u64,
    rows: OnceLock<RowTable>,
}

impl std::fmt::Debug for IndexData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexData")
            .field("rows", &self.file.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl IndexData {
    fn table(&self) -> &RowTable {
        self.rows.get_or_init(|| {
            let file = &self.file;
            let names: Vec<String> = file.attributes().map(str::to_string).collect();
            let mut values = Vec::with_capacity(names.len());
            let mut rows: Vec<Vec<(u32, u32)>> = vec![Vec::new(); file.len()];
            for (a, name) in names.iter().enumerate() {
                let vals: Vec<String> = file
                    .attribute_values(name)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(v, _)| v.to_string())
                    .collect();
                for (vi, v) in vals.iter().enumerate() {
                    for &r in file.postings(name, v).unwrap_or(&[]) {
                        if let Some(row) = rows.get_mut(r as usize) {
                            row.push((a as u32, vi as u32));
                        }
                    }
                }
                values.push(vals);
            }
            RowTable {
                names,
                values,
                rows,
            }
        })
    }

    /// Attribute names of the index, sorted.
    pub fn attribute_names(&self) -> Vec<String> {
        self.file.attributes().map(str::to_string).collect()
    }

    /// Whether the index holds item histories ([`SEEN_ITEMS_ATTRIBUTE`]).
    pub fn has_histories(&self) -> bool {
        self.file.has_attribute(SEEN_ITEMS_ATTRIBUTE)
    }

    /// Every attribute value of `row`, by attribute name (values sorted).
    /// The first call builds a row table over the whole index (one pass over
    /// the posting lists); later calls are lookups.
    pub fn row_attributes(&self, row: u32) -> BTreeMap<String, Vec<String>> {
        let t = self.table();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for &(a, v) in t.rows.get(row as usize).map_or(&[][..], Vec::as_slice) {
            if let (Some(name), Some(value)) = (
                t.names.get(a as usize),
                t.values.get(a as usize).and_then(|vs| vs.get(v as usize)),
            ) {
                out.entry(name.clone()).or_default().push(value.clone());
            }
        }
        out
    }

    /// The values of `attribute` for the row of `id`: `None` when the id is
    /// not in the index, an empty list when the row has no such value.
    pub fn values_of(&self, id: &str, attribute: &str) -> Option<Vec<String>> {
        let row = self.file.row_of(id)?;
        Some(
            self.row_attributes(row)
                .remove(attribute)
                .unwrap_or_default(),
        )
    }
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
    /// The items index file (attributes per row), when present.
    pub items_data: Option<IndexData>,
    /// The users index file (attributes and histories per row), when present.
    pub users_data: Option<IndexData>,
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
        let open_index = |file: &str| -> Result<Option<IndexData>> {
            let path = dir.join(file);
            if !path.exists() {
                return Ok(None);
            }
            let b = LocalBackend::open(&path, encoder.dim())
                .map_err(|e| load_err(format!("{file}: {e}")))?;
            let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let mut bytes = size(&path);
            if b.has_ann() {
                bytes += size(&profiled_index::ann::sidecar_path(&path));
            }
            let file = b.index().clone();
            Ok(Some(IndexData {
                backend: Arc::new(b),
                file,
                bytes,
                rows: OnceLock::new(),
            }))
        };
        let items_data = open_index(ITEMS_INDEX)?;
        let users_data = open_index(USERS_INDEX)?;
        let index_bytes =
            items_data.as_ref().map_or(0, |d| d.bytes) + users_data.as_ref().map_or(0, |d| d.bytes);
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
            items: items_data.as_ref().map(|d| d.backend.clone()),
            users: users_data.as_ref().map(|d| d.backend.clone()),
            index_bytes,
            items_data,
            users_data,
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
        let k = self.encoder.tokenizer().item_index(id)?;
        self.encoder
            .metadata()
            .schema
            .items
            .titles
            .get(k as usize)?
            .as_deref()
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
