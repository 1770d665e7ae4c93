//! What the guest runs once the kernel booted: each scenario uses the smp
//! core and the kernel below it, and returns the status the guest exits
//! with.

pub mod bench;
pub mod demo;
pub mod hostile;
pub mod hotplug_cases;
pub mod selftest;
pub mod torture;
pub mod wait;

use shared::status::GuestStatus;

use crate::kernel::Boot;
use crate::kprintln;

/// Runs the scenario the command line names.
pub fn run(boot: &Boot) -> GuestStatus {
    let params = &boot.params;
    match params.scenario {
        "demo" => demo::run(),
        "selftest" => selftest::run(),
        "wait" => wait::run(params.wait_ms),
        "hotplug" => hotplug_cases::run(params, boot.present),
        "bench" => bench::run(params),
        "torture" => torture::run(boot.cmdline()),
        "hostile" => hostile::run(boot.info),
        other => {
            kprintln!(
                "unknown scenario {other:?}; known: demo, selftest, hotplug, wait, torture, hostile, bench"
            );
            GuestStatus::BadRequest
        }
    }
}
