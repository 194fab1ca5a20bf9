//! Every RPC over real sockets against the real `profiled` binary: happy
//! paths, bad input (status code + a message naming the problem), health,
//! reflection, admin auth.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use profiled_e2e::{
    ADMIN_TOKEN, Server, assert_status, categorical, condition, embed_req, event, get_model,
    health_status, input_by_id, item_target, list_services, publish_model, search_features,
    search_user, synth_repo, temp_repo, user_features, with_bearer, write_admin_token,
};
use profiled_proto::v1 as pb;
use tonic::Code;

/// The usual test user ([`profiled_e2e::features`]) with the id `u1`, which
/// Embed answers echo.
fn features(occupation: &str, age: f64) -> pb::UserFeatures {
    user_features("u1", occupation, age)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_happy_and_bad_paths() {
    let (tmp, repo) = synth_repo(1).unwrap();
    let token_file = write_admin_token(tmp.path()).unwrap();
    let server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__ADMIN__TOKEN_FILE", token_file.to_str().unwrap()),
            ("PROFILED__LIMITS__MAX_USERS_PER_CALL", "8"),
            ("PROFILED__SERVER__MAX_REQUEST_BYTES", "65536"),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut c = server.client().await.unwrap();

    // --- Embed: computed, then cached, f16, bypass.
    let r = c
        .embed(embed_req(vec![features("engineer", 34.0)]))
        .await
        .unwrap()
        .into_inner();
    let m = r.model.clone().unwrap();
    assert_eq!((m.name.as_str(), m.version), ("synth", 1));
    assert!(m.generation_id > 0);
    assert_eq!(r.users.len(), 1);
    let v = &r.users[0].vector.as_ref().unwrap().values;
    assert_eq!(v.len(), r.dim as usize);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    assert_eq!(r.users[0].source, pb::ProfileSource::Computed as i32);
    assert_eq!(r.users[0].user_id, "u1");
    assert_eq!(r.encoding, pb::VectorEncoding::F32 as i32);

    let r2 = c
        .embed(embed_req(vec![features("engineer", 34.0)]))
        .await
        .unwrap()
        .into_inner();
    assert!(r2.users[0].cache_hit);
    assert_eq!(r2.users[0].source, pb::ProfileSource::Cache as i32);
    assert_eq!(r2.users[0].vector.as_ref().unwrap().values, *v);

    let mut req = embed_req(vec![features("engineer", 34.0)]);
    req.encoding = pb::VectorEncoding::F16 as i32;
    req.cache = pb::CacheMode::Bypass as i32;
    req.request_id = "abc".into();
    let r3 = c.embed(req).await.unwrap().into_inner();
    assert!(!r3.users[0].cache_hit);
    assert_eq!(r3.request_id, "abc");
    let f16 = &r3.users[0].vector.as_ref().unwrap().f16;
    assert_eq!(f16.len(), 2 * r.dim as usize);

    // Batch of several users keeps order.
    let r4 = c
        .embed(embed_req(vec![
            features("writer", 20.0),
            features("doctor", 60.0),
            features("engineer", 34.0),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r4.users.len(), 3);
    assert_eq!(r4.users[2].vector.as_ref().unwrap().values, *v);

    // --- Embed: bad input.
    let mut bad = features("engineer", 34.0);
    bad.fields.insert("colour".into(), categorical("red"));
    assert_status(
        c.embed(embed_req(vec![features("writer", 1.0), bad])).await,
        Code::InvalidArgument,
        "users[1].features.fields[\"colour\"]: unknown field",
    );
    let mut bad = features("engineer", 34.0);
    bad.fields.insert("age".into(), categorical("old"));
    assert_status(
        c.embed(embed_req(vec![bad])).await,
        Code::InvalidArgument,
        "users[0].features.fields[\"age\"]: \"old\" is not a number",
    );
    // Unambiguous conversions (common.proto): a numeric string for a numeric
    // input is parsed, so "34" and 34 give the same profile.
    let mut as_text = features("engineer", 34.0);
    as_text.fields.insert("age".into(), categorical(" 34 "));
    let a = c
        .embed(embed_req(vec![features("engineer", 34.0), as_text]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.users.len(), 2);
    let v0 = &a.users[0].vector.as_ref().unwrap().values;
    assert!(!v0.is_empty());
    assert_eq!(*v0, a.users[1].vector.as_ref().unwrap().values);
    // Tags never stand for a single value.
    let mut bad = features("engineer", 34.0);
    bad.fields.insert(
        "age".into(),
        pb::FieldValue {
            kind: Some(pb::field_value::Kind::Tags(pb::TagList { tags: vec![] })),
        },
    );
    assert_status(
        c.embed(embed_req(vec![bad])).await,
        Code::InvalidArgument,
        "users[0].features.fields[\"age\"]: expected a number, got tags",
    );
    assert_status(
        c.embed(embed_req(vec![features("engineer", f64::NAN)]))
            .await,
        Code::InvalidArgument,
        "users[0].features.fields[\"age\"]: NaN is not a finite number",
    );
    let mut bad = features("engineer", 34.0);
    bad.events[0].rating = Some(f32::INFINITY);
    assert_status(
        c.embed(embed_req(vec![bad])).await,
        Code::InvalidArgument,
        "users[0].features.events[0].rating",
    );
    assert_status(
        c.embed(embed_req(vec![features("a", 1.0); 9])).await,
        Code::InvalidArgument,
        "users: 9 users exceeds limits.max_users_per_call = 8",
    );
    assert_status(
        c.embed(embed_req(vec![])).await,
        Code::InvalidArgument,
        "users",
    );
    let mut big = features("engineer", 34.0);
    big.events = (0..1001).map(|i| event("1", i, None)).collect();
    assert_status(
        c.embed(embed_req(vec![big])).await,
        Code::InvalidArgument,
        "users[0].features.events: 1001 events exceeds limits.max_events_per_user = 1000",
    );
    // A whole message over server.max_request_bytes.
    let mut huge = features("engineer", 34.0);
    huge.user_id = "x".repeat(100_000);
    assert_status(
        c.embed(embed_req(vec![huge.clone()])).await,
        Code::OutOfRange,
        "bytes exceeds server.max_request_bytes = 65536",
    );
    let unset = pb::EmbedRequest {
        users: vec![pb::UserInput {
            source: None,
            context: None,
        }],
        ..Default::default()
    };
    assert_status(
        c.embed(unset).await,
        Code::InvalidArgument,
        "users[0].source",
    );
    let by_id = pb::EmbedRequest {
        users: vec![input_by_id("196")],
        ..Default::default()
    };
    assert_status(c.embed(by_id).await, Code::NotFound, "users[0].user_id");

    // allow_partial: the bad user gets an ItemError, the good one its vector.
    let mut req = embed_req(vec![
        features("engineer", 34.0),
        features("engineer", f64::INFINITY),
    ]);
    req.allow_partial = true;
    let r = c.embed(req).await.unwrap().into_inner();
    assert!(r.users[0].vector.is_some());
    let err = r.users[1].error.as_ref().unwrap();
    assert_eq!(err.code, Code::InvalidArgument as i32);
    assert!(err.message.starts_with("users[1].features.fields[\"age\"]"));

    // Unknown model / version / label.
    let mut req = embed_req(vec![features("engineer", 34.0)]);
    req.model = Some(pb::ModelSpec::default_version("nope"));
    assert_status(c.embed(req).await, Code::NotFound, "unknown model \"nope\"");
    let mut req = embed_req(vec![features("engineer", 34.0)]);
    req.model = Some(pb::ModelSpec::pinned("synth", 9));
    assert_status(c.embed(req).await, Code::NotFound, "version 9");
    let mut req = embed_req(vec![features("engineer", 34.0)]);
    req.model = Some(pb::ModelSpec::labelled("synth", "canary"));
    assert_status(c.embed(req).await, Code::NotFound, "no label \"canary\"");

    // Expired deadline: DEADLINE_EXCEEDED, nothing computed. Sent on a raw
    // HTTP/2 connection: a tonic client enforces `grpc-timeout` with its own
    // timer too (answering CANCELLED locally when that fires first), and
    // what is tested is the server's answer — never CANCELLED, as
    // docs/api.md promises.
    {
        use prost::Message;
        let raw = profiled_e2e::RawConn::connect(&server.addr).await.unwrap();
        let body =
            profiled_e2e::grpc_frame(&embed_req(vec![features("student", 22.0)]).encode_to_vec());
        let a = raw
            .grpc(
                "/profiled.v1.ProfileService/Embed",
                &[("grpc-timeout", "1n")],
                &body,
            )
            .await
            .unwrap();
        let (code, message) = a.grpc_status().expect("a grpc-status");
        assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    }

    // --- EmbedStream: in order, a failing batch does not end the stream.
    let reqs = vec![
        {
            let mut r = embed_req(vec![features("engineer", 34.0)]);
            r.request_id = "a".into();
            r
        },
        {
            let mut r = embed_req(vec![features("engineer", f64::NAN)]);
            r.request_id = "b".into();
            r
        },
        {
            let mut r = embed_req(vec![features("writer", 50.0), features("artist", 30.0)]);
            r.request_id = "c".into();
            r
        },
    ];
    let mut stream = c
        .embed_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(m);
    }
    assert_eq!(
        got.iter()
            .map(|m| m.request_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert!(matches!(
        got[1].outcome,
        Some(pb::embed_stream_response::Outcome::Error(ref e)) if e.code == Code::InvalidArgument as i32
    ));
    assert!(matches!(
        got[2].outcome,
        Some(pb::embed_stream_response::Outcome::Response(ref r)) if r.users.len() == 2
    ));
    // A stream message over server.max_request_bytes ends the stream with
    // the same named limit, after the answers to the messages before it.
    let reqs = vec![
        {
            let mut r = embed_req(vec![features("writer", 50.0)]);
            r.request_id = "ok".into();
            r
        },
        embed_req(vec![huge]),
    ];
    let mut stream = c
        .embed_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("the first answer");
    assert_eq!(first.request_id, "ok");
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert_status(
        end,
        Code::OutOfRange,
        "bytes exceeds server.max_request_bytes = 65536",
    );

    // --- GetModel / ListModels.
    let m = get_model(&mut c, "synth").await.unwrap();
    assert_eq!(m.default_version, 1);
    assert_eq!(m.version_policy, "latest");
    let v1 = &m.versions[0];
    assert_eq!(v1.state, pb::VersionState::Ready as i32);
    assert!(v1.is_default);
    let schema = v1.schema.as_ref().unwrap();
    assert!(
        schema
            .fields
            .iter()
            .any(|f| f.source == "age" && f.kind == pb::FieldKind::Number as i32)
    );
    assert!(v1.architecture.as_ref().unwrap().dim > 0);
    let dm = c
        .get_model(pb::GetModelRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dm.model.unwrap().name, "synth");
    assert_status(
        c.get_model(pb::GetModelRequest {
            name: "nope".into(),
        })
        .await,
        Code::NotFound,
        "nope",
    );
    let l = c
        .list_models(pb::ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.default_model, "synth");
    assert_eq!(l.models.len(), 1);
    assert!(l.models[0].versions[0].schema.is_none());

    // --- Explain.
    for method in [
        pb::ExplainMethod::Occlusion,
        pb::ExplainMethod::AttentionRollout,
        pb::ExplainMethod::Attention,
    ] {
        let r = c
            .explain(pb::ExplainRequest {
                features: Some(features("engineer", 34.0)),
                method: method as i32,
                top_n: 3,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.method, method as i32);
        assert!(!r.groups.is_empty());
        assert!(r.tokens.len() <= 3 && !r.tokens.is_empty());
        assert!(!r.token_table.is_empty());
        assert!(r.model.is_some());
        if method == pb::ExplainMethod::Attention {
            assert!(!r.layers.is_empty());
        }
    }
    let r = c
        .explain(pb::ExplainRequest {
            features: Some(features("engineer", 34.0)),
            target: Some(item_target("5")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value_kind, pb::ValueKind::ScoreDrop as i32);
    assert_status(
        c.explain(pb::ExplainRequest {
            features: Some(features("engineer", 34.0)),
            target: Some(item_target("no-such-item")),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "target.item.item_id",
    );
    assert_status(
        c.explain(pb::ExplainRequest {
            features: Some(features("engineer", 34.0)),
            top_n: 100_000,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "limits.max_explain_top_n = 256",
    );

    // --- Search: items by features, users by id (lookalikes), seeds, filters.
    let r = c
        .search(search_features(features("engineer", 34.0), 5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.hits.len(), 5);
    assert_eq!(r.model.as_ref().unwrap().version, 1);
    assert!(r.hits.windows(2).all(|w| w[0].score >= w[1].score));
    let r = c
        .search(pb::SearchRequest {
            exact: true,
            filter: Some(pb::Filter {
                conditions: vec![condition("segment", pb::AttributeOp::Equals, &["b"])],
                ..Default::default()
            }),
            include_vectors: true,
            ..search_user("u3", pb::TargetIndex::Users, 4)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.hits.len(), 4);
    for h in &r.hits {
        assert_ne!(h.id, "u3", "the query user is excluded");
        let n: usize = h.id[1..].parse().unwrap();
        assert_eq!(n % 2, 1, "{} is not in segment b", h.id);
        assert!(h.vector.is_some());
    }
    let r = c
        .search(pb::SearchRequest {
            query: Some(pb::search_request::Query::Seeds(pb::SeedSet {
                user_ids: vec!["u1".into(), "u2".into()],
                vectors: vec![],
            })),
            target: pb::TargetIndex::Users as i32,
            k: 30,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.hits.len(), 18);
    assert!(r.hits.iter().all(|h| h.id != "u1" && h.id != "u2"));
    let emb = c
        .embed(pb::EmbedRequest {
            users: vec![input_by_id("u5")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(emb.users[0].source, pb::ProfileSource::UsersIndex as i32);
    assert_status(
        c.search(search_user("nobody", pb::TargetIndex::Unspecified, 0))
            .await,
        Code::NotFound,
        "user_id: unknown user \"nobody\"",
    );
    assert_status(
        c.search(pb::SearchRequest {
            filter: Some(pb::Filter {
                conditions: vec![condition("colour", pb::AttributeOp::In, &["red"])],
                ..Default::default()
            }),
            ..search_features(features("engineer", 34.0), 0)
        })
        .await,
        Code::InvalidArgument,
        "unknown attribute \"colour\"",
    );
    assert_status(
        c.search(pb::SearchRequest {
            query: Some(pb::search_request::Query::Vector(pb::Vector::from_f32(
                vec![1.0; 3],
            ))),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "vector",
    );
    assert_status(
        c.search(search_features(features("engineer", 34.0), 5000))
            .await,
        Code::InvalidArgument,
        "k: 5000 exceeds limits.max_k = 1000",
    );
    assert_status(
        c.search(pb::SearchRequest::default()).await,
        Code::InvalidArgument,
        "query",
    );

    // --- Admin: token required; labels work.
    let ch = server.channel().await.unwrap();
    let mut admin = pb::model_admin_client::ModelAdminClient::new(ch.clone());
    let req = pb::SetLabelRequest {
        model: "synth".into(),
        label: "stable".into(),
        version: 1,
        remove: false,
    };
    assert_status(
        admin.set_label(req.clone()).await,
        Code::Unauthenticated,
        "authorization",
    );
    assert_status(
        admin
            .set_label(with_bearer(req.clone(), Some("nope")))
            .await,
        Code::Unauthenticated,
        "wrong",
    );
    let m = admin
        .set_label(with_bearer(req, Some(ADMIN_TOKEN)))
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap();
    assert_eq!(m.labels.get("stable"), Some(&1));
    let mut req = embed_req(vec![features("engineer", 34.0)]);
    req.model = Some(pb::ModelSpec::labelled("synth", "stable"));
    assert_eq!(
        c.embed(req)
            .await
            .unwrap()
            .into_inner()
            .model
            .unwrap()
            .version,
        1
    );

    // --- Health and reflection.
    for svc in ["", "profiled.v1.ProfileService", "profiled.v1.ModelAdmin"] {
        let s = health_status(ch.clone(), svc).await.unwrap();
        assert_eq!(s, 1, "{svc}");
    }
    let services = list_services(ch).await.unwrap();
    for s in [
        "profiled.v1.ProfileService",
        "profiled.v1.ModelAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(services.iter().any(|x| x == s), "{s} not in {services:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_a_generation_is_ready() {
    let (_tmp, repo) = temp_repo().unwrap();
    std::fs::create_dir_all(repo.join("synth")).unwrap();
    let server = Server::start(&repo, &[]).unwrap();
    let ch = server.channel().await.unwrap();
    let s = health_status(ch.clone(), "profiled.v1.ProfileService")
        .await
        .unwrap();
    assert_eq!(s, 2, "NOT_SERVING before any model");
    let mut c = pb::profile_service_client::ProfileServiceClient::new(ch);
    assert_status(
        c.embed(embed_req(vec![features("engineer", 34.0)])).await,
        Code::Unavailable,
        "no ready version",
    );
    // Publish: the watcher loads it and health flips.
    publish_model(&repo, "synth", 3, false).unwrap();
    server.wait_serving(Duration::from_secs(30)).await.unwrap();
    c.embed(embed_req(vec![features("engineer", 34.0)]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_fills_the_cache_per_its_cache_mode() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();
    let explain = |f: pb::UserFeatures, mode: pb::CacheMode| pb::ExplainRequest {
        features: Some(f),
        cache: mode as i32,
        groups_only: true,
        ..Default::default()
    };
    let embed_hit = |r: pb::EmbedResponse| {
        assert_eq!(r.users.len(), 1);
        r.users[0].cache_hit
    };

    // USE (default): the unmasked profile computed by Explain is cached, so
    // an Embed of the same features is a hit with that very profile.
    let f = features("engineer", 34.0);
    let ex = c
        .explain(explain(f.clone(), pb::CacheMode::Use))
        .await
        .unwrap()
        .into_inner();
    assert!(!ex.cache_hit);
    let vector = |r: &pb::EmbedResponse| {
        r.users[0]
            .vector
            .clone()
            .unwrap()
            .to_f32_checked(r.dim as usize)
            .unwrap()
    };
    let r = c
        .embed(embed_req(vec![f.clone()]))
        .await
        .unwrap()
        .into_inner();
    let cached = vector(&r);
    assert!(
        embed_hit(r),
        "Embed after Explain (USE) was not a cache hit"
    );
    // The cached profile is the profile: a fresh computation agrees.
    let mut fresh = embed_req(vec![f]);
    fresh.cache = pb::CacheMode::Bypass as i32;
    let r = c.embed(fresh).await.unwrap().into_inner();
    assert!(!r.users[0].cache_hit);
    let c0 = profiled_model::cosine(&cached, &vector(&r));
    assert!(c0 > 0.9999, "cached vs fresh cosine {c0}");
    // Search by the same features reads that entry too, and scores like a
    // fresh computation (rank by rank, within the f16 rows' precision).
    let scores = |r: pb::SearchResponse| r.hits.into_iter().map(|h| h.score).collect::<Vec<_>>();
    let s = c
        .search(search_features(features("engineer", 34.0), 5))
        .await
        .unwrap()
        .into_inner();
    assert!(
        s.cache_hit,
        "Search after Explain (USE) was not a cache hit"
    );
    let mut fresh = search_features(features("engineer", 34.0), 5);
    fresh.cache = pb::CacheMode::Bypass as i32;
    let s2 = c.search(fresh).await.unwrap().into_inner();
    assert!(!s2.cache_hit);
    let (a, b) = (scores(s), scores(s2));
    assert!(!a.is_empty() && a.len() == b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 2e-3, "scores {a:?} vs {b:?}");
    }

    // BYPASS: the cache is not touched.
    let g = features("artist", 51.0);
    c.explain(explain(g.clone(), pb::CacheMode::Bypass))
        .await
        .unwrap();
    let r = c
        .embed(embed_req(vec![g.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert!(!embed_hit(r), "Explain with BYPASS filled the cache");
    // Now cached by that Embed; a REFRESH explain overwrites it, and the
    // next Embed is still a hit.
    c.explain(explain(g.clone(), pb::CacheMode::Refresh))
        .await
        .unwrap();
    let r = c.embed(embed_req(vec![g])).await.unwrap().into_inner();
    assert!(embed_hit(r));
}
