//! The outside client's findings (issue "Findings of an outside client"),
//! each replayed against the real `profiled` binary over real sockets: a
//! refused admin call changes nothing, and every hostile case gets the code
//! and the message the docs promise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use profiled_e2e::{
    ADMIN_TOKEN, Server, assert_status, condition, embed_req, features, get_model, search_features,
    synth_repo, with_bearer, write_admin_token,
};
use profiled_proto::v1 as pb;
use tonic::Code;

/// F1 and F5: a Reload that cannot be done (an unknown model name, version 0,
/// a version with no directory, a name that can never be a directory) is
/// refused with or without `wait`, registers nothing, and leaves the default
/// model serving every request that names no model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_admin_calls_change_nothing() {
    let (tmp, repo) = synth_repo(1).unwrap();
    let token = write_admin_token(tmp.path()).unwrap();
    let server = Server::start_serving(
        &repo,
        &[("PROFILED__ADMIN__TOKEN_FILE", token.to_str().unwrap())],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let ch = server.channel().await.unwrap();
    let mut admin = pb::model_admin_client::ModelAdminClient::new(ch.clone());
    let mut c = server.client().await.unwrap();
    let reload = |model: &str, version: Option<u64>, wait: bool| {
        with_bearer(
            pb::ReloadRequest {
                model: model.into(),
                version,
                wait,
            },
            Some(ADMIN_TOKEN),
        )
    };
    let cases: [(&str, Option<u64>, Code, &str); 8] = [
        (
            "synth-typo",
            None,
            Code::NotFound,
            "unknown model \"synth-typo\"",
        ),
        (
            "synth-typo",
            Some(1),
            Code::NotFound,
            "unknown model \"synth-typo\"",
        ),
        (
            "synth",
            Some(0),
            Code::InvalidArgument,
            "version: invalid version 0",
        ),
        ("synth", Some(5), Code::NotFound, "version 5"),
        (
            "synth",
            Some(u64::MAX),
            Code::NotFound,
            "version 18446744073709551615",
        ),
        ("..", None, Code::InvalidArgument, "invalid model name"),
        (".synth", None, Code::InvalidArgument, "invalid model name"),
        ("a/b", None, Code::InvalidArgument, "invalid model name"),
    ];
    for (model, version, code, needle) in cases {
        for wait in [false, true] {
            assert_status(
                admin.reload(reload(model, version, wait)).await,
                code,
                needle,
            );
        }
    }
    // GetModel of a name that can never be a directory is invalid too.
    assert_status(
        c.get_model(pb::GetModelRequest {
            name: "../synth".into(),
        })
        .await,
        Code::InvalidArgument,
        "invalid model name",
    );
    // Nothing was registered: one model, still the default, still serving.
    let list = c
        .list_models(pb::ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = list.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["synth"]);
    assert_eq!(list.default_model, "synth");
    assert_status(
        c.get_model(pb::GetModelRequest {
            name: "synth-typo".into(),
        })
        .await,
        Code::NotFound,
        "unknown model",
    );
    assert_eq!(get_model(&mut c, "").await.unwrap().name, "synth");
    let r = c
        .embed(embed_req(vec![features("engineer", 34.0)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model.unwrap().name, "synth");
    // A real reload still works, with and without wait.
    admin.reload(reload("synth", Some(1), true)).await.unwrap();
    admin.reload(reload("synth", None, false)).await.unwrap();
    admin.reload(reload("", None, true)).await.unwrap();
}

/// F2: a client that just writes EmbedStream batches of 256 users (cache
/// bypassed, no pacing of its own) is never shed: the server reads a stream's
/// next batch only once its users fit in the streams' budget, so HTTP/2 flow
/// control pushes back instead of the batcher queue (1,024 users) filling up.
/// Before the fix 76 of 100 such batches came back RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_stream_pushes_back_instead_of_shedding() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();
    let batches = 100;
    let reqs: Vec<pb::EmbedRequest> = (0..batches)
        .map(|b| {
            let users = (0..256)
                .map(|u| features("engineer", f64::from(18 + (b * 256 + u) % 60)))
                .collect();
            let mut r = embed_req(users);
            r.cache = pb::CacheMode::Bypass as i32;
            r.request_id = format!("b{b}");
            r
        })
        .collect();
    let mut out = c
        .embed_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut answered = 0;
    while let Some(msg) = out.message().await.unwrap() {
        assert_eq!(msg.request_id, format!("b{answered}"), "in request order");
        match msg.outcome {
            Some(pb::embed_stream_response::Outcome::Response(r)) => {
                assert_eq!(r.users.len(), 256);
                assert!(
                    r.users
                        .iter()
                        .all(|u| u.error.is_none() && u.vector.is_some())
                );
            }
            other => panic!("batch {answered} failed: {other:?}"),
        }
        answered += 1;
    }
    assert_eq!(answered, batches);
}

/// F6: documented limits are enforced, and no error message echoes unbounded
/// input. IN / NOT_IN need at least one value; model names, labels,
/// GetModel's name and `request_id` are bounded by `limits.max_string_bytes`
/// (256 by default) and named, not echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_for_filters_names_and_request_ids() {
    let (tmp, repo) = synth_repo(1).unwrap();
    let token = write_admin_token(tmp.path()).unwrap();
    let server = Server::start_serving(
        &repo,
        &[("PROFILED__ADMIN__TOKEN_FILE", token.to_str().unwrap())],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut c = server.client().await.unwrap();
    for op in [pb::AttributeOp::In, pb::AttributeOp::NotIn] {
        let mut r = search_features(features("engineer", 30.0), 5);
        r.filter = Some(pb::Filter {
            conditions: vec![condition("genre", op, &[])],
            ..Default::default()
        });
        assert_status(
            c.search(r).await,
            Code::InvalidArgument,
            "filter.conditions[0].values: IN and NOT_IN need at least one value",
        );
    }
    let huge = "m".repeat(100_000);
    let bounded = |s: &tonic::Status| {
        assert!(
            s.message().len() < 500,
            "{} bytes echoed",
            s.message().len()
        );
    };
    let mut r = embed_req(vec![features("engineer", 30.0)]);
    r.model = Some(pb::ModelSpec::default_version(huge.clone()));
    let s = c.embed(r).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message()
            .starts_with("model.name: 100000 bytes exceeds limits.max_string_bytes = 256"),
        "{}",
        s.message()
    );
    bounded(&s);
    let mut r = embed_req(vec![features("engineer", 30.0)]);
    r.model = Some(pb::ModelSpec::labelled("synth", huge.clone()));
    let s = c.embed(r).await.unwrap_err();
    assert!(
        s.message().starts_with("model.label: 100000 bytes"),
        "{}",
        s.message()
    );
    let s = c
        .get_model(pb::GetModelRequest { name: huge.clone() })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().starts_with("name: 100000 bytes"),
        "{}",
        s.message()
    );
    let mut r = embed_req(vec![features("engineer", 30.0)]);
    r.request_id = huge.clone();
    let s = c.embed(r).await.unwrap_err();
    assert!(
        s.message().starts_with("request_id: 100000 bytes"),
        "{}",
        s.message()
    );
    bounded(&s);
    // EmbedStream: the batch fails, and its over-long id is not echoed.
    let mut r = embed_req(vec![features("engineer", 30.0)]);
    r.request_id = huge.clone();
    let mut out = c
        .embed_stream(tokio_stream::iter([r]))
        .await
        .unwrap()
        .into_inner();
    let msg = out.message().await.unwrap().unwrap();
    assert!(msg.request_id.is_empty());
    match msg.outcome {
        Some(pb::embed_stream_response::Outcome::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as i32);
            assert!(
                e.message.starts_with("request_id: 100000 bytes"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    // Admin calls: refused, named, bounded (a 64-byte name is the store's own limit).
    let mut admin = pb::model_admin_client::ModelAdminClient::new(server.channel().await.unwrap());
    let s = admin
        .reload(with_bearer(
            pb::ReloadRequest {
                model: huge.clone(),
                version: None,
                wait: false,
            },
            Some(ADMIN_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    bounded(&s);
    let s = admin
        .reload(with_bearer(
            pb::ReloadRequest {
                model: "x".repeat(100),
                version: None,
                wait: false,
            },
            Some(ADMIN_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("… (100 bytes)"), "{}", s.message());
    bounded(&s);
}
