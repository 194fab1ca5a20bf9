//! Property tests of the packed GEMM on every supported dispatch path.
//!
//! Reference: f64 accumulation of the same (for F16, f16-rounded) weights.
//! Tolerance per output element: `|got − ref| ≤ 1e-6 + 2.4e-7·(K + 2)·Σ_k|x_k·w_kj|`
//! (the worst-case bound of K sequential f32 FMAs plus the bias and
//! residual adds; GELU outputs get `+ 1e-5·|ref|` more for the tanh).
//! BF16 weights are compared with the *unrounded* f32 inputs: the rounding
//! of both operands to bf16 adds `(2·2⁻⁸ + 2⁻¹⁶)·Σ_k|x_k·w_kj|` (×1.2 after
//! GELU, whose slope is below 1.13), see `profiled_kernels::gemm::bf16`.
//! On a CPU with AVX512_BF16 the `vdpbf16ps` kernel must also equal the
//! scalar emulation bit for bit.
//! NaN / inf inputs must propagate to exactly the rows they touch.

mod common;

use common::{Rng, gelu_ref, linear_ref, round_f16, to_f64};
use profiled_kernels::gemm::{Epilogue, PackedMatrix, Residual, WeightPrecision, gemm, gemm_ex};
use profiled_kernels::{Isa, KernelError};
use proptest::prelude::*;

/// The bf16 input-rounding term of the tolerance, relative to `Σ|x·w|`.
const BF16_INPUTS: f64 = 2.0 / 256.0 + 1.0 / 65536.0;

#[allow(clippy::too_many_arguments)]
fn check_bf(
    got: &[f32],
    want: &[f64],
    mag: &[f64],
    k: usize,
    extra_rel: f64,
    extra_mag: f64,
    what: &str,
) {
    for i in 0..got.len() {
        let tol =
            1e-6 + (2.4e-7 * (k as f64 + 2.0) + extra_mag) * mag[i] + extra_rel * want[i].abs();
        let err = (got[i] as f64 - want[i]).abs();
        assert!(
            err <= tol,
            "{what}[{i}]: got {} want {} err {err:e} tol {tol:e}",
            got[i],
            want[i]
        );
    }
}

