//! The per-model batcher: a bounded queue of single-user jobs, drained by
//! worker threads (plain `std` threads, outside the tokio runtime) that group
//! up to `max_batch` jobs arriving within `max_delay_us` and run
//! `Encoder::forward_batch` once per generation in the batch. Jobs whose
//! deadline passed are answered DEADLINE_EXCEEDED before any compute; a full
//! queue answers RESOURCE_EXHAUSTED at once.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use profiled_model::{UserFeatures, Workspace};
use profiled_store::Generation;
use tokio::sync::oneshot;

use crate::config::BatcherConfig;
use crate::error::{ApiError, model_error};

/// A computed profile with its timings.
#[derive(Debug, Clone)]
pub struct Computed {
    /// The unit profile vector.
    pub vector: Arc<[f32]>,
    /// Microseconds the job waited in the queue.
    pub queue_us: u64,
    /// Microseconds of the batch forward it rode in.
    pub compute_us: u64,
}

/// One user to compute.
#[derive(Debug)]
pub struct Job {
    /// The generation to compute with (kept alive by the job).
    pub generation: Arc<Generation>,
    /// The features (validated at the edge).
    pub features: UserFeatures,
    /// Request path of the user, for error messages.
    pub path: String,
    /// Drop the job unanswered-by-compute after this instant.
    pub deadline: Option<Instant>,
    /// When it was queued.
    pub enqueued: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Computed, ApiError>>,
}

/// A model's batcher. Dropping it stops its workers once the queue drains.
#[derive(Debug)]
pub struct Batcher {
    model: String,
    tx: SyncSender<Job>,
    capacity: usize,
    queued: Gauge,
    shed: Counter,
}

/// The worker side's metric handles (looked up once, not per batch).
struct WorkerMetrics {
    queued: Gauge,
    deadline_dropped: Counter,
    /// Per generation id: batch size, compute seconds, queue seconds.
    by_generation: HashMap<u64, [Histogram; 3]>,
}

impl WorkerMetrics {
    fn new(model: &str) -> WorkerMetrics {
        WorkerMetrics {
            queued: metrics::gauge!("profiled_batcher_queued", "model" => model.to_string()),
            deadline_dropped: metrics::counter!("profiled_deadline_dropped_total", "model" => model.to_string()),
            by_generation: HashMap::new(),
        }
    }

    fn of(&mut self, g: &Generation) -> &[Histogram; 3] {
        if self.by_generation.len() > 64 && !self.by_generation.contains_key(&g.id) {
            self.by_generation.clear();
        }
        self.by_generation.entry(g.id).or_insert_with(|| {
            let (model, version) = (g.model.clone(), g.version.to_string());
            [
                metrics::histogram!("profiled_batch_size", "model" => model.clone(), "version" => version.clone()),
                metrics::histogram!("profiled_compute_seconds", "model" => model.clone(), "version" => version.clone()),
                metrics::histogram!("profiled_queue_seconds", "model" => model, "version" => version),
            ]
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Batcher {
    /// Starts a batcher for `model` with its worker threads.
    pub fn new(model: &str, cfg: &BatcherConfig) -> Result<Batcher, ApiError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(cfg.queue_capacity);
        let rx = Arc::new(Mutex::new(rx));
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.workers
        };
        for i in 0..workers {
            let rx = rx.clone();
            let max_batch = cfg.max_batch.max(1);
            let max_delay = Duration::from_micros(cfg.max_delay_us);
            let model_name = model.to_string();
            let nice = cfg.worker_nice;
            std::thread::Builder::new()
                .name(format!("profiled-worker-{model}-{i}"))
                .spawn(move || {
                    profiled_store::lower_thread_priority(nice);
                    worker(&model_name, &rx, max_batch, max_delay)
                })
                .map_err(|e| ApiError::Internal(format!("cannot start a worker thread: {e}")))?;
        }
        Ok(Batcher {
            model: model.to_string(),
            tx,
            capacity: cfg.queue_capacity,
            queued: metrics::gauge!("profiled_batcher_queued", "model" => model.to_string()),
            shed: metrics::counter!("profiled_shed_total", "model" => model.to_string(), "reason" => "queue_full"),
        })
    }

    /// Queues a job; RESOURCE_EXHAUSTED at once when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.queued.increment(1.0);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.shed.increment(1);
                Err(ApiError::Overloaded(format!(
                    "model {:?}: the batcher queue is full (batcher.queue_capacity = {}); retry with backoff",
                    self.model, self.capacity
                )))
            }
            Err(TrySendError::Disconnected(_)) => Err(ApiError::Unavailable(format!(
                "model {:?}: the batcher is stopped",
                self.model
            ))),
        }
    }

    /// Computes one user: queue, wait for the answer.
    pub async fn compute(
        &self,
        generation: Arc<Generation>,
        features: UserFeatures,
        path: String,
        deadline: Option<Instant>,
    ) -> Result<Computed, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job {
            generation,
            features,
            path,
            deadline,
            enqueued: Instant::now(),
            reply,
        })?;
        rx.await
            .map_err(|_| ApiError::Internal("a worker dropped the job".into()))?
    }
}

