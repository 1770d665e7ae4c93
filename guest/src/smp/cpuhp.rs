//! The smp core's steps of CPU hotplug (modern Linux's `smpcfd:prepare` /
//! `smpcfd:dying` / `smpcfd:dead` cpuhp states; the state machine that
//! calls them is the kernel's) and the send window that makes the dying
//! step safe without stop_machine. The masks themselves are in `cpus.rs`.
//!
//! Senders test `cpu_online(target)` and then queue without a lock. Linux
//! runs the dying step inside stop_machine, which cannot start while any
//! CPU is between those two steps (senders keep preemption disabled). Here
//! each sender marks that window in its per-CPU `sending` word, and the
//! outgoing CPU, after leaving the online mask, waits in
//! [`Smp::synchronize_senders`] until no CPU is inside a window it may
//! have entered before the mask changed, serving its own queue meanwhile;
//! only then does the dying flush run. A call that slips through anyway
//! (a sender stuck in its window past the deadline) is not lost: it stays
//! queued, and when the CPU comes back its first flush runs it and reports
//! it as [`super::WarnKind::IpiOnOfflineCpu`].

#[cfg(feature = "trace")]
use shared::trace::CpuhpStep;
use shared::{CpuId, MAX_CPUS};

use super::api::SmpError;
use super::arch::Arch;
use super::block::CpuBlock;
use super::cpumask::CpuMask;
use super::flush::OfflineCalls;
use super::state::Smp;
use super::sync::Ordering;
use shared::record::WarnKind;

/// How long the outgoing CPU waits for senders before it warns and goes on.
const SENDER_WAIT_NS: u64 = 2_000_000_000;
/// The outgoing CPU reads the clock once per this many spins of its wait.
const CLOCK_EVERY_SPINS: u32 = 64;

/// An open send window ([`Smp::send_enter`]), to hand back to
/// [`Smp::send_exit`].
#[must_use = "a send window must be closed with send_exit"]
pub(crate) struct SendWindow(());

impl<A: Arch> Smp<A> {
    /// Opens this CPU's send window: from here until [`Self::send_exit`]
    /// an outgoing CPU waits before its dying flush. The word counts the
    /// open windows (one `lock inc` with no register: the IPI round trip's
    /// sender runs it), so that a window opened by an interrupt handler
    /// nested in another leaves the outer one open when it closes.
    #[inline(always)]
    pub(crate) fn send_enter(&self, this: CpuId) -> SendWindow {
        // SeqCst: this increment and the online test that follows
        // (`cpu_online_in_window`, or the mask load of a multi-CPU call)
        // against the outgoing CPU's SeqCst stores to its online mirror
        // and mask (`set_cpu_online`) and its SeqCst load of this word: either the sender sees
        // the CPU offline, or the outgoing CPU sees the window open.
        self.pcpu(this).sending.fetch_add(1, Ordering::SeqCst);
        SendWindow(())
    }

    /// Closes the window opened by [`Self::send_enter`].
    #[inline(always)]
    pub(crate) fn send_exit(&self, this: CpuId, window: SendWindow) {
        let SendWindow(()) = window;
        // Release: the queueing inside the window happens before the
        // outgoing CPU's Acquire load sees the window closed, so its dying
        // flush finds the call.
        self.pcpu(this).sending.fetch_sub(1, Ordering::Release);
    }

    /// [`Self::cpu_online`] for use inside a send window (SeqCst load of
    /// the target's online mirror, a plain `mov` on x86; see
    /// [`Self::send_enter`] and `Smp::set_cpu_online`).
    #[inline(always)]
    pub(crate) fn cpu_online_in_window(&self, cpu: CpuId) -> bool {
        self.pcpu_checked(cpu)
            .is_some_and(|p| p.online.load(Ordering::SeqCst))
    }

    /// The online mask, for use inside a send window.
    #[inline(always)]
    pub(crate) fn online_mask_in_window(&self) -> CpuMask {
        self.online.load_sc()
    }

