//! irq_work: callbacks run from interrupt context on a chosen CPU, queued
//! from any context (Linux's `kernel/irq_work.c`, the parts smp.c uses).
//!
//! An [`IrqWork`] is claimed by setting `PENDING | BUSY` in its flags; a
//! second claim while it is pending fails, so a work is queued at most once
//! at a time. Local work goes on the CPU's irq_work list and raises the
//! irq_work self-interrupt; remote work goes on the target's call queue
//! (type `IRQ_WORK`) with the call-function-single IPI and runs from the
//! queue flush. Running clears `PENDING` before the callback (so it may
//! requeue itself) and `BUSY` after it, unless it was claimed again.

use core::ptr::NonNull;

use shared::CpuId;

use super::arch::Arch;
use super::block::CpuBlock;
use super::counters::bump;
use super::csd::{CSD_TYPE_IRQ_WORK, CallSingleNode};
use super::llist::{self, LlistNode};
use super::state::Smp;
use super::sync::{Ordering, fence};
use shared::record::WarnKind;

/// The work is queued and has not started running.
const IRQ_WORK_PENDING: u32 = 0x01;
/// The work is queued or running.
const IRQ_WORK_BUSY: u32 = 0x02;
const IRQ_WORK_CLAIMED: u32 = IRQ_WORK_PENDING | IRQ_WORK_BUSY;

/// An irq_work callback; it gets its own work item (usually a `static`).
pub type IrqWorkFunc = fn(work: &IrqWork);

/// A callback to run in interrupt context on some CPU. Lives in a `static`.
#[repr(C)]
pub struct IrqWork {
    node: CallSingleNode,
    func: IrqWorkFunc,
}

impl IrqWork {
    /// An idle work item that will run `func`.
    pub const fn new(func: IrqWorkFunc) -> Self {
        Self {
            node: CallSingleNode::new(CSD_TYPE_IRQ_WORK, 0),
            func,
        }
    }

    /// Whether the work is queued and has not started running.
    pub fn is_pending(&self) -> bool {
        // Acquire: pairs with the Release PENDING clear in `irq_work_single`.
        self.node.flags.load(Ordering::Acquire) & IRQ_WORK_PENDING != 0
    }

    /// Whether the work is queued or running.
    pub fn is_busy(&self) -> bool {
        // Acquire: pairs with the Release BUSY clear in `irq_work_single`,
        // so that after this returns false the callback's writes are seen.
        self.node.flags.load(Ordering::Acquire) & IRQ_WORK_BUSY != 0
    }

    /// Claims the work for queueing; false if it is already pending.
    #[inline]
    fn claim(&self) -> bool {
        // SeqCst: Acquire pairs with the Release PENDING clear of the last
        // run (the runner is done with our link); the full barrier pairs
        // with the fence in `irq_work_single`: if we see PENDING still set
        // and give up, the runner's callback, which starts after that
        // fence, sees everything we wrote before this claim.
        let old = self
            .node
            .flags
            .fetch_or(IRQ_WORK_CLAIMED | CSD_TYPE_IRQ_WORK, Ordering::SeqCst);
        old & IRQ_WORK_PENDING == 0
    }

    /// The callback's address, for reports.
    pub(crate) fn func_addr(&self) -> usize {
        self.func as usize
    }

    /// The work a queue node of type IRQ_WORK is embedded in.
    ///
    /// # Safety
    ///
    /// `node` is the link of an `IrqWork`; only `&'static IrqWork`s are
    /// ever queued.
    #[inline]
    pub(crate) unsafe fn from_node(node: NonNull<LlistNode>) -> &'static IrqWork {
        // SAFETY: `IrqWork` is `repr(C)` with the `CallSingleNode` (whose
        // `LlistNode` is first) as its first field; the caller guarantees
        // it is a 'static `IrqWork`.
        unsafe { node.cast::<IrqWork>().as_ref() }
    }
}

impl<A: Arch> Smp<A> {
    /// irq_work_queue - run `work` on this CPU from its irq_work interrupt.
    ///
    /// Context: any, including interrupts disabled and handlers.
    ///
    /// Return: true if queued; false if it was already pending (it will
    /// run, and will see everything written before this call).
    pub fn irq_work_queue(&self, work: &'static IrqWork) -> bool {
        if !work.claim() {
            return false;
        }
        let this = self.arch.this_cpu();
        let pcpu = self.pcpu(this);
        // SAFETY: claimed by us, so on no list; 'static.
        if unsafe { pcpu.irq_work.add(work.node.link()) } {
            bump(&pcpu.counters.ipis_requested);
            self.arch.send_irq_work_self_ipi();
        }
        true
    }

    /// irq_work_queue_on - run `work` on `cpu` from interrupt context: via
    /// `cpu`'s call queue and the call-function-single IPI (sent only if
    /// that queue was empty); on this CPU as [`Self::irq_work_queue`].
    ///
    /// Context: any, including interrupts disabled and handlers.
    ///
    /// Return: true if queued; false if it was already pending, or if `cpu`
    /// is not a valid, online CPU (then nothing is claimed, and a counted
    /// and reported [`WarnKind::IrqWorkOnOfflineCpu`] fires: Linux warns
    /// and queues anyway, but a work queued to a dead CPU never runs).
    pub fn irq_work_queue_on(&self, work: &'static IrqWork, cpu: CpuId) -> bool {
        let this = self.arch.this_cpu();
        if cpu == this {
            return self.irq_work_queue(work);
        }
        // The send window spans the online test and the queueing (see
        // `Smp::synchronize_senders`).
        let window = self.send_enter(this);
        if !self.cpu_online_in_window(cpu) {
            self.send_exit(this, window);
            self.warn(this, WarnKind::IrqWorkOnOfflineCpu, u64::from(cpu.0));
            return false;
        }
        if !work.claim() {
            self.send_exit(this, window);
            return false;
        }
        // SAFETY: claimed by us, so on no list; 'static; `cpu` is online.
        let kick = unsafe { self.queue_add(cpu, &work.node) };
        trace_point!(
            self,
            CsdQueueCpu,
            cpu.0,
            callsite!(self),
            work.func_addr(),
            work as *const IrqWork as usize
        );
        if kick {
            trace_point!(self, IpiSendCpu, cpu.0, callsite!(self), work.func_addr());
            self.send_single_ipi(this, cpu);
        }
        self.send_exit(this, window);
        self.count_queued(this);
        true
    }

