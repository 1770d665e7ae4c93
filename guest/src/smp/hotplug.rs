//! CPU masks, `nr_cpu_ids`, NUMA nodes, and the smp pieces of CPU hotplug
//! (modern Linux's `smpcfd:prepare` / `smpcfd:dying` / `smpcfd:dead`
//! states; the state machine that calls them is the arch's).
//!
//! Invariant: every online, present and possible CPU is below
//! `nr_cpu_ids`, so "online" alone answers "valid and online".
//!
//! The getters may be called from any context; they return a snapshot. The
//! setters belong to boot and hotplug code.
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

use shared::{CpuId, MAX_CPUS};

use super::sync::Ordering;
use super::{Arch, CpuMask, Smp, SmpError, WarnKind};

/// How long the outgoing CPU waits for senders before it warns and goes on.
const SENDER_WAIT_NS: u64 = 2_000_000_000;

impl<A: Arch> Smp<A> {
    /// Whether `cpu` is online (false for any out-of-range number).
    ///
    /// Context: any.
    #[inline]
    pub fn cpu_online(&self, cpu: CpuId) -> bool {
        self.online.load().test(cpu)
    }

    /// [`Self::cpu_online`] for a CPU number known to be valid (from
    /// [`Arch::this_cpu`]): no range check.
    #[inline]
    pub(crate) fn valid_cpu_online(&self, cpu: CpuId) -> bool {
        self.online.load().bits() >> (cpu.0 % 64) & 1 != 0
    }

    /// Opens this CPU's send window: from here until [`Self::send_exit`]
    /// an outgoing CPU waits before its dying flush. Returns the previous
    /// window state, so that a window opened by an interrupt handler
    /// nested in another restores it.
    #[inline(always)]
    pub(crate) fn send_enter(&self, this: CpuId) -> u32 {
        // SeqCst: this store and the online test that follows
        // (`cpu_online_in_window`) against the outgoing CPU's SeqCst mask
        // update and its SeqCst load of this word: either the sender sees
        // the CPU offline, or the outgoing CPU sees the window open.
        self.pcpu(this).sending.swap(1, Ordering::SeqCst)
    }

    /// Closes the window opened by [`Self::send_enter`].
    #[inline(always)]
    pub(crate) fn send_exit(&self, this: CpuId, prev: u32) {
        // Release: the queueing inside the window happens before the
        // outgoing CPU's Acquire load sees the window closed, so its dying
        // flush finds the call.
        self.pcpu(this).sending.store(prev, Ordering::Release);
    }

