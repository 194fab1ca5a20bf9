//! Vector primitives: dot products, axpy, L2 normalisation, and the f16 row
//! scans used by the exact index search.
//!
//! The SIMD paths keep several independent accumulators (4 × 8 lanes on
//! AVX2, 4 × 16 on AVX-512) and handle tails with masked loads, so results
//! differ from the sequential scalar sum only by summation order (see the
//! tolerance table in the crate README). NaN and infinities propagate as in
//! IEEE arithmetic: a NaN anywhere in a dot gives NaN, `inf·0` gives NaN.
//!
//! An `isa` the CPU does not support runs on the best supported path below
//! it (see the crate README, "Dispatch").

use crate::error::check_len;
use crate::simd::{MAX_QUERIES, dispatch, portable};
use crate::{Isa, KernelError, f16};

/// `Σ a[i]·b[i]` in f32.
pub fn dot_f32(isa: Isa, a: &[f32], b: &[f32]) -> Result<f32, KernelError> {
    check_len("dot_f32 b", a.len(), b.len())?;
    Ok(dispatch!(isa,
        scalar => a.iter().zip(b).map(|(x, y)| x * y).sum(),
        portable => portable::dot_f32(a, b),
        avx2 => crate::simd::avx2::dot_f32(a, b),
        avx512 => crate::simd::avx512::dot_f32(a, b),
    ))
}

/// `Σ a[i]·b[i]` with `a` in f16, accumulated in f32.
pub fn dot_f16(isa: Isa, a: &[f16], b: &[f32]) -> Result<f32, KernelError> {
    check_len("dot_f16 b", a.len(), b.len())?;
    Ok(dispatch!(isa,
        scalar => a.iter().zip(b).map(|(x, y)| x.to_f32() * y).sum(),
        portable => portable::dot_f16(a, b),
        avx2 => crate::simd::avx2::dot_f16(a, b),
        avx512 => crate::simd::avx512::dot_f16(a, b),
    ))
}

/// `y[i] += alpha·x[i]` (fused multiply-add on the AVX paths).
pub fn axpy_f32(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    check_len("axpy_f32 y", x.len(), y.len())?;
    dispatch!(isa,
        scalar => {
            for (yi, xi) in y.iter_mut().zip(x) {
                *yi += alpha * xi;
            }
        },
        portable => portable::axpy_f32(alpha, x, y),
        avx2 => crate::simd::avx2::axpy_f32(alpha, x, y),
        avx512 => crate::simd::avx512::axpy_f32(alpha, x, y),
    );
    Ok(())
}

/// `y[i] += alpha·x[i]` with `x` in f16.
pub fn axpy_f16(isa: Isa, alpha: f32, x: &[f16], y: &mut [f32]) -> Result<(), KernelError> {
    check_len("axpy_f16 y", x.len(), y.len())?;
    dispatch!(isa,
        scalar => {
            for (yi, xi) in y.iter_mut().zip(x) {
                *yi += alpha * xi.to_f32();
            }
        },
        portable => portable::axpy_f16(alpha, x, y),
        avx2 => crate::simd::avx2::axpy_f16(alpha, x, y),
        avx512 => crate::simd::avx512::axpy_f16(alpha, x, y),
    );
    Ok(())
}

/// `out[i] = rows[0][i] + rows[1][i] + …`, added left to right (so the
/// result is bit-identical to copying `rows[0]` and applying
/// [`axpy_f32`] with `alpha = 1` for each further row). One pass over `out`
/// with the partial sums in registers: the encoder's embedding rows (item,
/// genres, rating + gap, position + type). Every row must have
/// `out.len()` elements; no rows writes zeros.
pub fn sum_rows_f32(isa: Isa, rows: &[&[f32]], out: &mut [f32]) -> Result<(), KernelError> {
    for r in rows {
        check_len("sum_rows_f32 row", out.len(), r.len())?;
    }
    let Some((first, rest)) = rows.split_first() else {
        out.fill(0.0);
        return Ok(());
    };
    dispatch!(isa,
        scalar => sum_rows_plain(first, rest, out),
        portable => sum_rows_plain(first, rest, out),
        avx2 => crate::simd::avx2::sum_rows(first, rest, out),
        avx512 => crate::simd::avx512::sum_rows(first, rest, out),
    );
    Ok(())
}

fn sum_rows_plain(first: &[f32], rest: &[&[f32]], out: &mut [f32]) {
    out.copy_from_slice(first);
    for r in rest {
        for (o, v) in out.iter_mut().zip(r.iter()) {
            *o += v;
        }
    }
}

