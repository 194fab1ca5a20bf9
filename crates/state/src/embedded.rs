//! The embedded backend: one [redb](https://www.redb.org) file,
//! `<dir>/state.redb`, serving one process (chosen over fjall by
//! measurement: docs/benchmarks.md, "State store: redb vs fjall").
//!
//! - **Durable acknowledgements.** Every write is a redb write transaction
//!   committed with `Durability::Immediate` (fsync'd) before any caller is
//!   answered.
//! - **Group commit.** One writer thread owns all writes. It is fed by a
//!   channel; it waits for the first job, drains everything else queued,
//!   applies all of it in one write transaction (reads inside it see the
//!   group's own earlier writes, so the same user twice in a group is
//!   applied twice, in order), commits once, then answers each caller. A
//!   commit therefore costs one fsync however many applies share it;
//!   [`EmbeddedStore::commit_stats`] counts both.
//! - **All-or-nothing.** Each user is one key; a user's update that fails
//!   ([`Error::Invalid`], [`Error::Corrupt`]) writes nothing and only fails
//!   that entry. A storage failure (I/O error, `ENOSPC` → [`Error::Full`])
//!   aborts the whole transaction: every caller of the group gets the
//!   error and nothing of it is stored. After an I/O error redb refuses the
//!   open handle, so the writer reopens the file (redb recovers to the last
//!   commit) before the next group.
//! - **Reads** run on tokio's blocking pool in their own read transaction:
//!   they never wait for a commit. A read cache in front of them
//!   (`cache_bytes`) answers hot users without touching the file: the store
//!   owns its file (no other process writes it), the writer puts every
//!   committed state into the cache after the commit, and a read that raced
//!   a commit does not fill the cache (a commit sequence checked under a
//!   lock the writer holds while it updates the cache), so the cache never
//!   holds anything older than the file.
//! - **Metrics:** `profiled_state_op_seconds{backend="embedded",op}` for
//!   `apply`, `get`, `delete` (the caller's wait) and `commit` (the write
//!   transaction of one group), and `profiled_state_commit_group_calls`
//!   (callers sharing one commit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::merge::{erase, merge, now_ms};
use crate::{
    Applied, Error, Policy, Result, StoreStats, UserState, UserStateStore, UserUpdate, codec,
};

/// User id → record ([`codec`]).
const USERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("users");
/// Counters kept in the same transactions: `live_users`.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const LIVE_USERS: &str = "live_users";

/// The file under [`EmbeddedConfig::dir`].
pub const FILE_NAME: &str = "state.redb";

/// At most this many jobs share one commit (bounds a commit's size).
const MAX_GROUP: usize = 4096;

/// Settings of the embedded backend (`[state.embedded]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Directory of the store file (created when absent).
    pub dir: PathBuf,
    /// Jobs waiting for the writer before callers wait to enqueue
    /// (back-pressure).
    pub queue: usize,
    /// Bytes of users' states kept in memory for reads (0 = none): a
    /// profile by id of a hot user then reads no file.
    pub cache_bytes: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/state"),
            queue: 4096,
            cache_bytes: 64 << 20,
        }
    }
}

/// Commits against calls, to see that group commit groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Write transactions committed.
    pub commits: u64,
    /// `apply` and `delete` calls answered from those commits.
    pub calls: u64,
}

enum Job {
    Apply {
        updates: Vec<UserUpdate>,
        policy: Policy,
        reply: oneshot::Sender<Vec<Result<Applied>>>,
    },
    Delete {
        user: String,
        reply: oneshot::Sender<Result<bool>>,
    },
}

struct Shared {
    name: String,
    path: PathBuf,
    /// `None` only while the writer reopens the file after an I/O error.
    db: ArcSwapOption<redb::Database>,
    commits: AtomicU64,
    calls: AtomicU64,
    /// Committed states of recently read or written users (`None`: no
    /// state); `None` when `cache_bytes` is 0.
    cache: Option<moka::sync::Cache<String, Option<Arc<UserState>>>>,
    /// Moves after every commit, before the cache takes its states.
    commit_seq: AtomicU64,
    /// The writer holds it (write) while it moves `commit_seq` and fills the
    /// cache; a reader holds it (read) while it checks `commit_seq` and
    /// fills the cache.
    cache_lock: std::sync::RwLock<()>,
}

