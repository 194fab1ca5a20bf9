//! The outside client's findings (issue "Findings of an outside client"),
//! each replayed against the real `profiled` binary over real sockets: a
//! refused admin call changes nothing, and every hostile case gets the code
//! and the message the docs promise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use profiled_e2e::{
    ADMIN_TOKEN, RawAnswer, RawConn, Server, assert_status, closed_within, condition, embed_req,
    features, free_port, get_model, grpc_frame, sample, scrape_until, search_features, synth_repo,
    version_of, wait_model, with_bearer, write_admin_token,
};
use profiled_proto::v1 as pb;
use prost::Message;
use tonic::Code;

const EMBED: &str = "/profiled.v1.ProfileService/Embed";
const SEARCH: &str = "/profiled.v1.ProfileService/Search";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// The (code, message) of a raw answer, failing when it has none.
fn status_of(a: &RawAnswer) -> (i32, String) {
    a.grpc_status()
        .unwrap_or_else(|| panic!("no grpc-status in {a:?}"))
}

/// A Health/Check of the whole server (`""`) on `conn` answers SERVING.
async fn check_serving(conn: &RawConn) {
    let a = conn
        .grpc(HEALTH_CHECK, &[], &grpc_frame(&[]))
        .await
        .unwrap();
    assert_eq!(status_of(&a), (0, String::new()), "{a:?}");
    // One message: HealthCheckResponse { status: SERVING }.
    assert_eq!(a.data, grpc_frame(&[0x08, 0x01]), "{a:?}");
}

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

/// F3: a deadline that expires before the answer is ready ends the call
/// with DEADLINE_EXCEEDED — never CANCELLED "Timeout expired" (tonic's own
/// timer) — whether it expired on arrival (`grpc-timeout: 0n`) or during
/// the work (1 ms on a 256-user batch that bypasses the cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadlines_are_deadline_exceeded() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let conn = RawConn::connect(&server.addr).await.unwrap();
    let mut exceeded = 0;
    for i in 0..60u32 {
        let users = (0..256)
            .map(|u| features("engineer", f64::from(18 + (i * 256 + u) % 60)))
            .collect();
        let req = pb::EmbedRequest {
            cache: pb::CacheMode::Bypass as i32,
            ..embed_req(users)
        };
        let timeout = if i % 2 == 0 { "0n" } else { "1m" };
        let a = conn
            .grpc(
                EMBED,
                &[("grpc-timeout", timeout)],
                &grpc_frame(&req.encode_to_vec()),
            )
            .await
            .unwrap();
        let (code, msg) = status_of(&a);
        assert!(
            code == Code::Ok as i32 || code == Code::DeadlineExceeded as i32,
            "grpc-timeout {timeout}: code {code} {msg:?}"
        );
        if code == Code::DeadlineExceeded as i32 {
            exceeded += 1;
        }
        if timeout == "0n" {
            assert_eq!(code, Code::DeadlineExceeded as i32, "0n: {msg:?}");
        }
    }
    assert!(exceeded >= 30, "only {exceeded} deadlines expired");
    // The connection is still good.
    check_serving(&conn).await;
}

