//! The schedulers: open loop (constant arrival rate, latency from the
//! intended send time) and closed loop (N streams, each sending its next
//! call when the previous one is answered); the rate sweep; the swap.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::cpu::total_cpu_seconds;
use super::stats::{Stats, Summary, SwapStats, fmt_us};
use super::target::{Call, Target};
use super::workload::Generator;
use super::{Error, Result};

/// How calls are scheduled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Call `i` is due at `start + i / rate`, whatever happened to the
    /// earlier calls; its latency is measured from that intended time.
    Open {
        /// Calls per second.
        rate: f64,
    },
    /// `streams` loops, each sending its next call once the previous one is
    /// answered (latency from the actual send).
    Closed {
        /// Concurrent streams.
        streams: usize,
    },
}

/// Publish a model version mid-run.
#[derive(Debug, Clone)]
pub struct SwapPlan {
    /// Seconds after the start of the run.
    pub at: Duration,
    /// The version folder to publish.
    pub src: PathBuf,
    /// The server's model repository.
    pub repo: PathBuf,
    /// The model name.
    pub model: String,
    /// How long "during" lasts after the first answer by the new version.
    pub settle: Duration,
}

/// One run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Name in the progress line and the report.
    pub label: String,
    /// Scheduling.
    pub mode: Mode,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Stop after this many calls.
    pub count: Option<u64>,
    /// Calls in flight above which the client does not send a due call
    /// (counted as `CLIENT_BACKLOG`) instead of growing without bound.
    pub max_in_flight: usize,
    /// Print a live progress line on stderr.
    pub progress: bool,
    /// Fill the hot cache with the pool users first (when the hit ratio > 0).
    pub warmup: bool,
    /// Publish a new version mid-run.
    pub swap: Option<SwapPlan>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            label: "run".into(),
            mode: Mode::Closed { streams: 16 },
            duration: Some(Duration::from_secs(10)),
            count: None,
            max_in_flight: 20_000,
            progress: false,
            warmup: true,
            swap: None,
        }
    }
}

impl RunConfig {
    /// A closed-loop run of `streams` for `secs` (quiet, no swap).
    pub fn closed(label: &str, streams: usize, secs: f64, warmup: bool) -> RunConfig {
        RunConfig {
            label: label.into(),
            mode: Mode::Closed { streams },
            duration: Some(Duration::from_secs_f64(secs)),
            warmup,
            ..RunConfig::default()
        }
    }

