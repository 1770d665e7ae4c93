//! The cross-call entry points: `smp_call_function_single`, `_single_async`,
//! `_any`, `_many_cond` and its wrappers, `kick_all_cpus_sync`.
//!
//! Callers must not migrate between CPUs during a call (the guest never
//! migrates: there is no scheduler). Calls that wait must be made with
//! interrupts enabled, or the CPUs they wait for may be waiting for them:
//! doing otherwise is a counted and reported WARN, not an error.
//!
//! Only `smp_call_function_single_async` and `irq_work_queue*` may be used
//! from interrupt context (an IPI callback, an irq_work): the other entry
//! points lock per-CPU csds that the interrupted code on the same CPU may be
//! in the middle of locking (Linux's `WARN_ON_ONCE(!in_task())`).

use shared::CpuId;

use super::api::{ScfFlags, SmpCallFunc, SmpCondFunc, SmpError};
use super::arch::Arch;
use super::counters::bump;
use super::cpumask::CpuMask;
use super::csd::{CSD_TYPE_ASYNC, CallSingleNode, Csd};
use super::stall::{StackCsdGuard, csd_type_for};
use super::state::Smp;
use super::sync::{Ordering, fence};
use shared::record::WarnKind;

fn do_nothing(_: usize) {}

impl<A: Arch> Smp<A> {
    /// smp_call_function_single - run `func(info)` on one CPU.
    ///
    /// `cpu`: the CPU to run on; this CPU is fine (it then runs right here,
    /// with interrupts disabled). `wait`: if true, return only after `func`
    /// has returned on `cpu`, and everything it wrote is visible here; if
    /// false, return once the call is queued (it uses this CPU's single
    /// async csd, so it first waits for this CPU's previous non-waiting
    /// single call to have started).
    ///
    /// Context: task context with interrupts enabled. With interrupts
    /// disabled on an online CPU it counts and reports
    /// [`WarnKind::WaitWithIrqsDisabled`] whether or not `wait` is set, as
    /// both the seed and modern Linux do: `wait` spins for the target, and
    /// `!wait` may spin in the csd lock for the previous call; either
    /// deadlocks if the target is itself spinning for this CPU. A CPU that
    /// is not online yet may call with interrupts disabled: nobody can be
    /// waiting for it. `func` must be fast and must not block.
    ///
    /// Return: `Ok(())`, or [`SmpError::Nxio`] if `cpu` is not a valid,
    /// online CPU (nothing is queued then).
    ///
    /// The remote waiting call is the IPI round trip's hot path and is
    /// inlined into the caller (under 40 instructions up to the IPI), as is
    /// the local call; the non-waiting call and the warning are out of
    /// line.
    #[inline(always)]
    pub fn smp_call_function_single(
        &self,
        cpu: CpuId,
        func: SmpCallFunc,
        info: usize,
        wait: bool,
    ) -> Result<(), SmpError> {
        let this = self.arch.this_cpu();
        if cpu != this && wait {
            // Checks the interrupt flag itself, after its IPI is out.
            return self.single_wait(this, cpu, func, info);
        }
        self.check_irqs_enabled(this, u64::from(cpu.0));
        if cpu == this {
            self.run_local(func, info);
            return Ok(());
        }
        self.single_async_percpu(this, cpu, func, info)
    }

    /// Counts and reports [`WarnKind::WaitWithIrqsDisabled`] (with
    /// `detail`: the target CPU or mask) if this CPU makes a call with
    /// interrupts disabled.
    #[inline(always)]
    fn check_irqs_enabled(&self, this: CpuId, detail: u64) {
        if self.arch.irqs_disabled() {
            self.warn_wait_irqs_disabled(this, detail);
        }
    }

    /// The warning of a cross-call made with interrupts disabled, unless
    /// this CPU is not online yet (nobody can be waiting for it then).
    #[cold]
    #[inline(never)]
    fn warn_wait_irqs_disabled(&self, this: CpuId, detail: u64) {
        if self.valid_cpu_online(this) {
            self.warn(this, WarnKind::WaitWithIrqsDisabled, detail);
        }
    }