/// F4 and F7 (d): bytes that are not a well-formed request are the
/// caller's fault — INVALID_ARGUMENT with the decoder's message, never
/// INTERNAL — and so is a unary call with zero or two messages; a request
/// that is not gRPC (content-type JSON, or none) gets HTTP 415.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_the_callers_fault() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let conn = RawConn::connect(&server.addr).await.unwrap();
    let valid = embed_req(vec![features("engineer", 34.0)]).encode_to_vec();
    let mut random = Vec::with_capacity(4096);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push((x >> 24) as u8);
    }
    let mut deep_groups = vec![0x0b_u8; 100_000];
    deep_groups.extend([0x0c; 100_000]);
    let mut two = grpc_frame(&valid);
    two.extend(grpc_frame(&valid));
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "invalid wire type",
            EMBED,
            grpc_frame(&[0x10, 0x07]),
            "wire type",
        ),
        (
            "invalid UTF-8 in request_id",
            EMBED,
            grpc_frame(&[0x32, 0x02, 0xff, 0xfe]),
            "UTF-8",
        ),
        (
            "truncated length",
            EMBED,
            grpc_frame(&[0x12, 0x05, 0x01]),
            "malformed request message",
        ),
        (
            "11-byte varint",
            EMBED,
            grpc_frame(&[
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ]),
            "varint",
        ),
        (
            "field number 0",
            EMBED,
            grpc_frame(&[0x00, 0x00]),
            "malformed request message",
        ),
        (
            "packed floats of 7 bytes",
            SEARCH,
            grpc_frame(&[0x22, 0x09, 0x0a, 0x07, 1, 2, 3, 4, 5, 6, 7]),
            "malformed request message",
        ),
        (
            "groups nested 100,000 deep",
            EMBED,
            grpc_frame(&deep_groups),
            "malformed request message",
        ),
        (
            "random bytes",
            EMBED,
            grpc_frame(&random),
            "malformed request message",
        ),
        (
            "compressed flag without grpc-encoding",
            EMBED,
            vec![1, 0, 0, 0, 2, 0x08, 0x01],
            "compressed-flag",
        ),
        (
            "length prefix longer than the body",
            EMBED,
            vec![0, 0, 0, 0, 0x10, 0x0a],
            "length prefix is longer",
        ),
        ("zero messages", EMBED, Vec::new(), "no request message"),
        ("two messages", EMBED, two, "second request message"),
    ];
    for (what, path, body, needle) in cases {
        let a = conn.grpc(path, &[], &body).await.unwrap();
        let (code, msg) = status_of(&a);
        assert_eq!(code, Code::InvalidArgument as i32, "{what}: {code} {msg:?}");
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
    }
    // Not gRPC at all: HTTP 415, not served.
    for ct in [Some("application/json"), None] {
        let a = conn
            .call(EMBED, ct, &[], &grpc_frame(&valid))
            .await
            .unwrap();
        assert_eq!(a.http_status, 415, "content-type {ct:?}: {a:?}");
        assert!(
            a.data.is_empty(),
            "content-type {ct:?}: served {:?}",
            a.data
        );
    }
    // The same bytes as gRPC are served, on the same connection.
    let a = conn.grpc(EMBED, &[], &grpc_frame(&valid)).await.unwrap();
    assert_eq!(status_of(&a).0, 0, "{a:?}");
    let r = pb::EmbedResponse::decode(&a.data[5..]).unwrap();
    assert_eq!(r.users.len(), 1);
}

/// F7 (a): connections that do not finish the HTTP/2 handshake are closed
/// after `server.handshake_timeout_ms`, and at most
/// `server.max_connections` are open at once (the metrics count both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_are_closed_and_connections_capped() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let metrics = free_port().unwrap();
    let server = Server::start_with_metrics(
        &repo,
        &[
            ("PROFILED__SERVER__HANDSHAKE_TIMEOUT_MS", "1500"),
            ("PROFILED__SERVER__MAX_CONNECTIONS", "20"),
        ],
        &metrics,
    )
    .unwrap();
    server.wait_serving(Duration::from_secs(30)).await.unwrap();
    // 25 connections send 10 bytes of the preface and stop: 20 take every
    // slot, the others are closed at once...
    let mut slow = Vec::new();
    for _ in 0..25 {
        let mut t = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut t, &profiled_e2e::raw::H2_PREFACE[..10])
            .await
            .unwrap();
        slow.push(t);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = 0;
    for t in &mut slow {
        if closed_within(t, Duration::from_millis(20)).await {
            refused += 1;
        }
    }
    assert!(
        (5..=6).contains(&refused),
        "{refused} of 25 connections closed at once with server.max_connections = 20"
    );
    // ... and the rest are closed by the handshake timeout.
    for t in &mut slow {
        assert!(
            closed_within(t, Duration::from_secs(5)).await,
            "a connection that never finished its preface was kept"
        );
    }
    // Their slots are free again: a real client is served.
    let conn = RawConn::connect(&server.addr).await.unwrap();
    check_serving(&conn).await;
    let text = scrape_until(&metrics, 50, |t| {
        sample(
            t,
            "profiled_connections_closed_total",
            &[("reason", "handshake_timeout")],
        )
        .is_some_and(|v| v >= 19.0)
    })
    .await
    .unwrap();
    assert!(
        sample(
            &text,
            "profiled_connections_closed_total",
            &[("reason", "limit")]
        )
        .is_some_and(|v| v >= 5.0),
        "{text}"
    );
    assert!(
        sample(&text, "profiled_connections_open", &[]).is_some(),
        "{text}"
    );
}

