//! The Redis backend: a single Redis node or a Redis Cluster, shared by
//! every replica of the server.
//!
//! - **One key per user**: the hash `<prefix>u:{<user_id>}` (the braces are
//!   a hash tag, so a cluster keeps everything of a user on one slot) with
//!   two fields: `v`, the state version as decimal text, and `r`, the record
//!   ([`crate::codec`], the same bytes the embedded store keeps).
//! - **Atomic read-modify-write with the rules in Rust**: read `v` and `r`
//!   (`HMGET`), [`crate::merge()`] in Rust, then a server-side Lua
//!   compare-and-set writes the new record only if `v` is still the version
//!   that was read. On a conflict (another writer got there first) the
//!   whole read-merge-write is retried, up to `max_attempts` times with a
//!   short jittered pause, then [`Error::Contended`]. A change always
//!   increases the version, so the version is a sound compare-and-set
//!   token, and concurrent writers from any number of processes never lose
//!   an event.
//! - **Combined writes of a hot user**: the concurrent calls of one process
//!   that update the same user queue behind one writer, which reads once,
//!   merges every queued update in order and writes once. A user in one
//!   event of ten (Zipf traffic) then costs one round trip per batch of
//!   calls instead of a compare-and-set conflict per call; conflicts are
//!   left to writers in different processes.
//! - **One round trip per write**: a write starts from the state this
//!   process last wrote or read for the user (`known_states_bytes` of
//!   them), so it is only the compare-and-set. When that guess is stale
//!   (another replica wrote since) the script answers the current state
//!   instead of writing, and the group is merged again on it. A guess is
//!   never trusted for a "nothing to write" answer: that is read again.
//! - **Connections**: a `ConnectionManager` (one multiplexed connection that
//!   reconnects by itself) for a single node, the async cluster connection
//!   (multiplexed per node, follows `MOVED`/`ASK`, refreshes slots) for a
//!   cluster. Both are cloned per call; the connect and response timeouts
//!   come from [`RedisConfig`]. A store survives Redis restarts without being
//!   recreated: calls fail while Redis is down and work again once it is
//!   back.
//! - **Circuit breaker**: the first call that finds Redis unreachable marks
//!   the store down; later calls fail at once with [`Error::Unavailable`]
//!   (instead of each holding a request slot for a whole timeout) until a
//!   probe every `probe_interval_ms` gets an answer. A store whose Redis is
//!   unreachable when it opens starts down and connects the same way.
//! - **Errors**: connection refused, dropped, timed out, `LOADING`,
//!   `CLUSTERDOWN`, `TRYAGAIN`, `READONLY`… → [`Error::Unavailable`] naming the
//!   store (`redis:127.0.0.1:6379` or `redis-cluster:10.0.0.1:6379,…`);
//!   `OOM` (`maxmemory` reached) → [`Error::Full`]; a key of another type or
//!   an unreadable record → [`Error::Corrupt`].
//! - **Durability**: an `Ok` means Redis executed the write; it survives a
//!   Redis restart only with `appendonly yes` (docs/operations.md says which
//!   `appendfsync` gives which guarantee).
//! - **Metrics**: `profiled_state_op_seconds{backend="redis",op}` for
//!   `apply`, `get`, `delete`, `profiled_state_cas_conflicts_total`, and
//!   `profiled_state_store_up{backend="redis"}` (0 while the breaker is open).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures::StreamExt;
use redis::aio::ConnectionLike;
use redis::{AsyncCommands, RedisFuture, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::merge::{erase, merge, now_ms};
use crate::{
    Applied, Error, Policy, Result, StoreStats, UserState, UserStateStore, UserUpdate, codec,
};

/// Settings of the Redis backend (`[state.redis]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`): the one
    /// node, or any nodes of a cluster (the rest are discovered).
    pub urls: Vec<String>,
    /// Talk to a Redis Cluster.
    pub cluster: bool,
    /// Timeout of one connection attempt, ms.
    pub connect_timeout_ms: u64,
    /// Timeout of one command's answer, ms.
    pub response_timeout_ms: u64,
    /// Reconnection attempts inside one call before it fails.
    pub reconnect_retries: usize,
    /// Prefix of every key this backend writes.
    pub key_prefix: String,
    /// Compare-and-set attempts per user before [`Error::Contended`].
    pub max_attempts: u32,
    /// Users updated concurrently within one `apply` call.
    pub concurrency: usize,
    /// While Redis is unreachable, how often it is asked again (ms); calls
    /// meanwhile fail at once with UNAVAILABLE.
    pub probe_interval_ms: u64,
    /// Bytes of users' states this process remembers from its own writes
    /// and reads (0 = none). A write starts from the remembered state and
    /// needs one round trip (the compare-and-set) instead of two; a state
    /// another replica changed since is caught by the compare-and-set,
    /// which answers the current one.
    pub known_states_bytes: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".to_owned()],
            cluster: false,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 2_000,
            reconnect_retries: 1,
            key_prefix: "profiled:".to_owned(),
            max_attempts: 16,
            concurrency: 32,
            probe_interval_ms: 100,
            known_states_bytes: 64 << 20,
        }
    }
}

