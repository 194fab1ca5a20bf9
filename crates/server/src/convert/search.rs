//! Search: `SearchRequest` → [`SearchQuery`] (with `TryFrom<&pb::Filter>`
//! for the filter), [`Found`] → `SearchResponse`.

use profiled_index::{Condition, IndexRole, SearchPath};
use profiled_proto::v1 as pb;

use super::{cache_use, model_ref, model_sel, vector, vector_values, wants_f16};
use crate::engine::search::SearchInput;
use crate::engine::{Found, SearchFilter, SearchQuery, Seeds, UserRef};
use crate::error::ApiError;

impl TryFrom<&pb::Filter> for SearchFilter {
    type Error = ApiError;

    /// The filter's structure (operators, value counts); its size limits
    /// are the core's (`limits.max_filter_*`).
    fn try_from(f: &pb::Filter) -> Result<SearchFilter, ApiError> {
        let mut conditions = Vec::with_capacity(f.conditions.len());
        for (i, c) in f.conditions.iter().enumerate() {
            let path = || format!("filter.conditions[{i}]");
            let cond = match pb::AttributeOp::try_from(c.op) {
                Ok(pb::AttributeOp::Equals) => {
                    let [value] = c.values.as_slice() else {
                        return Err(ApiError::invalid(
                            format!("{}.values", path()),
                            format!("EQUALS needs exactly one value, got {}", c.values.len()),
                        ));
                    };
                    Condition::Equals {
                        attribute: c.attribute.clone(),
                        value: value.clone(),
                    }
                }
                Ok(pb::AttributeOp::In | pb::AttributeOp::NotIn) if c.values.is_empty() => {
                    return Err(ApiError::invalid(
                        format!("{}.values", path()),
                        "IN and NOT_IN need at least one value",
                    ));
                }
                Ok(pb::AttributeOp::In) => Condition::In {
                    attribute: c.attribute.clone(),
                    values: c.values.clone(),
                },
                Ok(pb::AttributeOp::NotIn) => Condition::NotIn {
                    attribute: c.attribute.clone(),
                    values: c.values.clone(),
                },
                _ => {
                    return Err(ApiError::invalid(
                        format!("{}.op", path()),
                        "set ATTRIBUTE_OP_EQUALS, ATTRIBUTE_OP_IN or ATTRIBUTE_OP_NOT_IN",
                    ));
                }
            };
            conditions.push(cond);
        }
        Ok(SearchFilter {
            conditions,
            allow_ids: f.allow_ids.clone(),
            deny_ids: f.deny_ids.clone(),
            exclude_seen_items: f.exclude_seen_items,
            exclude_query_user: f.exclude_query_user.unwrap_or(true),
        })
    }
}

/// Request-time `context` goes with a `user_id` query only (both edges).
pub fn check_context(user_query: bool, has_context: bool) -> Result<(), ApiError> {
    if has_context && !user_query {
        return Err(ApiError::invalid(
            "context",
            "context goes with a user_id query only",
        ));
    }
    Ok(())
}

/// The query of a Search request.
pub fn query(r: pb::SearchRequest) -> Result<SearchQuery<pb::UserFeatures>, ApiError> {
    check_context(
        matches!(r.query, Some(pb::search_request::Query::UserId(_))),
        r.context.is_some(),
    )?;
    let input = match r.query {
        None => {
            return Err(ApiError::invalid(
                "query",
                "set exactly one of features, user_id, vector, seeds",
            ));
        }
        Some(pb::search_request::Query::Features(f)) => SearchInput::Features(f),
        Some(pb::search_request::Query::UserId(id)) => SearchInput::User(UserRef {
            id,
            context: r.context,
        }),
        Some(pb::search_request::Query::Vector(v)) => {
            SearchInput::Vector(vector_values("vector", &v)?)
        }
        Some(pb::search_request::Query::Seeds(s)) => SearchInput::Seeds(Seeds {
            vectors: s
                .vectors
                .iter()
                .enumerate()
                .map(|(i, v)| vector_values(&format!("seeds.vectors[{i}]"), v))
                .collect::<Result<_, _>>()?,
            user_ids: s.user_ids,
        }),
    };
    let target = match pb::TargetIndex::try_from(r.target) {
        Ok(pb::TargetIndex::Users) => IndexRole::Users,
        _ => IndexRole::Items,
    };
    Ok(SearchQuery {
        model: model_sel(r.model.as_ref())?,
        target,
        input,
        k: r.k,
        exact: r.exact,
        filter: match &r.filter {
            Some(f) => SearchFilter::try_from(f)?,
            None => SearchFilter::default(),
        },
        include_attributes: r.include_attributes,
        include_vectors: r.include_vectors,
        cache: cache_use(r.cache),
    })
}

/// The response to a Search request with hit vectors in `encoding`.
pub fn response(f: Found, encoding: i32) -> pb::SearchResponse {
    let f16 = wants_f16(encoding);
    pb::SearchResponse {
        model: Some(model_ref(&f.generation)),
        target: match f.target {
            IndexRole::Users => pb::TargetIndex::Users,
            IndexRole::Items => pb::TargetIndex::Items,
        } as i32,
        path: match f.path {
            SearchPath::ExactScan => pb::SearchPath::Exact,
            SearchPath::ExactCandidates | SearchPath::AnnFallbackExact => {
                pb::SearchPath::ExactCandidates
            }
            SearchPath::Ann => pb::SearchPath::Ann,
        } as i32,
        ann_fallback: f.path == SearchPath::AnnFallbackExact,
        hits: f
            .hits
            .into_iter()
            .map(|h| pb::Hit {
                id: h.id,
                score: h.score,
                attributes: h
                    .attributes
                    .into_iter()
                    .map(|(name, values)| (name, pb::AttributeValues { values }))
                    .collect(),
                title: h.title,
                vector: h.vector.map(|v| vector(&v, f16)),
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