    /// irq_work_run - run this CPU's queued local irq_work, oldest first.
    /// The arch's irq_work interrupt handler calls this; the dying CPU's
    /// flush and the task-context flush run the same list.
    ///
    /// Context: interrupts disabled (else a counted and reported
    /// [`WarnKind::FlushWithIrqsEnabled`]).
    pub fn irq_work_run(&self) {
        let this = self.arch.this_cpu();
        if !self.arch.irqs_disabled() {
            self.warn(this, WarnKind::FlushWithIrqsEnabled, 1);
        }
        self.irq_work_run_local(self.pcpu(this));
    }

    /// irq_work_sync - wait until `work` is neither queued nor running.
    ///
    /// Context: interrupts enabled, and not on the CPU that will run `work`
    /// while that CPU's interrupts are off (it would wait forever).
    ///
    /// A wait past the csd-lock timeout is counted and reported once as
    /// [`WarnKind::IrqWorkSyncStall`] naming the work's function; the wait
    /// goes on (a work that is queued will run; giving up would let the
    /// caller free what it still uses), as Linux's does.
    pub fn irq_work_sync(&self, work: &IrqWork) {
        let mut spins = 0u32;
        let mut start = None;
        let mut reported = false;
        while work.is_busy() {
            self.arch.cpu_relax();
            spins = spins.wrapping_add(1);
            if reported || !spins.is_multiple_of(super::stall::CHECK_EVERY) {
                continue;
            }
            let timeout = self.csd_lock_timeout_ns();
            let now = self.arch.now_ns();
            let since = *start.get_or_insert(now);
            if timeout != 0 && now.saturating_sub(since) > timeout {
                let this = self.arch.this_cpu();
                self.warn(this, WarnKind::IrqWorkSyncStall, work.func_addr() as u64);
                reported = true;
            }
        }
    }

    /// Runs the local irq_work list of `pcpu` (this CPU's).
    #[inline(always)]
    pub(super) fn irq_work_run_local(&self, pcpu: &CpuBlock) {
        if !pcpu.irq_work.is_empty() {
            self.irq_work_run_list(pcpu);
        }
    }

    /// [`Self::irq_work_run_local`] once the list is known not to be empty
    /// (out of line: the call-function IPI handler only checks).
    #[inline(never)]
    fn irq_work_run_list(&self, pcpu: &CpuBlock) {
        // SAFETY: `del_all` detached the chain; this CPU owns it.
        let mut cur = unsafe { llist::reverse_order(pcpu.irq_work.del_all()) };
        trace_point!(self, IrqWorkRunEntry, 0);
        #[cfg(feature = "trace")]
        let mut ran = 0u32;
        while let Some(node) = NonNull::new(cur) {
            // SAFETY: on our chain; read before the work is released.
            cur = unsafe { node.as_ref() }.next();
            // SAFETY: only 'static `IrqWork`s are on irq_work lists.
            let work = unsafe { IrqWork::from_node(node) };
            self.irq_work_single(pcpu, work);
            #[cfg(feature = "trace")]
            {
                ran += 1;
            }
        }
        trace_point!(self, IrqWorkRunExit, ran);
    }

    /// Runs one dequeued work item (Linux's `irq_work_single`).
    pub(super) fn irq_work_single(&self, pcpu: &CpuBlock, work: &'static IrqWork) {
        // We own PENDING, so a plain store can clear it: a concurrent claim
        // sees PENDING set and changes nothing. Relaxed load: our own bits.
        let flags = work.node.flags.load(Ordering::Relaxed) & !IRQ_WORK_PENDING;
        // Release: pairs with the Acquire of the next claimer, who then
        // relinks the node; our reads of its link happened before this.
        work.node.flags.store(flags, Ordering::Release);
        // Pairs with the SeqCst fetch_or in `claim`: see there.
        fence(Ordering::SeqCst);
        bump(&pcpu.counters.callbacks_run);
        self.arch.set_running(work.func as usize);
        // Traced as a csd's function: it is counted with them.
        trace_point!(
            self,
            CsdFunctionEntry,
            0,
            work.func_addr(),
            work as *const IrqWork as usize
        );
        (work.func)(work);
        trace_point!(
            self,
            CsdFunctionExit,
            0,
            work.func_addr(),
            work as *const IrqWork as usize
        );
        self.arch.clear_running();
        // Clear BUSY unless the work was claimed again meanwhile. Release:
        // pairs with the Acquire in `is_busy` (irq_work_sync). Relaxed on
        // failure: then it is pending again and its next run clears BUSY.
        let _ = work.node.flags.compare_exchange(
            flags,
            flags & !IRQ_WORK_BUSY,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}