    /// `smp_call_function_single` to another CPU, not waiting: through
    /// this CPU's `csd_data`.
    #[cfg_attr(not(feature = "trace"), inline(never))]
    #[cfg_attr(feature = "trace", inline(always))]
    fn single_async_percpu(
        &self,
        this: CpuId,
        cpu: CpuId,
        func: SmpCallFunc,
        info: usize,
    ) -> Result<(), SmpError> {
        if !self.cpu_online(cpu) {
            return Err(SmpError::Nxio);
        }
        let csd = &self.pcpu(this).csd_data.0;
        self.csd_lock(csd, this, CSD_TYPE_ASYNC);
        // SAFETY: we hold the lock of this unqueued csd; the function and
        // info are set, and `csd_data` outlives every queue.
        unsafe {
            csd.write(func, info);
            self.generic_exec_single(this, cpu, csd)
        }
    }

    /// `smp_call_function_single` to another CPU, waiting. The check of
    /// the interrupt flag comes after the IPI (the warning is the same, and
    /// it is then off the round trip's critical path), or before the
    /// `-ENXIO` return.
    #[inline(always)]
    fn single_wait(
        &self,
        this: CpuId,
        cpu: CpuId,
        func: SmpCallFunc,
        info: usize,
    ) -> Result<(), SmpError> {
        {
            let csd = Csd::new_sync_locked(func, info);
            // The send window spans the online test and the queueing (see
            // `Smp::synchronize_senders`).
            let window = self.send_enter(this);
            // Online implies below nr_cpu_ids (hotplug.rs keeps that
            // invariant).
            if !self.cpu_online_in_window(cpu) {
                self.send_exit(this, window);
                self.check_irqs_enabled(this, u64::from(cpu.0));
                return Err(SmpError::Nxio);
            }
            // SAFETY: `csd` lives on this stack frame until it is unlocked:
            // from the add on, the guard (on unwinding) or the wait below
            // keeps this frame alive until the flusher released it.
            let kick = unsafe { self.queue_add(cpu, csd.node()) };
            let guard = StackCsdGuard(&csd);
            trace_point!(
                self,
                CsdQueueCpu,
                cpu.0,
                callsite!(self),
                func as usize,
                &csd as *const Csd as usize
            );
            // The IPI goes out first; the bookkeeping after it is off the
            // round trip's critical path.
            if kick {
                trace_point!(self, IpiSendCpu, cpu.0, callsite!(self), func as usize);
                self.arch.send_call_function_single_ipi(cpu);
            }
            // Read again rather than kept: this CPU's block is then found
            // again after the IPI, and no register holds its address
            // across the queueing and the ICR write.
            let this = self.arch.this_cpu();
            if kick {
                bump(&self.pcpu(this).counters.ipis_requested);
            }
            self.send_exit(this, window);
            self.check_irqs_enabled(this, u64::from(cpu.0));
            self.count_queued(this);
            self.csd_lock_wait_stack(&csd, this, cpu);
            core::mem::forget(guard);
        }
        Ok(())
    }

    /// smp_call_function_single_async - run `csd`'s function on one CPU
    /// without waiting.
    ///
    /// The caller owns `csd` and may reuse it once its function has started
    /// (the csd is unlocked just before the call, so the function itself
    /// may requeue it). On this CPU the function runs right here, with
    /// interrupts disabled.
    ///
    /// Context: any, including interrupts disabled and IPI handlers.
    ///
    /// Return: `Ok(())`; [`SmpError::Busy`] if `csd` is still in flight
    /// (nothing changes); [`SmpError::Nxio`] if `cpu` is not a valid, online
    /// CPU (the csd is left unlocked).
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn smp_call_function_single_async(
        &self,
        cpu: CpuId,
        csd: &'static Csd,
    ) -> Result<(), SmpError> {
        csd.try_lock(CSD_TYPE_ASYNC)?;
        let this = self.arch.this_cpu();
        // SAFETY: `csd` is 'static and locked by us.
        unsafe { self.generic_exec_single(this, cpu, csd) }
    }

