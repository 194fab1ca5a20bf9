//! `profiled-loadgen`: load for any profiled server — Embed / Search /
//! Explain and weighted mixes, open loop (constant arrival rate, latency
//! from the intended send time) or closed loop (N streams), a rate sweep for
//! the highest rate holding a p99 target, and a model swap mid-run.
//!
//! ```text
//! profiled-loadgen --addr 127.0.0.1:50051 --rate 2000 --duration 30 --hit-ratio 0.8 --json out.json
//! profiled-loadgen --addr HOST:PORT --streams 32 --count 100000 --workload 'embed*8;search:query=user*2' --known-users 'u[0..943]'
//! profiled-loadgen --sweep-p99-ms 2 --sweep-start 500 --sweep-max 50000
//! profiled-loadgen --rate 1000 --duration 20 --swap-at 8 --publish build/movies/2 --repo models --model movies
//! ```
//! The human summary goes to stdout, the progress line to stderr.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use profiled_benches::loadgen::workload::parse_known_users;
use profiled_benches::loadgen::{
    Generator, Mode, RunConfig, SwapPlan, SweepConfig, Target, TargetConfig, UserPool, Workload,
    Zipf, run, sweep,
};

/// Load generator for profiled servers.
#[derive(Debug, Parser)]
#[command(name = "profiled-loadgen", version)]
struct Args {
    /// Server address: HOST:PORT or an http:// / https:// URL.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Use TLS.
    #[arg(long)]
    tls: bool,
    /// PEM of the CA that signed the server certificate (with --tls).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Server name to verify (with --tls; default: the host of --addr).
    #[arg(long)]
    domain: Option<String>,
    /// Bearer token sent on every call.
    #[arg(long, env = "PROFILED_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the bearer token from this file.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// HTTP/2 connections (calls spread round-robin).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight per connection, 0 = unlimited (keep it below the
    /// server's `max_concurrent_streams`, else HTTP/2 may refuse a stream at
    /// the limit); further calls wait in the client, counted in their latency.
    #[arg(long, default_value_t = 200)]
    max_streams_per_connection: usize,
    /// Per-call deadline in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,

    /// Model name (empty = the server's default model).
    #[arg(long, default_value = "")]
    model: String,
    /// Call mix: `SPEC[*WEIGHT];...` with SPEC one of `embed[:batch=N,f16]`,
    /// `search[:query=features|user|seeds,index=items|users,k=N,filter=ATTR=V1|V2,seeds=N]`,
    /// `explain[:method=occlusion|rollout|attention,groups,top=N]`.
    #[arg(long, default_value = "embed")]
    workload: String,
    /// Users: a dataset folder, `synthetic[:SEED]`, `synthetic-small[:SEED]`
    /// or a fetched dataset under --data-dir.
    #[arg(long, default_value = "synthetic-small")]
    dataset: String,
    /// Folder of fetched datasets.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Use N random users of the synthetic test model instead of a dataset
    /// (items 1..=--items, up to 2 × --max-events events).
    #[arg(long)]
    synthetic_model_users: Option<usize>,
    /// Items of the synthetic test model.
    #[arg(long, default_value_t = 30)]
    items: usize,
    /// Events scale of the synthetic test model users.
    #[arg(long, default_value_t = 12)]
    max_events: usize,
    /// At most this many users in the pool.
    #[arg(long, default_value_t = 1000)]
    max_users: usize,
    /// Fraction of users sent unchanged (cache hits once warm); the rest are
    /// made unique (cache misses).
    #[arg(long, default_value_t = 0.0)]
    hit_ratio: f64,
    /// Known user ids for Search by user / seeds: `a,b,c` or `PREFIX[START..END]`.
    #[arg(long, default_value = "")]
    known_users: String,
    /// Users of the tracked population (Track and `embed:tracked` calls;
    /// ids `t0`, `t1`, …).
    #[arg(long, default_value_t = 10_000)]
    tracked_users: usize,
    /// Zipf exponent of the tracked population's activity.
    #[arg(long, default_value_t = 1.0)]
    tracked_zipf: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Open loop: calls per second (latency from the intended send time).
    #[arg(long, conflicts_with = "streams")]
    rate: Option<f64>,
    /// Closed loop: concurrent streams (default 16 when no --rate).
    #[arg(long)]
    streams: Option<usize>,
    /// Seconds of sending (default 10 unless --count is given).
    #[arg(long)]
    duration: Option<f64>,
    /// Calls to send.
    #[arg(long)]
    count: Option<u64>,
    /// Calls in flight above which due calls are not sent (CLIENT_BACKLOG).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Do not fill the cache with the pool users before the run.
    #[arg(long)]
    no_warmup: bool,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,