/// F7 (b): a call with huge metadata is refused alone — the connection and
/// its next calls carry on (no GOAWAY): metadata over
/// `server.max_metadata_bytes` gets OUT_OF_RANGE naming the setting, and a
/// header list over HTTP/2's limit is refused for that stream only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_metadata_fails_only_its_call() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let conn = RawConn::connect(&server.addr).await.unwrap();
    let empty = grpc_frame(&[]);
    let big = "a".repeat(64 << 10);
    let a = conn
        .grpc(HEALTH_CHECK, &[("x-big", big.as_str())], &empty)
        .await
        .unwrap();
    let (code, msg) = status_of(&a);
    assert_eq!(code, Code::OutOfRange as i32, "{msg:?}");
    assert!(msg.contains("server.max_metadata_bytes = 16384"), "{msg:?}");
    check_serving(&conn).await;
    // 1 MiB: over HTTP/2's header list limit: that stream alone is refused
    // (HTTP 431 and/or RST_STREAM), whatever the client library reports.
    let huge = "a".repeat(1 << 20);
    match conn
        .grpc(HEALTH_CHECK, &[("x-huge", huge.as_str())], &empty)
        .await
    {
        Ok(a) => assert!(
            a.http_status == 431 || status_of(&a).0 != 0,
            "a 1 MiB header was served: {a:?}"
        ),
        Err(e) => {
            let h2 = e.downcast_ref::<h2::Error>();
            assert!(
                h2.is_some_and(|e| e.is_reset() && !e.is_go_away()),
                "the whole connection failed: {e:?}"
            );
        }
    }
    // The same connection serves the next call.
    check_serving(&conn).await;
}

/// F7 (c): `Health.Watch` of a service the server does not know streams
/// SERVICE_UNKNOWN and keeps the stream open, as the health protocol says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_of_an_unknown_service_streams_service_unknown() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(server.channel().await.unwrap());
    let mut stream = h
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, 3, "SERVICE_UNKNOWN expected, got {first:?}");
    // Still open: no end, no error.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.message())
            .await
            .is_err(),
        "the Watch stream ended"
    );
    // Known services still stream their status; Check of an unknown one is
    // NOT_FOUND, as the protocol says.
    let mut known = h
        .watch(tonic_health::pb::HealthCheckRequest {
            service: profiled_proto::PROFILE_SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(known.message().await.unwrap().unwrap().status, 1);
    assert_status(
        h.check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await,
        Code::NotFound,
        "",
    );
    // F6: a service name over limits.max_string_bytes is refused, not echoed.
    let huge = "s".repeat(100_000);
    for r in [
        h.check(tonic_health::pb::HealthCheckRequest {
            service: huge.clone(),
        })
        .await
        .map(|_| ()),
        h.watch(tonic_health::pb::HealthCheckRequest {
            service: huge.clone(),
        })
        .await
        .map(|_| ()),
    ] {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message()
                .starts_with("service: 100000 bytes exceeds limits.max_string_bytes = 256"),
            "{}",
            s.message()
        );
    }
}

/// F8: a version copied in file by file (`mkdir`, `model.json`, the rest
/// 2 s later — what `cp -r`, `rsync` or `kubectl cp` do) is FAILED while
/// incomplete and becomes READY (and the default) once complete, with no
/// Reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_copied_file_by_file_loads_once_complete() {
    let (tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();
    let src = tmp.path().join("src");
    profiled_e2e::make_model(&src, 2).unwrap();
    let dir = repo.join("synth/2");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(src.join("model.json"), dir.join("model.json")).unwrap();
    wait_model(&mut c, "synth", Duration::from_secs(20), |m| {
        version_of(m, 2).is_some_and(|v| v.state == pb::VersionState::Failed as i32)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "model.json" {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let m = wait_model(&mut c, "synth", Duration::from_secs(20), |m| {
        version_of(m, 2).is_some_and(|v| v.state == pb::VersionState::Ready as i32)
    })
    .await
    .unwrap();
    assert_eq!(m.default_version, 2, "{m:?}");
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
