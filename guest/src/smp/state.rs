//! A machine's cross-call state, [`Smp`]: the masks, the per-CPU blocks
//! (call queue, csd, irq_work list, counters) and the per-(caller, target)
//! csds. The operations on it are `impl` blocks in the other files of the
//! core.

use shared::{CpuId, MAX_CPUS};

use super::arch::Arch;
use super::block::CpuBlock;
use super::cpumask::AtomicCpuMask;
use super::csd::Csd;
use super::llist::LlistHead;
use super::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Default csd-lock stall timeout: 5 s, as Linux's `smp.csd_lock_timeout`.
pub const CSD_LOCK_TIMEOUT_DEFAULT_NS: u64 = 5_000_000_000;

/// A machine's cross-call state. See the module docs.
///
/// Usable as a `static`: `static SMP: Smp<MyArch> = Smp::new(MyArch::new());`.
pub struct Smp<A: Arch> {
    pub(super) arch: A,
    pub(super) possible: AtomicCpuMask,
    pub(super) present: AtomicCpuMask,
    pub(super) online: AtomicCpuMask,
    pub(super) nr_cpu_ids: AtomicU32,
    pub(super) setup_max_cpus: AtomicU32,
    pub(super) csd_lock_timeout_ns: AtomicU64,
    /// Stall ids handed out so far (Linux's `csd_bug_count`).
    pub(super) csd_bug_count: AtomicU32,
    /// Stalls reported and not yet unstuck (Linux's `n_csd_lock_stuck`).
    pub(super) csd_lock_stuck: AtomicU32,
    /// The offline-IPI warning has been reported (it is reported once).
    pub(super) offline_warned: AtomicBool,
    /// IPIs the stall detector re-sent to a CPU that ran no csd (each is
    /// also in the waiter's `ipis_requested`).
    pub(super) stall_resends: AtomicU64,
}

/// One CPU's cfd csds as a sender finds them: the row's base and its
/// power-of-two length minus one. Entry *t* is locked only by the row's
/// CPU, for calls to CPU *t* (an index is masked, never out of bounds).
#[derive(Clone, Copy)]
pub(super) struct CfdRow {
    base: *const Csd,
    mask: usize,
}

impl CfdRow {
    /// How many csds the row has.
    pub(super) fn len(&self) -> usize {
        self.mask.wrapping_add(1)
    }

    /// The csd for calls to `cpu`.
    #[inline(always)]
    pub(super) fn csd(&self, cpu: CpuId) -> &'static Csd {
        // SAFETY: `base` points to `mask + 1` csds that are never freed
        // (see `CpuBlock::cfd_row`), and the index is masked below that.
        unsafe { &*self.base.add(cpu.index() & self.mask) }
    }
}

impl<A: Arch> Smp<A> {
    /// A machine with no CPU possible, present or online yet,
    /// `nr_cpu_ids == MAX_CPUS`, and the default 5 s stall timeout.
    pub const fn new(arch: A) -> Self {
        Self {
            arch,
            possible: AtomicCpuMask::new(),
            present: AtomicCpuMask::new(),
            online: AtomicCpuMask::new(),
            nr_cpu_ids: AtomicU32::new(MAX_CPUS as u32),
            setup_max_cpus: AtomicU32::new(MAX_CPUS as u32),
            csd_lock_timeout_ns: AtomicU64::new(CSD_LOCK_TIMEOUT_DEFAULT_NS),
            csd_bug_count: AtomicU32::new(0),
            csd_lock_stuck: AtomicU32::new(0),
            offline_warned: AtomicBool::new(false),
            stall_resends: AtomicU64::new(0),
        }
    }

    /// The architecture implementation.
    #[inline]
    pub fn arch(&self) -> &A {
        &self.arch
    }

