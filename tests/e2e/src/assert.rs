//! The assertion the tests share: a call failed with a given status code and
//! a message naming the problem.

use tonic::{Code, Status};

/// Asserts that `r` is an error with status `code` whose message contains
/// `needle` (`""` checks the code only). Panics otherwise, showing the
/// message.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, needle: &str) {
    let s = r.expect_err("expected an error");
    assert_eq!(s.code(), code, "message: {}", s.message());
    assert!(
        s.message().contains(needle),
        "message {:?} does not contain {needle:?}",
        s.message()
    );
}
