//! Call-single data (csd): one queued function call, and its lock.
//!
//! The flags word uses modern Linux's typed layout: bit 0 is `LOCK`, bits
//! 4..7 the type (`ASYNC`, `SYNC`, `IRQ_WORK`). The type tells the queue
//! flush what the node is embedded in and when to unlock it: a `SYNC` csd is
//! unlocked *after* its function ran (the caller waits for exactly that), an
//! `ASYNC` one *before* (so the function may requeue its own csd).
//!
//! The lock protocol:
//! - *lock*: wait until `LOCK` is clear (`Acquire`, pairing with the
//!   `Release` unlock), then set it (no fence: nobody else reads an
//!   unqueued owner-only csd, and the enqueue publishes it; modern Linux
//!   has only `smp_wmb` here);
//!   csds that several CPUs may lock (the user's async csds) take it with a
//!   `SeqCst` compare-exchange instead, which is `-EBUSY` when it fails;
//! - *enqueue*: `llist` add (`Release`);
//! - *unlock* (by the CPU that ran it): `Release` store of 0, after the last
//!   access to `func`/`info`;
//! - *wait*: `Acquire` loads until `LOCK` is clear (see `stall.rs`).
//!
//! `func` and `info` are plain cells; the lock is what makes them safe: they
//! are written only by the lock holder before the csd is enqueued and read
//! by the flushing CPU before it unlocks.

use core::ptr::NonNull;

use super::api::{SmpCallFunc, SmpError};
use super::llist::LlistNode;
use super::sync::{AtomicU32, Ordering, UnsafeCell};

/// The csd is locked: queued or being run.
pub(crate) const CSD_FLAG_LOCK: u32 = 0x01;
/// Fire and forget: unlocked before its function runs.
pub(crate) const CSD_TYPE_ASYNC: u32 = 0x00;
/// Someone waits: unlocked after its function ran.
pub(crate) const CSD_TYPE_SYNC: u32 = 0x10;
/// The node is an [`super::IrqWork`], not a [`Csd`].
pub(crate) const CSD_TYPE_IRQ_WORK: u32 = 0x20;
/// The type bits.
pub(crate) const CSD_TYPE_MASK: u32 = 0xF0;

/// What every object on a call queue starts with (Linux's
/// `__call_single_node`): the link, the typed flags, and the destination CPU
/// (for the stall detector).
#[repr(C)]
pub(crate) struct CallSingleNode {
    pub(crate) llist: LlistNode,
    pub(crate) flags: AtomicU32,
    /// The CPU this csd was last queued to; written by the lock holder
    /// before enqueueing, read back by the same CPU when its wait stalls.
    pub(crate) dst: AtomicU32,
}

impl CallSingleNode {
    super::sync::const_fn_unless_loom! {
        pub(crate) fn new(flags: u32, dst: u32) -> Self {
            Self {
                llist: LlistNode::new(),
                flags: AtomicU32::new(flags),
                dst: AtomicU32::new(dst),
            }
        }
    }

    /// The type bits of a queued node.
    #[inline]
    pub(crate) fn csd_type(&self) -> u32 {
        // Relaxed: the enqueuer set the type before its Release llist add;
        // the flusher calls this after the Acquire del_all that took the
        // node, and the type does not change while the node is queued.
        self.flags.load(Ordering::Relaxed) & CSD_TYPE_MASK
    }

    /// The link, for `llist` calls.
    #[inline]
    pub(crate) fn link(&self) -> NonNull<LlistNode> {
        NonNull::from(&self.llist)
    }
}

/// Call-single data: a function and its argument to run on another CPU.
///
/// Users create one for [`super::Smp::smp_call_function_single_async`],
/// typically in a `static`: `static CSD: Csd = Csd::new(func, 0);`. While it
/// is queued or running it is *locked*, and a second async call with it
/// fails with [`SmpError::Busy`]. Aligned to its size so it never straddles
/// two cache lines.
#[repr(C, align(32))]
pub struct Csd {
    node: CallSingleNode,
    /// `None` only in a csd that was never written: one of zeroed memory
    /// (a cfd row, see the `Zeroable` impl below), which is written before
    /// it is first locked and queued.
    func: UnsafeCell<Option<SmpCallFunc>>,
    info: UnsafeCell<usize>,
}

// SAFETY: all zero is a csd that is unlocked, of type ASYNC, unlinked (null
// link), with destination 0, no function (`None`, the niche of the fn
// pointer) and argument 0: the idle csd but for the function, which every
// user writes (`write`, under the lock) before the csd is first queued, and
// which `read` may therefore assume. No padding: four words.
#[cfg(not(loom))]
unsafe impl crate::mem::Zeroable for Csd {}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Csd>() == 32);

