//! Property tests of the SIMD primitives on every dispatch path this CPU
//! supports (`Isa::supported()`, iterated inside each test; the
//! `PROFILED_KERNELS` variable plays no part), against references written
//! here that accumulate in f64.
//!
//! # Tolerances
//!
//! `u = 2⁻²⁴` (unit roundoff of f32), `n` = vector length. The bounds are
//! rigorous worst-case bounds of the summation orders the paths use (plain
//! sequential sum on the scalar path; several SIMD accumulators plus a
//! reduction tree elsewhere), so the tests cannot be flaky:
//!
//! | primitive | tolerance (absolute error vs the f64 reference) |
//! |---|---|
//! | `f16_to_f32`, `f32_to_f16` | bit-exact with `half` (NaN: stays NaN, sign kept) — exhaustive over all 65536 f16 |
//! | `dot_f32`, `dot_f16`, `dot_f16_rows(_multi)` | `(n + 10)·u·Σ|aᵢbᵢ|` |
//! | `axpy_f32`, `axpy_f16` | `2u·(|yᵢ| + |α·xᵢ|)` |
//! | `l2_normalize` | output `((n+10)/2 + 4)·u·|refᵢ|`; returned norm `((n+10)/2 + 2)·u·norm` |
//! | `exp_inplace` | `2e-7·ref + 2⁻¹⁴⁹` (measured max relative error ≈ 7.6e-8 AVX2/AVX-512, 9.7e-8 portable, printed by the test) |
//! | `softmax_row` | `(2·(range + 4) + n + 12)·u·pᵢ`, range = max − min of the row |
//! | `layer_norm` | `c·|γᵢ|·(A/σ + 1 + |x̂ᵢ|) + 2u·|βᵢ|`, `c = (n+16)·u`, `A = max|x|` |
//! | `gelu` | `(8 + 8·|t|)·u·|ref| + 1e-36`, `t = 2·√(2/π)·(x + 0.044715x³)`: `t` computed in f32 (rounded constants, up to 5 roundings without FMA) has `|δt| ≲ 6u·|t|`, which `sigmoid(t) ≈ eᵗ` (t ≪ 0) turns into relative error |
//!
//! Special values: NaN in a dot → NaN; `inf·0` → NaN; a NaN in one row of a
//! row scan affects only that row; softmax of an all `−inf` row → zeros, with
//! a `+inf` or NaN → all NaN; `l2_normalize` of zeros → unchanged, of a NaN
//! vector → NaN; `exp(−inf) = 0`, `exp(+inf) = +inf`; `gelu(+inf) = +inf`,
//! `gelu(−inf) = NaN`.

use profiled_kernels::{Isa, KernelError, activation, convert, f16, vector};
use proptest::prelude::*;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn paths() -> Vec<Isa> {
    Isa::supported()
}

/// `cases` per property, unless `PROPTEST_CASES` asks for more (soak runs).
fn cfg(cases: u32) -> ProptestConfig {
    let env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: env.unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

/// Odd lengths 0..=300 mostly, sometimes larger.
fn len() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..=300, 1 => 301usize..=2000]
}

fn vecf(n: usize, lim: f32) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-lim..lim, n)
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn ref_dot(a: &[f64], b: &[f32]) -> (f64, f64) {
    let mut s = 0.0;
    let mut abs = 0.0;
    for (x, y) in a.iter().zip(b) {
        let p = x * *y as f64;
        s += p;
        abs += p.abs();
    }
    (s, abs)
}

fn dot_tol(n: usize, abs: f64) -> f64 {
    (n as f64 + 10.0) * U * abs
}

// ------------------------------------------------------------- conversion

fn same_f32(a: f32, b: f32) -> bool {
    if a.is_nan() || b.is_nan() {
        a.is_nan() && b.is_nan() && a.is_sign_negative() == b.is_sign_negative()
    } else {
        a.to_bits() == b.to_bits()
    }
}

