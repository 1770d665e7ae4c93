//! Per-CPU areas, one cache-line aligned block per CPU, reached through
//! GS by its own CPU and through [`area`] by the others.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use shared::{ApicId, CpuId, percpu_window};

use super::cpu_table::CpuTable;
use super::msr;
use crate::mem::Zeroable;

/// One CPU's private area. GS points at it; `cpu`, `this`, `running` and
/// `idle_recheck` are at fixed offsets so that [`this_cpu`], [`this`],
/// [`set_running`] and the halting idle loop's test of
/// [`halt_until_recheck`] are one instruction each.
#[repr(C, align(64))]
pub struct PerCpu {
    /// CPU number (offset 0, read through GS).
    cpu: AtomicU32,
    /// x2APIC id.
    apic_id: AtomicU32,
    /// The area's own address (offset 8, read through GS).
    this: AtomicU64,
    /// Address of the smp callback this CPU runs now, or 0 (offset 16,
    /// written through GS; read by the stall detector of other CPUs).
    running: AtomicUsize,
    /// Non-zero when something the idle loop waits for may have changed
    /// (offset 24; see [`request_idle_recheck`]).
    idle_recheck: AtomicU32,
    /// Interrupts from the VMM taken by this CPU.
    pub host_requests: AtomicU64,
    /// APIC errors seen.
    pub apic_errors: AtomicU64,
}

impl PerCpu {
    /// This area's CPU's x2APIC id.
    pub fn apic_id(&self) -> ApicId {
        // Relaxed: written once by the BSP before the CPU is started; the
        // start itself (INIT/SIPI after a fence) orders it.
        ApicId(self.apic_id.load(Ordering::Relaxed))
    }

    /// What this area's CPU recorded with [`set_running`].
    pub fn running(&self) -> usize {
        // Relaxed: a diagnostic snapshot; nothing is read through it.
        self.running.load(Ordering::Relaxed)
    }
}

/// The per-CPU areas, a table of the per-CPU window: `GS` points into it,
/// and the IPI paths find other CPUs' areas at its link-time-constant
/// address (a base loaded from memory costs instructions on the round
/// trip, which the bench counts exactly); only the CPUs that exist have
/// memory behind their areas.
static AREAS: CpuTable<PerCpu> = CpuTable::new(percpu_window::ARCH_AREAS);

// SAFETY: atomics and integers: all zero is an area not yet set up
// (`init_area` fills it in).
unsafe impl Zeroable for PerCpu {}

/// The area of `cpu`, for reading (CPU numbers are masked into range;
/// the area of a CPU that does not exist reads as zero).
#[inline(always)]
pub fn area(cpu: CpuId) -> &'static PerCpu {
    AREAS.get(cpu)
}

/// Records the identity of `cpu` (done by the BSP for every CPU at boot).
/// A CPU without an area of its own (beyond the CPUs the window was
/// mapped for) is left alone.
pub fn init_area(cpu: CpuId, apic_id: ApicId) {
    let Some(a) = AREAS.backed(cpu) else {
        return;
    };
    // Relaxed: see `PerCpu::apic_id`.
    a.cpu.store(cpu.0, Ordering::Relaxed);
    a.apic_id.store(apic_id.0, Ordering::Relaxed);
    a.this.store(a as *const PerCpu as u64, Ordering::Relaxed);
}

const _: () = assert!(core::mem::offset_of!(PerCpu, cpu) == 0);
const _: () = assert!(core::mem::offset_of!(PerCpu, this) == 8);
const RUNNING: usize = 16;
const _: () = assert!(core::mem::offset_of!(PerCpu, running) == RUNNING);
const IDLE_RECHECK: usize = 24;
const _: () = assert!(core::mem::offset_of!(PerCpu, idle_recheck) == IDLE_RECHECK);

/// Points this CPU's GS at the area of `cpu`. Call once per CPU, first
/// thing after entry.
pub fn install(cpu: CpuId) {
    let base = area(cpu) as *const PerCpu as u64;
    // SAFETY: GS_BASE takes any canonical address; this one is a slot of
    // the per-CPU window, mapped for ever, and nothing else uses GS in
    // this kernel.
    unsafe { msr::IA32_GS_BASE.write(base) };
}

/// The current CPU number (one GS-relative load).
#[inline(always)]
pub fn this_cpu() -> CpuId {
    let cpu: u32;
    // SAFETY: GS points at this CPU's `PerCpu` (installed before any code
    // that asks), whose first field is the CPU number.
    unsafe {
        core::arch::asm!("mov {:e}, gs:[0]", out(reg) cpu, options(nostack, preserves_flags, readonly))
    };
    CpuId(cpu)
}

