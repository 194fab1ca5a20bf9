//! Search: the nearest items for a profile, or lookalike users for a user, a
//! vector or a seed set, through the generation's [`SearchBackend`]s (which
//! answer every per-row question by id: attributes, titles, seen items,
//! vectors).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use profiled_index::{
    Condition, Filter, IndexRole, SEEN_ITEMS_ATTRIBUTE, SearchBackend, SearchParams, SearchPath,
};
use profiled_store::Generation;

use super::users::{Resolved, UserRef};
use super::{CacheUse, Deadline, Engine, FeatureInput, ModelSel, remaining};
use crate::config::Limits;
use crate::error::ApiError;

/// Which index a search runs on.
pub type SearchTarget = IndexRole;

/// A lookalike seed set.
#[derive(Debug, Clone, Default)]
pub struct Seeds {
    /// Known users (their stored profiles).
    pub user_ids: Vec<String>,
    /// Vectors (any length; checked against the model's dimension).
    pub vectors: Vec<Vec<f32>>,
}

/// What the search is for.
#[derive(Debug, Clone)]
pub enum SearchInput<F> {
    /// The profile of these features (through the cache).
    Features(F),
    /// A known user: live state (with optional context), else the users
    /// index snapshot.
    User(UserRef<F>),
    /// A query vector (normalised here).
    Vector(Vec<f32>),
    /// The centroid of a seed set ([`profiled_index::seed_centroid`]).
    Seeds(Seeds),
}

/// Which rows may be returned.
#[derive(Debug, Clone)]
pub struct SearchFilter {
    /// Attribute conditions (all must hold).
    pub conditions: Vec<Condition>,
    /// Only these ids (empty = any).
    pub allow_ids: Vec<String>,
    /// Never these ids.
    pub deny_ids: Vec<String>,
    /// Items: leave out the items the query user has seen.
    pub exclude_seen_items: bool,
    /// Users: leave out the query's own users (default true).
    pub exclude_query_user: bool,
}

impl Default for SearchFilter {
    fn default() -> Self {
        SearchFilter {
            conditions: Vec::new(),
            allow_ids: Vec::new(),
            deny_ids: Vec::new(),
            exclude_seen_items: false,
            exclude_query_user: true,
        }
    }
}

/// A Search call.
#[derive(Debug, Clone)]
pub struct SearchQuery<F> {
    /// The model version to use.
    pub model: ModelSel,
    /// Items or users.
    pub target: SearchTarget,
    /// The query.
    pub input: SearchInput<F>,
    /// Hits wanted (0 = 10).
    pub k: u32,
    /// Force the exact path.
    pub exact: bool,
    /// Which rows may be returned.
    pub filter: SearchFilter,
    /// Return each hit's attributes (and items' titles).
    pub include_attributes: bool,
    /// Return each hit's stored vector.
    pub include_vectors: bool,
    /// Cache use of a features query.
    pub cache: CacheUse,
}

/// One hit.
#[derive(Debug, Clone)]
pub struct FoundRow {
    /// The row's id.
    pub id: String,
    /// Inner product with the (unit) query.
    pub score: f32,
    /// Attribute values (when asked for; seen items left out).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// The item's title (items, when asked for and known).
    pub title: String,
    /// The stored vector (when asked for).
    pub vector: Option<Vec<f32>>,
}

/// The answer of a Search call.
#[derive(Debug, Clone)]
pub struct Found {
    /// The generation that answered.
    pub generation: Arc<Generation>,
    /// The index searched.
    pub target: SearchTarget,
    /// Best first.
    pub hits: Vec<FoundRow>,
    /// The path that answered.
    pub path: SearchPath,
    /// Rows in the index.
    pub index_rows: u64,
    /// Rows the filter admitted.
    pub candidates: u64,
    /// The plan: the path's name, then notes.
    pub plan: String,
    /// The query profile came from the cache.
    pub cache_hit: bool,
    /// Microseconds spent building the query vector.
    pub query_us: u64,
    /// Microseconds of the search itself.
    pub search_us: u64,
}

/// `v` scaled to unit length; INVALID_ARGUMENT naming `path` when it is zero
/// or not finite.
fn unit(path: &str, v: &[f32]) -> Result<Vec<f32>, ApiError> {
    profiled_index::seed_centroid(&[v])
        .map_err(|_| ApiError::invalid(path, "the vector is zero or not finite"))
}

