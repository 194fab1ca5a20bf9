//! Loader for RecBole **atomic files** (`<name>.inter`, `<name>.user`, `<name>.item`).
//!
//! Format: UTF-8, tab-separated, one header line of `name:type` cells with
//! types `token`, `token_seq`, `float`, `float_seq`; `token_seq` / `float_seq`
//! values are space-separated. Lines may end in CRLF. Empty lines are skipped.
//! An empty cell is a missing value. Ids may be any non-empty string.
//!
//! Which column means what is given by a [`ColumnMap`] (defaults: MovieLens
//! as shipped by RecBole). A folder may carry its own mapping as
//! `columns.json` (a JSON [`ColumnMap`]; absent keys keep the MovieLens
//! defaults), which [`load_atomic_dir`] and [`resolve_dataset`] pick up.
//! A key that keeps its default also recognises RecBole's other common
//! names for it (genres: `class`, `genre`, `genres`, `categories`; title:
//! `movie_title`, `title`, `name`; item id: `item_id`, `business_id`;
//! rating: `rating`, `stars`; timestamp: `timestamp`, `date`), and default
//! user / item attribute columns that a file lacks are skipped, so RecBole's
//! own ml-1m files load without a `columns.json`. A column the mapping names
//! that is not there is an error naming the `columns.json` key that maps it.
//!
//! Decisions:
//! - `.inter` is required; `.user` and `.item` are optional (without them,
//!   users / items have no attributes and are numbered in order of first
//!   appearance in `.inter`).
//! - An interaction whose user (item) is not in the `.user` (`.item`) file
//!   creates a **bare** user (item) with no attributes, appended after the
//!   listed ones in order of first appearance. RecBole does the same (it
//!   fills missing attributes with defaults). The count is reported in
//!   [`LoadReport`], never hidden.
//! - A user or item listed twice is an error ([`Error::DuplicateId`]).
//! - Without a timestamp column, the row index of `.inter` is the timestamp.
//! - Float timestamps are floored to `i64`.
//! - `float_seq` attribute values are stored as [`FieldValue::TokenSeq`] of
//!   the validated number strings (the shared `FieldValue` has no float list).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, FieldValue, Interaction, Item, User};
use crate::error::{Error, Result};

/// The column types of the atomic format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A single categorical token.
    Token,
    /// Space-separated tokens.
    TokenSeq,
    /// A number.
    Float,
    /// Space-separated numbers.
    FloatSeq,
}

impl ColumnType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "token" => Some(ColumnType::Token),
            "token_seq" => Some(ColumnType::TokenSeq),
            "float" => Some(ColumnType::Float),
            "float_seq" => Some(ColumnType::FloatSeq),
            _ => None,
        }
    }
}

/// Which columns of the atomic files mean what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColumnMap {
    /// User id column (in `.inter` and `.user`).
    pub user_id: String,
    /// Item id column (in `.inter` and `.item`).
    pub item_id: String,
    /// Rating column of `.inter`, if any.
    pub rating: Option<String>,
    /// Inclusive allowed rating range; `None` only requires finite values.
    pub rating_range: Option<[f64; 2]>,
    /// Timestamp column of `.inter`; `None` uses the row order.
    pub timestamp: Option<String>,
    /// Item title column of `.item` (`token_seq` is joined with spaces).
    pub title: Option<String>,
    /// Item genre / tag column of `.item` (`token_seq` or `token`).
    pub genres: Option<String>,
    /// `.user` columns kept as user fields.
    pub user_fields: Vec<String>,
    /// `.item` columns kept as item fields.
    pub item_fields: Vec<String>,
}

impl ColumnMap {
    /// The MovieLens mapping of RecBole's `ml-100k` / `ml-1m` atomic files.
    pub fn movielens() -> Self {
        ColumnMap {
            user_id: "user_id".into(),
            item_id: "item_id".into(),
            rating: Some("rating".into()),
            rating_range: Some([0.0, 5.0]),
            timestamp: Some("timestamp".into()),
            title: Some("movie_title".into()),
            genres: Some("class".into()),
            user_fields: ["age", "gender", "occupation", "zip_code"]
                .map(String::from)
                .to_vec(),
            item_fields: vec!["release_year".into()],
        }
    }
}

