//! `profiled-kernels`: hand-written CPU kernels for the profile encoder.
//!
//! f16 storage, f32 accumulation; no I/O, no async, no allocation in the
//! steady state (callers own reusable workspaces). Every entry point takes an
//! [`Isa`] so each implementation path can be exercised on one CPU; the
//! process default comes from [`Isa::active`] (`PROFILED_KERNELS` overrides).
//!
//! Safety model: public functions are safe and check every length before
//! they enter `unsafe` SIMD code; every `unsafe` block carries a `// SAFETY:`
//! comment saying why its pointer arithmetic stays in bounds.

mod dispatch;
mod error;
mod simd;

pub mod activation;
pub mod attention;
pub mod block;
pub mod convert;
pub mod gemm;
pub mod probe;
pub mod rng;
pub mod scan;
pub mod vector;

pub use dispatch::{ISA_ENV, Isa, Selection};
pub use error::KernelError;
pub use half::f16;
