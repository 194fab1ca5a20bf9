//! The Redis backend against real `redis-server` processes: a single node
//! and a 3-master cluster (tests/support). Run `tests/setup-redis` first.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use profiled_state::redis::{RedisConfig, RedisStore};
use profiled_state::{Error, Policy, StoredEvent, UserStateStore, UserUpdate};
use support::{RedisCluster, RedisServer};

fn policy() -> Policy {
    Policy {
        retain_events: 100_000,
        max_clock_skew_s: 300,
        now_s: 2_000_000_000,
    }
}

fn update(user: &str, ids: impl IntoIterator<Item = String>, ts: i64) -> UserUpdate {
    UserUpdate {
        user_id: user.to_owned(),
        events: ids
            .into_iter()
            .map(|id| StoredEvent {
                item: "it".to_owned(),
                timestamp: ts,
                rating: Some(3.0),
                event_id: Some(id),
            })
            .collect(),
        fields: vec![],
    }
}

async fn read_your_writes_across_instances(config: RedisConfig) -> anyhow::Result<()> {
    let a = RedisStore::open(&config).await?;
    let b = RedisStore::open(&config).await?;
    for (i, user) in ["alice", "bob", "carol", "dave", "erin"].iter().enumerate() {
        let r = a
            .apply(vec![update(user, [format!("{user}-1")], 10)], policy())
            .await;
        assert_eq!(r[0].clone()?.version, 1);
        let seen = b
            .get(user)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{user} not seen by b"))?;
        assert_eq!(seen.events.len(), 1, "user {i}");
        let r = b
            .apply(vec![update(user, [format!("{user}-2")], 11)], policy())
            .await;
        assert_eq!(r[0].clone()?.version, 2);
        assert_eq!(a.get(user).await?.map(|s| s.events.len()), Some(2));
        // The same events again, through the other instance: duplicates.
        let r = a
            .apply(vec![update(user, [format!("{user}-2")], 11)], policy())
            .await;
        let again = r[0].clone()?;
        assert_eq!((again.stored, again.duplicates, again.version), (0, 1, 2));
    }
    assert_eq!(a.stats().await?.users, 5);
    Ok(())
}

async fn concurrent_appends_from_two_instances(config: RedisConfig) -> anyhow::Result<()> {
    let stores = [
        Arc::new(RedisStore::open(&config).await?),
        Arc::new(RedisStore::open(&config).await?),
    ];
    let (tasks_per_store, applies) = (4, 25);
    let mut handles = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..tasks_per_store {
            let store = Arc::clone(store);
            handles.push(tokio::spawn(async move {
                let mut versions = Vec::new();
                for a in 0..applies {
                    let ids = (0..3).map(|e| format!("s{s}-t{t}-a{a}-e{e}"));
                    let r = store
                        .apply(vec![update("shared", ids, 100 + a)], policy())
                        .await;
                    match r.into_iter().next() {
                        Some(Ok(applied)) => {
                            assert_eq!(applied.stored, 3);
                            versions.push(applied.version);
                        }
                        other => panic!("apply failed: {other:?}"),
                    }
                }
                versions
            }));
        }
    }
    let mut all = Vec::new();
    for h in handles {
        let v = h.await?;
        assert!(
            v.windows(2).all(|w| w[0] < w[1]),
            "versions not monotonic: {v:?}"
        );
        all.extend(v);
    }
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "two applies were given the same version"
    );
    let state = stores[0]
        .get("shared")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no state"))?;
    let total = 2 * tasks_per_store * applies as usize * 3;
    assert_eq!(state.events.len(), total, "events were lost");
    assert_eq!(
        state.version,
        (2 * tasks_per_store * applies as usize) as u64
    );
    Ok(())
}