fn run_case(m: usize, k: usize, n: usize, seed: u64, prec: WeightPrecision) {
    let mut rng = Rng::new(seed);
    let x = rng.vec_f32(m * k, 2.0);
    let w = rng.vec_f32(n * k, 1.0);
    let bias = rng.vec_f32(n, 0.5);
    let resid = rng.vec_f32(m * n, 1.0);
    let pw = PackedMatrix::from_out_in(n, k, &w, prec).expect("pack");
    let wr = if prec == WeightPrecision::F16 {
        round_f16(&w)
    } else {
        w.clone()
    };
    let bf = if prec == WeightPrecision::Bf16 {
        BF16_INPUTS
    } else {
        0.0
    };
    let check = |got: &[f32], want: &[f64], mag: &[f64], k: usize, rel: f64, what: &str| {
        let gelu = if rel > 0.0 { 1.2 } else { 1.0 };
        check_bf(got, want, mag, k, rel, gelu * bf, what)
    };
    // Row-major packing of the transposed matrix must give the same matrix.
    let mut w_rm = vec![0.0; k * n];
    for j in 0..n {
        for kk in 0..k {
            w_rm[kk * n + j] = w[j * k + kk];
        }
    }
    let pw_rm = PackedMatrix::from_row_major(k, n, &w_rm, prec).expect("pack");
    let x64 = to_f64(&x);
    let (want, mag) = linear_ref(&x64, m, k, &wr, n, Some(&bias));
    let (want_nb, mag_nb) = linear_ref(&x64, m, k, &wr, n, None);
    for isa in Isa::supported() {
        let mut out = vec![f32::NAN; m * n];
        gemm(isa, &x, m, &pw, Some(&bias), &mut out).expect("gemm");
        check(&out, &want, &mag, k, 0.0, &format!("{isa} bias"));
        let mut out2 = vec![0.0; m * n];
        gemm(isa, &x, m, &pw_rm, None, &mut out2).expect("gemm");
        check(
            &out2,
            &want_nb,
            &mag_nb,
            k,
            0.0,
            &format!("{isa} row-major no bias"),
        );
        // Residual add.
        let mut out3 = vec![0.0; m * n];
        gemm_ex(
            isa,
            &x,
            m,
            &pw,
            Epilogue {
                bias: Some(&bias),
                gelu: false,
                residual: Residual::Add(&resid),
            },
            &mut out3,
        )
        .expect("gemm residual");
        let want3: Vec<f64> = want
            .iter()
            .zip(&resid)
            .map(|(a, r)| a + *r as f64)
            .collect();
        let mag3: Vec<f64> = mag
            .iter()
            .zip(&resid)
            .map(|(a, r)| a + r.abs() as f64)
            .collect();
        check(&out3, &want3, &mag3, k, 0.0, &format!("{isa} residual"));
        // Accumulate.
        let mut out4 = resid.clone();
        gemm_ex(
            isa,
            &x,
            m,
            &pw,
            Epilogue {
                bias: Some(&bias),
                gelu: false,
                residual: Residual::Accumulate,
            },
            &mut out4,
        )
        .expect("gemm accumulate");
        check(&out4, &want3, &mag3, k, 0.0, &format!("{isa} accumulate"));
        // GELU.
        let mut out5 = vec![0.0; m * n];
        gemm_ex(
            isa,
            &x,
            m,
            &pw,
            Epilogue {
                bias: Some(&bias),
                gelu: true,
                residual: Residual::None,
            },
            &mut out5,
        )
        .expect("gemm gelu");
        let want5: Vec<f64> = want.iter().map(|&v| gelu_ref(v)).collect();
        check(&out5, &want5, &mag, k, 1e-5, &format!("{isa} gelu"));
    }
}

const PRECISIONS: [WeightPrecision; 3] = [
    WeightPrecision::F32,
    WeightPrecision::F16,
    WeightPrecision::Bf16,
];