    /// [`Self::cpu_online`] for use inside a send window (SeqCst load, a
    /// plain `mov` on x86; see [`Self::send_enter`]).
    #[inline(always)]
    pub(crate) fn cpu_online_in_window(&self, cpu: CpuId) -> bool {
        self.online.load_sc().test(cpu)
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
                    self.flush_queue(false);
                }
                self.arch.cpu_relax();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64)
                    && self.arch.now_ns().saturating_sub(start) > SENDER_WAIT_NS
                {
                    self.warn(this, WarnKind::HotplugSenderTimeout, u64::from(cpu.0));
                    break;
                }
            }
        }
    }

    /// Whether `cpu` is present.
    pub fn cpu_present(&self, cpu: CpuId) -> bool {
        self.present.load().test(cpu)
    }

    /// Whether `cpu` is possible.
    pub fn cpu_possible(&self, cpu: CpuId) -> bool {
        self.possible.load().test(cpu)
    }

    /// The online CPUs.
    #[inline]
    pub fn online_mask(&self) -> CpuMask {
        self.online.load()
    }

    /// The present CPUs.
    pub fn present_mask(&self) -> CpuMask {
        self.present.load()
    }

    /// The possible CPUs.
    pub fn possible_mask(&self) -> CpuMask {
        self.possible.load()
    }

    /// Number of online CPUs.
    pub fn num_online_cpus(&self) -> u32 {
        self.online.load().weight()
    }

    /// Number of present CPUs.
    pub fn num_present_cpus(&self) -> u32 {
        self.present.load().weight()
    }

    /// Number of possible CPUs.
    pub fn num_possible_cpus(&self) -> u32 {
        self.possible.load().weight()
    }

    /// Marks `cpu` online or offline. Hotplug state machine only.
    ///
    /// Return: [`SmpError::Nxio`] when setting a CPU at or above
    /// `nr_cpu_ids` (clearing one is a no-op).
    pub fn set_cpu_online(&self, cpu: CpuId, online: bool) -> Result<(), SmpError> {
        self.check_settable(cpu, online)?;
        self.online.assign(cpu, online);
        Ok(())
    }

    /// Marks `cpu` present or not. Boot / hotplug code only.
    ///
    /// Return: as [`Self::set_cpu_online`].
    pub fn set_cpu_present(&self, cpu: CpuId, present: bool) -> Result<(), SmpError> {
        self.check_settable(cpu, present)?;
        self.present.assign(cpu, present);
        Ok(())
    }

    /// Marks `cpu` possible or not. Boot code only.
    ///
    /// Return: as [`Self::set_cpu_online`].
    pub fn set_cpu_possible(&self, cpu: CpuId, possible: bool) -> Result<(), SmpError> {
        self.check_settable(cpu, possible)?;
        self.possible.assign(cpu, possible);
        Ok(())
    }

    fn check_settable(&self, cpu: CpuId, value: bool) -> Result<(), SmpError> {
        if value && cpu.0 >= self.nr_cpu_ids() {
            Err(SmpError::Nxio)
        } else {
            Ok(())
        }
    }

    /// The number of CPU ids in use: every valid CPU number is below it.
    #[inline]
    pub fn nr_cpu_ids(&self) -> u32 {
        // Relaxed: set once at boot, before other CPUs run; the masks keep
        // the invariant on their own.
        self.nr_cpu_ids.load(Ordering::Relaxed)
    }

    /// Sets `nr_cpu_ids` (clamped to `1..=MAX_CPUS`), and drops CPUs at or
    /// above it from every mask. Boot code only, before other CPUs run.
    pub fn set_nr_cpu_ids(&self, n: u32) {
        let n = n.clamp(1, MAX_CPUS as u32);
        // Relaxed: see `nr_cpu_ids`.
        self.nr_cpu_ids.store(n, Ordering::Relaxed);
        let keep = CpuMask::first_n(n);
        self.possible.retain(keep);
        self.present.retain(keep);
        self.online.retain(keep);
    }

    /// setup_nr_cpu_ids - `nr_cpu_ids` = highest possible CPU + 1 (1 if none
    /// is possible yet). Boot code only.
    pub fn setup_nr_cpu_ids(&self) {
        let n = self.possible.load().last().map_or(1, |c| c.0 + 1);
        self.set_nr_cpu_ids(n);
    }

    /// The `nr_cpus=` boot parameter: lowers `nr_cpu_ids` to `n` when
    /// `0 < n < nr_cpu_ids`, as in the seed; otherwise nothing changes.
    pub fn apply_nr_cpus_param(&self, n: u32) {
        if n > 0 && n < self.nr_cpu_ids() {
            self.set_nr_cpu_ids(n);
        }
    }

    /// `setup_max_cpus`: how many CPUs `smp_init` may bring up (`maxcpus=`;
    /// 0 for `nosmp`). Defaults to [`MAX_CPUS`]. Kept here for the boot code.
    pub fn setup_max_cpus(&self) -> u32 {
        // Relaxed: a boot parameter, set before other CPUs run.
        self.setup_max_cpus.load(Ordering::Relaxed)
    }

    /// Sets [`Self::setup_max_cpus`] (`maxcpus=N`, or 0 for `nosmp`).
    pub fn set_setup_max_cpus(&self, n: u32) {
        // Relaxed: see `setup_max_cpus`.
        self.setup_max_cpus.store(n, Ordering::Relaxed);
    }

    /// Sets `cpu`'s NUMA node (ignored for an out-of-range CPU).
    pub fn set_cpu_node(&self, cpu: CpuId, node: u32) {
        if let Some(p) = self.percpu.get(cpu.index()) {
            // Relaxed: set at boot; read as a placement hint.
            p.node.store(node, Ordering::Relaxed);
        }
    }

    /// `cpu`'s NUMA node (0 unless set; 0 for an out-of-range CPU).
    #[inline]
    pub fn cpu_to_node(&self, cpu: CpuId) -> u32 {
        // Relaxed: see `set_cpu_node`.
        self.percpu
            .get(cpu.index())
            .map_or(0, |p| p.node.load(Ordering::Relaxed))
    }

    /// The possible CPUs on `node` (Linux's `cpumask_of_node`).
    pub fn cpumask_of_node(&self, node: u32) -> CpuMask {
        self.possible
            .load()
            .iter()
            .filter(|&c| self.cpu_to_node(c) == node)
            .collect()
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

    /// smpcfd_prepare_cpu - set up `cpu`'s call data before it comes up
    /// (Linux allocates its cfd masks and per-target csds here; ours are
    /// static, so this only marks them ready, but it can fail on purpose:
    /// see [`Self::set_cfd_alloc_fail`]). Idempotent.
    ///
    /// Context: task context, on the CPU driving the hotplug.
    ///
    /// Return: [`SmpError::Nxio`] for an out-of-range CPU,
    /// [`SmpError::NoMem`] when failure is injected.
    pub fn smpcfd_prepare_cpu(&self, cpu: CpuId) -> Result<(), SmpError> {
        let p = self.percpu.get(cpu.index()).ok_or(SmpError::Nxio)?;
        // Relaxed: test hooks and bookkeeping of the hotplug state machine,
        // which runs its steps in order on one CPU.
        if p.cfd_alloc_fail.load(Ordering::Relaxed) {
            return Err(SmpError::NoMem);
        }
        p.cfd_prepared.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// smpcfd_dead_cpu - release `cpu`'s call data after it went down or
    /// failed to come up (the teardown of the prepare step).
    ///
    /// Context: task context, on the CPU driving the hotplug.
    ///
    /// Return: [`SmpError::Nxio`] for an out-of-range CPU.
    pub fn smpcfd_dead_cpu(&self, cpu: CpuId) -> Result<(), SmpError> {
        let p = self.percpu.get(cpu.index()).ok_or(SmpError::Nxio)?;
        // Relaxed: see `smpcfd_prepare_cpu`.
        p.cfd_prepared.store(false, Ordering::Relaxed);
        Ok(())
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
        // The seed's flush: the calls, then this CPU's irq_work.
        self.flush_queue(false);
    }

    /// Whether `cpu`'s call data is prepared.
    pub fn cfd_prepared(&self, cpu: CpuId) -> bool {
        // Relaxed: see `smpcfd_prepare_cpu`.
        self.percpu
            .get(cpu.index())
            .is_some_and(|p| p.cfd_prepared.load(Ordering::Relaxed))
    }

    /// Fault injection: make [`Self::smpcfd_prepare_cpu`] for `cpu` fail
    /// with [`SmpError::NoMem`] while `fail` is set.
    pub fn set_cfd_alloc_fail(&self, cpu: CpuId, fail: bool) {
        if let Some(p) = self.percpu.get(cpu.index()) {
            // Relaxed: see `smpcfd_prepare_cpu`.
            p.cfd_alloc_fail.store(fail, Ordering::Relaxed);
        }
    }
}