/// Compare-and-set of one user's hash. KEYS[1] the user key; ARGV[1] the
/// version expected ("0" for an absent key), ARGV[2] the new version,
/// ARGV[3] the new record. Returns `{1}` when written; on a conflict `{0, v,
/// r}`, the version and record there now (false when absent), so that the
/// writer can merge again without another round trip.
const CAS: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'v', 'r')
local v = cur[1]
if v == false then v = '0' end
if v ~= ARGV[1] then return {0, cur[1], cur[2]} end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[3])
return {1}
";

/// A user's version and state as this process last wrote or read them: the
/// first guess of a write (its compare-and-set checks it).
type Known = (u64, Option<Arc<UserState>>);

/// One multiplexed connection, single node or cluster; cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis [`UserStateStore`]. Cheap to share: everything lives behind
/// one `Arc`, so that a user's combined write can run on its own task.
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// What a [`RedisStore`] holds.
struct Inner {
    link: Arc<Link>,
    /// Bound on one command, whatever the client does inside it.
    op_timeout: Duration,
    config: RedisConfig,
    cas: redis::Script,
    /// Users with a write queued or in flight (see [`Slot`]).
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// The last state seen of recently written or read users (a guess).
    known: moka::sync::Cache<String, Known>,
}

/// The connection and the circuit breaker in front of it.
///
/// Once a command fails with [`Error::Unavailable`] (refused, dropped, no
/// answer in time, `LOADING`, `CLUSTERDOWN`…), the store is marked down and
/// every later call fails at once with [`Error::Unavailable`], instead of
/// each waiting for its own timeout and holding a request slot meanwhile.
/// One probe task asks Redis every `probe_interval_ms` (a `PING`; for a
/// cluster, on a freshly built connection, which reads the topology again)
/// and marks the store up at the first answer. A store whose Redis cannot
/// be reached when it opens starts down and connects the same way.
struct Link {
    name: String,
    config: RedisConfig,
    /// `None` until the first connection succeeds.
    conn: ArcSwapOption<Conn>,
    down: AtomicBool,
    /// Since when and why, while down.
    outage: Mutex<Option<(Instant, String)>>,
    probing: AtomicBool,
}

/// One user's queue of writes. The caller that takes `turn` writes every
/// update queued so far with one read, one merge per update and one
/// compare-and-set, and answers each queued caller: concurrent calls of one
/// process for a hot user then share a round trip instead of conflicting.
#[derive(Default)]
struct Slot {
    turn: Arc<tokio::sync::Mutex<()>>,
    queue: Mutex<Vec<Waiter>>,
}

/// A queued update and where its result goes.
struct Waiter {
    update: UserUpdate,
    tx: oneshot::Sender<Result<Applied>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.inner.link.name)
            .finish_non_exhaustive()
    }
}

