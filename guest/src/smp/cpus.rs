//! CPU masks (possible, present, online), `nr_cpu_ids`, `setup_max_cpus`
//! and NUMA nodes of the machine.
//!
//! Invariant: every online, present and possible CPU is below
//! `nr_cpu_ids`, so "online" alone answers "valid and online".
//!
//! The getters may be called from any context; they return a snapshot. The
//! setters belong to boot and hotplug code.

use shared::{CpuId, MAX_CPUS};

use super::api::SmpError;
use super::arch::Arch;
use super::cpumask::CpuMask;
use super::state::Smp;
use super::sync::Ordering;

impl<A: Arch> Smp<A> {
    /// Whether `cpu` is online (false for any out-of-range number).
    ///
    /// Context: any.
    #[inline]
    pub fn cpu_online(&self, cpu: CpuId) -> bool {
        // Relaxed: a snapshot, as the mask's loads (see `AtomicCpuMask`).
        self.pcpu_checked(cpu)
            .is_some_and(|p| p.online.load(Ordering::Relaxed))
    }

    /// [`Self::cpu_online`] for a CPU number known to be valid (from
    /// [`Arch::this_cpu`]): no range check.
    #[inline]
    pub(crate) fn valid_cpu_online(&self, cpu: CpuId) -> bool {
        // Relaxed: as `cpu_online`.
        self.pcpu(cpu).online.load(Ordering::Relaxed)
    }

    /// Whether `cpu` is present.
    pub fn cpu_present(&self, cpu: CpuId) -> bool {
        self.present.test(cpu)
    }

    /// Whether `cpu` is possible.
    pub fn cpu_possible(&self, cpu: CpuId) -> bool {
        self.possible.test(cpu)
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
    /// `nr_cpu_ids` or without per-CPU data of its own (see
    /// [`Arch::cpu_blocks_backed`]); clearing one is a no-op.
    pub fn set_cpu_online(&self, cpu: CpuId, online: bool) -> Result<(), SmpError> {
        self.check_settable(cpu, online)?;
        // The per-CPU mirror first when going offline, last when coming
        // online: a CPU is never online in the mirror only. SeqCst: the
        // mirror is what senders test inside their send window (see
        // `Smp::send_enter`): this store, before the outgoing CPU's loads
        // of the `sending` words, is the other half of that Dekker pair.
        if !online && let Some(p) = self.pcpu_backed(cpu) {
            p.online.store(false, Ordering::SeqCst);
        }
        self.online.assign(cpu, online);
        if online && let Some(p) = self.pcpu_backed(cpu) {
            p.online.store(true, Ordering::SeqCst);
        }
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
        // A CPU without a block of its own (see `Arch::cpu_blocks_backed`)
        // has no per-CPU data: it can be neither possible nor online.
        if value && (cpu.0 >= self.nr_cpu_ids() || self.pcpu_backed(cpu).is_none()) {
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
        for p in self.backed_blocks().iter().skip(n as usize) {
            p.online.store(false, Ordering::SeqCst);
        }
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

    /// Sets `cpu`'s NUMA node (ignored for a CPU that does not exist).
    pub fn set_cpu_node(&self, cpu: CpuId, node: u32) {
        if let Some(p) = self.pcpu_backed(cpu) {
            // Relaxed: set at boot; read as a placement hint.
            p.node.store(node, Ordering::Relaxed);
        }
    }

    /// `cpu`'s NUMA node (0 unless set; 0 for an out-of-range CPU).
    #[inline]
    pub fn cpu_to_node(&self, cpu: CpuId) -> u32 {
        // Relaxed: see `set_cpu_node`.
        self.pcpu_checked(cpu)
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
}