    /// Runs or queues a locked ASYNC csd (the seed's `generic_exec_single`
    /// for the csds of non-waiting calls).
    ///
    /// # Safety
    ///
    /// The caller holds `csd`'s lock, its func/info are set, and it outlives
    /// every queue of `self` (it is `'static` or part of `self`).
    #[cfg_attr(not(feature = "trace"), inline)]
    #[cfg_attr(feature = "trace", inline(always))]
    unsafe fn generic_exec_single(
        &self,
        this: CpuId,
        cpu: CpuId,
        csd: &Csd,
    ) -> Result<(), SmpError> {
        if cpu == this {
            // SAFETY: we hold the lock.
            let (func, info) = unsafe { csd.read() };
            // Unlock first, as the flush does for ASYNC: `func` may requeue it.
            self.csd_unlock(this, csd, func as usize);
            self.run_local(func, info);
            return Ok(());
        }
        let window = self.send_enter(this);
        if !self.cpu_online_in_window(cpu) {
            self.send_exit(this, window);
            // SAFETY: we hold the lock.
            let (func, _) = unsafe { csd.read() };
            self.csd_unlock(this, csd, func as usize);
            return Err(SmpError::Nxio);
        }
        csd.set_dst(cpu.0);
        // SAFETY: we hold the lock: func is set and not written until the
        // flusher takes the csd, and this read is before the add.
        #[cfg(feature = "trace")]
        let func = unsafe { csd.read() }.0 as usize;
        // SAFETY: the caller guarantees the csd outlives the queue.
        let kick = unsafe { self.queue_add(cpu, csd.node()) };
        trace_point!(
            self,
            CsdQueueCpu,
            cpu.0,
            callsite!(self),
            func,
            csd as *const Csd as usize
        );
        if kick {
            trace_point!(self, IpiSendCpu, cpu.0, callsite!(self), func);
            self.send_single_ipi(this, cpu);
        }
        self.send_exit(this, window);
        self.count_queued(this);
        Ok(())
    }

    /// smp_call_function_any - run `func(info)` on one CPU of `mask`.
    ///
    /// Preference: this CPU if it is in `mask`; else the first online CPU of
    /// `mask` on this CPU's NUMA node; else the first online CPU of `mask`.
    /// `wait` as for [`Self::smp_call_function_single`].
    ///
    /// Context: as [`Self::smp_call_function_single`].
    ///
    /// Return: `Ok(())`, or [`SmpError::Nxio`] if `mask` has no online CPU
    /// (and does not contain this CPU).
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn smp_call_function_any(
        &self,
        mask: CpuMask,
        func: SmpCallFunc,
        info: usize,
        wait: bool,
    ) -> Result<(), SmpError> {
        let this = self.arch.this_cpu();
        let cpu = if mask.test(this) {
            this
        } else {
            let candidates = mask.and(self.online_mask());
            let node = self.cpu_to_node(this);
            match candidates
                .iter()
                .find(|&c| self.cpu_to_node(c) == node)
                .or(candidates.first())
            {
                Some(cpu) => cpu,
                // No online CPU in the mask: an error, never an index out of
                // range (the 2025 locality change crashed exactly here).
                None => return Err(SmpError::Nxio),
            }
        };
        self.smp_call_function_single(cpu, func, info, wait)
    }

