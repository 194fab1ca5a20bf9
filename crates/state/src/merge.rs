//! [`merge`]: the pure rules every backend applies to one user's update, so
//! the embedded store and Redis agree event for event.
//!
//! The rules, in the order they are applied:
//!
//! 1. **Validation, all-or-nothing.** An event whose timestamp is more than
//!    `policy.max_clock_skew_s` seconds after `policy.now_s`, an event with a
//!    non-finite rating, an empty item id, or a field `Set` to a non-finite
//!    number refuses the whole user with [`Error::Invalid`] naming the user
//!    and the event index (or field). Nothing of the user changes.
//! 2. **Tombstones.** Applying to an erased user starts from an empty state
//!    (no fields, no events, `erased = false`) whose version keeps growing
//!    from the tombstone's. An update that changes nothing leaves the
//!    tombstone as it is.
//! 3. **Events, one at a time in the order given** (so splitting an update
//!    in two stores the same events as applying it whole):
//!    - *Duplicates* are skipped and counted in [`Applied::duplicates`]: an
//!      event with a client `event_id` is a duplicate of a retained event, or
//!      of an earlier event of the same update, with the same id; an event
//!      without one is a duplicate of one with the same item and timestamp.
//!    - *Too old:* when the window already holds `retain_events` events, an
//!      event whose timestamp is not newer than the oldest retained one is
//!      dropped and counted in [`Applied::dropped_too_old`] (ties keep what
//!      is already stored, so the window never churns at its boundary and a
//!      re-sent copy of an evicted event is never stored again).
//!    - Otherwise the event is inserted in time order, after every retained
//!      event with the same timestamp (ties in arrival order), and when the
//!      window then exceeds `retain_events` the oldest event is evicted
//!      (evictions are not counted anywhere: they are the window moving on).
//! 4. **Fields**: `Set` / `Clear` in the order given, after the events. A
//!    `Set` to the value already stored, or a `Clear` of an absent field, is
//!    no change.
//! 5. **Version**: +1 when anything changed (an event stored, a field
//!    changed, which includes leaving a tombstone); `updated_ms` is then
//!    `now_ms`. Otherwise the state is returned exactly as it was.

use std::collections::HashSet;

use profiled_model::FieldValue;

use crate::{Applied, Error, FieldUpdate, Policy, Result, StoredEvent, UserState, UserUpdate};

/// Applies `update` to `state` (the user's stored state, `None` when never
/// tracked) under `policy`; returns the new state and what was done. Pure:
/// `now_ms` (milliseconds since the epoch) only stamps `updated_ms`.
///
/// The returned state equals the input one (same version) when nothing
/// changed, so a backend may skip the write.
pub fn merge(
    state: Option<UserState>,
    update: &UserUpdate,
    policy: Policy,
    now_ms: i64,
) -> Result<(UserState, Applied)> {
    validate(update, policy)?;

    let original = state;
    let mut next = match &original {
        Some(s) if !s.erased => s.clone(),
        Some(tomb) => UserState {
            user_id: update.user_id.clone(),
            version: tomb.version,
            ..UserState::default()
        },
        None => UserState {
            user_id: update.user_id.clone(),
            ..UserState::default()
        },
    };

    let mut applied = Applied::default();
    let mut changed = false;
    // Keys of the earlier events of this update (stored or not), so that a
    // repeat inside one update is a duplicate even when its first copy was
    // evicted again by a newer event.
    let mut seen_ids: HashSet<&str> = HashSet::new();
    let mut seen_keys: HashSet<(&str, i64)> = HashSet::new();

    for event in &update.events {
        let duplicate = match &event.event_id {
            Some(id) => {
                seen_ids.contains(id.as_str())
                    || next
                        .events
                        .iter()
                        .any(|e| e.event_id.as_deref() == Some(id.as_str()))
            }
            None => {
                seen_keys.contains(&(event.item.as_str(), event.timestamp))
                    || next
                        .events
                        .iter()
                        .any(|e| e.item == event.item && e.timestamp == event.timestamp)
            }
        };
        if let Some(id) = &event.event_id {
            seen_ids.insert(id.as_str());
        }
        seen_keys.insert((event.item.as_str(), event.timestamp));
        if duplicate {
            applied.duplicates += 1;
            continue;
        }
        if next.events.len() >= policy.retain_events {
            let oldest = next.events.first().map(|e| e.timestamp);
            if policy.retain_events == 0 || oldest.is_some_and(|o| event.timestamp <= o) {
                applied.dropped_too_old += 1;
                continue;
            }
        }
        // After every retained event with a timestamp <= this one.
        let at = next
            .events
            .partition_point(|e| e.timestamp <= event.timestamp);
        next.events.insert(at, event.clone());
        while next.events.len() > policy.retain_events {
            next.events.remove(0);
        }
        applied.stored += 1;
        changed = true;
    }

    for field in &update.fields {
        match field {
            FieldUpdate::Set(name, value) => {
                if next.fields.get(name) != Some(value) {
                    next.fields.insert(name.clone(), value.clone());
                    changed = true;
                }
            }
            FieldUpdate::Clear(name) => {
                if next.fields.remove(name).is_some() {
                    changed = true;
                }
            }
        }
    }

    match original {
        Some(unchanged) if !changed => {
            applied.version = unchanged.version;
            Ok((unchanged, applied))
        }
        None if !changed => {
            // Nothing to store for a user never seen: the caller writes
            // nothing (version 0 means "no state").
            applied.version = 0;
            Ok((next, applied))
        }
        _ => {
            next.version += 1;
            next.updated_ms = now_ms;
            next.erased = false;
            applied.version = next.version;
            Ok((next, applied))
        }
    }
}

