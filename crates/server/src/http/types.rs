//! The JSON bodies of the HTTP edge (serde + utoipa `ToSchema`), and their
//! conversion to and from the core's domain types (`crate::engine`).
//!
//! Requests refuse unknown field names (`deny_unknown_fields`), so a typo is
//! an INVALID_ARGUMENT naming the field instead of a silently ignored
//! setting. A user's features become the same message the gRPC edge
//! receives (`profiled_proto::v1::UserFeatures`, the engine's
//! `FeatureInput`), so both edges validate features with one function and
//! share the hot cache's keys.

use std::collections::BTreeMap;
use std::fmt;

use profiled_index::{Condition, IndexRole, SearchPath};
use profiled_model::{Group, Method};
use profiled_proto::v1 as pb;
use profiled_store::{Generation, Selector};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::search::SearchInput;
use crate::engine::{CacheUse, ModelSel, SearchFilter, Seeds};
use crate::error::ApiError;

// ---------------------------------------------------------------- common --

/// Which model and version a request asks for. Everything unset: the
/// default model, its default version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name; empty or absent for the default model.
    pub name: String,
    /// A pinned version (a positive integer); at most one of `version` and
    /// `label`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// A version label, e.g. `stable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl ModelSpec {
    /// The core's model selection (the same rules as the gRPC `ModelSpec`).
    pub fn to_sel(&self) -> Result<ModelSel, ApiError> {
        let selector = match (&self.version, &self.label) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "model",
                    "set at most one of version and label",
                ));
            }
            (Some(0), None) => {
                return Err(ApiError::invalid(
                    "model.version",
                    "versions are positive integers",
                ));
            }
            (Some(v), None) => Selector::Version(*v),
            (None, Some(l)) if l.is_empty() => {
                return Err(ApiError::invalid("model.label", "empty label"));
            }
            (None, Some(l)) => Selector::Label(l.clone()),
            (None, None) => Selector::Default,
        };
        Ok(ModelSel {
            name: self.name.clone(),
            selector,
        })
    }
}

/// The model version that answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Process-unique id of the loaded generation (changes on every swap).
    pub generation_id: u64,
}

impl ModelRef {
    /// The reference of a generation.
    pub fn of(g: &Generation) -> ModelRef {
        ModelRef {
            name: g.model.clone(),
            version: g.version,
            generation_id: g.id,
        }
    }
}

/// How a call uses the hot profile cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Read; fill on a miss (default).
    #[default]
    Use,
    /// Neither read nor write.
    Bypass,
    /// Recompute and overwrite.
    Refresh,
}

impl From<CacheMode> for CacheUse {
    fn from(c: CacheMode) -> CacheUse {
        match c {
            CacheMode::Use => CacheUse::Use,
            CacheMode::Bypass => CacheUse::Bypass,
            CacheMode::Refresh => CacheUse::Refresh,
        }
    }
}

/// The error body of every failed call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "INVALID_ARGUMENT", "status": 400,
    "message": "users[0].features.fields[\"age\"]: \"old\" is not a number"}))]
pub struct ErrorBody {
    /// The gRPC status code name the same failure has on the gRPC port,
    /// e.g. `INVALID_ARGUMENT`, `NOT_FOUND`, `UNAUTHENTICATED`.
    pub code: String,
    /// The HTTP status of the answer (also its status line).
    pub status: u16,
    /// What went wrong, the offending field named in request terms (the
    /// same message as on the gRPC port).
    pub message: String,
}

/// A per-user error inside a partial answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemError {
    /// The gRPC status code name, e.g. `NOT_FOUND`.
    pub code: String,
    /// The HTTP status the same error would have alone.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl From<&ApiError> for ItemError {
    fn from(e: &ApiError) -> ItemError {
        ItemError {
            code: crate::error::code_name(e.code()).to_string(),
            status: e.http_status(),
            message: e.to_string(),
        }
    }
}

// -------------------------------------------------------------- features --

/// One tag of a tags value, with an optional weight (default 1, finite, >= 0).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedTag {
    /// The tag.
    pub tag: String,
    /// Its weight (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f32>,
}

