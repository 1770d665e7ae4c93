//! The smp core's architecture interface on x86_64/KVM: x2APIC IPIs behind
//! the locked queue insertion and an `lfence` (delivery modes in `ipi.rs`,
//! state of the arch value), `pushfq`/`cli` for interrupt state, `pause`,
//! and the TSC.

use shared::vectors;
use shared::{CpuId, MAX_CPUS, percpu_window};

use super::cpu_table::CpuTable;
use super::ipi::IpiDelivery;
use super::x2apic;
use super::{cpu, ipi_fault, paging, percpu};
use crate::smp::{Arch, CpuBlock, CpuMask, Csd, Event, IrqFlags};

/// The smp core's per-CPU blocks: a table of the per-CPU window, at a
/// link-time-constant address (see `Arch::cpu_blocks`).
static BLOCKS: CpuTable<CpuBlock> = CpuTable::new(percpu_window::SMP_BLOCKS);
use crate::{kprintln, report, time};

/// x86_64 with the in-kernel x2APIC of KVM.
pub struct X86 {
    /// How call-function IPIs are delivered.
    ipi: IpiDelivery,
}

impl X86 {
    /// The one instance, with physical delivery until boot chooses.
    pub const fn new() -> Self {
        X86 {
            ipi: IpiDelivery::new(),
        }
    }

    /// The IPI delivery modes and what boot found about them.
    #[inline(always)]
    pub fn ipi(&self) -> &IpiDelivery {
        &self.ipi
    }
}

impl Default for X86 {
    fn default() -> Self {
        Self::new()
    }
}

impl Arch for X86 {
    #[inline(always)]
    fn this_cpu(&self) -> CpuId {
        percpu::this_cpu()
    }

    #[inline(always)]
    fn set_running(&self, func: usize) {
        percpu::set_running(func);
    }

    #[inline(always)]
    fn clear_running(&self) {
        percpu::clear_running();
    }

    #[inline(always)]
    fn cpu_blocks(&self) -> &'static [CpuBlock; MAX_CPUS] {
        BLOCKS.all()
    }

    fn cpu_blocks_backed(&self) -> usize {
        paging::window_backed() as usize
    }

    fn alloc_cfd_row(&self, len: usize) -> Option<&'static [Csd]> {
        // Zeroed guest memory, never freed: zero is an idle csd (see its
        // `Zeroable` impl), so a row of a thousand csds costs no writes.
        crate::mem::alloc_zeroed(len).ok()
    }

    fn running(&self, cpu: CpuId) -> usize {
        percpu::area(cpu).running()
    }

    #[inline(always)]
    fn irq_save(&self) -> IrqFlags {
        let enabled = cpu::irqs_enabled();
        cpu::cli();
        IrqFlags(enabled)
    }

    #[inline(always)]
    fn irq_restore(&self, flags: IrqFlags) {
        if flags.0 {
            cpu::sti();
        }
    }

    #[inline(always)]
    fn irqs_disabled(&self) -> bool {
        !cpu::irqs_enabled()
    }

    #[inline(always)]
    fn send_call_function_single_ipi(&self, cpu: CpuId) {
        // The fault injection's drop is decided in `ipi`'s slow path.
        self.ipi.send_call_function_single(cpu);
    }

    fn send_call_function_ipi_mask(&self, mask: CpuMask, online: CpuMask) {
        let mask = ipi_fault::filter_mask(mask);
        if mask.is_empty() {
            return;
        }
        self.ipi.send_call_function_mask(mask, online);
    }

    fn send_irq_work_self_ipi(&self) {
        x2apic::send_self(vectors::IRQ_WORK);
    }

    #[inline(always)]
    fn cpu_relax(&self) {
        cpu::pause();
    }

    fn now_ns(&self) -> u64 {
        time::now_ns()
    }

    #[cfg(feature = "trace")]
    fn trace(&self, event: shared::trace::TraceEventId, arg32: u32, args: [u64; 5]) {
        super::trace::record(event, arg32, args);
    }

    #[cfg(feature = "trace")]
    #[inline(always)]
    fn code_address(&self) -> u64 {
        cpu::code_address()
    }

    fn report(&self, event: Event) {
        // The event is the record: sent as it is, then described.
        report::send(event);
        let this = percpu::this_cpu();
        match event {
            Event::Warn {
                kind,
                count,
                detail,
            } => kprintln!(
                "WARNING: {} on CPU {} (#{}, detail {:#x})",
                kind.name(),
                this,
                count,
                detail
            ),
            Event::CsdStall {
                id,
                target,
                func,
                info,
                waited_ns,
                target_running,
                nth,
                resent_ipi,
            } => kprintln!(
                "csd: {} non-responsive CSD lock (#{}) on CPU#{}, waiting {} ns for CPU#{} {:#x}({:#x}); target {}{}",
                if nth == 1 { "Detected" } else { "Continued" },
                id,
                this,
                waited_ns,
                target,
                func,
                info,
                if target_running == 0 {
                    "unresponsive"
                } else {
                    "handling a request"
                },
                if resent_ipi { "; re-sent the IPI" } else { "" }
            ),
            Event::CsdUnstuck {
                id,
                target,
                waited_ns,
                ..
            } => kprintln!(
                "csd: CSD lock (#{}) got unstuck on CPU#{}, CPU#{} released the lock after {} ns",
                id,
                this,
                target,
                waited_ns
            ),
            // The core reports no other kind.
            _ => {}
        }
    }
}