async fn erasure_is_seen_by_both(config: RedisConfig) -> anyhow::Result<()> {
    let a = RedisStore::open(&config).await?;
    let b = RedisStore::open(&config).await?;
    a.apply(vec![update("gone", ["g1".to_owned()], 5)], policy())
        .await[0]
        .clone()?;
    assert!(b.delete("gone").await?);
    for s in [&a, &b] {
        let t = s
            .get("gone")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no tombstone"))?;
        assert!(t.erased && t.events.is_empty());
        assert_eq!(t.version, 2);
    }
    assert!(!a.delete("gone").await?);
    let r = a
        .apply(vec![update("gone", ["g1".to_owned()], 5)], policy())
        .await;
    let fresh = r[0].clone()?;
    assert_eq!((fresh.stored, fresh.version), (1, 3));
    assert!(
        b.get("gone")
            .await?
            .is_some_and(|s| !s.erased && s.events.len() == 1)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_read_your_writes_across_two_instances() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    read_your_writes_across_instances(redis.config()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_concurrent_appends_from_two_instances_lose_nothing() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    concurrent_appends_from_two_instances(redis.config()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_erasure_is_seen_by_both_instances() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    erasure_is_seen_by_both(redis.config()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_read_your_writes_across_two_instances() -> anyhow::Result<()> {
    let cluster = RedisCluster::start();
    read_your_writes_across_instances(cluster.config()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_concurrent_appends_from_two_instances_lose_nothing() -> anyhow::Result<()> {
    let cluster = RedisCluster::start();
    concurrent_appends_from_two_instances(cluster.config()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_erasure_is_seen_by_both_instances() -> anyhow::Result<()> {
    let cluster = RedisCluster::start();
    erasure_is_seen_by_both(cluster.config()).await
}

/// Applies `update` until it succeeds, for the store to reconnect after a
/// restart (bounded: 600 tries).
async fn apply_until_ok(store: &RedisStore, u: UserUpdate) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 0..600 {
        match store.apply(vec![u.clone()], policy()).await.remove(0) {
            Ok(_) => return Ok(()),
            Err(e) => {
                if attempt % 20 == 0 {
                    eprintln!("{}: attempt {attempt}: {e}", u.user_id);
                }
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("store did not recover: {last:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_restart_the_same_store_recovers_with_every_acknowledged_event()
-> anyhow::Result<()> {
    let mut redis = RedisServer::start();
    let store = RedisStore::open(&redis.config()).await?;
    let mut acked = HashSet::new();
    for i in 0..50 {
        let id = format!("before-{i}");
        store
            .apply(
                vec![update(&format!("u{}", i % 5), [id.clone()], i)],
                policy(),
            )
            .await[0]
            .clone()?;
        acked.insert(id);
    }
    redis.kill();
    let expected_name = format!("redis:127.0.0.1:{}", redis.port);
    match store
        .apply(vec![update("u0", ["during".to_owned()], 1)], policy())
        .await
        .remove(0)
    {
        Err(Error::Unavailable { store: name, .. }) => assert_eq!(name, expected_name),
        other => panic!("expected Unavailable while Redis is down, got {other:?}"),
    }
    match store.get("u0").await {
        Err(Error::Unavailable { store: name, .. }) => assert_eq!(name, expected_name),
        other => panic!("expected Unavailable while Redis is down, got {other:?}"),
    }
    redis.restart();
    apply_until_ok(&store, update("u0", ["after-0".to_owned()], 1_000)).await?;
    acked.insert("after-0".to_owned());
    let mut found = HashSet::new();
    for u in 0..5 {
        let s = store
            .get(&format!("u{u}"))
            .await?
            .ok_or_else(|| anyhow::anyhow!("u{u} lost"))?;
        found.extend(s.events.into_iter().filter_map(|e| e.event_id));
    }
    let missing: Vec<_> = acked.difference(&found).collect();
    assert!(missing.is_empty(), "acknowledged events lost: {missing:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_restart_the_same_store_recovers_with_every_acknowledged_event()
-> anyhow::Result<()> {
    let mut cluster = RedisCluster::start();
    let store = RedisStore::open(&cluster.config()).await?;
    let users: Vec<String> = (0..30).map(|u| format!("cu{u}")).collect();
    let mut acked = HashSet::new();
    for (i, user) in users.iter().enumerate() {
        let id = format!("before-{i}");
        store
            .apply(vec![update(user, [id.clone()], i as i64)], policy())
            .await[0]
            .clone()?;
        acked.insert(id);
    }
    cluster.nodes[0].kill();
    eprintln!("killed node {}", cluster.nodes[0].port);
    // Some of 30 users live on the killed master's slots.
    let results = store
        .apply(
            users
                .iter()
                .map(|u| update(u, ["during".to_owned()], 1))
                .collect(),
            policy(),
        )
        .await;
    let unavailable = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Unavailable { store, .. }) if store.starts_with("redis-cluster:")))
        .count();
    assert!(
        unavailable > 0,
        "no call failed with the node down: {results:?}"
    );
    cluster.nodes[0].restart();
    cluster.wait_ok();
    for user in &users {
        apply_until_ok(&store, update(user, [format!("after-{user}")], 2_000)).await?;
        acked.insert(format!("after-{user}"));
    }
    let mut found = HashSet::new();
    for user in &users {
        let s = store
            .get(user)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{user} lost"))?;
        found.extend(s.events.into_iter().filter_map(|e| e.event_id));
    }
    let missing: Vec<_> = acked.difference(&found).collect();
    assert!(missing.is_empty(), "acknowledged events lost: {missing:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_is_full_and_a_foreign_key_is_corrupt() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let store = RedisStore::open(&redis.config()).await?;
    // A key of the wrong type where a user's hash belongs.
    support::cli(redis.port, &["set", "profiled:u:{weird}", "x"]);
    match store.get("weird").await {
        Err(Error::Corrupt { user, .. }) => assert_eq!(user, "weird"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    support::cli(
        redis.port,
        &["config", "set", "maxmemory-policy", "noeviction"],
    );
    support::cli(redis.port, &["config", "set", "maxmemory", "3mb"]);
    let mut full = None;
    for i in 0..2_000 {
        let ids = (0..50).map(|e| format!("{i}-{e}-{}", "x".repeat(200)));
        match store
            .apply(vec![update(&format!("big{i}"), ids, 1)], policy())
            .await
            .remove(0)
        {
            Ok(_) => {}
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    match full {
        Some(Error::Full { store: name, .. }) => assert!(name.starts_with("redis:"), "{name}"),
        other => panic!("expected Full once maxmemory is reached, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_updates_store_nothing_and_the_rest_lose_nothing() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    // One attempt only: a lost compare-and-set is Contended at once.
    let config = RedisConfig {
        max_attempts: 1,
        ..redis.config()
    };
    let stores = [
        Arc::new(RedisStore::open(&config).await?),
        Arc::new(RedisStore::open(&config).await?),
    ];
    let mut handles = Vec::new();
    for t in 0..8 {
        let store = Arc::clone(&stores[t % 2]);
        handles.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            for a in 0..20 {
                let ids: Vec<String> = (0..3).map(|e| format!("t{t}-a{a}-e{e}")).collect();
                match store
                    .apply(vec![update("hot", ids.clone(), 7)], policy())
                    .await
                    .remove(0)
                {
                    Ok(_) => ok.extend(ids),
                    Err(Error::Contended { user, attempts }) => {
                        assert_eq!((user.as_str(), attempts), ("hot", 1));
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            ok
        }));
    }
    let mut acked = HashSet::new();
    for h in handles {
        acked.extend(h.await?);
    }
    let state = stores[0]
        .get("hot")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no state"))?;
    let stored: HashSet<String> = state
        .events
        .into_iter()
        .filter_map(|e| e.event_id)
        .collect();
    // Exactly the acknowledged events: nothing of a Contended update.
    assert_eq!(stored, acked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_factory_opens_either_backend_and_an_absent_redis_is_unavailable() -> anyhow::Result<()>
{
    use profiled_state::embedded::EmbeddedConfig;
    use profiled_state::{Backend, StateConfig};

    let redis = RedisServer::start();
    let dir = tempfile::tempdir()?;
    for (backend, kind) in [(Backend::Embedded, "embedded"), (Backend::Redis, "redis")] {
        let config = StateConfig {
            backend,
            embedded: EmbeddedConfig {
                dir: dir.path().to_path_buf(),
                ..EmbeddedConfig::default()
            },
            redis: redis.config(),
        };
        let store = profiled_state::open(&config).await?;
        assert_eq!(store.backend(), kind);
        store
            .apply(vec![update("f", ["f1".to_owned()], 1)], policy())
            .await[0]
            .clone()?;
        assert!(store.get("f").await?.is_some());
    }
    // A Redis that is not there yet: the store opens down, fails at once
    // with Unavailable naming it, and connects when the node appears.
    let port = support::free_port();
    let absent = RedisConfig {
        urls: vec![format!("redis://127.0.0.1:{port}")],
        connect_timeout_ms: 300,
        ..RedisConfig::default()
    };
    let late = RedisStore::open(&absent).await?;
    assert!(!late.is_up());
    match late.get("f").await {
        Err(Error::Unavailable { store, message }) => {
            assert_eq!(store, format!("redis:127.0.0.1:{port}"));
            assert!(message.contains("cannot connect at start"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let _node = RedisServer::start_on(port);
    apply_until_ok(&late, update("late", ["l1".to_owned()], 1)).await?;
    assert!(late.is_up());
    assert_eq!(late.get("late").await?.map(|s| s.events.len()), Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_trips_the_breaker_and_calls_fail_at_once_until_it_is_back()
-> anyhow::Result<()> {
    let mut redis = RedisServer::start();
    let store = RedisStore::open(&redis.config()).await?;
    store
        .apply(vec![update("b", ["b1".to_owned()], 1)], policy())
        .await[0]
        .clone()?;
    redis.kill();
    // The first call finds the node gone; the ones after it are refused by
    // the breaker without touching the network, and say so.
    let first = store.get("b").await;
    assert!(matches!(first, Err(Error::Unavailable { .. })), "{first:?}");
    assert!(!store.is_up());
    for _ in 0..20 {
        match store
            .apply(vec![update("b", ["b2".to_owned()], 2)], policy())
            .await
            .remove(0)
        {
            Err(Error::Unavailable {
                store: name,
                message,
            }) => {
                assert_eq!(name, format!("redis:127.0.0.1:{}", redis.port));
                assert!(message.contains("fail at once"), "{message}");
            }
            other => panic!("expected a fast Unavailable, got {other:?}"),
        }
    }
    redis.restart();
    apply_until_ok(&store, update("b", ["b3".to_owned()], 3)).await?;
    assert!(store.is_up());
    let ids: HashSet<String> = store
        .get("b")
        .await?
        .ok_or_else(|| anyhow::anyhow!("b lost"))?
        .events
        .into_iter()
        .filter_map(|e| e.event_id)
        .collect();
    // b1 was acknowledged before the kill (AOF, appendfsync always), b2 never was.
    assert_eq!(ids, HashSet::from(["b1".to_owned(), "b3".to_owned()]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_of_one_process_on_a_hot_user_are_combined_not_contended()
-> anyhow::Result<()> {
    let redis = RedisServer::start();
    // One compare-and-set attempt: without combining, concurrent writers of
    // one user would get Contended (see the test above).
    let config = RedisConfig {
        max_attempts: 1,
        ..redis.config()
    };
    let store = Arc::new(RedisStore::open(&config).await?);
    let mut handles = Vec::new();
    for t in 0..16 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for a in 0..25 {
                let ids: Vec<String> = (0..2).map(|e| format!("t{t}-a{a}-e{e}")).collect();
                // The hot user twice in one call (applied in order), and a cold one.
                let calls = vec![
                    update("hot", ids[..1].to_vec(), 7),
                    update(&format!("cold{t}"), [format!("c{t}-{a}")], 7),
                    update("hot", ids[1..].to_vec(), 7),
                ];
                let results = store.apply(calls, policy()).await;
                for r in &results {
                    if let Err(e) = r {
                        return Err(anyhow::anyhow!("t{t} a{a}: {e}"));
                    }
                }
                acked.extend(ids);
            }
            Ok(acked)
        }));
    }
    let mut acked = HashSet::new();
    for h in handles {
        acked.extend(h.await??);
    }
    let state = store
        .get("hot")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no state"))?;
    let stored: HashSet<String> = state
        .events
        .into_iter()
        .filter_map(|e| e.event_id)
        .collect();
    assert_eq!(acked.len(), 800);
    assert_eq!(stored, acked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_state_that_another_instance_changed_is_never_trusted() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let a = RedisStore::open(&redis.config()).await?;
    let b = RedisStore::open(&redis.config()).await?;
    // A writes e1 and remembers the state; B erases the user.
    let first = a
        .apply(vec![update("r", ["e1".to_owned()], 1)], policy())
        .await[0]
        .clone()?;
    assert_eq!(first.stored, 1);
    assert!(b.delete("r").await?);
    // The same event again on A: by A's memory a duplicate, but the user was
    // erased since, so it is new and must be stored.
    let again = a
        .apply(vec![update("r", ["e1".to_owned()], 1)], policy())
        .await[0]
        .clone()?;
    assert_eq!((again.stored, again.duplicates), (1, 0));
    // B appends; A's next write starts from its stale memory, loses the
    // compare-and-set and merges on B's state: nothing of either is lost.
    b.apply(vec![update("r", ["e2".to_owned()], 2)], policy())
        .await[0]
        .clone()?;
    let third = a
        .apply(vec![update("r", ["e3".to_owned()], 3)], policy())
        .await[0]
        .clone()?;
    assert_eq!(third.stored, 1);
    let ids: Vec<String> = b
        .get("r")
        .await?
        .ok_or_else(|| anyhow::anyhow!("r lost"))?
        .events
        .into_iter()
        .filter_map(|e| e.event_id)
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    Ok(())
}
