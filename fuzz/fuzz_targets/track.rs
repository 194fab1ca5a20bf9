//! libFuzzer target `track`: the body is `profiled_fuzz::track` (see crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = profiled_fuzz::track(data);
});