fn same_f16(a: f16, b: f16) -> bool {
    if a.is_nan() || b.is_nan() {
        a.is_nan() && b.is_nan() && a.is_sign_negative() == b.is_sign_negative()
    } else {
        a.to_bits() == b.to_bits()
    }
}

#[test]
fn f16_to_f32_exhaustive_all_paths() {
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    for isa in paths() {
        let mut out = vec![0.0f32; all.len()];
        convert::f16_to_f32(isa, &all, &mut out).unwrap();
        for (h, f) in all.iter().zip(&out) {
            assert!(
                same_f32(h.to_f32(), *f),
                "{isa}: {:#06x} -> {f:?}, half says {:?}",
                h.to_bits(),
                h.to_f32()
            );
        }
        // Back again: every non-NaN f16 round-trips bit-exactly.
        let mut back = vec![f16::ZERO; all.len()];
        convert::f32_to_f16(isa, &out, &mut back).unwrap();
        for (h, b) in all.iter().zip(&back) {
            assert!(
                same_f16(*h, *b),
                "{isa}: round trip {:#06x} -> {:#06x}",
                h.to_bits(),
                b.to_bits()
            );
        }
    }
}

#[test]
fn f32_to_f16_ties_boundaries_and_sweep_all_paths() {
    // Midpoints between consecutive f16 (exact ties: round to even), one
    // f32 ulp either side, plus a deterministic sweep of f32 bit patterns.
    let mut src = Vec::new();
    for bits in 0..0x7c00u16 {
        let a = f16::from_bits(bits).to_f32() as f64;
        let b = f16::from_bits(bits + 1).to_f32() as f64;
        let mid = ((a + b) / 2.0) as f32;
        for v in [
            mid,
            f32::from_bits(mid.to_bits() + 1),
            f32::from_bits(mid.to_bits().saturating_sub(1)),
        ] {
            src.push(v);
            src.push(-v);
        }
    }
    let mut x: u32 = 0x1234_5678;
    for _ in 0..400_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        src.push(f32::from_bits(x));
    }
    src.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xff80_2001),
        65504.0,
        65519.99,
        65520.0,
        65536.0,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-8,
        2.98e-8,
        5.9604645e-8,
        -6.1e-5,
    ]);
    for isa in paths() {
        for off in [0usize, 1, 3] {
            let s = &src[off..];
            let mut out = vec![f16::ZERO; s.len()];
            convert::f32_to_f16(isa, s, &mut out).unwrap();
            for (v, h) in s.iter().zip(&out) {
                assert!(
                    same_f16(f16::from_f32(*v), *h),
                    "{isa}: {v:e} ({:#010x}) -> {:#06x}, half says {:#06x}",
                    v.to_bits(),
                    h.to_bits(),
                    f16::from_f32(*v).to_bits()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(cfg(128))]

    #[test]
    fn conversions_odd_lengths(n in 0usize..=300, off in 0usize..4, seed in any::<u64>()) {
        let mut x = seed | 1;
        let bits: Vec<u16> = (0..n + off).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u16 }).collect();
        let h: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let h = &h[off..];
        for isa in paths() {
            let mut f = vec![0.0f32; n + 1];
            f[n] = 42.0;
            convert::f16_to_f32(isa, h, &mut f[..n]).unwrap();
            prop_assert_eq!(f[n], 42.0, "wrote past the end");
            for (a, b) in h.iter().zip(&f) {
                prop_assert!(same_f32(a.to_f32(), *b));
            }
            let mut back = vec![f16::from_f32(7.0); n + 1];
            convert::f32_to_f16(isa, &f[..n], &mut back[..n]).unwrap();
            prop_assert_eq!(back[n], f16::from_f32(7.0), "wrote past the end");
            for (a, b) in h.iter().zip(&back) {
                prop_assert!(same_f16(*a, *b));
            }
        }
    }
}

