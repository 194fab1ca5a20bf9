//! The live users index against a brute force over the current rows:
//! upserts (replacing base and delta rows), inserts, deletes, re-upserts,
//! filters over base and delta attributes, lookups by id, refused batches,
//! the merge (identical results before and after), concurrent searches
//! during updates and merges, and — with the `ann` feature — the HNSW
//! updated in place.
//!
//! Tolerance as in tests/search.rs: scores within 1e-4 of the f64 brute
//! force over the stored f16 values; ids must match except across
//! near-ties. Unfiltered exact searches are also compared bit for bit with
//! a fresh `LocalBackend` over the same rows in the same order (the same
//! kernel arithmetic must give the same floats).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use profiled_index::{
    Condition, Error, Filter, IndexBuilder, IndexFile, LiveConfig, LiveIndex, LiveOp, LiveRow,
    LiveUpdates, LocalBackend, SearchBackend, SearchHit, SearchParams, SearchPath, synthetic,
};
use profiled_kernels::{Isa, f16};
use proptest::prelude::*;

const DIMS: usize = 16;
const TOL: f64 = 1e-4;

type Attrs = BTreeMap<String, Vec<String>>;
/// Per filter, per query: (id, score) of each hit.
type Results = Vec<Vec<Vec<(String, f32)>>>;

