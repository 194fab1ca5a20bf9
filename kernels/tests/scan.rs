//! The blocked / row-major scans against an f64 brute force on every
//! instruction-set path this CPU supports.
//!
//! Tolerance: scores within `1e-4 · (1 + Σ|q_i·x_i|)` of the f64 reference;
//! ranks compared up to that tolerance (two rows whose true scores differ by
//! less may legitimately swap between paths), otherwise ids must match.

use profiled_kernels::scan::{self, Blocked, Hit, TopK};
use profiled_kernels::{Isa, f16};
use proptest::prelude::*;

struct Lcg(u64);

impl Lcg {
    fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn data(rows: usize, dims: usize, seed: u64) -> Vec<f32> {
    let mut g = Lcg(seed);
    (0..rows * dims)
        .map(|_| f16::from_f32(g.next_f32()).to_f32())
        .collect()
}

/// (score, row, magnitude) for every row, best first.
fn brute(x: &[f32], dims: usize, q: &[f32], rows: Option<&[u32]>) -> Vec<(f64, u32, f64)> {
    let n = x.len() / dims;
    let all: Vec<u32> = (0..n as u32).collect();
    let rows = rows.unwrap_or(&all);
    let mut v: Vec<(f64, u32, f64)> = rows
        .iter()
        .map(|&r| {
            let row = &x[r as usize * dims..(r as usize + 1) * dims];
            let s: f64 = row.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum();
            let m: f64 = row
                .iter()
                .zip(q)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            (s, r, m)
        })
        .collect();
    v.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    v
}

fn check(got: &[Hit], want: &[(f64, u32, f64)], k: usize, what: &str) {
    assert_eq!(got.len(), k.min(want.len()), "{what}: length");
    if got.is_empty() {
        return;
    }
    let by_row: std::collections::HashMap<u32, (f64, f64)> =
        want.iter().map(|w| (w.1, (w.0, w.2))).collect();
    let kth = want[got.len() - 1].0;
    for (i, h) in got.iter().enumerate() {
        let (truth, mag) = by_row[&h.row];
        let tol = 1e-4 * (1.0 + mag);
        assert!(
            (h.score as f64 - truth).abs() <= tol,
            "{what}: row {} score {} vs {truth}",
            h.row,
            h.score
        );
        assert!(
            (h.score as f64 - want[i].0).abs() <= tol,
            "{what}: rank {i} score {} vs {}",
            h.score,
            want[i].0
        );
        assert!(
            truth >= kth - tol,
            "{what}: row {} ({truth}) is below the k-th ({kth})",
            h.row
        );
        if i > 0 {
            assert!(got[i - 1].score >= h.score, "{what}: not sorted");
        }
    }
    // Ids must match exactly where the reference has no near-tie.
    for (i, (h, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * (1.0 + w.2);
        let clear_above = i == 0 || want[i - 1].0 - w.0 > 2.0 * tol;
        let clear_below = want.get(i + 1).is_none_or(|n| w.0 - n.0 > 2.0 * tol);
        if clear_above && clear_below {
            assert_eq!(h.row, w.1, "{what}: rank {i}");
        }
    }
}

fn run_case(isa: Isa, rows: usize, dims: usize, nq: usize, k: usize, seed: u64) {
    let x = data(rows, dims, seed);
    let qs = data(nq, dims, seed ^ 0xabcdef);
    let packed = scan::pack_blocked(&x, dims).expect("pack");
    let m = Blocked::new(&packed, dims, rows).expect("blocked");
    let xh: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
    let cand: Vec<u32> = (0..rows as u32)
        .filter(|r| (r * 7 + seed as u32) % 5 < 2)
        .collect();

    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    scan::scan(isa, &m, &qs, &mut tops).expect("scan");
    let mut ctops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    scan::scan_candidates_blocked(isa, &m, &cand, &qs, &mut ctops).expect("cand blocked");
    let mut rtops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    scan::scan_candidates_rows(isa, &xh, dims, &cand, &qs, &mut rtops).expect("cand rows");
    // The same candidates as a bitmap, with stray bits past the last row
    // (they must be ignored).
    let mut bits = vec![0u64; rows.div_ceil(64)];
    for &r in &cand {
        bits[r as usize / 64] |= 1 << (r % 64);
    }
    if let Some(last) = bits.last_mut()
        && !rows.is_multiple_of(64)
    {
        *last |= !0u64 << (rows % 64);
    }
    let mut btops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    scan::scan_bitmap(isa, &m, &bits, &qs, &mut btops).expect("bitmap");
    for j in 0..nq {
        let q = &qs[j * dims..(j + 1) * dims];
        let what = format!("{isa} rows={rows} dims={dims} nq={nq} k={k} q={j}");
        check(
            &tops[j].sorted(),
            &brute(&x, dims, q, None),
            k,
            &format!("{what} full"),
        );
        let want = brute(&x, dims, q, Some(&cand));
        check(
            &ctops[j].sorted(),
            &want,
            k,
            &format!("{what} cand-blocked"),
        );
        check(&rtops[j].sorted(), &want, k, &format!("{what} cand-rows"));
        check(&btops[j].sorted(), &want, k, &format!("{what} bitmap"));
        // Same arithmetic as the blocked candidate scan: identical hits.
        assert_eq!(
            btops[j].sorted(),
            ctops[j].sorted(),
            "{what} bitmap = cand-blocked"
        );
    }
}

#[test]
fn every_path_matches_brute_force_on_odd_shapes() {
    for isa in Isa::supported() {
        for &rows in &[0usize, 1, 15, 16, 17, 100, 1000] {
            for &dims in &[1usize, 3, 8, 16, 17, 33, 64, 100] {
                for &(nq, k) in &[
                    (1usize, 10usize),
                    (2, 1),
                    (3, 5),
                    (7, 10),
                    (16, 10),
                    (17, 3),
                    (1, 0),
                    (4, 2000),
                ] {
                    run_case(isa, rows, dims, nq, k, (rows * 131 + dims * 7 + nq) as u64);
                }
            }
        }
    }
}

#[test]
fn ties_go_to_the_lower_row_on_every_path() {
    // 40 identical rows: every path must return rows 0..k in order.
    let dims = 24;
    let x: Vec<f32> = (0..40 * dims)
        .map(|i| ((i % dims) as f32 / dims as f32) - 0.5)
        .collect();
    let packed = scan::pack_blocked(&x, dims).expect("pack");
    let m = Blocked::new(&packed, dims, 40).expect("blocked");
    let q: Vec<f32> = (0..dims).map(|i| i as f32 / 10.0).collect();
    for isa in Isa::supported() {
        let mut tops = vec![TopK::new(5)];
        scan::scan(isa, &m, &q, &mut tops).expect("scan");
        let rows: Vec<u32> = tops[0].sorted().iter().map(|h| h.row).collect();
        assert_eq!(rows, vec![0, 1, 2, 3, 4], "{isa}");
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let packed = scan::pack_blocked(&[0.5; 20 * 4], 4).expect("pack");
    assert!(Blocked::new(&packed, 4, 33).is_err());
    assert!(Blocked::new(&packed, 0, 20).is_err());
    let m = Blocked::new(&packed, 4, 20).expect("ok");
    let mut tops = vec![TopK::new(3)];
    assert!(scan::scan(Isa::Scalar, &m, &[1.0; 3], &mut tops).is_err());
    assert!(scan::scan_candidates_blocked(Isa::Scalar, &m, &[3, 2], &[1.0; 4], &mut tops).is_err());
    assert!(scan::scan_candidates_blocked(Isa::Scalar, &m, &[20], &[1.0; 4], &mut tops).is_err());
    let xh = vec![f16::ONE; 20 * 4];
    assert!(
        scan::scan_candidates_rows(Isa::Scalar, &xh, 4, &[1, 1], &[1.0; 4], &mut tops).is_err()
    );
    assert!(
        scan::scan_candidates_rows(Isa::Scalar, &xh[..7], 4, &[1], &[1.0; 4], &mut tops).is_err()
    );
    // 20 rows need exactly one bitmap word.
    assert!(scan::scan_bitmap(Isa::Scalar, &m, &[], &[1.0; 4], &mut tops).is_err());
    assert!(scan::scan_bitmap(Isa::Scalar, &m, &[1, 1], &[1.0; 4], &mut tops).is_err());
    assert!(scan::scan_bitmap(Isa::Scalar, &m, &[1], &[1.0; 3], &mut tops).is_err());
}

#[test]
fn nan_rows_are_never_returned() {
    let dims = 8;
    let mut x = data(50, dims, 9);
    for v in &mut x[8 * dims..9 * dims] {
        *v = f32::NAN;
    }
    let packed = scan::pack_blocked(&x, dims).expect("pack");
    let m = Blocked::new(&packed, dims, 50).expect("blocked");
    let q = vec![0.3; dims];
    for isa in Isa::supported() {
        let mut tops = vec![TopK::new(50)];
        scan::scan(isa, &m, &q, &mut tops).expect("scan");
        let hits = tops[0].sorted();
        assert_eq!(hits.len(), 49, "{isa}");
        assert!(
            hits.iter().all(|h| h.row != 8 && h.score.is_finite()),
            "{isa}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_shapes_match_brute_force(rows in 0usize..300, dims in 1usize..80, nq in 1usize..20, k in 0usize..40, seed in any::<u64>()) {
        for isa in Isa::supported() {
            run_case(isa, rows, dims, nq, k, seed);
        }
    }
}