/// A feature value: a number (`24`), a categorical string (`"engineer"`;
/// numeric text is accepted for numeric inputs), or a list of weighted tags.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum FieldValue {
    /// A number.
    Number(f64),
    /// A categorical value.
    Categorical(String),
    /// Weighted tags.
    Tags(Vec<WeightedTag>),
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FieldValue, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a number, a string, or a list of tags [{\"tag\": \"Drama\", \"weight\": 1.0}]",
                )
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<FieldValue, E> {
                Ok(FieldValue::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FieldValue, E> {
                Ok(FieldValue::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FieldValue, E> {
                Ok(FieldValue::Number(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldValue, E> {
                Ok(FieldValue::Categorical(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<FieldValue, E> {
                Ok(FieldValue::Categorical(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
                let mut tags = Vec::new();
                while let Some(t) = seq.next_element::<WeightedTag>()? {
                    tags.push(t);
                }
                Ok(FieldValue::Tags(tags))
            }
        }
        d.deserialize_any(V)
    }
}

/// One behaviour event (an interaction with an item).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The item's id in the model's item vocabulary.
    pub item_id: String,
    /// Unix time in seconds.
    #[serde(default)]
    pub timestamp: i64,
    /// Optional rating (finite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<f32>,
    /// Optional client id of the event: Track skips an event whose id the
    /// user's state already holds (a retried Track stores nothing twice).
    /// Not part of a profile (ignored in features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl Event {
    /// The gRPC message of this event.
    pub fn to_message(&self) -> pb::BehaviourEvent {
        pb::BehaviourEvent {
            item_id: self.item_id.clone(),
            timestamp: self.timestamp,
            rating: self.rating,
            event_id: self.event_id.clone().unwrap_or_default(),
        }
    }
}

impl FieldValue {
    /// The gRPC message of this value (validated by the core as a gRPC
    /// request's value is).
    pub fn to_message(&self) -> pb::FieldValue {
        use pb::field_value::Kind;
        let kind = match self {
            FieldValue::Number(x) => Kind::Number(*x),
            FieldValue::Categorical(s) => Kind::Categorical(s.clone()),
            FieldValue::Tags(t) => Kind::Tags(pb::TagList {
                tags: t
                    .iter()
                    .map(|t| pb::WeightedTag {
                        tag: t.tag.clone(),
                        weight: t.weight,
                    })
                    .collect(),
            }),
        };
        pb::FieldValue { kind: Some(kind) }
    }
}

/// A stored value as JSON (GetUser).
impl From<&profiled_model::FieldValue> for FieldValue {
    fn from(v: &profiled_model::FieldValue) -> FieldValue {
        match v {
            profiled_model::FieldValue::Number(x) => FieldValue::Number(*x),
            profiled_model::FieldValue::Categorical(s) => FieldValue::Categorical(s.clone()),
            profiled_model::FieldValue::Tags(t) => FieldValue::Tags(
                t.iter()
                    .map(|(tag, w)| WeightedTag {
                        tag: tag.clone(),
                        weight: Some(*w),
                    })
                    .collect(),
            ),
        }
    }
}

/// A user's features, validated against the model's schema exactly as on
/// the gRPC port (unknown fields, kinds, limits: the offending field named).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(example = json!({"user_id": "demo", "fields": {"occupation": "engineer", "age": 31},
    "events": [{"item_id": "3", "timestamp": 880000000, "rating": 4.0},
               {"item_id": "7", "timestamp": 880000100}]}))]
pub struct Features {
    /// Optional user id (echoed in Embed answers; not part of the profile).
    pub user_id: String,
    /// Input name (as the model's schema names it) → value.
    pub fields: BTreeMap<String, FieldValue>,
    /// Behaviour events (any order: sorted by time).
    pub events: Vec<Event>,
}

impl Features {
    /// The gRPC message of these features: the engine's `FeatureInput`, so
    /// validation and cache keys are the gRPC edge's own.
    pub fn to_message(&self) -> pb::UserFeatures {
        pb::UserFeatures {
            user_id: self.user_id.clone(),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_message()))
                .collect(),
            events: self.events.iter().map(Event::to_message).collect(),
        }
    }
}

// ----------------------------------------------------------------- embed --

/// One user of an Embed call: exactly one of `features` or `user_id`
/// (with optional request-time `context`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UserInput {
    /// Compute the profile from these features.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// A known user: their live state (what Track stored; the profile is
    /// computed from it), else their stored profile in the model's users
    /// index, else NOT_FOUND.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// With `user_id` only: fields that replace stored ones of the same
    /// name and events that join the stored events, for this call only
    /// (never stored; its own `user_id` must be empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Features>,
}

/// Embed: the profile vectors of up to `limits.max_users_per_call` users.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedRequest {
    /// Which model and version (default: the default model).
    pub model: ModelSpec,
    /// The users, answered in this order.
    pub users: Vec<UserInput>,
    /// Hot cache use.
    pub cache: CacheMode,
    /// Answer each user's error in its slot instead of failing the call.
    pub allow_partial: bool,
    /// Echoed in the answer.
    pub request_id: String,
}

impl EmbedRequest {
    /// The core's query (a user that sets neither or both sources is an
    /// error in its slot, as on the gRPC port).
    pub fn to_query(&self) -> Result<crate::engine::EmbedQuery<pb::UserFeatures>, ApiError> {
        Ok(crate::engine::EmbedQuery {
            model: self.model.to_sel()?,
            users: self
                .users
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    crate::convert::embed::user_query(
                        i,
                        u.features.as_ref().map(Features::to_message),
                        u.user_id.clone(),
                        u.context.as_ref().map(Features::to_message),
                    )
                })
                .collect(),
            cache: self.cache.into(),
            allow_partial: self.allow_partial,
        })
    }
}

