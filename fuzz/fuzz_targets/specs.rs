//! libFuzzer target: `vmm::fuzzing::specs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::specs(data));
