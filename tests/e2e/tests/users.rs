//! Live user state over real sockets against the real `profiled` binary,
//! with its default embedded store: Track and TrackStream, GetUser,
//! DeleteUser, user ids resolving to live state in Embed, Search and
//! Explain (with request-time context), bad input, and every acknowledged
//! event surviving `kill -9` of the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use profiled_e2e::{
    Server, assert_status, categorical, clear_field, embed_req, event, event_with_id, input_by_id,
    number, search_user, set_field, synth_repo, track_req, user_features, user_track,
};
use profiled_proto::v1 as pb;
use tonic::Code;

const T0: i64 = 1_700_000_000;

fn embed_ids(ids: &[&str]) -> pb::EmbedRequest {
    pb::EmbedRequest {
        users: ids.iter().map(|id| input_by_id(id)).collect(),
        ..Default::default()
    }
}

fn values(u: &pb::EmbeddedUser) -> Vec<f32> {
    u.vector.as_ref().expect("a vector").values.clone()
}

/// The features a tracked user's state stands for, as a client would send
/// them (for comparing by-id profiles with by-features ones).
fn as_features(
    occupation: &str,
    age: f64,
    events: &[(&str, i64, Option<f32>)],
) -> pb::UserFeatures {
    let mut f = user_features("", occupation, age);
    f.events = events.iter().map(|(i, t, r)| event(i, *t, *r)).collect();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_events_change_the_next_profile() {
    let (_tmp, repo) = synth_repo(7).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();

    // A new user: fields and two events.
    let r = c
        .track(track_req(vec![user_track(
            "alice",
            vec![event("3", T0, Some(4.0)), event("7", T0 + 10, None)],
            vec![
                set_field("occupation", categorical("engineer")),
                set_field("age", number(34.0)),
            ],
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.users.len(), 1);
    let a = &r.users[0];
    assert_eq!((a.stored, a.duplicates, a.dropped_too_old), (2, 0, 0));
    assert!(a.error.is_none());
    let v1 = a.state_version;
    assert!(v1 >= 1);

    // By id: computed from the live state, equal to the same features sent
    // by the client; then a cache hit.
    let by_id = c.embed(embed_ids(&["alice"])).await.unwrap().into_inner();
    let u = &by_id.users[0];
    assert_eq!(u.source, pb::ProfileSource::UserState as i32);
    assert_eq!(u.user_id, "alice");
    assert!(!u.cache_hit);
    let first = values(u);
    let by_features = c
        .embed(embed_req(vec![as_features(
            "engineer",
            34.0,
            &[("3", T0, Some(4.0)), ("7", T0 + 10, None)],
        )]))
        .await
        .unwrap()
        .into_inner();
    // The by-id call filled the cache with the same key the features use.
    assert!(by_features.users[0].cache_hit);
    assert_eq!(values(&by_features.users[0]), first);
    let again = c.embed(embed_ids(&["alice"])).await.unwrap().into_inner();
    assert!(again.users[0].cache_hit);
    assert_eq!(again.users[0].source, pb::ProfileSource::UserState as i32);
    assert_eq!(values(&again.users[0]), first);

    // A new event changes the very next profile; a repeated one does not.
    let r = c
        .track(track_req(vec![user_track(
            "alice",
            vec![event("11", T0 + 20, Some(5.0)), event("7", T0 + 10, None)],
            vec![],
        )]))
        .await
        .unwrap()
        .into_inner();
    let a = &r.users[0];
    assert_eq!((a.stored, a.duplicates), (1, 1));
    assert!(a.state_version > v1);
    let next = c.embed(embed_ids(&["alice"])).await.unwrap().into_inner();
    assert_eq!(next.users[0].source, pb::ProfileSource::UserState as i32);
    assert!(!next.users[0].cache_hit);
    let changed = values(&next.users[0]);
    assert_ne!(changed, first);
    let expect = c
        .embed(embed_req(vec![as_features(
            "engineer",
            34.0,
            &[
                ("3", T0, Some(4.0)),
                ("7", T0 + 10, None),
                ("11", T0 + 20, Some(5.0)),
            ],
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values(&expect.users[0]), changed);

    // Request-time context: a field replaced and an event added for this
    // call only (never stored).
    let mut ctx = user_features("", "writer", 34.0);
    ctx.fields.remove("age");
    ctx.events = vec![event("13", T0 + 30, None)];
    let with_ctx = c
        .embed(pb::EmbedRequest {
            users: vec![pb::UserInput {
                source: Some(pb::user_input::Source::UserId("alice".into())),
                context: Some(ctx.clone()),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let merged = c
        .embed(embed_req(vec![as_features(
            "writer",
            34.0,
            &[
                ("3", T0, Some(4.0)),
                ("7", T0 + 10, None),
                ("11", T0 + 20, Some(5.0)),
                ("13", T0 + 30, None),
            ],
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values(&with_ctx.users[0]), values(&merged.users[0]));
    let stored = c
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.total_events, 3, "the context was not stored");
    assert_eq!(
        stored.fields.get("occupation"),
        Some(&categorical("engineer"))
    );
    // A context that names a user of its own is refused.
    ctx.user_id = "mallory".into();
    let r = c
        .embed(pb::EmbedRequest {
            users: vec![pb::UserInput {
                source: Some(pb::user_input::Source::UserId("alice".into())),
                context: Some(ctx),
            }],
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, "users[0].context.user_id");

    // Clearing a field: the model sees "missing", as when features omit it.
    c.track(track_req(vec![user_track(
        "alice",
        vec![],
        vec![clear_field("age")],
    )]))
    .await
    .unwrap();
    let cleared = c.embed(embed_ids(&["alice"])).await.unwrap().into_inner();
    let mut no_age = as_features(
        "engineer",
        0.0,
        &[
            ("3", T0, Some(4.0)),
            ("7", T0 + 10, None),
            ("11", T0 + 20, Some(5.0)),
        ],
    );
    no_age.fields.remove("age");
    let expect = c.embed(embed_req(vec![no_age])).await.unwrap().into_inner();
    assert_eq!(values(&cleared.users[0]), values(&expect.users[0]));

    // Search by the tracked user: seen items are the tracked ones.
    let mut s = search_user("alice", pb::TargetIndex::Items, 50);
    s.filter = Some(pb::Filter {
        exclude_seen_items: true,
        ..Default::default()
    });
    let hits = c.search(s).await.unwrap().into_inner();
    let ids: BTreeSet<&str> = hits.hits.iter().map(|h| h.id.as_str()).collect();
    for seen in ["3", "7", "11"] {
        assert!(!ids.contains(seen), "seen item {seen} returned: {ids:?}");
    }
    assert!(!ids.is_empty());

    // Explain by the tracked user's id explains the live profile.
    let ex = c
        .explain(pb::ExplainRequest {
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let items: BTreeSet<&str> = ex
        .token_table
        .iter()
        .filter(|t| !t.item_id.is_empty())
        .map(|t| t.item_id.as_str())
        .collect();
    assert_eq!(
        items,
        BTreeSet::from(["3", "7", "11"]),
        "the live state's events"
    );
    let r = c
        .explain(pb::ExplainRequest {
            user_id: "u3".into(),
            ..Default::default()
        })
        .await;
    assert_status(r, Code::NotFound, "has no live state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_pages_erasure_and_bad_input() {
    let (_tmp, repo) = synth_repo(8).unwrap();
    let server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__STATE__RETAIN_EVENTS", "12"),
            ("PROFILED__LIMITS__MAX_TRACK_USERS_PER_CALL", "4"),
            ("PROFILED__LIMITS__MAX_TRACK_EVENTS_PER_CALL", "40"),
            ("PROFILED__LIMITS__MAX_USER_ID_BYTES", "16"),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut c = server.client().await.unwrap();

    // 12 events fill the window (the synthetic model reads 12); an older
    // one is then dropped and counted; ids make retries idempotent.
    let events: Vec<_> = (0..12)
        .map(|k| event_with_id(&format!("{}", k + 1), T0 + 100 + k, None, &format!("e{k}")))
        .collect();
    let r = c
        .track(track_req(vec![user_track("bob", events.clone(), vec![])]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.users[0].stored, 12);
    let retry = c
        .track(track_req(vec![user_track("bob", events, vec![])]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((retry.users[0].stored, retry.users[0].duplicates), (0, 12));
    assert_eq!(retry.users[0].state_version, r.users[0].state_version);
    let old = c
        .track(track_req(vec![user_track(
            "bob",
            vec![event("20", T0, None)],
            vec![],
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((old.users[0].stored, old.users[0].dropped_too_old), (0, 1));

    // GetUser pages newest first; a token of a changed state is ABORTED.
    let p1 = c
        .get_user(pb::GetUserRequest {
            user_id: "bob".into(),
            page_size: 5,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.total_events, 12);
    let ts: Vec<i64> = p1.events.iter().map(|e| e.timestamp).collect();
    assert_eq!(ts, vec![T0 + 111, T0 + 110, T0 + 109, T0 + 108, T0 + 107]);
    assert_eq!(p1.events[0].event_id, "e11");
    let p2 = c
        .get_user(pb::GetUserRequest {
            user_id: "bob".into(),
            page_size: 5,
            page_token: p1.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.events[0].timestamp, T0 + 106);
    let p3 = c
        .get_user(pb::GetUserRequest {
            user_id: "bob".into(),
            page_size: 5,
            page_token: p2.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p3.events.len(), 2);
    assert!(p3.next_page_token.is_empty());
    c.track(track_req(vec![user_track(
        "bob",
        vec![event("30", T0 + 200, None)],
        vec![],
    )]))
    .await
    .unwrap();
    let r = c
        .get_user(pb::GetUserRequest {
            user_id: "bob".into(),
            page_size: 5,
            page_token: p1.next_page_token,
        })
        .await;
    assert_status(r, Code::Aborted, "changed since that page");

    // Erasure: by id nothing comes back, the users index snapshot of a
    // tracked user included; a later Track starts afresh.
    let by_index = c.embed(embed_ids(&["u3"])).await.unwrap().into_inner();
    assert_eq!(
        by_index.users[0].source,
        pb::ProfileSource::UsersIndex as i32
    );
    c.track(track_req(vec![user_track(
        "u3",
        vec![event("5", T0, None)],
        vec![],
    )]))
    .await
    .unwrap();
    let live = c.embed(embed_ids(&["u3"])).await.unwrap().into_inner();
    assert_eq!(live.users[0].source, pb::ProfileSource::UserState as i32);
    for id in ["bob", "u3"] {
        let d = c
            .delete_user(pb::DeleteUserRequest { user_id: id.into() })
            .await
            .unwrap()
            .into_inner();
        assert!(d.existed);
        assert_status(c.embed(embed_ids(&[id])).await, Code::NotFound, "erased");
        assert_status(
            c.search(search_user(id, pb::TargetIndex::Items, 5)).await,
            Code::NotFound,
            "erased",
        );
        assert_status(
            c.get_user(pb::GetUserRequest {
                user_id: id.into(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
            "no live state",
        );
    }
    let d = c
        .delete_user(pb::DeleteUserRequest {
            user_id: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.existed);
    let fresh = c
        .track(track_req(vec![user_track(
            "bob",
            vec![event("2", T0, None)],
            vec![],
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.users[0].stored, 1);
    let page = c
        .get_user(pb::GetUserRequest {
            user_id: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.total_events, 1, "nothing from before the erasure");

    // Bad input: each names the problem, nothing is stored.
    let cases: Vec<(pb::TrackRequest, Code, &str)> = vec![
        (
            track_req(vec![]),
            Code::InvalidArgument,
            "users: at least one",
        ),
        (
            track_req(vec![user_track("", vec![event("1", T0, None)], vec![])]),
            Code::InvalidArgument,
            "users[0].user_id: a user id is required",
        ),
        (
            track_req(vec![user_track(
                "a-very-long-user-id-indeed",
                vec![event("1", T0, None)],
                vec![],
            )]),
            Code::InvalidArgument,
            "limits.max_user_id_bytes = 16",
        ),
        (
            track_req(vec![user_track(
                "carol",
                vec![],
                vec![set_field("shoe_size", number(9.0))],
            )]),
            Code::InvalidArgument,
            "users[0].fields[0]",
        ),
        (
            track_req(vec![user_track(
                "carol",
                vec![],
                vec![set_field(
                    "age",
                    pb::FieldValue {
                        kind: Some(pb::field_value::Kind::Tags(pb::TagList::default())),
                    },
                )],
            )]),
            Code::InvalidArgument,
            "expected a number, got tags",
        ),
        (
            track_req(vec![user_track(
                "carol",
                vec![event("1", T0, Some(f32::NAN))],
                vec![],
            )]),
            Code::InvalidArgument,
            "users[0].events[0].rating",
        ),
        (
            track_req(vec![user_track(
                "carol",
                vec![event("1", 4_000_000_000, None)],
                vec![],
            )]),
            Code::InvalidArgument,
            "users[0].events[0].timestamp",
        ),
        (
            track_req(
                (0..5)
                    .map(|k| user_track(&format!("c{k}"), vec![event("1", T0, None)], vec![]))
                    .collect(),
            ),
            Code::InvalidArgument,
            "limits.max_track_users_per_call = 4",
        ),
        (
            track_req(vec![user_track(
                "carol",
                (0..41).map(|k| event("1", T0 + k, None)).collect(),
                vec![],
            )]),
            Code::InvalidArgument,
            "limits.max_track_events_per_call = 40",
        ),
        (
            track_req(vec![user_track("carol", vec![], vec![])]),
            Code::InvalidArgument,
            "nothing to store",
        ),
    ];
    for (req, code, needle) in cases {
        assert_status(c.track(req).await, code, needle);
    }
    assert_status(
        c.get_user(pb::GetUserRequest {
            user_id: "carol".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "no live state",
    );

    // allow_partial: the bad user answers in place, the others are stored;
    // the same user twice is applied in order.
    let mut req = track_req(vec![
        user_track("dave", vec![], vec![set_field("age", number(30.0))]),
        user_track("erin", vec![event("1", 4_000_000_000, None)], vec![]),
        user_track("dave", vec![], vec![set_field("age", number(31.0))]),
    ]);
    req.allow_partial = true;
    let r = c.track(req).await.unwrap().into_inner();
    assert!(r.users[0].error.is_none() && r.users[2].error.is_none());
    assert!(r.users[2].state_version > r.users[0].state_version);
    let e = r.users[1].error.as_ref().expect("erin refused");
    assert_eq!(e.code, Code::InvalidArgument as i32);
    assert!(
        e.message.contains("users[1].events[0].timestamp"),
        "{}",
        e.message
    );
    let dave = c
        .get_user(pb::GetUserRequest {
            user_id: "dave".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dave.fields.get("age"), Some(&number(31.0)));

    // TrackStream: one answer per batch, in order; a bad batch answers an
    // error and the stream goes on.
    let batches = vec![
        pb::TrackRequest {
            request_id: "b1".into(),
            ..track_req(vec![user_track(
                "frank",
                vec![event("1", T0, None)],
                vec![],
            )])
        },
        pb::TrackRequest {
            request_id: "b2".into(),
            ..track_req(vec![user_track("", vec![event("1", T0, None)], vec![])])
        },
        pb::TrackRequest {
            request_id: "b3".into(),
            ..track_req(vec![user_track(
                "frank",
                vec![event("2", T0 + 1, None)],
                vec![],
            )])
        },
    ];
    let mut answers = c
        .track_stream(futures::stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    let ids: Vec<&str> = got.iter().map(|a| a.request_id.as_str()).collect();
    assert_eq!(ids, ["b1", "b2", "b3"]);
    assert!(matches!(
        got[1].outcome,
        Some(pb::track_stream_response::Outcome::Error(ref e)) if e.code == Code::InvalidArgument as i32
    ));
    match &got[2].outcome {
        Some(pb::track_stream_response::Outcome::Response(r)) => assert_eq!(r.users[0].stored, 1),
        other => panic!("b3: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_state_store_track_is_failed_precondition() {
    let (_tmp, repo) = synth_repo(9).unwrap();
    let server = Server::start_serving(
        &repo,
        &[("PROFILED__STATE__BACKEND", "off")],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut c = server.client().await.unwrap();
    assert_status(
        c.track(track_req(vec![user_track(
            "a",
            vec![event("1", T0, None)],
            vec![],
        )]))
        .await,
        Code::FailedPrecondition,
        "state.backend",
    );
    // Ids still resolve to the users index.
    let r = c.embed(embed_ids(&["u1"])).await.unwrap().into_inner();
    assert_eq!(r.users[0].source, pb::ProfileSource::UsersIndex as i32);
}

/// Every acknowledged event is there after `kill -9` of the server in the
/// middle of ingestion, and a restart on the same state directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let (tmp, repo) = synth_repo(10).unwrap();
    let dir = tmp.path().join("state-kill");
    let dir_s = dir.to_str().unwrap().to_string();
    let env = [("PROFILED__STATE__EMBEDDED__DIR", dir_s.as_str())];
    let mut acked: std::collections::BTreeMap<String, usize> = Default::default();
    for round in 0..3u64 {
        let mut server = Server::start_serving(&repo, &env, Duration::from_secs(30))
            .await
            .unwrap();
        let ch = server.channel().await.unwrap();
        // Four writers, each its own users, until the server is killed.
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let mut c = pb::profile_service_client::ProfileServiceClient::new(ch.clone());
            tasks.push(tokio::spawn(async move {
                let mut ok: Vec<(String, usize)> = Vec::new();
                for k in 0..10_000u64 {
                    let user = format!("w{w}-u{}", k % 7);
                    let events = (0..5)
                        .map(|j| {
                            event_with_id(
                                &format!("{}", 1 + (k + j) % 30),
                                T0 + (round * 100_000 + k * 5 + j) as i64,
                                None,
                                &format!("r{round}-w{w}-k{k}-j{j}"),
                            )
                        })
                        .collect();
                    match c
                        .track(track_req(vec![user_track(&user, events, vec![])]))
                        .await
                    {
                        Ok(r) => ok.push((user, r.into_inner().users[0].stored as usize)),
                        Err(_) => break,
                    }
                }
                ok
            }));
        }
        tokio::time::sleep(Duration::from_millis(400 + 300 * round)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for t in tasks {
            for (user, n) in t.await.unwrap() {
                *acked.entry(user).or_default() += n;
            }
        }
    }
    assert!(
        acked.values().sum::<usize>() > 0,
        "nothing was acknowledged"
    );
    let server = Server::start_serving(&repo, &env, Duration::from_secs(30))
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();
    for (user, n) in &acked {
        let page = c
            .get_user(pb::GetUserRequest {
                user_id: user.clone(),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // Retained events: every acknowledged one, up to the window.
        let want = (*n).min(200);
        assert!(
            page.total_events as usize >= want,
            "{user}: {} events stored, {n} acknowledged",
            page.total_events
        );
    }
}

/// A full disk under the embedded store: Track answers RESOURCE_EXHAUSTED
/// naming the store, nothing of the refused call is stored, every
/// acknowledged event is, feature-based calls keep working, and Track works
/// again once the disk has room — all without a restart. Needs root (mount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_resource_exhausted_and_half_writes_nothing() {
    let fs = profiled_state::testing::Tmpfs::mount("2m").unwrap();
    let (_tmp, repo) = synth_repo(12).unwrap();
    let dir = fs.path().join("state");
    let dir_s = dir.to_str().unwrap().to_string();
    let env = [("PROFILED__STATE__EMBEDDED__DIR", dir_s.as_str())];
    let server = Server::start_serving(&repo, &env, Duration::from_secs(30))
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();
    let long = "x".repeat(120);
    let track_user = |u: usize| {
        let events = (0..20)
            .map(|e| {
                event_with_id(
                    &format!("{}", 1 + e % 30),
                    T0 + e as i64,
                    None,
                    &format!("{u}-{e}-{long}"),
                )
            })
            .collect();
        track_req(vec![user_track(&format!("full{u}"), events, vec![])])
    };
    let mut acked = Vec::new();
    let mut refused = None;
    for u in 0..20_000 {
        match c.track(track_user(u)).await {
            Ok(r) => {
                assert_eq!(r.into_inner().users[0].stored, 20);
                acked.push(u);
            }
            Err(status) => {
                refused = Some((u, status));
                break;
            }
        }
    }
    let (failed, status) = refused.expect("a 2 MiB disk never filled up");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("embedded:") && status.message().contains("full"),
        "{}",
        status.message()
    );
    assert!(!acked.is_empty());
    // Profiles from features do not need the store.
    let r = c
        .embed(embed_req(vec![user_features("", "engineer", 30.0)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.users.len(), 1);

    // Room again: the refused user has nothing, every acknowledged one has
    // all its events, and the same server stores again.
    fs.resize("64m").unwrap();
    let mut found = None;
    for _ in 0..200 {
        match c
            .get_user(pb::GetUserRequest {
                user_id: format!("full{failed}"),
                ..Default::default()
            })
            .await
        {
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            other => {
                found = Some(other);
                break;
            }
        }
    }
    match found.expect("the store did not come back") {
        Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
        Ok(r) => panic!("the refused call left state: {:?}", r.into_inner()),
    }
    for u in &acked {
        let page = c
            .get_user(pb::GetUserRequest {
                user_id: format!("full{u}"),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_events, 20, "full{u}");
    }
    let r = c.track(track_user(failed)).await.unwrap().into_inner();
    assert_eq!(r.users[0].stored, 20);
    drop(c);
    drop(server);
}