/// Where a profile came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfileSource {
    /// Computed by the encoder for this call.
    Computed,
    /// Served from the hot cache.
    Cache,
    /// The stored profile of the users index.
    UsersIndex,
    /// Computed (or cached: see `cache_hit`) from the user's live state.
    UserState,
}

/// One user's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedUser {
    /// The user id (from the features or the id; may be empty).
    pub user_id: String,
    /// The unit profile vector (absent when this user failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// Served from the hot cache.
    pub cache_hit: bool,
    /// Where the profile came from (absent when this user failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ProfileSource>,
    /// This user's error (only with `allow_partial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

/// The answer of Embed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedResponse {
    /// The version that answered every user.
    pub model: ModelRef,
    /// One per requested user, in order.
    pub users: Vec<EmbeddedUser>,
    /// Vector length.
    pub dim: u32,
    /// Longest queue wait of a computed user (µs).
    pub queue_us: u64,
    /// Longest batch compute time of a computed user (µs).
    pub compute_us: u64,
    /// The request's `request_id`.
    pub request_id: String,
}

impl EmbedResponse {
    /// The answer of an Embed call.
    pub fn from_core(e: crate::engine::Embedded, request_id: String) -> EmbedResponse {
        use crate::engine::ProfileSource as S;
        let users = e
            .users
            .into_iter()
            .map(|u| match u.result {
                Ok((p, s)) => EmbeddedUser {
                    user_id: u.user_id,
                    vector: Some(p.vector.to_vec()),
                    cache_hit: p.cache_hit,
                    source: Some(match s {
                        S::Computed => ProfileSource::Computed,
                        S::Cache => ProfileSource::Cache,
                        S::UsersIndex => ProfileSource::UsersIndex,
                        S::UserState => ProfileSource::UserState,
                    }),
                    error: None,
                },
                Err(err) => EmbeddedUser {
                    user_id: u.user_id,
                    vector: None,
                    cache_hit: false,
                    source: None,
                    error: Some(ItemError::from(&err)),
                },
            })
            .collect();
        EmbedResponse {
            model: ModelRef::of(&e.generation),
            users,
            dim: e.generation.dim() as u32,
            queue_us: e.queue_us,
            compute_us: e.compute_us,
            request_id,
        }
    }
}

// ---------------------------------------------------------------- search --

/// The index a search runs on.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetIndex {
    /// Nearest items (default).
    #[default]
    Items,
    /// Lookalike users.
    Users,
}

