//! Runtime instruction-set dispatch, decided once per process.
//!
//! Every kernel takes an [`Isa`] argument so that tests and benchmarks can run
//! every path on one CPU in one process. [`Isa::active`] is the process
//! default: the best path this CPU supports, unless the environment variable
//! `PROFILED_KERNELS=scalar|portable|avx2|avx512|avx512bf16` overrides it.
//!
//! [`Isa::Avx512Bf16`] is [`Isa::Avx512`] plus `vdpbf16ps`: every f32
//! kernel runs its AVX-512 code ([`Isa::f32_path`]); only a GEMM against
//! weights packed as bf16 ([`crate::gemm::WeightPrecision::Bf16`]) uses the
//! bf16 dot products. Whether a model's weights are packed as bf16 at all is
//! the model's (or the server's) choice, never a side effect of the CPU.

use std::sync::OnceLock;

use crate::KernelError;

/// The environment variable that overrides the detected instruction set.
pub const ISA_ENV: &str = "PROFILED_KERNELS";

/// One implementation path of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust loops: the reference every other path is tested against.
    Scalar,
    /// Portable SIMD through the `wide` crate (SSE2 on x86-64 by default).
    Portable,
    /// AVX2 + FMA + F16C intrinsics.
    Avx2,
    /// AVX-512 F + BW + VL intrinsics (also needs F16C and FMA).
    Avx512,
    /// AVX-512 plus AVX512_BF16 (`vdpbf16ps`: 32 bf16 multiply-adds per
    /// instruction into f32) for GEMMs against bf16-packed weights.
    Avx512Bf16,
}

/// The outcome of choosing the process-wide instruction set.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The instruction set in use.
    pub isa: Isa,
    /// The best instruction set this CPU supports.
    pub detected: Isa,
    /// The value of `PROFILED_KERNELS`, when set.
    pub requested: Option<String>,
    /// Why the request was not honoured, when it was not.
    pub rejected: Option<KernelError>,
}

impl Isa {
    /// All paths, from slowest to fastest.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
    ];

    /// The lower-case name used by `PROFILED_KERNELS` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
        }
    }

    /// Parses a name as accepted by `PROFILED_KERNELS` (case-insensitive).
    pub fn from_name(name: &str) -> Result<Isa, KernelError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "portable" | "wide" => Ok(Isa::Portable),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx-512" => Ok(Isa::Avx512),
            "avx512bf16" | "avx512-bf16" | "avx-512-bf16" => Ok(Isa::Avx512Bf16),
            _ => Err(KernelError::UnknownIsa(name.to_string())),
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar | Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => {
                Isa::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 => false,
        }
    }

    /// The path the f32 kernels take for `self`: [`Isa::Avx512`] for
    /// [`Isa::Avx512Bf16`] (which adds only the bf16 GEMM), `self` otherwise.
    pub fn f32_path(self) -> Isa {
        match self {
            Isa::Avx512Bf16 => Isa::Avx512,
            other => other,
        }
    }

    /// Returns `self` when supported, an error otherwise.
    pub fn checked(self) -> Result<Isa, KernelError> {
        if self.is_supported() {
            Ok(self)
        } else {
            Err(KernelError::UnsupportedIsa(self.name()))
        }
    }

    /// Every path this CPU supports, from slowest to fastest.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The fastest path this CPU supports.
    pub fn detect() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Scalar)
    }

    /// The process-wide selection, computed once on first use.
    pub fn selection() -> &'static Selection {
        static SELECTION: OnceLock<Selection> = OnceLock::new();
        SELECTION.get_or_init(|| {
            let detected = Isa::detect();
            let requested = std::env::var(ISA_ENV).ok().filter(|v| !v.trim().is_empty());
            let (isa, rejected) = match requested.as_deref().map(Isa::from_name) {
                None => (detected, None),
                Some(Ok(isa)) => match isa.checked() {
                    Ok(isa) => (isa, None),
                    Err(e) => (detected, Some(e)),
                },
                Some(Err(e)) => (detected, Some(e)),
            };
            Selection {
                isa,
                detected,
                requested,
                rejected,
            }
        })
    }

    /// The process-wide instruction set (see [`Isa::selection`]).
    pub fn active() -> Isa {
        Isa::selection().isa
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Ok(isa));
        }
        assert!(matches!(
            Isa::from_name("neon"),
            Err(KernelError::UnknownIsa(_))
        ));
    }

    #[test]
    fn bf16_path_runs_the_avx512_f32_kernels() {
        assert_eq!(Isa::Avx512Bf16.f32_path(), Isa::Avx512);
        for isa in [Isa::Scalar, Isa::Portable, Isa::Avx2, Isa::Avx512] {
            assert_eq!(isa.f32_path(), isa);
        }
        // The bf16 path implies the AVX-512 path.
        assert!(!Isa::Avx512Bf16.is_supported() || Isa::Avx512.is_supported());
    }

    #[test]
    fn detect_is_supported_and_scalar_always_is() {
        assert!(Isa::detect().is_supported());
        assert!(Isa::Scalar.is_supported());
        assert!(Isa::Portable.is_supported());
        assert!(Isa::supported().contains(&Isa::detect()));
    }
}
