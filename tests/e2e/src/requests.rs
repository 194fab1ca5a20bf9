//! Builders of the protobuf requests the tests send. They fill the fields a
//! test cares about and leave the rest at their defaults; a test adjusts a
//! builder's result with struct update syntax, e.g.
//! `pb::SearchRequest { include_vectors: true, ..search_features(f, 5) }`.

use std::collections::HashMap;

use profiled_proto::v1 as pb;

/// A categorical feature value.
pub fn categorical(value: &str) -> pb::FieldValue {
    pb::FieldValue {
        kind: Some(pb::field_value::Kind::Categorical(value.into())),
    }
}

/// A numeric feature value.
pub fn number(value: f64) -> pb::FieldValue {
    pb::FieldValue {
        kind: Some(pb::field_value::Kind::Number(value)),
    }
}

/// The two fields of the synthetic schema the tests set: `occupation`
/// (categorical) and `age` (number).
pub fn occupation_and_age(occupation: &str, age: f64) -> HashMap<String, pb::FieldValue> {
    HashMap::from([
        ("occupation".to_string(), categorical(occupation)),
        ("age".to_string(), number(age)),
    ])
}

/// A behaviour event.
pub fn event(item_id: &str, timestamp: i64, rating: Option<f32>) -> pb::BehaviourEvent {
    pb::BehaviourEvent {
        item_id: item_id.into(),
        timestamp,
        rating,
        event_id: String::new(),
    }
}

/// A behaviour event with a client event id (Track's idempotency key).
pub fn event_with_id(
    item_id: &str,
    timestamp: i64,
    rating: Option<f32>,
    event_id: &str,
) -> pb::BehaviourEvent {
    pb::BehaviourEvent {
        event_id: event_id.into(),
        ..event(item_id, timestamp, rating)
    }
}

/// The tests' usual user, anonymous: [`occupation_and_age`] and two events,
/// item `3` rated 4 and item `7` unrated.
pub fn features(occupation: &str, age: f64) -> pb::UserFeatures {
    user_features("", occupation, age)
}

/// [`features`] with a user id (echoed in Embed answers).
pub fn user_features(user_id: &str, occupation: &str, age: f64) -> pb::UserFeatures {
    pb::UserFeatures {
        user_id: user_id.into(),
        fields: occupation_and_age(occupation, age),
        events: vec![
            event("3", 880_000_000, Some(4.0)),
            event("7", 880_000_100, None),
        ],
    }
}

/// A user given by its features.
pub fn input(features: pb::UserFeatures) -> pb::UserInput {
    pb::UserInput {
        source: Some(pb::user_input::Source::Features(features)),
        context: None,
    }
}

/// A user given by its id (live state, else the users index).
pub fn input_by_id(user_id: &str) -> pb::UserInput {
    pb::UserInput {
        source: Some(pb::user_input::Source::UserId(user_id.into())),
        context: None,
    }
}

/// An Embed request for `users` (given by features), everything else
/// default.
pub fn embed_req(users: Vec<pb::UserFeatures>) -> pb::EmbedRequest {
    pb::EmbedRequest {
        users: users.into_iter().map(input).collect(),
        ..Default::default()
    }
}

/// A Search of the items index for the profile of `features`, `k` hits.
pub fn search_features(features: pb::UserFeatures, k: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        query: Some(pb::search_request::Query::Features(features)),
        k,
        ..Default::default()
    }
}

/// A Search of `target` for the stored profile of `user_id`, `k` hits.
pub fn search_user(user_id: &str, target: pb::TargetIndex, k: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        query: Some(pb::search_request::Query::UserId(user_id.into())),
        target: target as i32,
        k,
        ..Default::default()
    }
}

/// A filter condition `attribute op values`.
pub fn condition(attribute: &str, op: pb::AttributeOp, values: &[&str]) -> pb::AttributeCondition {
    pb::AttributeCondition {
        attribute: attribute.into(),
        op: op as i32,
        values: values.iter().map(|s| s.to_string()).collect(),
    }
}

/// An Explain target USERS: seed users by id and seed vectors.
pub fn users_target(seed_user_ids: &[&str], vectors: Vec<pb::Vector>) -> pb::ExplainTarget {
    pb::ExplainTarget {
        kind: Some(pb::explain_target::Kind::Users(pb::UsersTarget {
            seed_user_ids: seed_user_ids.iter().map(|s| s.to_string()).collect(),
            vectors,
        })),
    }
}

/// An Explain target ITEM.
pub fn item_target(item_id: &str) -> pb::ExplainTarget {
    pb::ExplainTarget {
        kind: Some(pb::explain_target::Kind::Item(pb::ItemTarget {
            item_id: item_id.into(),
        })),
    }
}

/// A request carrying `msg`, with `authorization: Bearer TOKEN` when a
/// token is given (`Some("")` sends the malformed `Bearer `).
pub fn with_bearer<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}")
                .parse()
                .expect("a bearer token is a valid header value"),
        );
    }
    r
}

/// One user's Track entry.
pub fn user_track(
    user_id: &str,
    events: Vec<pb::BehaviourEvent>,
    fields: Vec<pb::FieldChange>,
) -> pb::UserTrack {
    pb::UserTrack {
        user_id: user_id.into(),
        events,
        fields,
    }
}

/// A field change that stores `value` under `name`.
pub fn set_field(name: &str, value: pb::FieldValue) -> pb::FieldChange {
    pb::FieldChange::set(name, value)
}

/// A field change that clears `name`.
pub fn clear_field(name: &str) -> pb::FieldChange {
    pb::FieldChange::clear(name)
}

/// A Track request for `users` (default model, all-or-nothing).
pub fn track_req(users: Vec<pb::UserTrack>) -> pb::TrackRequest {
    pb::TrackRequest {
        users,
        ..Default::default()
    }
}
