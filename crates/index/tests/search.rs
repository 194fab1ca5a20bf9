//! Exact and filtered search against a brute force, on every ISA path;
//! every hit satisfies its filter (property test); lookalikes.
//!
//! Tolerance: scores within 1e-4 of the f64 brute force over the stored f16
//! vectors; ids must match except across near-ties (|Δscore| ≤ 2e-4), where
//! paths that sum in different orders may swap neighbours.

use std::path::Path;
use std::sync::Arc;

use profiled_index::{
    Condition, Filter, IndexBuilder, IndexFile, LocalBackend, SearchBackend, SearchParams,
    SearchPath, lookalike_by_ids, seed_centroid, synthetic,
};
use profiled_kernels::Isa;
use proptest::prelude::*;

const ROWS: usize = 3001;
const DIMS: usize = 24;
const TOL: f64 = 1e-4;

fn build(dir: &Path) -> anyhow::Result<Arc<IndexFile>> {
    let (x, labels) = synthetic::clustered(ROWS, DIMS, 12, 0.6, 3);
    let mut b = IndexBuilder::new(DIMS)?;
    for (r, v) in x.chunks_exact(DIMS).enumerate() {
        let row = b.push(&format!("u{r}"), v)?;
        b.add_attribute(row, "cluster", &format!("c{}", labels[r]))?;
        b.add_attribute(row, "age", ["18-24", "25-34", "35-44", "45+"][r % 4])?;
        if r % 7 == 0 {
            b.add_attribute(row, "tag", "vip")?;
        }
        if r % 5 == 0 {
            b.add_attribute(row, "tag", "new")?;
        }
    }
    let path = dir.join("users.index");
    b.write(&path)?;
    Ok(Arc::new(IndexFile::open(&path, DIMS)?))
}

fn brute(f: &IndexFile, q: &[f32], admit: impl Fn(u32) -> bool) -> Vec<(f64, u32)> {
    let mut v: Vec<(f64, u32)> = (0..f.len() as u32)
        .filter(|r| admit(*r))
        .map(|r| {
            let x = f.vector(r).unwrap_or_default();
            (x.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum(), r)
        })
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    v
}

fn assert_same(got: &[profiled_index::SearchHit], want: &[(f64, u32)], k: usize, what: &str) {
    assert_eq!(got.len(), k.min(want.len()), "{what}");
    for (i, h) in got.iter().enumerate() {
        assert!(
            (h.score as f64 - want[i].0).abs() <= TOL,
            "{what} rank {i}: {} vs {}",
            h.score,
            want[i].0
        );
        let near_tie = (i > 0 && want[i - 1].0 - want[i].0 <= 2.0 * TOL)
            || want
                .get(i + 1)
                .is_some_and(|n| want[i].0 - n.0 <= 2.0 * TOL);
        if !near_tie {
            assert_eq!(h.row, want[i].1, "{what} rank {i}");
        }
        assert_eq!(h.id, format!("u{}", h.row));
    }
}

fn queries(n: usize, seed: u64) -> Vec<f32> {
    synthetic::clustered(n, DIMS, 12, 0.6, seed).0
}

#[test]
fn exact_search_equals_brute_force_on_every_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let f = build(dir.path())?;
    let qs = queries(20, 11);
    for isa in Isa::supported() {
        let b = LocalBackend::new(f.clone()).with_isa(isa)?;
        for k in [1usize, 10, 100] {
            let params = SearchParams {
                k,
                exact: true,
                filter: Filter::none(),
            };
            let res = b.search(&qs, &params)?;
            assert_eq!(res.len(), 20);
            for (j, r) in res.iter().enumerate() {
                assert_eq!(r.path, SearchPath::ExactScan);
                let want = brute(&f, &qs[j * DIMS..(j + 1) * DIMS], |_| true);
                assert_same(&r.hits, &want, k, &format!("{isa} k={k} q={j}"));
            }
        }
    }
    Ok(())
}