/// A filter condition's operator.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttributeOp {
    /// The attribute has exactly this one value.
    Equals,
    /// The attribute has one of the values.
    In,
    /// The attribute has none of the values.
    NotIn,
}

/// One attribute condition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeCondition {
    /// Attribute name (see the index's attributes in the model's status).
    pub attribute: String,
    /// Operator.
    pub op: AttributeOp,
    /// Values (exactly one for `equals`, at least one otherwise).
    pub values: Vec<String>,
}

/// Which rows may be returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// All must hold.
    pub conditions: Vec<AttributeCondition>,
    /// Only these ids (empty = any).
    pub allow_ids: Vec<String>,
    /// Never these ids.
    pub deny_ids: Vec<String>,
    /// Items: leave out the items the query user has seen.
    pub exclude_seen_items: bool,
    /// Users: leave out the query's own users (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_query_user: Option<bool>,
}

impl Filter {
    /// The core's filter (the same structural checks and messages as the
    /// gRPC edge; size limits are the core's).
    pub fn to_core(&self) -> Result<SearchFilter, ApiError> {
        let mut conditions = Vec::with_capacity(self.conditions.len());
        for (i, c) in self.conditions.iter().enumerate() {
            let path = format!("filter.conditions[{i}].values");
            conditions.push(match c.op {
                AttributeOp::Equals => {
                    let [value] = c.values.as_slice() else {
                        return Err(ApiError::invalid(
                            path,
                            format!("EQUALS needs exactly one value, got {}", c.values.len()),
                        ));
                    };
                    Condition::Equals {
                        attribute: c.attribute.clone(),
                        value: value.clone(),
                    }
                }
                AttributeOp::In | AttributeOp::NotIn if c.values.is_empty() => {
                    return Err(ApiError::invalid(
                        path,
                        "IN and NOT_IN need at least one value",
                    ));
                }
                AttributeOp::In => Condition::In {
                    attribute: c.attribute.clone(),
                    values: c.values.clone(),
                },
                AttributeOp::NotIn => Condition::NotIn {
                    attribute: c.attribute.clone(),
                    values: c.values.clone(),
                },
            });
        }
        Ok(SearchFilter {
            conditions,
            allow_ids: self.allow_ids.clone(),
            deny_ids: self.deny_ids.clone(),
            exclude_seen_items: self.exclude_seen_items,
            exclude_query_user: self.exclude_query_user.unwrap_or(true),
        })
    }
}

/// A lookalike seed set: known users and/or vectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SeedSet {
    /// Users of the users index.
    pub user_ids: Vec<String>,
    /// Vectors of the model's dimension.
    pub vectors: Vec<Vec<f32>>,
}

impl From<&SeedSet> for Seeds {
    fn from(s: &SeedSet) -> Seeds {
        Seeds {
            user_ids: s.user_ids.clone(),
            vectors: s.vectors.clone(),
        }
    }
}

/// Search: nearest items or lookalike users for exactly one of `features`,
/// `user_id`, `vector` or `seeds`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SearchRequest {
    /// Which model and version.
    pub model: ModelSpec,
    /// Items (default) or users.
    pub target: TargetIndex,
    /// The profile of these features.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// A known user, resolved as in Embed: live state, else the users
    /// index's stored profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// With a `user_id` query only: request-time context merged on top of
    /// the stored state for this call only, as in Embed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Features>,
    /// A query vector (normalised by the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// The centroid of a seed set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds: Option<SeedSet>,
    /// Hits wanted (0 or absent = 10; at most `limits.max_k`).
    pub k: u32,
    /// Force the exact path.
    pub exact: bool,
    /// Which rows may be returned.
    pub filter: Filter,
    /// Return each hit's attributes (and items' titles).
    pub include_attributes: bool,
    /// Return each hit's stored vector.
    pub include_vectors: bool,
    /// Hot cache use of a features query.
    pub cache: CacheMode,
}