/// The embedded [`UserStateStore`]. Opening the same directory twice in one
/// process fails ([`Error::Config`]): redb locks the file.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `config.dir`, recovering to the
    /// last durable commit, and starts its writer thread.
    pub fn open(config: &EmbeddedConfig) -> Result<Self> {
        let name = format!("embedded:{}", config.dir.display());
        std::fs::create_dir_all(&config.dir).map_err(|e| {
            Error::Config(format!(
                "state.embedded.dir {}: cannot create it: {e}",
                config.dir.display()
            ))
        })?;
        let path = config.dir.join(FILE_NAME);
        let db = open_db(&path).map_err(|e| match e {
            redb::Error::DatabaseAlreadyOpen => Error::Config(format!(
                "state.embedded.dir {}: the store is already open (another profiled process, \
                 or a second store on the same directory)",
                config.dir.display()
            )),
            e => Error::Config(format!("{}: cannot open: {e}", path.display())),
        })?;
        let shared = Arc::new(Shared {
            name,
            path,
            db: ArcSwapOption::from_pointee(db),
            commits: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            cache: (config.cache_bytes > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(config.cache_bytes)
                    .weigher(|k: &String, v: &Option<Arc<UserState>>| {
                        let bytes = 32 + k.len() + v.as_ref().map_or(0, |s| s.approx_bytes());
                        u32::try_from(bytes).unwrap_or(u32::MAX)
                    })
                    .build()
            }),
            commit_seq: AtomicU64::new(0),
            cache_lock: std::sync::RwLock::new(()),
        });
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("state-writer".to_owned())
                .spawn(move || writer_loop(&shared, rx))
                .map_err(|e| Error::Config(format!("cannot start the state writer thread: {e}")))?
        };
        // An open embedded store is always reachable (failures are per call).
        metrics::gauge!("profiled_state_store_up", "backend" => "embedded").set(1.0);
        Ok(Self {
            shared,
            jobs: Some(tx),
            writer: Some(writer),
        })
    }

    /// Commits so far and the calls they answered (`calls / commits` is the
    /// mean group size).
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            calls: self.shared.calls.load(Ordering::Relaxed),
        }
    }

    /// Path of the store file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn send(&self, job: Job) -> Result<()> {
        let closed = || Error::Unavailable {
            store: self.shared.name.clone(),
            message: "the store's writer has stopped".to_owned(),
        };
        match &self.jobs {
            Some(tx) => tx.send(job).await.map_err(|_| closed()),
            None => Err(closed()),
        }
    }
}

impl Drop for EmbeddedStore {
    /// Stops the writer after the jobs already queued and waits for it, so
    /// that the file is closed (and may be reopened) when this returns.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn open_db(path: &Path) -> Result<redb::Database, redb::Error> {
    let db = redb::Database::create(path)?;
    let txn = db.begin_write()?;
    {
        txn.open_table(USERS)?;
        txn.open_table(META)?;
    }
    txn.commit()?;
    Ok(db)
}

fn observe(op: &'static str, start: Instant) {
    metrics::histogram!("profiled_state_op_seconds", "backend" => "embedded", "op" => op)
        .record(start.elapsed().as_secs_f64());
}

/// Maps a redb error to ours; `ENOSPC` is [`Error::Full`].
fn store_error(store: &str, e: redb::Error) -> Error {
    let io = match &e {
        redb::Error::Io(io) => Some(io),
        _ => None,
    };
    if let Some(io) = io
        && (io.kind() == std::io::ErrorKind::StorageFull
            || io.kind() == std::io::ErrorKind::QuotaExceeded
            || io.raw_os_error() == Some(28))
    {
        return Error::Full {
            store: store.to_owned(),
            message: format!("{io} (nothing of this write was stored)"),
        };
    }
    Error::Unavailable {
        store: store.to_owned(),
        message: e.to_string(),
    }
}

fn writer_loop(shared: &Shared, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        run_group(shared, jobs);
    }
}

