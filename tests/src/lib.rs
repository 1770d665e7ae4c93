//! Helpers for the integration tests: boot a VM through the vmm library
//! and explain any failure with the whole guest console.

use std::time::Duration;

use vmm::{Outcome, VmConfig};

/// A config for `cpus` vCPUs running `scenario` with extra command-line
/// words, and a watchdog generous enough for a slow nested host.
pub fn config(cpus: u32, scenario: &str, cmdline: &str) -> VmConfig {
    VmConfig {
        cpus,
        scenario: scenario.into(),
        cmdline: cmdline.into(),
        timeout: Duration::from_secs(300),
        ..VmConfig::default()
    }
}

/// Everything about a run, for a failing assertion's message.
pub fn explain(o: &Outcome) -> String {
    format!(
        "ending: {:?}\n--- console ---\n{}--- diagnosis ---\n{}--- protocol errors ---\n{:#?}",
        o.ending,
        o.console,
        o.diagnosis(),
        o.protocol_errors
    )
}

/// Runs `config`, panicking with the setup error if it could not start.
pub fn run(config: &VmConfig) -> Outcome {
    match vmm::run(config) {
        Ok(o) => o,
        Err(e) => panic!("vmm failed to start: {e}"),
    }
}

/// Timeout used by tests that expect the watchdog to fire.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(2);
