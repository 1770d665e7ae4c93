//! The IPI handler: flushing this CPU's call queue, and the seed's
//! `flush_smp_call_function_queue(warn_cpu_offline)` for the dying CPU.
//!
//! The whole queue is taken at once (`del_all`) and put in FIFO order. Then:
//! 1. every SYNC csd runs first, because someone is spinning for it; it is
//!    unlocked *after* its function, and from that moment its waiter may
//!    return and free it (it is on the waiter's stack), so the walk reads
//!    the link first and never touches the csd again;
//! 2. the remaining ASYNC csds are unlocked *before* their function (so the
//!    function may requeue its own csd), and the remote irq_work runs;
//! 3. outside the IPI handler (a dying CPU, the task-context
//!    `run_pending_calls`), this CPU's own irq_work list runs
//!    too, as in the seed. The IPI handler leaves it to the irq_work
//!    vector, as modern Linux does: a work on that list always has its
//!    self-interrupt pending, taken as soon as the handler returns.
//!
//! While a function runs, its address is in the CPU's running word
//! ([`Arch::set_running`]), for the stall detector of CPUs that wait on
//! this one.
//!
//! The common case, one SYNC csd (what a `smp_call_function_single(wait)`
//! IPI finds), takes a short path that skips the reversal and the two
//! passes; it does exactly what they would do for that chain, and keeps
//! nothing but the csd across the callback.

use core::ptr::NonNull;

use shared::CpuId;

use super::api::SmpCallFunc;
use super::arch::Arch;
use super::block::CpuBlock;
use super::counters::bump;
use super::csd::{CSD_FLAG_LOCK, CSD_TYPE_IRQ_WORK, CSD_TYPE_SYNC, CallSingleNode, Csd};
use super::irq_work::IrqWork;
use super::llist::{self, LlistNode};
use super::state::Smp;
use super::sync::Ordering;
use shared::record::WarnKind;

/// What a flush does about calls it finds queued to this CPU while it is
/// offline (the seed's `bool warn_cpu_offline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OfflineCalls {
    /// Report them ([`WarnKind::IpiOnOfflineCpu`] and a
    /// [`WarnKind::CallbackOnOfflineCpu`] per callback), then run them:
    /// every flush but the dying one.
    Warn,
    /// They are expected: the outgoing CPU's dying flush runs what was
    /// queued before it left the online mask.
    Expected,
}

impl<A: Arch> Smp<A> {
    /// generic_smp_call_function_interrupt - the handler of both
    /// call-function IPI vectors: runs every call queued to this CPU
    /// (remote irq_work included).
    ///
    /// Context: interrupt handler, interrupts disabled (else a counted and
    /// reported [`WarnKind::FlushWithIrqsEnabled`]). If this CPU is offline
    /// and calls were queued, reports [`WarnKind::IpiOnOfflineCpu`] and a
    /// [`WarnKind::CallbackOnOfflineCpu`] per pending callback (once per
    /// machine; counted every time), then runs them anyway.
    #[inline]
    pub fn generic_smp_call_function_interrupt(&self) {
        let this = self.arch.this_cpu();
        if !self.arch.irqs_disabled() {
            self.warn(this, WarnKind::FlushWithIrqsEnabled, 0);
        }
        self.run_call_queue(this, OfflineCalls::Warn);
    }

    /// [`Self::generic_smp_call_function_interrupt`] without its check of
    /// the interrupt flag, which is on the IPI round trip's critical path.
    ///
    /// Context: interrupts disabled by construction: the call-function
    /// vectors' interrupt-gate handler, or a polling idle loop that
    /// disabled them itself.
    #[inline(always)]
    pub fn run_call_queue_irqs_off(&self) {
        let this = self.arch.this_cpu();
        self.run_call_queue(this, OfflineCalls::Warn);
    }

