//! Live user state shared through a real Redis (Debian's `redis-server`,
//! started by the tests on loopback ports; `tests/setup-redis` installs
//! it): two `profiled` processes on one Redis node — read-your-writes
//! across them, concurrent appends of one user from both, erasure seen by
//! both, the node killed and restarted under them — and one `profiled` on
//! a Redis Cluster of three masters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use profiled_e2e::{
    Server, assert_status, embed_req, event, event_with_id, input_by_id, synth_repo, track_req,
    user_features, user_track,
};
use profiled_proto::v1 as pb;
use profiled_state::testing::{RedisCluster, RedisServer, cli};
use tonic::Code;

const T0: i64 = 1_700_000_000;

fn redis_env(urls: &[String], cluster: bool) -> Vec<(&'static str, String)> {
    let list = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        ("PROFILED__STATE__BACKEND", "redis".to_string()),
        ("PROFILED__STATE__REDIS__URLS", format!("[{list}]")),
        ("PROFILED__STATE__REDIS__CLUSTER", cluster.to_string()),
        (
            "PROFILED__STATE__REDIS__CONNECT_TIMEOUT_MS",
            "500".to_string(),
        ),
        (
            "PROFILED__STATE__REDIS__RESPONSE_TIMEOUT_MS",
            "2000".to_string(),
        ),
    ]
}

async fn start(repo: &std::path::Path, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_serving(repo, &env, Duration::from_secs(30))
        .await
        .unwrap()
}

fn embed_id(id: &str) -> pb::EmbedRequest {
    pb::EmbedRequest {
        users: vec![input_by_id(id)],
        ..Default::default()
    }
}

async fn total_events(c: &mut profiled_e2e::ProfileClient, id: &str) -> u32 {
    c.get_user(pb::GetUserRequest {
        user_id: id.into(),
        page_size: 1,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .total_events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_redis() {
    let mut redis = RedisServer::start();
    let (_tmp, repo) = synth_repo(21).unwrap();
    let env = redis_env(&[redis.url()], false);
    let a = start(&repo, &env).await;
    let b = start(&repo, &env).await;
    let mut ca = a.client().await.unwrap();
    let mut cb = b.client().await.unwrap();

    // Tracked on A, served by id on B — the same profile A serves.
    ca.track(track_req(vec![user_track(
        "r1",
        vec![event("3", T0, Some(4.0)), event("7", T0 + 1, None)],
        vec![],
    )]))
    .await
    .unwrap();
    let from_b = cb.embed(embed_id("r1")).await.unwrap().into_inner();
    assert_eq!(from_b.users[0].source, pb::ProfileSource::UserState as i32);
    let from_a = ca.embed(embed_id("r1")).await.unwrap().into_inner();
    assert_eq!(
        from_a.users[0].vector.as_ref().unwrap().values,
        from_b.users[0].vector.as_ref().unwrap().values
    );

    // Read-your-writes across replicas: every acknowledged event is seen by
    // the other replica's very next read, and changes its next profile.
    let mut last = from_b.users[0].vector.clone().unwrap().values;
    for k in 0..30i64 {
        let (w, r) = if k % 2 == 0 {
            (&mut ca, &mut cb)
        } else {
            (&mut cb, &mut ca)
        };
        w.track(track_req(vec![user_track(
            "r1",
            vec![event(&format!("{}", 1 + k % 20), T0 + 10 + k, None)],
            vec![],
        )]))
        .await
        .unwrap();
        assert_eq!(total_events(r, "r1").await, 3 + k as u32, "after event {k}");
        let v = r.embed(embed_id("r1")).await.unwrap().into_inner().users[0]
            .vector
            .clone()
            .unwrap()
            .values;
        assert_ne!(
            v, last,
            "event {k} changed the next profile on the other replica"
        );
        last = v;
    }

    // Concurrent appends of one user from both replicas lose nothing.
    let mut tasks = Vec::new();
    for (w, c) in [(0, ca.clone()), (1, cb.clone())] {
        let mut c = c;
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for k in 0..60i64 {
                let r = c
                    .track(track_req(vec![user_track(
                        "hot",
                        vec![event_with_id("5", T0 + k, None, &format!("w{w}-{k}"))],
                        vec![],
                    )]))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.users[0].stored, 1);
                versions.push(r.users[0].state_version);
            }
            versions
        }));
    }
    for t in tasks {
        let v = t.await.unwrap();
        assert!(v.windows(2).all(|w| w[0] < w[1]), "versions grow: {v:?}");
    }
    assert_eq!(total_events(&mut ca, "hot").await, 120);
    assert_eq!(total_events(&mut cb, "hot").await, 120);

    // Erasure on A is seen by B at once.
    let d = ca
        .delete_user(pb::DeleteUserRequest {
            user_id: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.existed);
    assert_status(cb.embed(embed_id("r1")).await, Code::NotFound, "erased");

    // The Redis node dies: calls that need it fail UNAVAILABLE naming the
    // store, calls by features keep working; it comes back and the same
    // servers recover without a restart, with every acknowledged event.
    redis.kill();
    let r = ca
        .track(track_req(vec![user_track(
            "r2",
            vec![event("1", T0, None)],
            vec![],
        )]))
        .await;
    assert_status(r, Code::Unavailable, "redis");
    assert_status(cb.embed(embed_id("hot")).await, Code::Unavailable, "redis");
    let by_features = cb
        .embed(embed_req(vec![user_features("x", "writer", 30.0)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_features.users.len(), 1);
    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if ca
            .track(track_req(vec![user_track(
                "r2",
                vec![event("1", T0, None)],
                vec![],
            )]))
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "A never recovered after Redis came back");
    assert_eq!(
        total_events(&mut cb, "hot").await,
        120,
        "acknowledged events survived"
    );
    let hot = cb.embed(embed_id("hot")).await.unwrap().into_inner();
    assert_eq!(hot.users[0].source, pb::ProfileSource::UserState as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_on_a_three_master_cluster() {
    let cluster = RedisCluster::start();
    let (_tmp, repo) = synth_repo(22).unwrap();
    let urls: Vec<String> = cluster.nodes.iter().map(RedisServer::url).collect();
    let server = start(&repo, &redis_env(&urls, true)).await;
    let mut c = server.client().await.unwrap();
    let users: Vec<_> = (0..40)
        .map(|k| {
            user_track(
                &format!("c{k}"),
                vec![event(&format!("{}", 1 + k % 20), T0 + k as i64, None)],
                vec![],
            )
        })
        .collect();
    for chunk in users.chunks(10) {
        let r = c
            .track(track_req(chunk.to_vec()))
            .await
            .unwrap()
            .into_inner();
        assert!(r.users.iter().all(|u| u.stored == 1 && u.error.is_none()));
    }
    let r = c
        .embed(pb::EmbedRequest {
            users: (0..40).map(|k| input_by_id(&format!("c{k}"))).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.users
            .iter()
            .all(|u| u.source == pb::ProfileSource::UserState as i32)
    );
    // The users' keys are spread over the three masters.
    for n in &cluster.nodes {
        let keys: u64 = cli(n.port, &["dbsize"]).trim().parse().unwrap_or(0);
        assert!(keys > 0, "node {} holds none of 40 users", n.port);
    }
}
