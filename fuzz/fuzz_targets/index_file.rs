//! libFuzzer target `index_file`: the body is `profiled_fuzz::index_file` (see crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = profiled_fuzz::index_file(data);
});
