//! Tests of the evaluation protocol: metrics, masking, k-core, split, baselines.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use profiled_train::data::{Dataset, Interaction, Item, User};
use profiled_train::eval::baselines::{ItemKnn, MostPop, Transition};
use profiled_train::eval::{
    Event, ProtocolConfig, Scorer, Split, Stage, evaluate, k_core, metrics_at, rank_of,
};
use proptest::prelude::*;

fn dataset(n_users: usize, n_items: usize, events: &[(u32, u32, f32, i64)]) -> Dataset {
    Dataset {
        name: "t".into(),
        users: (0..n_users)
            .map(|u| User {
                id: format!("u{u}"),
                fields: BTreeMap::new(),
            })
            .collect(),
        items: (0..n_items)
            .map(|i| Item {
                id: format!("i{i}"),
                title: None,
                genres: vec![],
                fields: BTreeMap::new(),
            })
            .collect(),
        interactions: events
            .iter()
            .map(|&(user, item, r, timestamp)| Interaction {
                user,
                item,
                rating: Some(r),
                timestamp,
            })
            .collect(),
    }
}

fn no_filter() -> ProtocolConfig {
    ProtocolConfig {
        min_rating: None,
        core: 0,
        k: 10,
    }
}

#[test]
fn rank_counts_ties_against_the_target() {
    let scores = [0.5, 0.9, 0.5, 0.1];
    let all = [0, 1, 2, 3];
    assert_eq!(rank_of(0, &all, &scores, |_| false), 3);
    assert_eq!(rank_of(1, &all, &scores, |_| false), 1);
    assert_eq!(rank_of(3, &all, &scores, |_| false), 4);
    // Excluding a better item lifts the target.
    assert_eq!(rank_of(0, &all, &scores, |c| c == 1), 2);
    // The target itself is never excluded.
    assert_eq!(rank_of(0, &all, &scores, |_| true), 1);
    // A constant scorer ranks the target last.
    assert_eq!(rank_of(2, &all, &[1.0; 4], |_| false), 4);
    // Candidates outside the list do not count.
    assert_eq!(rank_of(0, &[0, 2, 3], &scores, |_| false), 2);
    // NaN target ranks last; NaN others never beat it.
    assert_eq!(rank_of(0, &all, &[f32::NAN, 0.0, 1.0, 2.0], |_| false), 4);
    assert_eq!(
        rank_of(0, &all, &[0.5, f32::NAN, f32::NAN, 0.0], |_| false),
        1
    );
}

#[test]
fn metric_values() {
    let m = metrics_at(1, 10);
    assert_eq!((m.hr, m.ndcg, m.mrr), (1.0, 1.0, 1.0));
    let m = metrics_at(3, 10);
    assert_eq!(m.hr, 1.0);
    assert!((m.ndcg - 0.5).abs() < 1e-12);
    assert!((m.mrr - 1.0 / 3.0).abs() < 1e-12);
    let m = metrics_at(10, 10);
    assert!((m.ndcg - 1.0 / 11f64.log2()).abs() < 1e-12);
    let m = metrics_at(11, 10);
    assert_eq!((m.hr, m.ndcg, m.mrr), (0.0, 0.0, 0.0));
}

/// Scores fixed per item.
struct Fixed(Vec<f32>);
impl Scorer for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn score_all(&self, _u: u32, _h: &[Event], out: &mut [f32]) -> profiled_train::Result<()> {
        out.copy_from_slice(&self.0);
        Ok(())
    }
}

