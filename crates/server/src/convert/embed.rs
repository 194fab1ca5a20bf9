//! Embed: `EmbedRequest` → [`EmbedQuery`], [`Embedded`] → `EmbedResponse`.

use profiled_proto::v1 as pb;

use super::{cache_use, model_ref, model_sel, vector, wants_f16};
use crate::engine::{EmbedQuery, Embedded, ProfileSource, UserQuery, UserRef};
use crate::error::ApiError;

/// The query of an Embed request (the users' features stay messages: the
/// core converts them only on a cache miss).
pub fn query(r: pb::EmbedRequest) -> Result<EmbedQuery<pb::UserFeatures>, ApiError> {
    Ok(EmbedQuery {
        model: model_sel(r.model.as_ref())?,
        users: r
            .users
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let (features, user_id) = match u.source {
                    None => (None, None),
                    Some(pb::user_input::Source::Features(f)) => (Some(f), None),
                    Some(pb::user_input::Source::UserId(id)) => (None, Some(id)),
                };
                user_query(i, features, user_id, u.context)
            })
            .collect(),
        cache: cache_use(r.cache),
        allow_partial: r.allow_partial,
    })
}

/// User `i` of an Embed request from its parts, as either edge received
/// them (the gRPC `source` oneof, the JSON object's two keys): exactly one
/// of `features` and `user_id`, and `context` only beside a user id. The
/// one place these rules and their messages live.
pub fn user_query<F>(
    i: usize,
    features: Option<F>,
    user_id: Option<String>,
    context: Option<F>,
) -> Result<UserQuery<F>, ApiError> {
    match (features, user_id, context) {
        (None, None, _) | (Some(_), Some(_), _) => Err(ApiError::invalid(
            format!("users[{i}].source"),
            "set exactly one of features or user_id",
        )),
        (None, Some(id), context) => Ok(UserQuery::User(UserRef { id, context })),
        (Some(_), None, Some(_)) => Err(ApiError::invalid(
            format!("users[{i}].context"),
            "context goes with a user_id only (put the fields and events in features)",
        )),
        (Some(f), None, None) => Ok(UserQuery::Features(f)),
    }
}

fn source(s: ProfileSource) -> pb::ProfileSource {
    match s {
        ProfileSource::Computed => pb::ProfileSource::Computed,
        ProfileSource::Cache => pb::ProfileSource::Cache,
        ProfileSource::UsersIndex => pb::ProfileSource::UsersIndex,
        ProfileSource::UserState => pb::ProfileSource::UserState,
    }
}

/// The response to an Embed request whose `encoding` and `request_id` are given.
pub fn response(e: Embedded, encoding: i32, request_id: String) -> pb::EmbedResponse {
    let f16 = wants_f16(encoding);
    let users = e
        .users
        .into_iter()
        .map(|u| match u.result {
            Ok((p, s)) => pb::EmbeddedUser {
                user_id: u.user_id,
                vector: Some(vector(&p.vector, f16)),
                cache_hit: p.cache_hit,
                source: source(s) as i32,
                error: None,
            },
            Err(err) => pb::EmbeddedUser {
                user_id: u.user_id,
                vector: None,
                cache_hit: false,
                source: pb::ProfileSource::Unspecified as i32,
                error: Some(err.to_item()),
            },
        })
        .collect();
    pb::EmbedResponse {
        model: Some(model_ref(&e.generation)),
        users,
        dim: e.generation.dim() as u32,
        encoding: if f16 {
            pb::VectorEncoding::F16
        } else {
            pb::VectorEncoding::F32
        } as i32,
        queue_us: e.queue_us,
        compute_us: e.compute_us,
        request_id,
    }
}
