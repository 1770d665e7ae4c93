//! The core's per-CPU block, [`CpuBlock`]: a CPU's call queue, its csd
//! for non-waiting single calls, its irq_work list, its cfd row and its
//! counters, in one 256-byte block that the architecture places
//! ([`super::Arch::cpu_blocks`]).

use super::counters::Counters;
use super::csd::Csd;
use super::llist::LlistHead;
use super::sync::{AtomicBool, AtomicPtr, AtomicU32};

/// A value on a cache line of its own (Linux's `____cacheline_aligned`).
#[repr(C, align(64))]
pub(super) struct CacheLine<T>(pub(super) T);

/// What the core keeps per CPU. The call queue's head is in here too, on a
/// line of its own, so that the IPI handler finds its queue and its other
/// data from one index. The per-(caller, target) cfd csds are not: they are
/// a row per CPU allocated when the CPU is prepared (see
/// `state::CfdRow`), and the block holds the row's address.
///
/// The blocks are the architecture's to place ([`Arch::cpu_blocks`]);
/// outside the core a block is opaque. Zeroed memory is a table of new
/// blocks but for the function of each block's csd (`None`, not written
/// yet: see the `Zeroable` impl).
#[repr(C, align(256))]
pub struct CpuBlock {
    /// The csd of this CPU's non-waiting single calls (`csd_data`);
    /// unlocked by remote CPUs, so alone on its line.
    pub(super) csd_data: CacheLine<Csd>,
    /// This CPU's irq_work list (only this CPU adds to it).
    pub(super) irq_work: LlistHead,
    /// The send windows this CPU has open: non-zero while it is between
    /// testing a target online and queueing to it (see `cpuhp.rs`,
    /// `Smp::send_enter`, `synchronize_senders`).
    pub(super) sending: AtomicU32,
    /// NUMA node.
    pub(super) node: AtomicU32,
    /// This CPU's bit of the online mask, mirrored here (see
    /// `Smp::set_cpu_online`): the single-CPU online tests of the hot
    /// paths read it from the block they index anyway, with no word
    /// arithmetic on the mask.
    pub(super) online: AtomicBool,
    /// Whether `smpcfd_prepare_cpu` has set up this CPU's cfd.
    pub(super) cfd_prepared: AtomicBool,
    /// Fault injection: make `smpcfd_prepare_cpu` fail.
    pub(super) cfd_alloc_fail: AtomicBool,
    /// The length of this CPU's row of cfd csds, a power of two; 0 while
    /// no row is set or being set. Claimed (0 to the length) by the prepare
    /// that allocates the row, before it publishes [`Self::cfd_row`], and
    /// never changed once the row is set.
    pub(super) cfd_len: AtomicU32,
    /// This CPU's row of cfd csds (Linux's `cfd_data->csd`), null until
    /// its first `smpcfd_prepare_cpu`; set once (Release, after
    /// [`Self::cfd_len`]) and never freed: a CPU that comes back reuses it.
    pub(super) cfd_row: AtomicPtr<Csd>,
    pub(super) counters: Counters,
    /// The call queue: written by every other CPU, alone on its line.
    pub(super) queue: CacheLine<LlistHead>,
}

impl CpuBlock {
    /// A block of a CPU that has done nothing yet (all zero).
    pub const fn new() -> Self {
        Self {
            csd_data: CacheLine(Csd::idle()),
            irq_work: LlistHead::new(),
            sending: AtomicU32::new(0),
            node: AtomicU32::new(0),
            online: AtomicBool::new(false),
            cfd_prepared: AtomicBool::new(false),
            cfd_alloc_fail: AtomicBool::new(false),
            cfd_len: AtomicU32::new(0),
            cfd_row: AtomicPtr::new(core::ptr::null_mut()),
            counters: Counters::new(),
            queue: CacheLine(LlistHead::new()),
        }
    }
}

impl Default for CpuBlock {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every field is an atomic, a null pointer, a csd whose zero is
// its idle value (see `Csd`'s impl) or counters at 0: all-zero bytes are
// `CpuBlock::new()`, which the host test `a_zeroed_block_is_a_new_one`
// checks byte for byte.
#[cfg(not(loom))]
unsafe impl crate::mem::Zeroable for CpuBlock {}

/// Bytes in a cache line (what [`CacheLine`] aligns to).
const CACHE_LINE_BYTES: usize = 64;

const _: () = {
    assert!(core::mem::size_of::<CacheLine<LlistHead>>() == CACHE_LINE_BYTES);
    assert!(core::mem::size_of::<CpuBlock>() == 256);
    assert!(core::mem::offset_of!(CpuBlock, queue) % CACHE_LINE_BYTES == 0);
};
