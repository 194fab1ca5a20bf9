//! Explain: `ExplainRequest` → [`ExplainQuery`], [`Explained`] →
//! `ExplainResponse` (the token table is the model's, converted as is).

use profiled_model::{Method, TokenInfo};
use profiled_proto::v1 as pb;

use super::{cache_use, group, model_ref, model_sel, vector_values};
use crate::engine::{ExplainQuery, ExplainTarget, Explained, Seeds, UserQuery, UserRef};
use crate::error::ApiError;

/// The query of an Explain request.
pub fn query(r: pb::ExplainRequest) -> Result<ExplainQuery<pb::UserFeatures>, ApiError> {
    let model = model_sel(r.model.as_ref())?;
    let user = user_query(r.features, r.user_id, r.context)?;
    let target = match r.target.and_then(|t| t.kind) {
        None | Some(pb::explain_target::Kind::Profile(_)) => ExplainTarget::Profile,
        Some(pb::explain_target::Kind::Item(it)) => ExplainTarget::Item(it.item_id),
        Some(pb::explain_target::Kind::Users(u)) => ExplainTarget::Users(Seeds {
            vectors: u
                .vectors
                .iter()
                .enumerate()
                .map(|(i, v)| vector_values(&format!("target.users.vectors[{i}]"), v))
                .collect::<Result<_, _>>()?,
            user_ids: u.seed_user_ids,
        }),
    };
    Ok(ExplainQuery {
        model,
        user,
        target,
        method: method(r.method),
        groups_only: r.groups_only,
        top_n: r.top_n,
        cache: cache_use(r.cache),
    })
}

/// The user of an Explain request from its parts, as either edge received
/// them: exactly one of `features` and `user_id` (empty = unset, as in
/// proto3), and `context` only beside a user id. The one place these rules
/// and their messages live.
pub fn user_query<F>(
    features: Option<F>,
    user_id: String,
    context: Option<F>,
) -> Result<UserQuery<F>, ApiError> {
    Ok(match (features, user_id.is_empty(), context) {
        (Some(_), false, _) => {
            return Err(ApiError::invalid(
                "user_id",
                "set exactly one of features and user_id",
            ));
        }
        (Some(_), true, Some(_)) => {
            return Err(ApiError::invalid(
                "context",
                "context goes with a user_id only (put the fields and events in features)",
            ));
        }
        (Some(f), true, None) => UserQuery::Features(f),
        (None, false, context) => UserQuery::User(UserRef {
            id: user_id,
            context,
        }),
        (None, true, _) => {
            return Err(ApiError::invalid(
                "features",
                "required (or a user_id of a tracked user)",
            ));
        }
    })
}

/// The method of an `ExplainMethod` (unset or unknown = occlusion).
pub fn method(v: i32) -> Method {
    match pb::ExplainMethod::try_from(v) {
        Ok(pb::ExplainMethod::AttentionRollout) => Method::AttentionRollout,
        Ok(pb::ExplainMethod::Attention) => Method::Attention,
        _ => Method::Occlusion,
    }
}

fn token(t: &TokenInfo) -> pb::Token {
    pb::Token {
        position: t.position as u32,
        group: group(t.group) as i32,
        field: t.field.clone(),
        label: t.label.clone(),
        item_id: t.item_id.clone(),
        timestamp: t.timestamp,
        oov: t.oov,
        missing: t.missing,
    }
}

/// The response to an Explain request; `asked` is the request's target,
/// echoed as sent (unset = the profile).
pub fn response(e: Explained, asked: Option<pb::ExplainTarget>) -> pb::ExplainResponse {
    let ex = &e.explanation;
    let table: Vec<pb::Token> = ex.table.iter().map(token).collect();
    let total: f64 = ex.tokens.iter().map(|t| t.value.abs()).sum();
    let tokens = ex
        .tokens
        .iter()
        .take(e.top_n)
        .map(|t| pb::TokenContribution {
            token: table.get(t.position).cloned(),
            value: t.value,
            share: if total > 0.0 {
                t.value.abs() / total
            } else {
                0.0
            },
        })
        .collect();
    let groups = ex
        .groups
        .iter()
        .map(|gr| pb::GroupContribution {
            group: group(gr.group) as i32,
            value: gr.value,
            share: gr.share,
            tokens: gr.tokens as u32,
        })
        .collect();
    let layers = ex
        .layers
        .iter()
        .map(|l| pb::LayerAttention {
            layer: l.layer as u32,
            heads: l
                .heads
                .iter()
                .enumerate()
                .map(|(h, m)| pb::HeadAttention {
                    head: h as u32,
                    mass: m.clone(),
                })
                .collect(),
            head_mean: l.mean.clone(),
        })
        .collect();
    pb::ExplainResponse {
        model: Some(model_ref(&e.generation)),
        method: match ex.method {
            Method::Occlusion => pb::ExplainMethod::Occlusion,
            Method::AttentionRollout => pb::ExplainMethod::AttentionRollout,
            Method::Attention => pb::ExplainMethod::Attention,
        } as i32,
        target: Some(asked.unwrap_or(pb::ExplainTarget {
            kind: Some(pb::explain_target::Kind::Profile(pb::ProfileTarget {})),
        })),
        value_kind: match ex.method {
            Method::Occlusion => pb::ValueKind::ScoreDrop,
            _ => pb::ValueKind::AttentionMass,
        } as i32,
        base_score: ex.score,
        groups,
        tokens,
        token_table: table,
        layers,
        forward_passes: ex.variants as u32,
        cache_hit: false,
        queue_us: e.queue_us,
        compute_us: e.compute_us,
    }
}
