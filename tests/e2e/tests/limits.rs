//! Client-controlled limits not covered elsewhere, against the real binary:
//!
//! * Explain variants: occlusion masks one token (and one group) per forward
//!   pass, so its work is the token count. A client cannot raise it: events
//!   beyond `limits.max_events_per_user` are refused, and the tokens that
//!   reach the encoder never exceed the model's `max_tokens` (fields + the
//!   model's `max_events`, the most recent events kept) however many events
//!   are sent; `top_n` is capped by `limits.max_explain_top_n`; USERS
//!   targets are capped by `limits.max_seeds` and every vector's width is checked.
//! * Concurrent streams per connection: `server.max_concurrent_streams` is
//!   the HTTP/2 SETTINGS value; streams beyond it on one connection wait
//!   (the client holds them) until one closes, while another connection is
//!   unaffected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use profiled_e2e::{
    ProfileClient, Server, assert_status, categorical, embed_req, event, get_model, synth_repo,
    users_target,
};
use profiled_proto::v1 as pb;
use tonic::Code;

fn user(events: usize) -> pb::UserFeatures {
    pb::UserFeatures {
        user_id: "u".into(),
        fields: HashMap::from([("occupation".to_string(), categorical("engineer"))]),
        events: (0..events)
            .map(|i| {
                event(
                    &(1 + i % 30).to_string(),
                    880_000_000 + i as i64 * 60,
                    Some(4.0),
                )
            })
            .collect(),
    }
}

fn explain(events: usize, method: pb::ExplainMethod, top_n: u32) -> pb::ExplainRequest {
    pb::ExplainRequest {
        features: Some(user(events)),
        method: method as i32,
        top_n,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_variants_are_bounded() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__LIMITS__MAX_EVENTS_PER_USER", "100"),
            ("PROFILED__LIMITS__MAX_EXPLAIN_TOP_N", "8"),
            ("PROFILED__LIMITS__MAX_SEEDS", "3"),
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let mut c = server.client().await.unwrap();
    let info = get_model(&mut c, "").await.unwrap();
    let arch = info.versions[0].architecture.clone().unwrap();
    let max_tokens = arch.max_tokens as usize;
    assert!(max_tokens > 0 && max_tokens < 100, "{arch:?}");

    // 100 events (the limit): accepted, but the encoder sees at most
    // max_tokens tokens, so occlusion runs at most that many token masks.
    for method in [
        pb::ExplainMethod::Occlusion,
        pb::ExplainMethod::AttentionRollout,
        pb::ExplainMethod::Attention,
    ] {
        let r = c
            .explain(explain(100, method, 8))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.token_table.len(), max_tokens, "{method:?}");
        let group_tokens: u32 = r.groups.iter().map(|g| g.tokens).sum();
        assert!(
            group_tokens as usize <= max_tokens,
            "{method:?}: {group_tokens}"
        );
        assert!(r.tokens.len() <= 8, "{method:?}: top_n not applied");
        for l in &r.layers {
            assert!(l.head_mean.len() <= max_tokens);
        }
    }
    // One event more is refused before any work.
    assert_status(
        c.explain(explain(101, pb::ExplainMethod::Occlusion, 8))
            .await,
        Code::InvalidArgument,
        "features.events: 101 events exceeds limits.max_events_per_user = 100",
    );
    // top_n above the limit.
    assert_status(
        c.explain(explain(3, pb::ExplainMethod::Occlusion, 9)).await,
        Code::InvalidArgument,
        "top_n: 9 exceeds limits.max_explain_top_n = 8",
    );
    // USERS targets: seed count and vector width.
    let dim = arch.dim as usize;
    let with_seeds = |vectors: Vec<pb::Vector>| {
        let mut r = explain(3, pb::ExplainMethod::Occlusion, 4);
        r.target = Some(users_target(&[], vectors));
        r
    };
    let unit = |d: usize| {
        let mut v = vec![0f32; d];
        v[0] = 1.0;
        pb::Vector::from_f32(v)
    };
    assert_status(
        c.explain(with_seeds(vec![unit(dim); 4])).await,
        Code::InvalidArgument,
        "target.users: 4 seeds exceeds limits.max_seeds = 3",
    );
    assert_status(
        c.explain(with_seeds(vec![unit(dim + 1)])).await,
        Code::InvalidArgument,
        "target.users.vectors[0]",
    );
    let r = c
        .explain(with_seeds(vec![unit(dim); 3]))
        .await
        .unwrap()
        .into_inner();
    assert!(r.tokens.len() <= 4);
}

/// An open EmbedStream on `c`: a sender for its requests and its answers.
async fn open_stream(
    c: &mut ProfileClient,
) -> (
    tokio::sync::mpsc::Sender<pb::EmbedRequest>,
    tonic::Streaming<pb::EmbedStreamResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let s = c
        .embed_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, s)
}

fn one(id: &str) -> pb::EmbedRequest {
    pb::EmbedRequest {
        request_id: id.into(),
        ..embed_req(vec![user(3)])
    }
}

async fn answered(s: &mut tonic::Streaming<pb::EmbedStreamResponse>, id: &str) {
    let m = s.message().await.unwrap().expect("an answer");
    assert_eq!(m.request_id, id);
    assert!(
        matches!(
            m.outcome,
            Some(pb::embed_stream_response::Outcome::Response(_))
        ),
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_per_connection_are_capped() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__SERVER__MAX_CONCURRENT_STREAMS", "3"),
            ("PROFILED__SERVER__CONCURRENCY_PER_CONNECTION", "3"),
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let mut a = server.client().await.unwrap();

    // Three open streams on connection A, each answering.
    let mut open = Vec::new();
    for i in 0..3 {
        let (tx, mut s) = open_stream(&mut a).await;
        let id = format!("a{i}");
        tx.send(one(&id)).await.unwrap();
        answered(&mut s, &id).await;
        open.push((tx, s));
    }

    // A fourth stream on A is held back by HTTP/2: its batch gets no answer
    // while the three stay open.
    let mut a4 = a.clone();
    let (tx4, rx4) = tokio::sync::mpsc::channel(4);
    tx4.send(one("a3")).await.unwrap();
    let fourth = tokio::spawn(async move {
        let mut s = a4
            .embed_stream(tokio_stream::wrappers::ReceiverStream::new(rx4))
            .await
            .unwrap()
            .into_inner();
        answered(&mut s, "a3").await;
        s
    });
    // Another connection is not affected by A's streams.
    let mut b = server.client().await.unwrap();
    let (txb, mut sb) = open_stream(&mut b).await;
    txb.send(one("b0")).await.unwrap();
    answered(&mut sb, "b0").await;
    // Still waiting (checked after B's full round trip and a pause; it can
    // only ever pass late, never fail, if the machine is slow).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fourth.is_finished(),
        "a 4th stream ran beyond max_concurrent_streams = 3"
    );

    // The open streams still work; closing one lets the fourth through.
    let (tx0, mut s0) = open.remove(0);
    tx0.send(one("a0-again")).await.unwrap();
    answered(&mut s0, "a0-again").await;
    drop(tx0);
    assert!(
        s0.message().await.unwrap().is_none(),
        "stream ends when the client closes"
    );
    let mut s4 = tokio::time::timeout(Duration::from_secs(30), fourth)
        .await
        .expect("the 4th stream starts once a slot frees")
        .unwrap();
    drop(tx4);
    assert!(s4.message().await.unwrap().is_none());
    for (tx, mut s) in open {
        tx.send(one("last")).await.unwrap();
        answered(&mut s, "last").await;
    }
}