    /// [`Self::run_call_queue_irqs_off`] for a caller that read this CPU's
    /// number once and drains in a loop (the polling idle loop): the
    /// queue's address is then computed once, outside the loop.
    ///
    /// Context: as [`Self::run_call_queue_irqs_off`]; `this` is this CPU
    /// (from [`Arch::this_cpu`]).
    #[inline(always)]
    pub fn run_call_queue_of(&self, this: CpuId) {
        debug_assert_eq!(this, self.arch.this_cpu());
        self.run_call_queue(this, OfflineCalls::Warn);
    }

    /// The word a polling idle loop spins on: `cpu`'s call queue head,
    /// non-zero while calls are queued. Read it only as a hint (a plain
    /// load); the drain that acts on it is the synchronizing read.
    #[cfg(not(loom))]
    #[inline(always)]
    pub fn call_queue_word(&self, cpu: CpuId) -> *const usize {
        self.queue(cpu).word()
    }

    /// Runs this CPU's pending calls and irq_work from any context (e.g.
    /// a CPU that comes online, for what was queued while it was offline);
    /// modern Linux's `flush_smp_call_function_queue(void)`. Returns at
    /// once if nothing is queued.
    ///
    /// Context: any; it disables interrupts around the flush itself.
    pub fn run_pending_calls(&self) {
        let this = self.arch.this_cpu();
        if !self.has_pending(this) {
            return;
        }
        let flags = self.arch.irq_save();
        self.run_calls_and_irq_work(this, OfflineCalls::Warn);
        self.arch.irq_restore(flags);
    }

    /// Whether calls or irq_work are queued to this CPU (a hint).
    #[inline]
    pub(crate) fn has_pending(&self, this: CpuId) -> bool {
        !self.queue(this).is_empty() || !self.pcpu(this).irq_work.is_empty()
    }

    /// flush_smp_call_function_queue - the seed's flush: runs this CPU's
    /// call queue, then its irq_work list, reporting calls queued to it
    /// while offline unless `warn_cpu_offline` says they are expected.
    ///
    /// Context: interrupts disabled (else a counted and reported
    /// [`WarnKind::FlushWithIrqsEnabled`]).
    pub(crate) fn flush_smp_call_function_queue(&self, warn_cpu_offline: OfflineCalls) {
        let this = self.arch.this_cpu();
        if !self.arch.irqs_disabled() {
            self.warn(this, WarnKind::FlushWithIrqsEnabled, 0);
        }
        self.run_calls_and_irq_work(this, warn_cpu_offline);
    }

    /// [`Self::flush_smp_call_function_queue`] after its check of the
    /// interrupt flag.
    fn run_calls_and_irq_work(&self, this: CpuId, warn_cpu_offline: OfflineCalls) {
        self.run_call_queue(this, warn_cpu_offline);
        self.irq_work_run_local(self.pcpu(this));
    }

    /// Takes this CPU's call queue and runs it (interrupts disabled).
    #[inline(always)]
    fn run_call_queue(&self, this: CpuId, warn_cpu_offline: OfflineCalls) {
        let pcpu = self.pcpu(this);
        let entry = self.queue(this).del_all();
        if let Some(node) = NonNull::new(entry) {
            // SAFETY: `del_all` detached the chain; this CPU owns it.
            if !unsafe { self.run_lone_sync(this, pcpu, node) } {
                bump(&pcpu.counters.kicks_taken);
                // SAFETY: as above, and nothing of it has run.
                unsafe { self.run_taken_chain(pcpu, entry, warn_cpu_offline) };
            }
        }
    }

