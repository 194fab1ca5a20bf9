//! libFuzzer target `tokenizer`: the body is `profiled_fuzz::tokenizer` (see crates/fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = profiled_fuzz::tokenizer(data);
});