#[test]
fn length_mismatches_are_errors() {
    for isa in Isa::ALL {
        let mut o = [0.0f32; 3];
        let mut h = [f16::ZERO; 3];
        assert!(matches!(
            convert::f16_to_f32(isa, &[f16::ONE; 2], &mut o),
            Err(KernelError::Shape { .. })
        ));
        assert!(matches!(
            convert::f32_to_f16(isa, &[1.0; 4], &mut h),
            Err(KernelError::Shape { .. })
        ));
        assert!(vector::dot_f32(isa, &[1.0; 3], &[1.0; 2]).is_err());
        assert!(vector::dot_f16(isa, &[f16::ONE; 3], &[1.0; 4]).is_err());
        assert!(vector::axpy_f32(isa, 1.0, &[1.0; 3], &mut [0.0; 2]).is_err());
        assert!(vector::axpy_f16(isa, 1.0, &[f16::ONE; 1], &mut [0.0; 2]).is_err());
        assert!(
            activation::layer_norm(isa, &[1.0; 3], &[1.0; 3], &[1.0; 2], 1e-5, &mut [0.0; 3])
                .is_err()
        );
        assert!(
            activation::layer_norm(isa, &[1.0; 3], &[1.0; 3], &[1.0; 3], 1e-5, &mut [0.0; 4])
                .is_err()
        );
        let rows = [f16::ONE; 12];
        assert!(vector::dot_f16_rows(isa, &rows, 4, &[1.0; 4], &mut [0.0; 2]).is_err());
        assert!(vector::dot_f16_rows(isa, &rows, 4, &[1.0; 3], &mut [0.0; 3]).is_err());
        assert!(vector::dot_f16_rows(isa, &rows, 4, &[1.0; 4], &mut [0.0; 3]).is_ok());
        assert!(matches!(
            vector::dot_f16_rows_multi(isa, &rows, 4, &[], 0, &mut []),
            Err(KernelError::Invalid { .. })
        ));
        assert!(matches!(
            vector::dot_f16_rows_multi(isa, &rows, 4, &[1.0; 68], 17, &mut [0.0; 51]),
            Err(KernelError::Invalid { .. })
        ));
        assert!(vector::dot_f16_rows_multi(isa, &rows, 4, &[1.0; 8], 2, &mut [0.0; 5]).is_err());
        assert!(vector::dot_f16_rows_multi(isa, &rows, 4, &[1.0; 8], 2, &mut [0.0; 4]).is_err());
        assert!(vector::dot_f16_rows_multi(isa, &rows, 4, &[1.0; 8], 2, &mut [0.0; 6]).is_ok());
        assert!(vector::dot_f16_rows(isa, &[], 0, &[], &mut [1.0; 3]).is_ok());
    }
}

// ------------------------------------------------------------- dot / axpy

