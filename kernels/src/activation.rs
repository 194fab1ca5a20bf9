//! Row softmax, LayerNorm and GELU.

use crate::error::check_len;
use crate::{Isa, KernelError};

/// In-place softmax of one row. The maximum is subtracted first, so large
/// inputs do not overflow; a row of `-inf` (everything masked) becomes zeros.
pub fn softmax_row(isa: Isa, x: &mut [f32]) {
    let _ = isa;
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// LayerNorm of one row: `(x − mean) / sqrt(var + eps) · gamma + beta`,
/// written to `out` (may not alias `x`).
pub fn layer_norm(
    isa: Isa,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("layer_norm gamma", x.len(), gamma.len())?;
    check_len("layer_norm beta", x.len(), beta.len())?;
    check_len("layer_norm out", x.len(), out.len())?;
    let _ = isa;
    let n = x.len().max(1) as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
    }
    Ok(())
}

/// GELU, tanh approximation (PyTorch `approximate="tanh"`, candle `gelu`):
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, in place.
pub fn gelu(isa: Isa, x: &mut [f32]) {
    let _ = isa;
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044_715 * u * u * u)).tanh());
    }
}
