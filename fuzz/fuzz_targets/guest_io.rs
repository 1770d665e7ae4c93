//! libFuzzer target: `vmm::fuzzing::guest_io`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::guest_io(data));