/// Locks a std mutex, recovering the data of a poisoned one (every value
/// behind these locks is valid at any point a panic could occur).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Link {
    /// A handle on the connection, or the fast failure while down.
    fn conn(&self) -> Result<Conn> {
        if self.down.load(Ordering::Acquire) {
            return Err(self.fast_failure());
        }
        match self.conn.load_full() {
            Some(c) => Ok(Conn::clone(&c)),
            None => Err(self.fast_failure()),
        }
    }

    fn fast_failure(&self) -> Error {
        let message = match &*lock(&self.outage) {
            Some((since, cause)) => format!(
                "down for {} ms ({cause}); calls fail at once until Redis answers a probe \
                 (every {} ms)",
                since.elapsed().as_millis(),
                self.config.probe_interval_ms
            ),
            None => "not connected yet".to_owned(),
        };
        Error::Unavailable {
            store: self.name.clone(),
            message,
        }
    }

    /// Marks the store down (once per outage) and starts the probe.
    fn trip(self: &Arc<Self>, cause: &str) {
        {
            let mut outage = lock(&self.outage);
            if outage.is_none() {
                tracing::warn!(store = %self.name, cause, "Redis unreachable: calls fail at once until it answers");
                *outage = Some((Instant::now(), cause.to_owned()));
            }
        }
        self.down.store(true, Ordering::Release);
        metrics::gauge!("profiled_state_store_up", "backend" => "redis").set(0.0);
        if !self.probing.swap(true, Ordering::AcqRel) {
            let link = Arc::clone(self);
            tokio::spawn(async move { link.probe().await });
        }
    }

    /// Asks Redis until it answers, then marks the store up.
    async fn probe(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.probe_interval_ms.max(1));
        let limit = op_timeout(&self.config);
        loop {
            tokio::time::sleep(interval).await;
            let fresh = match self.conn.load_full() {
                Some(_) if !self.config.cluster => None,
                _ => match connect(&self.config, &self.name, Duration::ZERO).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::debug!(store = %self.name, error = %e, "probe: no connection");
                        continue;
                    }
                },
            };
            let Some(mut conn) = fresh
                .clone()
                .or_else(|| self.conn.load_full().map(|c| Conn::clone(&c)))
            else {
                continue;
            };
            let ping = bounded(
                &self.name,
                limit,
                redis::cmd("PING").query_async::<Value>(&mut conn),
            )
            .await;
            match ping {
                Ok(Ok(_)) => {
                    if let Some(c) = fresh {
                        self.conn.store(Some(Arc::new(c)));
                    }
                    let outage = lock(&self.outage).take();
                    self.probing.store(false, Ordering::Release);
                    self.down.store(false, Ordering::Release);
                    metrics::gauge!("profiled_state_store_up", "backend" => "redis").set(1.0);
                    let ms = outage.map_or(0, |(since, _)| since.elapsed().as_millis());
                    tracing::info!(store = %self.name, down_ms = ms, "Redis answers again");
                    return;
                }
                Ok(Err(e)) => tracing::debug!(store = %self.name, error = %e, "probe failed"),
                Err(e) => tracing::debug!(store = %self.name, error = %e, "probe failed"),
            }
        }
    }
}

/// `host:port` of a Redis URL, without scheme, credentials or database.
fn address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// The store's name in errors and metrics for these settings.
pub fn store_name(config: &RedisConfig) -> String {
    let addrs: Vec<&str> = config.urls.iter().map(|u| address(u)).collect();
    if config.cluster {
        format!("redis-cluster:{}", addrs.join(","))
    } else {
        format!("redis:{}", addrs.join(","))
    }
}

/// Maps a Redis error to ours, naming the store.
pub(crate) fn redis_error(store: &str, e: &redis::RedisError) -> Error {
    let text = e.to_string();
    if e.code() == Some("OOM") || text.contains("OOM command not allowed") {
        return Error::Full {
            store: store.to_owned(),
            message: text,
        };
    }
    Error::Unavailable {
        store: store.to_owned(),
        message: text,
    }
}

/// The bound on one command: a connection attempt plus an answer, and some
/// slack for the client's own retry.
pub(crate) fn op_timeout(config: &RedisConfig) -> Duration {
    Duration::from_millis(config.connect_timeout_ms + config.response_timeout_ms + 500)
}