fn filters() -> Vec<Filter> {
    let s = |v: &str| v.to_string();
    vec![
        Filter {
            conditions: vec![Condition::Equals {
                attribute: s("cluster"),
                value: s("c3"),
            }],
            ..Filter::none()
        },
        Filter {
            conditions: vec![
                Condition::In {
                    attribute: s("age"),
                    values: vec![s("18-24"), s("45+")],
                },
                Condition::NotIn {
                    attribute: s("tag"),
                    values: vec![s("vip")],
                },
            ],
            exclude_rows: vec![0, 4, 8, 12],
            ..Filter::none()
        },
        Filter {
            conditions: vec![Condition::Equals {
                attribute: s("tag"),
                value: s("vip"),
            }],
            deny_ids: vec![s("u7"), s("u14"), s("nobody")],
            ..Filter::none()
        },
        Filter {
            allow_ids: Some((0..300).map(|i| format!("u{}", i * 3)).collect()),
            ..Filter::none()
        },
        Filter {
            exclude_rows: (0..100).collect(),
            ..Filter::none()
        },
        Filter {
            conditions: vec![Condition::NotIn {
                attribute: s("age"),
                values: vec![s("18-24")],
            }],
            ..Filter::none()
        },
        Filter {
            conditions: vec![Condition::Equals {
                attribute: s("cluster"),
                value: s("no-such-value"),
            }],
            ..Filter::none()
        },
    ]
}

#[test]
fn filtered_exact_search_equals_brute_force_among_candidates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let f = build(dir.path())?;
    let qs = queries(5, 12);
    for isa in Isa::supported() {
        let b = LocalBackend::new(f.clone()).with_isa(isa)?;
        for (fi, filter) in filters().into_iter().enumerate() {
            let params = SearchParams {
                k: 10,
                exact: false,
                filter: filter.clone(),
            };
            for (j, r) in b.search(&qs, &params)?.iter().enumerate() {
                assert!(r.path.is_exact());
                let want = brute(&f, &qs[j * DIMS..(j + 1) * DIMS], |row| {
                    filter.matches(&f, row).unwrap_or(false)
                });
                assert_eq!(r.candidates, want.len(), "filter {fi}");
                assert_same(&r.hits, &want, 10, &format!("{isa} filter {fi} q {j}"));
            }
        }
    }
    Ok(())
}

#[test]
fn bad_requests_are_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let f = build(dir.path())?;
    let b = LocalBackend::new(f);
    let q = queries(1, 1);
    let ok = SearchParams {
        k: 10,
        exact: false,
        filter: Filter::none(),
    };
    assert!(b.search(&q[..DIMS - 1], &ok).is_err());
    assert!(b.search(&[], &ok).is_err());
    let mut nan = q.clone();
    nan[3] = f32::NAN;
    assert!(b.search(&nan, &ok).is_err());
    assert!(b.search(&q, &SearchParams { k: 0, ..ok.clone() }).is_err());
    assert!(
        b.search(
            &q,
            &SearchParams {
                k: 1_000_000,
                ..ok.clone()
            }
        )
        .is_err()
    );
    let unknown = SearchParams {
        filter: Filter {
            conditions: vec![Condition::Equals {
                attribute: "nope".into(),
                value: "x".into(),
            }],
            ..Filter::none()
        },
        ..ok
    };
    assert!(matches!(
        b.search(&q, &unknown),
        Err(profiled_index::Error::UnknownAttribute(_))
    ));
    Ok(())
}

