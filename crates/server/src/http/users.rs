//! The JSON bodies of live user state — Track, GetUser, DeleteUser — and
//! their conversion to and from the core (`crate::engine::users`).
//!
//! A tracked user becomes the gRPC edge's own message (`pb::UserTrack`, the
//! core's `TrackInput`), so both edges validate with one function
//! (`crate::convert::users`) and answer with the same messages.

use std::collections::BTreeMap;

use profiled_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::types::{Event, FieldValue, ItemError, ModelSpec};
use crate::engine::{TrackQuery, UserPage};
use crate::error::ApiError;

/// One change of a user's field: `name` and exactly one of `set` (a value,
/// validated as a request feature is) and `clear: true`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FieldChange {
    /// An input of the model's schema, e.g. `age`.
    pub name: String,
    /// Store this value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<FieldValue>,
    /// Remove the stored value (`true`; the model then sees its "missing"
    /// token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clear: Option<bool>,
}

impl FieldChange {
    /// The gRPC message; `set` and `clear` together are sent as neither, so
    /// the core refuses them with its own message ("set exactly one of set
    /// and clear").
    fn to_message(&self) -> pb::FieldChange {
        use pb::field_change::Change;
        pb::FieldChange {
            name: self.name.clone(),
            change: match (&self.set, self.clear) {
                (Some(v), None) => Some(Change::Set(v.to_message())),
                (None, Some(c)) => Some(Change::Clear(c)),
                _ => None,
            },
        }
    }
}

/// What to store for one user: at least one event or field change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UserTrack {
    /// The user: non-empty, at most `limits.max_user_id_bytes`.
    pub user_id: String,
    /// New events, in any order (late ones are inserted in time order;
    /// duplicates — same `event_id`, or without one the same item and
    /// timestamp — are skipped and counted).
    pub events: Vec<Event>,
    /// Field changes, applied after the events, in order.
    pub fields: Vec<FieldChange>,
}

impl UserTrack {
    /// The gRPC message (the core's `TrackInput`).
    fn to_message(&self) -> pb::UserTrack {
        pb::UserTrack {
            user_id: self.user_id.clone(),
            events: self.events.iter().map(Event::to_message).collect(),
            fields: self.fields.iter().map(FieldChange::to_message).collect(),
        }
    }
}

/// Track: store events and field changes of up to
/// `limits.max_track_users_per_call` users (at most
/// `limits.max_track_events_per_call` events in all), each all-or-nothing
/// and durable when the answer arrives.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrackRequest {
    /// The model whose input schema validates the field changes (default:
    /// the default model). The stored state itself is model-independent.
    pub model: ModelSpec,
    /// The users, in order (the same user may come twice: applied in order).
    pub users: Vec<UserTrack>,
    /// Store every valid user and answer each bad one in its slot instead
    /// of failing the call before anything is stored.
    pub allow_partial: bool,
    /// Echoed in the answer.
    pub request_id: String,
}

impl TrackRequest {
    /// The core's query.
    pub fn to_query(&self) -> Result<TrackQuery<pb::UserTrack>, ApiError> {
        Ok(TrackQuery {
            model: self.model.to_sel()?,
            users: self.users.iter().map(UserTrack::to_message).collect(),
            allow_partial: self.allow_partial,
        })
    }
}

/// The outcome for one user of a Track call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackedUser {
    /// The user.
    pub user_id: String,
    /// Events stored by this call.
    pub stored: u32,
    /// Events skipped as duplicates.
    pub duplicates: u32,
    /// Events dropped as older than the retained window.
    pub dropped_too_old: u32,
    /// The user's state version after this call (monotonic per user).
    pub state_version: u64,
    /// This user's error (only with `allow_partial`; nothing of it was
    /// stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

/// The answer of Track.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackResponse {
    /// One per requested user, in order.
    pub users: Vec<TrackedUser>,
    /// The request's `request_id`.
    pub request_id: String,
}