/// On a CPU with AVX512_BF16: the `vdpbf16ps` kernel and the scalar
/// emulation give the same bits (bias, residual and GELU epilogues alike
/// are the f32 ones, so the plain GEMM is what differs).
fn bf16_bit_exact(m: usize, k: usize, n: usize, seed: u64) {
    if !Isa::Avx512Bf16.is_supported() {
        return;
    }
    let mut rng = Rng::new(seed);
    let x = rng.vec_f32(m * k, 2.0);
    let w = rng.vec_f32(n * k, 1.0);
    let pw = PackedMatrix::from_out_in(n, k, &w, WeightPrecision::Bf16).expect("pack");
    let mut want = vec![0.0; m * n];
    gemm(Isa::Scalar, &x, m, &pw, None, &mut want).expect("gemm");
    for isa in [Isa::Avx512, Isa::Avx512Bf16] {
        let mut got = vec![f32::NAN; m * n];
        gemm(isa, &x, m, &pw, None, &mut got).expect("gemm");
        for i in 0..m * n {
            assert_eq!(
                got[i].to_bits(),
                want[i].to_bits(),
                "{isa} [{i}] m={m} k={k} n={n}: {} vs {}",
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn gemm_bf16_packing_rounds_to_nearest_even() {
    // 1 + 2⁻⁸ is halfway between two bf16: ties to the even 1.0; 1 + 3·2⁻⁸
    // ties up to 1 + 2⁻⁶; an odd K gets a zero pad row that reads back as None.
    let w = [1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -2.5];
    let pw = PackedMatrix::from_row_major(3, 1, &w, WeightPrecision::Bf16).expect("pack");
    assert_eq!(pw.get(0, 0), Some(1.0));
    assert_eq!(pw.get(1, 0), Some(1.0 + 4.0 / 256.0));
    assert_eq!(pw.get(2, 0), Some(-2.5));
    assert_eq!(pw.get(3, 0), None);
    assert_eq!(profiled_kernels::gemm::bf16::round(1.0 + 1.0 / 256.0), 1.0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(24), ..ProptestConfig::default() })]

    #[test]
    fn gemm_small_odd_shapes(m in 1usize..40, k in 1usize..80, n in 1usize..80, seed: u64, p in 0usize..3) {
        run_case(m, k, n, seed, PRECISIONS[p]);
    }

    #[test]
    fn gemm_large_odd_shapes(m in 1usize..=300, k in 1usize..=300, n in 1usize..=300, seed: u64, p in 0usize..3) {
        run_case(m, k, n, seed, PRECISIONS[p]);
    }

    #[test]
    fn gemm_bf16_kernel_equals_its_emulation(m in 1usize..40, k in 1usize..300, n in 1usize..80, seed: u64) {
        bf16_bit_exact(m, k, n, seed);
    }
}

#[test]
fn gemm_model_shapes() {
    for (m, k, n) in [
        (1024, 64, 192),
        (16, 64, 64),
        (17, 64, 256),
        (56, 256, 64),
        (7, 36, 108),
    ] {
        run_case(m, k, n, m as u64 * 31 + n as u64, WeightPrecision::F32);
        run_case(m, k, n, m as u64 * 17 + k as u64, WeightPrecision::F16);
        run_case(m, k, n, m as u64 * 13 + k as u64, WeightPrecision::Bf16);
        bf16_bit_exact(m, k, n, m as u64 * 7 + n as u64);
    }
}

#[test]
fn gemm_rejects_bad_shapes() {
    let w = PackedMatrix::from_out_in(5, 3, &[0.5; 15], WeightPrecision::F32).expect("pack");
    let mut out = vec![0.0; 10];
    for isa in Isa::supported() {
        assert!(matches!(
            gemm(isa, &[0.0; 5], 2, &w, None, &mut out),
            Err(KernelError::Shape { .. })
        ));
        assert!(matches!(
            gemm(isa, &[0.0; 6], 2, &w, None, &mut out[..9]),
            Err(KernelError::Shape { .. })
        ));
        assert!(matches!(
            gemm(isa, &[0.0; 6], 2, &w, Some(&[0.0; 4]), &mut out),
            Err(KernelError::Shape { .. })
        ));
        assert!(gemm(isa, &[], 0, &w, None, &mut []).is_ok());
        assert!(gemm(isa, &[0.0; 6], usize::MAX / 2, &w, None, &mut out).is_err());
        let e = gemm_ex(
            isa,
            &[0.0; 6],
            2,
            &w,
            Epilogue {
                bias: None,
                gelu: true,
                residual: Residual::Accumulate,
            },
            &mut out,
        );
        assert!(matches!(e, Err(KernelError::Invalid { .. })));
    }
    assert!(PackedMatrix::from_out_in(5, 3, &[0.5; 14], WeightPrecision::F32).is_err());
    assert!(PackedMatrix::from_row_major(0, 3, &[], WeightPrecision::F16).is_err());
}

#[test]
fn gemm_propagates_nan_and_inf_per_row() {
    let (m, k, n) = (13, 37, 41);
    let mut rng = Rng::new(7);
    let mut x = rng.vec_f32(m * k, 1.0);
    x[3 * k + 5] = f32::NAN;
    x[8 * k] = f32::INFINITY;
    let w = rng.vec_f32(n * k, 1.0);
    for prec in PRECISIONS {
        let pw = PackedMatrix::from_out_in(n, k, &w, prec).expect("pack");
        for isa in Isa::supported() {
            let mut out = vec![0.0; m * n];
            gemm(isa, &x, m, &pw, None, &mut out).expect("gemm");
            for i in 0..m {
                for j in 0..n {
                    let v = out[i * n + j];
                    match i {
                        3 => assert!(v.is_nan(), "{isa}: row 3 must be NaN"),
                        8 => assert!(!v.is_finite(), "{isa}: row 8 must be inf/NaN"),
                        _ => assert!(v.is_finite(), "{isa}: row {i} must stay finite"),
                    }
                }
            }
        }
    }
}