/// Runs one Redis command future with `limit`; running out of time is
/// [`Error::Unavailable`] naming `store`. The inner result is left for the
/// caller to map (some error codes mean something specific).
pub(crate) async fn bounded<T>(
    store: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<redis::RedisResult<T>> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| Error::Unavailable {
            store: store.to_owned(),
            message: format!("no answer within {} ms", limit.as_millis()),
        })
}

/// Opens a connection for `config`; `extra_response` is added to the
/// response timeout (for blocking reads such as `XREADGROUP … BLOCK`).
pub(crate) async fn connect(
    config: &RedisConfig,
    name: &str,
    extra_response: Duration,
) -> Result<Conn> {
    if config.urls.is_empty() {
        return Err(Error::Config("state.redis.urls is empty".to_owned()));
    }
    if !config.cluster && config.urls.len() != 1 {
        return Err(Error::Config(format!(
            "state.redis.urls has {} addresses but state.redis.cluster is false: \
             give one node, or set cluster = true",
            config.urls.len()
        )));
    }
    let connect = Duration::from_millis(config.connect_timeout_ms.max(1));
    let response = Duration::from_millis(config.response_timeout_ms.max(1)) + extra_response;
    let config_error =
        |e: redis::RedisError| Error::Config(format!("state.redis.urls {:?}: {e}", config.urls));
    Ok(if config.cluster {
        let client = redis::cluster::ClusterClientBuilder::new(config.urls.clone())
            .connection_timeout(connect)
            .response_timeout(response)
            .overall_response_timeout(Some(connect + response))
            .retries(config.reconnect_retries.min(u32::MAX as usize) as u32)
            .build()
            .map_err(config_error)?;
        let c = client
            .get_async_connection()
            .await
            .map_err(|e| redis_error(name, &e))?;
        Conn::Cluster(c)
    } else {
        let url = config.urls.first().map_or("", String::as_str);
        let client = redis::Client::open(url).map_err(config_error)?;
        let cm_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(response))
            .set_number_of_retries(config.reconnect_retries)
            .set_max_delay(Duration::from_millis(500));
        let c = redis::aio::ConnectionManager::new_with_config(client, cm_config)
            .await
            .map_err(|e| redis_error(name, &e))?;
        Conn::Single(c)
    })
}

impl RedisStore {
    /// Connects to the node or cluster of `config`. [`Error::Config`] when
    /// the settings are wrong; a Redis that cannot be reached now is not an
    /// error: the store starts down (calls fail with
    /// [`Error::Unavailable`]) and connects in the background.
    pub async fn open(config: &RedisConfig) -> Result<Self> {
        let name = store_name(config);
        let link = Arc::new(Link {
            name: name.clone(),
            config: config.clone(),
            conn: ArcSwapOption::empty(),
            down: AtomicBool::new(false),
            outage: Mutex::new(None),
            probing: AtomicBool::new(false),
        });
        match connect(config, &name, Duration::ZERO).await {
            Ok(conn) => {
                link.conn.store(Some(Arc::new(conn)));
                metrics::gauge!("profiled_state_store_up", "backend" => "redis").set(1.0);
            }
            Err(Error::Unavailable { message, .. }) => {
                link.trip(&format!("cannot connect at start: {message}"));
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            inner: Arc::new(Inner {
                link,
                op_timeout: op_timeout(config),
                config: config.clone(),
                cas: redis::Script::new(CAS),
                slots: Mutex::new(HashMap::new()),
                known: moka::sync::Cache::builder()
                    .max_capacity(config.known_states_bytes)
                    .weigher(|k: &String, v: &Known| {
                        let bytes = 32 + k.len() + v.1.as_ref().map_or(0, |s| s.approx_bytes());
                        u32::try_from(bytes).unwrap_or(u32::MAX)
                    })
                    .build(),
            }),
        })
    }

    /// The key of `user_id`.
    pub fn key(&self, user_id: &str) -> String {
        self.inner.key(user_id)
    }

    /// Whether the circuit breaker currently lets calls through.
    pub fn is_up(&self) -> bool {
        !self.inner.link.down.load(Ordering::Acquire) && self.inner.link.conn.load().is_some()
    }
}

