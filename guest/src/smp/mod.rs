//! Linux's SMP cross-call core (`kernel/smp.c`), generic over [`Arch`].
//!
//! One [`Smp`] value is a whole machine's cross-call state: per-CPU call
//! queues (lock-free `llist`s, each on its own cache line), per-CPU csds, the
//! per-(caller, target) csds of multi-CPU calls, irq_work lists, the
//! possible / present / online masks, per-CPU counters and the csd-lock
//! stall detector. The guest keeps it in a `static`; the host tests run it
//! with threads as CPUs.
//!
//! How a call travels (see `call.rs`, `flush.rs`):
//! 1. the caller locks a csd (on its stack when it waits, else a per-CPU
//!    one), fills in `func`/`info`, and adds it to the target's queue;
//! 2. only if that queue was empty does it send an IPI;
//! 3. the target's IPI handler takes the whole queue, runs the waited-for
//!    (SYNC) calls first, then the others, then irq_work, unlocking each csd
//!    before (ASYNC) or after (SYNC) its function;
//! 4. a waiting caller spins until its csd is unlocked; if that takes longer
//!    than the stall timeout it reports, re-sends the IPI, and reports again
//!    when the lock is released.
//!
//! Differences from the v3.16 seed, all taken from modern Linux: typed csd
//! flags (`SYNC` / `ASYNC` / `IRQ_WORK`) and a SYNC-first flush; one csd per
//! (caller, target) pair; IPIs only to CPUs whose queue was empty, one
//! single-target IPI when only one CPU needs one; the local part of a
//! multi-CPU call runs while the others work; waiting on exactly the csds
//! that were enqueued; `-EBUSY` for a busy async csd; the offline-IPI
//! warning actually fires; remote irq_work shares the call queue; the stall
//! detector.

// Under loom only the lock-free primitives are built (see sync.rs), and
// parts of them are used only by the rest of the core.
#![cfg_attr(loom, allow(dead_code))]

mod sync;

#[cfg(not(loom))]
mod arch;
#[cfg(not(loom))]
mod call;
#[cfg(not(loom))]
mod cpumask;
mod csd;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod flush;
#[cfg(not(loom))]
mod hotplug;
#[cfg(not(loom))]
mod irq_work;
mod llist;
#[cfg(not(loom))]
mod stall;
#[cfg(not(loom))]
mod stats;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(not(loom))]
pub use arch::{Arch, IrqFlags};
#[cfg(not(loom))]
pub use cpumask::{CpuList, CpuMask, CpuMaskIter};
pub use csd::Csd;
#[cfg(not(loom))]
pub use event::Event;
#[cfg(not(loom))]
pub use irq_work::{IrqWork, IrqWorkFunc};
pub use shared::record::WarnKind;
pub use shared::{CpuId, MAX_CPUS};
#[cfg(not(loom))]
pub use stats::CpuStats;

#[cfg(not(loom))]
use cpumask::AtomicCpuMask;
#[cfg(not(loom))]
use llist::LlistHead;
#[cfg(not(loom))]
use stats::Counters;
#[cfg(not(loom))]
use sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// A cross-call function; `info` is an opaque word, like C's `void *`.
pub type SmpCallFunc = fn(info: usize);

/// A per-CPU predicate for [`Smp::on_each_cpu_cond`]: whether to run the
/// function on `cpu`.
pub type SmpCondFunc = fn(cpu: CpuId, info: usize) -> bool;

/// Why a cross-call was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    /// No such CPU, or it is offline (`-ENXIO`).
    Nxio,
    /// The async csd is still in flight (`-EBUSY`).
    Busy,
    /// Per-CPU call data could not be "allocated" (`-ENOMEM`).
    NoMem,
}

impl SmpError {
    /// The Linux errno: -6, -16 or -12.
    pub const fn errno(self) -> i32 {
        match self {
            SmpError::Nxio => -6,
            SmpError::Busy => -16,
            SmpError::NoMem => -12,
        }
    }
}

/// Flags of [`Smp::smp_call_function_many_cond`] (Linux's `SCF_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScfFlags(pub u32);

impl ScfFlags {
    /// Neither wait nor run locally.
    pub const NONE: ScfFlags = ScfFlags(0);
    /// Wait until the function has run on every target.
    pub const WAIT: ScfFlags = ScfFlags(1 << 0);
    /// Also run it on this CPU if this CPU is in the mask.
    pub const RUN_LOCAL: ScfFlags = ScfFlags(1 << 1);

    /// `WAIT` if `wait`, else nothing.
    #[inline]
    pub const fn wait_if(wait: bool) -> ScfFlags {
        ScfFlags(wait as u32)
    }