    /// Sweep: find the highest open-loop rate whose p99 stays ≤ this (ms) with no errors.
    #[arg(long)]
    sweep_p99_ms: Option<f64>,
    /// Sweep: first rate.
    #[arg(long, default_value_t = 500.0)]
    sweep_start: f64,
    /// Sweep: highest rate.
    #[arg(long, default_value_t = 100_000.0)]
    sweep_max: f64,
    /// Sweep: growth factor between steps.
    #[arg(long, default_value_t = 1.5)]
    sweep_factor: f64,
    /// Sweep: seconds per step.
    #[arg(long, default_value_t = 5.0)]
    sweep_step: f64,
    /// Sweep: bisection steps after the first failing rate.
    #[arg(long, default_value_t = 3)]
    sweep_refine: usize,

    /// Publish --publish this many seconds into the run.
    #[arg(long, requires = "publish")]
    swap_at: Option<f64>,
    /// The model version folder to publish mid-run.
    #[arg(long, requires_all = ["swap_at", "repo"])]
    publish: Option<PathBuf>,
    /// The server's model repository (for --publish).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// "During" the swap lasts until this long after the first answer by the new version.
    #[arg(long, default_value_t = 1000)]
    swap_settle_ms: u64,

    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The server's allocator (see the workspace Cargo.toml), also in the load
/// client and the echo floor so both sides of every comparison use it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let a = Args::parse();
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let mut pool = match a.synthetic_model_users {
        Some(n) => UserPool::synthetic_model(a.seed, n.min(a.max_users), a.items, a.max_events),
        None => UserPool::load(&a.dataset, &a.data_dir, a.max_users)?,
    };
    let mode = match (a.rate, a.streams) {
        (Some(rate), _) => Mode::Open { rate },
        (None, s) => Mode::Closed {
            streams: s.unwrap_or(16),
        },
    };
    let duration = match (a.duration, a.count) {
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let swap = match (a.swap_at, &a.publish) {
        (Some(at), Some(src)) => {
            let repo = a.repo.clone().context("--publish needs --repo")?;
            if a.model.is_empty() {
                bail!("--publish needs --model (the name to publish under)");
            }
            Some(SwapPlan {
                at: Duration::from_secs_f64(at),
                src: src.clone(),
                repo,
                model: a.model.clone(),
                settle: Duration::from_millis(a.swap_settle_ms),
            })
        }
        _ => None,
    };
    let cfg = RunConfig {
        label: "loadgen".into(),
        mode,
        duration,
        count: a.count,
        max_in_flight: a.max_in_flight,
        progress: !a.quiet,
        warmup: !a.no_warmup,
        swap,
    };
    let tcfg = TargetConfig {
        addr: a.addr.clone(),
        tls: a.tls,
        ca_cert: a.ca_cert.clone(),
        domain: a.domain.clone(),
        token,
        connections: a.connections,
        timeout: Duration::from_millis(a.timeout_ms),
        max_streams_per_connection: a.max_streams_per_connection,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let json = rt.block_on(async {
        let target = Target::connect(&tcfg).await?;
        match target.input_kinds(&a.model).await {
            Ok(kinds) => {
                let dropped = pool.fit(&kinds);
                if dropped > 0 {
                    eprintln!("dropped {dropped} user fields the model has no input for");
                }
            }
            Err(s) => eprintln!(
                "GetModel failed ({:?}: {}); sending the users' fields as they are",
                s.code(),
                s.message()
            ),
        }
        let workload = Workload {
            model: a.model.clone(),
            pool: Arc::new(pool),
            known_users: Arc::new(parse_known_users(&a.known_users)?),
            hit_ratio: a.hit_ratio,
            mix: Workload::parse_mix(&a.workload)?,
            tracked: Arc::new(Zipf::new(a.tracked_users, a.tracked_zipf)),
        };
        let generator = Generator::new(workload, a.seed)?;
        if let Some(p99_ms) = a.sweep_p99_ms {
            let sw = SweepConfig {
                start_rate: a.sweep_start,
                max_rate: a.sweep_max,
                factor: a.sweep_factor,
                step: Duration::from_secs_f64(a.sweep_step),
                p99_target_us: (p99_ms * 1000.0) as u64,
                refine: a.sweep_refine,
                pause: Duration::from_millis(500),
            };
            let rep = sweep(&target, &generator, &cfg, &sw).await?;
            print!("{}", rep.text());
            anyhow::Ok(rep.to_json())
        } else {
            let rep = run(&target, &generator, &cfg).await?;
            print!("{}", rep.text());
            anyhow::Ok(rep.to_json())
        }
    })?;
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
