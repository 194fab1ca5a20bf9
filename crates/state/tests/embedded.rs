//! The embedded backend against its real file: concurrency, group commit,
//! tombstones, corrupt records, and durability across `kill -9`.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use profiled_model::FieldValue;
use profiled_state::embedded::{EmbeddedConfig, EmbeddedStore, FILE_NAME};
use profiled_state::testing::Tmpfs;
use profiled_state::{Error, FieldUpdate, Policy, StoredEvent, UserStateStore, UserUpdate};

fn policy(retain: usize) -> Policy {
    Policy {
        retain_events: retain,
        max_clock_skew_s: 300,
        now_s: 2_000_000_000,
    }
}

fn config(dir: &std::path::Path) -> EmbeddedConfig {
    EmbeddedConfig {
        dir: dir.to_path_buf(),
        ..EmbeddedConfig::default()
    }
}

fn event(item: &str, ts: i64, id: &str) -> StoredEvent {
    StoredEvent {
        item: item.to_owned(),
        timestamp: ts,
        rating: None,
        event_id: Some(id.to_owned()),
    }
}

fn update(user: &str, events: Vec<StoredEvent>) -> UserUpdate {
    UserUpdate {
        user_id: user.to_owned(),
        events,
        fields: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_of_one_user_lose_no_event() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(&config(dir.path()))?);
    let (tasks, applies, per) = (16, 20, 5);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for a in 0..applies {
                let events = (0..per)
                    .map(|e| event(&format!("i{t}"), 1000 + a, &format!("t{t}-a{a}-e{e}")))
                    .collect();
                let r = store
                    .apply(vec![update("hot", events)], policy(100_000))
                    .await;
                match r.into_iter().next() {
                    Some(Ok(applied)) => {
                        assert_eq!(applied.stored, per as u32);
                        versions.push(applied.version);
                    }
                    other => panic!("apply failed: {other:?}"),
                }
            }
            versions
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let versions = h.await?;
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        all.extend(versions);
    }
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "two applies got the same version"
    );
    let state = store
        .get("hot")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no state"))?;
    assert_eq!(state.events.len(), (tasks * applies * per) as usize);
    assert_eq!(state.version, (tasks * applies) as u64);
    let ids: HashSet<_> = state.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), state.events.len());
    assert!(
        state
            .events
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_one_commit_among_queued_applies() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&config(dir.path()))?;
    let before = store.commit_stats();
    let calls = 200;
    // join_all polls every apply once before any can complete, so all 200
    // jobs are queued while the first group's fsync runs.
    let results = futures::future::join_all((0..calls).map(|i| {
        store.apply(
            vec![update(
                &format!("u{}", i % 17),
                vec![event("x", 1000 + i, &format!("e{i}"))],
            )],
            policy(1000),
        )
    }))
    .await;
    for r in results.into_iter().flatten() {
        assert_eq!(r?.stored, 1);
    }
    let after = store.commit_stats();
    let (commits, answered) = (after.commits - before.commits, after.calls - before.calls);
    assert_eq!(answered, calls as u64);
    assert!(
        commits * 4 <= answered,
        "{commits} commits for {answered} calls: applies were not grouped"
    );
    // Every event of all groups is there.
    let mut total = 0;
    for u in 0..17 {
        total += store
            .get(&format!("u{u}"))
            .await?
            .map_or(0, |s| s.events.len());
    }
    assert_eq!(total, calls as usize);
    Ok(())
}

#[tokio::test]
async fn tombstones_erase_and_a_later_apply_starts_fresh() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&config(dir.path()))?;
    let mut u = update("alice", vec![event("a", 10, "e1"), event("b", 20, "e2")]);
    u.fields = vec![FieldUpdate::Set("age".into(), FieldValue::Number(30.0))];
    let first = store.apply(vec![u.clone()], policy(10)).await;
    assert_eq!(first[0].clone()?.version, 1);
    assert_eq!(store.stats().await?.users, 1);

    assert!(store.delete("alice").await?);
    let tomb = store
        .get("alice")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tombstone"))?;
    assert!(tomb.erased && tomb.events.is_empty() && tomb.fields.is_empty());
    assert_eq!(tomb.version, 2);
    assert_eq!(store.stats().await?.users, 0);
    assert!(
        !store.delete("alice").await?,
        "second delete found live state"
    );

    // The same events again are new after erasure (no memory of their ids).
    let again = store.apply(vec![u], policy(10)).await;
    let a = again[0].clone()?;
    assert_eq!((a.stored, a.version), (2, 3));
    let live = store
        .get("alice")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no state"))?;
    assert!(!live.erased);
    assert_eq!(live.events.len(), 2);
    assert_eq!(store.stats().await?.users, 1);

    // Erasing a user never tracked leaves a tombstone (it masks the users
    // index snapshot) but reports no live state.
    assert!(!store.delete("bob").await?);
    assert!(store.get("bob").await?.is_some_and(|s| s.erased));
    assert!(store.get("carol").await?.is_none());

    // Everything survives a reopen.
    drop(store);
    let store = EmbeddedStore::open(&config(dir.path()))?;
    assert_eq!(store.get("alice").await?, Some(live));
    assert_eq!(store.stats().await?.users, 1);
    Ok(())
}

