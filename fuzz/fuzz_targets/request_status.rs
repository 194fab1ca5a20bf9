//! libFuzzer target `request_status`: the body is `profiled_fuzz::request_status` (see crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = profiled_fuzz::request_status(data);
});
