//! f16 ⇄ f32 conversion (F16C on the AVX paths; never `half`'s slice helpers in hot loops).
//!
//! Every path is bit-exact with `half::f16::to_f32` / `half::f16::from_f32`
//! (round to nearest even, subnormals kept, ±inf kept; NaN stays NaN with the
//! quiet bit set and the payload truncated/shifted as `half` does). The
//! portable path converts with integer bit manipulation in 8 lanes; the AVX2
//! path uses `vcvtph2ps`/`vcvtps2ph`, the AVX-512 path their 16-lane forms
//! with masked tails.
//!
//! An `isa` the CPU does not support runs on the best supported path below
//! it (see the crate README, "Dispatch").

use crate::error::check_len;
use crate::simd::{dispatch, portable};
use crate::{Isa, KernelError, f16};

/// Converts `src` to f32 into `dst` (same length).
pub fn f16_to_f32(isa: Isa, src: &[f16], dst: &mut [f32]) -> Result<(), KernelError> {
    check_len("f16_to_f32 dst", src.len(), dst.len())?;
    dispatch!(isa,
        scalar => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s.to_f32();
            }
        },
        portable => portable::f16_to_f32(src, dst),
        avx2 => crate::simd::avx2::f16_to_f32(src, dst),
        avx512 => crate::simd::avx512::f16_to_f32(src, dst),
    );
    Ok(())
}

/// Converts `src` to f16 (round to nearest even) into `dst` (same length).
pub fn f32_to_f16(isa: Isa, src: &[f32], dst: &mut [f16]) -> Result<(), KernelError> {
    check_len("f32_to_f16 dst", src.len(), dst.len())?;
    dispatch!(isa,
        scalar => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = f16::from_f32(*s);
            }
        },
        portable => portable::f32_to_f16(src, dst),
        avx2 => crate::simd::avx2::f32_to_f16(src, dst),
        avx512 => crate::simd::avx512::f32_to_f16(src, dst),
    );
    Ok(())
}
