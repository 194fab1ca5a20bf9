//! The in-memory dataset every loader produces and every consumer reads.
//!
//! Users and items get dense indexes (their position in [`Dataset::users`] /
//! [`Dataset::items`]); original ids are kept as strings, since atomic files
//! allow any string id. Interactions stay in file order: the evaluation
//! protocol sorts them per user by time with ties kept in file order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A value of one user (or item) attribute column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// A categorical value (`:token` columns).
    Token(String),
    /// A number (`:float` columns).
    Float(f64),
    /// A list of tokens (`:token_seq` columns).
    TokenSeq(Vec<String>),
}

/// One user: original id plus attribute columns by schema field name
/// (e.g. `gender`, `occupation`, `zip_code`, `age`). Missing values are absent keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Original id from the dataset.
    pub id: String,
    /// Attribute values by field name.
    pub fields: BTreeMap<String, FieldValue>,
}

/// One item: original id, optional title, genres (tags) and other attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Original id from the dataset.
    pub id: String,
    /// Human-readable title, when the dataset has one.
    pub title: Option<String>,
    /// Genre / tag names (possibly empty).
    pub genres: Vec<String>,
    /// Other attribute values by field name (e.g. `release_year`).
    pub fields: BTreeMap<String, FieldValue>,
}

/// One user–item event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Dense user index into [`Dataset::users`].
    pub user: u32,
    /// Dense item index into [`Dataset::items`].
    pub item: u32,
    /// Explicit rating, when the dataset has one.
    pub rating: Option<f32>,
    /// Seconds since the Unix epoch (or any monotone time unit the dataset uses).
    pub timestamp: i64,
}

/// A whole dataset in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Short name (`ml-100k`, `synthetic-seed-7`, or the folder name).
    pub name: String,
    /// Users by dense index.
    pub users: Vec<User>,
    /// Items by dense index.
    pub items: Vec<Item>,
    /// Events in file (generation) order.
    pub interactions: Vec<Interaction>,
}
