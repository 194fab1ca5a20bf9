//! Runtime instruction-set dispatch, decided once per process.
//!
//! Every kernel takes an [`Isa`] argument so that tests and benchmarks can run
//! every path on one CPU in one process. [`Isa::active`] is the process
//! default: the best path this CPU supports, unless the environment variable
//! `PROFILED_KERNELS=scalar|portable|avx2|avx512` overrides it.

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
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The lower-case name used by `PROFILED_KERNELS` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses a name as accepted by `PROFILED_KERNELS` (case-insensitive).
    pub fn from_name(name: &str) -> Result<Isa, KernelError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "portable" | "wide" => Ok(Isa::Portable),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx-512" => Ok(Isa::Avx512),
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
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
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
    fn detect_is_supported_and_scalar_always_is() {
        assert!(Isa::detect().is_supported());
        assert!(Isa::Scalar.is_supported());
        assert!(Isa::Portable.is_supported());
        assert!(Isa::supported().contains(&Isa::detect()));
    }
}