impl Inner {
    fn key(&self, user_id: &str) -> String {
        format!("{}u:{{{user_id}}}", self.config.key_prefix)
    }

    fn name(&self) -> &str {
        &self.link.name
    }

    /// [`bounded`] with this store's limit; running out of time trips the
    /// breaker.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>> {
        let r = bounded(self.name(), self.op_timeout, fut).await;
        if let Err(Error::Unavailable { message, .. }) = &r {
            self.link.trip(message);
        }
        r
    }

    /// Maps a Redis error; one that says Redis cannot be reached (not an
    /// error about one command) trips the breaker.
    fn err(&self, e: &redis::RedisError) -> Error {
        let err = redis_error(self.name(), e);
        let unreachable = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_cluster_error()
            || matches!(
                e.code(),
                Some("LOADING" | "CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN" | "BUSY")
            );
        if let (true, Error::Unavailable { message, .. }) = (unreachable, &err) {
            self.link.trip(message);
        }
        err
    }

    /// Reads `(version, state)` of a user: version 0 when absent. A record
    /// that does not decode is [`Error::Corrupt`] (with its version, so that
    /// erasure can still overwrite it).
    async fn read(&self, user: &str) -> Result<(u64, Result<Option<UserState>>)> {
        let mut conn = self.link.conn()?;
        let key = self.key(user);
        let reply: redis::RedisResult<(Option<String>, Option<Vec<u8>>)> = self
            .bounded(
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("v")
                    .arg("r")
                    .query_async(&mut conn),
            )
            .await?;
        let (v, r) = match reply {
            Ok(x) => x,
            Err(e) if e.code() == Some("WRONGTYPE") => {
                return Ok((
                    0,
                    Err(Error::Corrupt {
                        store: self.name().to_owned(),
                        user: user.to_owned(),
                        message: format!("key {key} is not a hash: {e}"),
                    }),
                ));
            }
            Err(e) => return Err(self.err(&e)),
        };
        let (version, state) = self.decode_reply(user, v, r)?;
        if let Ok(s) = &state {
            self.remember(user, version, s.as_ref());
        }
        Ok((version, state))
    }

    /// `(v, r)` of a user's hash as stored → its state (`None` when absent);
    /// bad contents are [`Error::Corrupt`] (inner), with version 0.
    fn decode_reply(
        &self,
        user: &str,
        v: Option<String>,
        r: Option<Vec<u8>>,
    ) -> Result<(u64, Result<Option<UserState>>)> {
        let key = self.key(user);
        let corrupt = |message: String| Error::Corrupt {
            store: self.name().to_owned(),
            user: user.to_owned(),
            message,
        };
        let version = match v.as_deref().map(str::parse::<u64>) {
            None => 0,
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                return Ok((
                    0,
                    Err(corrupt(format!("field v of {key} is not a version"))),
                ));
            }
        };
        let state = match r {
            None if version == 0 => Ok(None),
            None => Err(corrupt(format!("{key} has a version but no record"))),
            Some(bytes) => codec::decode(&bytes, self.name(), user).map(Some),
        };
        Ok((version, state))
    }

    /// Remembers `state` at `version` as the user's latest known.
    fn remember(&self, user: &str, version: u64, state: Option<&UserState>) {
        if self.config.known_states_bytes > 0 {
            self.known
                .insert(user.to_owned(), (version, state.cloned().map(Arc::new)));
        }
    }

    /// Writes `next` if the user's version is still `expected`:
    /// `Ok(None)` when written, else `Ok(Some(current))` — the version and
    /// state there now, read by the same script.
    async fn cas(
        &self,
        user: &str,
        expected: u64,
        next: &UserState,
    ) -> Result<Option<(u64, Result<Option<UserState>>)>> {
        let bytes = codec::encode(next)?;
        let mut conn = self.link.conn()?;
        let mut invocation = self.cas.key(self.key(user));
        invocation
            .arg(expected.to_string())
            .arg(next.version.to_string())
            .arg(bytes);
        let reply: Vec<Value> = self
            .bounded(invocation.invoke_async(&mut conn))
            .await?
            .map_err(|e| self.err(&e))?;
        let mut reply = reply.into_iter();
        let bad = |e: redis::ParsingError| Error::Corrupt {
            store: self.name().to_owned(),
            user: user.to_owned(),
            message: format!("unexpected compare-and-set reply: {e}"),
        };
        let written: i64 = reply
            .next()
            .map_or(Ok(-1), redis::from_redis_value)
            .map_err(bad)?;
        if written == 1 {
            self.remember(user, next.version, Some(next));
            return Ok(None);
        }
        metrics::counter!("profiled_state_cas_conflicts_total").increment(1);
        fn field<T: redis::FromRedisValue>(
            v: Option<Value>,
        ) -> std::result::Result<Option<T>, redis::ParsingError> {
            match v {
                None | Some(Value::Nil) => Ok(None),
                Some(v) => redis::from_redis_value(v).map(Some),
            }
        }
        let v: Option<String> = field(reply.next()).map_err(bad)?;
        let r: Option<Vec<u8>> = field(reply.next()).map_err(bad)?;
        let (version, state) = self.decode_reply(user, v, r)?;
        match &state {
            Ok(s) => self.remember(user, version, s.as_ref()),
            Err(_) => self.known.invalidate(user),
        }
        Ok(Some((version, state)))
    }

    /// The key of the live-users counter ([`UserStateStore::stats`]).
    fn live_key(&self) -> String {
        format!("{}live_users", self.config.key_prefix)
    }

    /// Moves the live-users counter. Not atomic with the user's write (in a
    /// cluster they live on different slots): a crash in between leaves it
    /// off by one, so it is for metrics only.
    async fn count_live(&self, delta: i64) {
        let r = match self.link.conn() {
            Ok(mut conn) => self
                .bounded(conn.incr::<_, _, i64>(self.live_key(), delta))
                .await
                .and_then(|r| r.map_err(|e| self.err(&e))),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::debug!(store = %self.name(), error = %e, "live-users counter not updated");
        }
    }

    async fn pause(&self, attempt: u32) {
        // 1..=(2^attempt) ms, capped: lets the winner's write land.
        let cap = 1u64 << attempt.min(6);
        let jitter = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        ) % cap;
        tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
    }

    /// Writes the updates of one user, in order, as one change: from the
    /// user's state (as this process last saw it, else read), [`merge`] per
    /// update on the result of the previous one, one compare-and-set. On a
    /// conflict the compare-and-set answers the current state and the whole
    /// group is merged again on it, up to `max_attempts` writes. An update
    /// the rules refuse gets its own error and the others go on; a store
    /// error is every update's.
    async fn write_group(
        &self,
        user: &str,
        updates: &[UserUpdate],
        policy: Policy,
    ) -> Vec<Result<Applied>> {
        let attempts = self.config.max_attempts.max(1);
        let all = |e: Error| updates.iter().map(|_| Err(e.clone())).collect();
        // (version, state, whether it came from memory rather than Redis)
        let mut base: Option<(u64, Option<UserState>, bool)> = self
            .known
            .get(user)
            .map(|(v, s)| (v, s.map(|s| UserState::clone(&s)), true));
        let mut attempt = 0;
        loop {
            let (version, state, guessed) = match base.take() {
                Some(b) => b,
                None => match self.read(user).await {
                    Ok((v, Ok(s))) => (v, s, false),
                    Ok((_, Err(e))) | Err(e) => return all(e),
                },
            };
            let was_live = state.as_ref().is_some_and(|s| !s.erased);
            let now = now_ms();
            let mut current = state;
            let mut results = Vec::with_capacity(updates.len());
            for u in updates {
                match merge(current.clone(), u, policy, now) {
                    Ok((next, applied)) => {
                        current = Some(next);
                        results.push(Ok(applied));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
            let next = match current {
                Some(next) if next.version != version => next,
                // Nothing to write. Said of a remembered state, that could
                // be stale (e.g. "duplicate" of an event another replica's
                // erasure removed since): ask Redis.
                _ if guessed => continue,
                _ => return results,
            };
            // A write from a remembered state that lost is not a race
            // lost: it does not count against `max_attempts`.
            if !guessed {
                attempt += 1;
            }
            match self.cas(user, version, &next).await {
                Ok(None) => {
                    if !was_live && !next.erased {
                        self.count_live(1).await;
                    }
                    return results;
                }
                Ok(Some(_)) if attempt >= attempts => break,
                Ok(Some((v, Ok(s)))) => {
                    // A write from another process got there first (or
                    // the remembered state was old): merge again on what
                    // is there now. Only a real race needs a pause.
                    if !guessed {
                        self.pause(attempt).await;
                    }
                    base = Some((v, s, false));
                }
                Ok(Some((_, Err(e)))) => return all(e),
                Err(e) => {
                    return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
                }
            }
        }
        all(Error::Contended {
            user: user.to_owned(),
            attempts,
        })
    }

    /// Applies the updates of one user in order, combined with whatever
    /// other calls of this process queued for the same user (see [`Slot`]).
    async fn apply_user(
        self: &Arc<Self>,
        user: &str,
        updates: Vec<UserUpdate>,
        policy: Policy,
    ) -> Vec<Result<Applied>> {
        let (slot, receivers) = {
            let mut slots = lock(&self.slots);
            let slot = Arc::clone(slots.entry(user.to_owned()).or_default());
            let mut queue = lock(&slot.queue);
            let receivers: Vec<_> = updates
                .into_iter()
                .map(|update| {
                    let (tx, rx) = oneshot::channel();
                    queue.push(Waiter { update, tx });
                    rx
                })
                .collect();
            drop(queue);
            (slot, receivers)
        };
        let turn = Arc::clone(&slot.turn).lock_owned().await;
        // Unless an earlier turn already wrote them, this caller writes
        // everything queued (its own updates included) on a task of its
        // own, so that a cancelled call cannot strand the others.
        let batch = std::mem::take(&mut *lock(&slot.queue));
        if batch.is_empty() {
            drop(turn);
        } else {
            let inner = Arc::clone(self);
            let (user, policy) = (user.to_owned(), policy);
            tokio::spawn(async move {
                let (updates, senders): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|w| (w.update, w.tx)).unzip();
                let results = inner.write_group(&user, &updates, policy).await;
                for (tx, r) in senders.into_iter().zip(results) {
                    let _ = tx.send(r);
                }
                drop(turn);
            });
        }
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            out.push(rx.await.unwrap_or_else(|_| {
                Err(Error::Unavailable {
                    store: self.name().to_owned(),
                    message: "the write of this update stopped before answering; \
                              it may or may not be stored (a retry with the same event ids is idempotent)"
                        .to_owned(),
                })
            }));
        }
        // The slot goes once nobody else holds or queues on it (its clones
        // are taken under the same lock).
        let mut slots = lock(&self.slots);
        if Arc::strong_count(&slot) == 2 && lock(&slot.queue).is_empty() {
            slots.remove(user);
        }
        out
    }
}

