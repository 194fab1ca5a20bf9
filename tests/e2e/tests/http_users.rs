//! Live user state over the HTTP/JSON edge, against the real binary over
//! real sockets, beside the gRPC port of the same server (one state store):
//! Track (`POST /v1/track`), GetUser (`GET /v1/users/{id}`, paged),
//! DeleteUser (`DELETE /v1/users/{id}`), user ids with request-time
//! context in Embed, Search and Explain — each compared with the gRPC
//! answer to the same request — and the gRPC cases of `users.rs` for bad
//! input, tokens, deadlines and a server without a store, with the same
//! messages and the HTTP status of the same code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use profiled_e2e::{
    HttpAnswer, Server, assert_http_error, categorical, event, event_with_id, free_port,
    http_request, input_by_id, number, post_json, sample, scrape_until, set_field, synth_repo,
    track_req, user_features, user_track, with_bearer,
};
use profiled_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;

const T0: i64 = 1_700_000_000;

/// A server over synthetic model `synth` with the HTTP edge on a free port
/// (its own embedded state store), plus `env`.
async fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, Server, String) {
    let (tmp, repo) = synth_repo(21).unwrap();
    let mut all = vec![
        ("PROFILED__HTTP__ENABLED", "true"),
        ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
    ];
    all.extend_from_slice(env);
    let server = Server::start_serving(&repo, &all, Duration::from_secs(60))
        .await
        .unwrap();
    let addr = server.http_addr().unwrap();
    (tmp, server, addr)
}

fn get(addr: &str, path: &str) -> HttpAnswer {
    http_request(addr, "GET", path, &[], None).unwrap()
}

fn delete(addr: &str, path: &str) -> HttpAnswer {
    http_request(addr, "DELETE", path, &[], None).unwrap()
}

/// The answer's JSON, after checking it is a 200.
#[track_caller]
fn ok(a: &HttpAnswer) -> Value {
    assert_eq!(a.status, 200, "{}", a.text());
    a.json().unwrap()
}

fn vector(v: &Value) -> Vec<f32> {
    serde_json::from_value(v["vector"].clone()).unwrap()
}

fn grpc_values(u: &pb::EmbeddedUser) -> Vec<f32> {
    u.vector.as_ref().expect("a vector").values.clone()
}

