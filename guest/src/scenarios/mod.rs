//! What the guest runs once the kernel booted: each scenario uses the smp
//! core and the kernel below it, and returns the status the guest exits
//! with.

pub mod bench;
pub mod demo;
pub mod hostile;
pub mod hotplug_cases;
pub mod percpu;
pub mod selftest;
pub mod torture;
pub mod wait;

use shared::Scenario;
use shared::status::GuestStatus;

use crate::kernel::Boot;
use crate::kprintln;

/// Runs the scenario the boot information names.
pub fn run(boot: &Boot) -> GuestStatus {
    let params = &boot.params;
    let Ok(scenario) = Scenario::try_from(boot.info.scenario) else {
        kprintln!("unknown scenario number {}", boot.info.scenario);
        return GuestStatus::BadRequest;
    };
    match scenario {
        Scenario::Demo => demo::run(),
        Scenario::Selftest => selftest::run(),
        Scenario::Wait => wait::run(params.wait_ms),
        Scenario::Hotplug => hotplug_cases::run(params, boot.present),
        Scenario::Bench => bench::run(params),
        Scenario::Torture => torture::run(boot.cmdline()),
        Scenario::Hostile => hostile::run(boot.info),
    }
}
