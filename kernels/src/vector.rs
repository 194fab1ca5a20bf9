//! Vector primitives: dot products, axpy, L2 normalisation.

use crate::error::check_len;
use crate::{Isa, KernelError, f16};

/// `Σ a[i]·b[i]` in f32.
pub fn dot_f32(isa: Isa, a: &[f32], b: &[f32]) -> Result<f32, KernelError> {
    check_len("dot_f32 b", a.len(), b.len())?;
    let _ = isa;
    Ok(a.iter().zip(b).map(|(x, y)| x * y).sum())
}

/// `Σ a[i]·b[i]` with `a` in f16, accumulated in f32.
pub fn dot_f16(isa: Isa, a: &[f16], b: &[f32]) -> Result<f32, KernelError> {
    check_len("dot_f16 b", a.len(), b.len())?;
    let _ = isa;
    Ok(a.iter().zip(b).map(|(x, y)| x.to_f32() * y).sum())
}

/// `y[i] += alpha·x[i]`.
pub fn axpy_f32(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    check_len("axpy_f32 y", x.len(), y.len())?;
    let _ = isa;
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
    Ok(())
}

/// `y[i] += alpha·x[i]` with `x` in f16.
pub fn axpy_f16(isa: Isa, alpha: f32, x: &[f16], y: &mut [f32]) -> Result<(), KernelError> {
    check_len("axpy_f16 y", x.len(), y.len())?;
    let _ = isa;
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi.to_f32();
    }
    Ok(())
}

/// Scales `x` to unit L2 norm in place and returns the norm before scaling.
/// A zero vector is left unchanged (norm 0 is returned).
pub fn l2_normalize(isa: Isa, x: &mut [f32]) -> f32 {
    let _ = isa;
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm;
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
    norm
}
