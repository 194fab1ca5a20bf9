//! Server report (issue 5): the real `profiled` binary on 127.0.0.1:0 with a
//! synthetic model (d = 64, 4 heads, 2 layers, FFN 256, 64-dim profiles,
//! users with ≈ 50 events), driven by the `profiled-loadgen` library over
//! loopback, next to two floors measured in the same run:
//!
//! - `echo_rps`: a bench-only tonic service (this binary re-run with
//!   `--serve-echo`, a separate process like the server) that decodes the
//!   same Embed requests and answers a same-size Embed response (a real
//!   response of the server, replayed) without any work, with the server's
//!   transport settings, driven by the same client;
//! - `encoder_users_per_s`: the server's batcher and worker pool fed
//!   in-process (no gRPC) with the same users.
//!
//! Then `embed_hit_rps` / `embed_miss_rps` (closed loop, one user per call;
//! `http_embed_hit_rps` the same hits as JSON on the HTTP listener, next to
//! `http_echo_rps`, that listener's bench-only `/bench/echo` route decoding
//! the same bodies and answering an Embed-shaped JSON of the same dimension;
//! misses are unique users), `embed_miss_p99_us_at_half_load` (open loop at
//! half of `embed_miss_rps`, latency from the intended send time, with
//! `echo_p99_us_at_half_load`, the echo at the same rate, as its baseline),
//! `swap_p99_ratio` / `swap_errors` (same open-loop rate, a new version
//! published mid-run) and `overload_errors_other_than_resource_exhausted`
//! (open loop at 3 × `embed_miss_rps`). Client and server CPU use
//! (from /proc/<pid>/stat, as getrusage reports it) and the load average are
//! printed with the figures. The last line of stdout is one JSON object.
//!
//! `cargo run --release -p profiled-benches --bin server-report [-- --quick]`
//! (`SERVER_REPORT_LOG=FILE SERVER_REPORT_RUST_LOG=h2=debug,info` keeps the
//! server's log).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use profiled_benches::harness::{
    echo_mode, profiled_bin, spawn_listening, start_echo, wait_serving,
};
use profiled_benches::load_average;
use profiled_benches::loadgen::cpu::total_cpu_seconds;
use profiled_benches::loadgen::{
    Generator, RunConfig, RunReport, SwapPlan, Target, TargetConfig, UserPool, Workload, Zipf, run,
};
use profiled_model::testing::{SyntheticSpec, write_synthetic_model};
use profiled_proto::v1 as pb;
use serde_json::json;

/// The server's allocator (see the workspace Cargo.toml), also in the load
/// client and the echo floor so both sides of every comparison use it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODEL: &str = "bench";
const ITEMS: usize = 400;
const MAX_EVENTS: usize = 50;
const POOL: usize = 2000;
const STREAMS: usize = 64;
const CONNECTIONS: usize = 4;

fn spec(seed: u64) -> SyntheticSpec {
    SyntheticSpec {
        d_model: 64,
        heads: 4,
        layers: 2,
        ffn: 256,
        d_out: 64,
        items: ITEMS,
        max_events: MAX_EVENTS,
        golden: 4,
        seed,
        ..SyntheticSpec::default()
    }
}

// ------------------------------------------------------------------ http ---

const HTTP_CONNECTIONS: usize = STREAMS;

/// A user's features as the HTTP edge's JSON.
fn features_json(u: &pb::UserFeatures) -> serde_json::Value {
    use pb::field_value::Kind;
    let fields: serde_json::Map<String, serde_json::Value> = u
        .fields
        .iter()
        .filter_map(|(k, v)| {
            let v = match v.kind.as_ref()? {
                Kind::Number(x) => json!(x),
                Kind::Categorical(s) => json!(s),
                Kind::Tags(t) => json!(
                    t.tags
                        .iter()
                        .map(|t| json!({"tag": t.tag, "weight": t.weight}))
                        .collect::<Vec<_>>()
                ),
            };
            Some((k.clone(), v))
        })
        .collect();
    let events: Vec<serde_json::Value> = u
        .events
        .iter()
        .map(|e| json!({"item_id": e.item_id, "timestamp": e.timestamp, "rating": e.rating}))
        .collect();
    json!({"user_id": u.user_id, "fields": fields, "events": events})
}