/// Strings found anywhere in a reply (the cluster answers `INFO` with one
/// entry per node).
fn texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => out.push(s.clone()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| texts(i, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            texts(k, out);
            texts(v, out);
        }),
        _ => {}
    }
}

#[async_trait::async_trait]
impl UserStateStore for RedisStore {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn apply(&self, updates: Vec<UserUpdate>, policy: Policy) -> Vec<Result<Applied>> {
        let start = Instant::now();
        let n = updates.len();
        // Each user's updates in order; different users concurrently.
        let mut by_user: HashMap<String, (Vec<usize>, Vec<UserUpdate>)> = HashMap::new();
        let mut order = Vec::new();
        for (i, u) in updates.into_iter().enumerate() {
            let entry = by_user.entry(u.user_id.clone()).or_insert_with(|| {
                order.push(u.user_id.clone());
                (Vec::new(), Vec::new())
            });
            entry.0.push(i);
            entry.1.push(u);
        }
        let groups: Vec<(String, Vec<usize>, Vec<UserUpdate>)> = order
            .into_iter()
            .filter_map(|user| by_user.remove(&user).map(|(i, u)| (user, i, u)))
            .collect();
        let inner = &self.inner;
        let done: Vec<(Vec<usize>, Vec<Result<Applied>>)> = futures::stream::iter(groups)
            .map(|(user, indices, updates)| async move {
                (indices, inner.apply_user(&user, updates, policy).await)
            })
            .buffer_unordered(self.inner.config.concurrency.max(1))
            .collect()
            .await;
        let mut results: Vec<Option<Result<Applied>>> = (0..n).map(|_| None).collect();
        for (indices, rs) in done {
            for (i, r) in indices.into_iter().zip(rs) {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(r);
                }
            }
        }
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Unavailable {
                        store: self.name().to_owned(),
                        message: "update was not applied".to_owned(),
                    })
                })
            })
            .collect();
        metrics::histogram!("profiled_state_op_seconds", "backend" => "redis", "op" => "apply")
            .record(start.elapsed().as_secs_f64());
        results
    }

    async fn get(&self, user_id: &str) -> Result<Option<UserState>> {
        let start = Instant::now();
        let result = match self.inner.read(user_id).await {
            Ok((_, state)) => state,
            Err(e) => Err(e),
        };
        metrics::histogram!("profiled_state_op_seconds", "backend" => "redis", "op" => "get")
            .record(start.elapsed().as_secs_f64());
        result
    }

    async fn delete(&self, user_id: &str) -> Result<bool> {
        let start = Instant::now();
        let inner = &self.inner;
        let attempts = inner.config.max_attempts.max(1);
        let mut result = Err(Error::Contended {
            user: user_id.to_owned(),
            attempts,
        });
        for attempt in 1..=attempts {
            let (version, state) = match inner.read(user_id).await {
                Ok(x) => x,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            // An unreadable record is overwritten: erasure wins.
            let (had_live, state) = match state {
                Ok(s) => (s.as_ref().is_some_and(|s| !s.erased), s),
                Err(_) => (true, None),
            };
            let Some((mut tomb, _)) = erase(state.as_ref(), user_id, now_ms()) else {
                result = Ok(false);
                break;
            };
            tomb.version = version + 1;
            match inner.cas(user_id, version, &tomb).await {
                Ok(None) => {
                    if had_live {
                        inner.count_live(-1).await;
                    }
                    result = Ok(had_live);
                    break;
                }
                Ok(Some(_)) if attempt < attempts => inner.pause(attempt).await,
                Ok(Some(_)) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        metrics::histogram!("profiled_state_op_seconds", "backend" => "redis", "op" => "delete")
            .record(start.elapsed().as_secs_f64());
        result
    }

    /// `users` is the live-users counter (approximate: see `count_live`);
    /// `bytes` is `used_memory` summed over the (master) nodes, which
    /// includes anything else the Redis holds.
    async fn stats(&self) -> Result<StoreStats> {
        let inner = &self.inner;
        let mut conn = inner.link.conn()?;
        let users: Option<i64> = inner
            .bounded(conn.get(inner.live_key()))
            .await?
            .map_err(|e| inner.err(&e))?;
        let users = users.map_or(0, |u| u.max(0) as u64);
        let info: Value = inner
            .bounded(redis::cmd("INFO").arg("memory").query_async(&mut conn))
            .await?
            .map_err(|e| inner.err(&e))?;
        let mut all = Vec::new();
        texts(&info, &mut all);
        let bytes = all
            .iter()
            .flat_map(|t| t.lines())
            .filter_map(|l| l.strip_prefix("used_memory:"))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum();
        Ok(StoreStats { users, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hide_credentials_and_databases() {
        let mut c = RedisConfig {
            urls: vec!["redis://user:secret@10.0.0.1:6379/2".into()],
            ..RedisConfig::default()
        };
        assert_eq!(store_name(&c), "redis:10.0.0.1:6379");
        c.cluster = true;
        c.urls.push("rediss://10.0.0.2:7000".into());
        assert_eq!(store_name(&c), "redis-cluster:10.0.0.1:6379,10.0.0.2:7000");
    }
}
