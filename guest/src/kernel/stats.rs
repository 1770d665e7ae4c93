//! Statistics the host asks for: per-CPU counters of the smp core and of
//! the arch's IPI delivery.

use shared::CpuId;
use shared::mailbox::CpuStatsWire;

use super::machine::SMP;
use super::mailbox;
use crate::arch::x86_64::{ipi_fault, poll_idle};

/// IPIs `cpu` has sent (call-function and irq_work self-IPIs), derived
/// rather than counted on the send path: the smp core already counts
/// every IPI it asks for, so this is its count less the ones skipped for a
/// polling target and the ones the fault injection dropped.
pub fn ipis_sent(cpu: CpuId) -> u64 {
    SMP.stats(cpu)
        .ipis_requested
        .saturating_sub(poll_idle::skipped(cpu))
        .saturating_sub(ipi_fault::dropped_by(cpu))
}

/// Writes every possible CPU's counters to the mailbox.
pub fn write_stats() {
    mailbox::write_stats(SMP.nr_cpu_ids() as usize, |i| {
        let cpu = CpuId(i as u32);
        let core = SMP.stats(cpu);
        CpuStatsWire {
            online: u64::from(SMP.cpu_online(cpu)),
            ipi_sent: ipis_sent(cpu),
            ipi_received: core.kicks_taken,
            callbacks_run: core.callbacks_run,
            calls_queued: core.calls_queued,
        }
    });
}