/// What a closed-loop HTTP run did.
#[derive(Debug, Default)]
struct HttpRun {
    ok: u64,
    errors: u64,
    secs: f64,
    p99_us: u64,
    answer_bytes: usize,
}

/// One keep-alive HTTP/1.1 call on `s`: the status and the body length.
async fn http_call(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> Result<(u16, usize)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 16 << 10];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status: u16 = head.split(' ').nth(1).context("status")?.parse()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("no content-length")?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, len))
}

/// Closed loop on `conns` keep-alive connections for `secs`: each sends
/// the next body to `path` as soon as its previous answer is read.
async fn http_closed(
    addr: &str,
    path: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    conns: usize,
    secs: f64,
) -> Result<HttpRun> {
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        bodies
            .iter()
            .map(|b| {
                let mut r = format!(
                    "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    b.len()
                )
                .into_bytes();
                r.extend_from_slice(b);
                r
            })
            .collect(),
    );
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (addr, requests) = (addr.to_string(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let (mut ok, mut errors, mut bytes) = (0u64, 0u64, 0usize);
            let mut lat = Vec::new();
            let mut buf = Vec::new();
            let mut i = c;
            while Instant::now() < end {
                let t = Instant::now();
                match http_call(&mut s, &mut buf, &requests[i % requests.len()]).await {
                    Ok((200, n)) => {
                        ok += 1;
                        bytes = n;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    Ok(_) => errors += 1,
                    Err(e) => return Err(e),
                }
                i += conns;
            }
            anyhow::Ok((ok, errors, bytes, lat))
        }));
    }
    let mut run = HttpRun::default();
    let mut lat = Vec::new();
    for t in tasks {
        let (ok, errors, bytes, l) = t.await??;
        run.ok += ok;
        run.errors += errors;
        run.answer_bytes = run.answer_bytes.max(bytes);
        lat.extend(l);
    }
    run.secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    run.p99_us = lat
        .get(lat.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0);
    Ok(run)
}

/// [`http_closed`] on [`HTTP_CONNECTIONS`] connections with the server's CPU use.
async fn http_measured(
    addr: &str,
    path: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    secs: f64,
    server_pid: Option<u32>,
) -> Result<(HttpRun, Option<f64>)> {
    let s0 = server_pid.and_then(|p| total_cpu_seconds(Some(p)));
    let run = http_closed(addr, path, bodies, HTTP_CONNECTIONS, secs).await?;
    let s1 = server_pid.and_then(|p| total_cpu_seconds(Some(p)));
    eprintln!("http {path}: {run:?}");
    let secs = run.secs;
    Ok((run, s0.zip(s1).map(|(a, b)| (b - a) / secs)))
}

// -------------------------------------------------------------- floors ---

/// Users per second through the server's batcher + worker pool, in-process.
async fn encoder_floor(repo: &Path, pool: &UserPool, secs: f64) -> Result<(f64, f64)> {
    let dir = repo.join(MODEL).join("1");
    let generation = Arc::new(profiled_store::Generation::load(MODEL, 1, &dir, true)?);
    let cfg = profiled_server::Config::default();
    let batcher = Arc::new(profiled_server::batcher::Batcher::new(MODEL, &cfg.batcher)?);
    // The same users as the gRPC runs, through the server's edge conversion.
    let users: Arc<Vec<profiled_model::UserFeatures>> = Arc::new(
        pool.users
            .iter()
            .map(|u| profiled_server::convert::features(u, "user", &generation, &cfg.limits))
            .collect::<Result<_, _>>()?,
    );
    let done = Arc::new(AtomicU64::new(0));
    let in_flight = (cfg.batcher.queue_capacity / 2).max(1);
    let run_for = |d: Duration, count: bool| {
        let mut tasks = Vec::new();
        let stop = Instant::now() + d;
        for t in 0..in_flight {
            let (b, g, u, done) = (
                batcher.clone(),
                generation.clone(),
                users.clone(),
                done.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while Instant::now() < stop {
                    let f = u[i % u.len()].clone();
                    if b.compute(g.clone(), f, String::new(), None).await.is_ok() && count {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += in_flight;
                }
            }));
        }
        tasks
    };
    for t in run_for(Duration::from_millis(500), false) {
        let _ = t.await;
    }
    let cpu0 = total_cpu_seconds(None);
    let start = Instant::now();
    for t in run_for(Duration::from_secs_f64(secs), true) {
        let _ = t.await;
    }
    let wall = start.elapsed().as_secs_f64();
    let cores = cpu0
        .zip(total_cpu_seconds(None))
        .map_or(f64::NAN, |(a, b)| (b - a) / wall);
    Ok((done.load(Ordering::Relaxed) as f64 / wall, cores))
}