proptest! {
    #![proptest_config(cfg(128))]

    #[test]
    fn dot_f32_matches_reference((a, b) in len().prop_flat_map(|n| (vecf(n, 4.0), vecf(n, 4.0))), off in 0usize..3) {
        let off = off.min(a.len());
        let (a, b) = (&a[off..], &b[off..]);
        let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        let (r, abs) = ref_dot(&a64, b);
        for isa in paths() {
            let got = vector::dot_f32(isa, a, b).unwrap() as f64;
            prop_assert!((got - r).abs() <= dot_tol(a.len(), abs), "{isa}: n={} got {got} want {r}", a.len());
        }
    }

    #[test]
    fn dot_f16_matches_reference((a, b) in len().prop_flat_map(|n| (vecf(n, 4.0), vecf(n, 4.0))), off in 0usize..3) {
        let off = off.min(a.len());
        let a = to_f16(&a[off..]);
        let b = &b[off..];
        let a64: Vec<f64> = a.iter().map(|v| v.to_f64()).collect();
        let (r, abs) = ref_dot(&a64, b);
        for isa in paths() {
            let got = vector::dot_f16(isa, &a, b).unwrap() as f64;
            prop_assert!((got - r).abs() <= dot_tol(a.len(), abs), "{isa}: n={} got {got} want {r}", a.len());
        }
    }

    #[test]
    fn axpy_matches_reference((x, y) in len().prop_flat_map(|n| (vecf(n, 4.0), vecf(n, 4.0))), alpha in -3.0f32..3.0) {
        let xh = to_f16(&x);
        for isa in paths() {
            let mut got = y.clone();
            vector::axpy_f32(isa, alpha, &x, &mut got).unwrap();
            for i in 0..x.len() {
                let p = alpha as f64 * x[i] as f64;
                let want = y[i] as f64 + p;
                let tol = 2.0 * U * (y[i].abs() as f64 + p.abs()) + 1e-37;
                prop_assert!((got[i] as f64 - want).abs() <= tol, "{isa} axpy_f32[{i}]: {} vs {want}", got[i]);
            }
            let mut got = y.clone();
            vector::axpy_f16(isa, alpha, &xh, &mut got).unwrap();
            for i in 0..x.len() {
                let p = alpha as f64 * xh[i].to_f64();
                let want = y[i] as f64 + p;
                let tol = 2.0 * U * (y[i].abs() as f64 + p.abs()) + 1e-37;
                prop_assert!((got[i] as f64 - want).abs() <= tol, "{isa} axpy_f16[{i}]: {} vs {want}", got[i]);
            }
        }
    }

    #[test]
    fn sum_rows_is_the_axpy_chain(
        (rows, n) in (0usize..=90).prop_flat_map(|n| (prop::collection::vec(vecf(n, 4.0), 0..8), Just(n))),
    ) {
        // Bit-identical to copying the first row and adding the others with
        // axpy_f32(1.0) in order, on every path; nothing written past `n`.
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        for isa in paths() {
            let mut want = vec![0.0f32; n];
            if let Some((first, rest)) = rows.split_first() {
                want.copy_from_slice(first);
                for r in rest {
                    vector::axpy_f32(isa, 1.0, r, &mut want).unwrap();
                }
            }
            let mut got = vec![f32::NAN; n + 3];
            vector::sum_rows_f32(isa, &refs, &mut got[..n]).unwrap();
            prop_assert_eq!(
                got[..n].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{}", isa
            );
            prop_assert!(got[n..].iter().all(|v| v.is_nan()), "{isa}: wrote past the end");
        }
        if n > 0 && !rows.is_empty() {
            let mut short = vec![0.0f32; n - 1];
            prop_assert!(vector::sum_rows_f32(Isa::Scalar, &refs, &mut short).is_err());
        }
    }

    #[test]
    fn l2_normalize_matches_reference(x in len().prop_flat_map(|n| vecf(n, 8.0))) {
        let norm: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
        let n = x.len() as f64;
        for isa in paths() {
            let mut got = x.clone();
            let gn = vector::l2_normalize(isa, &mut got) as f64;
            prop_assert!((gn - norm).abs() <= ((n + 10.0) / 2.0 + 2.0) * U * norm, "{isa}: norm {gn} vs {norm}");
            if norm == 0.0 {
                prop_assert_eq!(&got, &x);
                continue;
            }
            for i in 0..x.len() {
                let want = x[i] as f64 / norm;
                let tol = ((n + 10.0) / 2.0 + 4.0) * U * want.abs() + 1e-37;
                prop_assert!((got[i] as f64 - want).abs() <= tol, "{isa}[{i}]: {} vs {want}", got[i]);
            }
        }
    }

    #[test]
    fn row_scans_match_reference(
        nrows in 0usize..40,
        dim in prop_oneof![0usize..=100, Just(64usize), Just(16usize)],
        nq in 1usize..=16,
        seed in any::<u64>(),
    ) {
        let mut s = seed | 1;
        let mut rnd = move || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 };
        let rows: Vec<f16> = (0..nrows * dim).map(|_| f16::from_f32(rnd())).collect();
        let queries: Vec<f32> = (0..nq * dim).map(|_| rnd()).collect();
        let rows64: Vec<f64> = rows.iter().map(|v| v.to_f64()).collect();
        for isa in paths() {
            let mut out = vec![f32::NAN; nrows];
            vector::dot_f16_rows(isa, &rows, dim, &queries[..dim], &mut out).unwrap();
            for r in 0..nrows {
                let (want, abs) = ref_dot(&rows64[r * dim..(r + 1) * dim], &queries[..dim]);
                prop_assert!((out[r] as f64 - want).abs() <= dot_tol(dim, abs), "{isa} rows r={r} dim={dim}: {} vs {want}", out[r]);
            }
            let mut out = vec![f32::NAN; nrows * nq];
            vector::dot_f16_rows_multi(isa, &rows, dim, &queries, nq, &mut out).unwrap();
            for r in 0..nrows {
                for q in 0..nq {
                    let (want, abs) = ref_dot(&rows64[r * dim..(r + 1) * dim], &queries[q * dim..(q + 1) * dim]);
                    let got = out[r * nq + q] as f64;
                    prop_assert!((got - want).abs() <= dot_tol(dim, abs), "{isa} multi r={r} q={q} nq={nq} dim={dim}: {got} vs {want}");
                }
            }
        }
    }
}