impl SearchRequest {
    /// The core's query.
    pub fn to_query(&self) -> Result<crate::engine::SearchQuery<pb::UserFeatures>, ApiError> {
        crate::convert::search::check_context(self.user_id.is_some(), self.context.is_some())?;
        let set = [
            self.features.is_some(),
            self.user_id.is_some(),
            self.vector.is_some(),
            self.seeds.is_some(),
        ];
        let input = match (&self.features, &self.user_id, &self.vector, &self.seeds) {
            _ if set.iter().filter(|x| **x).count() != 1 => {
                return Err(ApiError::invalid(
                    "query",
                    "set exactly one of features, user_id, vector, seeds",
                ));
            }
            (Some(f), ..) => SearchInput::Features(f.to_message()),
            (_, Some(id), ..) => SearchInput::User(crate::engine::UserRef {
                id: id.clone(),
                context: self.context.as_ref().map(Features::to_message),
            }),
            (_, _, Some(v), _) => SearchInput::Vector(v.clone()),
            (.., Some(s)) => SearchInput::Seeds(s.into()),
            _ => {
                return Err(ApiError::invalid(
                    "query",
                    "set exactly one of features, user_id, vector, seeds",
                ));
            }
        };
        Ok(crate::engine::SearchQuery {
            model: self.model.to_sel()?,
            target: match self.target {
                TargetIndex::Items => IndexRole::Items,
                TargetIndex::Users => IndexRole::Users,
            },
            input,
            k: self.k,
            exact: self.exact,
            filter: self.filter.to_core()?,
            include_attributes: self.include_attributes,
            include_vectors: self.include_vectors,
            cache: self.cache.into(),
        })
    }
}

/// The path that answered a search.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchPathName {
    /// Exact scan of every row.
    Exact,
    /// Exact scan of the filter's candidates (also the ANN fallback).
    ExactCandidates,
    /// HNSW.
    Ann,
}

/// One hit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hit {
    /// The row's id (item id or user id).
    pub id: String,
    /// Inner product with the unit query.
    pub score: f32,
    /// Attribute values (with `include_attributes`).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// The item's title (items, with `include_attributes`, when known).
    pub title: String,
    /// The stored vector (with `include_vectors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

/// The answer of Search.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchResponse {
    /// The version that answered.
    pub model: ModelRef,
    /// The index searched.
    pub target: TargetIndex,
    /// The path that answered.
    pub path: SearchPathName,
    /// HNSW ran and the exact candidate scan answered instead.
    pub ann_fallback: bool,
    /// Best first.
    pub hits: Vec<Hit>,
    /// Rows in the index.
    pub index_rows: u64,
    /// Rows the filter admitted.
    pub candidates: u64,
    /// The plan: the path's name, then notes.
    pub plan: String,
    /// The query profile came from the cache.
    pub cache_hit: bool,
    /// Building the query vector (µs).
    pub query_us: u64,
    /// The search itself (µs).
    pub search_us: u64,
}

impl SearchResponse {
    /// The answer of a Search call.
    pub fn from_core(f: crate::engine::Found) -> SearchResponse {
        SearchResponse {
            model: ModelRef::of(&f.generation),
            target: match f.target {
                IndexRole::Items => TargetIndex::Items,
                IndexRole::Users => TargetIndex::Users,
            },
            path: match f.path {
                SearchPath::ExactScan => SearchPathName::Exact,
                SearchPath::ExactCandidates | SearchPath::AnnFallbackExact => {
                    SearchPathName::ExactCandidates
                }
                SearchPath::Ann => SearchPathName::Ann,
            },
            ann_fallback: f.path == SearchPath::AnnFallbackExact,
            hits: f
                .hits
                .into_iter()
                .map(|h| Hit {
                    id: h.id,
                    score: h.score,
                    attributes: h.attributes,
                    title: h.title,
                    vector: h.vector,
                })
                .collect(),
            index_rows: f.index_rows,
            candidates: f.candidates,
            plan: f.plan,
            cache_hit: f.cache_hit,
            query_us: f.query_us,
            search_us: f.search_us,
        }
    }
}

// --------------------------------------------------------------- explain --

/// How an explanation is computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExplainMethod {
    /// Score drop with tokens or whole groups masked (faithful; default).
    #[default]
    Occlusion,
    /// Head-averaged, residual-mixed attention rollout (attention mass).
    AttentionRollout,
    /// Raw attention mass from the output position, per layer and head.
    Attention,
}

