#![no_main]
// Body: see the function called (shared with the crates' fuzz_regressions tests).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    router::fuzzing::catalogue(data);
});
