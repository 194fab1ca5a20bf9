//! libFuzzer target `model_files`: the body is `profiled_fuzz::model_files` (see crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = profiled_fuzz::model_files(data);
});