/// The current CPU's area (one GS-relative load of its address).
#[inline(always)]
pub fn this() -> &'static PerCpu {
    let p: u64;
    // SAFETY: GS points at this CPU's `PerCpu`, whose field at offset 8 is
    // its own address, set by `init_area` before the CPU runs.
    unsafe {
        core::arch::asm!("mov {}, gs:[8]", out(reg) p, options(nostack, preserves_flags, readonly))
    };
    // SAFETY: `p` is the address of this CPU's slot of `AREAS`.
    unsafe { &*(p as *const PerCpu) }
}

/// Records the smp callback this CPU is about to run (one GS-relative
/// store; Linux's `this_cpu_write(cur_csd_func, ...)`).
#[inline(always)]
pub fn set_running(func: usize) {
    // SAFETY: GS points at this CPU's `PerCpu`, whose `running` (an aligned
    // AtomicUsize, read atomically by other CPUs: an aligned 8-byte store
    // is atomic on x86) is at offset RUNNING.
    unsafe {
        core::arch::asm!(
            "mov qword ptr gs:[{off}], {f}",
            off = const RUNNING,
            f = in(reg) func,
            options(nostack, preserves_flags)
        )
    };
}

/// Clears what [`set_running`] recorded (one GS-relative store).
#[inline(always)]
pub fn clear_running() {
    // SAFETY: as in `set_running`.
    unsafe {
        core::arch::asm!(
            "mov qword ptr gs:[{off}], 0",
            off = const RUNNING,
            options(nostack, preserves_flags)
        )
    };
}

/// Tells `cpu`'s idle loop to look again at everything it waits for (a
/// hotplug request, an idle task, its idle mode) at its next wake-up:
/// a halted CPU that only takes call-function interrupts otherwise goes
/// straight back to `hlt` ([`halt_until_recheck`]). Call after the change
/// it should see, and before the interrupt that wakes the CPU.
pub fn request_idle_recheck(cpu: CpuId) {
    // Release: pairs with the Acquire swap in `take_idle_recheck` on
    // `cpu`: the change made before this store is visible to the idle
    // loop's look that follows the swap which sees it.
    area(cpu).idle_recheck.store(1, Ordering::Release);
}

/// On this CPU, interrupts disabled: clears its recheck request, before
/// the idle loop looks at what it waits for. A request made after this
/// stays set for the next look.
#[inline(always)]
pub fn take_idle_recheck() {
    // Acquire: pairs with the Release store in `request_idle_recheck`.
    this().idle_recheck.swap(0, Ordering::Acquire);
}

/// Whether a recheck was requested of this CPU since its last
/// [`take_idle_recheck`] (a hint for the polling loop: it then leaves its
/// spin for a full look, which takes the request).
#[inline(always)]
pub fn idle_recheck_requested() -> bool {
    let v: u32;
    // SAFETY: GS points at this CPU's `PerCpu`, whose `idle_recheck` (an
    // aligned AtomicU32: the load is atomic on x86) is at offset
    // IDLE_RECHECK. Relaxed: a hint; the look that acts on it follows the
    // Acquire swap in `take_idle_recheck`.
    unsafe {
        core::arch::asm!(
            "mov {:e}, gs:[{off}]",
            out(reg) v,
            off = const IDLE_RECHECK,
            options(nostack, preserves_flags, readonly)
        )
    };
    v != 0
}

/// The halting idle loop's wait: enables interrupts and halts (the `sti`
/// shadow makes the pair atomic), and after each interrupt halts again
/// unless it left a recheck requested ([`request_idle_recheck`]); returns
/// with interrupts disabled. A call-function interrupt thus costs the
/// idle loop five instructions (`cli`, the test, `sti`, `hlt`).
#[inline(always)]
pub fn halt_until_recheck() {
    // SAFETY: GS points at this CPU's `PerCpu`, whose `idle_recheck` (an
    // AtomicU32 written by other CPUs: an aligned load is atomic on x86)
    // is at offset IDLE_RECHECK; `sti; hlt` only waits for an interrupt,
    // whose handlers may write memory (the block is not `nomem`). The
    // plain load is Relaxed: see `idle_recheck_requested`; a request
    // stored before the interrupt that ends the `hlt` is seen by the test
    // after it (the sender's ICR write is fenced after its store).
    unsafe {
        core::arch::asm!(
            "2:",
            "sti",
            "hlt",
            "cli",
            "cmp dword ptr gs:[{off}], 0",
            "je 2b",
            off = const IDLE_RECHECK,
            options(nostack)
        )
    };
}
