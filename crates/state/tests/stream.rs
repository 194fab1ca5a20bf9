//! The Redis Streams source against a real `redis-server`: entries applied
//! into an embedded store, malformed entries skipped and counted, the lag
//! gauge, redelivery after a crash before the acknowledgement (own pending
//! entries and XAUTOCLAIM), clean shutdown.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use profiled_state::embedded::{EmbeddedConfig, EmbeddedStore};
use profiled_state::source::{EventSource, RedisStreamSource, SourceStats, StreamConfig};
use profiled_state::{Applied, Policy, Result, StoreStats, UserState, UserStateStore, UserUpdate};
use redis::AsyncCommands;
use support::RedisServer;
use tokio::sync::watch;

fn policy() -> Policy {
    Policy {
        retain_events: 10_000,
        max_clock_skew_s: 300,
        now_s: 0, // replaced by the source at every batch
    }
}

fn stream_config(redis: &RedisServer, consumer: &str) -> StreamConfig {
    StreamConfig {
        redis: redis.config(),
        stream: "events".to_owned(),
        group: "g".to_owned(),
        consumer: consumer.to_owned(),
        batch: 1_000,
        block_ms: 100,
        retry_ms: 50,
        ..StreamConfig::default()
    }
}

async fn xadd(
    conn: &mut redis::aio::MultiplexedConnection,
    fields: &[(&str, String)],
) -> anyhow::Result<String> {
    Ok(conn.xadd("events", "*", fields).await?)
}

/// Waits (bounded) until the source's counters satisfy `done`.
async fn wait_stats(
    source: &RedisStreamSource,
    done: impl Fn(&SourceStats) -> bool,
) -> SourceStats {
    for _ in 0..400 {
        let s = source.stats();
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "source never reached the expected state: {:?}",
        source.stats()
    );
}