    /// The short path: if the chain is one SYNC csd and this CPU is
    /// online, runs it and unlocks it (as pass 1 of [`Self::run_chain`]
    /// would; counted once, as a kick taken and a callback run) and returns
    /// true; otherwise touches nothing and returns false.
    /// Only the csd is live across the callback (the count is taken before
    /// it, the running word is this-CPU storage of the arch), and the unlock
    /// is the first thing after it.
    ///
    /// # Safety
    ///
    /// `node` starts a chain this CPU took off its own call queue.
    #[inline(always)]
    unsafe fn run_lone_sync(&self, this: CpuId, pcpu: &CpuBlock, node: NonNull<LlistNode>) -> bool {
        // SAFETY: `node` is on our detached chain.
        let next = unsafe { node.as_ref() }.next() as usize;
        // SAFETY: every node on a call queue is the first field of a
        // `CallSingleNode`.
        let csn = unsafe { node.cast::<CallSingleNode>().as_ref() };
        // Relaxed: as in `CallSingleNode::csd_type`. A queued SYNC csd's
        // flags are exactly LOCK | SYNC.
        let flags = csn.flags.load(Ordering::Relaxed);
        // Alone (no next) and SYNC, in one test.
        let lone_sync = next | (flags ^ (CSD_FLAG_LOCK | CSD_TYPE_SYNC)) as usize == 0;
        if !lone_sync || !self.valid_cpu_online(this) {
            return false;
        }
        // SAFETY: a SYNC node is a csd; we release it last.
        let csd = unsafe { Csd::from_node(node) };
        // SAFETY: taken off our queue, not unlocked yet.
        let (func, info) = unsafe { csd.read() };
        // One count for the kick and the callback (see `Counters`).
        bump(&pcpu.counters.lone_syncs_run);
        self.arch.set_running(func as usize);
        trace_point!(
            self,
            CsdFunctionEntry,
            0,
            func as usize,
            csd as *const Csd as usize
        );
        func(info);
        // The csd is still locked: its waiter has not returned yet.
        trace_point!(
            self,
            CsdFunctionExit,
            0,
            func as usize,
            csd as *const Csd as usize
        );
        // We saw LOCK set above and only we may clear it now. The waiter
        // is spinning: release it first, then clear the running word (a
        // stall report in between would name a callback that just ended).
        csd.unlock_locked();
        self.arch.clear_running();
        true
    }

    /// The general path: FIFO order, the offline warning, SYNC first.
    ///
    /// # Safety
    ///
    /// `entry` is a non-null chain this CPU took off its own call queue,
    /// none of it run yet.
    #[inline(never)]
    unsafe fn run_taken_chain(
        &self,
        pcpu: &CpuBlock,
        entry: *mut LlistNode,
        warn_cpu_offline: OfflineCalls,
    ) {
        // Read again rather than passed: the short path then keeps no copy.
        let this = self.arch.this_cpu();
        // SAFETY: the caller owns the detached chain.
        let entry = unsafe { llist::reverse_order(entry) };
        // The seed tested the head it had just emptied, so its warning
        // could never fire; we test what we took.
        if warn_cpu_offline == OfflineCalls::Warn && !self.valid_cpu_online(this) {
            // SAFETY: we own the detached chain and have run nothing yet.
            unsafe { self.warn_ipi_on_offline(this, entry) };
        }
        // SAFETY: as above.
        unsafe { self.run_chain(this, pcpu, entry) };
    }

