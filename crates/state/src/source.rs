//! Event ingestion from outside the API: the [`EventSource`] trait (a Kafka
//! source would sit beside this one) and [`RedisStreamSource`], a consumer
//! of a Redis Stream in a consumer group.
//!
//! # Stream entry layout
//!
//! One entry is one event of one user (and may also change fields):
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `user_id` | yes | the user (non-empty) |
//! | `item_id` | with `ts` | the item (non-empty) |
//! | `ts` | with `item_id` | seconds since the Unix epoch (integer) |
//! | `rating` | no | explicit rating (finite number) |
//! | `event_id` | no | the producer's id of the event; when absent the stream entry id is used, so a redelivered entry is always a duplicate |
//! | `field.<name>` | no | sets input `<name>` to a JSON value: a number (`34`) → number, a string (`"engineer"`) → categorical, an object of numbers (`{"Drama": 0.6}`) → weighted tags |
//! | `clear.<name>` | no | removes input `<name>` (the value is ignored) |
//!
//! An entry with `field.`/`clear.` fields and neither `item_id` nor `ts`
//! only changes fields. Other fields are ignored. Example:
//!
//! ```text
//! XADD profiled:events * user_id u42 item_id m1193 ts 978300760 rating 5 event_id web-81f3 field.age 34
//! ```
//!
//! # Delivery
//!
//! - The consumer group is created when absent (`XGROUP CREATE … MKSTREAM`,
//!   from `start_id`, `0` by default: the whole stream).
//! - On start, the consumer first re-reads its own pending entries (read
//!   but never acknowledged before a crash), then claims entries pending
//!   longer than `claim_idle_ms` at other consumers (`XAUTOCLAIM`), then
//!   reads new entries with `XREADGROUP … COUNT batch BLOCK block_ms`.
//! - Each batch is parsed and applied with one [`UserStateStore::apply`]
//!   (one update per entry, in stream order). An entry is acknowledged
//!   (`XACK`) only after its apply returned `Ok` — durable — so delivery is
//!   at-least-once and the apply idempotent by event id.
//! - A malformed entry (a missing or unparsable field) and an entry the
//!   store refuses as invalid ([`Error::Invalid`], e.g. too far in the
//!   future) are acknowledged and counted
//!   (`profiled_state_stream_malformed_total` /
//!   `profiled_state_stream_rejected_total`, and a warning naming the entry
//!   id and the field), so they never block the stream.
//! - An entry whose apply failed otherwise (store unavailable, full,
//!   contended, corrupt record) stays pending and is retried, after a pause,
//!   by re-reading the consumer's pending entries.
//! - The group's lag (`XINFO GROUPS`, Redis ≥ 7.0) is the gauge
//!   `profiled_state_stream_lag{stream,group}` and its pending count
//!   `profiled_state_stream_pending{stream,group}`, refreshed after every
//!   read.
//! - [`EventSource::run`] returns when the `shutdown` watch turns `true`,
//!   after the read in flight (at most `block_ms`) and the batch it
//!   returned are applied and acknowledged: a clean shutdown leaves nothing
//!   pending. A crash leaves entries pending; they are re-read at the next
//!   start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use profiled_model::FieldValue;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply,
    StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::redis::{Conn, RedisConfig, connect, redis_error};
use crate::{
    Error, FieldUpdate, Policy, PolicyFn, Result, StoredEvent, UserStateStore, UserUpdate,
};

/// A source of user events applied to a [`UserStateStore`].
#[async_trait::async_trait]
pub trait EventSource: Send + Sync + std::fmt::Debug {
    /// Names the source in logs and metrics.
    fn name(&self) -> &str;

    /// Consumes events into `store` until `shutdown` turns `true`. `policy`
    /// gives the apply policy, asked again at every batch (the server
    /// raises `retain_events` to the largest `max_events` of the models it
    /// serves, which can change while the source runs); its `now_s` is
    /// replaced by the clock. Returns an error only when the source cannot start (e.g. the
    /// consumer group cannot be created); failures while running are
    /// logged and retried.
    async fn run(
        &self,
        store: Arc<dyn UserStateStore>,
        policy: PolicyFn,
        shutdown: watch::Receiver<bool>,
    ) -> Result<()>;
}

