//! The architecture interface the smp core runs on.
//!
//! The guest implements it for x86/KVM (x2APIC IPIs, `pushf`/`cli`, `pause`,
//! the TSC); the host tests implement it with threads as CPUs.

use shared::{CpuId, MAX_CPUS};

use super::block::CpuBlock;
use super::cpumask::CpuMask;
use super::csd::Csd;
use super::event::Event;

/// Interrupt state saved by [`Arch::irq_save`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqFlags(pub bool /* were enabled */);

/// What the smp core needs from the machine.
///
/// Both call-function vectors (`CALL_FUNCTION_SINGLE` and `CALL_FUNCTION`)
/// must end up in [`super::Smp::generic_smp_call_function_interrupt`], and
/// the irq_work self-interrupt in [`super::Smp::irq_work_run`], each with
/// interrupts disabled.
pub trait Arch: Sync {
    /// The current CPU's number. Must be below [`shared::MAX_CPUS`]: the core
    /// masks it into per-CPU arrays without another check.
    fn this_cpu(&self) -> CpuId;

    /// Disables interrupts on this CPU and returns the previous state.
    fn irq_save(&self) -> IrqFlags;

    /// Restores the state returned by [`Self::irq_save`]. If that re-enables
    /// interrupts, pending ones are taken.
    fn irq_restore(&self, flags: IrqFlags);

    /// Whether interrupts are disabled on this CPU.
    fn irqs_disabled(&self) -> bool;

    /// Sends the CALL_FUNCTION_SINGLE IPI to `cpu` (never this CPU).
    ///
    /// Every store this CPU made before the call (the queue insertion) must
    /// be visible to `cpu` before the interrupt is. The core calls it only
    /// after a locked queue insertion (`llist` add) that published the call,
    /// which on x86 is a full barrier already: with x2APIC the ICR `wrmsr`,
    /// which is not serializing, then needs only an `lfence` before it.
    fn send_call_function_single_ipi(&self, cpu: CpuId);

    /// Sends the CALL_FUNCTION IPI to every CPU of `mask`, which never
    /// contains this CPU. Same ordering rule as the single IPI. `online` is
    /// the online mask as the caller read it just now (an arch may send one
    /// all-but-self shorthand when `mask` is every other online CPU).
    fn send_call_function_ipi_mask(&self, mask: CpuMask, online: CpuMask);

    /// Raises the irq_work interrupt on this CPU (for `irq_work_queue`).
    fn send_irq_work_self_ipi(&self);

    /// Records, in this CPU's per-CPU storage, the address of the callback
    /// the flush is about to run (Linux's `cur_csd_func`), for the stall
    /// detector of CPUs that wait on this one. It is on the IPI path: one
    /// this-CPU store (GS-relative on x86), so that the flush needs nothing
    /// of the core's per-CPU data after the callback returns.
    fn set_running(&self, func: usize);

    /// Clears what [`Self::set_running`] recorded, once the callback
    /// returned.
    fn clear_running(&self);

    /// What `cpu` recorded last with [`Self::set_running`] (0: it runs no
    /// callback). `cpu` is below [`shared::MAX_CPUS`]. A diagnostic
    /// snapshot: nothing may be read through it.
    fn running(&self, cpu: CpuId) -> usize;

    /// `len` idle csds (each as [`Csd`]'s idle value: unlocked, all
    /// zero) that live as long as the machine, for one CPU's row of cfd
    /// csds; `None` when there is no memory for them. Called by
    /// `smpcfd_prepare_cpu` the first time a CPU is prepared (task
    /// context, on the CPU driving the hotplug); the core never frees a
    /// row, so an allocator that never frees is enough.
    fn alloc_cfd_row(&self, len: usize) -> Option<&'static [Csd]>;

    /// The core's per-CPU blocks, one per CPU number below `MAX_CPUS`,
    /// at an address that never changes. The IPI paths index them for
    /// other CPUs (a target's queue and online flag), so an address the
    /// compiler sees as a constant keeps those paths short: a base loaded
    /// from memory is reloaded after every atomic read-modify-write. The
    /// blocks of the first [`Self::cpu_blocks_backed`] CPUs are theirs;
    /// every other block must read as [`CpuBlock::new`] (the core only
    /// reads them, and may map them all onto one read-only page).
    fn cpu_blocks(&self) -> &'static [CpuBlock; MAX_CPUS];

    /// How many of [`Self::cpu_blocks`], from CPU 0's, may be written:
    /// at least every CPU that can become present.
    fn cpu_blocks_backed(&self) -> usize;

    /// Spin-loop hint (`pause`). Called in every busy-wait loop of the core.
    fn cpu_relax(&self);

    /// Monotonic time in nanoseconds, for the csd-lock stall detector. Read
    /// only every few dozen spins of a wait, never on the fast paths.
    fn now_ns(&self) -> u64;

    /// Delivers a warning or a stall report about this CPU (the WARN fired
    /// here; this CPU is the stall's waiter) to the host. Called with
    /// interrupts in any state, also from the IPI handler: it must not take
    /// locks that the interrupted code may hold, and should be cheap.
    fn report(&self, event: Event);

    /// Records one trace event in this CPU's ring (`shared::trace`): the
    /// writer, the TSC and the CPU are the arch's. Traced builds only; the
    /// default records nothing (the host tests).
    #[cfg(feature = "trace")]
    fn trace(&self, _event: shared::trace::TraceEventId, _arg32: u32, _args: [u64; 5]) {}

    /// An address in the code that calls it, for a trace event's
    /// `callsite` (the traced build inlines the smp API into its caller,
    /// so this lands in the caller's function, where Linux's `_RET_IP_`
    /// points). Traced builds only; the default is 0.
    #[cfg(feature = "trace")]
    #[inline(always)]
    fn code_address(&self) -> u64 {
        0
    }
}