/// Common RecBole names of the user id column, tried when `user_id` keeps its default.
const USER_ID_ALIASES: &[&str] = &["user_id"];
/// Item id names (`business_id`: Yelp), tried when `item_id` keeps its default.
const ITEM_ID_ALIASES: &[&str] = &["item_id", "business_id"];
/// Rating names (`stars`: Yelp), tried when `rating` keeps its default.
const RATING_ALIASES: &[&str] = &["rating", "stars"];
/// Timestamp names, tried when `timestamp` keeps its default (none found: row order).
const TIMESTAMP_ALIASES: &[&str] = &["timestamp", "date"];
/// Title names (`title`: Amazon, `name`: Yelp), tried when `title` keeps its default.
const TITLE_ALIASES: &[&str] = &["movie_title", "title", "name"];
/// Genre / category names (`class`: ml-100k, `genre`: ml-1m / ml-10m / ml-20m,
/// `categories`: Amazon / Yelp), tried when `genres` keeps its default.
const GENRE_ALIASES: &[&str] = &["class", "genre", "genres", "categories"];

impl Default for ColumnMap {
    fn default() -> Self {
        Self::movielens()
    }
}

/// What the loader did that a user should know about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Users referenced by `.inter` but absent from `.user` (created bare).
    pub bare_users: usize,
    /// Items referenced by `.inter` but absent from `.item` (created bare).
    pub bare_items: usize,
    /// Interactions with an empty rating cell.
    pub missing_ratings: usize,
    /// Empty lines skipped across all files.
    pub empty_lines: usize,
}

