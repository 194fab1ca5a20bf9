//! Opening a version's indexes: [`BackendFactory`] (chosen by config; the
//! local mmap backend, [`LocalFactory`], is the default and only one now),
//! the roles an index plays ([`IndexRole`]) and where per-row titles come
//! from ([`TitleSource`]).
//!
//! A new backend (a remote vector engine, say) implements [`SearchBackend`]
//! and a factory here; the server's core only ever holds
//! `Arc<dyn SearchBackend>` and never sees a file or a row number.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::error::Result;
use crate::file::IndexFile;
use crate::live::{LiveConfig, LiveIndex};
use crate::search::{LocalBackend, PlannerConfig, SearchBackend};

/// File name of the items index in a version directory.
pub const ITEMS_INDEX: &str = "items.index";
/// File name of the users index in a version directory.
pub const USERS_INDEX: &str = "users.index";

/// Attribute of the users index that holds each user's item history: one
/// value per item the user interacted with (the item id). Used by Search's
/// `exclude_seen_items` for `user_id` queries (`IndexInfo.has_histories`),
/// and filterable like any attribute ("users who saw item 50").
pub const SEEN_ITEMS_ATTRIBUTE: &str = "seen_items";

/// The index a backend serves for a model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexRole {
    /// The model's items (nearest items for a profile).
    Items,
    /// The model's users (lookalikes).
    Users,
}

impl IndexRole {
    /// `items` or `users`.
    pub fn name(self) -> &'static str {
        match self {
            IndexRole::Items => "items",
            IndexRole::Users => "users",
        }
    }

    /// The index file of this role in a version directory.
    pub fn file_name(self) -> &'static str {
        match self {
            IndexRole::Items => ITEMS_INDEX,
            IndexRole::Users => USERS_INDEX,
        }
    }
}

/// Display titles of rows by id (items' titles come from the model's
/// vocabulary, not from the index file).
pub trait TitleSource: Send + Sync {
    /// The title of `id`, when one is known.
    fn title_of(&self, id: &str) -> Option<String>;
}

/// What a factory is asked to open.
#[derive(Clone)]
pub struct OpenRequest<'a> {
    /// The version directory.
    pub dir: &'a Path,
    /// Which index.
    pub role: IndexRole,
    /// Dimension the model's vectors have.
    pub dims: usize,
    /// Titles of the rows, when the role has them (items).
    pub titles: Option<Arc<dyn TitleSource>>,
}

/// Opens the indexes of a model version. Chosen by config; the store calls
/// it once per index while loading a version (off the request path).
pub trait BackendFactory: Send + Sync + Debug {
    /// A short name for logs and config (`local`, …).
    fn name(&self) -> &str;
    /// The backend of `request.role` for the version in `request.dir`, or
    /// `None` when the version has no such index. A present but unusable
    /// index is an error (the version is refused).
    fn open(&self, request: OpenRequest<'_>) -> Result<Option<Arc<dyn SearchBackend>>>;
}

/// The local backend's factory: `<dir>/items.index` and `<dir>/users.index`
/// mapped from disk, with their HNSW sidecars when present; with `live`,
/// the users index is opened as a [`LiveIndex`] (updated as user state
/// changes).
#[derive(Debug, Clone, Default)]
pub struct LocalFactory {
    /// Planner thresholds of the opened backends.
    pub planner: PlannerConfig,
    /// Open users indexes as live indexes with these settings (their
    /// `planner` is replaced by the one above).
    pub live: Option<LiveConfig>,
}

impl BackendFactory for LocalFactory {
    fn name(&self) -> &str {
        "local"
    }

    fn open(&self, request: OpenRequest<'_>) -> Result<Option<Arc<dyn SearchBackend>>> {
        let path = request.dir.join(request.role.file_name());
        if !path.exists() {
            return Ok(None);
        }
        if let (Some(live), IndexRole::Users) = (&self.live, request.role) {
            let config = LiveConfig {
                planner: self.planner,
                ..live.clone()
            };
            let mut b = LiveIndex::open(&path, request.dims, config)?;
            if let Some(t) = request.titles {
                b = b.with_titles(t)?;
            }
            return Ok(Some(Arc::new(b)));
        }
        let mut b = LocalBackend::open(&path, request.dims)?.with_planner(self.planner);
        if let Some(t) = request.titles {
            b = b.with_titles(t);
        }
        Ok(Some(Arc::new(b)))
    }
}

/// Per-row view of one index file's attribute columns, built on first use
/// from the value → rows posting lists (the file stores only that direction).
#[derive(Debug, Default)]
pub(crate) struct RowTable {
    /// Attribute names, sorted.
    names: Vec<String>,
    /// Per attribute: its distinct values.
    values: Vec<Vec<String>>,
    /// Per row: (attribute, value) index pairs, by attribute then value.
    rows: Vec<Vec<(u32, u32)>>,
}

impl RowTable {
    fn build(file: &IndexFile) -> RowTable {
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
    }

    /// Every attribute value of `row`, by attribute name (values sorted).
    pub(crate) fn row(&self, row: u32) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for &(a, v) in self.rows.get(row as usize).map_or(&[][..], Vec::as_slice) {
            if let (Some(name), Some(value)) = (
                self.names.get(a as usize),
                self.values
                    .get(a as usize)
                    .and_then(|vs| vs.get(v as usize)),
            ) {
                out.entry(name.clone()).or_default().push(value.clone());
            }
        }
        out
    }
}

/// A lazily built [`RowTable`] (the first call pays one pass over the
/// posting lists; later calls are lookups).
#[derive(Debug, Default)]
pub(crate) struct LazyRows(OnceLock<RowTable>);

impl LazyRows {
    pub(crate) fn get(&self, file: &IndexFile) -> &RowTable {
        self.0.get_or_init(|| RowTable::build(file))
    }
}