fn attrs(pairs: &[(&str, &[&str])]) -> Attrs {
    pairs
        .iter()
        .map(|(a, vs)| {
            let mut v: Vec<String> = vs.iter().map(|s| s.to_string()).collect();
            v.sort();
            v.dedup();
            (a.to_string(), v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The attributes of base row / new user `r`.
fn attrs_of(r: usize, salt: usize) -> Attrs {
    let cluster = format!("c{}", (r + salt) % 6);
    let seen: Vec<String> = (0..(r + salt) % 4)
        .map(|i| format!("i{}", (r * 7 + i * 3 + salt) % 20))
        .collect();
    let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
    let mut tags: Vec<&str> = Vec::new();
    if (r + salt).is_multiple_of(7) {
        tags.push("vip");
    }
    if (r + salt).is_multiple_of(5) {
        tags.push("new");
    }
    attrs(&[
        ("cluster", &[cluster.as_str()]),
        ("seen_items", &seen),
        ("tag", &tags),
    ])
}

/// f16-rounded, as the index stores it.
fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| f16::from_f32(*x).to_f32()).collect()
}

#[derive(Clone, Debug)]
struct RefRow {
    id: String,
    vector: Vec<f32>,
    attrs: Attrs,
    live: bool,
}

/// The reference: every row ever added, in live-row order (base rows, then
/// upserts in the order applied), with a live flag.
#[derive(Clone, Debug, Default)]
struct Reference {
    rows: Vec<RefRow>,
    current: HashMap<String, usize>,
}

impl Reference {
    fn push(&mut self, id: &str, vector: &[f32], attrs: Attrs) {
        if let Some(i) = self.current.remove(id) {
            self.rows[i].live = false;
        }
        self.current.insert(id.to_string(), self.rows.len());
        self.rows.push(RefRow {
            id: id.to_string(),
            vector: rounded(vector),
            attrs,
            live: true,
        });
    }

    fn apply(&mut self, ops: &[LiveOp]) {
        for op in ops {
            match op {
                LiveOp::Upsert(r) => self.push(&r.id, &r.vector, r.attributes.clone()),
                LiveOp::Delete(id) => {
                    if let Some(i) = self.current.remove(id) {
                        self.rows[i].live = false;
                    }
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.current.len()
    }

    fn admits(&self, f: &Filter, r: &RefRow) -> bool {
        let has = |a: &str, v: &str| r.attrs.get(a).is_some_and(|vs| vs.iter().any(|x| x == v));
        for c in &f.conditions {
            let ok = match c {
                Condition::Equals { attribute, value } => has(attribute, value),
                Condition::In { attribute, values } => values.iter().any(|v| has(attribute, v)),
                Condition::NotIn { attribute, values } => !values.iter().any(|v| has(attribute, v)),
            };
            if !ok {
                return false;
            }
        }
        if let Some(a) = &f.allow_ids
            && !a.contains(&r.id)
        {
            return false;
        }
        !f.deny_ids.contains(&r.id)
    }

    /// (score, order, id, magnitude) of the admitted live rows, best first.
    fn brute(&self, q: &[f32], f: &Filter) -> Vec<(f64, usize, String)> {
        let mut v: Vec<(f64, usize, String)> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.live && self.admits(f, r))
            .map(|(i, r)| {
                let s: f64 = r
                    .vector
                    .iter()
                    .zip(q)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                (s, i, r.id.clone())
            })
            .collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v
    }

    /// A fresh index file of the live rows in order.
    fn write(&self, path: &Path) -> anyhow::Result<Arc<IndexFile>> {
        let mut b = IndexBuilder::new(DIMS)?;
        for r in self.rows.iter().filter(|r| r.live) {
            let row = b.push(&r.id, &r.vector)?;
            for (a, vs) in &r.attrs {
                for v in vs {
                    b.add_attribute(row, a, v)?;
                }
            }
        }
        b.write(path)?;
        Ok(Arc::new(IndexFile::open(path, DIMS)?))
    }
}

fn assert_same(got: &[SearchHit], want: &[(f64, usize, String)], k: usize, what: &str) {
    assert_eq!(got.len(), k.min(want.len()), "{what}: hit count");
    for (i, h) in got.iter().enumerate() {
        assert!(
            (h.score as f64 - want[i].0).abs() <= TOL,
            "{what} rank {i}: score {} vs {} ({} vs {})",
            h.score,
            want[i].0,
            h.id,
            want[i].2
        );
        let near_tie = (i > 0 && want[i - 1].0 - want[i].0 <= 2.0 * TOL)
            || want
                .get(i + 1)
                .is_some_and(|n| want[i].0 - n.0 <= 2.0 * TOL);
        if !near_tie {
            assert_eq!(h.id, want[i].2, "{what} rank {i}");
        }
    }
    let ids: HashSet<&str> = got.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "{what}: an id twice");
}

/// A base file of `rows` clustered users `u0…` with attributes, and its
/// reference.
fn base(dir: &Path, rows: usize, seed: u64) -> anyhow::Result<(std::path::PathBuf, Reference)> {
    let (x, _) = synthetic::clustered(rows, DIMS, 8, 0.7, seed);
    let mut reference = Reference::default();
    let mut b = IndexBuilder::new(DIMS)?;
    for (r, v) in x.chunks_exact(DIMS).enumerate() {
        let id = format!("u{r}");
        let a = attrs_of(r, 0);
        let row = b.push(&id, v)?;
        for (name, vs) in &a {
            for val in vs {
                b.add_attribute(row, name, val)?;
            }
        }
        reference.push(&id, v, a);
    }
    let path = dir.join("users.index");
    b.write(&path)?;
    Ok((path, reference))
}

fn vector(seed: u64) -> Vec<f32> {
    synthetic::clustered(1, DIMS, 8, 0.7, seed).0
}

fn upsert(id: &str, seed: u64, salt: usize) -> LiveOp {
    LiveOp::Upsert(LiveRow {
        id: id.to_string(),
        vector: vector(seed),
        attributes: attrs_of(seed as usize, salt),
    })
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Filters over base-only, delta-only and shared attributes and ids.
fn filters() -> Vec<Filter> {
    vec![
        Filter::none(),
        Filter {
            conditions: vec![Condition::Equals {
                attribute: s("cluster"),
                value: s("c3"),
            }],
            ..Filter::none()
        },
        Filter {
            conditions: vec![Condition::In {
                attribute: s("seen_items"),
                values: vec![s("i1"), s("i4"), s("i19")],
            }],
            ..Filter::none()
        },
        Filter {
            conditions: vec![Condition::NotIn {
                attribute: s("tag"),
                values: vec![s("vip"), s("new")],
            }],
            ..Filter::none()
        },
        Filter {
            conditions: vec![
                Condition::Equals {
                    attribute: s("tag"),
                    value: s("new"),
                },
                Condition::NotIn {
                    attribute: s("seen_items"),
                    values: vec![s("i2")],
                },
            ],
            deny_ids: (0..400).map(|i| format!("u{i}")).collect(),
            ..Filter::none()
        },
        Filter {
            allow_ids: Some(
                (0..3000)
                    .step_by(3)
                    .map(|i| format!("u{i}"))
                    .chain((0..300).map(|i| format!("n{i}")))
                    .collect(),
            ),
            deny_ids: vec![s("n1"), s("u3"), s("nobody")],
            ..Filter::none()
        },
        // Only delta rows have the attribute "fresh".
        Filter {
            conditions: vec![Condition::Equals {
                attribute: s("fresh"),
                value: s("yes"),
            }],
            ..Filter::none()
        },
        Filter {
            conditions: vec![Condition::NotIn {
                attribute: s("fresh"),
                values: vec![s("yes")],
            }],
            ..Filter::none()
        },
    ]
}

fn check_all(
    live: &LiveIndex,
    reference: &Reference,
    queries: &[f32],
    filters: &[Filter],
    what: &str,
) -> anyhow::Result<()> {
    assert_eq!(live.len(), reference.len(), "{what}: len");
    for (fi, f) in filters.iter().enumerate() {
        // An attribute no row ever had is refused.
        let unknown = f.conditions.iter().any(|c| {
            let (Condition::Equals { attribute, .. }
            | Condition::In { attribute, .. }
            | Condition::NotIn { attribute, .. }) = c;
            !reference
                .rows
                .iter()
                .any(|r| r.attrs.contains_key(attribute))
        });
        if unknown {
            let p = SearchParams {
                k: 1,
                exact: true,
                filter: f.clone(),
            };
            assert!(
                matches!(live.search(queries, &p), Err(Error::UnknownAttribute(_))),
                "{what} filter {fi}"
            );
            continue;
        }
        for k in [1usize, 10, 100] {
            let p = SearchParams {
                k,
                exact: true,
                filter: f.clone(),
            };
            let res = live.search(queries, &p)?;
            for (j, r) in res.iter().enumerate() {
                let q = &queries[j * DIMS..(j + 1) * DIMS];
                let want = reference.brute(q, f);
                assert!(r.path.is_exact());
                assert_eq!(r.candidates, want.len(), "{what} filter {fi}: candidates");
                assert_same(
                    &r.hits,
                    &want,
                    k,
                    &format!("{what} filter {fi} k={k} q={j}"),
                );
            }
        }
    }
    Ok(())
}

/// Unfiltered exact results equal, float for float, those of a fresh file
/// of the same rows in the same order.
fn check_bitwise(
    live: &LiveIndex,
    reference: &Reference,
    dir: &Path,
    name: &str,
    isa: Isa,
    queries: &[f32],
) -> anyhow::Result<()> {
    let fresh = LocalBackend::new(reference.write(&dir.join(name))?).with_isa(isa)?;
    for k in [1usize, 10, 200] {
        let p = SearchParams {
            k,
            exact: true,
            filter: Filter::none(),
        };
        let a = live.search(queries, &p)?;
        let b = fresh.search(queries, &p)?;
        for (x, y) in a.iter().zip(&b) {
            let x: Vec<(&str, f32)> = x.hits.iter().map(|h| (h.id.as_str(), h.score)).collect();
            let y: Vec<(&str, f32)> = y.hits.iter().map(|h| (h.id.as_str(), h.score)).collect();
            assert_eq!(x, y, "{name} {isa} k={k}");
        }
    }
    Ok(())
}

/// A scripted history: replace base users, insert new ones (with the
/// delta-only attribute), delete base and new users, re-upsert deleted
/// ones, and the same id several times in one batch.
fn script() -> Vec<Vec<LiveOp>> {
    let mut batches = Vec::new();
    batches.push(
        (0..100)
            .map(|i| upsert(&format!("u{}", i * 7), 1000 + i, 1))
            .collect(),
    );
    batches.push(
        (0..200)
            .map(|i| {
                let mut op = upsert(&format!("n{i}"), 5000 + i, 2);
                if let LiveOp::Upsert(r) = &mut op
                    && i % 3 == 0
                {
                    r.attributes.insert(s("fresh"), vec![s("yes")]);
                }
                op
            })
            .collect(),
    );
    batches.push(
        (0..50)
            .map(|i| LiveOp::Delete(format!("u{}", i * 11 + 1)))
            .chain((0..20).map(|i| LiveOp::Delete(format!("n{}", i * 5))))
            .chain(std::iter::once(LiveOp::Delete(s("nobody"))))
            .collect(),
    );
    batches.push(
        (0..10)
            .map(|i| upsert(&format!("u{}", i * 11 + 1), 9000 + i, 3))
            .chain((0..10).map(|i| upsert(&format!("n{}", i * 5), 9100 + i, 4)))
            .collect(),
    );
    // The same ids twice, and an upsert then a delete, in one batch.
    batches.push(vec![
        upsert("u7", 9200, 5),
        upsert("n50", 9201, 5),
        upsert("u7", 9202, 6),
        upsert("x1", 9203, 6),
        LiveOp::Delete(s("x1")),
        upsert("n50", 9204, 7),
        LiveOp::Delete(s("u2")),
        upsert("u2", 9205, 7),
    ]);
    // Many small batches (chunk concatenation).
    for b in 0..40u64 {
        batches.push(
            (0..(1 + b % 7))
                .map(|i| upsert(&format!("m{}", (b * 3 + i) % 60), 20_000 + b * 10 + i, 8))
                .collect(),
        );
    }
    batches
}

#[test]
fn exact_search_is_a_scan_of_the_current_rows_on_every_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (path, reference0) = base(dir.path(), 3000, 5)?;
    let queries = synthetic::held_out_queries(3000, 6, DIMS, 8, 0.7, 5);
    let filters = filters();
    for isa in Isa::supported() {
        let live = LiveIndex::open(
            &path,
            DIMS,
            LiveConfig {
                isa,
                max_chunk_rows: 64,
                ..LiveConfig::default()
            },
        )?;
        let mut reference = reference0.clone();
        check_all(
            &live,
            &reference,
            &queries,
            &filters[..6],
            &format!("{isa} base"),
        )?;
        for (i, batch) in script().into_iter().enumerate() {
            reference.apply(&batch);
            live.apply(batch)?;
            if i < 5 || i % 10 == 0 {
                check_all(
                    &live,
                    &reference,
                    &queries,
                    &filters,
                    &format!("{isa} batch {i}"),
                )?;
            }
        }
        check_all(&live, &reference, &queries, &filters, &format!("{isa} end"))?;
        check_bitwise(
            &live,
            &reference,
            dir.path(),
            &format!("fresh-{isa}.index"),
            isa,
            &queries,
        )?;
        let st = live.stats();
        assert!(st.delta_rows > 0 && st.masked_base_rows > 0, "{st:?}");
        assert!(
            st.chunks > 1,
            "small chunks are concatenated up to 64 rows: {st:?}"
        );
    }
    Ok(())
}

#[test]
fn lookups_follow_the_updates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (path, _) = base(dir.path(), 500, 9)?;
    let live = LiveIndex::open(&path, DIMS, LiveConfig::default())?;
    assert!(!live.has_attribute("fresh"));
    let v = vector(77);
    let applied = live.apply(vec![
        LiveOp::Upsert(LiveRow {
            id: s("u5"),
            vector: v.clone(),
            attributes: attrs(&[("seen_items", &["i9", "i3"]), ("fresh", &["yes"])]),
        }),
        upsert("brand-new", 78, 0),
        LiveOp::Delete(s("u6")),
        LiveOp::Delete(s("ghost")),
    ])?;
    assert_eq!((applied.upserted, applied.deleted), (2, 1));
    assert!(applied.ann_errors.is_empty());
    assert_eq!(live.len(), 500);
    let (_, got) = live
        .vector_of("u5")?
        .ok_or_else(|| anyhow::anyhow!("u5 gone"))?;
    assert_eq!(got, rounded(&v));
    assert!(live.vector_of("brand-new")?.is_some());
    assert!(live.vector_of("u6")?.is_none());
    assert!(live.attributes_of("u6")?.is_none());
    assert_eq!(
        live.values_of("u5", "seen_items")?,
        Some(vec![s("i3"), s("i9")])
    );
    assert_eq!(live.values_of("u5", "cluster")?, Some(vec![]));
    // A base row keeps its attributes.
    assert_eq!(live.attributes_of("u7")?, Some(attrs_of(7, 0)));
    assert!(live.has_attribute("fresh") && live.has_attribute("cluster"));
    assert!(live.attribute_names().contains(&s("fresh")));
    // Filters on an attribute nobody has are refused; on a delta-only one they work.
    let p = |attribute: &str| SearchParams {
        k: 5,
        exact: true,
        filter: Filter {
            conditions: vec![Condition::Equals {
                attribute: s(attribute),
                value: s("yes"),
            }],
            ..Filter::none()
        },
    };
    assert!(matches!(
        live.search(&vector(1), &p("nope")),
        Err(Error::UnknownAttribute(_))
    ));
    let r = live.search(&vector(1), &p("fresh"))?;
    let ids: Vec<&str> = r[0].hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, vec!["u5"]);
    // Delete then re-insert: back, with the new vector.
    live.apply(vec![LiveOp::Delete(s("u5"))])?;
    assert!(live.vector_of("u5")?.is_none());
    live.apply(vec![upsert("u5", 79, 0)])?;
    assert_eq!(
        live.vector_of("u5")?.map(|x| x.1),
        Some(rounded(&vector(79)))
    );
    assert!(live.live().is_some());
    Ok(())
}

#[test]
fn a_bad_batch_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (path, _) = base(dir.path(), 300, 2)?;
    let live = LiveIndex::open(&path, DIMS, LiveConfig::default())?;
    let q = vector(3);
    let p = SearchParams {
        k: 20,
        exact: true,
        filter: Filter::none(),
    };
    let before = live.search(&q, &p)?;
    let seq = live.stats().seq;
    let bad: [Vec<LiveOp>; 4] = [
        vec![
            upsert("u1", 1, 0),
            LiveOp::Upsert(LiveRow {
                id: s("u2"),
                vector: vec![0.5; DIMS - 1],
                attributes: Attrs::new(),
            }),
        ],
        vec![
            LiveOp::Delete(s("u3")),
            LiveOp::Upsert(LiveRow {
                id: s("u4"),
                vector: {
                    let mut v = vector(4);
                    v[3] = f32::NAN;
                    v
                },
                attributes: Attrs::new(),
            }),
        ],
        vec![LiveOp::Upsert(LiveRow {
            id: s("u5"),
            vector: vec![1e6; DIMS],
            attributes: Attrs::new(),
        })],
        vec![LiveOp::Delete(String::new())],
    ];
    for b in bad {
        assert!(matches!(live.apply(b), Err(Error::InvalidArgument(_))));
    }
    assert_eq!(live.stats().seq, seq);
    assert_eq!(live.len(), 300);
    assert_eq!(live.search(&q, &p)?, before);
    Ok(())
}