// SAFETY: the only non-`Sync` fields are `func` and `info`, and every access
// to them follows the lock protocol in the module docs: writes happen only
// while the writer holds `LOCK` and the csd is not queued; reads happen by
// the lock holder, or by the flushing CPU between the Acquire `del_all` that
// took the csd and the Release unlock. So no two CPUs ever access them
// concurrently unless both only read.
unsafe impl Sync for Csd {}

fn nothing(_: usize) {}

impl Csd {
    super::sync::const_fn_unless_loom! {
        /// An unlocked csd that will call `func(info)`.
        pub fn new(func: SmpCallFunc, info: usize) -> Self {
            Self {
                node: CallSingleNode::new(CSD_TYPE_ASYNC, 0),
                func: UnsafeCell::new(Some(func)),
                info: UnsafeCell::new(info),
            }
        }
    }

    super::sync::const_fn_unless_loom! {
        /// An unlocked csd with a function that does nothing, for per-CPU
        /// tables.
        pub(crate) fn idle() -> Self {
            Self::new(nothing, 0)
        }
    }

    super::sync::const_fn_unless_loom! {
        /// The on-stack csd of a waiting single call: born locked and SYNC
        /// (modern Linux's `csd_stack`), so it needs no lock operation. Its
        /// destination is recorded only if the wait has to spin (see
        /// `Smp::csd_lock_wait_stack`).
        pub(crate) fn new_sync_locked(func: SmpCallFunc, info: usize) -> Self {
            Self {
                node: CallSingleNode::new(CSD_FLAG_LOCK | CSD_TYPE_SYNC, 0),
                func: UnsafeCell::new(Some(func)),
                info: UnsafeCell::new(info),
            }
        }
    }

    /// Whether the csd is in flight (queued, or its function not finished
    /// for a waiting call).
    #[inline]
    pub fn is_locked(&self) -> bool {
        // Acquire: pairs with the Release store in `unlock` on the CPU that
        // ran the function, so that once we see it unlocked, everything the
        // function wrote (and the flusher's last reads of func/info) happened
        // before whatever we do next.
        self.node.flags.load(Ordering::Acquire) & CSD_FLAG_LOCK != 0
    }

    /// Changes the function and argument of an idle csd.
    ///
    /// Context: any. Returns [`SmpError::Busy`] (and changes nothing) while
    /// the csd is in flight.
    pub fn set(&self, func: SmpCallFunc, info: usize) -> Result<(), SmpError> {
        self.try_lock(CSD_TYPE_ASYNC)?;
        // SAFETY: we hold the lock and the csd is not queued.
        unsafe { self.write(func, info) };
        self.unlock();
        Ok(())
    }

    /// Takes the lock of a csd that several CPUs may try to lock at once
    /// (the user's async csds): `Busy` if it is already locked.
    #[inline]
    pub(crate) fn try_lock(&self, csd_type: u32) -> Result<(), SmpError> {
        // SeqCst on success: the Acquire half pairs with the Release unlock
        // of the previous user (its flusher's reads of func/info happen
        // before our writes); the full barrier is the seed's smp_mb after
        // setting LOCK. Relaxed on failure: we touch nothing.
        match self.node.flags.compare_exchange(
            0,
            CSD_FLAG_LOCK | csd_type,
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(_) => Err(SmpError::Busy),
        }
    }

    /// Sets the lock of a csd that only its owner CPU ever locks (per-CPU
    /// `csd_data`, the per-(caller, target) cfd csds), after the owner saw
    /// it unlocked with an Acquire load ([`Self::is_locked`]).
    #[inline]
    pub(crate) fn lock_owned(&self, csd_type: u32) {
        // Relaxed: nobody else writes the flags of an unlocked owner-only
        // csd, nor reads them before it is queued; the value (and the
        // func/info written next) reach the flusher through the llist add,
        // a release.
        self.node
            .flags
            .store(CSD_FLAG_LOCK | csd_type, Ordering::Relaxed);
    }

    /// Releases the lock; returns whether it was held (the seed's WARN
    /// condition). After this the csd may be reused or freed at once: the
    /// caller must not touch it again.
    #[inline]
    pub(crate) fn unlock(&self) -> bool {
        // Relaxed: our own earlier observation (we hold the lock); only
        // checked for the warning.
        let was_locked = self.node.flags.load(Ordering::Relaxed) & CSD_FLAG_LOCK != 0;
        // Release: pairs with the Acquire in `is_locked` (the waiter, or the
        // next locker), after our last access to func/info and after the
        // function's own writes.
        self.node.flags.store(0, Ordering::Release);
        was_locked
    }