impl From<ExplainMethod> for Method {
    fn from(m: ExplainMethod) -> Method {
        match m {
            ExplainMethod::Occlusion => Method::Occlusion,
            ExplainMethod::AttentionRollout => Method::AttentionRollout,
            ExplainMethod::Attention => Method::Attention,
        }
    }
}

/// What score the explanation is about.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExplainTarget {
    /// The profile itself: 1 − cosine to the profile with a part removed.
    #[default]
    Profile,
    /// The score against this item of the model.
    Item {
        /// The item's id.
        item_id: String,
    },
    /// The score against the centroid of a seed set.
    Users {
        /// Users of the users index.
        #[serde(default)]
        seed_user_ids: Vec<String>,
        /// Vectors of the model's dimension.
        #[serde(default)]
        vectors: Vec<Vec<f32>>,
    },
}

/// Explain: which dimension groups and tokens drove a profile or a score.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExplainRequest {
    /// Which model and version.
    pub model: ModelSpec,
    /// The user's features (exactly one of `features` and `user_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// A tracked user: the explanation is of the profile computed from
    /// their live state (explanations need the tokens, so a user known only
    /// to the users index is NOT_FOUND).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// With `user_id` only: request-time context merged on top of the
    /// stored state for this call only, as in Embed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Features>,
    /// What to explain (default: the profile).
    pub target: ExplainTarget,
    /// How (default: occlusion).
    pub method: ExplainMethod,
    /// Token attributions to return (0 or absent = 10; at most
    /// `limits.max_explain_top_n`).
    pub top_n: u32,
    /// Hot cache use for the unmasked profile.
    pub cache: CacheMode,
    /// Occlusion only: whole groups only, no per-token attributions.
    pub groups_only: bool,
}

impl ExplainRequest {
    /// The core's query.
    pub fn to_query(&self) -> Result<crate::engine::ExplainQuery<pb::UserFeatures>, ApiError> {
        use crate::engine::ExplainTarget as T;
        let model = self.model.to_sel()?;
        let user = crate::convert::explain::user_query(
            self.features.as_ref().map(Features::to_message),
            self.user_id.clone().unwrap_or_default(),
            self.context.as_ref().map(Features::to_message),
        )?;
        Ok(crate::engine::ExplainQuery {
            model,
            user,
            target: match &self.target {
                ExplainTarget::Profile => T::Profile,
                ExplainTarget::Item { item_id } => T::Item(item_id.clone()),
                ExplainTarget::Users {
                    seed_user_ids,
                    vectors,
                } => T::Users(Seeds {
                    user_ids: seed_user_ids.clone(),
                    vectors: vectors.clone(),
                }),
            },
            method: self.method.into(),
            groups_only: self.groups_only,
            top_n: self.top_n,
            cache: self.cache.into(),
        })
    }
}

/// A dimension group of the profile.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DimensionGroup {
    /// Demographics.
    Demographic,
    /// Behaviour (item events).
    Behaviour,
    /// Preferences derived from behaviour.
    Preference,
    /// Numeric signals.
    Numeric,
}

impl From<Group> for DimensionGroup {
    fn from(g: Group) -> DimensionGroup {
        match g {
            Group::Demographic => DimensionGroup::Demographic,
            Group::Behaviour => DimensionGroup::Behaviour,
            Group::Preference => DimensionGroup::Preference,
            Group::Numeric => DimensionGroup::Numeric,
        }
    }
}

/// What the values of an explanation measure.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// Occlusion: the drop of the target score when masked.
    ScoreDrop,
    /// Attention methods: attention mass (not importance).
    AttentionMass,
}

/// One token of the user's input sequence.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Position in the encoder's input (fields first, then events oldest first).
    pub position: u32,
    /// Its dimension group.
    pub group: DimensionGroup,
    /// Schema field, or `events` for behaviour tokens.
    pub field: String,
    /// Readable label, e.g. `occupation = engineer` or
    /// `item 50 "Star Wars (1977)" @ 1997-10-02`.
    pub label: String,
    /// The event's item id (behaviour tokens).
    pub item_id: String,
    /// The event's Unix time (behaviour tokens).
    pub timestamp: i64,
    /// Not in the model's vocabulary (its out-of-vocabulary row was used).
    pub oov: bool,
    /// No usable value (the missing row was used).
    pub missing: bool,
}

