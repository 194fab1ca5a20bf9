//! The kernel crate's one error type.

/// Errors returned by the safe kernel entry points.
///
/// Every public function checks slice lengths and shapes before it enters
/// `unsafe` SIMD code, so a caller bug becomes one of these instead of an
/// out-of-bounds access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A slice or dimension does not have the length the operation needs.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        /// Which argument or dimension is wrong.
        what: &'static str,
        /// The length the operation needs.
        expected: usize,
        /// The length it was given.
        got: usize,
    },
    /// A parameter is outside the range the kernel supports (e.g. zero heads).
    #[error("invalid parameter {what}: {detail}")]
    Invalid {
        /// The parameter.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
    /// The requested instruction set is not available on this CPU.
    #[error("instruction set {0} is not supported by this CPU")]
    UnsupportedIsa(&'static str),
    /// `PROFILED_KERNELS` names no known instruction set.
    #[error("unknown instruction set {0:?} (expected scalar, portable, avx2 or avx512)")]
    UnknownIsa(String),
}

/// Checks that `got == expected`, naming `what` otherwise.
#[inline]
pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Shape {
            what,
            expected,
            got,
        })
    }
}
