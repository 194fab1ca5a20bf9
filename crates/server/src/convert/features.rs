//! User features: `pb::UserFeatures` → `profiled_model::UserFeatures`
//! (validated against the generation's schema, the offending field named in
//! request terms), the cache key written straight from the message (so a hit
//! needs no conversion), and the inverse for clients and tests. The message
//! is the engine's [`FeatureInput`].

use std::collections::BTreeMap;

use profiled_model::features::{CanonicalWriter, sort_tags};
use profiled_model::{Event, FieldValue, UserFeatures};
use profiled_proto::v1 as pb;
use profiled_store::Generation;

use crate::config::Limits;
use crate::engine::FeatureInput;
use crate::engine::schema::{InputKind, input_kind_of, input_kinds};
use crate::error::ApiError;

/// `path` is built only when the check fails (the happy path allocates no
/// request paths).
pub(crate) fn check_str(
    path: impl FnOnce() -> String,
    s: &str,
    limits: &Limits,
) -> Result<(), ApiError> {
    ApiError::check_string(path, s, limits.max_string_bytes)
}

/// Converts and validates one user's features against the generation's schema.
/// `path` is the request path of the `UserFeatures` (e.g. `users[2].features`).
pub fn features(
    p: &pb::UserFeatures,
    path: &str,
    generation: &Generation,
    limits: &Limits,
) -> Result<UserFeatures, ApiError> {
    let meta = generation.encoder.metadata();
    check_str(|| format!("{path}.user_id"), &p.user_id, limits)?;
    if p.fields.len() > limits.max_fields_per_user {
        return Err(ApiError::Limit {
            field: format!("{path}.fields"),
            got: format!("{} fields", p.fields.len()),
            limit: "max_fields_per_user",
            value: limits.max_fields_per_user as u64,
        });
    }
    if p.events.len() > limits.max_events_per_user {
        return Err(ApiError::Limit {
            field: format!("{path}.events"),
            got: format!("{} events", p.events.len()),
            limit: "max_events_per_user",
            value: limits.max_events_per_user as u64,
        });
    }
    let mut fields = BTreeMap::new();
    for (key, value) in &p.fields {
        let v = field_value(
            key,
            value,
            meta,
            &|| format!("{path}.fields[{key:?}]"),
            limits,
        )?;
        fields.insert(key.clone(), v);
    }
    let mut events = Vec::with_capacity(p.events.len());
    for (i, e) in p.events.iter().enumerate() {
        check_str(|| format!("{path}.events[{i}].item_id"), &e.item_id, limits)?;
        if let Some(r) = e.rating
            && !r.is_finite()
        {
            return Err(ApiError::invalid(
                format!("{path}.events[{i}].rating"),
                format!("{r} is not finite"),
            ));
        }
        events.push(Event {
            item: e.item_id.clone(),
            timestamp: e.timestamp,
            rating: e.rating,
        });
    }
    if meta.schema.fields.is_empty() && events.is_empty() {
        return Err(ApiError::invalid(
            format!("{path}.events"),
            "this model has no field tokens, so at least one event is needed",
        ));
    }
    Ok(UserFeatures {
        user_id: (!p.user_id.is_empty()).then(|| p.user_id.clone()),
        fields,
        events,
    })
}