    /// smp_call_function_many_cond - run `func(info)` on the online CPUs of
    /// `mask` for which `cond(cpu, info)` is true (all if `cond` is `None`).
    ///
    /// This CPU takes part only with [`ScfFlags::RUN_LOCAL`]; it runs `func`
    /// with interrupts disabled, after queueing the remote calls and while
    /// the other CPUs run them. With [`ScfFlags::WAIT`] it returns only once
    /// every CPU the call was queued to has run `func` (including a CPU that
    /// got no IPI because its queue was already non-empty); without, once
    /// the calls are queued. `cond` runs here, before queueing, once per
    /// candidate CPU: a CPU it rejects gets neither a call nor an IPI.
    ///
    /// IPIs: only CPUs whose queue was empty get one; exactly one such CPU
    /// gets the single-target IPI, more get one mask IPI.
    ///
    /// Context: task context with interrupts enabled (else a counted and
    /// reported [`WarnKind::WaitWithIrqsDisabled`], as for the single call:
    /// even without `WAIT` the per-target csd lock may spin). `func` must be
    /// fast and must not block.
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn smp_call_function_many_cond(
        &self,
        mask: CpuMask,
        func: SmpCallFunc,
        info: usize,
        flags: ScfFlags,
        cond: Option<SmpCondFunc>,
    ) {
        let this = self.arch.this_cpu();
        let wait = flags.contains(ScfFlags::WAIT);
        self.check_irqs_enabled(this, mask.word(0));
        let pcpu = self.pcpu(this);
        // The send window spans the online test and the queueing (see
        // `Smp::synchronize_senders`); an outgoing CPU serves its queue
        // while it waits, so a csd lock below cannot wait for it forever.
        let window = self.send_enter(this);
        let targets = mask.and(self.online_mask_in_window()).without(this);
        let mut queued = CpuMask::EMPTY;
        // Every CPU that runs was prepared (the boot CPU by
        // `call_function_init`, the others before they came up).
        let cfd = self.cfd_row(pcpu).expect("a CPU that was never prepared");
        if !targets.is_empty() {
            let csd_type = csd_type_for(wait);
            let mut ipi = CpuMask::EMPTY;
            for cpu in targets {
                if let Some(cond) = cond
                    && !cond(cpu, info)
                {
                    continue;
                }
                let csd = cfd.csd(cpu);
                self.csd_lock(csd, this, csd_type);
                // SAFETY: we hold the lock of this unqueued csd.
                unsafe { csd.write(func, info) };
                csd.set_dst(cpu.0);
                queued.set(cpu);
                // SAFETY: cfd csds live as long as `self` and its queues.
                let kick = unsafe { self.queue_add(cpu, csd.node()) };
                trace_point!(
                    self,
                    CsdQueueCpu,
                    cpu.0,
                    callsite!(self),
                    func as usize,
                    csd as *const Csd as usize
                );
                if kick {
                    ipi.set(cpu);
                }
            }
            self.send_exit(this, window);
            // Relaxed: a statistic of this CPU.
            pcpu.counters
                .calls_queued
                .fetch_add(u64::from(queued.weight()), Ordering::Relaxed);
            if let (true, Some(cpu)) = (ipi.is_single(), ipi.first()) {
                trace_point!(self, IpiSendCpu, cpu.0, callsite!(self), func as usize);
                self.send_single_ipi(this, cpu);
            } else if !ipi.is_empty() {
                trace_point!(
                    self,
                    IpiSendCpumask,
                    ipi.weight(),
                    callsite!(self),
                    func as usize,
                    ipi.word(0),
                    ipi.word(1),
                    ipi.word(2)
                );
                pcpu.counters
                    .ipis_requested
                    .fetch_add(u64::from(ipi.weight()), Ordering::Relaxed);
                self.arch
                    .send_call_function_ipi_mask(ipi, self.online_mask());
            }
        } else {
            self.send_exit(this, window);
        }
        if flags.contains(ScfFlags::RUN_LOCAL)
            && mask.test(this)
            && cond.is_none_or(|cond| cond(this, info))
        {
            self.run_local(func, info);
        }
        if wait {
            // Wait iff enqueued: every CPU we queued to, IPI'd or not.
            for cpu in queued {
                self.csd_lock_wait(cfd.csd(cpu), this);
            }
        }
    }

    /// smp_call_function_many - run `func(info)` on the online CPUs of
    /// `mask` except this one. `wait`: return only after all have run it.
    ///
    /// Context: as [`Self::smp_call_function_many_cond`].
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn smp_call_function_many(
        &self,
        mask: CpuMask,
        func: SmpCallFunc,
        info: usize,
        wait: bool,
    ) {
        self.smp_call_function_many_cond(mask, func, info, ScfFlags::wait_if(wait), None);
    }

    /// smp_call_function - run `func(info)` on all other online CPUs.
    /// `wait`: return only after all have run it.
    ///
    /// Context: as [`Self::smp_call_function_many_cond`].
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn smp_call_function(&self, func: SmpCallFunc, info: usize, wait: bool) {
        self.smp_call_function_many(self.online_mask(), func, info, wait);
    }

    /// on_each_cpu - run `func(info)` on every online CPU and on this one
    /// (which runs it with interrupts disabled, even before it is online,
    /// as in the seed). `wait`: return only after all have run it.
    ///
    /// Context: as [`Self::smp_call_function_many_cond`].
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn on_each_cpu(&self, func: SmpCallFunc, info: usize, wait: bool) {
        let mask = self.online_mask().with(self.arch.this_cpu());
        self.on_each_cpu_mask(mask, func, info, wait);
    }

