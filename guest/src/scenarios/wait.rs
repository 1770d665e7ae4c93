//! `run=wait`: the guest only serves the host's requests (CPU down and up,
//! statistics) until the host says it is finished.

use shared::status::GuestStatus;

use crate::arch::x86_64::cpu;
use crate::kernel::{SMP, host_requests};
use crate::smp::CpuList;
use crate::{kprintln, time};

/// Serves the host's requests until it sends `Finish` (or `ms` pass),
/// then reports the online CPUs.
pub fn run(ms: u64) -> GuestStatus {
    kprintln!("waiting for the host (at most {ms} ms)");
    let deadline = time::Deadline::after_ms(ms);
    cpu::sti();
    while !host_requests::finish_requested() && !deadline.expired() {
        cpu::pause();
    }
    kprintln!(
        "{} CPUs online: {}",
        SMP.num_online_cpus(),
        CpuList(SMP.online_mask())
    );
    if host_requests::finish_requested() {
        GuestStatus::Success
    } else {
        kprintln!("the host did not finish in time");
        GuestStatus::Failure
    }
}