/// One field value of a request (features, or a Track field change)
/// validated against the model's schema: the input `key` must exist, the
/// value kind must fit it (a number and a categorical string convert where
/// unambiguous), strings and tag lists within the limits. `fpath` names the
/// value in errors.
pub(crate) fn field_value(
    key: &str,
    value: &pb::FieldValue,
    meta: &profiled_model::ModelJson,
    fpath: &dyn Fn() -> String,
    limits: &Limits,
) -> Result<FieldValue, ApiError> {
    check_str(fpath, key, limits)?;
    let Some(want) = input_kind_of(meta, key) else {
        let kinds = input_kinds(meta);
        let known: Vec<&str> = kinds.keys().map(String::as_str).collect();
        return Err(ApiError::invalid(
            fpath(),
            format!("unknown field (the model reads: {})", known.join(", ")),
        ));
    };
    let (got, v) = match &value.kind {
        None => {
            return Err(ApiError::invalid(
                fpath(),
                "no value set (set one of categorical, number, tags)",
            ));
        }
        Some(pb::field_value::Kind::Categorical(s)) => {
            check_str(fpath, s, limits)?;
            (InputKind::Categorical, FieldValue::Categorical(s.clone()))
        }
        Some(pb::field_value::Kind::Number(x)) => {
            if !x.is_finite() {
                return Err(ApiError::invalid(
                    fpath(),
                    format!("{x} is not a finite number"),
                ));
            }
            (InputKind::Number, FieldValue::Number(*x))
        }
        Some(pb::field_value::Kind::Tags(list)) => {
            if list.tags.len() > limits.max_tags_per_field {
                return Err(ApiError::Limit {
                    field: format!("{}.tags", fpath()),
                    got: format!("{} tags", list.tags.len()),
                    limit: "max_tags_per_field",
                    value: limits.max_tags_per_field as u64,
                });
            }
            let mut seen = std::collections::BTreeSet::new();
            let mut tags = Vec::with_capacity(list.tags.len());
            for (i, t) in list.tags.iter().enumerate() {
                let tpath = || format!("{}.tags[{i}]", fpath());
                check_str(tpath, &t.tag, limits)?;
                let w = t.weight.unwrap_or(1.0);
                if !w.is_finite() || w < 0.0 {
                    return Err(ApiError::invalid(
                        format!("{}.weight", tpath()),
                        format!("{w} is not a finite weight >= 0"),
                    ));
                }
                if !seen.insert(t.tag.as_str()) {
                    return Err(ApiError::invalid(
                        tpath(),
                        format!("duplicate tag {:?}", t.tag),
                    ));
                }
                tags.push((t.tag.clone(), w));
            }
            (InputKind::Tags, FieldValue::Tags(tags))
        }
    };
    // Numbers and categorical strings convert where unambiguous (see
    // common.proto): a number for a categorical input is used in its
    // string form, a numeric string for a numeric input is parsed (blank =
    // missing). Tags never stand for a single value, nor the reverse.
    let scalar = |k| matches!(k, InputKind::Categorical | InputKind::Number);
    if got != want && !(scalar(got) && scalar(want)) {
        return Err(ApiError::invalid(
            fpath(),
            format!("expected {}, got {}", want.name(), got.name()),
        ));
    }
    if want == InputKind::Number
        && let FieldValue::Categorical(text) = &v
        && !text.trim().is_empty()
        && !text.trim().parse::<f64>().is_ok_and(f64::is_finite)
    {
        return Err(ApiError::invalid(
            fpath(),
            format!("{text:?} is not a number"),
        ));
    }
    Ok(v)
}

/// The request message of `u`: the inverse of [`features`], value for
/// value (a categorical stays categorical, a number a number, tags tags, the
/// events in their order); for clients, load generators and tests that hold
/// model-side features.
pub fn to_proto(u: &UserFeatures) -> pb::UserFeatures {
    pb::UserFeatures {
        user_id: u.user_id.clone().unwrap_or_default(),
        fields: u
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_proto(v)))
            .collect(),
        events: u
            .events
            .iter()
            .map(|e| pb::BehaviourEvent {
                item_id: e.item.clone(),
                timestamp: e.timestamp,
                rating: e.rating,
                event_id: String::new(),
            })
            .collect(),
    }
}

/// A field value as a message (the inverse of [`field_value`]).
pub fn value_to_proto(v: &FieldValue) -> pb::FieldValue {
    use pb::field_value::Kind;
    let kind = match v {
        FieldValue::Categorical(s) => Kind::Categorical(s.clone()),
        FieldValue::Number(x) => Kind::Number(*x),
        FieldValue::Tags(t) => Kind::Tags(pb::TagList {
            tags: t
                .iter()
                .map(|(tag, w)| pb::WeightedTag {
                    tag: tag.clone(),
                    weight: Some(*w),
                })
                .collect(),
        }),
    };
    pb::FieldValue { kind: Some(kind) }
}

/// The hot cache's key bytes of a request's features: exactly
/// `UserFeatures::canonical_bytes()` of what [`features`] would build (fields
/// in name order, tags sorted, events by time), written straight from the
/// message — no conversion, so a cache hit skips it. `None` for a field
/// without a value (invalid: [`features`] says why). Only messages that
/// convert successfully are ever inserted, and the bytes determine the
/// converted features, so an invalid message can never hit — except through
/// `user_id`, which is not part of the key and which the caller checks.
pub fn cache_key(p: &pb::UserFeatures) -> Option<Vec<u8>> {
    let mut fields: Vec<(&String, &pb::FieldValue)> = p.fields.iter().collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut w = CanonicalWriter::new(fields.len(), p.events.len());
    for (name, value) in fields {
        match &value.kind {
            Some(pb::field_value::Kind::Categorical(s)) => w.categorical(name, s),
            Some(pb::field_value::Kind::Number(x)) => w.number(name, *x),
            Some(pb::field_value::Kind::Tags(list)) => {
                let mut tags: Vec<(&str, f32)> = list
                    .tags
                    .iter()
                    .map(|t| (t.tag.as_str(), t.weight.unwrap_or(1.0)))
                    .collect();
                sort_tags(&mut tags);
                w.tags(name, &tags);
            }
            None => return None,
        }
    }
    w.events(p.events.len());
    if p.events.is_sorted_by_key(|e| e.timestamp) {
        for e in &p.events {
            w.event(&e.item_id, e.timestamp, e.rating);
        }
    } else {
        let mut order: Vec<usize> = (0..p.events.len()).collect();
        order.sort_by_key(|&i| p.events[i].timestamp);
        for i in order {
            let e = &p.events[i];
            w.event(&e.item_id, e.timestamp, e.rating);
        }
    }
    Some(w.finish())
}