    /// An open-loop run at `rate` calls/s for `secs` (quiet, no warm-up).
    pub fn open(label: &str, rate: f64, secs: f64) -> RunConfig {
        RunConfig {
            label: label.into(),
            mode: Mode::Open { rate },
            duration: Some(Duration::from_secs_f64(secs)),
            warmup: false,
            ..RunConfig::default()
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The label.
    pub label: String,
    /// The scheduling.
    pub mode: Mode,
    /// Connections used.
    pub connections: usize,
    /// Wall time from the first due call to the last answer.
    pub elapsed: Duration,
    /// Wall time of the sending part.
    pub send_time: Duration,
    /// Calls sent.
    pub sent: u64,
    /// Everything recorded.
    pub stats: Stats,
    /// Open loop: how late the client sent each call after its intended time.
    pub send_lag: Option<Histogram<u64>>,
    /// Most calls in flight at once.
    pub peak_in_flight: usize,
    /// Client CPU seconds (user + system) over the run.
    pub client_cpu_s: Option<f64>,
}

impl RunReport {
    /// Answered calls (ok + failed, not counting calls never sent).
    pub fn completed(&self) -> u64 {
        self.stats.all.ok + self.stats.all.error_total()
            - self
                .stats
                .all
                .errors
                .get("CLIENT_BACKLOG")
                .copied()
                .unwrap_or(0)
    }

    /// Successful calls per second.
    pub fn ok_rps(&self) -> f64 {
        self.stats.all.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Answered calls per second.
    pub fn achieved_rps(&self) -> f64 {
        self.completed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Sent calls per second of sending time.
    pub fn sent_rps(&self) -> f64 {
        self.sent as f64 / self.send_time.as_secs_f64().max(1e-9)
    }

    /// The intended rate (open loop).
    pub fn intended_rps(&self) -> Option<f64> {
        match self.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed { .. } => None,
        }
    }

    /// Latency of successful calls.
    pub fn latency(&self) -> Summary {
        self.stats.all.summary()
    }

    /// Failed calls (including calls never sent).
    pub fn error_total(&self) -> u64 {
        self.stats.all.error_total()
    }

    /// Client CPU use in cores (CPU seconds ÷ wall seconds).
    pub fn client_cores(&self) -> Option<f64> {
        self.client_cpu_s
            .map(|c| c / self.elapsed.as_secs_f64().max(1e-9))
    }

    /// The JSON report.
    pub fn to_json(&self) -> Value {
        let mode = match self.mode {
            Mode::Open { rate } => json!({"kind": "open", "intended_rps": rate}),
            Mode::Closed { streams } => json!({"kind": "closed", "streams": streams}),
        };
        let by_kind: BTreeMap<&str, Value> = self
            .stats
            .by_kind
            .iter()
            .map(|(k, b)| (*k, b.to_json()))
            .collect();
        let swap = self.stats.swap.as_ref().map(|s| {
            let since = |t: Option<Instant>| {
                s.started
                    .zip(t)
                    .map(|(a, b)| b.saturating_duration_since(a).as_secs_f64() * 1e3)
            };
            json!({
                "new_version": s.new_version,
                "publish_error": s.publish_error,
                "publish_ms": since(s.published),
                "first_answer_by_new_version_ms": since(s.seen),
                "settle_ms": s.settle.as_millis() as u64,
                "before": s.before.to_json(),
                "during": s.during.to_json(),
                "after": s.after.to_json(),
            })
        });
        json!({
            "label": self.label,
            "mode": mode,
            "connections": self.connections,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "sent": self.sent,
            "sent_rps": self.sent_rps(),
            "achieved_rps": self.achieved_rps(),
            "ok": self.stats.all.ok,
            "ok_rps": self.ok_rps(),
            "errors": self.stats.all.errors,
            "error_examples": self.stats.error_examples,
            "latency": self.latency().to_json(),
            "send_lag": self.send_lag.as_ref().map(|h| Summary::of(h).to_json()),
            "server_work": self.stats.server_work.as_ref().map(|h| Summary::of(h).to_json()),
            "peak_in_flight": self.peak_in_flight,
            "by_kind": by_kind,
            "versions": self.stats.versions.iter().map(|(v, n)| (v.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "swap": swap,
            "client_cpu_s": self.client_cpu_s,
            "client_cores": self.client_cores(),
        })
    }

    /// A human summary (several lines).
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mode = match self.mode {
            Mode::Open { rate } => format!("open loop, {rate:.0}/s intended"),
            Mode::Closed { streams } => format!("closed loop, {streams} streams"),
        };
        out += &format!(
            "== {}: {mode}, {} connection(s), {:.2} s\n",
            self.label,
            self.connections,
            self.elapsed.as_secs_f64()
        );
        out += &format!(
            "   sent {} ({:.0}/s), answered {:.0}/s, ok {} ({:.0}/s), errors {} {:?}\n",
            self.sent,
            self.sent_rps(),
            self.achieved_rps(),
            self.stats.all.ok,
            self.ok_rps(),
            self.error_total(),
            self.stats.all.errors
        );
        for (code, m) in &self.stats.error_examples {
            out += &format!("   first {code}: {m}\n");
        }
        out += &format!("   latency of ok calls: {}\n", self.latency().text());
        if let Some(h) = &self.send_lag {
            out += &format!(
                "   send lag (client late vs intended, included above): {}\n",
                Summary::of(h).text()
            );
        }
        if let Some(h) = &self.stats.server_work {
            out += &format!(
                "   server queue + compute (reported by the server, calls that computed): {}\n",
                Summary::of(h).text()
            );
        }
        if self.stats.by_kind.len() > 1 {
            for (k, b) in &self.stats.by_kind {
                out += &format!(
                    "   {k}: ok {} errors {} · {}\n",
                    b.ok,
                    b.error_total(),
                    b.summary().text()
                );
            }
        }
        if let Some(s) = &self.stats.swap {
            let ms = |t: Option<Instant>| match (s.started, t) {
                (Some(a), Some(b)) => format!(
                    "{:.0} ms",
                    b.saturating_duration_since(a).as_secs_f64() * 1e3
                ),
                _ => "never".into(),
            };
            out += &format!(
                "   swap: published version {:?} in {}{}; first answer by it {} after the publish started\n",
                s.new_version,
                ms(s.published),
                s.publish_error
                    .as_ref()
                    .map(|e| format!(" (FAILED: {e})"))
                    .unwrap_or_default(),
                ms(s.seen)
            );
            for (name, b) in [
                ("before", &s.before),
                ("during", &s.during),
                ("after", &s.after),
            ] {
                out += &format!(
                    "     {name:6} ok {:7} errors {} {:?} · {}\n",
                    b.ok,
                    b.error_total(),
                    b.errors,
                    b.summary().text()
                );
            }
        }
        if let (Some(c), Some(cores)) = (self.client_cpu_s, self.client_cores()) {
            out += &format!("   client CPU {c:.2} s ({cores:.2} cores)\n");
        }
        out
    }
}

fn lock(m: &Mutex<Stats>) -> MutexGuard<'_, Stats> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Shared {
    target: Target,
    stats: Mutex<Stats>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    sent: AtomicU64,
}

impl Shared {
    fn begin(&self) {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

async fn warm_up(target: &Target, generator: &Generator) -> Result<()> {
    let mut failed = BTreeMap::new();
    let calls = generator.workload().warmup_calls();
    let n = calls.len();
    let mut example = String::new();
    for c in calls {
        if let (super::Outcome::Err(code), m) = target.call_full(0, Call::Embed(c)).await {
            *failed.entry(super::target::code_name(code)).or_insert(0) += 1;
            if example.is_empty() {
                example = m.unwrap_or_default();
            }
        }
    }
    if n > 0 && failed.values().sum::<usize>() == n {
        return Err(Error::Config(format!(
            "every warm-up Embed call failed: {failed:?}, e.g. {example:?}"
        )));
    }
    Ok(())
}

/// Runs `cfg` with calls from `generator` against `target`.
pub async fn run(target: &Target, generator: &Generator, cfg: &RunConfig) -> Result<RunReport> {
    if cfg.duration.is_none() && cfg.count.is_none() {
        return Err(Error::Config("a run needs a duration or a count".into()));
    }
    match cfg.mode {
        Mode::Open { rate } if !(rate.is_finite() && rate > 0.0) => {
            return Err(Error::Config(format!("rate {rate} must be > 0")));
        }
        Mode::Closed { streams: 0 } => return Err(Error::Config("streams must be > 0".into())),
        _ => {}
    }
    if cfg.warmup && generator.workload().hit_ratio > 0.0 {
        warm_up(target, generator).await?;
    }
    let shared = Arc::new(Shared {
        target: target.clone(),
        stats: Mutex::new(Stats {
            swap: cfg.swap.as_ref().map(|p| SwapStats {
                settle: p.settle,
                ..SwapStats::default()
            }),
            ..Stats::default()
        }),
        in_flight: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
    });
    let cpu0 = total_cpu_seconds(None);
    let start = Instant::now();
    let stop_at = cfg.duration.map(|d| start + d);

    let swap_task = cfg.swap.clone().map(|plan| {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((start + plan.at).into()).await;
            lock(&shared.stats)
                .swap
                .get_or_insert_with(SwapStats::default)
                .started = Some(Instant::now());
            let r = tokio::task::spawn_blocking(move || {
                profiled_store::publish(&plan.src, &plan.repo, &plan.model)
            })
            .await;
            let now = Instant::now();
            let mut st = lock(&shared.stats);
            let already = st.versions.clone();
            if let Some(s) = &mut st.swap {
                s.published = Some(now);
                match r {
                    Ok(Ok((v, _))) => {
                        s.new_version = Some(v);
                        if already.contains_key(&v) {
                            s.seen = Some(now);
                        }
                    }
                    Ok(Err(e)) => s.publish_error = Some(e.to_string()),
                    Err(e) => s.publish_error = Some(e.to_string()),
                }
            }
        })
    });

    let finished = Arc::new(AtomicBool::new(false));
    let progress = (cfg.progress).then(|| {
        let shared = shared.clone();
        let finished = finished.clone();
        let label = cfg.label.clone();
        tokio::spawn(async move { progress_loop(&shared, &finished, &label, start).await })
    });

    let send_lag = match cfg.mode {
        Mode::Open { rate } => {
            let handle = tokio::runtime::Handle::current();
            let shared = shared.clone();
            let generator = generator.clone();
            let (count, max_in_flight) = (cfg.count, cfg.max_in_flight.max(1));
            let lag = tokio::task::spawn_blocking(move || {
                open_loop(
                    &handle,
                    &shared,
                    generator,
                    rate,
                    start,
                    stop_at,
                    count,
                    max_in_flight,
                )
            })
            .await
            .map_err(|e| Error::Config(format!("the open-loop scheduler failed: {e}")))?;
            Some(lag)
        }
        Mode::Closed { streams } => {
            let issued = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::with_capacity(streams);
            for s in 0..streams {
                let shared = shared.clone();
                let mut g = generator.fork(s as u64);
                let issued = issued.clone();
                let count = cfg.count;
                tasks.push(tokio::spawn(async move {
                    loop {
                        let n = issued.fetch_add(1, Ordering::Relaxed);
                        if count.is_some_and(|c| n >= c)
                            || stop_at.is_some_and(|t| Instant::now() >= t)
                        {
                            break;
                        }
                        let call = g.next_call();
                        let kind = call.kind();
                        shared.begin();
                        let t0 = Instant::now();
                        let (o, m) = shared.target.call_full(s, call).await;
                        let done = Instant::now();
                        {
                            let mut st = lock(&shared.stats);
                            st.record(kind, t0, done, o);
                            st.record_message(o, m);
                        }
                        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            None
        }
    };
    let send_time = start.elapsed();
    // Drain: wait for every call in flight (each has the per-call deadline).
    while shared.in_flight.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    finished.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    if let Some(t) = swap_task {
        if t.is_finished() {
            let _ = t.await;
        } else {
            t.abort();
        }
    }
    let stats = lock(&shared.stats).clone();
    let end = stats.last_done.unwrap_or(start).max(start + send_time);
    let cpu1 = total_cpu_seconds(None);
    Ok(RunReport {
        label: cfg.label.clone(),
        mode: cfg.mode,
        connections: target.connections(),
        elapsed: end - start,
        send_time,
        sent: shared.sent.load(Ordering::Relaxed),
        stats,
        send_lag,
        peak_in_flight: shared.peak.load(Ordering::Relaxed),
        client_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
    })
}

#[allow(clippy::too_many_arguments)]
fn open_loop(
    handle: &tokio::runtime::Handle,
    shared: &Arc<Shared>,
    mut generator: Generator,
    rate: f64,
    start: Instant,
    stop_at: Option<Instant>,
    count: Option<u64>,
    max_in_flight: usize,
) -> Histogram<u64> {
    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .expect("constant histogram bounds are valid");
    let interval_ns = 1e9 / rate;
    let mut i: u64 = 0;
    loop {
        if count.is_some_and(|c| i >= c) {
            break;
        }
        let intended = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
        if stop_at.is_some_and(|s| intended >= s) {
            break;
        }
        // Build the call before its time, so building is not on the clock.
        let call = generator.next_call();
        let kind = call.kind();
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        let sent_at = Instant::now();
        let _ = lag.record((sent_at.saturating_duration_since(intended).as_micros() as u64).max(1));
        if shared.in_flight.load(Ordering::Relaxed) >= max_in_flight {
            lock(&shared.stats).record_not_sent(kind);
            i += 1;
            continue;
        }
        shared.begin();
        let s = shared.clone();
        let conn = i as usize;
        handle.spawn(async move {
            let (o, m) = s.target.call_full(conn, call).await;
            let done = Instant::now();
            {
                let mut st = lock(&s.stats);
                st.record(kind, intended, done, o);
                st.record_message(o, m);
            }
            s.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        i += 1;
    }
    lag
}

async fn progress_loop(shared: &Shared, finished: &AtomicBool, label: &str, start: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let done = finished.load(Ordering::Relaxed);
        let now = Instant::now();
        let (ok, err, wok, werr, p99) = {
            let mut st = lock(&shared.stats);
            let w = std::mem::take(&mut st.window);
            (
                st.all.ok,
                st.all.error_total(),
                w.ok,
                w.error_total(),
                w.summary().p99,
            )
        };
        let secs = now.duration_since(last).as_secs_f64().max(1e-9);
        last = now;
        let line = format!(
            "{label} {:6.1}s  sent {}  ok {ok}  err {err}  | {:.0}/s answered | p99 {} | in flight {}",
            now.duration_since(start).as_secs_f64(),
            shared.sent.load(Ordering::Relaxed),
            (wok + werr) as f64 / secs,
            fmt_us(p99),
            shared.in_flight.load(Ordering::Relaxed)
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        if done {
            if tty {
                eprintln!();
            }
            break;
        }
    }
}

/// A rate sweep: open-loop steps of growing rate until the p99 target (or
/// zero errors) fails, then a bisection between the last pass and the fail.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// First rate.
    pub start_rate: f64,
    /// Highest rate tried.
    pub max_rate: f64,
    /// Growth factor between steps (> 1).
    pub factor: f64,
    /// Duration of each step.
    pub step: Duration,
    /// p99 target (µs) of successful calls.
    pub p99_target_us: u64,
    /// Bisection steps after the first failure.
    pub refine: usize,
    /// Pause between steps (lets queues drain).
    pub pause: Duration,
}

/// The sweep's steps and the highest passing rate.
#[derive(Debug, Clone)]
pub struct SweepReport {
    /// Each step: rate, report, pass.
    pub steps: Vec<(f64, RunReport, bool)>,
    /// Highest rate that held the target.
    pub best_rate: Option<f64>,
    /// The target.
    pub p99_target_us: u64,
}

impl SweepReport {
    /// The JSON report.
    pub fn to_json(&self) -> Value {
        json!({
            "p99_target_us": self.p99_target_us,
            "best_rate": self.best_rate,
            "steps": self.steps.iter().map(|(r, rep, pass)| json!({
                "rate": r, "pass": pass, "report": rep.to_json(),
            })).collect::<Vec<_>>(),
        })
    }

    /// A human summary.
    pub fn text(&self) -> String {
        let mut out = format!(
            "== sweep: highest rate holding p99 ≤ {}\n",
            fmt_us(self.p99_target_us)
        );
        for (r, rep, pass) in &self.steps {
            out += &format!(
                "   {r:9.0}/s  sent {:9.0}/s  p99 {:>10}  errors {:6}  {}\n",
                rep.sent_rps(),
                fmt_us(rep.latency().p99),
                rep.error_total(),
                if *pass { "pass" } else { "FAIL" }
            );
        }
        out += &match self.best_rate {
            Some(b) => format!("   best: {b:.0}/s\n"),
            None => "   best: none (the first step already failed)\n".into(),
        };
        out
    }
}

/// Runs a sweep; `base` gives everything but the mode and duration.
pub async fn sweep(
    target: &Target,
    generator: &Generator,
    base: &RunConfig,
    sw: &SweepConfig,
) -> Result<SweepReport> {
    if !(sw.factor > 1.0 && sw.start_rate > 0.0 && sw.max_rate >= sw.start_rate) {
        return Err(Error::Config(
            "sweep: need factor > 1 and 0 < start ≤ max".into(),
        ));
    }
    let mut steps = Vec::new();
    let mut best: Option<f64> = None;
    let mut fail: Option<f64> = None;
    let step = |rate: f64, i: usize| {
        let mut cfg = base.clone();
        cfg.mode = Mode::Open { rate };
        cfg.duration = Some(sw.step);
        cfg.count = None;
        cfg.swap = None;
        cfg.warmup = i == 0 && base.warmup;
        cfg.label = format!("{} @{rate:.0}/s", base.label);
        cfg
    };
    let pass = |rep: &RunReport, rate: f64| {
        rep.error_total() == 0
            && rep.stats.all.ok > 0
            && rep.latency().p99 <= sw.p99_target_us
            && rep.sent_rps() >= 0.95 * rate
    };
    let mut rate = sw.start_rate;
    let mut i = 0;
    loop {
        let rep = run(target, generator, &step(rate, i)).await?;
        i += 1;
        let ok = pass(&rep, rate);
        steps.push((rate, rep, ok));
        tokio::time::sleep(sw.pause).await;
        if ok {
            best = Some(rate);
            if rate >= sw.max_rate {
                break;
            }
            rate = (rate * sw.factor).min(sw.max_rate);
        } else {
            fail = Some(rate);
            break;
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (best, fail) {
        for _ in 0..sw.refine {
            let mid = (lo + hi) / 2.0;
            let rep = run(target, generator, &step(mid, i)).await?;
            i += 1;
            let ok = pass(&rep, mid);
            steps.push((mid, rep, ok));
            tokio::time::sleep(sw.pause).await;
            if ok {
                lo = mid;
                best = Some(mid);
            } else {
                hi = mid;
            }
        }
    }
    Ok(SweepReport {
        steps,
        best_rate: best,
        p99_target_us: sw.p99_target_us,
    })
}
