//! libFuzzer target: `vmm::fuzzing::mailbox`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzzing::mailbox(data));