#[tokio::test]
async fn a_corrupt_record_is_reported_and_fails_only_its_user() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let store = EmbeddedStore::open(&config(dir.path()))?;
        let r = store
            .apply(vec![update("good", vec![event("a", 1, "e")])], policy(10))
            .await;
        r[0].clone()?;
    }
    {
        // Write a record of an unknown format version behind the store's back.
        let db = redb::Database::create(dir.path().join(FILE_NAME))?;
        let txn = db.begin_write()?;
        {
            let def: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("users");
            let mut t = txn.open_table(def)?;
            t.insert("bad", [9u8, 1, 2, 3].as_slice())?;
        }
        txn.commit()?;
    }
    let store = EmbeddedStore::open(&config(dir.path()))?;
    match store.get("bad").await {
        Err(Error::Corrupt {
            user, store: name, ..
        }) => {
            assert_eq!(user, "bad");
            assert!(name.starts_with("embedded:"), "{name}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let r = store
        .apply(
            vec![
                update("bad", vec![event("x", 2, "e2")]),
                update("good", vec![event("y", 3, "e3")]),
            ],
            policy(10),
        )
        .await;
    assert!(matches!(r[0], Err(Error::Corrupt { .. })), "{:?}", r[0]);
    assert_eq!(r[1].clone()?.stored, 1);
    // The bad record is left as it is by apply…
    assert!(matches!(store.get("bad").await, Err(Error::Corrupt { .. })));
    // …and replaced by a tombstone on erasure.
    store.delete("bad").await?;
    assert!(store.get("bad").await?.is_some_and(|s| s.erased));
    Ok(())
}

#[tokio::test]
async fn invalid_updates_store_nothing_of_their_user() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&config(dir.path()))?;
    let r = store
        .apply(
            vec![
                update(
                    "u",
                    vec![
                        event("a", 1, "e1"),
                        event("b", 2_000_000_000 + 10_000, "e2"),
                    ],
                ),
                update("v", vec![event("a", 1, "e1")]),
            ],
            policy(10),
        )
        .await;
    match &r[0] {
        Err(Error::Invalid { message }) => assert!(message.contains("\"u\" event 1"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(store.get("u").await?.is_none());
    assert!(store.get("v").await?.is_some());
    Ok(())
}

/// The child of [`acknowledged_events_survive_kill_9`]: applies batches from
/// 4 tasks forever, printing `ACK <user> <event id>…` after each durable
/// apply.
async fn ingest_until_killed(dir: &str) -> anyhow::Result<()> {
    let store = Arc::new(EmbeddedStore::open(&config(std::path::Path::new(dir)))?);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (store, out) = (Arc::clone(&store), Arc::clone(&out));
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let user = format!("user{}", (n * 7 + t) % 23);
                let events: Vec<_> = (0..10)
                    .map(|e| event("it", 1_000 + n as i64, &format!("t{t}-n{n}-e{e}")))
                    .collect();
                let ids: Vec<String> = events.iter().filter_map(|e| e.event_id.clone()).collect();
                let r = store
                    .apply(vec![update(&user, events)], policy(1_000_000))
                    .await;
                if let Some(Ok(_)) = r.first() {
                    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(o, "ACK {user} {}", ids.join(" "));
                    let _ = o.flush();
                }
                n += 1;
            }
        }));
    }
    // The tasks never end: the parent kills this process.
    futures::future::join_all(tasks).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() -> anyhow::Result<()> {
    if let Ok(dir) = std::env::var("PROFILED_STATE_KILL_CHILD_DIR") {
        return ingest_until_killed(&dir).await;
    }
    let dir = tempfile::tempdir()?;
    let mut acked: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "acknowledged_events_survive_kill_9",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("PROFILED_STATE_KILL_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        // A different point every round and every run.
        let kill_after = 5 + (std::process::id() as usize * 31 + round * 17) % 40;
        let mut seen = 0;
        while seen < kill_after {
            let Some(line) = lines.next() else { break };
            if record(&line?, &mut acked) {
                seen += 1;
            }
        }
        assert_eq!(seen, kill_after, "the child stopped acknowledging early");
        // SIGKILL: no destructors, no flush; only fsync'd commits survive.
        child.kill()?;
        // Lines the child printed before dying were acknowledged too.
        for line in lines {
            record(&line?, &mut acked);
        }
        child.wait()?;
        eprintln!("round {round}: killed after {kill_after} acks");
    }
    let store = EmbeddedStore::open(&config(dir.path()))?;
    let mut checked = 0;
    for (user, ids) in &acked {
        let state = store
            .get(user)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{user} lost"))?;
        let stored: HashSet<String> = state
            .events
            .iter()
            .filter_map(|e| e.event_id.clone())
            .collect();
        let missing: Vec<_> = ids.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "{user}: acknowledged events lost: {missing:?}"
        );
        checked += ids.len();
    }
    assert!(checked >= 3 * 5 * 10, "only {checked} acknowledged events");
    Ok(())
}

