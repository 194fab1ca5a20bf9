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
//! - **Connections**: a `ConnectionManager` (one multiplexed connection that
//!   reconnects by itself) for a single node, the async cluster connection
//!   (multiplexed per node, follows `MOVED`/`ASK`, refreshes slots) for a
//!   cluster. Both are cloned per call; the connect and response timeouts
//!   come from [`RedisConfig`]. A store survives Redis restarts without being
//!   recreated: calls fail while Redis is down and work again once it is
//!   back.
//! - **Errors**: connection refused, dropped, timed out, `LOADING`,
//!   `CLUSTERDOWN`, `TRYAGAIN`, `READONLY`… → [`Error::Unavailable`] naming the
//!   store (`redis:127.0.0.1:6379` or `redis-cluster:10.0.0.1:6379,…`);
//!   `OOM` (`maxmemory` reached) → [`Error::Full`]; a key of another type or
//!   an unreadable record → [`Error::Corrupt`].
//! - **Durability**: an `Ok` means Redis executed the write; it survives a
//!   Redis restart only with `appendonly yes` (docs/operations.md says which
//!   `appendfsync` gives which guarantee).
//! - **Metrics**: `profiled_state_op_seconds{backend="redis",op}` for
//!   `apply`, `get`, `delete`, and `profiled_state_cas_conflicts_total`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;
use redis::aio::ConnectionLike;
use redis::{AsyncCommands, RedisFuture, Value};
use serde::{Deserialize, Serialize};

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
        }
    }
}

/// Compare-and-set of one user's hash. KEYS[1] the user key; ARGV[1] the
/// version read ("0" when the key was absent), ARGV[2] the new version,
/// ARGV[3] the new record. Returns 1 when written, 0 on a conflict.
const CAS: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if v == false then v = '0' end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[3])
return 1
";

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

/// The Redis [`UserStateStore`].
pub struct RedisStore {
    name: String,
    /// The current connection; replaced by [`RedisStore::heal`].
    conn: Arc<ArcSwap<Conn>>,
    /// A replacement connection is being built.
    healing: Arc<AtomicBool>,
    /// Bound on one command, whatever the client does inside it.
    op_timeout: Duration,
    config: RedisConfig,
    cas: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
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
    /// Connects to the node or cluster of `config` (failing with
    /// [`Error::Unavailable`] when it cannot be reached now, with
    /// [`Error::Config`] when the settings are wrong).
    pub async fn open(config: &RedisConfig) -> Result<Self> {
        let name = store_name(config);
        let conn = connect(config, &name, Duration::ZERO).await?;
        Ok(Self {
            name,
            conn: Arc::new(ArcSwap::from_pointee(conn)),
            healing: Arc::new(AtomicBool::new(false)),
            op_timeout: op_timeout(config),
            config: config.clone(),
            cas: redis::Script::new(CAS),
        })
    }

    /// The key of `user_id`.
    pub fn key(&self, user_id: &str) -> String {
        format!("{}u:{{{user_id}}}", self.config.key_prefix)
    }

    /// [`bounded`] with this store's limit; running out of time also
    /// starts [`Self::heal`].
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>> {
        let r = bounded(&self.name, self.op_timeout, fut).await;
        if r.is_err() {
            self.heal();
        }
        r
    }

    /// A handle on the current connection (cheap: multiplexed).
    fn conn(&self) -> Conn {
        Conn::clone(&self.conn.load())
    }

    /// Maps a Redis error; an unavailable store also starts [`Self::heal`].
    fn err(&self, e: &redis::RedisError) -> Error {
        let err = redis_error(&self.name, e);
        if matches!(err, Error::Unavailable { .. }) {
            self.heal();
        }
        err
    }

    /// Builds a fresh connection in the background and swaps it in, at most
    /// one at a time. The connection manager of a single node reconnects by
    /// itself, but the cluster connection was seen to keep timing out on a
    /// node restarted on the same address (redis 1.8); a new one reads the
    /// topology again. Calls keep failing fast meanwhile.
    fn heal(&self) {
        if !self.config.cluster || self.healing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (conn, healing, config, name) = (
            Arc::clone(&self.conn),
            Arc::clone(&self.healing),
            self.config.clone(),
            self.name.clone(),
        );
        tokio::spawn(async move {
            match connect(&config, &name, Duration::ZERO).await {
                Ok(fresh) => {
                    conn.store(Arc::new(fresh));
                    tracing::info!(store = %name, "reconnected to the Redis Cluster");
                }
                Err(e) => tracing::debug!(store = %name, error = %e, "cluster reconnect failed"),
            }
            // At most one rebuild a second.
            tokio::time::sleep(Duration::from_secs(1)).await;
            healing.store(false, Ordering::Release);
        });
    }

