//! A submitted job spec (JSON or TOML) through parsing, checking and planning.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sparecycles_coordinator::fuzz_harness::job_spec(data);
});