    /// Every CPU number's block (see [`Arch::cpu_blocks`]): at a fixed
    /// address, for reading; only [`Self::backed_blocks`] may be written.
    #[inline(always)]
    pub(super) fn blocks(&self) -> &'static [CpuBlock; MAX_CPUS] {
        self.arch.cpu_blocks()
    }

    /// The blocks of the CPUs that exist, from CPU 0's: the ones that may
    /// be written.
    pub(super) fn backed_blocks(&self) -> &'static [CpuBlock] {
        let n = self.arch.cpu_blocks_backed().min(MAX_CPUS);
        &self.blocks()[..n]
    }

    /// The block of `cpu` for reading, or `None` for a CPU number at or
    /// above `MAX_CPUS` (the block of a CPU that does not exist reads as a
    /// new one).
    #[inline(always)]
    pub(super) fn pcpu_checked(&self, cpu: CpuId) -> Option<&CpuBlock> {
        self.blocks().get(cpu.index())
    }

    /// The block of `cpu` for writing, or `None` for a CPU that does not
    /// exist (see [`Arch::cpu_blocks_backed`]).
    pub(super) fn pcpu_backed(&self, cpu: CpuId) -> Option<&CpuBlock> {
        self.backed_blocks().get(cpu.index())
    }

    /// Per-CPU data of a CPU number known to be valid (from
    /// [`Arch::this_cpu`] or checked online). Masked, never a bounds panic.
    #[inline]
    pub(super) fn pcpu(&self, cpu: CpuId) -> &CpuBlock {
        &self.blocks()[cpu.index() % MAX_CPUS]
    }

    /// The call queue of a valid CPU (masked like [`Self::pcpu`]).
    #[inline]
    pub(super) fn queue(&self, cpu: CpuId) -> &LlistHead {
        &self.pcpu(cpu).queue.0
    }

    /// The cfd csds of the CPU whose block is `pcpu`, or `None` before its
    /// first `smpcfd_prepare_cpu`.
    #[inline(always)]
    pub(super) fn cfd_row(&self, pcpu: &CpuBlock) -> Option<CfdRow> {
        // Acquire: pairs with the Release store in `smpcfd_prepare_step`,
        // which claimed the length before it published the row.
        let base = pcpu.cfd_row.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // Relaxed: published by the Acquire load above; never changes once
        // the row is set.
        let len = pcpu.cfd_len.load(Ordering::Relaxed) as usize;
        Some(CfdRow {
            base: base.cast_const(),
            mask: len.wrapping_sub(1),
        })
    }

    /// Host tests: the address of the cfd csd that `this` uses for calls
    /// to `cpu` (0 if `this` was never prepared).
    #[cfg(test)]
    pub(crate) fn cfd_csd_addr(&self, this: CpuId, cpu: CpuId) -> usize {
        self.cfd_row(self.pcpu(this))
            .map_or(0, |row| row.csd(cpu) as *const Csd as usize)
    }

    /// Whether the call that `caller` queued to `cpu` through
    /// `smp_call_function_many` and friends is still in flight: its cfd csd
    /// is locked. While a waiting call's function runs on `cpu` this holds
    /// (its waiter may return only after the function); the tests check it
    /// from inside that function.
    ///
    /// Context: any. A snapshot; an invalid CPU is masked like the others.
    pub fn many_call_in_flight(&self, caller: CpuId, cpu: CpuId) -> bool {
        self.cfd_row(self.pcpu(caller))
            .is_some_and(|row| row.csd(cpu).is_locked())
    }

    /// Sets the csd-lock stall timeout; 0 turns the detector off.
    ///
    /// Context: any.
    pub fn set_csd_lock_timeout_ns(&self, ns: u64) {
        // Relaxed: a tunable, re-read at every check; nothing else is
        // published through it.
        self.csd_lock_timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// The csd-lock stall timeout in nanoseconds (0: off).
    pub fn csd_lock_timeout_ns(&self) -> u64 {
        // Relaxed: see `set_csd_lock_timeout_ns`.
        self.csd_lock_timeout_ns.load(Ordering::Relaxed)
    }

    /// How many csd-lock stalls were detected so far (each counted at its
    /// first report; Linux's `csd_bug_count`).
    pub fn csd_stalls_detected(&self) -> u32 {
        // Relaxed: a diagnostic count; nothing is published through it.
        self.csd_bug_count.load(Ordering::Relaxed)
    }

    /// IPIs the stall detector re-sent so far (to a target that was
    /// running no csd when a wait was reported: Linux's "Re-sending CSD
    /// lock IPI"). They are part of the waiters' `ipis_requested`.
    pub fn stall_ipis_resent(&self) -> u64 {
        // Relaxed: a diagnostic count; nothing is published through it.
        self.stall_resends.load(Ordering::Relaxed)
    }

    /// Whether some csd-lock wait is currently reported as stuck (Linux's
    /// `csd_lock_is_stuck`, for other watchdogs to stay quiet).
    pub fn csd_lock_is_stuck(&self) -> bool {
        // Relaxed: a diagnostic counter.
        self.csd_lock_stuck.load(Ordering::Relaxed) != 0
    }
}
