//! Metric handles of the per-call metrics, cached per thread. Looking a
//! labelled metric up in the recorder hashes the whole key and allocates each
//! label value on every call; a cached handle costs a small map probe and an
//! `Arc` clone. Keys are the generation id (one model version as loaded), so
//! a swap starts new series without touching the old ones.

use std::cell::RefCell;
use std::collections::HashMap;

use metrics::{Counter, Histogram};
use profiled_proto::v1 as pb;

/// Entries per thread before the map is cleared (one entry per RPC and
/// generation, so this is reached only after thousands of swaps).
const MAX_ENTRIES: usize = 4096;

type Map<V> = HashMap<(&'static str, u64), V, foldhash::fast::RandomState>;

thread_local! {
    static HISTOGRAMS: RefCell<Map<Histogram>> = RefCell::new(Map::default());
    static COUNTERS: RefCell<Map<Counter>> = RefCell::new(Map::default());
}

fn cached<V: Clone>(
    map: &'static std::thread::LocalKey<RefCell<Map<V>>>,
    key: (&'static str, u64),
    make: impl FnOnce() -> V,
) -> V {
    map.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(v) = m.get(&key) {
            return v.clone();
        }
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.entry(key).or_insert_with(make).clone()
    })
}

/// `profiled_request_seconds{protocol="grpc", rpc, model, version, code="OK"}` of a call that
/// `answered` (a response's `ModelRef`).
pub fn request_ok(rpc: &'static str, answered: &pb::ModelRef) -> Histogram {
    cached(&HISTOGRAMS, (rpc, answered.generation_id), || {
        metrics::histogram!("profiled_request_seconds",
            "protocol" => "grpc",
            "rpc" => rpc,
            "model" => answered.name.clone(),
            "version" => answered.version.to_string(),
            "code" => "OK")
    })
}

/// `profiled_cache_hits_total{model}` or `profiled_cache_misses_total{model}`
/// of a lookup on generation `generation` of `model`.
pub fn cache_lookup(hit: bool, generation: u64, model: &str) -> Counter {
    let name = if hit {
        "profiled_cache_hits_total"
    } else {
        "profiled_cache_misses_total"
    };
    cached(
        &COUNTERS,
        (name, generation),
        || metrics::counter!(name, "model" => model.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_cached_per_generation_and_bounded() {
        let a = pb::ModelRef {
            name: "m".into(),
            version: 1,
            generation_id: 7,
        };
        let _ = request_ok("Embed", &a);
        let _ = request_ok("Embed", &a);
        let _ = cache_lookup(true, 7, "m");
        let _ = cache_lookup(false, 7, "m");
        HISTOGRAMS.with(|m| assert_eq!(m.borrow().len(), 1));
        COUNTERS.with(|m| assert_eq!(m.borrow().len(), 2));
        for g in 0..(MAX_ENTRIES as u64 + 10) {
            let _ = cache_lookup(true, 1000 + g, "m");
        }
        COUNTERS.with(|m| assert!(m.borrow().len() <= MAX_ENTRIES));
    }
}