#[test]
fn large_row_scan_all_paths() {
    let (nrows, dim) = (4099usize, 64usize);
    let rows: Vec<f16> = (0..nrows * dim)
        .map(|i| f16::from_f32(((i * 7919) % 1000) as f32 / 500.0 - 1.0))
        .collect();
    let q: Vec<f32> = (0..16 * dim)
        .map(|i| ((i * 104_729) % 997) as f32 / 498.5 - 1.0)
        .collect();
    let rows64: Vec<f64> = rows.iter().map(|v| v.to_f64()).collect();
    for isa in paths() {
        let mut out = vec![0.0f32; nrows];
        vector::dot_f16_rows(isa, &rows, dim, &q[..dim], &mut out).unwrap();
        let mut multi = vec![0.0f32; nrows * 16];
        vector::dot_f16_rows_multi(isa, &rows, dim, &q, 16, &mut multi).unwrap();
        for r in 0..nrows {
            let (want, abs) = ref_dot(&rows64[r * dim..(r + 1) * dim], &q[..dim]);
            assert!(
                (out[r] as f64 - want).abs() <= dot_tol(dim, abs),
                "{isa} r={r}"
            );
            for k in 0..16 {
                let (want, abs) =
                    ref_dot(&rows64[r * dim..(r + 1) * dim], &q[k * dim..(k + 1) * dim]);
                assert!(
                    (multi[r * 16 + k] as f64 - want).abs() <= dot_tol(dim, abs),
                    "{isa} r={r} q={k}"
                );
            }
        }
    }
}

#[test]
fn dot_special_values_propagate() {
    for isa in Isa::ALL {
        for n in [1usize, 7, 8, 9, 31, 33, 64, 100, 257] {
            for pos in [0, n / 2, n - 1] {
                let mut a = vec![1.0f32; n];
                let b = vec![0.5f32; n];
                a[pos] = f32::NAN;
                assert!(
                    vector::dot_f32(isa, &a, &b).unwrap().is_nan(),
                    "{isa} n={n} pos={pos}"
                );
                assert!(vector::dot_f16(isa, &to_f16(&a), &b).unwrap().is_nan());
                a[pos] = f32::INFINITY;
                assert_eq!(vector::dot_f32(isa, &a, &b).unwrap(), f32::INFINITY);
                assert_eq!(
                    vector::dot_f16(isa, &to_f16(&a), &b).unwrap(),
                    f32::INFINITY
                );
                let mut z = b.clone();
                z[pos] = 0.0;
                assert!(vector::dot_f32(isa, &a, &z).unwrap().is_nan(), "inf·0");
                assert!(
                    vector::dot_f16(isa, &to_f16(&a), &z).unwrap().is_nan(),
                    "inf·0"
                );
                let mut y = vec![1.0f32; n];
                vector::axpy_f32(isa, 2.0, &a, &mut y).unwrap();
                assert_eq!(y[pos], f32::INFINITY);
                let mut y = vec![1.0f32; n];
                vector::axpy_f16(isa, 0.0, &to_f16(&a), &mut y).unwrap();
                assert!(y[pos].is_nan(), "0·inf");
            }
        }
    }
}