    /// on_each_cpu_mask - run `func(info)` on the online CPUs of `mask`, and
    /// on this CPU if it is in `mask` (interrupts disabled).
    /// `wait`: return only after all have run it.
    ///
    /// Context: as [`Self::smp_call_function_many_cond`].
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn on_each_cpu_mask(&self, mask: CpuMask, func: SmpCallFunc, info: usize, wait: bool) {
        self.smp_call_function_many_cond(
            mask,
            func,
            info,
            ScfFlags::RUN_LOCAL | ScfFlags::wait_if(wait),
            None,
        );
    }

    /// on_each_cpu_cond_mask - run `func(info)` on each online CPU of `mask`
    /// (this one included, if in `mask`) for which `cond(cpu, info)` is true.
    /// `wait`: return only after all have run it.
    ///
    /// The seed's `on_each_cpu_cond` allocated a cpumask, filled it by
    /// calling `cond` for every online CPU, and fell back to one
    /// `smp_call_function_single` per CPU when the allocation failed. Here
    /// `cond` is evaluated inside `smp_call_function_many_cond`, right before
    /// each CPU's csd is queued (modern Linux), so there is no mask to
    /// allocate and no fallback, and a CPU rejected by `cond` costs nothing.
    ///
    /// Context: as [`Self::smp_call_function_many_cond`].
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn on_each_cpu_cond_mask(
        &self,
        cond: SmpCondFunc,
        func: SmpCallFunc,
        info: usize,
        wait: bool,
        mask: CpuMask,
    ) {
        self.smp_call_function_many_cond(
            mask,
            func,
            info,
            ScfFlags::RUN_LOCAL | ScfFlags::wait_if(wait),
            Some(cond),
        );
    }

    /// on_each_cpu_cond - [`Self::on_each_cpu_cond_mask`] over all online
    /// CPUs and this one.
    ///
    /// Context: as [`Self::smp_call_function_many_cond`].
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn on_each_cpu_cond(&self, cond: SmpCondFunc, func: SmpCallFunc, info: usize, wait: bool) {
        let mask = self.online_mask().with(self.arch.this_cpu());
        self.on_each_cpu_cond_mask(cond, func, info, wait, mask);
    }

    /// kick_all_cpus_sync - make every other online CPU take an interrupt
    /// and return only after each has: a full fence, then a waiting
    /// [`Self::smp_call_function`] of an empty function. After it returns,
    /// every CPU has seen the stores this CPU made before the call.
    ///
    /// Context: as [`Self::smp_call_function_many_cond`].
    #[cfg_attr(feature = "trace", inline(always))] // callsite: see trace.rs
    pub fn kick_all_cpus_sync(&self) {
        // Make our earlier stores visible before the CPUs are kicked.
        fence(Ordering::SeqCst);
        self.smp_call_function(do_nothing, 0, true);
    }

    /// Runs `func(info)` on this CPU with interrupts disabled.
    #[inline]
    fn run_local(&self, func: SmpCallFunc, info: usize) {
        let flags = self.arch.irq_save();
        trace_point!(self, CsdFunctionEntry, 0, func as usize, 0);
        func(info);
        trace_point!(self, CsdFunctionExit, 0, func as usize, 0);
        self.arch.irq_restore(flags);
    }

    /// Adds a node to `cpu`'s call queue; returns whether the queue was
    /// empty, i.e. whether `cpu` needs an IPI (Linux's
    /// `__smp_call_single_queue` minus the send). The caller counts the
    /// call with [`Self::count_queued`] (after the IPI, off the critical
    /// path).
    ///
    /// # Safety
    ///
    /// `node` is locked / claimed by the caller, on no list, and stays live
    /// until its flusher has released it. `cpu` is valid.
    #[inline]
    pub(crate) unsafe fn queue_add(&self, cpu: CpuId, node: &CallSingleNode) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { self.queue(cpu).add(node.link()) }
    }

    /// Counts one call this CPU queued.
    #[inline]
    pub(crate) fn count_queued(&self, this: CpuId) {
        bump(&self.pcpu(this).counters.calls_queued);
    }

    /// Sends the single-target call-function IPI, then counts it.
    #[inline]
    pub(crate) fn send_single_ipi(&self, this: CpuId, cpu: CpuId) {
        self.arch.send_call_function_single_ipi(cpu);
        bump(&self.pcpu(this).counters.ipis_requested);
    }
}
