//! libFuzzer target: `vmm::fuzzing::bench`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::bench(data));