    /// Reads `(version, state)` of a user: version 0 when absent. A record
    /// that does not decode is [`Error::Corrupt`] (with its version, so that
    /// erasure can still overwrite it).
    async fn read(&self, user: &str) -> Result<(u64, Result<Option<UserState>>)> {
        let mut conn = self.conn();
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
                        store: self.name.clone(),
                        user: user.to_owned(),
                        message: format!("key {key} is not a hash: {e}"),
                    }),
                ));
            }
            Err(e) => return Err(self.err(&e)),
        };
        let corrupt = |message: String| Error::Corrupt {
            store: self.name.clone(),
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
            Some(bytes) => codec::decode(&bytes, &self.name, user).map(Some),
        };
        Ok((version, state))
    }

    /// Writes `next` if the user's version is still `expected`; `Ok(false)`
    /// on a conflict.
    async fn cas(&self, user: &str, expected: u64, next: &UserState) -> Result<bool> {
        let bytes = codec::encode(next)?;
        let mut conn = self.conn();
        let mut invocation = self.cas.key(self.key(user));
        invocation
            .arg(expected.to_string())
            .arg(next.version.to_string())
            .arg(bytes);
        let written: i64 = self
            .bounded(invocation.invoke_async(&mut conn))
            .await?
            .map_err(|e| self.err(&e))?;
        if written == 0 {
            metrics::counter!("profiled_state_cas_conflicts_total").increment(1);
        }
        Ok(written == 1)
    }

    /// The key of the live-users counter ([`UserStateStore::stats`]).
    fn live_key(&self) -> String {
        format!("{}live_users", self.config.key_prefix)
    }

    /// Moves the live-users counter. Not atomic with the user's write (in a
    /// cluster they live on different slots): a crash in between leaves it
    /// off by one, so it is for metrics only.
    async fn count_live(&self, delta: i64) {
        let mut conn = self.conn();
        let r = self
            .bounded(conn.incr::<_, _, i64>(self.live_key(), delta))
            .await;
        if let Err(e) = r.and_then(|r| r.map_err(|e| self.err(&e))) {
            tracing::debug!(store = %self.name, error = %e, "live-users counter not updated");
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

    /// One user's update: read, merge, compare-and-set, retried on conflict.
    async fn apply_one(&self, update: &UserUpdate, policy: Policy) -> Result<Applied> {
        let attempts = self.config.max_attempts.max(1);
        for attempt in 1..=attempts {
            let (version, state) = self.read(&update.user_id).await?;
            let state = state?;
            let was_live = state.as_ref().is_some_and(|s| !s.erased);
            let (next, applied) = merge(state, update, policy, now_ms())?;
            if applied.version == version {
                return Ok(applied); // nothing changed: nothing to write
            }
            if self.cas(&update.user_id, version, &next).await? {
                if !was_live {
                    self.count_live(1).await;
                }
                return Ok(applied);
            }
            if attempt < attempts {
                self.pause(attempt).await;
            }
        }
        Err(Error::Contended {
            user: update.user_id.clone(),
            attempts,
        })
    }

    /// Applies the updates of one user in order; `(index, result)`.
    async fn apply_user(
        &self,
        updates: &[UserUpdate],
        indices: Vec<usize>,
        policy: Policy,
    ) -> Vec<(usize, Result<Applied>)> {
        let mut out = Vec::with_capacity(indices.len());
        for i in indices {
            let result = match updates.get(i) {
                Some(u) => self.apply_one(u, policy).await,
                None => continue,
            };
            out.push((i, result));
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
        &self.name
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn apply(&self, updates: Vec<UserUpdate>, policy: Policy) -> Vec<Result<Applied>> {
        let start = Instant::now();
        // Each user's updates in order; different users concurrently.
        let mut by_user: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut order = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            let entry = by_user.entry(u.user_id.as_str()).or_insert_with(|| {
                order.push(u.user_id.as_str());
                Vec::new()
            });
            entry.push(i);
        }
        let groups: Vec<Vec<usize>> = order
            .into_iter()
            .filter_map(|user| by_user.remove(user))
            .collect();
        let all = updates.as_slice();
        let done: Vec<Vec<(usize, Result<Applied>)>> = futures::stream::iter(groups)
            .map(|g| self.apply_user(all, g, policy))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut results: Vec<Option<Result<Applied>>> = (0..updates.len()).map(|_| None).collect();
        for (i, r) in done.into_iter().flatten() {
            results[i] = Some(r);
        }
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Unavailable {
                        store: self.name.clone(),
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
        let result = match self.read(user_id).await {
            Ok((_, state)) => state,
            Err(e) => Err(e),
        };
        metrics::histogram!("profiled_state_op_seconds", "backend" => "redis", "op" => "get")
            .record(start.elapsed().as_secs_f64());
        result
    }

    async fn delete(&self, user_id: &str) -> Result<bool> {
        let start = Instant::now();
        let attempts = self.config.max_attempts.max(1);
        let mut result = Err(Error::Contended {
            user: user_id.to_owned(),
            attempts,
        });
        for attempt in 1..=attempts {
            let (version, state) = match self.read(user_id).await {
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
            match self.cas(user_id, version, &tomb).await {
                Ok(true) => {
                    if had_live {
                        self.count_live(-1).await;
                    }
                    result = Ok(had_live);
                    break;
                }
                Ok(false) if attempt < attempts => self.pause(attempt).await,
                Ok(false) => {}
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
        let mut conn = self.conn();
        let users: Option<i64> = self
            .bounded(conn.get(self.live_key()))
            .await?
            .map_err(|e| self.err(&e))?;
        let users = users.map_or(0, |u| u.max(0) as u64);
        let info: Value = self
            .bounded(redis::cmd("INFO").arg("memory").query_async(&mut conn))
            .await?
            .map_err(|e| self.err(&e))?;
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
