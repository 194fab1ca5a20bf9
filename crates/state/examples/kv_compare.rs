//! redb vs fjall on the user-state workload: many small per-user
//! read-modify-write appends, one durable (fsync'd) commit per group.
//!
//! Each group is one write transaction (what the embedded store's writer
//! task does with everything queued): for each of its events, read the
//! user's record, decode it, [`profiled_state::merge`] the event in, encode
//! it and write it back; then commit durably. Users are drawn from a
//! Zipf-ish population (s = 1.0), so hot users grow to the full retained
//! window and their records are read and rewritten often.
//!
//! ```text
//! nice -n 10 cargo run -p profiled-state --profile ci --example kv_compare -- [events] [users] [redb|fjall]
//! ```
//!
//! Prints events/s and the commit latency (p50 / p99) per engine and group
//! size, and the size on disk. Figures: docs/benchmarks.md, "State store:
//! redb vs fjall".
#![allow(clippy::print_stdout, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use profiled_state::{Policy, StoredEvent, UserState, UserUpdate, codec, merge};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use redb::ReadableTable;

const POLICY: Policy = Policy {
    retain_events: 100,
    max_clock_skew_s: 300,
    now_s: 2_000_000_000,
};

trait Engine {
    fn name(&self) -> &'static str;
    /// One durable transaction applying `events` (user index, event).
    fn apply_group(&mut self, events: &[(String, StoredEvent)]) -> Result<()>;
    fn disk_bytes(&self, dir: &Path) -> u64 {
        dir_size(dir)
    }
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn merged(old: Option<&[u8]>, user: &str, event: &StoredEvent) -> Result<Vec<u8>> {
    let state: Option<UserState> = old.map(|b| codec::decode(b, "bench", user)).transpose()?;
    let update = UserUpdate {
        user_id: user.to_owned(),
        events: vec![event.clone()],
        fields: vec![],
    };
    let (next, _) = merge(state, &update, POLICY, 0)?;
    Ok(codec::encode(&next)?)
}

struct Redb {
    db: redb::Database,
}

const TABLE: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("users");

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn apply_group(&mut self, events: &[(String, StoredEvent)]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for (user, event) in events {
                let old = table.get(user.as_str())?.map(|v| v.value().to_vec());
                let new = merged(old.as_deref(), user, event)?;
                table.insert(user.as_str(), new.as_slice())?;
            }
        }
        txn.commit()?; // Durability::Immediate is the default: fsync'd
        Ok(())
    }
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn apply_group(&mut self, events: &[(String, StoredEvent)]) -> Result<()> {
        // One writer, so reads see the group's own earlier writes through a
        // small overlay; the batch then commits atomically.
        let mut overlay: std::collections::HashMap<&str, Vec<u8>> = Default::default();
        for (user, event) in events {
            let old = match overlay.get(user.as_str()) {
                Some(v) => Some(v.clone()),
                None => self.ks.get(user.as_bytes())?.map(|v| v.to_vec()),
            };
            let new = merged(old.as_deref(), user, event)?;
            overlay.insert(user.as_str(), new);
        }
        let mut batch = self.db.batch();
        for (user, value) in overlay {
            batch.insert(&self.ks, user.as_bytes().to_vec(), value);
        }
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

fn workload(total: usize, users: usize, seed: u64) -> Result<Vec<(String, StoredEvent)>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let zipf = Zipf::new(users as f64, 1.0).context("zipf")?;
    Ok((0..total)
        .map(|i| {
            let u = zipf.sample(&mut rng) as usize;
            let event = StoredEvent {
                item: format!("item-{}", rng.random_range(0..50_000)),
                timestamp: 1_000_000_000 + i as i64,
                rating: rng.random_bool(0.3).then(|| rng.random_range(1..=5) as f32),
                event_id: Some(format!("ev-{i}")),
            };
            (format!("user-{u}"), event)
        })
        .collect())
}

fn run(engine: &mut dyn Engine, dir: &Path, events: &[(String, StoredEvent)], group: usize) {
    let mut commits = Vec::with_capacity(events.len() / group + 1);
    let start = Instant::now();
    for chunk in events.chunks(group) {
        let t = Instant::now();
        if let Err(e) = engine.apply_group(chunk) {
            println!("{}: error: {e:#}", engine.name());
            return;
        }
        commits.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    commits.sort();
    let pct = |p: f64| {
        commits
            .get(((commits.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    println!(
        "{:<6} group {:>4}: {:>9.0} events/s  {:>7.1} groups/s  group latency p50 {:>7.2} ms  p99 {:>7.2} ms  disk {:>6.1} MiB",
        engine.name(),
        group,
        events.len() as f64 / elapsed.as_secs_f64(),
        commits.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        engine.disk_bytes(dir) as f64 / (1024.0 * 1024.0),
    );
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50_000);
    let users: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let only: Option<&str> = args.get(3).map(String::as_str);
    let events = workload(total, users, 7)?;
    println!("{total} events over {users} Zipf(1.0) users, retain 100 events per user");
    for group in [100usize, 1] {
        // Fewer events per-event-commit: it is fsync-bound.
        let n = if group == 1 { total.min(2_000) } else { total };
        for engine in ["redb", "fjall"] {
            if only.is_some_and(|o| o != engine) {
                continue;
            }
            let dir = tempfile::tempdir()?;
            let mut e: Box<dyn Engine> = match engine {
                "redb" => Box::new(Redb {
                    db: redb::Database::create(dir.path().join("state.redb"))?,
                }),
                _ => {
                    let db = fjall::Database::builder(dir.path().join("fjall"))
                        .manual_journal_persist(true)
                        .open()?;
                    let ks = db.keyspace("users", fjall::KeyspaceCreateOptions::default)?;
                    Box::new(Fjall { db, ks })
                }
            };
            run(e.as_mut(), dir.path(), &events[..n], group);
        }
    }
    Ok(())
}