/// A group's attribution.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupContribution {
    /// The group.
    pub group: DimensionGroup,
    /// Score drop (occlusion) or attention mass.
    pub value: f64,
    /// Share of the total.
    pub share: f64,
    /// Tokens of this group in the input.
    pub tokens: u32,
}

/// A token's attribution.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenContribution {
    /// The token.
    pub token: Token,
    /// Score drop (occlusion) or attention mass.
    pub value: f64,
    /// |value| over the sum of |value| of every token.
    pub share: f64,
}

/// Attention mass of one head.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadAttention {
    /// Head index.
    pub head: u32,
    /// Mass on each token position (the token table's order).
    pub mass: Vec<f32>,
}

/// Attention mass from the output position in one layer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerAttention {
    /// Layer index.
    pub layer: u32,
    /// Per head.
    pub heads: Vec<HeadAttention>,
    /// Head-averaged mass on each token position.
    pub head_mean: Vec<f32>,
}

/// The answer of Explain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainResponse {
    /// The version that answered.
    pub model: ModelRef,
    /// The method used.
    pub method: ExplainMethod,
    /// The target, as asked.
    pub target: ExplainTarget,
    /// What the values measure.
    pub value_kind: ValueKind,
    /// Score of the unmasked profile for the target (1 for the profile).
    pub base_score: f64,
    /// Per group, largest value first.
    pub groups: Vec<GroupContribution>,
    /// The `top_n` largest token attributions.
    pub tokens: Vec<TokenContribution>,
    /// Every token of the input by position.
    pub token_table: Vec<Token>,
    /// Attention methods: per layer and head.
    pub layers: Vec<LayerAttention>,
    /// Forward passes computed.
    pub forward_passes: u32,
    /// Waiting for an Explain slot (µs).
    pub queue_us: u64,
    /// The explanation's forward passes (µs).
    pub compute_us: u64,
}