/// Settings of the Redis Streams source (`[state.stream]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Where the stream lives (node or cluster, timeouts).
    pub redis: RedisConfig,
    /// The stream key.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// This consumer's name: stable per replica (e.g. the pod name), so a
    /// restarted replica re-reads its own pending entries.
    pub consumer: String,
    /// Where a newly created group starts: `0` (the whole stream) or `$`
    /// (only new entries).
    pub start_id: String,
    /// Entries per read.
    pub batch: usize,
    /// How long one read blocks waiting for entries, ms.
    pub block_ms: u64,
    /// Entries pending longer than this at another consumer are claimed at
    /// start, ms.
    pub claim_idle_ms: u64,
    /// Pause before retrying entries whose apply failed, ms.
    pub retry_ms: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            redis: RedisConfig::default(),
            stream: "profiled:events".to_owned(),
            group: "profiled".to_owned(),
            consumer: "profiled-1".to_owned(),
            start_id: "0".to_owned(),
            batch: 256,
            block_ms: 1_000,
            claim_idle_ms: 60_000,
            retry_ms: 500,
        }
    }
}

/// Counters of a [`RedisStreamSource`] (also exported as metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceStats {
    /// Entries applied and acknowledged.
    pub applied: u64,
    /// Malformed entries acknowledged without applying.
    pub malformed: u64,
    /// Entries the store refused as invalid, acknowledged.
    pub rejected: u64,
    /// Entries whose apply failed and stay pending for a retry.
    pub failed: u64,
    /// The group's lag at the last read (-1 before the first, or when
    /// Redis cannot tell).
    pub lag: i64,
    /// The group's pending entries at the last read.
    pub pending: i64,
}

#[derive(Default)]
struct Counters {
    applied: AtomicU64,
    malformed: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    lag: AtomicI64,
    pending: AtomicI64,
}

/// A consumer of one Redis Stream in a consumer group.
pub struct RedisStreamSource {
    name: String,
    /// The store name of the Redis holding the stream (for errors).
    redis_name: String,
    config: StreamConfig,
    counters: Counters,
}

impl std::fmt::Debug for RedisStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why an entry cannot be applied: the field and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// The offending field of the entry.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Parses one stream entry (see the module docs for the layout).
pub fn parse_entry(id: &str, map: &HashMap<String, Value>) -> Result<UserUpdate, Malformed> {
    let bad = |field: &str, reason: String| Malformed {
        field: field.to_owned(),
        reason,
    };
    let get = |field: &str| -> Result<Option<String>, Malformed> {
        match map.get(field) {
            None => Ok(None),
            Some(v) => text(v)
                .map(Some)
                .ok_or_else(|| bad(field, "is not UTF-8 text".to_owned())),
        }
    };
    let user_id = get("user_id")?
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("user_id", "is missing or empty".to_owned()))?;

    let mut sets = BTreeMap::new();
    let mut clears = Vec::new();
    for (key, value) in map {
        if let Some(name) = key.strip_prefix("field.") {
            let raw = text(value).ok_or_else(|| bad(key, "is not UTF-8 text".to_owned()))?;
            sets.insert(name.to_owned(), field_value(&raw).map_err(|r| bad(key, r))?);
        } else if let Some(name) = key.strip_prefix("clear.") {
            clears.push(name.to_owned());
        }
    }
    if let Some(name) = clears.iter().find(|n| sets.contains_key(*n)) {
        return Err(bad(
            &format!("clear.{name}"),
            format!("both sets and clears field {name:?}"),
        ));
    }
    clears.sort();
    let mut fields: Vec<FieldUpdate> = sets
        .into_iter()
        .map(|(n, v)| FieldUpdate::Set(n, v))
        .collect();
    fields.extend(clears.into_iter().map(FieldUpdate::Clear));

    let item = get("item_id")?;
    let ts = get("ts")?;
    let events = match (item, ts) {
        (None, None) if !fields.is_empty() => vec![],
        (None, _) => return Err(bad("item_id", "is missing".to_owned())),
        (Some(_), None) => return Err(bad("ts", "is missing".to_owned())),
        (Some(item), Some(ts)) => {
            if item.is_empty() {
                return Err(bad("item_id", "is empty".to_owned()));
            }
            let timestamp = ts
                .trim()
                .parse::<i64>()
                .map_err(|_| bad("ts", format!("{ts:?} is not whole seconds since the epoch")))?;
            let rating = match get("rating")? {
                None => None,
                Some(r) => match r.trim().parse::<f32>() {
                    Ok(x) if x.is_finite() => Some(x),
                    _ => return Err(bad("rating", format!("{r:?} is not a finite number"))),
                },
            };
            let event_id = get("event_id")?
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| format!("stream:{id}"));
            vec![StoredEvent {
                item,
                timestamp,
                rating,
                event_id: Some(event_id),
            }]
        }
    };
    Ok(UserUpdate {
        user_id,
        events,
        fields,
    })
}

