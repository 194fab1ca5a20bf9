//! Operations and the remaining API behaviour over real sockets against the
//! real `profiled` binary: Prometheus series and their labels, Search
//! attributes / titles / seen-item exclusion for known users, Explain against
//! seed users, the UNLOADING state, and limit errors that name the limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use profiled_e2e::{
    ADMIN_TOKEN, Server, assert_status, categorical, condition, embed_req, features, free_port,
    get_model, input, input_by_id, publish_model, sample, scrape, scrape_until, search_features,
    search_user, synth_repo, users_target, version_of, wait_model, with_bearer, write_admin_token,
};
use profiled_proto::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_exports_labelled_series() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let metrics = free_port().unwrap();
    let server = Server::start_with_metrics(
        &repo,
        // A tiny cache so that entries get evicted.
        &[("PROFILED__CACHE__MAX_BYTES", "1500")],
        &metrics,
    )
    .unwrap();
    server.wait_serving(Duration::from_secs(30)).await.unwrap();
    let mut c = server.client().await.unwrap();

    // Misses, a hit, many distinct users (evictions), Search, Explain, and
    // one failing call.
    c.embed(embed_req(vec![features("engineer", 34.0)]))
        .await
        .unwrap();
    let hit = c
        .embed(embed_req(vec![features("engineer", 34.0)]))
        .await
        .unwrap()
        .into_inner();
    assert!(hit.users[0].cache_hit);
    for age in 0..24 {
        c.embed(embed_req(vec![features("writer", f64::from(age))]))
            .await
            .unwrap();
    }
    c.search(search_features(features("doctor", 50.0), 3))
        .await
        .unwrap();
    c.explain(pb::ExplainRequest {
        features: Some(features("doctor", 50.0)),
        groups_only: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        c.embed(embed_req(vec![features("engineer", f64::NAN)]))
            .await
            .is_err()
    );
    // A broken version 2: a failed load; version 1 keeps serving.
    publish_model(&repo, "synth", 2, true).unwrap();

    let m = [("model", "synth"), ("version", "1")];
    // The cache reports evictions from its housekeeping, which runs on cache
    // operations: keep embedding new users until one shows (and the failed
    // load of version 2 is counted).
    let mut text = String::new();
    let mut embeds = 26.0;
    for i in 0..100 {
        text = scrape(&metrics).unwrap();
        if sample(
            &text,
            "profiled_model_loads_total",
            &[("model", "synth"), ("version", "2"), ("outcome", "failed")],
        )
        .is_some()
            && sample(
                &text,
                "profiled_cache_evictions_total",
                &[("model", "synth")],
            )
            .is_some_and(|v| v > 0.0)
        {
            break;
        }
        c.embed(embed_req(vec![features("artist", f64::from(100 + i))]))
            .await
            .unwrap();
        embeds += 1.0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let count = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    // Request latency by rpc / model / version / code.
    for rpc in ["Embed", "Search", "Explain"] {
        let n = count(
            "profiled_request_seconds_count",
            &[
                ("rpc", rpc),
                ("model", "synth"),
                ("version", "1"),
                ("code", "OK"),
            ],
        );
        assert!(n >= 1.0, "{rpc}: {n}");
    }
    assert_eq!(
        count(
            "profiled_request_seconds_count",
            &[
                ("rpc", "Embed"),
                ("model", "synth"),
                ("version", "1"),
                ("code", "OK")
            ],
        ),
        embeds
    );
    assert_eq!(
        count(
            "profiled_request_seconds_count",
            &[
                ("rpc", "Embed"),
                ("model", "synth"),
                ("code", "InvalidArgument")
            ],
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            "profiled_request_seconds_bucket",
            &[
                ("rpc", "Embed"),
                ("model", "synth"),
                ("version", "1"),
                ("le", "0.001")
            ],
        )
        .is_some()
    );
    // Queue and compute time, batch sizes.
    for name in [
        "profiled_queue_seconds_count",
        "profiled_compute_seconds_count",
        "profiled_batch_size_count",
    ] {
        assert!(count(name, &m) >= 1.0, "{name}");
    }
    assert!(
        sample(
            &text,
            "profiled_batch_size_bucket",
            &[("model", "synth"), ("le", "1")]
        )
        .is_some()
    );
    // Cache per model.
    assert!(count("profiled_cache_hits_total", &[("model", "synth")]) >= 1.0);
    assert!(count("profiled_cache_misses_total", &[("model", "synth")]) >= 25.0);
    assert!(count("profiled_cache_evictions_total", &[("model", "synth")]) >= 1.0);
    // Loads, failed loads and swaps.
    assert_eq!(
        count(
            "profiled_model_loads_total",
            &[("model", "synth"), ("version", "1"), ("outcome", "ready")],
        ),
        1.0
    );
    assert!(count("profiled_model_swaps_total", &m) >= 1.0);
    // Mapped bytes of the serving generation: what GetModel reports.
    let info = get_model(&mut c, "synth").await.unwrap();
    let v1 = version_of(&info, 1).unwrap();
    assert!(v1.mapped_bytes > 0);
    assert_eq!(
        count("profiled_mapped_bytes", &m),
        v1.mapped_bytes as f64,
        "{text}"
    );
    let v2 = version_of(&info, 2).unwrap();
    assert_eq!(v2.state, pb::VersionState::Failed as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_attributes_titles_seen_items_and_explain_seed_users() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let mut c = server.client().await.unwrap();

    // GetModel lists the index attributes and the users' histories.
    let info = get_model(&mut c, "").await.unwrap();
    let v = &info.versions[0];
    let items = v.items_index.as_ref().unwrap();
    assert_eq!(items.attributes, ["parity"]);
    assert!(!items.has_histories);
    let users = v.users_index.as_ref().unwrap();
    assert_eq!(users.attributes, ["seen_items", "segment"]);
    assert!(users.has_histories);

    // include_attributes: item attributes and titles (synthetic titles are
    // "Movie K (year)", none for every 7th item from the 4th).
    let r = c
        .search(pb::SearchRequest {
            include_attributes: true,
            ..search_features(features("doctor", 50.0), 30)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.hits.len(), 30);
    for h in &r.hits {
        let k: usize = h.id.parse().unwrap();
        let parity = &h.attributes["parity"].values;
        assert_eq!(
            parity,
            &[if (k - 1).is_multiple_of(2) {
                "even"
            } else {
                "odd"
            }]
        );
        if (k - 1) % 7 == 3 {
            assert_eq!(h.title, "", "item {k}");
        } else {
            assert!(
                h.title.starts_with(&format!("Movie {k} (")),
                "{:?}",
                h.title
            );
        }
    }
    // Without the flag: neither.
    let r = c
        .search(search_features(features("doctor", 50.0), 3))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.hits
            .iter()
            .all(|h| h.attributes.is_empty() && h.title.is_empty())
    );
    // Users: their attributes (histories are not returned).
    let r = c
        .search(pb::SearchRequest {
            include_attributes: true,
            ..search_user("u3", pb::TargetIndex::Users, 5)
        })
        .await
        .unwrap()
        .into_inner();
    for h in &r.hits {
        let n: usize = h.id[1..].parse().unwrap();
        assert_eq!(
            h.attributes["segment"].values,
            [if n.is_multiple_of(2) { "a" } else { "b" }]
        );
        assert!(!h.attributes.contains_key("seen_items"));
        assert!(h.title.is_empty());
    }

    // exclude_seen_items for a known user: the history stored in the users
    // index (read here straight from the file) is excluded, nothing else.
    let file = profiled_index::IndexFile::open(repo.join("synth/1/users.index"), 16).unwrap();
    let row = file.row_of("u3").unwrap();
    let seen: BTreeSet<String> = file
        .attribute_values("seen_items")
        .unwrap()
        .into_iter()
        .filter(|(v, _)| {
            file.postings("seen_items", v)
                .unwrap()
                .binary_search(&row)
                .is_ok()
        })
        .map(|(v, _)| v.to_string())
        .collect();
    let known: BTreeSet<String> = (1..=30).map(|k| k.to_string()).collect();
    let seen_known = seen.intersection(&known).count();
    assert!(seen_known > 0, "u3 has seen no known item: {seen:?}");
    let search_u3 = |exclude: bool| pb::SearchRequest {
        filter: Some(pb::Filter {
            exclude_seen_items: exclude,
            ..Default::default()
        }),
        ..search_user("u3", pb::TargetIndex::Unspecified, 30)
    };
    let all = c.search(search_u3(false)).await.unwrap().into_inner();
    assert_eq!(all.hits.len(), 30);
    let unseen = c.search(search_u3(true)).await.unwrap().into_inner();
    assert_eq!(unseen.hits.len(), 30 - seen_known);
    assert!(unseen.hits.iter().all(|h| !seen.contains(&h.id)));
    // Same order as the unfiltered ranking with the seen items removed.
    let expect: Vec<&str> = all
        .hits
        .iter()
        .map(|h| h.id.as_str())
        .filter(|id| !seen.contains(*id))
        .collect();
    let got: Vec<&str> = unseen.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(got, expect);

    // Explain against seed users given by id: base score = cosine of the
    // profile with the re-normalised mean of the seeds' stored profiles.
    let emb = c
        .embed(pb::EmbedRequest {
            users: vec![
                input(features("doctor", 50.0)),
                input_by_id("u1"),
                input_by_id("u2"),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let vecs: Vec<Vec<f32>> = emb
        .users
        .iter()
        .map(|u| u.vector.as_ref().unwrap().values.clone())
        .collect();
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let (a, b) = (unit(&vecs[1]), unit(&vecs[2]));
    let centroid = unit(&a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>());
    let expected: f32 = unit(&vecs[0])
        .iter()
        .zip(&centroid)
        .map(|(x, y)| x * y)
        .sum();
    let r = c
        .explain(pb::ExplainRequest {
            features: Some(features("doctor", 50.0)),
            target: Some(users_target(&["u1", "u2"], vec![])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        (r.base_score - f64::from(expected)).abs() < 2e-3,
        "base score {} vs cosine to the seed centroid {expected}",
        r.base_score
    );
    assert_eq!(r.value_kind, pb::ValueKind::ScoreDrop as i32);
    assert!(!r.groups.is_empty());
    assert_status(
        c.explain(pb::ExplainRequest {
            features: Some(features("doctor", 50.0)),
            target: Some(users_target(&["u1", "nobody"], vec![])),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "target.users.seed_user_ids[1]: unknown user \"nobody\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_version_is_unloading_until_its_last_request_ends() {
    let (tmp, repo) = synth_repo(1).unwrap();
    publish_model(&repo, "synth", 2, false).unwrap();
    let token = write_admin_token(tmp.path()).unwrap();
    let metrics = free_port().unwrap();
    // One worker that waits 1.5 s for company before computing a lone job:
    // a request stays in flight (holding its generation) long enough.
    let server = Server::start_with_metrics(
        &repo,
        &[
            ("PROFILED__ADMIN__TOKEN_FILE", token.to_str().unwrap()),
            ("PROFILED__MODELS__POLICY", "latest:2"),
            ("PROFILED__BATCHER__WORKERS", "1"),
            ("PROFILED__BATCHER__MAX_BATCH", "64"),
            ("PROFILED__BATCHER__MAX_DELAY_US", "1500000"),
        ],
        &metrics,
    )
    .unwrap();
    server.wait_serving(Duration::from_secs(30)).await.unwrap();
    let ch = server.channel().await.unwrap();
    let mut admin = pb::model_admin_client::ModelAdminClient::new(ch.clone());
    // Both versions READY.
    let snap = admin
        .reload(with_bearer(
            pb::ReloadRequest {
                model: "synth".into(),
                version: None,
                wait: true,
            },
            Some(ADMIN_TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    let state = |m: &pb::ModelInfo, v: u64| {
        let x = version_of(m, v).unwrap();
        (
            pb::VersionState::try_from(x.state).unwrap(),
            x.generation_id,
        )
    };
    assert_eq!(state(&snap.models[0], 1).0, pb::VersionState::Ready);
    let gen1 = state(&snap.models[0], 1).1;

    // A call pinned to version 1, queued in the batcher.
    let mut c = pb::profile_service_client::ProfileServiceClient::new(ch.clone());
    let call = tokio::spawn(async move {
        let mut req = embed_req(vec![features("engineer", 34.0)]);
        req.model = Some(pb::ModelSpec::pinned("synth", 1));
        req.cache = pb::CacheMode::Bypass as i32;
        c.embed(req).await
    });
    scrape_until(&metrics, 100, |t| {
        sample(t, "profiled_batcher_queued", &[("model", "synth")]) == Some(1.0)
    })
    .await
    .unwrap();

    // Unload version 1 while the call holds it: UNLOADING, same generation.
    let m = admin
        .unload(with_bearer(
            pb::UnloadRequest {
                model: "synth".into(),
                version: 1,
                force: false,
            },
            Some(ADMIN_TOKEN),
        ))
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap();
    assert_eq!(state(&m, 1), (pb::VersionState::Unloading, gen1));
    let mut c = pb::profile_service_client::ProfileServiceClient::new(ch.clone());
    let mut pinned = embed_req(vec![features("writer", 20.0)]);
    pinned.model = Some(pb::ModelSpec::pinned("synth", 1));
    assert_status(c.embed(pinned).await, Code::NotFound, "version 1");

    // The in-flight call finishes on version 1; then it is UNLOADED.
    let r = call.await.unwrap().unwrap().into_inner();
    assert_eq!(r.model.as_ref().unwrap().version, 1);
    assert_eq!(r.model.as_ref().unwrap().generation_id, gen1);
    let m = wait_model(&mut c, "synth", Duration::from_secs(2), |info| {
        state(info, 1).0 == pb::VersionState::Unloaded
    })
    .await
    .expect("version 1 never became UNLOADED");
    assert_eq!(state(&m, 1), (pb::VersionState::Unloaded, 0));
    assert_eq!(state(&m, 2).0, pb::VersionState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_error_names_the_limit_and_its_value() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let server = Server::start_serving(
        &repo,
        &[
            ("PROFILED__SERVER__MAX_RESPONSE_BYTES", "2000"),
            ("PROFILED__LIMITS__MAX_SEEDS", "2"),
            ("PROFILED__LIMITS__MAX_FILTER_CONDITIONS", "1"),
            ("PROFILED__LIMITS__MAX_FILTER_VALUES", "2"),
            ("PROFILED__LIMITS__MAX_FILTER_IDS", "3"),
            ("PROFILED__LIMITS__MAX_FIELDS_PER_USER", "2"),
            ("PROFILED__LIMITS__MAX_STRING_BYTES", "16"),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut c = server.client().await.unwrap();
    let search = |filter: pb::Filter| pb::SearchRequest {
        filter: Some(filter),
        ..search_features(features("doctor", 50.0), 0)
    };
    let cond = |values: &[&str]| condition("parity", pb::AttributeOp::In, values);

    // Response size: Search hits with vectors (16 floats each) overflow 2000 bytes.
    assert_status(
        c.search(pb::SearchRequest {
            include_vectors: true,
            ..search_features(features("doctor", 50.0), 30)
        })
        .await,
        Code::OutOfRange,
        "exceeds server.max_response_bytes = 2000",
    );
    // The same search within the limit works.
    c.search(pb::SearchRequest {
        include_vectors: true,
        ..search_features(features("doctor", 50.0), 3)
    })
    .await
    .unwrap();
    // Filters.
    assert_status(
        c.search(search(pb::Filter {
            conditions: vec![cond(&["even"]), cond(&["odd"])],
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "filter.conditions: 2 conditions exceeds limits.max_filter_conditions = 1",
    );
    assert_status(
        c.search(search(pb::Filter {
            conditions: vec![cond(&["even", "odd", "x"])],
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "filter.conditions[0].values: 3 values exceeds limits.max_filter_values = 2",
    );
    assert_status(
        c.search(search(pb::Filter {
            allow_ids: vec!["1".into(), "2".into()],
            deny_ids: vec!["3".into(), "4".into()],
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "4 ids exceeds limits.max_filter_ids = 3",
    );
    // Seeds (Search and Explain).
    assert_status(
        c.search(pb::SearchRequest {
            query: Some(pb::search_request::Query::Seeds(pb::SeedSet {
                user_ids: vec!["u1".into(), "u2".into(), "u3".into()],
                vectors: vec![],
            })),
            target: pb::TargetIndex::Users as i32,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "seeds: 3 seeds exceeds limits.max_seeds = 2",
    );
    assert_status(
        c.explain(pb::ExplainRequest {
            features: Some(features("doctor", 50.0)),
            target: Some(users_target(
                &["u1", "u2"],
                vec![pb::Vector::from_f32(vec![1.0; 16])],
            )),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "target.users: 3 seeds exceeds limits.max_seeds = 2",
    );
    // Fields per user and string sizes.
    let mut f = features("doctor", 50.0);
    f.fields.insert("gender".into(), categorical("F"));
    assert_status(
        c.embed(embed_req(vec![f])).await,
        Code::InvalidArgument,
        "users[0].features.fields: 3 fields exceeds limits.max_fields_per_user = 2",
    );
    assert_status(
        c.embed(embed_req(vec![features("a-very-long-occupation", 50.0)]))
            .await,
        Code::InvalidArgument,
        "22 bytes exceeds limits.max_string_bytes = 16",
    );
}

/// Concurrent misses for one user are computed once: a burst of identical
/// Embed calls for a user the cache has not seen rides one computation (the
/// rest wait for it, or hit the entry it left), and all get the same vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_user_are_computed_once() {
    let (_tmp, repo) = synth_repo(1).unwrap();
    let metrics = free_port().unwrap();
    let server = Server::start_with_metrics(&repo, &[], &metrics).unwrap();
    server.wait_serving(Duration::from_secs(30)).await.unwrap();
    let c = server.client().await.unwrap();
    let computed = |text: &str| {
        sample(
            text,
            "profiled_batch_size_sum",
            &[("model", "synth"), ("version", "1")],
        )
        .unwrap_or(0.0)
    };
    // A long history (the server's limit) so the computation takes a while
    // and the burst overlaps it.
    let mut user = features("pilot", 41.0);
    user.events = (0..1000)
        .map(|i| profiled_e2e::event(&(1 + i % 20).to_string(), 880_000_000 + i64::from(i), None))
        .collect();
    for round in 0..3 {
        user.fields
            .insert("age".into(), profiled_e2e::number(f64::from(30 + round)));
        let before = computed(&scrape(&metrics).unwrap());
        let calls = (0..24).map(|_| {
            let mut c = c.clone();
            let req = embed_req(vec![user.clone()]);
            async move { c.embed(req).await.map(|r| r.into_inner()) }
        });
        let answers: Vec<pb::EmbedResponse> = futures::future::join_all(calls)
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        let misses = answers.iter().filter(|a| !a.users[0].cache_hit).count();
        assert_eq!(
            misses, 1,
            "round {round}: one computation, the rest served from it"
        );
        let first = &answers[0].users[0].vector;
        assert!(answers.iter().all(|a| &a.users[0].vector == first));
        let text = scrape_until(&metrics, 50, |t| computed(t) >= before + 1.0)
            .await
            .unwrap();
        assert_eq!(
            computed(&text),
            before + 1.0,
            "round {round}: users computed"
        );
    }
}