/// A parsed atomic file: header plus raw rows with their line numbers.
struct Table {
    path: PathBuf,
    columns: Vec<(String, ColumnType)>,
    /// (1-based line number, cells)
    rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    fn read(path: &Path, report: &mut LoadReport) -> Result<Table> {
        let bytes = std::fs::read(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingFile {
                    path: path.to_path_buf(),
                    hint: String::new(),
                }
            } else {
                Error::io(path, e)
            }
        })?;
        let mut columns: Option<Vec<(String, ColumnType)>> = None;
        let mut rows = Vec::new();
        for (idx, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = idx + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let malformed = |message: String| Error::Malformed {
                file: path.to_path_buf(),
                line: line_no,
                message,
            };
            let line = std::str::from_utf8(raw)
                .map_err(|e| malformed(format!("not valid UTF-8 ({e})")))?;
            if line.is_empty() {
                if columns.is_some() {
                    report.empty_lines += 1;
                }
                continue;
            }
            match &columns {
                None => {
                    let mut cols: Vec<(String, ColumnType)> = Vec::new();
                    for cell in line.split('\t') {
                        let (name, ty) = cell.rsplit_once(':').ok_or_else(|| {
                            malformed(format!("header cell `{cell}` is not `name:type`"))
                        })?;
                        let ty = ColumnType::parse(ty).ok_or_else(|| {
                            malformed(format!(
                                "header cell `{cell}`: unknown type `{ty}` \
                                 (expected token, token_seq, float or float_seq)"
                            ))
                        })?;
                        if name.is_empty() {
                            return Err(malformed(format!("header cell `{cell}` has no name")));
                        }
                        if cols.iter().any(|(n, _)| n == name) {
                            return Err(malformed(format!("duplicate column `{name}` in header")));
                        }
                        cols.push((name.to_string(), ty));
                    }
                    columns = Some(cols);
                }
                Some(cols) => {
                    let cells: Vec<String> = line.split('\t').map(str::to_string).collect();
                    if cells.len() != cols.len() {
                        return Err(malformed(format!(
                            "expected {} tab-separated fields, found {}",
                            cols.len(),
                            cells.len()
                        )));
                    }
                    rows.push((line_no, cells));
                }
            }
        }
        let columns = columns.ok_or_else(|| Error::Malformed {
            file: path.to_path_buf(),
            line: 1,
            message: "file is empty (no header line)".into(),
        })?;
        Ok(Table {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    fn position(&self, name: &str) -> Option<(usize, ColumnType)> {
        self.columns
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| (i, self.columns[i].1))
    }

    /// The column `name`, which the `columns.json` key `key` maps.
    fn column(&self, name: &str, key: &str) -> Result<(usize, ColumnType)> {
        self.position(name).ok_or_else(|| self.unknown(name, key))
    }

    fn unknown(&self, name: &str, key: &str) -> Error {
        Error::UnknownColumn {
            file: self.path.clone(),
            column: name.to_string(),
            key: key.to_string(),
            available: self
                .columns
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// An optional column of the mapping: absent when `name` is `None`; when
    /// `name` is still the default of `key` and is absent, the first of the
    /// common RecBole names `aliases` that the header has (or none).
    fn optional(
        &self,
        name: Option<&str>,
        key: &str,
        default: Option<&str>,
        aliases: &[&str],
    ) -> Result<Option<(usize, ColumnType)>> {
        let Some(name) = name else {
            return Ok(None);
        };
        if let Some(c) = self.position(name) {
            return Ok(Some(c));
        }
        if Some(name) == default {
            return Ok(aliases.iter().find_map(|a| self.position(a)));
        }
        self.column(name, key).map(Some)
    }

    /// A required id column: the configured one, or (when it is the
    /// default) the first alias the header has.
    fn id_column(&self, name: &str, key: &str, default: &str, aliases: &[&str]) -> Result<usize> {
        if name == default
            && let Some((c, _)) = aliases.iter().find_map(|a| self.position(a))
        {
            return Ok(c);
        }
        self.column(name, key).map(|(c, _)| c)
    }

    /// The kept attribute columns of a list key: every configured one when
    /// the list differs from its default, else those of the default that
    /// the header has.
    fn fields(
        &self,
        names: &[String],
        key: &str,
        default: &[String],
    ) -> Result<Vec<(String, usize)>> {
        let is_default = names == default;
        let mut out = Vec::new();
        for f in names {
            match self.position(f) {
                Some((c, _)) => out.push((f.clone(), c)),
                None if is_default => {}
                None => return Err(self.unknown(f, key)),
            }
        }
        Ok(out)
    }

    fn malformed(&self, line: usize, message: String) -> Error {
        Error::Malformed {
            file: self.path.clone(),
            line,
            message,
        }
    }

    fn id(&self, line: usize, cells: &[String], col: usize) -> Result<String> {
        let v = &cells[col];
        if v.is_empty() {
            return Err(self.malformed(
                line,
                format!("empty id in column `{}`", self.columns[col].0),
            ));
        }
        Ok(v.clone())
    }

    fn float(&self, line: usize, cells: &[String], col: usize) -> Result<Option<f64>> {
        let v = cells[col].trim();
        if v.is_empty() {
            return Ok(None);
        }
        let x: f64 = v.parse().map_err(|_| {
            self.malformed(
                line,
                format!("column `{}`: `{v}` is not a number", self.columns[col].0),
            )
        })?;
        if !x.is_finite() {
            return Err(self.malformed(
                line,
                format!(
                    "column `{}`: `{v}` is not a finite number",
                    self.columns[col].0
                ),
            ));
        }
        Ok(Some(x))
    }

    fn value(&self, line: usize, cells: &[String], col: usize) -> Result<Option<FieldValue>> {
        let raw = &cells[col];
        if raw.is_empty() {
            return Ok(None);
        }
        Ok(match self.columns[col].1 {
            ColumnType::Token => Some(FieldValue::Token(raw.clone())),
            ColumnType::Float => self.float(line, cells, col)?.map(FieldValue::Float),
            ColumnType::TokenSeq => Some(FieldValue::TokenSeq(split_seq(raw))),
            ColumnType::FloatSeq => {
                let mut out = Vec::new();
                for t in raw.split(' ').filter(|t| !t.is_empty()) {
                    let x: f64 = t.parse().map_err(|_| {
                        self.malformed(
                            line,
                            format!("column `{}`: `{t}` is not a number", self.columns[col].0),
                        )
                    })?;
                    if !x.is_finite() {
                        return Err(self.malformed(
                            line,
                            format!("column `{}`: `{t}` is not finite", self.columns[col].0),
                        ));
                    }
                    out.push(t.to_string());
                }
                Some(FieldValue::TokenSeq(out))
            }
        })
    }
}

fn split_seq(raw: &str) -> Vec<String> {
    raw.split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Paths of the three atomic files of one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomicFiles {
    /// The `.inter` file (required).
    pub inter: PathBuf,
    /// The `.user` file, if present.
    pub user: Option<PathBuf>,
    /// The `.item` file, if present.
    pub item: Option<PathBuf>,
}

impl AtomicFiles {
    /// Finds `<dir>/<name>.{inter,user,item}` where `name` is the folder's
    /// name; if that `.inter` is absent, the folder's only `*.inter` file.
    pub fn find(dir: &Path) -> Result<(String, AtomicFiles)> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: "expected a folder of RecBole atomic files".into(),
            });
        }
        let folder_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into());
        let mut stem = folder_name.clone();
        if !dir.join(format!("{stem}.inter")).is_file() {
            let mut inters = Vec::new();
            let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "inter")
                    && p.is_file()
                    && let Some(s) = p.file_stem()
                {
                    inters.push(s.to_string_lossy().into_owned());
                }
            }
            inters.sort();
            match inters.len() {
                1 => stem = inters.remove(0),
                0 => {
                    return Err(Error::MissingFile {
                        path: dir.join(format!("{stem}.inter")),
                        hint: "a dataset folder needs one `<name>.inter` file".into(),
                    });
                }
                _ => {
                    return Err(Error::Config(format!(
                        "{}: several .inter files ({}); name the folder after one of them",
                        dir.display(),
                        inters.join(", ")
                    )));
                }
            }
        }
        let opt = |ext: &str| {
            let p = dir.join(format!("{stem}.{ext}"));
            p.is_file().then_some(p)
        };
        Ok((
            stem.clone(),
            AtomicFiles {
                inter: dir.join(format!("{stem}.inter")),
                user: opt("user"),
                item: opt("item"),
            },
        ))
    }
}