async fn pending_count(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<usize> {
    let reply: redis::streams::StreamPendingReply = conn.xpending("events", "g").await?;
    Ok(reply.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_applied_malformed_ones_skipped_and_the_lag_drains_to_zero()
-> anyhow::Result<()> {
    let redis = RedisServer::start();
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    for i in 0..50 {
        let mut fields = vec![
            ("user_id", format!("u{}", i % 5)),
            ("item_id", format!("m{i}")),
            ("ts", (now - 1000 + i).to_string()),
        ];
        if i % 2 == 0 {
            fields.push(("event_id", format!("ev{i}")));
        }
        if i == 7 {
            fields.push(("field.age", "41".to_owned()));
        }
        xadd(&mut conn, &fields).await?;
    }
    let bad_ts = xadd(
        &mut conn,
        &[
            ("user_id", "u0".into()),
            ("item_id", "m".into()),
            ("ts", "yesterday".into()),
        ],
    )
    .await?;
    xadd(&mut conn, &[("item_id", "m".into()), ("ts", "1".into())]).await?;
    // Valid, but an hour in the future: the store refuses it.
    xadd(
        &mut conn,
        &[
            ("user_id", "u1".into()),
            ("item_id", "m".into()),
            ("ts", (now + 3600).to_string()),
        ],
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let store: Arc<dyn UserStateStore> = Arc::new(EmbeddedStore::open(&EmbeddedConfig {
        dir: dir.path().to_path_buf(),
        ..EmbeddedConfig::default()
    })?);
    let source = Arc::new(RedisStreamSource::new(stream_config(&redis, "c1")));
    let (stop, shutdown) = watch::channel(false);
    let task = {
        let (source, store) = (Arc::clone(&source), Arc::clone(&store));
        tokio::spawn(async move { source.run(store, Arc::new(policy), shutdown).await })
    };
    let s = wait_stats(&source, |s| {
        s.applied + s.malformed + s.rejected >= 53 && s.lag == 0 && s.pending == 0
    })
    .await;
    assert_eq!(
        (s.applied, s.malformed, s.rejected, s.failed),
        (50, 2, 1, 0),
        "{s:?} (bad ts entry {bad_ts})"
    );
    for u in 0..5 {
        let st = store
            .get(&format!("u{u}"))
            .await?
            .ok_or_else(|| anyhow::anyhow!("u{u} missing"))?;
        assert_eq!(st.events.len(), 10, "u{u}");
    }
    let u2 = store
        .get("u2")
        .await?
        .ok_or_else(|| anyhow::anyhow!("u2 missing"))?;
    assert_eq!(
        u2.fields.get("age"),
        Some(&profiled_model::FieldValue::Number(41.0))
    );
    assert_eq!(pending_count(&mut conn).await?, 0);

    // New entries after the first drain are picked up too.
    xadd(
        &mut conn,
        &[
            ("user_id", "late".into()),
            ("item_id", "m".into()),
            ("ts", now.to_string()),
        ],
    )
    .await?;
    wait_stats(&source, |s| s.applied == 51 && s.lag == 0).await;
    assert!(store.get("late").await?.is_some());

    stop.send(true)?;
    task.await??; // returns cleanly
    Ok(())
}

/// Applies through `inner`, then never answers once `hang` is set: the
/// source has stored the events durably but never acknowledges them, as if
/// it crashed between the apply and the XACK.
#[derive(Debug)]
struct HangAfterApply {
    inner: Arc<dyn UserStateStore>,
    hang: AtomicBool,
}

#[async_trait::async_trait]
impl UserStateStore for HangAfterApply {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn apply(&self, updates: Vec<UserUpdate>, policy: Policy) -> Vec<Result<Applied>> {
        let r = self.inner.apply(updates, policy).await;
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        r
    }
    async fn get(&self, user_id: &str) -> Result<Option<UserState>> {
        self.inner.get(user_id).await
    }
    async fn delete(&self, user_id: &str) -> Result<bool> {
        self.inner.delete(user_id).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }
}

async fn event_ids(store: &dyn UserStateStore, users: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for u in 0..users {
        if let Some(s) = store.get(&format!("r{u}")).await? {
            ids.extend(s.events.into_iter().filter_map(|e| e.event_id));
        }
    }
    Ok(ids)
}

/// Runs a source that applies everything but "crashes" before acking.
async fn crash_before_ack(
    redis: &RedisServer,
    consumer: &str,
    inner: &Arc<dyn UserStateStore>,
    expect_events: usize,
) -> anyhow::Result<()> {
    let hanging: Arc<dyn UserStateStore> = Arc::new(HangAfterApply {
        inner: Arc::clone(inner),
        hang: AtomicBool::new(true),
    });
    let source = Arc::new(RedisStreamSource::new(stream_config(redis, consumer)));
    let (_stop, shutdown) = watch::channel(false);
    let task = {
        let source = Arc::clone(&source);
        tokio::spawn(async move { source.run(hanging, Arc::new(policy), shutdown).await })
    };
    for _ in 0..400 {
        if event_ids(inner.as_ref(), 4).await?.len() >= expect_events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(event_ids(inner.as_ref(), 4).await?.len(), expect_events);
    task.abort(); // the crash
    let _ = task.await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_after_a_crash_before_the_ack_stores_no_duplicates() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let dir = tempfile::tempdir()?;
    let inner: Arc<dyn UserStateStore> = Arc::new(EmbeddedStore::open(&EmbeddedConfig {
        dir: dir.path().to_path_buf(),
        ..EmbeddedConfig::default()
    })?);
    let add = |conn: &mut redis::aio::MultiplexedConnection, i: i64| {
        let mut fields = vec![
            ("user_id", format!("r{}", i % 4)),
            ("item_id", format!("m{i}")),
            ("ts", (now - 500 + i).to_string()),
        ];
        // Half carry a producer id; the others get the entry id.
        if i % 2 == 0 {
            fields.push(("event_id", format!("p{i}")));
        }
        let mut conn = conn.clone();
        async move { xadd(&mut conn, &fields).await }
    };

    // Round 1: consumer c1 applies 20 entries and crashes before acking;
    // c2 claims them (XAUTOCLAIM, idle ≥ 0 ms) and acknowledges them.
    for i in 0..20 {
        add(&mut conn, i).await?;
    }
    crash_before_ack(&redis, "c1", &inner, 20).await?;
    assert_eq!(
        pending_count(&mut conn).await?,
        20,
        "the crashed consumer acked"
    );
    let source = Arc::new(RedisStreamSource::new(StreamConfig {
        claim_idle_ms: 0,
        ..stream_config(&redis, "c2")
    }));
    let (stop, shutdown) = watch::channel(false);
    let task = {
        let (source, inner) = (Arc::clone(&source), Arc::clone(&inner));
        tokio::spawn(async move { source.run(inner, Arc::new(policy), shutdown).await })
    };
    wait_stats(&source, |s| s.applied >= 20 && s.pending == 0).await;
    stop.send(true)?;
    task.await??;
    assert_eq!(pending_count(&mut conn).await?, 0);

    // Round 2: c2 crashes before acking 12 new entries and restarts under
    // the same name: it re-reads its own pending entries.
    for i in 20..32 {
        add(&mut conn, i).await?;
    }
    crash_before_ack(&redis, "c2", &inner, 32).await?;
    assert_eq!(pending_count(&mut conn).await?, 12);
    let source = Arc::new(RedisStreamSource::new(stream_config(&redis, "c2")));
    let (stop, shutdown) = watch::channel(false);
    let task = {
        let (source, inner) = (Arc::clone(&source), Arc::clone(&inner));
        tokio::spawn(async move { source.run(inner, Arc::new(policy), shutdown).await })
    };
    wait_stats(&source, |s| s.applied >= 12 && s.pending == 0 && s.lag == 0).await;
    stop.send(true)?;
    task.await??;

    let ids = event_ids(inner.as_ref(), 4).await?;
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), 32, "events stored: {ids:?}");
    assert_eq!(distinct.len(), 32, "duplicates stored: {ids:?}");
    assert_eq!(pending_count(&mut conn).await?, 0);
    Ok(())
}