// --------------------------------------------------------------- report ---

struct Row {
    name: &'static str,
    value: String,
    client_cores: Option<f64>,
    server_cores: Option<f64>,
    note: String,
}

async fn measured(
    target: &Target,
    generator: &Generator,
    cfg: &RunConfig,
    server_pid: Option<u32>,
) -> Result<(RunReport, Option<f64>)> {
    let s0 = server_pid.and_then(|p| total_cpu_seconds(Some(p)));
    let t0 = Instant::now();
    let rep = run(target, generator, cfg).await?;
    let wall = t0.elapsed().as_secs_f64();
    let s1 = server_pid.and_then(|p| total_cpu_seconds(Some(p)));
    eprint!("{}", rep.text());
    Ok((rep, s0.zip(s1).map(|(a, b)| (b - a) / wall)))
}

fn closed(label: &str, secs: f64) -> RunConfig {
    RunConfig::closed(label, STREAMS, secs, true)
}

fn open(label: &str, rate: f64, secs: f64) -> RunConfig {
    RunConfig::open(label, rate, secs)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(served) = echo_mode(&args) {
        return served;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let secs = if quick { 2.0 } else { 5.0 };
    let load_before = load_average();

    // The model repository: version 1 served, version 2 kept for the swap.
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("models");
    std::fs::create_dir_all(&repo)?;
    let v1 = tmp.path().join("src1");
    let v2 = tmp.path().join("src2");
    write_synthetic_model(&v1, &spec(1))?;
    write_synthetic_model(&v2, &spec(2))?;
    profiled_store::publish(&v1, &repo, MODEL)?;

    let bin = profiled_bin()?;
    // `SERVER_REPORT_LOG=FILE` keeps the server's log there (with
    // `SERVER_REPORT_RUST_LOG`, e.g. `h2=debug,info`; default `warn`).
    let log_path = std::env::var_os("SERVER_REPORT_LOG")
        .map_or_else(|| tmp.path().join("profiled.log"), PathBuf::from);
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(&bin);
    cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", ""])
        .arg("--models")
        .arg(&repo)
        .env("PROFILED__MODELS__POLL_INTERVAL_MS", "200")
        .env("PROFILED__MODELS__DEBOUNCE_MS", "50")
        .env("PROFILED__HTTP__ENABLED", "true")
        .env("PROFILED__HTTP__ADDR", "127.0.0.1:0")
        .env("PROFILED__HTTP__BENCH_ECHO", "true")
        .env(
            "RUST_LOG",
            std::env::var("SERVER_REPORT_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(Stdio::from(log));
    let server = spawn_listening(cmd)?;
    let server_pid = Some(server.child.id());
    let http_addr = server.next_addr("http listening on ")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows: Vec<Row> = Vec::new();
    let pool = UserPool::synthetic_model(5, POOL, ITEMS, MAX_EVENTS);
    let mut pool = Arc::new(pool);
    let workload = |pool: &Arc<UserPool>, hit: f64| Workload {
        model: MODEL.into(),
        pool: pool.clone(),
        known_users: Arc::new(Vec::new()),
        hit_ratio: hit,
        mix: Workload::parse_mix("embed").unwrap_or_default(),
        tracked: Arc::new(Zipf::new(1, 1.0)),
    };
    let target_cfg = |addr: &str| TargetConfig {
        addr: addr.to_string(),
        connections: CONNECTIONS,
        ..TargetConfig::default()
    };

    let result = rt.block_on(async {
        wait_serving(&server.addr).await?;
        let target = Target::connect(&target_cfg(&server.addr)).await?;
        let kinds = target.input_kinds(MODEL).await?;
        let mut fitted = (*pool).clone();
        fitted.fit(&kinds);
        pool = Arc::new(fitted);

        // A real response of the server: the echo's answer.
        let (echo, template) = start_echo(&target, MODEL, pool.users[0].clone(), tmp.path()).await?;
        let echo_target = Target::connect(&target_cfg(&echo.addr)).await?;

        // 1. echo floor.
        let g = Generator::new(workload(&pool, 1.0), 1)?;
        let mut warm = closed("echo warm-up", 1.0);
        warm.warmup = false;
        run(&echo_target, &g, &warm).await?;
        let mut c = closed("echo", secs);
        c.warmup = false;
        let (echo_rep, echo_cores) = measured(&echo_target, &g, &c, Some(echo.child.id())).await?;
        let echo_rps = echo_rep.ok_rps();
        rows.push(Row {
            name: "echo_rps",
            value: format!("{echo_rps:.0}"),
            client_cores: echo_rep.client_cores(),
            server_cores: echo_cores,
            note: format!("gRPC + protobuf floor, p99 {} µs", echo_rep.latency().p99),
        });

        // 2. encoder floor.
        let (encoder_ups, enc_cores) = encoder_floor(&repo, &pool, secs).await?;
        rows.push(Row {
            name: "encoder_users_per_s",
            value: format!("{encoder_ups:.0}"),
            client_cores: None,
            server_cores: Some(enc_cores),
            note: "batcher + worker pool in-process, no gRPC".into(),
        });

        // 3. hits.
        let g = Generator::new(workload(&pool, 1.0), 2)?;
        run(&target, &g, &closed("hit warm-up", 1.0)).await?;
        let (hit_rep, hit_cores) = measured(&target, &g, &closed("embed hits", secs), server_pid).await?;
        let embed_hit_rps = hit_rep.ok_rps();
        rows.push(Row {
            name: "embed_hit_rps",
            value: format!("{embed_hit_rps:.0}"),
            client_cores: hit_rep.client_cores(),
            server_cores: hit_cores,
            note: format!(
                "{:.2} × echo (target ≥ 0.85); p99 {} µs; errors {}",
                embed_hit_rps / echo_rps,
                hit_rep.latency().p99,
                hit_rep.error_total()
            ),
        });

        // 3b. HTTP/JSON: Embed hits on /v1/embed against the echo route of
        // the same listener (same bodies, same decoding, an Embed-shaped
        // answer of the same dimension), both closed loop.
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
            pool.users
                .iter()
                .take(256)
                .map(|u| serde_json::to_vec(&json!({"model": {"name": MODEL}, "users": [{"features": features_json(u)}]})))
                .collect::<Result<_, _>>()?,
        );
        let dim = template.dim;
        let echo_path = format!("/bench/echo?dim={dim}");
        http_closed(&http_addr, "/v1/embed", &bodies, 4, 1.0).await?; // fills the cache
        let (http_echo, http_echo_cores) =
            http_measured(&http_addr, &echo_path, &bodies, secs, server_pid).await?;
        let (http_hit, http_hit_cores) =
            http_measured(&http_addr, "/v1/embed", &bodies, secs, server_pid).await?;
        let http_echo_rps = http_echo.ok as f64 / http_echo.secs;
        let http_embed_hit_rps = http_hit.ok as f64 / http_hit.secs;
        rows.push(Row {
            name: "http_echo_rps",
            value: format!("{http_echo_rps:.0}"),
            client_cores: None,
            server_cores: http_echo_cores,
            note: format!(
                "HTTP/1.1 + JSON floor (/bench/echo, {HTTP_CONNECTIONS} keep-alive connections); p99 {} µs; answers {} B vs Embed {} B; errors {}",
                http_echo.p99_us, http_echo.answer_bytes, http_hit.answer_bytes, http_echo.errors
            ),
        });
        rows.push(Row {
            name: "http_embed_hit_rps",
            value: format!("{http_embed_hit_rps:.0}"),
            client_cores: None,
            server_cores: http_hit_cores,
            note: format!(
                "{:.2} × http echo; {:.2} × gRPC embed_hit_rps; p99 {} µs; errors {}",
                http_embed_hit_rps / http_echo_rps,
                http_embed_hit_rps / embed_hit_rps,
                http_hit.p99_us,
                http_hit.errors
            ),
        });

        // 4. misses.
        let g = Generator::new(workload(&pool, 0.0), 3)?;
        run(&target, &g, &closed("miss warm-up", 1.0)).await?;
        let (miss_rep, miss_cores) = measured(&target, &g, &closed("embed misses", secs), server_pid).await?;
        let embed_miss_rps = miss_rep.ok_rps();
        let floor = echo_rps.min(encoder_ups);
        // What a miss could reach at best here: client and server share the
        // machine's cores, and each miss costs at least one user's compute
        // (encoder floor) plus one bare gRPC call on both sides (echo floor).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let echo_call_cpu = (echo_cores.unwrap_or(f64::NAN) + echo_rep.client_cores().unwrap_or(f64::NAN)) / echo_rps;
        let miss_ceiling = cpus / (enc_cores / encoder_ups + echo_call_cpu);
        let miss_ceiling_over_floor = miss_ceiling / floor;
        rows.push(Row {
            name: "embed_miss_rps",
            value: format!("{embed_miss_rps:.0}"),
            client_cores: miss_rep.client_cores(),
            server_cores: miss_cores,
            note: format!(
                "{:.2} × min(echo, encoder) (target ≥ 0.6; ceiling here {:.2}: compute + a bare echo call per miss on {cpus} shared cores); p99 {} µs; errors {}",
                embed_miss_rps / floor,
                miss_ceiling_over_floor,
                miss_rep.latency().p99,
                miss_rep.error_total()
            ),
        });

        // 5. half load, open loop.
        let half = (embed_miss_rps / 2.0).max(1.0);
        let (half_rep, half_cores) =
            measured(&target, &g, &open("half load", half, 2.0 * secs), server_pid).await?;
        let p99_half = half_rep.latency().p99;
        rows.push(Row {
            name: "embed_miss_p99_us_at_half_load",
            value: format!("{p99_half}"),
            client_cores: half_rep.client_cores(),
            server_cores: half_cores,
            note: format!(
                "open loop {half:.0}/s (target ≤ 2000 µs); p50 {} µs; send lag p99 {} µs; server queue+compute p50 {} / p99 {} µs; errors {}",
                half_rep.latency().p50,
                half_rep
                    .send_lag
                    .as_ref()
                    .map_or(0, |h| h.value_at_quantile(0.99)),
                half_rep.stats.server_work.as_ref().map_or(0, |h| h.value_at_quantile(0.5)),
                half_rep.stats.server_work.as_ref().map_or(0, |h| h.value_at_quantile(0.99)),
                half_rep.error_total()
            ),
        });

        // 5b. The same open-loop rate against the echo: the transport's own
        // p99 on this machine at this rate (an in-run baseline for 5).
        let (echo_half_rep, echo_half_cores) = measured(
            &echo_target,
            &g,
            &open("echo at half load", half, 2.0 * secs),
            Some(echo.child.id()),
        )
        .await?;
        drop(echo);
        let echo_p99_half = echo_half_rep.latency().p99;
        rows.push(Row {
            name: "echo_p99_us_at_half_load",
            value: format!("{echo_p99_half}"),
            client_cores: echo_half_rep.client_cores(),
            server_cores: echo_half_cores,
            note: format!(
                "baseline: the echo at the same open-loop rate; p50 {} µs; errors {}",
                echo_half_rep.latency().p50,
                echo_half_rep.error_total()
            ),
        });

        // 6. swap at the same rate.
        let swap_secs = if quick { 6.0 } else { 12.0 };
        let mut sc = open("swap", half, swap_secs);
        sc.swap = Some(SwapPlan {
            at: Duration::from_secs_f64(swap_secs / 3.0),
            src: v2.clone(),
            repo: repo.clone(),
            model: MODEL.into(),
            settle: Duration::from_secs(1),
        });
        let (swap_rep, swap_cores) = measured(&target, &g, &sc, server_pid).await?;
        let sw = swap_rep.stats.swap.clone().context("swap stats")?;
        let before_p99 = sw.before.summary().p99.max(1);
        let swap_p99_ratio = sw.during.summary().p99 as f64 / before_p99 as f64;
        let swap_errors = swap_rep.error_total();
        let seen_ms = sw
            .started
            .zip(sw.seen)
            .map(|(a, b)| b.saturating_duration_since(a).as_millis() as u64);
        rows.push(Row {
            name: "swap_p99_ratio",
            value: format!("{swap_p99_ratio:.2}"),
            client_cores: swap_rep.client_cores(),
            server_cores: swap_cores,
            note: format!(
                "p99 before {} / during {} / after {} µs (target ≤ 1.5); new version answering {} ms after publish",
                sw.before.summary().p99,
                sw.during.summary().p99,
                sw.after.summary().p99,
                seen_ms.map_or("never".into(), |m| m.to_string())
            ),
        });
        rows.push(Row {
            name: "swap_errors",
            value: swap_errors.to_string(),
            client_cores: None,
            server_cores: None,
            note: format!("{:?} (target 0)", swap_rep.stats.all.errors),
        });

        // 7. overload at 3 × miss rate.
        let (over_rep, over_cores) =
            measured(&target, &g, &open("overload 3x", 3.0 * embed_miss_rps, secs), server_pid).await?;
        let other: u64 = over_rep
            .stats
            .all
            .errors
            .iter()
            .filter(|(k, _)| k.as_str() != "RESOURCE_EXHAUSTED" && k.as_str() != "CLIENT_BACKLOG")
            .map(|(_, v)| *v)
            .sum();
        rows.push(Row {
            name: "overload_errors_other_than_resource_exhausted",
            value: other.to_string(),
            client_cores: over_rep.client_cores(),
            server_cores: over_cores,
            note: format!(
                "{:.0}/s offered, {:.0}/s ok; errors {:?}; examples {:?} (target 0)",
                3.0 * embed_miss_rps,
                over_rep.ok_rps(),
                over_rep.stats.all.errors,
                over_rep.stats.error_examples
            ),
        });

        let load_after = load_average();
        let j = json!({
            "echo_rps": echo_rps.round(),
            "encoder_users_per_s": encoder_ups.round(),
            "embed_hit_rps": embed_hit_rps.round(),
            "embed_miss_rps": embed_miss_rps.round(),
            "embed_miss_p99_us_at_half_load": p99_half,
            "echo_p99_us_at_half_load": echo_p99_half,
            "swap_p99_ratio": (swap_p99_ratio * 100.0).round() / 100.0,
            "swap_errors": swap_errors,
            "overload_errors_other_than_resource_exhausted": other,
            "overload_resource_exhausted": over_rep.stats.all.errors.get("RESOURCE_EXHAUSTED").copied().unwrap_or(0),
            "overload_client_backlog": over_rep.stats.all.errors.get("CLIENT_BACKLOG").copied().unwrap_or(0),
            "hit_over_echo": (embed_hit_rps / echo_rps * 100.0).round() / 100.0,
            "http_echo_rps": http_echo_rps.round(),
            "http_embed_hit_rps": http_embed_hit_rps.round(),
            "http_hit_over_http_echo": (http_embed_hit_rps / http_echo_rps * 100.0).round() / 100.0,
            "miss_over_floor": (embed_miss_rps / floor * 100.0).round() / 100.0,
            "miss_over_floor_ceiling": (miss_ceiling_over_floor * 100.0).round() / 100.0,
            "client_cores": {
                "echo": echo_rep.client_cores(), "hit": hit_rep.client_cores(), "miss": miss_rep.client_cores(),
                "half_load": half_rep.client_cores(), "overload": over_rep.client_cores(),
            },
            "server_cores": {
                "echo": echo_cores, "encoder": enc_cores, "hit": hit_cores, "miss": miss_cores,
                "half_load": half_cores, "overload": over_cores,
            },
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "streams": STREAMS,
            "connections": CONNECTIONS,
            "load_before": load_before,
            "load_after": load_after,
            "targets_met": {
                "hit": embed_hit_rps >= 0.85 * echo_rps,
                "miss": embed_miss_rps >= 0.6 * floor,
                "p99_half_load": p99_half <= 2000,
                "swap_p99_ratio": swap_p99_ratio <= 1.5,
                "swap_errors": swap_errors == 0,
                "overload": other == 0,
            },
        });
        anyhow::Ok(j)
    })?;

    println!(
        "server report — profiled (release) on 127.0.0.1, synthetic model d=64/4 heads/2 layers/FFN 256, \
         ≈50 events per user; {CONNECTIONS} connections, {STREAMS} closed-loop streams; {} CPUs; \
         load average before {:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before
    );
    println!(
        "{:<46} {:>10} {:>8} {:>8}  notes",
        "figure", "value", "client", "server"
    );
    let cores = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.2}"));
    for r in &rows {
        println!(
            "{:<46} {:>10} {:>8} {:>8}  {}",
            r.name,
            r.value,
            cores(r.client_cores),
            cores(r.server_cores),
            r.note
        );
    }
    println!(
        "(client / server: CPU cores used during the measurement; load average after {:?})",
        load_average()
    );
    println!("{result}");
    drop(server);
    Ok(())
}