/// The request message is the engine's feature input: the cache key is
/// read from it directly, and it is converted only on a miss.
impl FeatureInput for pb::UserFeatures {
    fn user_id(&self) -> &str {
        &self.user_id
    }

    fn cache_bytes(&self) -> Option<Vec<u8>> {
        cache_key(self)
    }

    fn to_features(
        &self,
        path: &str,
        generation: &Generation,
        limits: &Limits,
    ) -> Result<UserFeatures, ApiError> {
        features(self, path, generation, limits)
    }

    fn event_items(&self) -> Vec<String> {
        self.events.iter().map(|e| e.item_id.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiled_model::testing::{Rng, SyntheticSpec, random_user, write_synthetic_model};

    /// [`super::to_proto`] with the events in a random order state: some in
    /// time order (the key's fast path), some with ties.
    fn to_proto(u: &UserFeatures, rng: &mut Rng) -> pb::UserFeatures {
        assert!(
            !u.fields.values().any(|v| matches!(v, FieldValue::Tags(_))),
            "no tags input in the synthetic schema"
        );
        let mut p = super::to_proto(u);
        p.user_id = "u".into();
        let events = &mut p.events;
        match rng.below(3) {
            0 => events.sort_by_key(|e| e.timestamp),
            1 if events.len() > 2 => {
                let t = events[0].timestamp;
                events[1].timestamp = t;
                events[2].timestamp = t;
            }
            _ => {}
        }
        p
    }

    /// Generation 1 of a synthetic model, loaded from a temporary folder
    /// (kept alive by the returned guard).
    fn synthetic_generation() -> (tempfile::TempDir, Generation) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("1");
        write_synthetic_model(&dir, &SyntheticSpec::default()).unwrap();
        let g = Generation::load("m", 1, &dir, true).unwrap();
        (tmp, g)
    }

    #[test]
    fn cache_key_is_the_canonical_bytes_of_the_converted_features() {
        let (_tmp, g) = synthetic_generation();
        let limits = Limits::default();
        let mut rng = Rng::new(11);
        let mut checked = 0;
        for _ in 0..300 {
            let u = random_user(&mut rng, 30, 12);
            let p = to_proto(&u, &mut rng);
            let Ok(f) = features(&p, "u", &g, &limits) else {
                continue;
            };
            assert_eq!(cache_key(&p), Some(f.canonical_bytes()), "{p:?}");
            checked += 1;
        }
        assert!(checked > 200, "only {checked} valid users");
        // A field without a value can never be valid, so it has no key.
        let mut p = to_proto(&random_user(&mut rng, 30, 12), &mut rng);
        p.fields.insert("age".into(), pb::FieldValue { kind: None });
        assert_eq!(cache_key(&p), None);
        assert!(features(&p, "u", &g, &limits).is_err());
    }

    #[test]
    fn to_proto_is_the_inverse_of_features() {
        let (_tmp, g) = synthetic_generation();
        let limits = Limits::default();
        let mut rng = Rng::new(5);
        let mut checked = 0;
        for i in 0..200 {
            let mut u = random_user(&mut rng, 30, 12);
            u.user_id = Some(format!("u{i}"));
            // The random user writes age as text half the time; the server
            // turns numeric text for a numeric input into a number, so the
            // round trip compares like with like only for numbers.
            if let Some(FieldValue::Categorical(a)) = u.fields.get("age").cloned() {
                u.fields
                    .insert("age".into(), FieldValue::Number(a.parse().unwrap()));
            }
            let p = super::to_proto(&u);
            assert_eq!(p.user_id, format!("u{i}"));
            assert_eq!(p.events.len(), u.events.len());
            let back = features(&p, "u", &g, &limits).unwrap();
            assert_eq!(back.canonical_bytes(), u.canonical_bytes(), "{p:?}");
            checked += 1;
        }
        assert_eq!(checked, 200);
    }
}