    /// On the outgoing CPU, after it left the online mask and before
    /// [`Self::smpcfd_dying_cpu`]: waits until no other CPU is inside a
    /// send window (one may have tested this CPU online just before it
    /// left), running calls that arrive meanwhile (a sender may be spinning
    /// for one of our csds). After 2 s it reports
    /// [`WarnKind::HotplugSenderTimeout`] naming the sender and goes on.
    ///
    /// Context: the outgoing CPU, interrupts disabled, already offline.
    pub fn synchronize_senders(&self) {
        let this = self.arch.this_cpu();
        trace_point!(self, CpuhpEnter, this.0, CpuhpStep::SyncSenders as u64);
        self.synchronize_senders_step(this);
        trace_point!(self, CpuhpExit, this.0, CpuhpStep::SyncSenders as u64, 0);
    }

    /// The body of [`Self::synchronize_senders`].
    fn synchronize_senders_step(&self, this: CpuId) {
        let start = self.arch.now_ns();
        for i in 0..MAX_CPUS {
            let cpu = CpuId(i as u32);
            if cpu == this {
                continue;
            }
            let mut spins = 0u32;
            // SeqCst: see `send_enter`.
            while self.pcpu(cpu).sending.load(Ordering::SeqCst) != 0 {
                if self.has_pending(this) {
                    self.flush_smp_call_function_queue(OfflineCalls::Expected);
                }
                self.arch.cpu_relax();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(CLOCK_EVERY_SPINS)
                    && self.arch.now_ns().saturating_sub(start) > SENDER_WAIT_NS
                {
                    self.warn(this, WarnKind::HotplugSenderTimeout, u64::from(cpu.0));
                    break;
                }
            }
        }
    }

    /// call_function_init - prepare the boot CPU (this one). The call
    /// queues need no initialization: they are empty from [`Smp::new`].
    ///
    /// Context: boot, on the boot CPU.
    ///
    /// Return: as [`Self::smpcfd_prepare_cpu`].
    pub fn call_function_init(&self) -> Result<(), SmpError> {
        self.smpcfd_prepare_cpu(self.arch.this_cpu())
    }

    /// smpcfd_prepare_cpu - set up `cpu`'s call data before it comes up:
    /// as Linux, allocate its cfd csds (one per possible target: a row of
    /// `nr_cpu_ids` rounded up to a power of two, from
    /// [`Arch::alloc_cfd_row`]) the first time; a CPU that was prepared
    /// before reuses its row (rows are never freed). It can also fail on
    /// purpose: see [`Self::set_cfd_alloc_fail`]. Idempotent.
    ///
    /// Context: task context, on the CPU driving the hotplug; after
    /// `nr_cpu_ids` is final (a row is sized for it once).
    ///
    /// Return: [`SmpError::Nxio`] for an out-of-range CPU,
    /// [`SmpError::NoMem`] when the row cannot be allocated, when failure is
    /// injected, when the CPU's row is shorter than `nr_cpu_ids` (it grew
    /// after the first prepare) or while another prepare of the same CPU
    /// is allocating its row.
    pub fn smpcfd_prepare_cpu(&self, cpu: CpuId) -> Result<(), SmpError> {
        trace_point!(self, CpuhpEnter, cpu.0, CpuhpStep::SmpcfdPrepare as u64);
        let r = self.smpcfd_prepare_step(cpu);
        trace_point!(
            self,
            CpuhpExit,
            cpu.0,
            CpuhpStep::SmpcfdPrepare as u64,
            r.is_err()
        );
        r
    }