#[test]
fn merge_gives_identical_results_and_updates_continue() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let merges = tempfile::tempdir()?;
    let (path, mut reference) = base(dir.path(), 3000, 7)?;
    let live = LiveIndex::open(
        &path,
        DIMS,
        LiveConfig {
            merge_dir: Some(merges.path().to_path_buf()),
            min_merge_rows: usize::MAX,
            ..LiveConfig::default()
        },
    )?;
    for batch in script() {
        reference.apply(&batch);
        live.apply(batch)?;
    }
    let queries = synthetic::held_out_queries(3000, 5, DIMS, 8, 0.7, 7);
    let filters = filters();
    let run = |live: &LiveIndex| -> anyhow::Result<Results> {
        let mut out = Vec::new();
        for f in &filters {
            let p = SearchParams {
                k: 50,
                exact: true,
                filter: f.clone(),
            };
            out.push(
                live.search(&queries, &p)?
                    .into_iter()
                    .map(|r| r.hits.into_iter().map(|h| (h.id, h.score)).collect())
                    .collect(),
            );
        }
        Ok(out)
    };
    let before = run(&live)?;
    let report = live
        .merge_now()?
        .ok_or_else(|| anyhow::anyhow!("no merge ran"))?;
    assert_eq!(report.rows, reference.len());
    assert!(report.path.exists());
    let st = live.stats();
    assert_eq!(
        (st.base_rows, st.delta_rows, st.masked_base_rows),
        (reference.len(), 0, 0)
    );
    assert_eq!(st.merges, 1);
    let after = run(&live)?;
    // Unfiltered: the same floats. Filtered: the same rows and scores (the
    // gather and block kernels may round differently).
    assert_eq!(
        before[0], after[0],
        "unfiltered results changed by the merge"
    );
    for (fi, (b, a)) in before.iter().zip(&after).enumerate() {
        for (x, y) in b.iter().zip(a) {
            assert_eq!(x.len(), y.len(), "filter {fi}");
            for (i, (h, g)) in x.iter().zip(y).enumerate() {
                assert!((h.1 - g.1).abs() <= 1e-5, "filter {fi} rank {i}");
                let tie = x
                    .iter()
                    .zip(x.iter().skip(1))
                    .any(|(p, n)| (p.0 == h.0 || n.0 == h.0) && (p.1 - n.1).abs() <= 2e-5);
                if !tie {
                    assert_eq!(h.0, g.0, "filter {fi} rank {i}");
                }
            }
        }
    }
    check_all(&live, &reference, &queries, &filters, "after merge")?;
    // Updates keep working on the merged base, and a second merge removes
    // the first merged file once nothing uses it.
    let more: Vec<LiveOp> = (0..30)
        .map(|i| upsert(&format!("u{}", i * 13), 40_000 + i, 9))
        .chain((0..5).map(|i| LiveOp::Delete(format!("n{}", i * 7 + 1))))
        .collect();
    reference.apply(&more);
    live.apply(more)?;
    check_all(
        &live,
        &reference,
        &queries,
        &filters,
        "after merge + updates",
    )?;
    let second = live
        .merge_now()?
        .ok_or_else(|| anyhow::anyhow!("no merge ran"))?;
    assert!(
        !report.path.exists(),
        "the superseded merged file is removed"
    );
    check_all(
        &live,
        &reference,
        &queries,
        &filters,
        "after the second merge",
    )?;
    drop(live);
    assert!(
        !second.path.exists(),
        "the last merged file goes with the index"
    );
    assert!(path.exists(), "the generation's file is never removed");
    Ok(())
}