/// `status` of `http` (an error answer) has the gRPC error's code, its
/// HTTP status and exactly its message.
#[track_caller]
fn same_error(http: &HttpAnswer, grpc: &tonic::Status, status: u16, code: &str) {
    assert_http_error(http, status, code, grpc.message());
    assert_eq!(
        http.json().unwrap()["message"],
        grpc.message(),
        "HTTP and gRPC messages differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_state_over_http_is_the_grpc_ports_state() {
    let (tmp, repo) = synth_repo(22).unwrap();
    let metrics = free_port().unwrap();
    let state_dir = tmp.path().join("state-http");
    let env = [
        ("PROFILED__HTTP__ENABLED", "true"),
        ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
        (
            "PROFILED__STATE__EMBEDDED__DIR",
            state_dir.to_str().unwrap(),
        ),
    ];
    let server = Server::start_with_metrics(&repo, &env, &metrics).unwrap();
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    let addr = server.http_addr().unwrap();
    let mut c = server.client().await.unwrap();

    // Track over HTTP: fields and events with ids.
    let body = json!({"users": [{"user_id": "alice",
        "events": [{"item_id": "3", "timestamp": T0, "rating": 4.0, "event_id": "a1"},
                   {"item_id": "7", "timestamp": T0 + 10, "event_id": "a2"}],
        "fields": [{"name": "occupation", "set": "engineer"}, {"name": "age", "set": 34}]}],
        "request_id": "t1"});
    let j = ok(&post_json(&addr, "/v1/track", &body, None).unwrap());
    assert_eq!(j["request_id"], "t1");
    let u = &j["users"][0];
    assert_eq!(
        (
            &u["user_id"],
            &u["stored"],
            &u["duplicates"],
            &u["dropped_too_old"]
        ),
        (&json!("alice"), &json!(2), &json!(0), &json!(0)),
        "{j}"
    );
    assert!(u.get("error").is_none(), "{j}");
    let v1 = u["state_version"].as_u64().unwrap();
    assert!(v1 >= 1);
    // The same call again: duplicates by event id, the version unchanged.
    let j = ok(&post_json(&addr, "/v1/track", &body, None).unwrap());
    assert_eq!(
        (&j["users"][0]["stored"], &j["users"][0]["duplicates"]),
        (&json!(0), &json!(2))
    );
    assert_eq!(j["users"][0]["state_version"], v1);

    // GetUser over HTTP is gRPC's GetUser of the same state.
    let g = c
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let h = ok(&get(&addr, "/v1/users/alice"));
    assert_eq!(h["user_id"], "alice");
    assert_eq!(h["state_version"], g.state_version);
    assert_eq!(h["total_events"], g.total_events);
    assert_eq!(h["updated_ms"], g.updated_ms);
    assert_eq!(h["fields"], json!({"occupation": "engineer", "age": 34.0}));
    assert_eq!(g.fields.get("occupation"), Some(&categorical("engineer")));
    assert_eq!(g.fields.get("age"), Some(&number(34.0)));
    let events: Vec<(String, i64, String)> = g
        .events
        .iter()
        .map(|e| (e.item_id.clone(), e.timestamp, e.event_id.clone()))
        .collect();
    let h_events: Vec<(String, i64, String)> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["item_id"].as_str().unwrap().to_string(),
                e["timestamp"].as_i64().unwrap(),
                e["event_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(h_events, events);
    assert_eq!(h_events[0], ("7".to_string(), T0 + 10, "a2".to_string()));
    assert_eq!(h["events"][1]["rating"], 4.0);
    assert!(h.get("next_page_token").is_none(), "{h}");

    // Embed by id: the live profile, the same vector as gRPC's; then a
    // context for this call only, the same as gRPC's with that context.
    let ge = c
        .embed(pb::EmbedRequest {
            users: vec![input_by_id("alice")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let j = ok(&post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"user_id": "alice"}]}),
        None,
    )
    .unwrap());
    assert_eq!(j["users"][0]["source"], "user_state");
    assert_eq!(j["users"][0]["user_id"], "alice");
    assert_eq!(vector(&j["users"][0]), grpc_values(&ge.users[0]));
    let mut ctx = user_features("", "writer", 0.0);
    ctx.fields.remove("age");
    ctx.events = vec![event("13", T0 + 30, None)];
    let ctx_json = json!({"fields": {"occupation": "writer"},
        "events": [{"item_id": "13", "timestamp": T0 + 30}]});
    let ge = c
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
    let j = ok(&post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"user_id": "alice", "context": ctx_json}]}),
        None,
    )
    .unwrap());
    let with_ctx = vector(&j["users"][0]);
    assert_eq!(with_ctx, grpc_values(&ge.users[0]));
    let plain = ok(&post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"user_id": "alice"}]}),
        None,
    )
    .unwrap());
    assert_ne!(
        with_ctx,
        vector(&plain["users"][0]),
        "the context changed nothing"
    );
    // The context was not stored.
    assert_eq!(ok(&get(&addr, "/v1/users/alice"))["total_events"], 2);

    // Search by the tracked user with context: unseen items exclude the
    // stored and the context's events, as on gRPC.
    let gs = c
        .search(pb::SearchRequest {
            query: Some(pb::search_request::Query::UserId("alice".into())),
            context: Some(ctx.clone()),
            k: 30,
            filter: Some(pb::Filter {
                exclude_seen_items: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let j = ok(&post_json(
        &addr,
        "/v1/search",
        &json!({"user_id": "alice", "context": ctx_json, "k": 30,
            "filter": {"exclude_seen_items": true}}),
        None,
    )
    .unwrap());
    let ids: Vec<&str> = j["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    let gids: Vec<&str> = gs.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, gids);
    assert!(!ids.is_empty());
    for seen in ["3", "7", "13"] {
        assert!(!ids.contains(&seen), "seen item {seen} returned: {ids:?}");
    }

    // Explain by id (and with context, ITEM target): the same numbers as gRPC.
    for (context, target) in [
        (None, None),
        (Some(ctx.clone()), Some(profiled_e2e::item_target("5"))),
    ] {
        let ge = c
            .explain(pb::ExplainRequest {
                user_id: "alice".into(),
                context: context.clone(),
                target,
                top_n: 6,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut body = json!({"user_id": "alice", "top_n": 6});
        if context.is_some() {
            body["context"] = ctx_json.clone();
            body["target"] = json!({"kind": "item", "item_id": "5"});
        }
        let j = ok(&post_json(&addr, "/v1/explain", &body, None).unwrap());
        assert!((j["base_score"].as_f64().unwrap() - ge.base_score).abs() < 1e-9);
        let groups = j["groups"].as_array().unwrap();
        assert_eq!(groups.len(), ge.groups.len());
        for (h, g) in groups.iter().zip(&ge.groups) {
            assert!((h["value"].as_f64().unwrap() - g.value).abs() < 1e-9);
        }
        let items: Vec<&str> = j["token_table"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["item_id"].as_str().filter(|s| !s.is_empty()))
            .collect();
        let want: &[&str] = if context.is_some() {
            &["3", "7", "13"]
        } else {
            &["3", "7"]
        };
        assert_eq!(items, want, "the live state's events (and the context's)");
    }
    // A user of the users index only: explanations need live state.
    let g = c
        .explain(pb::ExplainRequest {
            user_id: "u3".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let a = post_json(&addr, "/v1/explain", &json!({"user_id": "u3"}), None).unwrap();
    same_error(&a, &g, 404, "NOT_FOUND");
    assert!(g.message().contains("has no live state"), "{}", g.message());

    // A user tracked over gRPC is read over HTTP; pages newest first with
    // a token; a token of a changed state is ABORTED (409), as on gRPC.
    let events: Vec<_> = (0..7)
        .map(|k| event_with_id(&format!("{}", k + 1), T0 + 100 + k, None, &format!("b{k}")))
        .collect();
    c.track(track_req(vec![user_track("bob", events, vec![])]))
        .await
        .unwrap();
    let p1 = ok(&get(&addr, "/v1/users/bob?page_size=3"));
    assert_eq!(p1["total_events"], 7);
    let ts: Vec<i64> = p1["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(ts, vec![T0 + 106, T0 + 105, T0 + 104]);
    let token = p1["next_page_token"].as_str().unwrap().to_string();
    let p2 = ok(&get(
        &addr,
        &format!("/v1/users/bob?page_size=3&page_token={token}"),
    ));
    assert_eq!(p2["events"][0]["timestamp"], T0 + 103);
    let t2 = p2["next_page_token"].as_str().unwrap().to_string();
    let p3 = ok(&get(
        &addr,
        &format!("/v1/users/bob?page_size=3&page_token={t2}"),
    ));
    assert_eq!(p3["events"].as_array().unwrap().len(), 1);
    assert!(p3.get("next_page_token").is_none(), "{p3}");
    ok(&post_json(
        &addr,
        "/v1/track",
        &json!({"users": [{"user_id": "bob", "events": [{"item_id": "9", "timestamp": T0 + 200}]}]}),
        None,
    )
    .unwrap());
    let g = c
        .get_user(pb::GetUserRequest {
            user_id: "bob".into(),
            page_size: 3,
            page_token: token.clone(),
        })
        .await
        .unwrap_err();
    let a = get(
        &addr,
        &format!("/v1/users/bob?page_size=3&page_token={token}"),
    );
    same_error(&a, &g, 409, "ABORTED");
    assert!(g.message().contains("changed since that page"));

    // A user id that needs percent-encoding in the path.
    ok(&post_json(
        &addr,
        "/v1/track",
        &json!({"users": [{"user_id": "a/b c", "fields": [{"name": "age", "set": 40}]}]}),
        None,
    )
    .unwrap());
    assert_eq!(ok(&get(&addr, "/v1/users/a%2Fb%20c"))["user_id"], "a/b c");

    // DeleteUser over HTTP: erased for both ports, by id; a second delete
    // finds nothing.
    let d = ok(&delete(&addr, "/v1/users/alice"));
    assert_eq!(d, json!({"existed": true}));
    let g = c
        .embed(pb::EmbedRequest {
            users: vec![input_by_id("alice")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(g.code(), Code::NotFound);
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"user_id": "alice"}]}),
        None,
    )
    .unwrap();
    same_error(&a, &g, 404, "NOT_FOUND");
    assert!(g.message().contains("erased"), "{}", g.message());
    let g = c
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    same_error(&get(&addr, "/v1/users/alice"), &g, 404, "NOT_FOUND");
    assert_eq!(
        ok(&delete(&addr, "/v1/users/alice")),
        json!({"existed": false})
    );
    // ... and a users index user tracked then deleted is hidden too.
    ok(&post_json(
        &addr,
        "/v1/track",
        &json!({"users": [{"user_id": "u3", "events": [{"item_id": "5", "timestamp": T0}]}]}),
        None,
    )
    .unwrap());
    assert_eq!(ok(&delete(&addr, "/v1/users/u3"))["existed"], true);
    let a = post_json(&addr, "/v1/search", &json!({"user_id": "u3"}), None).unwrap();
    assert_http_error(&a, 404, "NOT_FOUND", "erased");

    // Metrics: the same operation names, labelled protocol="http"; GetUser
    // and DeleteUser name no model (as on gRPC), Track the model.
    let text = scrape_until(&metrics, 50, |t| {
        sample(
            t,
            "profiled_request_seconds_count",
            &[("protocol", "http"), ("rpc", "DeleteUser"), ("code", "OK")],
        ) == Some(3.0)
    })
    .await
    .unwrap();
    assert_eq!(
        sample(
            &text,
            "profiled_request_seconds_count",
            &[
                ("protocol", "http"),
                ("rpc", "Track"),
                ("code", "OK"),
                ("model", "synth")
            ],
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "profiled_request_seconds_count",
            &[
                ("protocol", "http"),
                ("rpc", "GetUser"),
                ("code", "Aborted"),
                ("model", "")
            ],
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "profiled_request_seconds_count",
            &[("protocol", "grpc"), ("rpc", "Track"), ("code", "OK")],
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_live_state_input_is_refused_as_on_grpc() {
    let (_tmp, server, addr) = start(&[
        ("PROFILED__LIMITS__MAX_TRACK_USERS_PER_CALL", "4"),
        ("PROFILED__LIMITS__MAX_TRACK_EVENTS_PER_CALL", "40"),
        ("PROFILED__LIMITS__MAX_USER_ID_BYTES", "16"),
        ("PROFILED__SERVER__MAX_REQUEST_BYTES", "8192"),
    ])
    .await;
    let mut c = server.client().await.unwrap();
    let ev = |item: &str, ts: i64| json!({"item_id": item, "timestamp": ts});
    let far = 4_000_000_000i64;

    // Each case: the gRPC request, the same request as JSON; both refused
    // with the same code and message (INVALID_ARGUMENT = 400).
    let cases: Vec<(&str, pb::TrackRequest, Value)> = vec![
        ("no users", track_req(vec![]), json!({"users": []})),
        (
            "empty user id",
            track_req(vec![user_track("", vec![event("1", T0, None)], vec![])]),
            json!({"users": [{"user_id": "", "events": [ev("1", T0)]}]}),
        ),
        (
            "over-long user id",
            track_req(vec![user_track(
                "a-very-long-user-id-indeed",
                vec![event("1", T0, None)],
                vec![],
            )]),
            json!({"users": [{"user_id": "a-very-long-user-id-indeed", "events": [ev("1", T0)]}]}),
        ),
        (
            "unknown field",
            track_req(vec![user_track(
                "carol",
                vec![],
                vec![set_field("shoe_size", number(9.0))],
            )]),
            json!({"users": [{"user_id": "carol", "fields": [{"name": "shoe_size", "set": 9.0}]}]}),
        ),
        (
            "wrong kind",
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
            json!({"users": [{"user_id": "carol", "fields": [{"name": "age", "set": []}]}]}),
        ),
        (
            // JSON has no NaN: a rating beyond f32 is infinite.
            "non-finite rating",
            track_req(vec![user_track(
                "carol",
                vec![event("1", T0, Some(f32::INFINITY))],
                vec![],
            )]),
            json!({"users": [{"user_id": "carol",
                "events": [{"item_id": "1", "timestamp": T0, "rating": 1e300}]}]}),
        ),
        (
            "too many users",
            track_req(
                (0..5)
                    .map(|k| user_track(&format!("c{k}"), vec![event("1", T0, None)], vec![]))
                    .collect(),
            ),
            json!({"users": (0..5).map(|k| json!({"user_id": format!("c{k}"), "events": [ev("1", T0)]})).collect::<Vec<_>>()}),
        ),
        (
            "too many events",
            track_req(vec![user_track(
                "carol",
                (0..41).map(|k| event("1", T0 + k, None)).collect(),
                vec![],
            )]),
            json!({"users": [{"user_id": "carol",
                "events": (0..41).map(|k| ev("1", T0 + k)).collect::<Vec<_>>()}]}),
        ),
        (
            "nothing to store",
            track_req(vec![user_track("carol", vec![], vec![])]),
            json!({"users": [{"user_id": "carol"}]}),
        ),
        (
            "clear: false",
            track_req(vec![user_track(
                "carol",
                vec![],
                vec![pb::FieldChange {
                    name: "age".into(),
                    change: Some(pb::field_change::Change::Clear(false)),
                }],
            )]),
            json!({"users": [{"user_id": "carol", "fields": [{"name": "age", "clear": false}]}]}),
        ),
        (
            // gRPC's oneof cannot say both; JSON can, and is refused as neither.
            "set and clear",
            track_req(vec![user_track(
                "carol",
                vec![],
                vec![pb::FieldChange {
                    name: "age".into(),
                    change: None,
                }],
            )]),
            json!({"users": [{"user_id": "carol", "fields": [{"name": "age", "set": 3, "clear": true}]}]}),
        ),
    ];
    for (what, grpc, body) in cases {
        let g = c.track(grpc).await.expect_err(what);
        assert_eq!(g.code(), Code::InvalidArgument, "{what}: {}", g.message());
        let a = post_json(&addr, "/v1/track", &body, None).unwrap();
        assert_eq!(a.status, 400, "{what}: {}", a.text());
        same_error(&a, &g, 400, "INVALID_ARGUMENT");
    }
    // A timestamp too far in the future (the message counts seconds from
    // now, so it is compared up to that number).
    let g = c
        .track(track_req(vec![user_track(
            "carol",
            vec![event("1", far, None)],
            vec![],
        )]))
        .await
        .unwrap_err();
    let a = post_json(
        &addr,
        "/v1/track",
        &json!({"users": [{"user_id": "carol", "events": [ev("1", far)]}]}),
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "users[0].events[0].timestamp: 4000000000 is ",
    );
    assert!(
        g.message()
            .starts_with("users[0].events[0].timestamp: 4000000000 is ")
    );
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "s in the future (state.max_clock_skew_s = 300)",
    );
    // Nothing of the refused calls was stored.
    let g = c
        .get_user(pb::GetUserRequest {
            user_id: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    same_error(&get(&addr, "/v1/users/carol"), &g, 404, "NOT_FOUND");

    // The JSON's own shape: unknown names, wrong types, malformed bodies.
    let raw = |body: &[u8]| {
        http_request(
            &addr,
            "POST",
            "/v1/track",
            &[("content-type", "application/json")],
            Some(body),
        )
        .unwrap()
    };
    assert_http_error(
        &raw(br#"{"users": [{"user_id": "x", "evnets": []}]}"#),
        400,
        "INVALID_ARGUMENT",
        "unknown field `evnets`",
    );
    assert_http_error(
        &raw(br#"{"users": [{"user_id": "x", "fields": [{"name": "age", "value": 1}]}]}"#),
        400,
        "INVALID_ARGUMENT",
        "unknown field `value`",
    );
    assert_http_error(
        &raw(br#"{"users": [{"user_id": 7}]}"#),
        400,
        "INVALID_ARGUMENT",
        "body: malformed JSON request: invalid type: integer `7`",
    );
    assert_http_error(
        &raw(br#"{"users": [{"user_id": "x", "events": [{"item_id": "1", "rating": NaN}]}]}"#),
        400,
        "INVALID_ARGUMENT",
        "body: malformed JSON request",
    );
    // A body over server.max_request_bytes: 413 naming the setting.
    let big = json!({"users": [{"user_id": "x", "events": (0..400).map(|k| ev("1", T0 + k)).collect::<Vec<_>>()}]});
    assert_http_error(
        &post_json(&addr, "/v1/track", &big, None).unwrap(),
        413,
        "OUT_OF_RANGE",
        "exceeds server.max_request_bytes = 8192",
    );

    // GetUser and DeleteUser: empty and over-long ids, page sizes and
    // tokens, unknown query parameters.
    let g = c.get_user(pb::GetUserRequest::default()).await.unwrap_err();
    same_error(&get(&addr, "/v1/users/"), &g, 400, "INVALID_ARGUMENT");
    let g = c
        .delete_user(pb::DeleteUserRequest::default())
        .await
        .unwrap_err();
    same_error(&delete(&addr, "/v1/users/"), &g, 400, "INVALID_ARGUMENT");
    let long = "a-very-long-user-id-indeed";
    let g = c
        .get_user(pb::GetUserRequest {
            user_id: long.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    same_error(
        &get(&addr, &format!("/v1/users/{long}")),
        &g,
        400,
        "INVALID_ARGUMENT",
    );
    assert!(g.message().contains("limits.max_user_id_bytes = 16"));
    let g = c
        .delete_user(pb::DeleteUserRequest {
            user_id: long.into(),
        })
        .await
        .unwrap_err();
    same_error(
        &delete(&addr, &format!("/v1/users/{long}")),
        &g,
        400,
        "INVALID_ARGUMENT",
    );
    c.track(track_req(vec![user_track(
        "dave",
        vec![event("1", T0, None)],
        vec![],
    )]))
    .await
    .unwrap();
    for (query, size, token) in [("page_size=1001", 1001, ""), ("page_token=zz", 0, "zz")] {
        let g = c
            .get_user(pb::GetUserRequest {
                user_id: "dave".into(),
                page_size: size,
                page_token: token.into(),
            })
            .await
            .unwrap_err();
        same_error(
            &get(&addr, &format!("/v1/users/dave?{query}")),
            &g,
            400,
            "INVALID_ARGUMENT",
        );
    }
    assert_http_error(
        &get(&addr, "/v1/users/dave?page=2"),
        400,
        "INVALID_ARGUMENT",
        "query: ",
    );
    assert_http_error(
        &get(&addr, "/v1/users/dave?page_size=-1"),
        400,
        "INVALID_ARGUMENT",
        "query: ",
    );

    // allow_partial: the bad users answer in place (their code, HTTP status
    // and message), the others are stored, in order.
    let j = ok(&post_json(
        &addr,
        "/v1/track",
        &json!({"allow_partial": true, "users": [
            {"user_id": "erin", "fields": [{"name": "age", "set": 30}]},
            {"user_id": "frank", "events": [ev("1", far)]},
            {"user_id": "", "events": [ev("1", T0)]},
            {"user_id": "erin", "fields": [{"name": "age", "set": 31}]}]}),
        None,
    )
    .unwrap());
    let users = j["users"].as_array().unwrap();
    assert!(
        users[0].get("error").is_none() && users[3].get("error").is_none(),
        "{j}"
    );
    assert!(users[3]["state_version"].as_u64() > users[0]["state_version"].as_u64());
    let e = &users[1]["error"];
    assert_eq!(
        (&e["code"], &e["status"]),
        (&json!("INVALID_ARGUMENT"), &json!(400))
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("users[1].events[0].timestamp: "),
        "{e}"
    );
    assert_eq!(
        users[2]["error"]["message"],
        "users[2].user_id: a user id is required"
    );
    assert_eq!(ok(&get(&addr, "/v1/users/erin"))["fields"]["age"], 31.0);
    let g = c
        .get_user(pb::GetUserRequest {
            user_id: "frank".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    same_error(&get(&addr, "/v1/users/frank"), &g, 404, "NOT_FOUND");

    // Context rules of Embed, Search and Explain, word for word.
    let ctx = user_features("", "writer", 30.0);
    let ctx_json = json!({"fields": {"occupation": "writer", "age": 30.0},
        "events": [{"item_id": "3", "timestamp": 880000000, "rating": 4.0},
                   {"item_id": "7", "timestamp": 880000100}]});
    let mut named = ctx.clone();
    named.user_id = "mallory".into();
    let g = c
        .embed(pb::EmbedRequest {
            users: vec![pb::UserInput {
                source: Some(pb::user_input::Source::UserId("dave".into())),
                context: Some(named),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let mut named_json = ctx_json.clone();
    named_json["user_id"] = json!("mallory");
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"user_id": "dave", "context": named_json}]}),
        None,
    )
    .unwrap();
    same_error(&a, &g, 400, "INVALID_ARGUMENT");
    assert!(g.message().starts_with("users[0].context.user_id"));
    let g = c
        .embed(pb::EmbedRequest {
            users: vec![pb::UserInput {
                source: Some(pb::user_input::Source::Features(ctx.clone())),
                context: Some(ctx.clone()),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"features": ctx_json, "context": ctx_json}]}),
        None,
    )
    .unwrap();
    same_error(&a, &g, 400, "INVALID_ARGUMENT");
    let g = c
        .search(pb::SearchRequest {
            context: Some(ctx.clone()),
            ..profiled_e2e::search_features(ctx.clone(), 5)
        })
        .await
        .unwrap_err();
    let a = post_json(
        &addr,
        "/v1/search",
        &json!({"features": ctx_json, "context": ctx_json, "k": 5}),
        None,
    )
    .unwrap();
    same_error(&a, &g, 400, "INVALID_ARGUMENT");
    for (grpc, body) in [
        (
            pb::ExplainRequest {
                user_id: "dave".into(),
                features: Some(ctx.clone()),
                ..Default::default()
            },
            json!({"user_id": "dave", "features": ctx_json}),
        ),
        (
            pb::ExplainRequest {
                features: Some(ctx.clone()),
                context: Some(ctx.clone()),
                ..Default::default()
            },
            json!({"features": ctx_json, "context": ctx_json}),
        ),
        (
            pb::ExplainRequest::default(),
            json!({"method": "occlusion"}),
        ),
    ] {
        let g = c.explain(grpc).await.unwrap_err();
        let a = post_json(&addr, "/v1/explain", &body, None).unwrap();
        same_error(&a, &g, 400, "INVALID_ARGUMENT");
    }
    // Explain by an over-long id: the core's check, as on gRPC.
    let g = c
        .explain(pb::ExplainRequest {
            user_id: long.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let a = post_json(&addr, "/v1/explain", &json!({"user_id": long}), None).unwrap();
    same_error(&a, &g, 400, "INVALID_ARGUMENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_state_needs_the_data_token_and_honours_deadlines() {
    let (tmp, repo) = synth_repo(23).unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "alice s3cret-alice\n").unwrap();
    let server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__HTTP__ENABLED", "true"),
            ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
            ("PROFILED__AUTH__TOKEN_FILE", tokens.to_str().unwrap()),
            ("PROFILED__AUTH__REQUIRED", "true"),
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let addr = server.http_addr().unwrap();
    let mut c = server.client().await.unwrap();
    let track =
        json!({"users": [{"user_id": "gina", "events": [{"item_id": "1", "timestamp": T0}]}]});
    let track_pb = track_req(vec![user_track("gina", vec![event("1", T0, None)], vec![])]);

    // No token, a wrong one, a malformed header: the gRPC port's messages.
    let g = c.track(track_pb.clone()).await.unwrap_err();
    assert_eq!(g.code(), Code::Unauthenticated);
    let a = post_json(&addr, "/v1/track", &track, None).unwrap();
    same_error(&a, &g, 401, "UNAUTHENTICATED");
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    let g = c
        .track(with_bearer(track_pb.clone(), Some("s3cret-alicf")))
        .await
        .unwrap_err();
    let a = post_json(&addr, "/v1/track", &track, Some("s3cret-alicf")).unwrap();
    same_error(&a, &g, 401, "UNAUTHENTICATED");
    let g = c
        .get_user(pb::GetUserRequest {
            user_id: "gina".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    same_error(&get(&addr, "/v1/users/gina"), &g, 401, "UNAUTHENTICATED");
    let a = http_request(
        &addr,
        "DELETE",
        "/v1/users/gina",
        &[("authorization", "Basic s3cret-alice")],
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        401,
        "UNAUTHENTICATED",
        "malformed `authorization` metadata: expected `Bearer <token>`",
    );
    // Nothing was stored by the refused calls; with the token, all works.
    let bearer = [("authorization", "Bearer s3cret-alice")];
    let a = http_request(&addr, "GET", "/v1/users/gina", &bearer, None).unwrap();
    assert_http_error(&a, 404, "NOT_FOUND", "has no live state");
    let a = post_json(&addr, "/v1/track", &track, Some("s3cret-alice")).unwrap();
    assert_eq!(ok(&a)["users"][0]["stored"], 1);
    let a = http_request(&addr, "GET", "/v1/users/gina", &bearer, None).unwrap();
    assert_eq!(ok(&a)["total_events"], 1);

    // Deadlines: an expired one is 504 DEADLINE_EXCEEDED for each
    // operation, a malformed one 400 naming the header.
    let body = serde_json::to_vec(&track).unwrap();
    for (method, path, body) in [
        ("POST", "/v1/track", Some(body.as_slice())),
        ("GET", "/v1/users/gina", None),
        ("DELETE", "/v1/users/gina", None),
    ] {
        for (timeout, status, code, needle) in [
            ("0", 504, "DEADLINE_EXCEEDED", "deadline exceeded"),
            ("soon", 400, "INVALID_ARGUMENT", "x-request-timeout-ms: "),
        ] {
            let a = http_request(
                &addr,
                method,
                path,
                &[
                    ("content-type", "application/json"),
                    ("authorization", "Bearer s3cret-alice"),
                    ("x-request-timeout-ms", timeout),
                ],
                body,
            )
            .unwrap();
            assert_http_error(&a, status, code, needle);
        }
    }
    let a = http_request(&addr, "DELETE", "/v1/users/gina", &bearer, None).unwrap();
    assert_eq!(ok(&a), json!({"existed": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_state_store_live_state_is_failed_precondition() {
    let (_tmp, server, addr) = start(&[("PROFILED__STATE__BACKEND", "off")]).await;
    let mut c = server.client().await.unwrap();
    let g = c
        .track(track_req(vec![user_track(
            "a",
            vec![event("1", T0, None)],
            vec![],
        )]))
        .await
        .unwrap_err();
    let a = post_json(
        &addr,
        "/v1/track",
        &json!({"users": [{"user_id": "a", "events": [{"item_id": "1", "timestamp": T0}]}]}),
        None,
    )
    .unwrap();
    same_error(&a, &g, 400, "FAILED_PRECONDITION");
    assert!(g.message().contains("state.backend"), "{}", g.message());
    let g = c
        .get_user(pb::GetUserRequest {
            user_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    same_error(&get(&addr, "/v1/users/a"), &g, 400, "FAILED_PRECONDITION");
    let g = c
        .delete_user(pb::DeleteUserRequest {
            user_id: "a".into(),
        })
        .await
        .unwrap_err();
    same_error(
        &delete(&addr, "/v1/users/a"),
        &g,
        400,
        "FAILED_PRECONDITION",
    );
    // Ids still resolve to the users index.
    let j = ok(&post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"user_id": "u1"}]}),
        None,
    )
    .unwrap());
    assert_eq!(j["users"][0]["source"], "users_index");
}