impl ExplainResponse {
    /// The answer of an Explain call; `asked` is the request's target.
    pub fn from_core(e: crate::engine::Explained, asked: ExplainTarget) -> ExplainResponse {
        let ex = &e.explanation;
        let table: Vec<Token> = ex
            .table
            .iter()
            .map(|t| Token {
                position: t.position as u32,
                group: t.group.into(),
                field: t.field.clone(),
                label: t.label.clone(),
                item_id: t.item_id.clone(),
                timestamp: t.timestamp,
                oov: t.oov,
                missing: t.missing,
            })
            .collect();
        let total: f64 = ex.tokens.iter().map(|t| t.value.abs()).sum();
        let tokens = ex
            .tokens
            .iter()
            .take(e.top_n)
            .filter_map(|t| {
                Some(TokenContribution {
                    token: table.get(t.position)?.clone(),
                    value: t.value,
                    share: if total > 0.0 {
                        t.value.abs() / total
                    } else {
                        0.0
                    },
                })
            })
            .collect();
        ExplainResponse {
            model: ModelRef::of(&e.generation),
            method: match ex.method {
                Method::Occlusion => ExplainMethod::Occlusion,
                Method::AttentionRollout => ExplainMethod::AttentionRollout,
                Method::Attention => ExplainMethod::Attention,
            },
            target: asked,
            value_kind: match ex.method {
                Method::Occlusion => ValueKind::ScoreDrop,
                _ => ValueKind::AttentionMass,
            },
            base_score: ex.score,
            groups: ex
                .groups
                .iter()
                .map(|g| GroupContribution {
                    group: g.group.into(),
                    value: g.value,
                    share: g.share,
                    tokens: g.tokens as u32,
                })
                .collect(),
            tokens,
            token_table: table,
            layers: ex
                .layers
                .iter()
                .map(|l| LayerAttention {
                    layer: l.layer as u32,
                    heads: l
                        .heads
                        .iter()
                        .enumerate()
                        .map(|(h, m)| HeadAttention {
                            head: h as u32,
                            mass: m.clone(),
                        })
                        .collect(),
                    head_mean: l.mean.clone(),
                })
                .collect(),
            forward_passes: ex.variants as u32,
            queue_us: e.queue_us,
            compute_us: e.compute_us,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn field_values_are_numbers_strings_or_tags_and_nothing_else() {
        let f: Features = serde_json::from_str(
            r#"{"fields": {"age": 31, "zip": "02139", "neg": -2, "genres": [{"tag": "Drama", "weight": 0.5}, {"tag": "Comedy"}]}}"#,
        )
        .unwrap();
        let m = f.to_message();
        use pb::field_value::Kind;
        assert_eq!(m.fields["age"].kind, Some(Kind::Number(31.0)));
        assert_eq!(m.fields["neg"].kind, Some(Kind::Number(-2.0)));
        assert_eq!(
            m.fields["zip"].kind,
            Some(Kind::Categorical("02139".into()))
        );
        let Some(Kind::Tags(t)) = &m.fields["genres"].kind else {
            panic!("tags expected: {m:?}");
        };
        assert_eq!(t.tags[0].weight, Some(0.5));
        assert_eq!(t.tags[1].weight, None);
        for bad in [
            r#"{"fields": {"age": true}}"#,
            r#"{"fields": {"age": {"n": 1}}}"#,
        ] {
            let e = serde_json::from_str::<Features>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("expected a number, a string, or a list of tags"),
                "{e}"
            );
        }
        let e = serde_json::from_str::<Features>(r#"{"fields": {"g": [{"tag": "x", "w": 1}]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `w`"), "{e}");
    }

    #[test]
    fn model_specs_follow_the_grpc_rules() {
        let sel = |j: &str| serde_json::from_str::<ModelSpec>(j).unwrap().to_sel();
        assert_eq!(sel("{}").unwrap(), ModelSel::default());
        assert_eq!(
            sel(r#"{"name": "m", "version": 3}"#).unwrap().selector,
            Selector::Version(3)
        );
        assert_eq!(
            sel(r#"{"label": "stable"}"#).unwrap().selector,
            Selector::Label("stable".into())
        );
        let msg = |j: &str| sel(j).unwrap_err().to_string();
        assert_eq!(
            msg(r#"{"version": 0}"#),
            "model.version: versions are positive integers"
        );
        assert_eq!(msg(r#"{"label": ""}"#), "model.label: empty label");
        assert_eq!(
            msg(r#"{"version": 1, "label": "a"}"#),
            "model: set at most one of version and label"
        );
    }

    #[test]
    fn a_search_takes_exactly_one_query() {
        let q = |j: &str| serde_json::from_str::<SearchRequest>(j).unwrap().to_query();
        for bad in [r#"{}"#, r#"{"user_id": "u", "vector": [1.0]}"#] {
            let e = q(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                "query: set exactly one of features, user_id, vector, seeds"
            );
        }
        assert!(matches!(
            q(r#"{"seeds": {"user_ids": ["a"]}, "target": "users"}"#)
                .unwrap()
                .input,
            SearchInput::Seeds(_)
        ));
        let e = q(r#"{"user_id": "u", "filter": {"conditions": [{"attribute": "a", "op": "in", "values": []}]}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "filter.conditions[0].values: IN and NOT_IN need at least one value"
        );
        // exclude_query_user defaults to true, as in gRPC.
        let f = q(r#"{"user_id": "u"}"#).unwrap().filter;
        assert!(f.exclude_query_user);
    }

    #[test]
    fn embed_users_need_exactly_one_source() {
        let r: EmbedRequest = serde_json::from_str(
            r#"{"users": [{"user_id": "a"}, {}, {"user_id": "b", "features": {}}]}"#,
        )
        .unwrap();
        let q = r.to_query().unwrap();
        assert!(matches!(q.users[0], Ok(crate::engine::UserQuery::User(_))));
        for (i, u) in q.users.iter().enumerate().skip(1) {
            let e = u.as_ref().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("users[{i}].source: set exactly one of features or user_id")
            );
        }
    }
}