#[test]
fn merge_needs_a_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (path, _) = base(dir.path(), 100, 1)?;
    let live = LiveIndex::open(&path, DIMS, LiveConfig::default())?;
    assert!(matches!(live.merge_now(), Err(Error::InvalidArgument(_))));
    assert!(live.stats().last_merge_error.is_some());
    // And the index still takes updates.
    live.apply(vec![upsert("u1", 5, 0)])?;
    Ok(())
}

/// Searches run while a writer applies batches and merges run in the
/// background: no search fails or waits for the writer's lock, no hit is a
/// user deleted before the search started, and the end state equals the
/// brute force.
#[test]
fn searches_during_updates_and_merges() -> anyhow::Result<()> {
    use std::sync::RwLock;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir()?;
    let merges = tempfile::tempdir()?;
    let (path, mut reference) = base(dir.path(), 2000, 11)?;
    let live = LiveIndex::open(
        &path,
        DIMS,
        LiveConfig {
            merge_dir: Some(merges.path().to_path_buf()),
            merge_share: 0.05,
            min_merge_rows: 100,
            ..LiveConfig::default()
        },
    )?;
    let deleted: RwLock<HashSet<String>> = RwLock::new(HashSet::new());
    let done = AtomicBool::new(false);
    let searches = AtomicUsize::new(0);
    let queries = synthetic::held_out_queries(2000, 8, DIMS, 8, 0.7, 11);
    std::thread::scope(|sc| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for t in 0..2 {
            let (live, deleted, done, searches, queries) =
                (&live, &deleted, &done, &searches, &queries);
            handles.push(sc.spawn(move || -> anyhow::Result<()> {
                let mut i = t;
                while !done.load(Ordering::Acquire) {
                    let gone: HashSet<String> = deleted
                        .read()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .clone();
                    let q = &queries[(i % 8) * DIMS..(i % 8 + 1) * DIMS];
                    let r = live.search(
                        q,
                        &SearchParams {
                            k: 30,
                            exact: i % 2 == 0,
                            filter: Filter::none(),
                        },
                    )?;
                    let hits = &r[0].hits;
                    anyhow::ensure!(hits.len() == 30, "{} hits", hits.len());
                    let ids: HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                    anyhow::ensure!(ids.len() == 30, "duplicate ids");
                    for h in hits {
                        anyhow::ensure!(!gone.contains(&h.id), "{} was deleted", h.id);
                    }
                    anyhow::ensure!(hits.windows(2).all(|w| w[0].score >= w[1].score));
                    searches.fetch_add(1, Ordering::Relaxed);
                    i += 2;
                }
                Ok(())
            }));
        }
        let mut next_deleted = 0usize;
        for b in 0..60u64 {
            let mut ops: Vec<LiveOp> = (0..20)
                .map(|i| {
                    upsert(
                        &format!("w{}", (b * 20 + i) % 700),
                        60_000 + b * 100 + i,
                        10,
                    )
                })
                .collect();
            // Deleted ids are never re-inserted.
            let del: Vec<String> = (0..3)
                .map(|_| {
                    next_deleted += 1;
                    format!("u{}", next_deleted * 3)
                })
                .collect();
            ops.extend(del.iter().map(|d| LiveOp::Delete(d.clone())));
            reference.apply(&ops);
            live.apply(ops)?;
            deleted
                .write()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .extend(del);
        }
        live.wait_for_merge();
        done.store(true, Ordering::Release);
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("search thread panicked"))??;
        }
        Ok(())
    })?;
    let st = live.stats();
    assert!(st.merges >= 1, "no background merge ran: {st:?}");
    assert!(st.last_merge_error.is_none(), "{st:?}");
    assert!(searches.load(std::sync::atomic::Ordering::Relaxed) > 0);
    check_all(
        &live,
        &reference,
        &queries,
        &filters()[..6],
        "after the run",
    )?;
    Ok(())
}