/// Loads a dataset from explicit atomic files with a column mapping.
pub fn load_atomic(
    name: &str,
    files: &AtomicFiles,
    map: &ColumnMap,
) -> Result<(Dataset, LoadReport)> {
    let mut report = LoadReport::default();
    let dflt = ColumnMap::movielens();
    if let Some([lo, hi]) = map.rating_range
        && !(lo.is_finite() && hi.is_finite() && lo <= hi)
    {
        return Err(Error::Config(format!(
            "rating_range [{lo}, {hi}] is not a valid range"
        )));
    }

    // Users.
    let mut users: Vec<User> = Vec::new();
    let mut user_index: HashMap<String, u32> = HashMap::new();
    if let Some(path) = &files.user {
        let t = Table::read(path, &mut report)?;
        let id_col = t.id_column(&map.user_id, "user_id", &dflt.user_id, USER_ID_ALIASES)?;
        let field_cols = t.fields(&map.user_fields, "user_fields", &dflt.user_fields)?;
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (line, cells) in &t.rows {
            let id = t.id(*line, cells, id_col)?;
            if let Some(&first) = first_line.get(&id) {
                return Err(Error::DuplicateId {
                    file: t.path.clone(),
                    line: *line,
                    kind: "user",
                    id,
                    first_line: first,
                });
            }
            let mut fields = BTreeMap::new();
            for (name, c) in &field_cols {
                if let Some(v) = t.value(*line, cells, *c)? {
                    fields.insert(name.clone(), v);
                }
            }
            first_line.insert(id.clone(), *line);
            user_index.insert(id.clone(), index_u32(users.len())?);
            users.push(User { id, fields });
        }
    }

    // Items.
    let mut items: Vec<Item> = Vec::new();
    let mut item_index: HashMap<String, u32> = HashMap::new();
    if let Some(path) = &files.item {
        let t = Table::read(path, &mut report)?;
        let id_col = t.id_column(&map.item_id, "item_id", &dflt.item_id, ITEM_ID_ALIASES)?;
        let title_col = t.optional(
            map.title.as_deref(),
            "title",
            dflt.title.as_deref(),
            TITLE_ALIASES,
        )?;
        let genre_col = t.optional(
            map.genres.as_deref(),
            "genres",
            dflt.genres.as_deref(),
            GENRE_ALIASES,
        )?;
        let field_cols = t.fields(&map.item_fields, "item_fields", &dflt.item_fields)?;
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (line, cells) in &t.rows {
            let id = t.id(*line, cells, id_col)?;
            if let Some(&first) = first_line.get(&id) {
                return Err(Error::DuplicateId {
                    file: t.path.clone(),
                    line: *line,
                    kind: "item",
                    id,
                    first_line: first,
                });
            }
            let title = title_col.and_then(|(c, ty)| {
                let raw = &cells[c];
                match ty {
                    ColumnType::TokenSeq | ColumnType::FloatSeq => {
                        let s = split_seq(raw).join(" ");
                        (!s.is_empty()).then_some(s)
                    }
                    _ => (!raw.is_empty()).then(|| raw.clone()),
                }
            });
            let genres = match genre_col {
                None => Vec::new(),
                Some((c, ColumnType::TokenSeq | ColumnType::FloatSeq)) => split_seq(&cells[c]),
                Some((c, _)) => {
                    if cells[c].is_empty() {
                        Vec::new()
                    } else {
                        vec![cells[c].clone()]
                    }
                }
            };
            let mut fields = BTreeMap::new();
            for (name, c) in &field_cols {
                if let Some(v) = t.value(*line, cells, *c)? {
                    fields.insert(name.clone(), v);
                }
            }
            first_line.insert(id.clone(), *line);
            item_index.insert(id.clone(), index_u32(items.len())?);
            items.push(Item {
                id,
                title,
                genres,
                fields,
            });
        }
    }

    // Interactions.
    let t = Table::read(&files.inter, &mut report)?;
    let u_col = t.id_column(&map.user_id, "user_id", &dflt.user_id, USER_ID_ALIASES)?;
    let i_col = t.id_column(&map.item_id, "item_id", &dflt.item_id, ITEM_ID_ALIASES)?;
    let r_col = t.optional(
        map.rating.as_deref(),
        "rating",
        dflt.rating.as_deref(),
        RATING_ALIASES,
    )?;
    let ts_col = t.optional(
        map.timestamp.as_deref(),
        "timestamp",
        dflt.timestamp.as_deref(),
        TIMESTAMP_ALIASES,
    )?;
    let mut interactions = Vec::with_capacity(t.rows.len());
    for (row_idx, (line, cells)) in t.rows.iter().enumerate() {
        let uid = t.id(*line, cells, u_col)?;
        let iid = t.id(*line, cells, i_col)?;
        let rating = match r_col {
            None => None,
            Some((c, _)) => match t.float(*line, cells, c)? {
                None => {
                    report.missing_ratings += 1;
                    None
                }
                Some(r) => {
                    if let Some([lo, hi]) = map.rating_range
                        && (r < lo || r > hi)
                    {
                        return Err(Error::RatingOutOfRange {
                            file: t.path.clone(),
                            line: *line,
                            value: r,
                            min: lo,
                            max: hi,
                        });
                    }
                    Some(r as f32)
                }
            },
        };
        let timestamp = match ts_col {
            None => i64::try_from(row_idx).unwrap_or(i64::MAX),
            Some((c, _)) => {
                let ts = t.float(*line, cells, c)?.ok_or_else(|| {
                    t.malformed(
                        *line,
                        format!("empty timestamp in column `{}`", t.columns[c].0),
                    )
                })?;
                if ts.abs() >= 9.0e18 {
                    return Err(t.malformed(*line, format!("timestamp {ts} is out of range")));
                }
                ts.floor() as i64
            }
        };
        let user = match user_index.get(&uid) {
            Some(&u) => u,
            None => {
                let u = index_u32(users.len())?;
                if files.user.is_some() {
                    report.bare_users += 1;
                }
                user_index.insert(uid.clone(), u);
                users.push(User {
                    id: uid,
                    fields: BTreeMap::new(),
                });
                u
            }
        };
        let item = match item_index.get(&iid) {
            Some(&i) => i,
            None => {
                let i = index_u32(items.len())?;
                if files.item.is_some() {
                    report.bare_items += 1;
                }
                item_index.insert(iid.clone(), i);
                items.push(Item {
                    id: iid,
                    title: None,
                    genres: Vec::new(),
                    fields: BTreeMap::new(),
                });
                i
            }
        };
        interactions.push(Interaction {
            user,
            item,
            rating,
            timestamp,
        });
    }
    if interactions.is_empty() {
        return Err(Error::EmptyDataset(format!(
            "{} has a header but no interactions",
            files.inter.display()
        )));
    }
    Ok((
        Dataset {
            name: name.to_string(),
            users,
            items,
            interactions,
        },
        report,
    ))
}