/// One job's outcome before the commit.
enum Outcome {
    Apply(oneshot::Sender<Vec<Result<Applied>>>, Vec<Result<Applied>>),
    Delete(oneshot::Sender<Result<bool>>, Result<bool>),
}

fn run_group(shared: &Shared, jobs: Vec<Job>) {
    let calls = jobs.len();
    let start = Instant::now();
    let (outcomes, failure) = match shared.db.load_full() {
        Some(db) => match write_group(shared, &db, jobs) {
            Ok(outcomes) => (outcomes, None),
            Err((jobs, e)) => (jobs, Some(e)),
        },
        None => (
            abandon(jobs),
            Some(redb::Error::Io(std::io::Error::other(
                "the store file is being reopened after an I/O error",
            ))),
        ),
    };
    match failure {
        None => {
            metrics::histogram!("profiled_state_op_seconds", "backend" => "embedded", "op" => "commit")
                .record(start.elapsed().as_secs_f64());
            metrics::histogram!("profiled_state_commit_group_calls").record(calls as f64);
            shared.commits.fetch_add(1, Ordering::Relaxed);
            shared.calls.fetch_add(calls as u64, Ordering::Relaxed);
            for o in outcomes {
                match o {
                    Outcome::Apply(reply, results) => {
                        let _ = reply.send(results);
                    }
                    Outcome::Delete(reply, had) => {
                        let _ = reply.send(had);
                    }
                }
            }
        }
        Some(e) => {
            let needs_reopen = matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo);
            let err = store_error(&shared.name, e);
            tracing::warn!(store = %shared.name, error = %err, calls, "state write transaction aborted");
            for o in outcomes {
                match o {
                    Outcome::Apply(reply, results) => {
                        let _ = reply.send(results.iter().map(|_| Err(err.clone())).collect());
                    }
                    Outcome::Delete(reply, _) => {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
            if needs_reopen {
                reopen(shared);
            }
        }
    }
}

/// The callers of jobs that never ran, with placeholder results (each is
/// answered with the group's error).
fn abandon(jobs: Vec<Job>) -> Vec<Outcome> {
    jobs.into_iter()
        .map(|job| match job {
            Job::Apply { updates, reply, .. } => Outcome::Apply(
                reply,
                updates.iter().map(|_| Ok(Applied::default())).collect(),
            ),
            Job::Delete { reply, .. } => Outcome::Delete(reply, Ok(false)),
        })
        .collect()
}

/// Applies every job in one write transaction and commits it. On a storage
/// error the transaction is dropped (aborted) and every caller is returned
/// for an error answer.
#[allow(clippy::result_large_err)]
fn write_group(
    shared: &Shared,
    db: &redb::Database,
    jobs: Vec<Job>,
) -> Result<Vec<Outcome>, (Vec<Outcome>, redb::Error)> {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => return Err((abandon(jobs), e.into())),
    };
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut written: Vec<(String, UserState)> = Vec::new();
    let mut pending = jobs.into_iter();
    let result: Result<(), redb::Error> = (|| {
        let mut users = txn.open_table(USERS)?;
        let mut meta = txn.open_table(META)?;
        let mut live = meta.get(LIVE_USERS)?.map_or(0, |v| v.value());
        let now = now_ms();
        for job in pending.by_ref() {
            match job {
                Job::Apply {
                    updates,
                    policy,
                    reply,
                } => {
                    let mut results = Vec::with_capacity(updates.len());
                    let mut fatal = None;
                    for update in &updates {
                        match apply_one(
                            &shared.name,
                            &mut users,
                            update,
                            policy,
                            now,
                            &mut live,
                            &mut written,
                        ) {
                            Ok(r) => results.push(r),
                            Err(e) => {
                                fatal = Some(e);
                                break;
                            }
                        }
                    }
                    // The caller is answered with the group's error when
                    // there is one; placeholders keep one entry per update.
                    results.resize_with(updates.len(), || Ok(Applied::default()));
                    outcomes.push(Outcome::Apply(reply, results));
                    if let Some(e) = fatal {
                        return Err(e);
                    }
                }
                Job::Delete { user, reply } => {
                    let had = delete_one(
                        &shared.name,
                        &mut users,
                        &user,
                        now,
                        &mut live,
                        &mut written,
                    );
                    match had {
                        Ok(had) => outcomes.push(Outcome::Delete(reply, had)),
                        Err(e) => {
                            outcomes.push(Outcome::Delete(reply, Ok(false)));
                            return Err(e);
                        }
                    }
                }
            }
        }
        meta.insert(LIVE_USERS, live)?;
        Ok(())
    })();
    if let Err(e) = result {
        drop(txn);
        outcomes.extend(abandon(pending.collect()));
        return Err((outcomes, e));
    }
    match txn.commit() {
        Ok(()) => {
            remember_committed(shared, written);
            Ok(outcomes)
        }
        Err(e) => Err((outcomes, e.into())),
    }
}

/// After a commit: moves the commit sequence and puts the committed states
/// in the read cache (in order: a user written twice ends with its last).
fn remember_committed(shared: &Shared, written: Vec<(String, UserState)>) {
    let Some(cache) = &shared.cache else {
        return;
    };
    let _guard = shared
        .cache_lock
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    shared.commit_seq.fetch_add(1, Ordering::AcqRel);
    for (user, state) in written {
        cache.insert(user, Some(Arc::new(state)));
    }
}

/// Writes the tombstone of `user` (see [`erase`]); the outer `Result` is a
/// storage failure. An unreadable record is overwritten by the tombstone:
/// erasure wins over a bad record.
fn delete_one(
    store: &str,
    users: &mut redb::Table<'_, &'static str, &'static [u8]>,
    user: &str,
    now: i64,
    live: &mut u64,
    written: &mut Vec<(String, UserState)>,
) -> Result<Result<bool>, redb::Error> {
    let (had_live, old) = match read(store, users, user)? {
        Ok(old) => (old.as_ref().is_some_and(|s| !s.erased), old),
        Err(_) => (true, None),
    };
    let Some((tomb, _)) = erase(old.as_ref(), user, now) else {
        return Ok(Ok(false));
    };
    let bytes = match codec::encode(&tomb) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    users.insert(user, bytes.as_slice())?;
    written.push((user.to_owned(), tomb));
    if had_live {
        *live = live.saturating_sub(1);
    }
    Ok(Ok(had_live))
}

/// The stored state of `user` inside a transaction: the outer `Result` is a
/// storage failure (aborts the group), the inner one an unreadable record
/// (fails this user only).
fn read<T: ReadableTable<&'static str, &'static [u8]>>(
    store: &str,
    table: &T,
    user: &str,
) -> Result<Result<Option<UserState>>, redb::Error> {
    Ok(match table.get(user)? {
        None => Ok(None),
        Some(v) => codec::decode(v.value(), store, user).map(Some),
    })
}

fn apply_one(
    store: &str,
    users: &mut redb::Table<'_, &'static str, &'static [u8]>,
    update: &UserUpdate,
    policy: Policy,
    now: i64,
    live: &mut u64,
    written: &mut Vec<(String, UserState)>,
) -> Result<Result<Applied>, redb::Error> {
    let old = match read(store, users, &update.user_id)? {
        Ok(old) => old,
        Err(e) => return Ok(Err(e)),
    };
    let old_version = old.as_ref().map_or(0, |s| s.version);
    let was_live = old.as_ref().is_some_and(|s| !s.erased);
    let (next, applied) = match merge(old, update, policy, now) {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    if applied.version != old_version {
        let bytes = match codec::encode(&next) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        users.insert(update.user_id.as_str(), bytes.as_slice())?;
        if !was_live {
            *live += 1;
        }
        written.push((update.user_id.clone(), next));
    }
    Ok(Ok(applied))
}

/// Replaces the database handle after an I/O error: waits for readers to
/// let go of the old one, then opens the file again (redb recovers to the
/// last commit). Keeps trying, with a pause, until it succeeds; jobs that
/// arrive meanwhile fail with [`Error::Unavailable`].
fn reopen(shared: &Shared) {
    let Some(mut old) = shared.db.swap(None) else {
        return;
    };
    loop {
        match Arc::try_unwrap(old) {
            Ok(db) => {
                drop(db);
                break;
            }
            Err(still_shared) => {
                old = still_shared;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let mut pause = Duration::from_millis(10);
    loop {
        match open_db(&shared.path) {
            Ok(db) => {
                tracing::info!(store = %shared.name, "state store reopened after an I/O error");
                shared.db.store(Some(Arc::new(db)));
                return;
            }
            Err(e) => {
                tracing::warn!(store = %shared.name, error = %e, "state store cannot be reopened yet");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[async_trait::async_trait]
impl UserStateStore for EmbeddedStore {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn apply(&self, updates: Vec<UserUpdate>, policy: Policy) -> Vec<Result<Applied>> {
        let start = Instant::now();
        let n = updates.len();
        let (reply, rx) = oneshot::channel();
        let results = match self
            .send(Job::Apply {
                updates,
                policy,
                reply,
            })
            .await
        {
            Ok(()) => rx.await.unwrap_or_else(|_| {
                vec![
                    Err(Error::Unavailable {
                        store: self.shared.name.clone(),
                        message: "the store's writer stopped before answering".to_owned(),
                    });
                    n
                ]
            }),
            Err(e) => vec![Err(e); n],
        };
        observe("apply", start);
        results
    }

    async fn get(&self, user_id: &str) -> Result<Option<UserState>> {
        let start = Instant::now();
        if let Some(hit) = self.shared.cache.as_ref().and_then(|c| c.get(user_id)) {
            observe("get", start);
            return Ok(hit.map(|s| UserState::clone(&s)));
        }
        let seq = self.shared.commit_seq.load(Ordering::Acquire);
        let shared = Arc::clone(&self.shared);
        let user = user_id.to_owned();
        let result = tokio::task::spawn_blocking(move || -> Result<Option<UserState>> {
            let unavailable = |message: String| Error::Unavailable {
                store: shared.name.clone(),
                message,
            };
            let db = shared
                .db
                .load_full()
                .ok_or_else(|| unavailable("the store file is being reopened".to_owned()))?;
            let fail = |e: redb::Error| store_error(&shared.name, e);
            let txn = db.begin_read().map_err(|e| fail(e.into()))?;
            let table = txn.open_table(USERS).map_err(|e| fail(e.into()))?;
            let state = read(&shared.name, &table, &user).map_err(fail)?;
            if let (Some(cache), Ok(s)) = (&shared.cache, &state) {
                // Only when no commit happened since before the read began:
                // else this may be older than what the writer cached.
                let _guard = shared
                    .cache_lock
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if shared.commit_seq.load(Ordering::Acquire) == seq {
                    cache.insert(user, s.clone().map(Arc::new));
                }
            }
            state
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::Unavailable {
                store: self.shared.name.clone(),
                message: format!("read task failed: {e}"),
            })
        });
        observe("get", start);
        result
    }

    async fn delete(&self, user_id: &str) -> Result<bool> {
        let start = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.send(Job::Delete {
            user: user_id.to_owned(),
            reply,
        })
        .await?;
        let result = rx.await.unwrap_or_else(|_| {
            Err(Error::Unavailable {
                store: self.shared.name.clone(),
                message: "the store's writer stopped before answering".to_owned(),
            })
        });
        observe("delete", start);
        result
    }

    async fn stats(&self) -> Result<StoreStats> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || -> Result<StoreStats> {
            let fail = |e: redb::Error| store_error(&shared.name, e);
            let db = shared.db.load_full().ok_or_else(|| Error::Unavailable {
                store: shared.name.clone(),
                message: "the store file is being reopened".to_owned(),
            })?;
            let txn = db.begin_read().map_err(|e| fail(e.into()))?;
            let meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
            let users = meta
                .get(LIVE_USERS)
                .map_err(|e| fail(e.into()))?
                .map_or(0, |v| v.value());
            let bytes = std::fs::metadata(&shared.path).map_or(0, |m| m.len());
            Ok(StoreStats { users, bytes })
        })
        .await
        .unwrap_or_else(|e| {
            Err(Error::Unavailable {
                store: self.shared.name.clone(),
                message: format!("stats task failed: {e}"),
            })
        })
    }
}
