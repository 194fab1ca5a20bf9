//! The crate's test support (`profiled_state::testing`, feature `testing`).
#![allow(unused_imports)]

pub use profiled_state::testing::*;