/// A request vector of the model's dimension with finite components.
pub(crate) fn check_vector(path: &str, v: Vec<f32>, dim: usize) -> Result<Vec<f32>, ApiError> {
    if v.len() != dim {
        return Err(ApiError::invalid(
            path,
            format!("expected {dim} components, got {}", v.len()),
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(ApiError::invalid(
            path,
            format!("component {i} is not finite"),
        ));
    }
    Ok(v)
}

/// Filter size limits (request-side): conditions, values per condition, ids.
fn check_filter_limits(f: &SearchFilter, limits: &Limits) -> Result<(), ApiError> {
    if f.conditions.len() > limits.max_filter_conditions {
        return Err(ApiError::Limit {
            field: "filter.conditions".into(),
            got: format!("{} conditions", f.conditions.len()),
            limit: "max_filter_conditions",
            value: limits.max_filter_conditions as u64,
        });
    }
    for (i, c) in f.conditions.iter().enumerate() {
        let n = match c {
            Condition::Equals { .. } => 1,
            Condition::In { values, .. } | Condition::NotIn { values, .. } => values.len(),
        };
        if n > limits.max_filter_values {
            return Err(ApiError::Limit {
                field: format!("filter.conditions[{i}].values"),
                got: format!("{n} values"),
                limit: "max_filter_values",
                value: limits.max_filter_values as u64,
            });
        }
    }
    let ids = f.allow_ids.len() + f.deny_ids.len();
    if ids > limits.max_filter_ids {
        return Err(ApiError::Limit {
            field: "filter.allow_ids + filter.deny_ids".into(),
            got: format!("{ids} ids"),
            limit: "max_filter_ids",
            value: limits.max_filter_ids as u64,
        });
    }
    Ok(())
}

impl Engine {
    /// The unit centroid of a seed set (stored profiles of `user_ids` and
    /// `vectors`), each seed checked and named under `path`
    /// (`seeds`, `target.users`); the one centroid of Search and Explain.
    pub(crate) fn seed_query(
        &self,
        generation: &Generation,
        seeds: &Seeds,
        path: &str,
        ids_field: &str,
    ) -> Result<Vec<f32>, ApiError> {
        let limits = &self.cfg.limits;
        let n = seeds.user_ids.len() + seeds.vectors.len();
        if n == 0 {
            return Err(ApiError::invalid(
                path,
                format!("at least one seed ({ids_field} or vectors) is required"),
            ));
        }
        if n > limits.max_seeds {
            return Err(ApiError::Limit {
                field: path.into(),
                got: format!("{n} seeds"),
                limit: "max_seeds",
                value: limits.max_seeds as u64,
            });
        }
        let dim = generation.dim();
        let mut unit_seeds = Vec::with_capacity(n);
        for (i, id) in seeds.user_ids.iter().enumerate() {
            let p = format!("{path}.{ids_field}[{i}]");
            let v = self.stored_profile(generation, id, &p)?;
            unit_seeds.push(unit(&p, &v.vector)?);
        }
        for (i, v) in seeds.vectors.iter().enumerate() {
            let p = format!("{path}.vectors[{i}]");
            let v = check_vector(&p, v.clone(), dim)?;
            unit_seeds.push(unit(&p, &v)?);
        }
        let refs: Vec<&[f32]> = unit_seeds.iter().map(Vec::as_slice).collect();
        profiled_index::seed_centroid(&refs)
            .map_err(|_| ApiError::invalid(path, "the seed vectors cancel out"))
    }

    /// Search: nearest items or lookalike users, on the request's generation.
    pub async fn search<F: FeatureInput>(
        &self,
        q: SearchQuery<F>,
        deadline: Deadline,
    ) -> Result<Found, ApiError> {
        self.check_serving(deadline)?;
        let limits = &self.cfg.limits;
        let k = if q.k == 0 { 10 } else { q.k };
        if k > limits.max_k {
            return Err(ApiError::Limit {
                field: "k".into(),
                got: k.to_string(),
                limit: "max_k",
                value: u64::from(limits.max_k),
            });
        }
        let generation = self.resolve(&q.model)?;
        let index: Arc<dyn SearchBackend> =
            generation.index(q.target).cloned().ok_or_else(|| {
                ApiError::NotFound(format!(
                    "target: model {:?} version {} has no {} index",
                    generation.model,
                    generation.version,
                    q.target.name()
                ))
            })?;
        let to_users = q.target == IndexRole::Users;
        let q0 = Instant::now();
        let filter = q.filter;
        check_filter_limits(&filter, limits)?;
        let mut deny = filter.deny_ids;
        let mut plan_notes: Vec<String> = Vec::new();
        let mut query_users: Vec<String> = Vec::new();
        let mut cache_hit = false;
        let query: Vec<f32> = match q.input {
            SearchInput::Features(f) => {
                let p = self
                    .profile_of(&generation, &f, "features", q.cache, deadline)
                    .await?;
                if !f.user_id().is_empty() {
                    query_users.push(f.user_id().to_string());
                }
                if filter.exclude_seen_items && !to_users {
                    deny.extend(f.event_items());
                }
                cache_hit = p.cache_hit;
                p.vector.to_vec()
            }
            SearchInput::User(user) => {
                let id = user.id.clone();
                let v = match self
                    .resolve_user(&generation, &user, "user_id", true, deadline)
                    .await?
                {
                    Resolved::Live(f) => {
                        if filter.exclude_seen_items && !to_users {
                            deny.extend(f.events.iter().map(|e| e.item.clone()));
                        }
                        let p = self
                            .profile_of(&generation, &f, "user_id", q.cache, deadline)
                            .await?;
                        cache_hit = p.cache_hit;
                        p.vector
                    }
                    Resolved::Snapshot(p) => {
                        if filter.exclude_seen_items && !to_users {
                            match generation.users.as_ref() {
                                Some(u) if u.has_attribute(SEEN_ITEMS_ATTRIBUTE) => {
                                    deny.extend(
                                        u.values_of(&id, SEEN_ITEMS_ATTRIBUTE)?.unwrap_or_default(),
                                    );
                                }
                                _ => plan_notes.push(
                                    "seen items not excluded: the users index holds no item \
                                     histories"
                                        .into(),
                                ),
                            }
                        }
                        p.vector
                    }
                };
                query_users.push(id);
                v.to_vec()
            }
            SearchInput::Vector(v) => {
                unit("vector", &check_vector("vector", v, generation.dim())?)?
            }
            SearchInput::Seeds(s) => {
                let v = self.seed_query(&generation, &s, "seeds", "user_ids")?;
                query_users.extend(s.user_ids);
                v
            }
        };
        let query_us = q0.elapsed().as_micros() as u64;
        if to_users && filter.exclude_query_user {
            deny.extend(query_users);
        }
        let params = SearchParams {
            k: k as usize,
            exact: q.exact,
            filter: Filter {
                conditions: filter.conditions,
                allow_ids: (!filter.allow_ids.is_empty()).then_some(filter.allow_ids),
                deny_ids: deny,
                exclude_rows: Vec::new(),
            },
        };
        remaining(deadline)?;
        let s0 = Instant::now();
        let idx = index.clone();
        let result = tokio::task::spawn_blocking(move || idx.search(&query, &params))
            .await
            .map_err(|e| ApiError::Internal(format!("search task: {e}")))?
            .map_err(|e| match e {
                profiled_index::Error::UnknownAttribute(a) => ApiError::invalid(
                    "filter.conditions",
                    format!("unknown attribute {a:?} in the {} index", q.target.name()),
                ),
                profiled_index::Error::InvalidArgument(m) => ApiError::invalid("filter", m),
                other => ApiError::from(other),
            })?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Internal("search returned no result".into()))?;
        let search_us = s0.elapsed().as_micros() as u64;
        let mut hits = Vec::with_capacity(result.hits.len());
        for h in result.hits {
            let attributes = if q.include_attributes {
                let mut a = index.attributes_of(&h.id)?.unwrap_or_default();
                a.remove(SEEN_ITEMS_ATTRIBUTE);
                a
            } else {
                BTreeMap::new()
            };
            let title = if q.include_attributes && !to_users {
                index.title_of(&h.id).unwrap_or_default()
            } else {
                String::new()
            };
            let vector = if q.include_vectors {
                index.vector_of(&h.id)?.map(|(_, v)| v)
            } else {
                None
            };
            hits.push(FoundRow {
                id: h.id,
                score: h.score,
                attributes,
                title,
                vector,
            });
        }
        Ok(Found {
            target: q.target,
            hits,
            path: result.path,
            index_rows: index.len() as u64,
            candidates: result.candidates as u64,
            plan: std::iter::once(result.path.name().to_string())
                .chain(plan_notes)
                .collect::<Vec<_>>()
                .join("; "),
            cache_hit,
            query_us,
            search_us,
            generation,
        })
    }
}
