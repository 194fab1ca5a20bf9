//! [`Engine`]: the request path shared by the gRPC services: model
//! resolution, edge validation, the hot cache, the batchers, Embed, Explain
//! and the model status messages.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use dashmap::DashMap;
use moka::future::Cache;
use profiled_model::{ExplainOptions, Method, Target, UserFeatures};
use profiled_proto::v1 as pb;
use profiled_store::{
    Generation, IndexData, ModelSnapshot, SEEN_ITEMS_ATTRIBUTE, Store, VersionState,
};

use crate::batcher::Batcher;
use crate::config::Config;
use crate::convert;
use crate::error::{ApiError, model_error};

/// Full cache key: model, generation id and the canonical feature bytes
/// (compared in full, never by a bare hash).
///
/// The key carries its own 64-bit hash, computed once when it is built (by
/// [`Engine::cache_key`], with the engine's per-process random seed), and
/// `Hash` feeds only that. The table re-hashes every live key whenever it
/// cleans a segment of evicted entries; re-reading ~600 feature bytes per key
/// there made those clean-ups stall the inserting thread for milliseconds
/// once the cache was full (a stand-alone reproduction, docs/benchmarks.md:
/// worst inserts 3–7 ms before, 0.7–1.3 ms after). Equality still compares
/// everything. The fields are private so that every key is built by
/// `CacheKey::new`, with the hash of its own bytes.
#[derive(Debug, Clone)]
pub struct CacheKey {
    /// Model name.
    model: Arc<str>,
    /// Generation id.
    generation: u64,
    /// `UserFeatures::canonical_bytes()` (written from the request by
    /// [`convert::cache_key`]).
    features: Box<[u8]>,
    /// The hash of the three above, with the engine's seed.
    hash: u64,
}

impl CacheKey {
    fn new(
        seed: &foldhash::quality::RandomState,
        model: Arc<str>,
        generation: u64,
        features: Box<[u8]>,
    ) -> CacheKey {
        use std::hash::BuildHasher;
        let hash = seed.hash_one((&*model, generation, &*features));
        CacheKey {
            model,
            generation,
            features,
            hash,
        }
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &CacheKey) -> bool {
        // The stored hash first: a cheap reject of most unequal keys.
        self.hash == other.hash
            && self.generation == other.generation
            && self.model == other.model
            && self.features == other.features
    }
}

impl Eq for CacheKey {}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// How a profile was obtained, with the timings of its computation.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The unit vector.
    pub vector: Arc<[f32]>,
    /// Served from the cache.
    pub cache_hit: bool,
    /// Queue wait (0 for cache hits).
    pub queue_us: u64,
    /// Compute time of the batch (0 for cache hits).
    pub compute_us: u64,
}

impl Profile {
    /// A profile the cache served.
    fn hit(vector: Arc<[f32]>) -> Profile {
        Profile {
            vector,
            cache_hit: true,
            queue_us: 0,
            compute_us: 0,
        }
    }
}

impl From<crate::batcher::Computed> for Profile {
    fn from(c: crate::batcher::Computed) -> Profile {
        Profile {
            vector: c.vector,
            cache_hit: false,
            queue_us: c.queue_us,
            compute_us: c.compute_us,
        }
    }
}

/// Cache use of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Read, fill on miss.
    Use,
    /// Neither read nor write.
    Bypass,
    /// Recompute and overwrite.
    Refresh,
}

impl CacheUse {
    /// From the proto enum (unknown numbers = default).
    pub fn from_proto(v: i32) -> CacheUse {
        match pb::CacheMode::try_from(v) {
            Ok(pb::CacheMode::Bypass) => CacheUse::Bypass,
            Ok(pb::CacheMode::Refresh) => CacheUse::Refresh,
            _ => CacheUse::Use,
        }
    }
}

/// One validated Embed input.
#[derive(Debug)]
enum Input {
    /// Compute from features (through the cache with this key, if any).
    Features(UserFeatures, Option<CacheKey>),
    /// Served by the cache before any conversion.
    Cached(Arc<[f32]>),
    /// Stored profile from the users index.
    Stored(Vec<f32>),
}

/// The shared state of the services.
#[derive(Debug)]
pub struct Engine {
    /// The model store.
    pub store: Store,
    /// The configuration.
    pub cfg: Config,
    cache: Option<Cache<CacheKey, Arc<[f32]>, foldhash::fast::RandomState>>,
    key_seed: foldhash::quality::RandomState,
    batchers: DashMap<String, Arc<Batcher>>,
    draining: AtomicBool,
    explain_slots: tokio::sync::Semaphore,
}

fn remaining(deadline: Option<Instant>) -> Result<(), ApiError> {
    if deadline.is_some_and(|d| d <= Instant::now()) {
        return Err(ApiError::DeadlineExceeded(
            "deadline exceeded before the work started".into(),
        ));
    }
    Ok(())
}