fn collect(rx: &Mutex<Receiver<Job>>, max_batch: usize, max_delay: Duration) -> Option<Vec<Job>> {
    let rx = lock(rx);
    let first = rx.recv().ok()?;
    let until = Instant::now() + max_delay;
    let mut batch = vec![first];
    while batch.len() < max_batch {
        let now = Instant::now();
        // Take what is already queued, then wait for company until `until`.
        match rx.try_recv() {
            Ok(j) => {
                batch.push(j);
                continue;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        if now >= until {
            break;
        }
        match rx.recv_timeout(until - now) {
            Ok(j) => batch.push(j),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

fn worker(model: &str, rx: &Mutex<Receiver<Job>>, max_batch: usize, max_delay: Duration) {
    let mut ws = Workspace::new();
    let mut m = WorkerMetrics::new(model);
    while let Some(batch) = collect(rx, max_batch, max_delay) {
        m.queued.decrement(batch.len() as f64);
        let now = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for job in batch {
            if job.deadline.is_some_and(|d| d <= now) {
                m.deadline_dropped.increment(1);
                let waited = now.duration_since(job.enqueued).as_micros();
                let _ = job.reply.send(Err(ApiError::DeadlineExceeded(format!(
                    "{}: deadline exceeded after {waited} µs in the queue; dropped before compute",
                    job.path
                ))));
            } else if job.reply.is_closed() {
                // The caller went away (cancelled): skip the work.
            } else {
                live.push(job);
            }
        }
        // One forward per generation present in the batch (usually one).
        while !live.is_empty() {
            let gid = live[0].generation.id;
            let (group, rest): (Vec<Job>, Vec<Job>) =
                live.into_iter().partition(|j| j.generation.id == gid);
            live = rest;
            run_group(group, &mut ws, &mut m);
        }
    }
}

fn run_group(mut group: Vec<Job>, ws: &mut Workspace, m: &mut WorkerMetrics) {
    let Some(first) = group.first() else {
        return;
    };
    let generation = first.generation.clone();
    let started = Instant::now();
    // The features move into the batch (no copy) and back if a user of a
    // failed batch has to be isolated below.
    let feats: Vec<UserFeatures> = group
        .iter_mut()
        .map(|j| std::mem::take(&mut j.features))
        .collect();
    // Each row goes straight from the output buffer into the `Arc` that
    // the cache and the response share (one copy).
    let result = generation.encoder.forward_batch(&feats, ws).map(|p| {
        (0..p.len())
            .filter_map(|i| p.row(i).map(Arc::<[f32]>::from))
            .collect::<Vec<_>>()
    });
    let compute_us = started.elapsed().as_micros() as u64;
    let [batch_hist, compute_hist, queue_hist] = m.of(&generation);
    batch_hist.record(group.len() as f64);
    compute_hist.record(started.elapsed().as_secs_f64());
    for job in &group {
        queue_hist.record(started.duration_since(job.enqueued).as_secs_f64());
    }
    match result {
        Ok(rows) if rows.len() == group.len() => {
            for (job, row) in group.into_iter().zip(rows) {
                let queue_us = started.duration_since(job.enqueued).as_micros() as u64;
                let _ = job.reply.send(Ok(Computed {
                    vector: row,
                    queue_us,
                    compute_us,
                }));
            }
        }
        Ok(_) => {
            for job in group {
                let _ = job.reply.send(Err(ApiError::Internal(
                    "forward returned too few rows".into(),
                )));
            }
        }
        Err(_) if group.len() > 1 => {
            // Isolate the failing user(s): one forward each.
            for (mut job, f) in group.into_iter().zip(feats) {
                job.features = f;
                run_group(vec![job], ws, m);
            }
        }
        Err(e) => {
            if let Some(job) = group.into_iter().next() {
                let _ = job.reply.send(Err(model_error(&job.path, e)));
            }
        }
    }
}
