//! Live swaps under load, graceful drain on SIGTERM, load shedding — against
//! the real `profiled` binary over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use profiled_e2e::{
    Server, event, get_model, input, occupation_and_age, publish_model, search_user, synth_repo,
    temp_repo, version_of, wait_model,
};
use profiled_proto::v1 as pb;
use tonic::Code;

/// A user given by features: [`occupation_and_age`] and one event (item
/// `2`, rated 5).
fn user(occupation: &str, age: f64) -> pb::UserInput {
    input(pb::UserFeatures {
        user_id: String::new(),
        fields: occupation_and_age(occupation, age),
        events: vec![event("2", 880_000_000, Some(5.0))],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_under_load_has_no_failed_requests_and_never_serves_a_broken_version() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let mut c = server.client().await.unwrap();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // (generation id → version, fixed-user vector), errors, calls
            let mut seen: Vec<(u64, u64, Vec<f32>)> = Vec::new();
            let mut errors = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // User 0 is fixed (cache hits); user 1 varies (misses).
                let req = pb::EmbedRequest {
                    users: vec![
                        user("engineer", 30.0),
                        user("writer", f64::from(t) * 1000.0 + i as f64),
                    ],
                    ..Default::default()
                };
                match c.embed(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let m = r.model.unwrap();
                        let v = r.users[0].vector.clone().unwrap().values;
                        seen.push((m.generation_id, m.version, v));
                    }
                    Err(e) => errors.push(format!("{:?}: {}", e.code(), e.message())),
                }
            }
            (seen, errors)
        }));
    }
    let mut c = server.client().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new good version: the default switches to it.
    assert_eq!(publish_model(&repo, "synth", 2, false).unwrap(), 2);
    wait_model(&mut c, "synth", Duration::from_secs(30), |m| {
        m.default_version == 2
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log_text()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A broken version: refused, recorded, never serves.
    assert_eq!(publish_model(&repo, "synth", 3, true).unwrap(), 3);
    let m = wait_model(&mut c, "synth", Duration::from_secs(30), |m| {
        version_of(m, 3).is_some_and(|v3| v3.state == pb::VersionState::Failed as i32)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log_text()));
    let v3 = version_of(&m, 3).unwrap();
    assert!(v3.reason.contains("golden"), "{}", v3.reason);
    assert_eq!(m.default_version, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Vec::new();
    for t in tasks {
        let (seen, errors) = t.await.unwrap();
        assert!(
            errors.is_empty(),
            "failed requests during the swap: {errors:?}"
        );
        assert!(!seen.is_empty());
        assert_eq!(seen.last().unwrap().1, 2, "clients ended on version 2");
        all.extend(seen);
    }
    // Every generation id belongs to exactly one version, never 3, and the
    // fixed user's vector is the same in every response of a generation.
    let mut by_gen: BTreeMap<u64, (u64, Vec<f32>)> = BTreeMap::new();
    let mut versions = BTreeSet::new();
    for (gid, version, v) in all {
        versions.insert(version);
        let e = by_gen.entry(gid).or_insert((version, v.clone()));
        assert_eq!(e.0, version, "generation {gid} answered as two versions");
        assert_eq!(
            e.1, v,
            "generation {gid} gave two different vectors for one user"
        );
    }
    assert!(!versions.contains(&3));
    assert!(
        versions.contains(&1) && versions.contains(&2),
        "{versions:?}"
    );
    let m = get_model(&mut c, "synth").await.unwrap();
    let v1 = version_of(&m, 1).unwrap();
    assert_eq!(v1.state, pb::VersionState::Unloaded as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_then_exits() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    // Slow batches: each call waits ~400 ms in the batcher.
    let mut server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__BATCHER__MAX_DELAY_US", "400000"),
            ("PROFILED__BATCHER__MAX_BATCH", "1000"),
            ("PROFILED__SERVER__GRACE_PERIOD_MS", "5000"),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let c = server.client().await.unwrap();
    let mut calls = Vec::new();
    for i in 0..6 {
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            c.embed(pb::EmbedRequest {
                users: vec![user("doctor", 40.0 + f64::from(i))],
                ..Default::default()
            })
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.sigterm().unwrap();
    for call in calls {
        let r = call.await.unwrap();
        assert!(r.is_ok(), "in-flight call failed during the drain: {r:?}");
    }
    assert!(
        server.wait_exit(Duration::from_secs(10)).unwrap(),
        "exit status"
    );
    assert!(server.log_text().contains("draining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_resource_exhausted_only() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__BATCHER__MAX_DELAY_US", "200000"),
            ("PROFILED__BATCHER__MAX_BATCH", "1000"),
            ("PROFILED__BATCHER__QUEUE_CAPACITY", "8"),
            ("PROFILED__SERVER__CONCURRENCY_PER_CONNECTION", "16"),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let c = server.client().await.unwrap();
    let mut calls = Vec::new();
    for i in 0..120 {
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            c.embed(pb::EmbedRequest {
                users: vec![user("artist", f64::from(i))],
                cache: pb::CacheMode::Bypass as i32,
                ..Default::default()
            })
            .await
        }));
    }
    let (mut ok, mut shed, mut other) = (0, 0, Vec::new());
    let mut messages = BTreeSet::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::ResourceExhausted => {
                shed += 1;
                messages.insert(e.message().to_string());
            }
            Err(e) => other.push(format!("{:?}: {}", e.code(), e.message())),
        }
    }
    assert!(
        other.is_empty(),
        "errors other than RESOURCE_EXHAUSTED: {other:?}"
    );
    assert!(ok > 0, "nothing succeeded");
    assert!(shed > 0, "nothing was shed");
    // The server is still healthy afterwards.
    let mut c2 = server.client().await.unwrap();
    c2.embed(pb::EmbedRequest {
        users: vec![user("artist", 1.0)],
        ..Default::default()
    })
    .await
    .unwrap();
    eprintln!("ok {ok}, shed {shed}: {messages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_with_a_corrupt_index_is_refused_and_the_old_one_keeps_serving() {
    let (_tmp, repo) = temp_repo().unwrap();
    assert_eq!(publish_model(&repo, "synth", 1, false).unwrap(), 1);
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();

    // Version 2: a valid model whose items.index has one flipped byte in
    // its vector section (past the 256-byte header), so only the index
    // checksum can catch it.
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("v");
    profiled_e2e::make_model(&dir, 2).unwrap();
    let index = dir.join("items.index");
    let mut bytes = std::fs::read(&index).unwrap();
    let at = 256 + (bytes.len() - 256) / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&index, &bytes).unwrap();
    assert_eq!(profiled_store::publish(&dir, &repo, "synth").unwrap().0, 2);

    let m = wait_model(&mut c, "synth", Duration::from_secs(30), |m| {
        version_of(m, 2).is_some_and(|v2| v2.state == pb::VersionState::Failed as i32)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log_text()));
    let v2 = version_of(&m, 2).unwrap();
    assert!(v2.reason.contains("items.index"), "{}", v2.reason);
    assert_eq!(m.default_version, 1);

    // The serving version still answers Search over its own (valid) index.
    let r = c
        .search(search_user("u3", pb::TargetIndex::Items, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.hits.len(), 3);
    assert_eq!(r.model.as_ref().unwrap().version, 1);
}