impl Engine {
    /// An engine over `store` with `cfg`.
    pub fn new(store: Store, cfg: Config) -> Engine {
        let cache = cfg.cache.enabled.then(|| {
            // Sized up front for the byte budget at ~1 KiB an entry (a
            // 50-event user's key plus its vector), so a filling cache does not
            // rehash its table on the request path; keys hashed with foldhash
            // (the default SipHash was a visible share of a hit's CPU).
            let entries = (cfg.cache.max_bytes / 1024).min(1 << 20) as usize;
            Cache::builder()
                .max_capacity(cfg.cache.max_bytes)
                .initial_capacity(entries)
                .weigher(|k: &CacheKey, v: &Arc<[f32]>| {
                    // Per-entry overhead beyond the key and vector bytes
                    // (table bucket, deque nodes, entry info, the key's own
                    // allocations): ≈ 235 bytes measured from RSS on a
                    // filled 256 MiB cache, rounded up.
                    let bytes = k.features.len() + k.model.len() + v.len() * 4 + 256;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(Duration::from_secs(cfg.cache.ttl_secs.max(1)))
                .eviction_listener(|k: Arc<CacheKey>, _v, cause| {
                    if cause.was_evicted() {
                        metrics::counter!("profiled_cache_evictions_total", "model" => k.model.to_string())
                            .increment(1);
                    }
                })
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        let workers = if cfg.batcher.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.batcher.workers
        };
        Engine {
            store,
            cfg,
            cache,
            key_seed: foldhash::quality::RandomState::default(),
            batchers: DashMap::new(),
            draining: AtomicBool::new(false),
            explain_slots: tokio::sync::Semaphore::new(workers),
        }
    }

    /// Starts the drain: new data-plane calls answer UNAVAILABLE.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True while draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn check_serving(&self, deadline: Option<Instant>) -> Result<(), ApiError> {
        if self.is_draining() {
            return Err(ApiError::Unavailable(
                "the server is draining (shutting down); retry on another replica".into(),
            ));
        }
        remaining(deadline)
    }

    fn batcher(&self, model: &str) -> Result<Arc<Batcher>, ApiError> {
        if let Some(b) = self.batchers.get(model) {
            return Ok(b.clone());
        }
        let b = Arc::new(Batcher::new(model, &self.cfg.batcher)?);
        Ok(self
            .batchers
            .entry(model.to_string())
            .or_insert(b)
            .value()
            .clone())
    }

    /// The cache key of `features` (a request message) on `generation`;
    /// `None` when the cache is off, or for a message that cannot be valid.
    pub fn cache_key(
        &self,
        generation: &Generation,
        features: &pb::UserFeatures,
    ) -> Option<CacheKey> {
        self.cache.as_ref()?;
        Some(CacheKey::new(
            &self.key_seed,
            Arc::from(generation.model.as_str()),
            generation.id,
            convert::cache_key(features)?.into_boxed_slice(),
        ))
    }

    /// The cache key of a features message under `mode`, and the cached
    /// profile when `mode` reads the cache and holds one (counted as a hit).
    /// A hit needs no conversion: only features that converted were ever
    /// cached, and the key holds all of them but the user id (checked here).
    async fn lookup(
        &self,
        generation: &Generation,
        features: &pb::UserFeatures,
        mode: CacheUse,
    ) -> (Option<CacheKey>, Option<Arc<[f32]>>) {
        let key = match mode {
            CacheUse::Bypass => None,
            CacheUse::Use | CacheUse::Refresh => self.cache_key(generation, features),
        };
        let hit = match (&key, &self.cache) {
            (Some(k), Some(cache))
                if mode == CacheUse::Use
                    && features.user_id.len() <= self.cfg.limits.max_string_bytes =>
            {
                cache.get(k).await
            }
            _ => None,
        };
        if hit.is_some() {
            crate::handles::cache_lookup(true, generation.id, &generation.model).increment(1);
        }
        (key, hit)
    }

    /// The profile of one validated user on `generation`, through the cache
    /// (per `mode`, under `key` from [`Engine::cache_key`]) and the batcher.
    pub async fn profile(
        &self,
        generation: &Arc<Generation>,
        key: Option<CacheKey>,
        features: UserFeatures,
        path: String,
        mode: CacheUse,
        deadline: Option<Instant>,
    ) -> Result<Profile, ApiError> {
        let batcher = self.batcher(&generation.model)?;
        let model = generation.model.as_str();
        let (cache, key) = match (&self.cache, mode, key) {
            (Some(c), CacheUse::Use | CacheUse::Refresh, Some(k)) => (c, k),
            _ => {
                return Ok(batcher
                    .compute(generation.clone(), features, path, deadline)
                    .await?
                    .into());
            }
        };
        if mode == CacheUse::Refresh {
            let c = batcher
                .compute(generation.clone(), features, path, deadline)
                .await?;
            cache.insert(key, c.vector.clone()).await;
            return Ok(c.into());
        }
        // A plain hit was looked up by the caller (`Engine::lookup`), before
        // converting the features; a hit here is a race with another request.
        // The features wait in a slot that the computation takes them from:
        // when this request's own computation never runs (another request's
        // did), they are still here for a retry, without a copy per miss.
        // The slot also brings back the timings of the computation.
        struct Slot {
            features: Option<UserFeatures>,
            timings: (u64, u64),
        }
        let slot = Arc::new(Mutex::new(Slot {
            features: Some(features),
            timings: (0, 0),
        }));
        let take = |slot: &Mutex<Slot>| slot.lock().ok().and_then(|mut s| s.features.take());
        // Concurrent misses for one key share one computation, run under the
        // deadline of whichever request started it. When that shared run fails
        // on *its* deadline, this request may still have time: try again (a
        // few times, then compute alone) rather than pass on another request's
        // deadline error.
        let mut shared_deadline_failures = 0;
        let entry = loop {
            let (s2, g, b, p) = (
                slot.clone(),
                generation.clone(),
                batcher.clone(),
                path.clone(),
            );
            let r = cache
                .entry(key.clone())
                .or_try_insert_with(async move {
                    let f = take(&s2).ok_or_else(|| {
                        ApiError::Internal("the features of a miss were taken twice".into())
                    })?;
                    let c = b.compute(g, f, p, deadline).await?;
                    if let Ok(mut s) = s2.lock() {
                        s.timings = (c.queue_us, c.compute_us);
                    }
                    Ok::<_, ApiError>(c.vector)
                })
                .await;
            match r {
                Ok(entry) => break entry,
                Err(e)
                    if matches!(*e, ApiError::DeadlineExceeded(_))
                        && remaining(deadline).is_ok() =>
                {
                    shared_deadline_failures += 1;
                    if shared_deadline_failures >= 3 {
                        let Some(features) = take(&slot) else {
                            return Err((*e).clone());
                        };
                        return Ok(batcher
                            .compute(generation.clone(), features, path, deadline)
                            .await?
                            .into());
                    }
                }
                Err(e) => return Err((*e).clone()),
            }
        };
        let hit = !entry.is_fresh();
        crate::handles::cache_lookup(hit, generation.id, model).increment(1);
        let (queue_us, compute_us) = if hit {
            (0, 0)
        } else {
            slot.lock().map(|s| s.timings).unwrap_or((0, 0))
        };
        Ok(Profile {
            vector: entry.into_value(),
            cache_hit: hit,
            queue_us,
            compute_us,
        })
    }

    /// Resolves the generation of a request.
    pub fn resolve(&self, spec: Option<&pb::ModelSpec>) -> Result<Arc<Generation>, ApiError> {
        let (name, sel) = convert::selector(spec)?;
        Ok(self.store.resolve(&name, &sel)?)
    }

    /// Unary Embed.
    pub async fn embed(
        &self,
        r: pb::EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<pb::EmbedResponse, ApiError> {
        self.check_serving(deadline)?;
        let limits = &self.cfg.limits;
        if r.users.is_empty() {
            return Err(ApiError::invalid("users", "at least one user is required"));
        }
        if r.users.len() > limits.max_users_per_call {
            return Err(ApiError::Limit {
                field: "users".into(),
                got: format!("{} users", r.users.len()),
                limit: "max_users_per_call",
                value: limits.max_users_per_call as u64,
            });
        }
        let f16 = matches!(
            pb::VectorEncoding::try_from(r.encoding),
            Ok(pb::VectorEncoding::F16)
        );
        let mode = CacheUse::from_proto(r.cache);
        let generation = self.resolve(r.model.as_ref())?;

        // Phase 1: validate every user (cheap) before any work.
        let mut inputs: Vec<(String, Result<Input, ApiError>)> = Vec::with_capacity(r.users.len());
        for (i, u) in r.users.iter().enumerate() {
            // Request paths only for messages (not per user on the happy path).
            let path = || format!("users[{i}]");
            let item = match &u.source {
                None => (
                    String::new(),
                    Err(ApiError::invalid(
                        format!("{}.source", path()),
                        "set exactly one of features or user_id",
                    )),
                ),
                Some(pb::user_input::Source::UserId(id)) => (
                    id.clone(),
                    match &generation.users {
                        None => Err(ApiError::NotFound(format!(
                            "{}.user_id: model {:?} version {} has no users index, so user \
                             {id:?} cannot be looked up (send features instead)",
                            path(),
                            generation.model,
                            generation.version
                        ))),
                        Some(users) => match users.vector_of(id) {
                            Ok(Some((_, v))) => Ok(Input::Stored(v)),
                            Ok(None) => Err(ApiError::NotFound(format!(
                                "{}.user_id: unknown user {id:?} (not in the users index)",
                                path()
                            ))),
                            Err(e) => Err(ApiError::Internal(e.to_string())),
                        },
                    },
                ),
                Some(pb::user_input::Source::Features(f)) => {
                    let (key, hit) = self.lookup(&generation, f, mode).await;
                    let input = match hit {
                        Some(v) => Ok(Input::Cached(v)),
                        None => convert::features(
                            f,
                            &format!("{}.features", path()),
                            &generation,
                            limits,
                        )
                        .map(|x| Input::Features(x, key)),
                    };
                    (f.user_id.clone(), input)
                }
            };
            if !r.allow_partial
                && let Err(e) = &item.1
            {
                return Err(e.clone());
            }
            inputs.push(item);
        }

        // Phase 2: compute (cache + batcher), all users concurrently.
        let futs = inputs.into_iter().enumerate().map(|(i, (uid, f))| {
            let generation = generation.clone();
            async move {
                let res = match f {
                    Ok(Input::Features(f, key)) => self
                        .profile(&generation, key, f, format!("users[{i}]"), mode, deadline)
                        .await
                        .map(|p| (p, false)),
                    Ok(Input::Cached(vector)) => Ok((Profile::hit(vector), false)),
                    Ok(Input::Stored(v)) => Ok((
                        Profile {
                            vector: v.into(),
                            cache_hit: false,
                            queue_us: 0,
                            compute_us: 0,
                        },
                        true,
                    )),
                    Err(e) => Err(e),
                };
                (uid, res)
            }
        });
        let results = futures::future::join_all(futs).await;
        let mut users = Vec::with_capacity(results.len());
        let (mut queue_us, mut compute_us) = (0u64, 0u64);
        for (uid, res) in results {
            match res {
                Ok((p, stored)) => {
                    queue_us = queue_us.max(p.queue_us);
                    compute_us = compute_us.max(p.compute_us);
                    let vector = if f16 {
                        pb::Vector::from_f32_as_f16(&p.vector)
                    } else {
                        pb::Vector::from_f32(p.vector.to_vec())
                    };
                    users.push(pb::EmbeddedUser {
                        user_id: uid,
                        vector: Some(vector),
                        cache_hit: p.cache_hit,
                        source: if stored {
                            pb::ProfileSource::UsersIndex
                        } else if p.cache_hit {
                            pb::ProfileSource::Cache
                        } else {
                            pb::ProfileSource::Computed
                        } as i32,
                        error: None,
                    });
                }
                Err(e) if r.allow_partial && !matches!(e, ApiError::Overloaded(_)) => {
                    users.push(pb::EmbeddedUser {
                        user_id: uid,
                        vector: None,
                        cache_hit: false,
                        source: pb::ProfileSource::Unspecified as i32,
                        error: Some(e.to_item()),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(pb::EmbedResponse {
            model: Some(model_ref(&generation)),
            users,
            dim: generation.dim() as u32,
            encoding: if f16 {
                pb::VectorEncoding::F16
            } else {
                pb::VectorEncoding::F32
            } as i32,
            queue_us,
            compute_us,
            request_id: r.request_id,
        })
    }

    /// Explain.
    pub async fn explain(
        &self,
        r: pb::ExplainRequest,
        deadline: Option<Instant>,
    ) -> Result<pb::ExplainResponse, ApiError> {
        self.check_serving(deadline)?;
        let limits = &self.cfg.limits;
        if r.top_n > limits.max_explain_top_n {
            return Err(ApiError::Limit {
                field: "top_n".into(),
                got: format!("{}", r.top_n),
                limit: "max_explain_top_n",
                value: u64::from(limits.max_explain_top_n),
            });
        }
        let top_n = if r.top_n == 0 { 10 } else { r.top_n as usize };
        let method = match pb::ExplainMethod::try_from(r.method) {
            Ok(pb::ExplainMethod::AttentionRollout) => Method::AttentionRollout,
            Ok(pb::ExplainMethod::Attention) => Method::Attention,
            _ => Method::Occlusion,
        };
        let generation = self.resolve(r.model.as_ref())?;
        let Some(pf) = r.features.as_ref() else {
            return Err(ApiError::invalid("features", "required"));
        };
        let features = convert::features(pf, "features", &generation, limits)?;
        let target = match r.target.as_ref().and_then(|t| t.kind.as_ref()) {
            None | Some(pb::explain_target::Kind::Profile(_)) => Target::Profile,
            Some(pb::explain_target::Kind::Item(it)) => {
                if generation.encoder.item_vector(&it.item_id).is_none() {
                    return Err(ApiError::NotFound(format!(
                        "target.item.item_id: unknown item {:?} (not in model {:?} version {})",
                        it.item_id, generation.model, generation.version
                    )));
                }
                Target::Item(it.item_id.clone())
            }
            Some(pb::explain_target::Kind::Users(u)) => {
                let n = u.seed_user_ids.len() + u.vectors.len();
                if n == 0 {
                    return Err(ApiError::invalid(
                        "target.users",
                        "at least one seed (seed_user_ids or vectors) is required",
                    ));
                }
                if n > limits.max_seeds {
                    return Err(ApiError::Limit {
                        field: "target.users".into(),
                        got: format!("{n} seeds"),
                        limit: "max_seeds",
                        value: limits.max_seeds as u64,
                    });
                }
                let dim = generation.dim();
                let mut mean = vec![0f32; dim];
                for (i, id) in u.seed_user_ids.iter().enumerate() {
                    let path = format!("target.users.seed_user_ids[{i}]");
                    let Some(users) = generation.users.as_ref() else {
                        return Err(ApiError::NotFound(format!(
                            "{path}: model {:?} version {} has no users index, so user {id:?} \
                             cannot be looked up (send vectors instead)",
                            generation.model, generation.version
                        )));
                    };
                    let x = match users.vector_of(id) {
                        Ok(Some((_, v))) => v,
                        Ok(None) => {
                            return Err(ApiError::NotFound(format!(
                                "{path}: unknown user {id:?} (not in the users index)"
                            )));
                        }
                        Err(e) => return Err(ApiError::Internal(e.to_string())),
                    };
                    let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
                    if n == 0.0 || !n.is_finite() {
                        return Err(ApiError::Internal(format!(
                            "{path}: the stored profile of {id:?} is zero or not finite"
                        )));
                    }
                    for (m, a) in mean.iter_mut().zip(&x) {
                        *m += a / n;
                    }
                }
                for (i, v) in u.vectors.iter().enumerate() {
                    let x = v.to_f32_checked(dim).map_err(|e| {
                        ApiError::invalid(format!("target.users.vectors[{i}]"), e.to_string())
                    })?;
                    let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
                    if n == 0.0 {
                        return Err(ApiError::invalid(
                            format!("target.users.vectors[{i}]"),
                            "the vector is zero",
                        ));
                    }
                    for (m, a) in mean.iter_mut().zip(&x) {
                        *m += a / n;
                    }
                }
                Target::Users(mean)
            }
        };
        let opts = ExplainOptions {
            tokens: !r.groups_only,
            max_tokens: 0,
        };
        let q0 = Instant::now();
        let _permit = self
            .explain_slots
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        remaining(deadline)?;
        let queue_us = q0.elapsed().as_micros() as u64;
        let g2 = generation.clone();
        let f2 = features.clone();
        let c0 = Instant::now();
        let ex =
            tokio::task::spawn_blocking(move || g2.encoder.explain(&f2, &target, method, &opts))
                .await
                .map_err(|e| ApiError::Internal(format!("explain task: {e}")))?
                .map_err(|e| model_error("features", e))?;
        let compute_us = c0.elapsed().as_micros() as u64;
        // The unmasked profile computed on the way fills the cache (USE: if
        // absent; REFRESH: overwrite; BYPASS: untouched), so an Embed of the
        // same user after an Explain is a hit.
        if let Some(cache) = &self.cache
            && ex.profile.len() == generation.dim()
        {
            let mode = CacheUse::from_proto(r.cache);
            if mode != CacheUse::Bypass
                && let Some(key) = self.cache_key(&generation, pf)
            {
                let vector: Arc<[f32]> = Arc::from(ex.profile.as_slice());
                if mode == CacheUse::Refresh {
                    cache.insert(key, vector).await;
                } else {
                    let _ = cache.entry(key).or_insert(vector).await;
                }
            }
        }
        Ok(explain_response(
            &generation,
            &features,
            ex,
            r.target,
            r.groups_only,
            top_n,
            queue_us,
            compute_us,
        ))
    }

    /// Search: nearest items or lookalike users, on the request's generation.
    pub async fn search(
        &self,
        r: pb::SearchRequest,
        deadline: Option<Instant>,
    ) -> Result<pb::SearchResponse, ApiError> {
        use profiled_index::{Condition, Filter, SearchParams, SearchPath};
        self.check_serving(deadline)?;
        let limits = &self.cfg.limits;
        let k = if r.k == 0 { 10 } else { r.k };
        if k > limits.max_k {
            return Err(ApiError::Limit {
                field: "k".into(),
                got: k.to_string(),
                limit: "max_k",
                value: u64::from(limits.max_k),
            });
        }
        let generation = self.resolve(r.model.as_ref())?;
        let to_users = matches!(
            pb::TargetIndex::try_from(r.target),
            Ok(pb::TargetIndex::Users)
        );
        let (tname, index) = if to_users {
            ("users", generation.users.clone())
        } else {
            ("items", generation.items.clone())
        };
        let no_index = |what: &str| {
            ApiError::NotFound(format!(
                "{what}: model {:?} version {} has no {tname} index",
                generation.model, generation.version
            ))
        };
        let index = index.ok_or_else(|| no_index("target"))?;
        let dim = generation.dim();
        let q0 = Instant::now();
        let filter_in = r.filter.clone().unwrap_or_default();
        check_filter_limits(&filter_in, limits)?;
        let mut deny: Vec<String> = filter_in.deny_ids.clone();
        let mut plan_notes: Vec<String> = Vec::new();
        let mut query_users: Vec<String> = Vec::new();
        let mut cache_hit = false;
        let normalise = |path: String, v: Vec<f32>| -> Result<Vec<f32>, ApiError> {
            let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            if n == 0.0 || !n.is_finite() {
                return Err(ApiError::invalid(path, "the vector is zero or not finite"));
            }
            Ok(v.into_iter().map(|a| a / n).collect())
        };
        let users_vector = |path: String, id: &str| -> Result<Vec<f32>, ApiError> {
            let users = generation.users.as_ref().ok_or_else(|| no_index(&path))?;
            match users.vector_of(id) {
                Ok(Some((_, v))) => Ok(v),
                Ok(None) => Err(ApiError::NotFound(format!("{path}: unknown user {id:?}"))),
                Err(e) => Err(ApiError::Internal(e.to_string())),
            }
        };
        let query: Vec<f32> = match r.query {
            None => {
                return Err(ApiError::invalid(
                    "query",
                    "set exactly one of features, user_id, vector, seeds",
                ));
            }
            Some(pb::search_request::Query::Features(f)) => {
                let mode = CacheUse::from_proto(r.cache);
                let (key, hit) = self.lookup(&generation, &f, mode).await;
                let p = match hit {
                    Some(v) => Profile::hit(v),
                    None => {
                        let feats = convert::features(&f, "features", &generation, limits)?;
                        self.profile(&generation, key, feats, "features".into(), mode, deadline)
                            .await?
                    }
                };
                if !f.user_id.is_empty() {
                    query_users.push(f.user_id.clone());
                }
                if filter_in.exclude_seen_items && !to_users {
                    deny.extend(f.events.iter().map(|e| e.item_id.clone()));
                }
                cache_hit = p.cache_hit;
                p.vector.to_vec()
            }
            Some(pb::search_request::Query::UserId(id)) => {
                let v = users_vector("user_id".into(), &id)?;
                if filter_in.exclude_seen_items && !to_users {
                    match generation.users_data.as_ref() {
                        Some(d) if d.has_histories() => {
                            deny.extend(d.values_of(&id, SEEN_ITEMS_ATTRIBUTE).unwrap_or_default());
                        }
                        _ => plan_notes.push(
                            "seen items not excluded: the users index holds no item histories"
                                .into(),
                        ),
                    }
                }
                query_users.push(id);
                v
            }
            Some(pb::search_request::Query::Vector(v)) => {
                let x = v
                    .to_f32_checked(dim)
                    .map_err(|e| ApiError::invalid("vector", e.to_string()))?;
                normalise("vector".into(), x)?
            }
            Some(pb::search_request::Query::Seeds(s)) => {
                let n = s.user_ids.len() + s.vectors.len();
                if n == 0 {
                    return Err(ApiError::invalid("seeds", "at least one seed is required"));
                }
                if n > limits.max_seeds {
                    return Err(ApiError::Limit {
                        field: "seeds".into(),
                        got: format!("{n} seeds"),
                        limit: "max_seeds",
                        value: limits.max_seeds as u64,
                    });
                }
                let mut mean = vec![0f32; dim];
                for (i, id) in s.user_ids.iter().enumerate() {
                    let v = normalise(
                        format!("seeds.user_ids[{i}]"),
                        users_vector(format!("seeds.user_ids[{i}]"), id)?,
                    )?;
                    mean.iter_mut().zip(&v).for_each(|(m, a)| *m += a);
                    query_users.push(id.clone());
                }
                for (i, v) in s.vectors.iter().enumerate() {
                    let x = v.to_f32_checked(dim).map_err(|e| {
                        ApiError::invalid(format!("seeds.vectors[{i}]"), e.to_string())
                    })?;
                    let x = normalise(format!("seeds.vectors[{i}]"), x)?;
                    mean.iter_mut().zip(&x).for_each(|(m, a)| *m += a);
                }
                normalise("seeds".into(), mean)?
            }
        };
        let query_us = q0.elapsed().as_micros() as u64;
        if to_users && filter_in.exclude_query_user.unwrap_or(true) {
            deny.extend(query_users);
        }
        let mut conditions = Vec::with_capacity(filter_in.conditions.len());
        for (i, c) in filter_in.conditions.iter().enumerate() {
            let path = format!("filter.conditions[{i}]");
            let cond = match pb::AttributeOp::try_from(c.op) {
                Ok(pb::AttributeOp::Equals) => {
                    if c.values.len() != 1 {
                        return Err(ApiError::invalid(
                            format!("{path}.values"),
                            format!("EQUALS needs exactly one value, got {}", c.values.len()),
                        ));
                    }
                    Condition::Equals {
                        attribute: c.attribute.clone(),
                        value: c.values[0].clone(),
                    }
                }
                Ok(pb::AttributeOp::In) => Condition::In {
                    attribute: c.attribute.clone(),
                    values: c.values.clone(),
                },
                Ok(pb::AttributeOp::NotIn) => Condition::NotIn {
                    attribute: c.attribute.clone(),
                    values: c.values.clone(),
                },
                _ => {
                    return Err(ApiError::invalid(
                        format!("{path}.op"),
                        "set ATTRIBUTE_OP_EQUALS, ATTRIBUTE_OP_IN or ATTRIBUTE_OP_NOT_IN",
                    ));
                }
            };
            conditions.push(cond);
        }
        let params = SearchParams {
            k: k as usize,
            exact: r.exact,
            filter: Filter {
                conditions,
                allow_ids: (!filter_in.allow_ids.is_empty()).then(|| filter_in.allow_ids.clone()),
                deny_ids: deny,
                exclude_rows: Vec::new(),
            },
        };
        remaining(deadline)?;
        let s0 = Instant::now();
        let idx = index.clone();
        let result = tokio::task::spawn_blocking(move || idx.search(&query, &params))
            .await
            .map_err(|e| ApiError::Internal(format!("search task: {e}")))?
            .map_err(|e| match e {
                profiled_index::Error::UnknownAttribute(a) => ApiError::invalid(
                    "filter.conditions",
                    format!("unknown attribute {a:?} in the {tname} index"),
                ),
                profiled_index::Error::InvalidArgument(m) => ApiError::invalid("filter", m),
                other => ApiError::Internal(other.to_string()),
            })?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Internal("search returned no result".into()))?;
        let search_us = s0.elapsed().as_micros() as u64;
        let f16 = matches!(
            pb::VectorEncoding::try_from(r.encoding),
            Ok(pb::VectorEncoding::F16)
        );
        let data = if to_users {
            generation.users_data.as_ref()
        } else {
            generation.items_data.as_ref()
        };
        let hits = result
            .hits
            .iter()
            .map(|h| pb::Hit {
                id: h.id.clone(),
                score: h.score,
                attributes: match data {
                    Some(d) if r.include_attributes => d
                        .row_attributes(h.row)
                        .into_iter()
                        .filter(|(name, _)| name != SEEN_ITEMS_ATTRIBUTE)
                        .map(|(name, values)| (name, pb::AttributeValues { values }))
                        .collect(),
                    _ => Default::default(),
                },
                title: if r.include_attributes && !to_users {
                    generation.item_title(&h.id).unwrap_or_default().to_string()
                } else {
                    String::new()
                },
                vector: if r.include_vectors {
                    index.vector_of(&h.id).ok().flatten().map(|(_, v)| {
                        if f16 {
                            pb::Vector::from_f32_as_f16(&v)
                        } else {
                            pb::Vector::from_f32(v)
                        }
                    })
                } else {
                    None
                },
            })
            .collect();
        Ok(pb::SearchResponse {
            model: Some(model_ref(&generation)),
            target: if to_users {
                pb::TargetIndex::Users
            } else {
                pb::TargetIndex::Items
            } as i32,
            path: match result.path {
                SearchPath::ExactScan => pb::SearchPath::Exact,
                SearchPath::ExactCandidates | SearchPath::AnnFallbackExact => {
                    pb::SearchPath::ExactCandidates
                }
                SearchPath::Ann => pb::SearchPath::Ann,
            } as i32,
            hits,
            index_rows: index.len() as u64,
            candidates: result.candidates as u64,
            ann_fallback: result.path == SearchPath::AnnFallbackExact,
            plan: std::iter::once(result.path.name().to_string())
                .chain(plan_notes)
                .collect::<Vec<_>>()
                .join("; "),
            cache_hit,
            query_us,
            search_us,
        })
    }

    /// GetModel.
    pub fn get_model(&self, name: &str) -> Result<pb::ModelInfo, ApiError> {
        let snap = self.store.snapshot(name)?;
        Ok(model_info(&snap, true))
    }

    /// ListModels.
    pub fn list_models(&self, include_schema: bool) -> pb::ListModelsResponse {
        pb::ListModelsResponse {
            models: self
                .store
                .snapshots()
                .iter()
                .map(|s| model_info(s, include_schema))
                .collect(),
            default_model: self.store.default_model().unwrap_or_default(),
        }
    }
}

/// The `ModelRef` of a generation.
pub fn model_ref(g: &Generation) -> pb::ModelRef {
    pb::ModelRef {
        name: g.model.clone(),
        version: g.version,
        generation_id: g.id,
    }
}

fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn index_info(d: &IndexData) -> pb::IndexInfo {
    pb::IndexInfo {
        rows: d.backend.len() as u64,
        dim: d.backend.dims() as u32,
        attributes: d.attribute_names(),
        has_ann: d.backend.has_ann(),
        has_histories: d.has_histories(),
    }
}

/// Filter size limits (request-side): conditions, values per condition, ids.
fn check_filter_limits(f: &pb::Filter, limits: &crate::config::Limits) -> Result<(), ApiError> {
    if f.conditions.len() > limits.max_filter_conditions {
        return Err(ApiError::Limit {
            field: "filter.conditions".into(),
            got: format!("{} conditions", f.conditions.len()),
            limit: "max_filter_conditions",
            value: limits.max_filter_conditions as u64,
        });
    }
    for (i, c) in f.conditions.iter().enumerate() {
        if c.values.len() > limits.max_filter_values {
            return Err(ApiError::Limit {
                field: format!("filter.conditions[{i}].values"),
                got: format!("{} values", c.values.len()),
                limit: "max_filter_values",
                value: limits.max_filter_values as u64,
            });
        }
    }
    let ids = f.allow_ids.len() + f.deny_ids.len();
    if ids > limits.max_filter_ids {
        return Err(ApiError::Limit {
            field: "filter.allow_ids + filter.deny_ids".into(),
            got: format!("{ids} ids"),
            limit: "max_filter_ids",
            value: limits.max_filter_ids as u64,
        });
    }
    Ok(())
}

/// The proto `ModelInfo` of a snapshot.
pub fn model_info(s: &ModelSnapshot, include_schema: bool) -> pb::ModelInfo {
    let versions = s
        .versions
        .iter()
        .map(|v| {
            let g = v.generation.as_ref();
            let (metrics, provenance) = g
                .map(|g| convert::metrics_and_provenance(g.encoder.metadata()))
                .unwrap_or_default();
            pb::VersionInfo {
                version: v.version,
                state: match v.status.state {
                    VersionState::Loading => pb::VersionState::Loading,
                    VersionState::Ready => pb::VersionState::Ready,
                    VersionState::Failed => pb::VersionState::Failed,
                    VersionState::Unloading => pb::VersionState::Unloading,
                    VersionState::Unloaded => pb::VersionState::Unloaded,
                } as i32,
                reason: v.status.reason.clone(),
                generation_id: g.map_or(0, |g| g.id),
                labels: v.labels.clone(),
                is_default: v.is_default,
                state_since: Some(timestamp(v.status.since)),
                load_duration: v.status.load_duration.map(duration),
                architecture: g.map(|g| convert::architecture(g)),
                schema: if include_schema {
                    g.map(|g| convert::schema(g.encoder.metadata()))
                } else {
                    None
                },
                metrics: metrics.into_iter().collect(),
                provenance: provenance.into_iter().collect(),
                items_index: g.and_then(|g| g.items_data.as_ref()).map(index_info),
                users_index: g.and_then(|g| g.users_data.as_ref()).map(index_info),
                mapped_bytes: g.map_or(0, |g| g.mapped_bytes()),
                packed_bytes: g.map_or(0, |g| g.report.bytes_packed as u64),
            }
        })
        .collect();
    pb::ModelInfo {
        name: s.name.clone(),
        default_version: s.default_version,
        labels: s.labels.clone().into_iter().collect(),
        version_policy: s.policy.to_string(),
        versions,
    }
}

/// The token table of an explained user: fields in schema order, then the
/// kept events oldest first.
fn token_table(
    g: &Generation,
    f: &UserFeatures,
    ex: &profiled_model::Explanation,
) -> Vec<pb::Token> {
    let meta = g.encoder.metadata();
    let p = meta.schema.fields.len();
    let mut order: Vec<usize> = (0..f.events.len()).collect();
    order.sort_by_key(|&i| f.events[i].timestamp);
    let keep = meta.schema.behaviour.max_events;
    let start = order.len().saturating_sub(keep);
    let kept: Vec<usize> = order[start..].to_vec();
    let mut labels: BTreeMap<usize, (&str, profiled_model::Group)> = BTreeMap::new();
    for t in &ex.tokens {
        labels.insert(t.position, (t.label.as_str(), t.group));
    }
    let n = p + kept.len();
    (0..n)
        .map(|pos| {
            let (label, grp) = labels
                .get(&pos)
                .copied()
                .unwrap_or(("", profiled_model::Group::Behaviour));
            if pos < p {
                let field = &meta.schema.fields[pos];
                let present =
                    f.fields.contains_key(&field.source) || field.source.starts_with("events.");
                pb::Token {
                    position: pos as u32,
                    group: convert::group(field.group) as i32,
                    field: field.name.clone(),
                    label: label.to_string(),
                    item_id: String::new(),
                    timestamp: 0,
                    oov: label.contains("OOV") || label.contains("unknown"),
                    missing: !present,
                }
            } else {
                let ev = kept.get(pos - p).and_then(|&i| f.events.get(i));
                pb::Token {
                    position: pos as u32,
                    group: convert::group(grp) as i32,
                    field: "events".into(),
                    label: label.to_string(),
                    item_id: ev.map(|e| e.item.clone()).unwrap_or_default(),
                    timestamp: ev.map_or(0, |e| e.timestamp),
                    oov: ev.is_some_and(|e| g.encoder.tokenizer().item_index(&e.item).is_none()),
                    missing: false,
                }
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn explain_response(
    g: &Generation,
    features: &UserFeatures,
    ex: profiled_model::Explanation,
    target: Option<pb::ExplainTarget>,
    groups_only: bool,
    top_n: usize,
    queue_us: u64,
    compute_us: u64,
) -> pb::ExplainResponse {
    let table = token_table(g, features, &ex);
    let total: f64 = ex.tokens.iter().map(|t| t.value.abs()).sum();
    let tokens = if groups_only {
        Vec::new()
    } else {
        ex.tokens
            .iter()
            .take(top_n)
            .map(|t| pb::TokenContribution {
                token: table.get(t.position).cloned(),
                value: t.value,
                share: if total > 0.0 {
                    t.value.abs() / total
                } else {
                    0.0
                },
            })
            .collect()
    };
    let groups = ex
        .groups
        .iter()
        .map(|gr| pb::GroupContribution {
            group: convert::group(gr.group) as i32,
            value: gr.value,
            share: gr.share,
            tokens: gr.tokens as u32,
        })
        .collect();
    let layers = ex
        .layers
        .iter()
        .map(|l| pb::LayerAttention {
            layer: l.layer as u32,
            heads: l
                .heads
                .iter()
                .enumerate()
                .map(|(h, m)| pb::HeadAttention {
                    head: h as u32,
                    mass: m.clone(),
                })
                .collect(),
            head_mean: l.mean.clone(),
        })
        .collect();
    pb::ExplainResponse {
        model: Some(model_ref(g)),
        method: match ex.method {
            Method::Occlusion => pb::ExplainMethod::Occlusion,
            Method::AttentionRollout => pb::ExplainMethod::AttentionRollout,
            Method::Attention => pb::ExplainMethod::Attention,
        } as i32,
        target: Some(target.unwrap_or(pb::ExplainTarget {
            kind: Some(pb::explain_target::Kind::Profile(pb::ProfileTarget {})),
        })),
        value_kind: match ex.method {
            Method::Occlusion => pb::ValueKind::ScoreDrop,
            _ => pb::ValueKind::AttentionMass,
        } as i32,
        base_score: ex.score,
        groups,
        tokens,
        token_table: table,
        layers,
        forward_passes: ex.variants as u32,
        cache_hit: false,
        queue_us,
        compute_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn key(seed: &foldhash::quality::RandomState, model: &str, g: u64, f: &[u8]) -> CacheKey {
        CacheKey::new(seed, Arc::from(model), g, f.into())
    }

    #[test]
    fn cache_keys_hash_once_and_compare_in_full() {
        let seed = foldhash::quality::RandomState::default();
        let table = foldhash::fast::RandomState::default();
        let a = key(&seed, "m", 3, b"features-a");
        let b = key(&seed, "m", 3, b"features-a");
        // Equal keys: equal, and equal hashes through the table's hasher.
        assert_eq!(a, b);
        assert_eq!(table.hash_one(&a), table.hash_one(&b));
        // Any differing part makes them unequal.
        for other in [
            key(&seed, "m", 3, b"features-b"),
            key(&seed, "m", 4, b"features-a"),
            key(&seed, "n", 3, b"features-a"),
            key(&seed, "m", 3, b"features-a\0"),
        ] {
            assert_ne!(a, other);
        }
        // Equality never rests on the stored hash alone: same hash, other
        // features → unequal.
        let mut forged = key(&seed, "m", 3, b"features-z");
        forged.hash = a.hash;
        assert_ne!(a, forged);
        assert_eq!(table.hash_one(&a), table.hash_one(&forged));
        // The hash covers every part (no accidental constant).
        assert_ne!(a.hash, key(&seed, "m", 3, b"features-b").hash);
        assert_ne!(a.hash, key(&seed, "m", 4, b"features-a").hash);
        assert_ne!(a.hash, key(&seed, "n", 3, b"features-a").hash);
    }
}