/// The tombstone [`crate::UserStateStore::delete`] writes over `state`:
/// `None` when `state` is already a tombstone (nothing to write). A user
/// never tracked still gets one (version 1), so that the users index
/// snapshot stops serving them too. The `bool` is whether there was live
/// state.
pub fn erase(state: Option<&UserState>, user_id: &str, now_ms: i64) -> Option<(UserState, bool)> {
    match state {
        Some(s) if s.erased => None,
        _ => Some((
            UserState {
                user_id: user_id.to_owned(),
                version: state.map_or(0, |s| s.version) + 1,
                updated_ms: now_ms,
                erased: true,
                ..UserState::default()
            },
            state.is_some(),
        )),
    }
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Refuses the update when any event or field breaks the rules (see the
/// module docs); names the user and the event index or field.
fn validate(update: &UserUpdate, policy: Policy) -> Result<()> {
    let user = &update.user_id;
    if user.is_empty() {
        return Err(Error::Invalid {
            message: "user_id is empty".to_owned(),
        });
    }
    let latest = policy.now_s.saturating_add(policy.max_clock_skew_s);
    for (i, event) in update.events.iter().enumerate() {
        if event.timestamp > latest {
            return Err(Error::Invalid {
                message: format!(
                    "user {user:?} event {i}: timestamp {} is {} s in the future \
                     (state.max_clock_skew_s = {})",
                    event.timestamp,
                    event.timestamp.saturating_sub(policy.now_s),
                    policy.max_clock_skew_s
                ),
            });
        }
        if let Some(r) = event.rating
            && !r.is_finite()
        {
            return Err(Error::Invalid {
                message: format!("user {user:?} event {i}: rating {r} is not a finite number"),
            });
        }
        if event.item.is_empty() {
            return Err(Error::Invalid {
                message: format!("user {user:?} event {i}: item id is empty"),
            });
        }
    }
    for field in &update.fields {
        if let FieldUpdate::Set(name, value) = field {
            let finite = match value {
                FieldValue::Number(x) => x.is_finite(),
                FieldValue::Tags(tags) => tags.iter().all(|(_, w)| w.is_finite()),
                FieldValue::Categorical(_) => true,
            };
            if !finite {
                return Err(Error::Invalid {
                    message: format!("user {user:?} field {name:?}: value is not a finite number"),
                });
            }
        }
    }
    Ok(())
}

/// Whether `events` is in the order [`merge`] keeps (non-decreasing
/// timestamps). For tests and for checking records read back.
pub fn in_time_order(events: &[StoredEvent]) -> bool {
    events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW_MS: i64 = 1_700_000_000_000;

    fn policy(retain: usize) -> Policy {
        Policy {
            retain_events: retain,
            max_clock_skew_s: 300,
            now_s: 1_700_000_000,
        }
    }

    fn ev(item: &str, ts: i64, id: Option<&str>) -> StoredEvent {
        StoredEvent {
            item: item.to_owned(),
            timestamp: ts,
            rating: None,
            event_id: id.map(str::to_owned),
        }
    }

    fn upd(events: Vec<StoredEvent>) -> UserUpdate {
        UserUpdate {
            user_id: "u1".to_owned(),
            events,
            fields: vec![],
        }
    }

    fn items(s: &UserState) -> Vec<(String, i64)> {
        s.events
            .iter()
            .map(|e| (e.item.clone(), e.timestamp))
            .collect()
    }

    #[test]
    fn late_events_are_inserted_in_order_and_ties_keep_arrival_order() -> Result<()> {
        let (s, a) = merge(
            None,
            &upd(vec![ev("a", 10, None), ev("b", 30, None)]),
            policy(10),
            NOW_MS,
        )?;
        assert_eq!((a.stored, a.version), (2, 1));
        let (s, a) = merge(
            Some(s),
            &upd(vec![ev("c", 20, None), ev("d", 10, None)]),
            policy(10),
            NOW_MS,
        )?;
        assert_eq!((a.stored, a.version), (2, 2));
        assert_eq!(
            items(&s),
            vec![
                ("a".into(), 10),
                ("d".into(), 10),
                ("c".into(), 20),
                ("b".into(), 30)
            ]
        );
        assert_eq!(s.updated_ms, NOW_MS);
        Ok(())
    }

    #[test]
    fn duplicates_by_id_and_by_item_and_time() -> Result<()> {
        let (s, _) = merge(
            None,
            &upd(vec![ev("a", 10, Some("e1")), ev("b", 20, None)]),
            policy(10),
            NOW_MS,
        )?;
        let (s, a) = merge(
            Some(s),
            &upd(vec![
                ev("zz", 99, Some("e1")), // same id: duplicate whatever else
                ev("b", 20, None),        // same item and time
                ev("c", 30, None),
                ev("c", 30, None), // repeat inside the update
            ]),
            policy(10),
            NOW_MS,
        )?;
        assert_eq!((a.stored, a.duplicates, a.dropped_too_old), (1, 3, 0));
        assert_eq!(s.events.len(), 3);
        Ok(())
    }

    #[test]
    fn window_evicts_oldest_and_drops_events_older_than_it() -> Result<()> {
        let (s, a) = merge(
            None,
            &upd(vec![
                ev("a", 10, None),
                ev("b", 20, None),
                ev("c", 30, None),
            ]),
            policy(2),
            NOW_MS,
        )?;
        assert_eq!((a.stored, a.dropped_too_old), (3, 0)); // a was evicted
        assert_eq!(items(&s), vec![("b".into(), 20), ("c".into(), 30)]);
        let (s, a) = merge(
            Some(s),
            &upd(vec![
                ev("old", 5, None),
                ev("tie", 20, None),
                ev("new", 25, None),
            ]),
            policy(2),
            NOW_MS,
        )?;
        assert_eq!((a.stored, a.dropped_too_old), (1, 2));
        assert_eq!(items(&s), vec![("new".into(), 25), ("c".into(), 30)]);
        Ok(())
    }

    #[test]
    fn future_timestamps_and_nan_ratings_refuse_the_whole_user() {
        let mut u = upd(vec![ev("a", 10, None), ev("b", 1_700_000_000 + 301, None)]);
        match merge(None, &u, policy(10), NOW_MS) {
            Err(Error::Invalid { message }) => {
                assert!(
                    message.contains("\"u1\"") && message.contains("event 1"),
                    "{message}"
                )
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        u.events[1].timestamp = 1_700_000_000 + 300; // exactly the skew: fine
        assert!(merge(None, &u, policy(10), NOW_MS).is_ok());
        u.events[0].rating = Some(f32::NAN);
        match merge(None, &u, policy(10), NOW_MS) {
            Err(Error::Invalid { message }) => assert!(message.contains("event 0"), "{message}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn fields_and_versions() -> Result<()> {
        let mut u = upd(vec![]);
        u.fields = vec![
            FieldUpdate::Set("age".into(), FieldValue::Number(34.0)),
            FieldUpdate::Set("job".into(), FieldValue::Categorical("x".into())),
            FieldUpdate::Clear("job".into()),
        ];
        let (s, a) = merge(None, &u, policy(10), NOW_MS)?;
        assert_eq!(a.version, 1);
        assert_eq!(s.fields.len(), 1);
        // The same Set again changes nothing: same version, same state.
        u.fields.truncate(1);
        let (s2, a2) = merge(Some(s.clone()), &u, policy(10), NOW_MS + 5)?;
        assert_eq!((a2.version, &s2), (1, &s));
        // An empty update of an unknown user stores nothing.
        let (_, a3) = merge(None, &upd(vec![]), policy(10), NOW_MS)?;
        assert_eq!(a3, Applied::default());
        Ok(())
    }

    #[test]
    fn a_tombstone_starts_fresh_and_the_version_keeps_growing() -> Result<()> {
        let tomb = UserState {
            user_id: "u1".into(),
            version: 7,
            erased: true,
            updated_ms: 1,
            ..UserState::default()
        };
        // Nothing to change: the tombstone stays.
        let (s, a) = merge(Some(tomb.clone()), &upd(vec![]), policy(10), NOW_MS)?;
        assert_eq!((s.clone(), a.version), (tomb.clone(), 7));
        let (s, a) = merge(Some(tomb), &upd(vec![ev("a", 1, None)]), policy(10), NOW_MS)?;
        assert_eq!((a.version, s.erased, s.events.len()), (8, false, 1));
        Ok(())
    }

    // ---- properties ----

    fn arb_event() -> impl Strategy<Value = StoredEvent> {
        // A client id identifies one event: it is a function of (item, ts)
        // when present, as a real client's would be.
        (
            0u8..6,
            0i64..40,
            any::<bool>(),
            proptest::option::of(0u8..5),
        )
            .prop_map(|(item, ts, with_id, rating)| StoredEvent {
                item: format!("i{item}"),
                timestamp: ts,
                rating: rating.map(f32::from),
                event_id: with_id.then(|| format!("e{item}-{ts}")),
            })
    }

    /// A state built under the same window size, maybe erased, maybe absent.
    fn arb_state(retain: usize) -> impl Strategy<Value = Option<UserState>> {
        (
            proptest::collection::vec(arb_event(), 0..20),
            0u8..3,
            1u64..4,
        )
            .prop_map(move |(events, kind, version)| match kind {
                0 => None,
                1 => Some(UserState {
                    user_id: "u1".into(),
                    version,
                    erased: true,
                    ..UserState::default()
                }),
                _ => merge(None, &upd(events), policy(retain), NOW_MS)
                    .ok()
                    .map(|(s, _)| s),
            })
    }

    fn arb_case(
        max_retain: usize,
    ) -> impl Strategy<Value = (Option<UserState>, Vec<StoredEvent>, usize)> {
        (0..max_retain).prop_flat_map(|retain| {
            (
                arb_state(retain),
                proptest::collection::vec(arb_event(), 0..30),
                Just(retain),
            )
        })
    }

    fn no_duplicates(s: &UserState) -> bool {
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        s.events.iter().all(|e| {
            let id_ok = e.event_id.as_ref().is_none_or(|id| ids.insert(id.clone()));
            // An id-less event never repeats the (item, ts) of any earlier one.
            let key_ok = keys.insert((e.item.clone(), e.timestamp)) || e.event_id.is_some();
            id_ok && key_ok
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn order_size_and_no_duplicates((start, events, retain) in arb_case(10)) {
            let before = start.as_ref().map_or(0, |s| s.version);
            let n = events.len() as u32;
            let (s, a) = merge(start, &upd(events), policy(retain), NOW_MS)?;
            prop_assert!(in_time_order(&s.events));
            prop_assert!(s.events.len() <= retain);
            prop_assert!(no_duplicates(&s));
            prop_assert_eq!(a.stored + a.duplicates + a.dropped_too_old, n);
            prop_assert!(a.version >= before);
            prop_assert_eq!(a.version > before, a.stored > 0);
            prop_assert_eq!(a.version, s.version);
        }

        #[test]
        fn reapplying_the_same_update_changes_nothing((start, events, retain) in arb_case(10)) {
            let u = upd(events);
            let (s1, a1) = merge(start, &u, policy(retain), NOW_MS)?;
            let (s2, a2) = merge(Some(s1.clone()), &u, policy(retain), NOW_MS + 1)?;
            prop_assert_eq!(a2.stored, 0);
            prop_assert_eq!(a2.version, a1.version);
            prop_assert_eq!(&s2, &s1);
            // Every event still in the window is reported a duplicate.
            let retained = u.events.iter().filter(|e| s1.events.contains(e)).count() as u32;
            prop_assert!(a2.duplicates >= retained);
        }

        #[test]
        fn splitting_an_update_stores_the_same_events(
            (start, events, retain) in arb_case(10),
            cut in 0usize..30,
        ) {
            let cut = cut.min(events.len());
            let whole = merge(start.clone(), &upd(events.clone()), policy(retain), NOW_MS)?.0;
            let (first, second) = events.split_at(cut);
            let half = merge(start, &upd(first.to_vec()), policy(retain), NOW_MS)?.0;
            let split = merge(Some(half), &upd(second.to_vec()), policy(retain), NOW_MS)?.0;
            prop_assert_eq!(whole.events, split.events);
        }
    }
}