    /// The body of [`Self::smpcfd_prepare_cpu`].
    fn smpcfd_prepare_step(&self, cpu: CpuId) -> Result<(), SmpError> {
        let p = self.pcpu_backed(cpu).ok_or(SmpError::Nxio)?;
        // Relaxed: test hooks and bookkeeping of the hotplug state machine,
        // which runs its steps in order on one CPU.
        if p.cfd_alloc_fail.load(Ordering::Relaxed) {
            return Err(SmpError::NoMem);
        }
        self.cfd_row_prepare(p)?;
        p.cfd_prepared.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Gives the CPU of block `p` its cfd csds, unless it has them.
    fn cfd_row_prepare(&self, p: &CpuBlock) -> Result<(), SmpError> {
        let want = (self.nr_cpu_ids() as usize).next_power_of_two();
        if let Some(row) = self.cfd_row(p) {
            return if row.len() >= want {
                Ok(())
            } else {
                Err(SmpError::NoMem)
            };
        }
        // Relaxed: the claim orders nothing by itself; the row is published
        // by the Release store below (and a reader looks at the length only
        // after it saw the row). A failed claim: another prepare of this
        // CPU is allocating, or just set, the row.
        if p.cfd_len
            .compare_exchange(0, want as u32, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Err(SmpError::NoMem);
        }
        match self.arch.alloc_cfd_row(want) {
            Some(row) if row.len() >= want => {
                // Release: pairs with the Acquire load in `Smp::cfd_row`,
                // publishing the claimed length (and the idle csds).
                p.cfd_row.store(row.as_ptr().cast_mut(), Ordering::Release);
                Ok(())
            }
            _ => {
                // Relaxed: no row was published, so no reader looks at it.
                p.cfd_len.store(0, Ordering::Relaxed);
                Err(SmpError::NoMem)
            }
        }
    }

    /// smpcfd_dead_cpu - release `cpu`'s call data after it went down or
    /// failed to come up (the teardown of the prepare step).
    ///
    /// Context: task context, on the CPU driving the hotplug.
    ///
    /// Return: [`SmpError::Nxio`] for an out-of-range CPU.
    pub fn smpcfd_dead_cpu(&self, cpu: CpuId) -> Result<(), SmpError> {
        trace_point!(self, CpuhpEnter, cpu.0, CpuhpStep::SmpcfdDead as u64);
        let p = self.pcpu_backed(cpu);
        if let Some(p) = p {
            // Relaxed: see `smpcfd_prepare_cpu`.
            p.cfd_prepared.store(false, Ordering::Relaxed);
        }
        trace_point!(
            self,
            CpuhpExit,
            cpu.0,
            CpuhpStep::SmpcfdDead as u64,
            p.is_none()
        );
        p.map(|_| ()).ok_or(SmpError::Nxio)
    }

    /// smpcfd_dying_cpu - on the outgoing CPU, after it was marked offline:
    /// run every call queued to it, without the offline warning, then its
    /// irq_work. Calls queued before it went offline whose IPI has not
    /// arrived yet (or never will, because interrupts are off from here on)
    /// run here, exactly once.
    ///
    /// Context: the outgoing CPU, interrupts disabled, no other CPU about
    /// to queue to it (see the module docs).
    pub fn smpcfd_dying_cpu(&self) {
        #[cfg(feature = "trace")]
        let this = self.arch.this_cpu();
        trace_point!(self, CpuhpEnter, this.0, CpuhpStep::SmpcfdDying as u64);
        // The seed's flush: the calls, then this CPU's irq_work.
        self.flush_smp_call_function_queue(OfflineCalls::Expected);
        trace_point!(self, CpuhpExit, this.0, CpuhpStep::SmpcfdDying as u64, 0);
    }

    /// Whether `cpu`'s call data is prepared.
    pub fn cfd_prepared(&self, cpu: CpuId) -> bool {
        // Relaxed: see `smpcfd_prepare_cpu`.
        self.pcpu_checked(cpu)
            .is_some_and(|p| p.cfd_prepared.load(Ordering::Relaxed))
    }

    /// Fault injection: make [`Self::smpcfd_prepare_cpu`] for `cpu` fail
    /// with [`SmpError::NoMem`] while `fail` is set.
    pub fn set_cfd_alloc_fail(&self, cpu: CpuId, fail: bool) {
        if let Some(p) = self.pcpu_backed(cpu) {
            // Relaxed: see `smpcfd_prepare_cpu`.
            p.cfd_alloc_fail.store(fail, Ordering::Relaxed);
        }
    }
}