impl TrackResponse {
    /// The answer of a Track call.
    pub fn from_core(users: Vec<crate::engine::TrackedUser>, request_id: String) -> TrackResponse {
        TrackResponse {
            users: users
                .into_iter()
                .map(|u| match u.result {
                    Ok(a) => TrackedUser {
                        user_id: u.user_id,
                        stored: a.stored,
                        duplicates: a.duplicates,
                        dropped_too_old: a.dropped_too_old,
                        state_version: a.version,
                        error: None,
                    },
                    Err(e) => TrackedUser {
                        user_id: u.user_id,
                        stored: 0,
                        duplicates: 0,
                        dropped_too_old: 0,
                        state_version: 0,
                        error: Some(ItemError::from(&e)),
                    },
                })
                .collect(),
            request_id,
        }
    }
}

/// Query parameters of GetUser.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
pub struct GetUserQuery {
    /// Events per page, newest first (0 or absent = 100; at most 1000).
    pub page_size: u32,
    /// `next_page_token` of the previous page (absent = the newest events).
    pub page_token: String,
}

/// A user's stored state, one page of events at a time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetUserResponse {
    /// The user.
    pub user_id: String,
    /// The state version (as in Track's `state_version`).
    pub state_version: u64,
    /// The stored fields, by input name.
    pub fields: BTreeMap<String, FieldValue>,
    /// One page of the retained events, newest first (with their event ids).
    pub events: Vec<Event>,
    /// Set when older events remain: pass it as `page_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// Retained events in all.
    pub total_events: u32,
    /// Milliseconds since the Unix epoch of the last change.
    pub updated_ms: i64,
}

impl GetUserResponse {
    /// The answer of a GetUser call.
    pub fn from_core(p: UserPage) -> GetUserResponse {
        let s = p.state;
        GetUserResponse {
            user_id: s.user_id,
            state_version: s.version,
            fields: s
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), FieldValue::from(v)))
                .collect(),
            events: s
                .events
                .into_iter()
                .map(|e| Event {
                    item_id: e.item,
                    timestamp: e.timestamp,
                    rating: e.rating,
                    event_id: e.event_id,
                })
                .collect(),
            next_page_token: p.next_token,
            total_events: p.total_events as u32,
            updated_ms: s.updated_ms,
        }
    }
}

/// The answer of DeleteUser: after it no call returns the user's events or
/// a profile computed from them, by id (the users index snapshot of the
/// user is hidden too); a later Track starts afresh.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteUserResponse {
    /// True when the user had live state.
    pub existed: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn field_changes_become_the_grpc_oneof() {
        use pb::field_change::Change;
        let c = |j: &str| {
            serde_json::from_str::<FieldChange>(j)
                .unwrap()
                .to_message()
                .change
        };
        assert!(matches!(
            c(r#"{"name": "age", "set": 31}"#),
            Some(Change::Set(pb::FieldValue {
                kind: Some(pb::field_value::Kind::Number(x))
            })) if x == 31.0
        ));
        assert_eq!(
            c(r#"{"name": "age", "clear": true}"#),
            Some(Change::Clear(true))
        );
        assert_eq!(
            c(r#"{"name": "age", "clear": false}"#),
            Some(Change::Clear(false))
        );
        // Neither, or both: no change, which the core refuses by name.
        assert_eq!(c(r#"{"name": "age"}"#), None);
        assert_eq!(c(r#"{"name": "age", "set": 1, "clear": true}"#), None);
        let e = serde_json::from_str::<FieldChange>(r#"{"name": "age", "value": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `value`"), "{e}");
    }

    #[test]
    fn track_events_keep_their_ids() {
        let r: TrackRequest = serde_json::from_str(
            r#"{"users": [{"user_id": "a", "events": [{"item_id": "3", "timestamp": 5, "event_id": "e1"}]}]}"#,
        )
        .unwrap();
        let q = r.to_query().unwrap();
        assert_eq!(q.users[0].user_id, "a");
        assert_eq!(q.users[0].events[0].event_id, "e1");
        assert_eq!(q.users[0].events[0].rating, None);
    }
}