#[test]
fn lookalikes_exclude_seeds_and_find_their_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let f = build(dir.path())?;
    let b = LocalBackend::new(f.clone());
    let c3 = f.postings("cluster", "c3")?.to_vec();
    let seeds: Vec<String> = c3.iter().take(5).map(|r| format!("u{r}")).collect();
    let seed_refs: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let params = SearchParams {
        k: 20,
        exact: false,
        filter: Filter::none(),
    };
    let r = lookalike_by_ids(&b, &seed_refs, &params)?;
    assert_eq!(r.hits.len(), 20);
    for h in &r.hits {
        assert!(!seeds.contains(&h.id), "seed {} returned", h.id);
    }
    let same = r
        .hits
        .iter()
        .filter(|h| c3.binary_search(&h.row).is_ok())
        .count();
    assert!(
        same >= 18,
        "only {same}/20 lookalikes share the seeds' cluster"
    );
    assert!(matches!(
        lookalike_by_ids(&b, &["nobody"], &params),
        Err(profiled_index::Error::UnknownId(_))
    ));
    // One user: itself excluded.
    let r = lookalike_by_ids(&b, &["u42"], &params)?;
    assert!(r.hits.iter().all(|h| h.id != "u42"));

    let c = seed_centroid(&[&[3.0, 0.0], &[0.0, 0.5]])?;
    assert!((c[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6 && (c[1] - c[0]).abs() < 1e-6);
    assert!(seed_centroid(&[]).is_err());
    assert!(seed_centroid(&[&[0.0, 0.0]]).is_err());
    assert!(seed_centroid(&[&[1.0, 0.0], &[-1.0, 0.0]]).is_err());
    Ok(())
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    let cond = prop_oneof![
        (0usize..14).prop_map(|c| Condition::Equals {
            attribute: "cluster".into(),
            value: format!("c{c}")
        }),
        proptest::collection::vec(
            prop_oneof![
                Just("18-24"),
                Just("25-34"),
                Just("35-44"),
                Just("45+"),
                Just("x")
            ],
            0..3
        )
        .prop_map(|v| Condition::In {
            attribute: "age".into(),
            values: v.into_iter().map(String::from).collect()
        }),
        proptest::collection::vec(prop_oneof![Just("vip"), Just("new"), Just("zzz")], 0..3)
            .prop_map(|v| Condition::NotIn {
                attribute: "tag".into(),
                values: v.into_iter().map(String::from).collect()
            }),
        prop_oneof![Just("vip"), Just("new")].prop_map(|v| Condition::Equals {
            attribute: "tag".into(),
            value: v.into()
        }),
    ];
    (
        proptest::collection::vec(cond, 0..3),
        proptest::option::of(proptest::collection::vec(0u32..3500, 0..400)),
        proptest::collection::vec(0u32..3500, 0..50),
        proptest::collection::vec(0u32..3500, 0..6000),
    )
        .prop_map(|(conditions, allow, deny, exclude_rows)| Filter {
            conditions,
            allow_ids: allow.map(|a| a.into_iter().map(|i| format!("u{i}")).collect()),
            deny_ids: deny.into_iter().map(|i| format!("u{i}")).collect(),
            exclude_rows,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_hit_satisfies_the_filter(filter in arb_filter(), k in 1usize..60, seed in 0u64..1000, exact in any::<bool>()) {
        // Build once per process: the index is deterministic.
        thread_local!(static F: std::cell::OnceCell<(tempfile::TempDir, Arc<IndexFile>)> = const { std::cell::OnceCell::new() });
        let f = F.with(|c| c.get_or_init(|| {
            let d = tempfile::tempdir().expect("tempdir");
            let f = build(d.path()).expect("build");
            (d, f)
        }).1.clone());
        let b = LocalBackend::new(f.clone());
        let q = queries(1, seed);
        let r = b.search(&q, &SearchParams { k, exact, filter: filter.clone() }).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let r = &r[0];
        for h in &r.hits {
            prop_assert!(filter.matches(&f, h.row).unwrap_or(false), "row {} violates {:?}", h.row, filter);
        }
        let want = brute(&f, &q, |row| filter.matches(&f, row).unwrap_or(false));
        prop_assert_eq!(r.candidates, want.len());
        assert_same(&r.hits, &want, k, "prop");
    }
}