    /// Whether all flags of `other` are set.
    #[inline]
    pub const fn contains(self, other: ScfFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for ScfFlags {
    type Output = ScfFlags;
    #[inline]
    fn bitor(self, rhs: ScfFlags) -> ScfFlags {
        ScfFlags(self.0 | rhs.0)
    }
}

/// Default csd-lock stall timeout: 5 s, as Linux's `smp.csd_lock_timeout`.
pub const CSD_LOCK_TIMEOUT_DEFAULT_NS: u64 = 5_000_000_000;

/// A value on a cache line of its own (Linux's `____cacheline_aligned`).
#[cfg(not(loom))]
#[repr(C, align(64))]
struct CacheLine<T>(T);

/// The per-(caller, target) csds of one caller (Linux's `cfd_data->csd`):
/// entry *t* is locked only by the caller, for calls to CPU *t*. 2 KiB, so
/// a caller's row is found with a shift.
#[cfg(not(loom))]
#[repr(C)]
struct CfdCsds([Csd; MAX_CPUS]);

/// What the core keeps per CPU, apart from the cfd csds (a separate array,
/// so that every per-CPU lookup is a shift: these blocks are 256 bytes
/// apart, the csd rows 2 KiB). The call queue's head is in here too, on a
/// line of its own, so that the IPI handler finds its queue and its other
/// data from one index.
#[cfg(not(loom))]
#[repr(C, align(256))]
struct PerCpu {
    /// The csd of this CPU's non-waiting single calls (`csd_data`);
    /// unlocked by remote CPUs, so alone on its line.
    csd_data: CacheLine<Csd>,
    /// This CPU's irq_work list (only this CPU adds to it).
    irq_work: LlistHead,
    /// Non-zero while this CPU is between testing a target online and
    /// queueing to it (see `hotplug.rs`, `synchronize_senders`).
    sending: AtomicU32,
    /// NUMA node.
    node: AtomicU32,
    /// Whether `smpcfd_prepare_cpu` has set up this CPU's cfd.
    cfd_prepared: AtomicBool,
    /// Fault injection: make `smpcfd_prepare_cpu` fail.
    cfd_alloc_fail: AtomicBool,
    counters: Counters,
    /// The call queue: written by every other CPU, alone on its line.
    queue: CacheLine<LlistHead>,
}

#[cfg(not(loom))]
impl PerCpu {
    const fn new() -> Self {
        Self {
            csd_data: CacheLine(Csd::idle()),
            irq_work: LlistHead::new(),
            sending: AtomicU32::new(0),
            node: AtomicU32::new(0),
            cfd_prepared: AtomicBool::new(false),
            cfd_alloc_fail: AtomicBool::new(false),
            counters: Counters::new(),
            queue: CacheLine(LlistHead::new()),
        }
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<CacheLine<LlistHead>>() == 64);
    assert!(core::mem::size_of::<PerCpu>() == 256);
    assert!(core::mem::offset_of!(PerCpu, queue) % 64 == 0);
    assert!(core::mem::size_of::<CfdCsds>() == 2048);
};

/// A machine's cross-call state. See the module docs.
///
/// Usable as a `static`: `static SMP: Smp<MyArch> = Smp::new(MyArch::new());`.
#[cfg(not(loom))]
pub struct Smp<A: Arch> {
    arch: A,
    possible: AtomicCpuMask,
    present: AtomicCpuMask,
    online: AtomicCpuMask,
    nr_cpu_ids: AtomicU32,
    setup_max_cpus: AtomicU32,
    csd_lock_timeout_ns: AtomicU64,
    /// Stall ids handed out so far (Linux's `csd_bug_count`).
    csd_bug_count: AtomicU32,
    /// Stalls reported and not yet unstuck (Linux's `n_csd_lock_stuck`).
    csd_lock_stuck: AtomicU32,
    /// The offline-IPI warning has been reported (it is reported once).
    offline_warned: AtomicBool,
    percpu: [PerCpu; MAX_CPUS],
    /// Row *c*: the cfd csds of caller *c*.
    cfd_csds: [CfdCsds; MAX_CPUS],
}

#[cfg(not(loom))]
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
            percpu: [const { PerCpu::new() }; MAX_CPUS],
            cfd_csds: [const { CfdCsds([const { Csd::idle() }; MAX_CPUS]) }; MAX_CPUS],
        }
    }

    /// The architecture implementation.
    #[inline]
    pub fn arch(&self) -> &A {
        &self.arch
    }

    /// Per-CPU data of a CPU number known to be valid (from
    /// [`Arch::this_cpu`] or checked online). Masked, never a bounds panic.
    #[inline]
    fn pcpu(&self, cpu: CpuId) -> &PerCpu {
        &self.percpu[cpu.index() % MAX_CPUS]
    }

    /// The call queue of a valid CPU (masked like [`Self::pcpu`]).
    #[inline]
    fn queue(&self, cpu: CpuId) -> &LlistHead {
        &self.pcpu(cpu).queue.0
    }

    /// The cfd csd that caller `this` uses for calls to `cpu` (both valid).
    #[inline]
    fn cfd_csd(&self, this: CpuId, cpu: CpuId) -> &Csd {
        &self.cfd_csds[this.index() % MAX_CPUS].0[cpu.index() % MAX_CPUS]
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

    /// Whether some csd-lock wait is currently reported as stuck (Linux's
    /// `csd_lock_is_stuck`, for other watchdogs to stay quiet).
    pub fn csd_lock_is_stuck(&self) -> bool {
        // Relaxed: a diagnostic counter.
        self.csd_lock_stuck.load(Ordering::Relaxed) != 0
    }
}

const _: () = assert!(MAX_CPUS.is_power_of_two());