    /// Releases the lock of a csd known to be locked (the flush's fast
    /// path checked the flags itself), without the check of [`Self::unlock`].
    /// The caller must not touch the csd afterwards.
    #[inline]
    pub(crate) fn unlock_locked(&self) {
        // Release: as in `unlock`.
        self.node.flags.store(0, Ordering::Release);
    }

    /// Writes the function and argument.
    ///
    /// # Safety
    ///
    /// The caller holds the lock and the csd is not queued.
    #[inline]
    pub(crate) unsafe fn write(&self, func: SmpCallFunc, info: usize) {
        // SAFETY: the caller holds the lock of an unqueued csd, so nobody
        // else accesses `func` now.
        self.func.with_mut(|p| unsafe { p.write(Some(func)) });
        // SAFETY: as above, for `info`.
        self.info.with_mut(|p| unsafe { p.write(info) });
    }

    /// Reads the function and argument.
    ///
    /// # Safety
    ///
    /// The caller holds the lock, or took the csd off a queue with
    /// `del_all` and has not unlocked it yet; the csd has a function (it
    /// was built with one or written since it was zeroed: every queued csd
    /// has).
    #[inline]
    pub(crate) unsafe fn read(&self) -> (SmpCallFunc, usize) {
        // SAFETY: per the contract, no CPU writes `func` while we read it.
        let func = self.func.with(|p| unsafe { p.read() });
        // SAFETY: per the contract, the csd has a function.
        let func = unsafe { func.unwrap_unchecked() };
        // SAFETY: as above, for `info`.
        let info = self.info.with(|p| unsafe { p.read() });
        (func, info)
    }

    /// Records the destination CPU (the lock holder, before enqueueing; for
    /// the on-stack csd, its waiter, before it spins: only that CPU reads
    /// it back, the flusher never does).
    #[inline]
    pub(crate) fn set_dst(&self, cpu: u32) {
        // Relaxed: read back only by this same CPU (the stall detector).
        self.node.dst.store(cpu, Ordering::Relaxed);
    }

    /// The destination CPU recorded by [`Self::set_dst`].
    #[inline]
    pub(crate) fn dst(&self) -> u32 {
        // Relaxed: written by this same CPU.
        self.node.dst.load(Ordering::Relaxed)
    }

    /// The queue node.
    #[inline]
    pub(crate) fn node(&self) -> &CallSingleNode {
        &self.node
    }

    /// The csd a queue node of type SYNC or ASYNC is embedded in.
    ///
    /// # Safety
    ///
    /// `node` must be the `node` field of a live `Csd` (its type bits are
    /// `CSD_TYPE_SYNC` or `CSD_TYPE_ASYNC`), and the returned reference must
    /// not be used after the csd is unlocked.
    #[inline]
    pub(crate) unsafe fn from_node<'a>(node: NonNull<LlistNode>) -> &'a Csd {
        // SAFETY: `Csd` is `repr(C)` with the `CallSingleNode` first, whose
        // `LlistNode` is first too, so the node's address is the csd's; the
        // caller guarantees it is live.
        unsafe { node.cast::<Csd>().as_ref() }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn f(_: usize) {}

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<Csd>(), 32);
        assert_eq!(core::mem::align_of::<Csd>(), 32);
        assert_eq!(core::mem::offset_of!(Csd, node), 0);
    }

    #[test]
    fn try_lock_is_busy_until_unlocked() {
        let csd = Csd::new(f, 7);
        assert!(!csd.is_locked());
        assert_eq!(csd.try_lock(CSD_TYPE_ASYNC), Ok(()));
        assert!(csd.is_locked());
        assert_eq!(csd.try_lock(CSD_TYPE_ASYNC), Err(SmpError::Busy));
        assert_eq!(csd.set(f, 1), Err(SmpError::Busy));
        assert!(csd.unlock());
        assert!(!csd.unlock(), "second unlock reports not-locked");
        assert_eq!(csd.set(f, 9), Ok(()));
        assert!(!csd.is_locked());
        // SAFETY: single-threaded test; nobody else touches the csd.
        assert_eq!(unsafe { csd.read() }.1, 9);
    }

    #[test]
    fn owned_lock_sets_type() {
        let csd = Csd::idle();
        csd.lock_owned(CSD_TYPE_SYNC);
        assert!(csd.is_locked());
        assert_eq!(csd.node().csd_type(), CSD_TYPE_SYNC);
        let stack = Csd::new_sync_locked(f, 3);
        assert!(stack.is_locked());
        assert_eq!(stack.node().csd_type(), CSD_TYPE_SYNC);
        stack.set_dst(5);
        assert_eq!(stack.dst(), 5);
        stack.unlock_locked();
        assert!(!stack.is_locked());
    }
}