#[test]
fn masking_removes_history_but_never_the_target() {
    // One user: items 0, 1, 0 → test target is item 0, which is also in the history.
    // A second user: 2, 3, 1 → target 1, history {2, 3}.
    let ds = dataset(
        2,
        4,
        &[
            (0, 0, 5.0, 1),
            (0, 1, 5.0, 2),
            (0, 0, 5.0, 3),
            (1, 2, 5.0, 1),
            (1, 3, 5.0, 2),
            (1, 1, 5.0, 3),
        ],
    );
    let split = Split::new(&ds, no_filter()).unwrap();
    // Item 3 best, then 2, then 1, then 0.
    let r = evaluate(&split, 4, &Fixed(vec![0.1, 0.2, 0.3, 0.4]), Stage::Test).unwrap();
    // User 0: unmasked rank 4; masked: item 1 (history) removed, item 0 kept → rank 3.
    // User 1: unmasked rank 3; masked: 2 and 3 removed → rank 1.
    let nd = |r: usize| 1.0 / ((r + 1) as f64).log2();
    assert_eq!(r.users, 2);
    assert!((r.unmasked.ndcg - (nd(4) + nd(3)) / 2.0).abs() < 1e-12);
    assert!((r.masked.ndcg - (nd(3) + nd(1)) / 2.0).abs() < 1e-12);
    assert!((r.masked.mrr - (1.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
    // Validation stage: user 0 target 1 with history {0}; user 1 target 3 with history {2}.
    let r = evaluate(&split, 4, &Fixed(vec![0.1, 0.2, 0.3, 0.4]), Stage::Valid).unwrap();
    assert!((r.unmasked.mrr - (1.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
    // (masking item 0 / item 2 removes nothing above the targets)
    assert!((r.masked.mrr - (1.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
}

#[test]
fn leave_one_out_split() {
    // user 0: ratings filter drops the 2.0; ties at t=5 stay in file order.
    let ds = dataset(
        3,
        6,
        &[
            (0, 3, 4.0, 5),
            (1, 0, 5.0, 1),
            (0, 1, 4.0, 5),
            (0, 2, 2.0, 9),
            (0, 0, 3.0, 1),
            (0, 4, 5.0, 7),
            (1, 1, 5.0, 2),
            (2, 5, 5.0, 1),
            (0, 5, 3.0, 6),
        ],
    );
    let cfg = ProtocolConfig {
        min_rating: Some(3.0),
        core: 0,
        k: 10,
    };
    let split = Split::new(&ds, cfg).unwrap();
    assert_eq!(split.stats.dropped_low_rating, 1);
    assert_eq!(split.stats.users_too_short, 2);
    assert_eq!(split.users.len(), 1);
    let u = &split.users[0];
    let items: Vec<u32> = u.events.iter().map(|e| e.item).collect();
    assert_eq!(items, [0, 3, 1, 5, 4]);
    let train: Vec<u32> = u.train().iter().map(|e| e.item).collect();
    assert_eq!(train, [0, 3, 1]);
    assert_eq!(u.valid().unwrap().item, 5);
    assert_eq!(u.test().unwrap().item, 4);
    assert_eq!(u.test().unwrap().interaction, 5);
    assert_eq!(split.test_interactions(), vec![5]);
    let (h, t) = u.stage(Stage::Test).unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(t.item, 4);
    // Candidates: items of every kept user (too-short users included).
    assert_eq!(split.items, vec![0, 1, 3, 4, 5]);

    // Serialisable, and the record protects against test leaks.
    let json = serde_json::to_string(&split).unwrap();
    let back: Split = serde_json::from_str(&json).unwrap();
    assert_eq!(back, split);
    let rec = split.record(&ds);
    assert_eq!(rec.events, 5);
    split.check_model(&ds, Some(&rec), false).unwrap();
    assert!(split.check_model(&ds, Some(&rec), true).is_err());
    assert!(split.check_model(&ds, None, false).is_err());
    let mut other = ds.clone();
    other.interactions[5].timestamp = 8;
    let split2 = Split::new(&other, cfg).unwrap();
    assert_ne!(split2.test_fingerprint(&other), rec.test_fingerprint);
    assert!(split2.check_model(&other, Some(&rec), false).is_err());
    // Fingerprints are stable.
    assert_eq!(Split::new(&ds, cfg).unwrap().record(&ds), rec);
}

#[test]
fn empty_after_filtering_is_an_error() {
    let ds = dataset(1, 2, &[(0, 0, 1.0, 1), (0, 1, 5.0, 2)]);
    let err = Split::new(&ds, ProtocolConfig::default()).unwrap_err();
    assert!(
        matches!(err, profiled_train::Error::EmptyDataset(_)),
        "{err}"
    );
}

/// Reference k-core by peeling one node at a time.
fn peel(ds: &Dataset, core: usize) -> Vec<u32> {
    let mut alive_u = vec![true; ds.users.len()];
    let mut alive_i = vec![true; ds.items.len()];
    loop {
        let live = |x: &Interaction| alive_u[x.user as usize] && alive_i[x.item as usize];
        let mut du = vec![0usize; ds.users.len()];
        let mut di = vec![0usize; ds.items.len()];
        for x in ds.interactions.iter().filter(|x| live(x)) {
            du[x.user as usize] += 1;
            di[x.item as usize] += 1;
        }
        if let Some(u) = (0..du.len()).find(|&u| alive_u[u] && du[u] < core) {
            alive_u[u] = false;
            continue;
        }
        if let Some(i) = (0..di.len()).find(|&i| alive_i[i] && di[i] < core) {
            alive_i[i] = false;
            continue;
        }
        return (0..ds.interactions.len() as u32)
            .filter(|&j| live(&ds.interactions[j as usize]))
            .collect();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn k_core_is_the_maximal_fixed_point(
        events in prop::collection::vec((0u32..12, 0u32..12, 0i64..50), 0..250),
        core in 1usize..6,
    ) {
        let ev: Vec<(u32, u32, f32, i64)> = events.iter().map(|&(u, i, t)| (u, i, 4.0, t)).collect();
        let ds = dataset(12, 12, &ev);
        let all: Vec<u32> = (0..ds.interactions.len() as u32).collect();
        let (kept, _) = k_core(&ds, &all, core);
        // Every survivor has ≥ core on both sides.
        let mut du = [0usize; 12];
        let mut di = [0usize; 12];
        for &j in &kept {
            du[ds.interactions[j as usize].user as usize] += 1;
            di[ds.interactions[j as usize].item as usize] += 1;
        }
        prop_assert!(du.iter().all(|&c| c == 0 || c >= core));
        prop_assert!(di.iter().all(|&c| c == 0 || c >= core));
        // Fixed point.
        prop_assert_eq!(&k_core(&ds, &kept, core).0, &kept);
        // Maximal (equals peeling).
        prop_assert_eq!(&kept, &peel(&ds, core));
        // Split sequences are chronological with ties in file order.
        if let Ok(split) = Split::new(&ds, ProtocolConfig { min_rating: None, core, k: 10 }) {
            for u in &split.users {
                prop_assert!(u.events.len() >= 3);
                for w in u.events.windows(2) {
                    prop_assert!((w[0].timestamp, w[0].interaction) < (w[1].timestamp, w[1].interaction));
                }
            }
            let n: usize = split.users.iter().map(|u| u.events.len()).sum();
            let short: usize = du.iter().filter(|&&c| c > 0 && c < 3).sum();
            prop_assert_eq!(n + short, kept.len());
        }
    }
}

/// Random scores from a fixed seed (the "random" baseline).
struct Random;
impl Scorer for Random {
    fn name(&self) -> &str {
        "random"
    }
    fn score_all(&self, user: u32, h: &[Event], out: &mut [f32]) -> profiled_train::Result<()> {
        let mut x = (user as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ h.len() as u64;
        for o in out.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *o = (x >> 40) as f32;
        }
        Ok(())
    }
}

/// Tiny generator with strong first-order transitions: after item i comes
/// item (7i + 3) mod n with probability 0.8, else a uniformly random item.
fn markov_dataset(users: usize, items: usize, len: usize, seed: u64) -> Dataset {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ev = Vec::new();
    for u in 0..users {
        let mut cur = (next() % items as u64) as u32;
        for t in 0..len {
            ev.push((u as u32, cur, 5.0, t as i64));
            cur = if next() % 10 < 8 {
                (7 * cur + 3) % items as u32
            } else {
                (next() % items as u64) as u32
            };
        }
    }
    dataset(users, items, &ev)
}

#[test]
fn markov_beats_random_on_strong_transitions() {
    let ds = markov_dataset(150, 60, 25, 42);
    let split = Split::new(
        &ds,
        ProtocolConfig {
            min_rating: Some(3.0),
            core: 5,
            k: 10,
        },
    )
    .unwrap();
    let n = ds.items.len();
    let rnd = evaluate(&split, n, &Random, Stage::Test).unwrap();
    let pop = evaluate(
        &split,
        n,
        &MostPop::fit(&split, n, Stage::Test),
        Stage::Test,
    )
    .unwrap();
    let tr = evaluate(
        &split,
        n,
        &Transition::fit(&split, n, Stage::Test),
        Stage::Test,
    )
    .unwrap();
    assert!(tr.masked.ndcg > 0.4, "transition {:?}", tr.masked);
    assert!(
        tr.masked.ndcg > 3.0 * rnd.masked.ndcg.max(pop.masked.ndcg),
        "{tr:?} {rnd:?} {pop:?}"
    );
    assert!(tr.unmasked.hr > 0.6, "{tr:?}");
}

#[test]
fn baselines_beat_random_on_the_synthetic_generator() {
    use profiled_train::synthetic::{SyntheticConfig, generate};
    let ds = generate(&SyntheticConfig::small(3));
    let split = Split::new(&ds, ProtocolConfig::default()).unwrap();
    let n = ds.items.len();
    let rnd = evaluate(&split, n, &Random, Stage::Test).unwrap();
    for s in profiled_train::eval::baselines::all(&split, n, Stage::Test) {
        let r = evaluate(&split, n, s.as_ref(), Stage::Test).unwrap();
        assert!(
            r.masked.ndcg > rnd.masked.ndcg,
            "{} {:?} vs random {:?}",
            r.name,
            r.masked,
            rnd.masked
        );
    }
    let knn = evaluate(
        &split,
        n,
        &ItemKnn::fit(&split, n, Stage::Test),
        Stage::Test,
    )
    .unwrap();
    assert!(knn.masked.hr > 0.0);
}

#[test]
fn baselines_never_fit_on_targets() {
    // Item 2 only ever appears as a test target: no baseline may prefer it.
    let ds = dataset(
        2,
        3,
        &[
            (0, 0, 5.0, 1),
            (0, 1, 5.0, 2),
            (0, 2, 5.0, 3),
            (1, 0, 5.0, 1),
            (1, 1, 5.0, 2),
            (1, 2, 5.0, 3),
        ],
    );
    let split = Split::new(&ds, no_filter()).unwrap();
    let mut out = vec![0f32; 3];
    for s in profiled_train::eval::baselines::all(&split, 3, Stage::Test) {
        let (h, _) = split.users[0].stage(Stage::Test).unwrap();
        s.score_all(0, h, &mut out).unwrap();
        assert!(
            out[2] <= out[0] && out[2] <= out[1],
            "{} {:?}",
            s.name(),
            out
        );
    }
}

proptest! {
    #[test]
    fn rank_matches_a_sort_with_pessimistic_ties(
        scores in prop::collection::vec(0u8..6, 1..40),
        target_pick in 0usize..1000,
        mask in prop::collection::vec(any::<bool>(), 40),
    ) {
        let scores: Vec<f32> = scores.iter().map(|&s| s as f32).collect();
        let n = scores.len();
        let target = (target_pick % n) as u32;
        let cands: Vec<u32> = (0..n as u32).collect();
        // Sort candidates (minus masked, never the target) by score descending,
        // placing the target after every equal-scoring item.
        let mut order: Vec<u32> = cands
            .iter()
            .copied()
            .filter(|&c| c == target || !mask[c as usize])
            .collect();
        order.sort_by(|&a, &b| {
            scores[b as usize]
                .partial_cmp(&scores[a as usize])
                .unwrap()
                .then((a == target).cmp(&(b == target)))
        });
        let expected = order.iter().position(|&c| c == target).unwrap() + 1;
        prop_assert_eq!(rank_of(target, &cands, &scores, |c| mask[c as usize]), expected);
    }
}