fn record(line: &str, acked: &mut BTreeMap<String, HashSet<String>>) -> bool {
    let mut parts = line.split_whitespace();
    if parts.next() != Some("ACK") {
        return false;
    }
    let Some(user) = parts.next() else {
        return false;
    };
    acked
        .entry(user.to_owned())
        .or_default()
        .extend(parts.map(str::to_owned));
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_full_writes_nothing_and_the_same_store_recovers() -> anyhow::Result<()> {
    let fs = Tmpfs::mount("1m")?;
    let store = EmbeddedStore::open(&config(fs.path()))?;
    let mut acked = Vec::new();
    let mut full = None;
    for i in 0..10_000 {
        let user = format!("user{i}");
        let events = (0..20)
            .map(|e| event(&"x".repeat(100), 1000 + e, &format!("{i}-{e}")))
            .collect();
        match store
            .apply(vec![update(&user, events)], policy(1000))
            .await
            .remove(0)
        {
            Ok(_) => acked.push(user),
            Err(e) => {
                full = Some((user, e));
                break;
            }
        }
    }
    let Some((failed_user, err)) = full else {
        anyhow::bail!("a 1 MiB tmpfs never filled up");
    };
    match &err {
        Error::Full { store: name, .. } => assert!(name.starts_with("embedded:"), "{name}"),
        other => panic!("expected Full, got {other:?}"),
    }
    // Nothing of the failed write, everything acknowledged before it.
    fs.resize("64m")?;
    let mut recovered = false;
    for _ in 0..200 {
        // The store reopens its file after the I/O error, by itself.
        match store.get(&failed_user).await {
            Ok(state) => {
                assert!(state.is_none(), "the failed write left {state:?}");
                recovered = true;
                break;
            }
            Err(Error::Unavailable { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(
        recovered,
        "the store did not come back after the disk had room again"
    );
    for user in &acked {
        let s = store
            .get(user)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{user} lost"))?;
        assert_eq!(s.events.len(), 20);
    }
    let r = store
        .apply(
            vec![update(&failed_user, vec![event("y", 1, "again")])],
            policy(10),
        )
        .await;
    assert_eq!(
        r[0].clone()?.stored,
        1,
        "writes work again in the same store"
    );
    drop(store);
    Ok(())
}

/// The read cache never answers older than the file: after an update is
/// acknowledged, every read (cached or not) has it, while readers race the
/// writer on the same users; an erasure is seen at once; a store opened
/// without the cache answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_through_the_cache_never_go_back_in_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(&config(dir.path()))?);
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (store, acked) = (Arc::clone(&store), Arc::clone(&acked));
        readers.push(tokio::spawn(async move {
            let mut last = 0u64;
            for _ in 0..3_000 {
                let floor = acked.load(std::sync::atomic::Ordering::Acquire);
                let v = store.get("hot").await?.map_or(0, |s| s.version);
                anyhow::ensure!(
                    v >= floor,
                    "reader {r}: version {v} after {floor} was acknowledged"
                );
                anyhow::ensure!(
                    v >= last,
                    "reader {r}: version went back from {last} to {v}"
                );
                last = v;
                tokio::task::yield_now().await;
            }
            Ok(())
        }));
    }
    for i in 0..300 {
        let a = store
            .apply(
                vec![update(
                    "hot",
                    vec![event("it", 1_000 + i, &format!("e{i}"))],
                )],
                policy(1_000),
            )
            .await
            .remove(0)?;
        acked.store(a.version, std::sync::atomic::Ordering::Release);
    }
    for r in readers {
        r.await??;
    }
    let s = store
        .get("hot")
        .await?
        .ok_or_else(|| anyhow::anyhow!("hot lost"))?;
    assert_eq!(s.events.len(), 300);
    assert!(store.delete("hot").await?);
    assert!(store.get("hot").await?.is_none_or(|s| s.erased));
    drop(store);
    let uncached = EmbeddedStore::open(&EmbeddedConfig {
        cache_bytes: 0,
        ..config(dir.path())
    })?;
    assert!(uncached.get("hot").await?.is_none_or(|s| s.erased));
    Ok(())
}
