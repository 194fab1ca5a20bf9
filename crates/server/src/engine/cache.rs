//! The hot cache: [`CacheKey`] (model, generation id, canonical feature
//! bytes — compared in full), [`CacheUse`], the hit-first lookup and the
//! profile of one user through the cache and the batcher, with concurrent
//! misses of one key computed once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use profiled_model::UserFeatures;
use profiled_store::Generation;

use super::{Deadline, Engine, FeatureInput, remaining};
use crate::config::CacheConfig;
use crate::error::ApiError;

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
    /// `UserFeatures::canonical_bytes()` (from [`FeatureInput::cache_bytes`]).
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
    pub(crate) fn hit(vector: Arc<[f32]>) -> Profile {
        Profile {
            vector,
            cache_hit: true,
            queue_us: 0,
            compute_us: 0,
        }
    }

    /// A profile read, not computed (e.g. from the users index).
    pub(crate) fn stored(vector: Arc<[f32]>) -> Profile {
        Profile {
            vector,
            cache_hit: false,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheUse {
    /// Read, fill on miss.
    #[default]
    Use,
    /// Neither read nor write.
    Bypass,
    /// Recompute and overwrite.
    Refresh,
}

/// The moka table (off when `cache.enabled` is false) and the key seed.
#[derive(Debug)]
pub(crate) struct HotCache {
    table: Option<Cache<CacheKey, Arc<[f32]>, foldhash::fast::RandomState>>,
    key_seed: foldhash::quality::RandomState,
}

impl HotCache {
    pub(crate) fn new(cfg: &CacheConfig) -> HotCache {
        let table = cfg.enabled.then(|| {
            // Sized up front for the byte budget at ~1 KiB an entry (a
            // 50-event user's key plus its vector), so a filling cache does not
            // rehash its table on the request path; keys hashed with foldhash
            // (the default SipHash was a visible share of a hit's CPU).
            let entries = (cfg.max_bytes / 1024).min(1 << 20) as usize;
            Cache::builder()
                .max_capacity(cfg.max_bytes)
                .initial_capacity(entries)
                .weigher(|k: &CacheKey, v: &Arc<[f32]>| {
                    // Per-entry overhead beyond the key and vector bytes
                    // (table bucket, deque nodes, entry info, the key's own
                    // allocations): ≈ 235 bytes measured from RSS on a
                    // filled 256 MiB cache, rounded up.
                    let bytes = k.features.len() + k.model.len() + v.len() * 4 + 256;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(Duration::from_secs(cfg.ttl_secs.max(1)))
                .eviction_listener(|k: Arc<CacheKey>, _v, cause| {
                    if cause.was_evicted() {
                        metrics::counter!("profiled_cache_evictions_total", "model" => k.model.to_string())
                            .increment(1);
                    }
                })
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        HotCache {
            table,
            key_seed: foldhash::quality::RandomState::default(),
        }
    }
}

impl Engine {
    /// The cache key of `input` on `generation`; `None` when the cache is
    /// off, or for input that cannot be valid.
    pub fn cache_key(&self, generation: &Generation, input: &dyn FeatureInput) -> Option<CacheKey> {
        self.cache.table.as_ref()?;
        Some(CacheKey::new(
            &self.cache.key_seed,
            Arc::from(generation.model.as_str()),
            generation.id,
            input.cache_bytes()?.into_boxed_slice(),
        ))
    }

    /// The cache key of `input` under `mode`, and the cached profile when
    /// `mode` reads the cache and holds one (counted as a hit). A hit needs
    /// no conversion: only features that converted were ever cached, and the
    /// key holds all of them but the user id (checked here).
    pub(crate) async fn lookup(
        &self,
        generation: &Generation,
        input: &dyn FeatureInput,
        mode: CacheUse,
    ) -> (Option<CacheKey>, Option<Arc<[f32]>>) {
        let key = match mode {
            CacheUse::Bypass => None,
            CacheUse::Use | CacheUse::Refresh => self.cache_key(generation, input),
        };
        let hit = match (&key, &self.cache.table) {
            (Some(k), Some(table))
                if mode == CacheUse::Use
                    && input.user_id().len() <= self.cfg.limits.max_string_bytes =>
            {
                table.get(k).await
            }
            _ => None,
        };
        if hit.is_some() {
            crate::handles::cache_lookup(true, generation.id, &generation.model).increment(1);
        }
        (key, hit)
    }

    /// The profile of `input` on `generation`: a cache hit when `mode`
    /// allows one, else converted (errors under `path`) and computed through
    /// the cache and the batcher.
    pub async fn profile_of(
        &self,
        generation: &Arc<Generation>,
        input: &dyn FeatureInput,
        path: &str,
        mode: CacheUse,
        deadline: Deadline,
    ) -> Result<Profile, ApiError> {
        let (key, hit) = self.lookup(generation, input, mode).await;
        if let Some(v) = hit {
            return Ok(Profile::hit(v));
        }
        let features = input.to_features(path, generation, &self.cfg.limits)?;
        self.profile(generation, key, features, path.to_string(), mode, deadline)
            .await
    }

    /// Puts the profile of `input` (computed elsewhere, e.g. by Explain) in
    /// the cache per `mode`: USE fills an absent entry, REFRESH overwrites,
    /// BYPASS leaves the cache untouched.
    pub(crate) async fn fill(
        &self,
        generation: &Generation,
        input: &dyn FeatureInput,
        mode: CacheUse,
        vector: &[f32],
    ) {
        let Some(table) = &self.cache.table else {
            return;
        };
        if mode == CacheUse::Bypass || vector.len() != generation.dim() {
            return;
        }
        let Some(key) = self.cache_key(generation, input) else {
            return;
        };
        let vector: Arc<[f32]> = Arc::from(vector);
        if mode == CacheUse::Refresh {
            table.insert(key, vector).await;
        } else {
            let _ = table.entry(key).or_insert(vector).await;
        }
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
        deadline: Deadline,
    ) -> Result<Profile, ApiError> {
        let batcher = self.batcher(&generation.model)?;
        let model = generation.model.as_str();
        let (table, key) = match (&self.cache.table, mode, key) {
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
            table.insert(key, c.vector.clone()).await;
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
            let r = table
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