fn field_value(raw: &str) -> Result<FieldValue, String> {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .map(FieldValue::Number)
            .ok_or_else(|| format!("{raw} is not a finite number")),
        Ok(serde_json::Value::String(s)) => Ok(FieldValue::Categorical(s)),
        Ok(serde_json::Value::Object(o)) => o
            .into_iter()
            .map(|(k, v)| match v.as_f64() {
                Some(w) if w.is_finite() => Ok((k, w as f32)),
                _ => Err(format!("tag {k:?} has no finite numeric weight")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(FieldValue::Tags),
        Ok(_) => Err(format!(
            "{raw} is not a number, a JSON string or an object of weights"
        )),
        Err(e) => Err(format!(
            "{raw:?} is not JSON ({e}); quote a categorical value"
        )),
    }
}

impl RedisStreamSource {
    /// A source for `config` (connects when [`EventSource::run`] starts).
    pub fn new(config: StreamConfig) -> Self {
        let redis_name = crate::redis::store_name(&config.redis);
        Self {
            name: format!(
                "redis-stream:{}/{}/{}",
                config.stream, config.group, config.consumer
            ),
            redis_name,
            config,
            counters: Counters {
                lag: AtomicI64::new(-1),
                pending: AtomicI64::new(-1),
                ..Counters::default()
            },
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SourceStats {
        let c = &self.counters;
        SourceStats {
            applied: c.applied.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            lag: c.lag.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
        }
    }

    fn err(&self, e: &redis::RedisError) -> Error {
        redis_error(&self.redis_name, e)
    }

    async fn ensure_group(&self, conn: &mut Conn) -> Result<()> {
        let c = &self.config;
        let r: redis::RedisResult<()> = conn
            .xgroup_create_mkstream(&c.stream, &c.group, &c.start_id)
            .await;
        match r {
            Ok(()) => {
                tracing::info!(source = %self.name, "created consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.err(&e)),
        }
    }

    /// Reads a batch: `">"` for new entries, `"0"` for this consumer's
    /// pending ones.
    async fn read(&self, conn: &mut Conn, from: &str) -> Result<Vec<StreamId>> {
        let c = &self.config;
        let mut opts = StreamReadOptions::default()
            .group(&c.group, &c.consumer)
            .count(c.batch.max(1));
        if from == ">" {
            opts = opts.block(c.block_ms.min(usize::MAX as u64) as usize);
        }
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[&c.stream], &[from], &opts)
            .await
            .map_err(|e| self.err(&e))?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Claims entries idle longer than `claim_idle_ms` at any consumer.
    async fn claim(&self, conn: &mut Conn, cursor: &str) -> Result<StreamAutoClaimReply> {
        let c = &self.config;
        conn.xautoclaim_options(
            &c.stream,
            &c.group,
            &c.consumer,
            c.claim_idle_ms,
            cursor,
            StreamAutoClaimOptions::default().count(c.batch.max(1)),
        )
        .await
        .map_err(|e| self.err(&e))
    }

    /// Parses, applies and acknowledges one batch; `true` when some entries
    /// failed to apply and stay pending.
    async fn process(
        &self,
        conn: &mut Conn,
        store: &dyn UserStateStore,
        policy: &PolicyFn,
        entries: Vec<StreamId>,
    ) -> Result<bool> {
        let c = &self.config;
        let mut ack: Vec<String> = Vec::new();
        let mut ids = Vec::new();
        let mut updates = Vec::new();
        for entry in &entries {
            match parse_entry(&entry.id, &entry.map) {
                Ok(u) => {
                    ids.push(entry.id.clone());
                    updates.push(u);
                }
                Err(m) => {
                    tracing::warn!(
                        source = %self.name, entry = %entry.id, field = %m.field,
                        "malformed stream entry skipped: {} {}", m.field, m.reason
                    );
                    metrics::counter!("profiled_state_stream_malformed_total",
                        "stream" => c.stream.clone())
                    .increment(1);
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    ack.push(entry.id.clone());
                }
            }
        }
        let mut retry = false;
        if !updates.is_empty() {
            let policy = Policy {
                now_s: crate::merge::now_ms() / 1000,
                ..policy()
            };
            let results = store.apply(updates, policy).await;
            for (id, r) in ids.into_iter().zip(results) {
                match r {
                    Ok(_) => {
                        self.counters.applied.fetch_add(1, Ordering::Relaxed);
                        ack.push(id);
                    }
                    Err(Error::Invalid { message }) => {
                        tracing::warn!(source = %self.name, entry = %id,
                            "stream entry refused by the store: {message}");
                        metrics::counter!("profiled_state_stream_rejected_total",
                            "stream" => c.stream.clone())
                        .increment(1);
                        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                        ack.push(id);
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.name, entry = %id, error = %e,
                            "stream entry not applied; stays pending for a retry");
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        retry = true;
                    }
                }
            }
        }
        if !ack.is_empty() {
            let _: usize = conn
                .xack(&c.stream, &c.group, &ack)
                .await
                .map_err(|e| self.err(&e))?;
        }
        Ok(retry)
    }

    async fn refresh_lag(&self, conn: &mut Conn) {
        let c = &self.config;
        let info: redis::RedisResult<StreamInfoGroupsReply> = conn.xinfo_groups(&c.stream).await;
        match info {
            Ok(info) => {
                if let Some(g) = info.groups.iter().find(|g| g.name == c.group) {
                    let lag = g.lag.map_or(-1, |l| l as i64);
                    self.counters.lag.store(lag, Ordering::Relaxed);
                    self.counters
                        .pending
                        .store(g.pending as i64, Ordering::Relaxed);
                    let labels = [("stream", c.stream.clone()), ("group", c.group.clone())];
                    if lag >= 0 {
                        metrics::gauge!("profiled_state_stream_lag", &labels).set(lag as f64);
                    }
                    metrics::gauge!("profiled_state_stream_pending", &labels).set(g.pending as f64);
                }
            }
            Err(e) => tracing::debug!(source = %self.name, error = %e, "XINFO GROUPS failed"),
        }
    }

    /// Start-up recovery: this consumer's pending entries, then entries
    /// idle at other consumers.
    async fn recover(
        &self,
        conn: &mut Conn,
        store: &dyn UserStateStore,
        policy: &PolicyFn,
    ) -> Result<()> {
        loop {
            let own = self.read(conn, "0").await?;
            if own.is_empty() {
                break;
            }
            if self.process(conn, store, policy, own).await? {
                return Ok(()); // the store is failing: the main loop retries
            }
        }
        let mut cursor = "0-0".to_owned();
        loop {
            let reply = self.claim(conn, &cursor).await?;
            if !reply.claimed.is_empty() {
                tracing::info!(source = %self.name, entries = reply.claimed.len(),
                    "claimed pending entries of another consumer");
                if self.process(conn, store, policy, reply.claimed).await? {
                    return Ok(());
                }
            }
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            cursor = reply.next_stream_id;
        }
    }
}

#[async_trait::async_trait]
impl EventSource for RedisStreamSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        store: Arc<dyn UserStateStore>,
        policy: PolicyFn,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let extra = Duration::from_millis(self.config.block_ms);
        let mut conn = connect(&self.config.redis, &self.redis_name, extra).await?;
        self.ensure_group(&mut conn).await?;
        let mut recovered = false;
        let mut retry_pending = false;
        let pause = Duration::from_millis(self.config.retry_ms.max(1));
        while !*shutdown.borrow() {
            let step = async {
                if !recovered {
                    self.recover(&mut conn, store.as_ref(), &policy).await?;
                    recovered = true;
                    return Ok::<bool, Error>(false);
                }
                let from = if retry_pending { "0" } else { ">" };
                let entries = self.read(&mut conn, from).await?;
                if from == "0" && entries.is_empty() {
                    retry_pending = false;
                }
                let retry = if entries.is_empty() {
                    false
                } else {
                    self.process(&mut conn, store.as_ref(), &policy, entries)
                        .await?
                };
                self.refresh_lag(&mut conn).await;
                Ok(retry)
            };
            // Not raced against shutdown: a read dropped half-way would
            // leave a blocked XREADGROUP on the server that can still take
            // entries into this consumer's pending list. Shutdown waits for
            // the read (at most block_ms) and the batch it returned.
            let outcome = step.await;
            match outcome {
                Ok(false) => {}
                Ok(true) => {
                    retry_pending = true;
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {},
                        _ = shutdown.changed() => break,
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "stream read failed; retrying");
                    // Whatever was read but not acknowledged is pending:
                    // re-read it first.
                    retry_pending = true;
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {},
                        _ = shutdown.changed() => break,
                    }
                    // A fresh connection (a cluster connection may not
                    // recover from a node restart by itself); keep the old
                    // one when Redis is still unreachable.
                    if let Ok(fresh) = connect(&self.config.redis, &self.redis_name, extra).await {
                        conn = fresh;
                    }
                }
            }
        }
        tracing::info!(source = %self.name, "stream source stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> HashMap<String, Value> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn a_full_entry_parses() {
        let u = parse_entry(
            "1-0",
            &entry(&[
                ("user_id", "u1"),
                ("item_id", "m1"),
                ("ts", "978300760"),
                ("rating", "4.5"),
                ("event_id", "e9"),
                ("field.age", "34"),
                ("field.job", "\"eng\""),
                ("field.genres", r#"{"Drama": 0.5}"#),
                ("clear.zip", ""),
            ]),
        );
        let u = u.unwrap_or_else(|m| panic!("{m:?}"));
        assert_eq!(u.user_id, "u1");
        assert_eq!(u.events[0].event_id.as_deref(), Some("e9"));
        assert_eq!(u.events[0].rating, Some(4.5));
        assert_eq!(u.fields.len(), 4);
        assert!(
            u.fields
                .contains(&FieldUpdate::Set("age".into(), FieldValue::Number(34.0)))
        );
        assert!(u.fields.contains(&FieldUpdate::Clear("zip".into())));
    }

    #[test]
    fn the_entry_id_is_the_event_id_when_there_is_none() {
        let u = parse_entry(
            "17-3",
            &entry(&[("user_id", "u"), ("item_id", "m"), ("ts", "1")]),
        );
        assert_eq!(
            u.map(|u| u.events[0].event_id.clone()),
            Ok(Some("stream:17-3".to_owned()))
        );
    }

    #[test]
    fn malformed_entries_name_their_field() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[("item_id", "m"), ("ts", "1")], "user_id"),
            (&[("user_id", "u"), ("ts", "1")], "item_id"),
            (&[("user_id", "u"), ("item_id", "m")], "ts"),
            (&[("user_id", "u"), ("item_id", "m"), ("ts", "soon")], "ts"),
            (
                &[
                    ("user_id", "u"),
                    ("item_id", "m"),
                    ("ts", "1"),
                    ("rating", "NaN"),
                ],
                "rating",
            ),
            (&[("user_id", "u"), ("field.job", "eng")], "field.job"),
        ];
        for (fields, field) in cases {
            match parse_entry("1-0", &entry(fields)) {
                Err(m) => assert_eq!(m.field, field, "{fields:?}: {m:?}"),
                Ok(u) => panic!("{fields:?} parsed: {u:?}"),
            }
        }
    }
}
