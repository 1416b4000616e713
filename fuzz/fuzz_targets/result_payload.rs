//! A worker's report through the coordinator's output bounds, checks, comparison and assembly.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sparecycles_coordinator::fuzz_harness::result_payload(data);
});
