//! The live users index (issue 17) through the real `profiled` binary and
//! its default embedded state store: a tracked user's lookalike rank for a
//! query built from their new behaviour rises, a new user becomes findable
//! (also through a filter on the attributes the live index keeps), an
//! erased user — new or from the users index file — is gone at once, and
//! the refresher's metrics are exported.
//!
//! The refresh is asynchronous: the test polls (up to 30 s, for a loaded
//! machine) rather than asserting the `index.live_refresh_ms` bound, whose
//! real value is the `profiled_live_index_lag_seconds` gauge (and
//! `live-index-report` measures the index's part).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use profiled_e2e::{
    Server, categorical, condition, event, free_port, number, sample, scrape_until, set_field,
    track_req, user_features, user_track,
};
use profiled_proto::v1 as pb;

const T0: i64 = 1_700_000_000;

/// A Search of the users index for the profile of `f`, `k` hits (the query
/// is anonymous: nobody is excluded).
fn users_like(f: pb::UserFeatures, k: u32, filter: Option<pb::Filter>) -> pb::SearchRequest {
    pb::SearchRequest {
        query: Some(pb::search_request::Query::Features(f)),
        target: pb::TargetIndex::Users as i32,
        k,
        exact: true,
        filter,
        ..Default::default()
    }
}

fn behaviour(items: &[&str]) -> (pb::UserFeatures, Vec<pb::BehaviourEvent>) {
    let events: Vec<pb::BehaviourEvent> = items
        .iter()
        .enumerate()
        .map(|(i, it)| event(it, T0 + 10 * i as i64, Some(4.0)))
        .collect();
    let mut f = user_features("", "artist", 29.0);
    f.events = events.clone();
    (f, events)
}

async fn ids(c: &mut profiled_e2e::ProfileClient, req: pb::SearchRequest) -> Vec<(String, f32)> {
    c.search(req)
        .await
        .unwrap()
        .into_inner()
        .hits
        .into_iter()
        .map(|h| (h.id, h.score))
        .collect()
}

/// Polls `req` until `done` holds for its hits (30 s at most).
async fn until(
    c: &mut profiled_e2e::ProfileClient,
    req: &pb::SearchRequest,
    done: impl Fn(&[(String, f32)]) -> bool,
) -> (Vec<(String, f32)>, Duration) {
    let t0 = Instant::now();
    loop {
        let hits = ids(c, req.clone()).await;
        if done(&hits) || t0.elapsed() > Duration::from_secs(30) {
            return (hits, t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookalikes_follow_tracked_users_new_users_and_erasure() {
    let (_tmp, repo) = profiled_e2e::synth_repo(17).unwrap();
    let metrics = free_port().unwrap();
    let server = Server::start_with_metrics(
        &repo,
        &[("PROFILED__INDEX__LIVE_REFRESH_MS", "300")],
        &metrics,
    )
    .unwrap();
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    let mut c = server.client().await.unwrap();

    // A behaviour nobody in the users index has; the user who looks least
    // like it now is the one who takes it up.
    let (query, events) = behaviour(&["3", "7", "11", "15", "19", "23"]);
    let before = ids(&mut c, users_like(query.clone(), 20, None)).await;
    assert_eq!(before.len(), 20, "the synthetic users index holds 20 users");
    let (mover, _) = before.last().cloned().unwrap();
    let rank_before = before.len() - 1;
    c.track(track_req(vec![user_track(
        &mover,
        events.clone(),
        vec![
            set_field("occupation", categorical("artist")),
            set_field("age", number(29.0)),
        ],
    )]))
    .await
    .unwrap();
    let req = users_like(query.clone(), 20, None);
    let (after, waited) = until(&mut c, &req, |h| h.first().is_some_and(|x| x.0 == mover)).await;
    let rank_after = after.iter().position(|x| x.0 == mover).unwrap();
    assert!(
        rank_after < rank_before,
        "{mover} stayed at rank {rank_after} (was {rank_before}) after {waited:?}"
    );
    // Its row is now the profile of exactly that behaviour.
    assert_eq!(rank_after, 0, "{after:?}");
    assert!(after[0].1 > 0.999, "score {}", after[0].1);
    assert_eq!(after.len(), 20, "the tracked user replaced their row");

    // A new user is findable, by profile and by a live attribute.
    let (query2, events2) = behaviour(&["2", "4", "6", "8"]);
    c.track(track_req(vec![user_track(
        "newbie",
        events2,
        vec![
            set_field("occupation", categorical("artist")),
            set_field("age", number(29.0)),
        ],
    )]))
    .await
    .unwrap();
    let req2 = users_like(query2.clone(), 3, None);
    let (found, waited) = until(&mut c, &req2, |h| {
        h.first().is_some_and(|x| x.0 == "newbie")
    })
    .await;
    assert_eq!(
        found[0].0, "newbie",
        "new user not found after {waited:?}: {found:?}"
    );
    let by_seen = pb::Filter {
        conditions: vec![condition("seen_items", pb::AttributeOp::In, &["6"])],
        ..Default::default()
    };
    let hits = ids(&mut c, users_like(query2.clone(), 50, Some(by_seen))).await;
    assert!(hits.iter().any(|h| h.0 == "newbie"), "{hits:?}");
    let by_bucket = pb::Filter {
        conditions: vec![condition("age_bucket", pb::AttributeOp::Equals, &["25-34"])],
        ..Default::default()
    };
    let hits = ids(&mut c, users_like(query2.clone(), 50, Some(by_bucket))).await;
    assert!(hits.iter().any(|h| h.0 == "newbie"), "{hits:?}");
    assert!(hits.iter().any(|h| h.0 == mover), "{hits:?}");

    // Erased users are gone at once: the new one and one of the file.
    for id in ["newbie", mover.as_str()] {
        c.delete_user(pb::DeleteUserRequest { user_id: id.into() })
            .await
            .unwrap();
    }
    for q in [query.clone(), query2.clone()] {
        let hits = ids(&mut c, users_like(q, 50, None)).await;
        assert!(
            hits.iter().all(|h| h.0 != "newbie" && h.0 != mover),
            "an erased user is still found: {hits:?}"
        );
    }
    // ... and stay gone after the next refresh.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let hits = ids(&mut c, users_like(query, 50, None)).await;
    assert!(
        hits.iter().all(|h| h.0 != "newbie" && h.0 != mover),
        "{hits:?}"
    );
    assert_eq!(hits.len(), 19);

    // The refresher's metrics.
    let text = scrape_until(&metrics, 50, |t| {
        t.contains("profiled_live_index_rows") && t.contains("profiled_live_index_lag_seconds")
    })
    .await
    .unwrap();
    let delta = sample(
        &text,
        "profiled_live_index_rows",
        &[("model", "synth"), ("kind", "delta")],
    );
    assert!(delta.is_some_and(|d| d >= 2.0), "delta rows {delta:?}");
    let live = sample(
        &text,
        "profiled_live_index_rows",
        &[("model", "synth"), ("kind", "live")],
    );
    assert_eq!(live, Some(19.0));
    let lag = sample(&text, "profiled_live_index_lag_seconds", &[]);
    assert!(lag.is_some_and(|l| l >= 0.0), "lag {lag:?}");
}