    /// Runs a detached, FIFO-ordered chain of call-queue nodes.
    ///
    /// # Safety
    ///
    /// `entry` is null or a chain this CPU took off its own call queue.
    #[inline]
    unsafe fn run_chain(&self, this: CpuId, pcpu: &CpuBlock, mut entry: *mut LlistNode) {
        // Pass 1: SYNC csds, unlinked from the chain as they run.
        let mut prev: Option<NonNull<LlistNode>> = None;
        let mut cur = entry;
        while let Some(node) = NonNull::new(cur) {
            // SAFETY: `node` is on our chain and not released yet.
            let next = unsafe { node.as_ref() }.next();
            // SAFETY: every node on a call queue is the first field of a
            // `CallSingleNode` (in a `Csd` or an `IrqWork`).
            let csn = unsafe { node.cast::<CallSingleNode>().as_ref() };
            if csn.csd_type() == CSD_TYPE_SYNC {
                match prev {
                    None => entry = next,
                    // SAFETY: `p` is an earlier node of our chain that we
                    // kept (not SYNC, so not released).
                    Some(p) => unsafe { p.as_ref() }.set_next(next),
                }
                // SAFETY: SYNC nodes are csds; we release it below and
                // never use `csd` after that.
                let csd = unsafe { Csd::from_node(node) };
                // SAFETY: taken off our queue, not unlocked yet.
                let (func, info) = unsafe { csd.read() };
                self.run_queued(pcpu, func, info, csd as *const Csd as usize);
                self.csd_unlock(this, csd, func as usize);
            } else {
                prev = Some(node);
            }
            cur = next;
        }
        // Pass 2: everything else, each released before it runs.
        let mut cur = entry;
        while let Some(node) = NonNull::new(cur) {
            // SAFETY: `node` is on our chain and not released yet.
            let next = unsafe { node.as_ref() }.next();
            // SAFETY: as in pass 1.
            let csn = unsafe { node.cast::<CallSingleNode>().as_ref() };
            if csn.csd_type() == CSD_TYPE_IRQ_WORK {
                // SAFETY: IRQ_WORK nodes are 'static `IrqWork`s.
                let work = unsafe { IrqWork::from_node(node) };
                self.irq_work_single(pcpu, work);
            } else {
                // SAFETY: the other nodes are ASYNC csds.
                let csd = unsafe { Csd::from_node(node) };
                // SAFETY: taken off our queue, not unlocked yet.
                let (func, info) = unsafe { csd.read() };
                let addr = csd as *const Csd as usize;
                self.csd_unlock(this, csd, func as usize);
                // `addr` only names the csd in the trace: it may be reused.
                self.run_queued(pcpu, func, info, addr);
            }
            cur = next;
        }
    }

    /// Runs one queued function, recording it in the running word. Counts
    /// it first, so that nothing but what the caller keeps is live across
    /// the call. `csd` is the csd's address, for the trace only.
    #[inline]
    pub(super) fn run_queued(&self, pcpu: &CpuBlock, func: SmpCallFunc, info: usize, csd: usize) {
        bump(&pcpu.counters.callbacks_run);
        self.arch.set_running(func as usize);
        trace_point!(self, CsdFunctionEntry, 0, func as usize, csd);
        func(info);
        trace_point!(self, CsdFunctionExit, 0, func as usize, csd);
        let _ = csd; // used by the trace points only
        self.arch.clear_running();
    }

    /// Reports an IPI that found calls queued to this offline CPU, with each
    /// pending callback: reported once per machine, counted every time.
    ///
    /// # Safety
    ///
    /// `entry` is a chain this CPU took off its queue and has not run yet.
    #[cold]
    #[inline(never)]
    unsafe fn warn_ipi_on_offline(&self, this: CpuId, entry: *mut LlistNode) {
        let mut pending = 0u64;
        let mut cur = entry;
        while let Some(node) = NonNull::new(cur) {
            pending += 1;
            // SAFETY: `node` is on our unrun chain.
            cur = unsafe { node.as_ref() }.next();
        }
        // Relaxed: a once-flag; nothing is published through it.
        let first = !self.offline_warned.swap(true, Ordering::Relaxed);
        self.warn_maybe(first, this, WarnKind::IpiOnOfflineCpu, pending);
        let mut cur = entry;
        while let Some(node) = NonNull::new(cur) {
            // SAFETY: `node` is on our unrun chain.
            let next = unsafe { node.as_ref() }.next();
            // SAFETY: as in `run_chain`.
            let csn = unsafe { node.cast::<CallSingleNode>().as_ref() };
            let func = if csn.csd_type() == CSD_TYPE_IRQ_WORK {
                // SAFETY: IRQ_WORK nodes are 'static `IrqWork`s.
                unsafe { IrqWork::from_node(node) }.func_addr()
            } else {
                // SAFETY: other nodes are csds, still locked (not run yet).
                let csd = unsafe { Csd::from_node(node) };
                // SAFETY: taken off our queue, not unlocked yet.
                (unsafe { csd.read() }).0 as usize
            };
            self.warn_maybe(first, this, WarnKind::CallbackOnOfflineCpu, func as u64);
            cur = next;
        }
    }

    fn warn_maybe(&self, report: bool, this: CpuId, kind: WarnKind, detail: u64) {
        if report {
            self.warn(this, kind, detail);
        } else {
            self.count_warn(this, kind);
        }
    }
}