fn index_u32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Config("more than 2^32 users or items".into()))
}

/// Name of the optional per-folder column-mapping file.
pub const COLUMNS_FILE: &str = "columns.json";

/// Loads the atomic files of a folder, with `columns.json` from that folder
/// when present (else [`ColumnMap::movielens`]).
pub fn load_atomic_dir(dir: &Path) -> Result<(Dataset, LoadReport)> {
    let (name, files) = AtomicFiles::find(dir)?;
    let map_path = dir.join(COLUMNS_FILE);
    let map = if map_path.is_file() {
        let text = std::fs::read_to_string(&map_path).map_err(|e| Error::io(&map_path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", map_path.display())))?
    } else {
        ColumnMap::movielens()
    };
    load_atomic(&name, &files, &map)
}

/// Datasets that `profilectl data fetch` knows by name.
pub const FETCHABLE: &[&str] = &["ml-100k"];

/// Resolves `--dataset`: a path to a folder of atomic files, the built-in
/// generator (`synthetic[:SEED]`: ML-100K-sized, `synthetic-small[:SEED]`:
/// test-sized; seed 7 by default), or the name of a fetched dataset under
/// `data_dir` (`ml-100k` → `data_dir/ml-100k`).
pub fn resolve_dataset(name_or_path: &str, data_dir: &Path) -> Result<Dataset> {
    resolve_dataset_with_report(name_or_path, data_dir).map(|(d, _)| d)
}

/// Like [`resolve_dataset`], also returning the [`LoadReport`].
pub fn resolve_dataset_with_report(
    name_or_path: &str,
    data_dir: &Path,
) -> Result<(Dataset, LoadReport)> {
    let as_path = Path::new(name_or_path);
    if as_path.is_dir() {
        return load_atomic_dir(as_path);
    }
    if let Some(ds) = synthetic_by_name(name_or_path)? {
        return Ok((ds, LoadReport::default()));
    }
    let under = data_dir.join(name_or_path);
    if !name_or_path.is_empty() && !name_or_path.contains(['/', '\\']) && under.is_dir() {
        return load_atomic_dir(&under);
    }
    let hint = if FETCHABLE.contains(&name_or_path) {
        format!(
            "{} does not exist; run `profilectl data fetch {name_or_path} --data-dir {}` first",
            under.display(),
            data_dir.display()
        )
    } else {
        format!(
            "not a folder of atomic files, and not a fetched dataset under {} (fetchable: {})",
            data_dir.display(),
            FETCHABLE.join(", ")
        )
    };
    Err(Error::UnknownDataset {
        name: name_or_path.to_string(),
        hint,
    })
}

/// `synthetic[:SEED]` / `synthetic-small[:SEED]` → the generated dataset;
/// `None` for any other name.
pub fn synthetic_by_name(name: &str) -> Result<Option<Dataset>> {
    use crate::synthetic::{SyntheticConfig, generate};
    let (rest, small) = if let Some(r) = name.strip_prefix("synthetic-small") {
        (r, true)
    } else if let Some(r) = name.strip_prefix("synthetic") {
        (r, false)
    } else {
        return Ok(None);
    };
    let seed = match rest.strip_prefix(':') {
        Some(s) => s.parse::<u64>().map_err(|_| Error::UnknownDataset {
            name: name.to_string(),
            hint: format!("bad synthetic seed `{s}` (use `synthetic[:SEED]`)"),
        })?,
        None if rest.is_empty() => 7,
        None => return Ok(None),
    };
    let config = if small {
        SyntheticConfig::small(seed)
    } else {
        SyntheticConfig {
            seed,
            ..SyntheticConfig::default()
        }
    };
    Ok(Some(generate(&config)))
}
