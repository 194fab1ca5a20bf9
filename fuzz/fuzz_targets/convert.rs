//! libFuzzer target `convert`: the body is `profiled_fuzz::convert` (see crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = profiled_fuzz::convert(data);
});
