//! Live user state: `UserTrack` (the core's [`TrackInput`]: validated
//! against the model's schema by the core), Track answers, and GetUser's
//! page of stored state.

use profiled_proto::v1 as pb;
use profiled_state::{FieldUpdate, StoredEvent, UserUpdate};
use profiled_store::Generation;

use super::features::{check_str, field_value, value_to_proto};
use super::model_sel;
use crate::config::Limits;
use crate::engine::{TrackInput, TrackQuery, TrackedUser, UserPage};
use crate::error::ApiError;

impl TrackInput for pb::UserTrack {
    fn user_id(&self) -> &str {
        &self.user_id
    }

    fn event_count(&self) -> usize {
        self.events.len()
    }

    fn to_update(
        &self,
        path: &str,
        generation: &Generation,
        limits: &Limits,
    ) -> Result<UserUpdate, ApiError> {
        let meta = generation.encoder.metadata();
        if self.events.is_empty() && self.fields.is_empty() {
            return Err(ApiError::invalid(
                path,
                "nothing to store: send events or field changes",
            ));
        }
        if self.fields.len() > limits.max_fields_per_user {
            return Err(ApiError::Limit {
                field: format!("{path}.fields"),
                got: format!("{} field changes", self.fields.len()),
                limit: "max_fields_per_user",
                value: limits.max_fields_per_user as u64,
            });
        }
        let mut events = Vec::with_capacity(self.events.len());
        for (j, e) in self.events.iter().enumerate() {
            let epath = || format!("{path}.events[{j}]");
            if e.item_id.is_empty() {
                return Err(ApiError::invalid(
                    format!("{}.item_id", epath()),
                    "an item id is required",
                ));
            }
            check_str(|| format!("{}.item_id", epath()), &e.item_id, limits)?;
            check_str(|| format!("{}.event_id", epath()), &e.event_id, limits)?;
            if let Some(r) = e.rating
                && !r.is_finite()
            {
                return Err(ApiError::invalid(
                    format!("{}.rating", epath()),
                    format!("{r} is not finite"),
                ));
            }
            events.push(StoredEvent {
                item: e.item_id.clone(),
                timestamp: e.timestamp,
                rating: e.rating,
                event_id: (!e.event_id.is_empty()).then(|| e.event_id.clone()),
            });
        }
        let mut fields = Vec::with_capacity(self.fields.len());
        for (j, c) in self.fields.iter().enumerate() {
            let fpath = || format!("{path}.fields[{j}]");
            let name = c.name.as_str();
            let update = match &c.change {
                None => {
                    return Err(ApiError::invalid(
                        fpath(),
                        "set exactly one of set and clear",
                    ));
                }
                Some(pb::field_change::Change::Clear(false)) => {
                    return Err(ApiError::invalid(
                        format!("{}.clear", fpath()),
                        "clear must be true when set (use `set` to store a value)",
                    ));
                }
                Some(pb::field_change::Change::Clear(true)) => {
                    // Only names the model reads can be cleared, as set.
                    check_str(|| format!("{}.name", fpath()), name, limits)?;
                    if crate::engine::schema::input_kind_of(meta, name).is_none() {
                        let kinds = crate::engine::schema::input_kinds(meta);
                        let known: Vec<&str> = kinds.keys().map(String::as_str).collect();
                        return Err(ApiError::invalid(
                            format!("{}.name", fpath()),
                            format!(
                                "unknown field {name:?} (the model reads: {})",
                                known.join(", ")
                            ),
                        ));
                    }
                    FieldUpdate::Clear(name.to_string())
                }
                Some(pb::field_change::Change::Set(v)) => {
                    let vpath = || format!("{}.set[{name:?}]", fpath());
                    FieldUpdate::Set(
                        name.to_string(),
                        field_value(name, v, meta, &vpath, limits)?,
                    )
                }
            };
            fields.push(update);
        }
        Ok(UserUpdate {
            user_id: self.user_id.clone(),
            events,
            fields,
        })
    }
}

/// The query of a Track request.
pub fn query(r: pb::TrackRequest) -> Result<TrackQuery<pb::UserTrack>, ApiError> {
    Ok(TrackQuery {
        model: model_sel(r.model.as_ref())?,
        users: r.users,
        allow_partial: r.allow_partial,
    })
}

/// The response to a Track request.
pub fn response(users: Vec<TrackedUser>, request_id: String) -> pb::TrackResponse {
    pb::TrackResponse {
        users: users
            .into_iter()
            .map(|u| match u.result {
                Ok(a) => pb::TrackedUser {
                    user_id: u.user_id,
                    stored: a.stored,
                    duplicates: a.duplicates,
                    dropped_too_old: a.dropped_too_old,
                    state_version: a.version,
                    error: None,
                },
                Err(e) => pb::TrackedUser {
                    user_id: u.user_id,
                    error: Some(e.to_item()),
                    ..pb::TrackedUser::default()
                },
            })
            .collect(),
        request_id,
    }
}

/// The response to GetUser.
pub fn user_page(p: UserPage) -> pb::GetUserResponse {
    let s = p.state;
    pb::GetUserResponse {
        user_id: s.user_id,
        state_version: s.version,
        fields: s
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_proto(v)))
            .collect(),
        events: s
            .events
            .into_iter()
            .map(|e| pb::BehaviourEvent {
                item_id: e.item,
                timestamp: e.timestamp,
                rating: e.rating,
                event_id: e.event_id.unwrap_or_default(),
            })
            .collect(),
        next_page_token: p.next_token.unwrap_or_default(),
        total_events: p.total_events as u32,
        updated_ms: s.updated_ms,
    }
}