/// Scales `x` to unit L2 norm in place and returns the norm before scaling.
///
/// A zero vector (norm exactly 0) is left unchanged and 0 is returned. A NaN
/// norm (some element NaN) makes every element NaN; an infinite norm (an
/// infinite element, or a sum of squares beyond `f32::MAX`, i.e. a norm above
/// ≈ 1.8e19) scales finite elements to ±0. The sum of squares is accumulated
/// in f32.
pub fn l2_normalize(isa: Isa, x: &mut [f32]) -> f32 {
    dispatch!(isa,
        scalar => {
            let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm != 0.0 {
                let inv = 1.0 / norm;
                for v in x.iter_mut() {
                    *v *= inv;
                }
            }
            norm
        },
        portable => portable::l2_normalize(x),
        avx2 => crate::simd::avx2::l2_normalize(x),
        avx512 => crate::simd::avx512::l2_normalize(x),
    )
}

/// The most queries [`dot_f16_rows_multi`] scores in one pass over the rows.
pub const MAX_SCAN_QUERIES: usize = MAX_QUERIES;

/// Scores every row of a row-major f16 matrix against one f32 query:
/// `out[r] = Σ_i rows[r·dim + i] · query[i]`, accumulated in f32.
///
/// `rows.len()` must be `out.len() · dim` and `query.len()` must be `dim`.
/// The SIMD paths stream the matrix once, 8 rows per step (each query load
/// shared by 8 rows, 8 independent accumulators reduced with one transpose),
/// so a large scan runs at memory bandwidth. `dim == 0` gives zeros.
pub fn dot_f16_rows(
    isa: Isa,
    rows: &[f16],
    dim: usize,
    query: &[f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("dot_f16_rows query", dim, query.len())?;
    let want = out
        .len()
        .checked_mul(dim)
        .ok_or_else(|| KernelError::Invalid {
            what: "dot_f16_rows dim",
            detail: format!("{} rows × {dim} overflows usize", out.len()),
        })?;
    check_len("dot_f16_rows rows (out.len() × dim)", want, rows.len())?;
    dispatch!(isa,
        scalar => {
            if dim == 0 {
                out.iter_mut().for_each(|o| *o = 0.0);
            } else {
                for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
                    *o = row.iter().zip(query).map(|(x, y)| x.to_f32() * y).sum();
                }
            }
        },
        portable => portable::dot_f16_rows(rows, dim, query, out),
        avx2 => crate::simd::avx2::dot_f16_rows(rows, dim, query, out),
        avx512 => crate::simd::avx512::dot_f16_rows(rows, dim, query, out),
    );
    Ok(())
}

/// Scores every row of a row-major f16 matrix against `nq` f32 queries in
/// one pass over the rows: `out[r·nq + q] = Σ_i rows[r·dim + i] ·
/// queries[q·dim + i]`.
///
/// `queries` is `nq × dim` row-major, `out` is `rows × nq` row-major;
/// `1 ≤ nq ≤` [`MAX_SCAN_QUERIES`] (16), `out.len()` must be a multiple of
/// `nq` and `rows.len()` must be `out.len() / nq · dim`. Each row is
/// converted from f16 once and multiplied with every query while it is in
/// registers.
pub fn dot_f16_rows_multi(
    isa: Isa,
    rows: &[f16],
    dim: usize,
    queries: &[f32],
    nq: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if nq == 0 || nq > MAX_SCAN_QUERIES {
        return Err(KernelError::Invalid {
            what: "dot_f16_rows_multi nq",
            detail: format!("{nq} queries; expected 1..={MAX_SCAN_QUERIES}"),
        });
    }
    check_len(
        "dot_f16_rows_multi queries (nq × dim)",
        nq * dim,
        queries.len(),
    )?;
    if !out.len().is_multiple_of(nq) {
        return Err(KernelError::Invalid {
            what: "dot_f16_rows_multi out",
            detail: format!("length {} is not a multiple of nq = {nq}", out.len()),
        });
    }
    let nrows = out.len() / nq;
    let want = nrows.checked_mul(dim).ok_or_else(|| KernelError::Invalid {
        what: "dot_f16_rows_multi dim",
        detail: format!("{nrows} rows × {dim} overflows usize"),
    })?;
    check_len("dot_f16_rows_multi rows (rows × dim)", want, rows.len())?;
    dispatch!(isa,
        scalar => {
            if dim == 0 {
                out.iter_mut().for_each(|o| *o = 0.0);
            } else {
                for (o, row) in out.chunks_exact_mut(nq).zip(rows.chunks_exact(dim)) {
                    o.iter_mut().for_each(|v| *v = 0.0);
                    for (i, x) in row.iter().enumerate() {
                        let x = x.to_f32();
                        for (q, oq) in o.iter_mut().enumerate() {
                            *oq += x * queries[q * dim + i];
                        }
                    }
                }
            }
        },
        portable => portable::dot_f16_rows_multi(rows, dim, queries, nq, out),
        avx2 => crate::simd::avx2::dot_f16_rows_multi(rows, dim, queries, nq, out),
        avx512 => crate::simd::avx512::dot_f16_rows_multi(rows, dim, queries, nq, out),
    );
    Ok(())
}