fn arb_ops(n_base: usize) -> impl Strategy<Value = Vec<Vec<LiveOp>>> {
    let op = (0usize..10, 0usize..(n_base + 40), any::<u64>(), 0usize..3).prop_map(
        move |(kind, who, seed, salt)| {
            let id = if who < n_base {
                format!("u{who}")
            } else {
                format!("n{}", who - n_base)
            };
            if kind < 3 {
                LiveOp::Delete(id)
            } else {
                let mut v = vector(seed % 10_000);
                if kind == 9 {
                    // Exact duplicates of another row's vector: ties.
                    v = vector(seed % 3);
                }
                LiveOp::Upsert(LiveRow {
                    id,
                    vector: v,
                    attributes: attrs_of(seed as usize % 50, salt),
                })
            }
        },
    );
    proptest::collection::vec(proptest::collection::vec(op, 1..25), 1..8)
}

fn arb_filter(n_base: usize) -> impl Strategy<Value = Filter> {
    let cond = prop_oneof![
        (0usize..7).prop_map(|c| Condition::Equals {
            attribute: s("cluster"),
            value: format!("c{c}")
        }),
        proptest::collection::vec(0usize..22, 0..3).prop_map(|v| Condition::In {
            attribute: s("seen_items"),
            values: v.into_iter().map(|i| format!("i{i}")).collect()
        }),
        proptest::collection::vec(prop_oneof![Just("vip"), Just("new"), Just("zzz")], 0..3)
            .prop_map(|v| Condition::NotIn {
                attribute: s("tag"),
                values: v.into_iter().map(String::from).collect()
            }),
    ];
    let id = move |i: usize| {
        if i < n_base {
            format!("u{i}")
        } else {
            format!("n{}", i - n_base)
        }
    };
    (
        proptest::collection::vec(cond, 0..3),
        proptest::option::of(proptest::collection::vec(0usize..(n_base + 45), 0..80)),
        proptest::collection::vec(0usize..(n_base + 45), 0..20),
    )
        .prop_map(move |(conditions, allow, deny)| Filter {
            conditions,
            allow_ids: allow.map(|a| a.into_iter().map(id).collect()),
            deny_ids: deny.into_iter().map(id).collect(),
            exclude_rows: Vec::new(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn random_histories_match_the_brute_force_before_and_after_a_merge(
        batches in arb_ops(200),
        filter in arb_filter(200),
        k in 1usize..40,
        seed in 0u64..1000,
    ) {
        let run = || -> anyhow::Result<()> {
            let dir = tempfile::tempdir()?;
            let (path, mut reference) = base(dir.path(), 200, 3)?;
            let live = LiveIndex::open(&path, DIMS, LiveConfig {
                merge_dir: Some(dir.path().to_path_buf()),
                min_merge_rows: usize::MAX,
                max_chunk_rows: 32,
                ..LiveConfig::default()
            })?;
            for b in batches.clone() {
                reference.apply(&b);
                live.apply(b)?;
            }
            let q = vector(seed + 100_000);
            // The random filter, and no filter at all.
            let mut before = Vec::new();
            for f in [filter.clone(), Filter::none()] {
                let p = SearchParams { k, exact: true, filter: f.clone() };
                let want = reference.brute(&q, &f);
                let r = live.search(&q, &p)?.remove(0);
                assert_eq!(r.candidates, want.len());
                assert_same(&r.hits, &want, k, "before the merge");
                before.push((p, want, r));
            }
            live.merge_now()?;
            for (i, (p, want, b)) in before.iter().enumerate() {
                let after = live.search(&q, p)?.remove(0);
                assert_same(&after.hits, want, k, "after the merge");
                if i == 1 {
                    // Unfiltered: the same floats in the same order.
                    assert_eq!(b.hits.iter().map(|h| (&h.id, h.score)).collect::<Vec<_>>(),
                        after.hits.iter().map(|h| (&h.id, h.score)).collect::<Vec<_>>());
                }
            }
            assert_eq!(live.len(), reference.len());
            Ok(())
        };
        run().map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

#[cfg(feature = "ann")]
mod ann {
    use profiled_index::PlannerConfig;
    use profiled_index::ann::{self as hnsw, AnnParams};

    use super::*;

    /// A clustered base with its HNSW sidecar.
    fn base_with_graph(dir: &Path, rows: usize) -> anyhow::Result<(std::path::PathBuf, Reference)> {
        let (path, reference) = base(dir, rows, 21)?;
        let f = IndexFile::open(&path, DIMS)?;
        hnsw::build(&f, &hnsw::sidecar_path(&path), &AnnParams::default(), 2)?;
        Ok((path, reference))
    }

    fn ann_only() -> PlannerConfig {
        PlannerConfig {
            max_exact_elements: 0,
            max_exact_fraction: 0.0,
            ..PlannerConfig::default()
        }
    }

    fn recall(
        live: &LiveIndex,
        reference: &Reference,
        queries: &[f32],
        k: usize,
    ) -> anyhow::Result<f64> {
        let mut found = 0;
        let mut total = 0;
        for q in queries.chunks_exact(DIMS) {
            let r = live.search(
                q,
                &SearchParams {
                    k,
                    exact: false,
                    filter: Filter::none(),
                },
            )?;
            let want: HashSet<String> = reference
                .brute(q, &Filter::none())
                .into_iter()
                .take(k)
                .map(|w| w.2)
                .collect();
            found += r[0].hits.iter().filter(|h| want.contains(&h.id)).count();
            total += k;
        }
        Ok(found as f64 / total as f64)
    }

    #[test]
    fn the_graph_follows_updates_and_merges() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let merges = tempfile::tempdir()?;
        let rows = 6000;
        let (path, mut reference) = base_with_graph(dir.path(), rows)?;
        let live = LiveIndex::open(
            &path,
            DIMS,
            LiveConfig {
                planner: ann_only(),
                merge_dir: Some(merges.path().to_path_buf()),
                min_merge_rows: usize::MAX,
                ..LiveConfig::default()
            },
        )?;
        assert!(live.has_ann());
        let queries = synthetic::held_out_queries(rows, 50, DIMS, 8, 0.7, 21);
        let r0 = recall(&live, &reference, &queries, 10)?;
        // 20 % of the users change, 5 % are new, 3 % go.
        let mut ops: Vec<LiveOp> = (0..1200)
            .map(|i| upsert(&format!("u{}", i * 5), 70_000 + i, 1))
            .collect();
        ops.extend((0..300).map(|i| upsert(&format!("n{i}"), 80_000 + i, 2)));
        let gone: Vec<String> = (0..180).map(|i| format!("u{}", i * 5 + 2)).collect();
        ops.extend(gone.iter().map(|g| LiveOp::Delete(g.clone())));
        for chunk in ops.chunks(100) {
            reference.apply(chunk);
            let a = live.apply(chunk.to_vec())?;
            assert!(a.ann_errors.is_empty(), "{:?}", a.ann_errors);
        }
        let r1 = recall(&live, &reference, &queries, 10)?;
        assert!(r1 >= 0.9, "recall@10 after updates {r1} (before {r0})");
        let mut ann_answers = 0;
        for i in (0..300).step_by(7) {
            // A new user's own vector finds that user first.
            let v = live
                .vector_of(&format!("n{i}"))?
                .ok_or_else(|| anyhow::anyhow!("n{i}"))?
                .1;
            let r = live.search(
                &v,
                &SearchParams {
                    k: 5,
                    exact: false,
                    filter: Filter::none(),
                },
            )?;
            assert_eq!(r[0].hits[0].id, format!("n{i}"));
            ann_answers += usize::from(r[0].path == SearchPath::Ann);
        }
        assert!(ann_answers > 0, "the graph never answered");
        // Deleted users never come back, on any path.
        let gone: HashSet<String> = gone.into_iter().collect();
        for q in queries.chunks_exact(DIMS) {
            let r = live.search(
                q,
                &SearchParams {
                    k: 100,
                    exact: false,
                    filter: Filter::none(),
                },
            )?;
            assert!(r[0].hits.iter().all(|h| !gone.contains(&h.id)));
        }
        // A filter over delta attributes with the graph.
        let f = Filter {
            conditions: vec![Condition::Equals {
                attribute: s("cluster"),
                value: s("c2"),
            }],
            ..Filter::none()
        };
        for q in queries.chunks_exact(DIMS).take(10) {
            let r = live.search(
                q,
                &SearchParams {
                    k: 10,
                    exact: false,
                    filter: f.clone(),
                },
            )?;
            let want: HashSet<String> = reference.brute(q, &f).into_iter().map(|w| w.2).collect();
            assert!(
                r[0].hits.iter().all(|h| want.contains(&h.id)),
                "a hit outside the filter"
            );
        }
        live.merge_now()?;
        let r2 = recall(&live, &reference, &queries, 10)?;
        assert!(r2 >= 0.9, "recall@10 after the merge {r2}");
        for i in (0..300).step_by(11) {
            let v = live
                .vector_of(&format!("n{i}"))?
                .ok_or_else(|| anyhow::anyhow!("n{i}"))?
                .1;
            let r = live.search(
                &v,
                &SearchParams {
                    k: 5,
                    exact: false,
                    filter: Filter::none(),
                },
            )?;
            assert_eq!(r[0].hits[0].id, format!("n{i}"), "after the merge");
        }
        // And the renumbered graph keeps taking updates.
        let more: Vec<LiveOp> = (0..200)
            .map(|i| upsert(&format!("z{i}"), 90_000 + i, 3))
            .collect();
        reference.apply(&more);
        let a = live.apply(more)?;
        assert!(a.ann_errors.is_empty(), "{:?}", a.ann_errors);
        let r3 = recall(&live, &reference, &queries, 10)?;
        assert!(r3 >= 0.9, "recall@10 after the merge and more updates {r3}");
        Ok(())
    }
}

#[test]
fn the_local_factory_opens_users_indexes_live_when_asked() -> anyhow::Result<()> {
    use profiled_index::{BackendFactory, IndexRole, LocalFactory, OpenRequest, USERS_INDEX};
    let dir = tempfile::tempdir()?;
    let (path, _) = base(dir.path(), 50, 4)?;
    assert_eq!(path.file_name().and_then(|n| n.to_str()), Some(USERS_INDEX));
    std::fs::copy(&path, dir.path().join("items.index"))?;
    let open = |f: &LocalFactory, role| {
        f.open(OpenRequest {
            dir: dir.path(),
            role,
            dims: DIMS,
            titles: None,
        })
    };
    let plain = LocalFactory::default();
    let live = LocalFactory {
        live: Some(LiveConfig::default()),
        ..LocalFactory::default()
    };
    let users = open(&live, IndexRole::Users)?.ok_or_else(|| anyhow::anyhow!("no users"))?;
    assert_eq!(users.name(), "live");
    let updates = users.live().ok_or_else(|| anyhow::anyhow!("not live"))?;
    updates.apply(vec![upsert("fresh", 1, 0)])?;
    assert!(users.vector_of("fresh")?.is_some());
    let items = open(&live, IndexRole::Items)?.ok_or_else(|| anyhow::anyhow!("no items"))?;
    assert!(items.live().is_none(), "items stay immutable");
    let users = open(&plain, IndexRole::Users)?.ok_or_else(|| anyhow::anyhow!("no users"))?;
    assert!(users.live().is_none());
    Ok(())
}