#[test]
fn row_scan_nan_stays_in_its_row() {
    for isa in Isa::ALL {
        for dim in [1usize, 3, 7, 9, 15, 17, 63, 64, 65, 100] {
            let nrows = 19;
            for bad in [0usize, 7, 8, 17, 18] {
                let mut rows = vec![f16::from_f32(0.25); nrows * dim];
                rows[bad * dim + dim - 1] = f16::NAN;
                if bad + 1 < nrows {
                    rows[(bad + 1) * dim] = f16::INFINITY;
                }
                let q = vec![1.0f32; dim];
                let mut out = vec![0.0f32; nrows];
                vector::dot_f16_rows(isa, &rows, dim, &q, &mut out).unwrap();
                let mut multi = vec![0.0f32; nrows * 3];
                let q3 = vec![1.0f32; 3 * dim];
                vector::dot_f16_rows_multi(isa, &rows, dim, &q3, 3, &mut multi).unwrap();
                for r in 0..nrows {
                    let want = if r == bad {
                        f32::NAN
                    } else if r == bad + 1 {
                        f32::INFINITY
                    } else {
                        0.25 * dim as f32
                    };
                    for got in [out[r], multi[3 * r], multi[3 * r + 1], multi[3 * r + 2]] {
                        assert!(
                            same_f32(got, want),
                            "{isa} dim={dim} bad={bad} r={r}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn l2_normalize_special_values() {
    for isa in Isa::ALL {
        let mut z = vec![0.0f32; 37];
        assert_eq!(vector::l2_normalize(isa, &mut z), 0.0);
        assert!(z.iter().all(|&v| v == 0.0));
        let mut e: Vec<f32> = vec![];
        assert_eq!(vector::l2_normalize(isa, &mut e), 0.0);
        let mut x = vec![1.0f32; 37];
        x[20] = f32::NAN;
        assert!(vector::l2_normalize(isa, &mut x).is_nan());
        assert!(x.iter().all(|v| v.is_nan()), "{isa}");
    }
}

// ------------------------------------------------------------- exp / softmax

#[test]
fn exp_accuracy_and_specials() {
    let mut xs: Vec<f32> = Vec::new();
    let (lo, hi) = (-103.0f64, 88.7f64);
    let steps = 400_001;
    for i in 0..steps {
        xs.push((lo + (hi - lo) * i as f64 / (steps - 1) as f64) as f32);
    }
    xs.extend([-0.0, 0.0, 1e-30, -1e-30, 88.72, -87.3, -87.34, -100.0]);
    for isa in paths() {
        let mut y = xs.clone();
        activation::exp_inplace(isa, &mut y);
        let mut max_rel = 0.0f64;
        for (x, got) in xs.iter().zip(&y) {
            let want = (*x as f64).exp();
            let err = (*got as f64 - want).abs();
            assert!(
                err <= 2e-7 * want + 2f64.powi(-149),
                "{isa}: exp({x}) = {got}, want {want}"
            );
            if want >= f32::MIN_POSITIVE as f64 {
                max_rel = max_rel.max(err / want);
            }
        }
        eprintln!("exp {isa}: max relative error {max_rel:.3e} over [-87.3, 88.7]");
        let mut s = [
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -200.0,
            200.0,
            88.8,
            -104.5,
        ];
        activation::exp_inplace(isa, &mut s);
        assert_eq!(s[0], 0.0, "{isa}");
        assert_eq!(s[1], f32::INFINITY, "{isa}");
        assert!(s[2].is_nan(), "{isa}");
        assert_eq!(s[3], 0.0, "{isa}");
        assert_eq!(s[4], f32::INFINITY, "{isa}");
        assert_eq!(s[5], f32::INFINITY, "{isa}");
        assert_eq!(s[6], 0.0, "{isa}");
    }
}

proptest! {
    #![proptest_config(cfg(128))]

    #[test]
    fn softmax_matches_reference(x in len().prop_flat_map(|n| vecf(n, 30.0)), masked in prop::collection::vec(any::<bool>(), 0..8)) {
        let mut x = x;
        // Mask a few positions with -inf (not all).
        for (i, m) in masked.iter().enumerate() {
            if *m && i * 37 < x.len() && x.len() > 1 {
                x[i * 37] = f32::NEG_INFINITY;
            }
        }
        let finite: Vec<f64> = x.iter().filter(|v| v.is_finite()).map(|&v| v as f64).collect();
        if finite.is_empty() {
            return Ok(());
        }
        let max = finite.iter().copied().fold(f64::MIN, f64::max);
        let min = finite.iter().copied().fold(f64::MAX, f64::min);
        let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
        let tol_rel = (2.0 * (max - min + 4.0) + x.len() as f64 + 12.0) * U;
        for isa in paths() {
            let mut got = x.clone();
            activation::softmax_row(isa, &mut got);
            for i in 0..x.len() {
                let want = (x[i] as f64 - max).exp() / sum;
                prop_assert!((got[i] as f64 - want).abs() <= tol_rel * want + 1e-38, "{isa}[{i}] n={}: {} vs {want}", x.len(), got[i]);
            }
        }
    }
}

#[test]
fn softmax_special_rows() {
    for isa in Isa::ALL {
        for n in [1usize, 7, 8, 9, 16, 17, 33, 100] {
            let mut r = vec![f32::NEG_INFINITY; n];
            activation::softmax_row(isa, &mut r);
            assert!(r.iter().all(|&v| v == 0.0), "{isa}: all -inf → zeros");

            let mut r: Vec<f32> = (0..n).map(|i| i as f32).collect();
            r[n / 2] = f32::INFINITY;
            activation::softmax_row(isa, &mut r);
            assert!(r.iter().all(|v| v.is_nan()), "{isa}: +inf → NaN row");

            let mut r: Vec<f32> = (0..n).map(|i| i as f32).collect();
            r[n - 1] = f32::NAN;
            activation::softmax_row(isa, &mut r);
            assert!(r.iter().all(|v| v.is_nan()), "{isa}: NaN → NaN row");

            let mut r = vec![f32::NEG_INFINITY; n];
            r[0] = f32::NAN;
            activation::softmax_row(isa, &mut r);
            assert!(
                r.iter().all(|v| v.is_nan()),
                "{isa}: NaN among -inf → NaN row"
            );

            let mut r = vec![f32::NEG_INFINITY; n];
            r[n - 1] = 3.0;
            activation::softmax_row(isa, &mut r);
            assert_eq!(r[n - 1], 1.0, "{isa}");
            assert!(r[..n - 1].iter().all(|&v| v == 0.0), "{isa}");

            let mut r = vec![1e30f32; n];
            activation::softmax_row(isa, &mut r);
            let want = 1.0 / n as f32;
            assert!(
                r.iter()
                    .all(|&v| (v - want).abs() <= 4e-7 * want * n as f32),
                "{isa}: large equal inputs"
            );
        }
        // Entries whose probability is below f32::MIN_POSITIVE may flush to 0.
        let mut r = vec![0.0f32, -90.0, -200.0, -1.0];
        activation::softmax_row(isa, &mut r);
        let want1 = 1.0 / (1.0 + (-1.0f64).exp());
        assert!((r[0] as f64 - want1).abs() < 2e-7, "{isa}: {r:?}");
        assert!(r[1] >= 0.0 && r[1] < 1e-38, "{isa}: {r:?}");
        assert_eq!(r[2], 0.0, "{isa}");
        let mut e: Vec<f32> = vec![];
        activation::softmax_row(isa, &mut e);
    }
}

// ------------------------------------------------------------- layer norm / gelu

proptest! {
    #![proptest_config(cfg(128))]

    #[test]
    fn layer_norm_matches_reference(
        (x, g, b) in (1usize..=300).prop_flat_map(|n| (vecf(n, 10.0), vecf(n, 2.0), vecf(n, 2.0))),
        shift in -50.0f32..50.0,
        eps in prop_oneof![Just(1e-5f32), Just(1e-12f32), Just(0.1f32)],
    ) {
        let x: Vec<f32> = x.iter().map(|v| v + shift).collect();
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let sigma = (var + eps as f64).sqrt();
        let a = x.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
        let c = (n + 16.0) * U;
        for isa in paths() {
            let mut out = vec![0.0f32; x.len()];
            activation::layer_norm(isa, &x, &g, &b, eps, &mut out).unwrap();
            for i in 0..x.len() {
                let xh = (x[i] as f64 - mean) / sigma;
                let want = xh * g[i] as f64 + b[i] as f64;
                let tol = c * (g[i].abs() as f64) * (a / sigma + 1.0 + xh.abs()) + 2.0 * U * b[i].abs() as f64 + 1e-30;
                prop_assert!((out[i] as f64 - want).abs() <= tol, "{isa}[{i}]: {} vs {want} (tol {tol})", out[i]);
            }
        }
    }

    #[test]
    fn gelu_matches_reference(x in len().prop_flat_map(|n| vecf(n, 9.0)), wide in prop::collection::vec(-1e4f32..1e4, 0..20)) {
        let mut x = x;
        x.extend(wide);
        for isa in paths() {
            let mut got = x.clone();
            activation::gelu(isa, &mut got);
            for i in 0..x.len() {
                let v = x[i] as f64;
                let t = 2.0 * (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
                let want = v / (1.0 + (-t).exp());
                let tol = (8.0 + 8.0 * t.abs()) * U * want.abs() + 1e-36;
                prop_assert!((got[i] as f64 - want).abs() <= tol, "{isa} gelu({}) = {} vs {want}", x[i], got[i]);
            }
        }
    }
}

#[test]
fn gelu_and_layer_norm_special_values() {
    for isa in Isa::ALL {
        let mut v = vec![
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e30,
            -1e30,
        ];
        activation::gelu(isa, &mut v);
        assert_eq!(v[0], f32::INFINITY, "{isa}");
        assert!(v[1].is_nan(), "{isa}");
        assert!(v[2].is_nan(), "{isa}");
        assert_eq!(v[3], 0.0);
        assert_eq!(v[4], 0.0);
        assert!((v[5] - 0.841_192).abs() < 1e-5, "{isa} {}", v[5]);
        assert!((v[6] + 0.158_808).abs() < 1e-5, "{isa} {}", v[6]);
        assert_eq!(v[7], 1e30);
        assert_eq!(v[8], 0.0);

        let mut x = vec![1.0f32; 19];
        x[5] = f32::NAN;
        let ones = vec![1.0f32; 19];
        let mut out = vec![0.0f32; 19];
        activation::layer_norm(isa, &x, &ones, &ones, 1e-5, &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_nan()), "{isa}");
        let x = vec![3.0f32; 19];
        activation::layer_norm(isa, &x, &ones, &ones, 1e-5, &mut out).unwrap();
        assert!(out.iter().all(|&v| v == 1.0), "{isa}: constant row → beta");
        activation::layer_norm(isa, &[], &[], &[], 1e-5, &mut []).unwrap();
    }
}
