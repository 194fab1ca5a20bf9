//! Load on the embedded store itself: `tasks` concurrent callers, each
//! applying one-event updates for Zipf-ish users back to back (what
//! concurrent `Track` calls do). Prints events/s, commits, the mean group
//! (calls per fsync'd commit) and the apply latency callers see.
//!
//! ```text
//! nice -n 10 cargo run -p profiled-state --profile ci --example embedded_load -- [tasks] [seconds]
//! ```
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use profiled_state::embedded::{EmbeddedConfig, EmbeddedStore};
use profiled_state::{Policy, StoredEvent, UserStateStore, UserUpdate};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let tasks: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(&EmbeddedConfig {
        dir: dir.path().to_path_buf(),
        ..EmbeddedConfig::default()
    })?);
    let policy = Policy {
        retain_events: 100,
        max_clock_skew_s: 300,
        now_s: 2_000_000_000,
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(t as u64);
            let zipf = Zipf::new(10_000.0, 1.0).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let user = format!("user-{}", zipf.sample(&mut rng) as u64);
                let update = UserUpdate {
                    user_id: user,
                    events: vec![StoredEvent {
                        item: format!("item-{}", rng.random_range(0..50_000)),
                        timestamp: 1_000_000_000 + n as i64,
                        rating: None,
                        event_id: Some(format!("t{t}-{n}")),
                    }],
                    fields: vec![],
                };
                let t0 = Instant::now();
                for r in store.apply(vec![update], policy).await {
                    r?;
                }
                latencies.push(t0.elapsed());
                n += 1;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    let c = store.commit_stats();
    println!(
        "{tasks} tasks, {:.1} s: {:.0} events/s, {} commits ({:.0}/s), {:.1} calls per commit, apply latency p50 {:.2} ms p99 {:.2} ms",
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        c.commits,
        c.commits as f64 / elapsed.as_secs_f64(),
        c.calls as f64 / c.commits.max(1) as f64,
        pct(0.5),
        pct(0.99),
    );
    Ok(())
}
