//! Snapshots of the per-CPU counters ([`CpuStats`]) and the WARN
//! conditions. The counters themselves are in `counters.rs`.

use shared::CpuId;
use shared::record::WarnKind;

use super::arch::Arch;
use super::counters::WARN_KINDS;
use super::event::Event;
use super::state::Smp;
use super::sync::Ordering;

/// A snapshot of one CPU's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Calls this CPU put on some CPU's call queue.
    pub calls_queued: u64,
    /// Functions this CPU ran from its call queue and irq_work list
    /// (counted as each starts).
    pub callbacks_run: u64,
    /// IPIs this CPU asked for: one per target CPU of a call-function IPI,
    /// plus irq_work self-IPIs and stall re-sends.
    pub ipis_requested: u64,
    /// Flushes of its call queue that found calls (IPIs taken, polling
    /// wake-ups): the kicks it took.
    pub kicks_taken: u64,
    /// WARNs that fired on this CPU, indexed like [`WarnKind::ALL`].
    pub warns: [u32; WARN_KINDS],
}

impl CpuStats {
    /// How often `kind` fired.
    pub fn warn_count(&self, kind: WarnKind) -> u32 {
        warn_index(kind)
            .and_then(|i| self.warns.get(i))
            .copied()
            .unwrap_or(0)
    }
}

fn warn_index(kind: WarnKind) -> Option<usize> {
    (kind as usize).checked_sub(1)
}

impl<A: Arch> Smp<A> {
    /// A snapshot of `cpu`'s counters (all zero for an invalid CPU).
    ///
    /// Context: any.
    pub fn stats(&self, cpu: CpuId) -> CpuStats {
        let Some(p) = self.pcpu_checked(cpu) else {
            return CpuStats::default();
        };
        let c = &p.counters;
        // Relaxed: as below.
        let lone = c.lone_syncs_run.load(Ordering::Relaxed);
        // Relaxed loads: a snapshot of statistics.
        CpuStats {
            calls_queued: c.calls_queued.load(Ordering::Relaxed),
            callbacks_run: c.callbacks_run.load(Ordering::Relaxed) + lone,
            ipis_requested: c.ipis_requested.load(Ordering::Relaxed),
            kicks_taken: c.kicks_taken.load(Ordering::Relaxed) + lone,
            warns: core::array::from_fn(|i| c.warns[i].load(Ordering::Relaxed)),
        }
    }

    /// How often `kind` fired on `cpu`.
    ///
    /// Context: any.
    pub fn warn_count(&self, cpu: CpuId, kind: WarnKind) -> u32 {
        self.stats(cpu).warn_count(kind)
    }

    /// Counts a WARN on `cpu` (this CPU) without reporting it; returns the
    /// new count.
    #[cold]
    pub(crate) fn count_warn(&self, cpu: CpuId, kind: WarnKind) -> u32 {
        let counters = &self.pcpu(cpu).counters;
        match warn_index(kind).and_then(|i| counters.warns.get(i)) {
            // Relaxed: a statistic.
            Some(c) => c.fetch_add(1, Ordering::Relaxed).wrapping_add(1),
            None => 0,
        }
    }

    /// Counts a WARN on `cpu` (this CPU) and reports it to the host.
    #[cold]
    #[inline(never)]
    pub(crate) fn warn(&self, cpu: CpuId, kind: WarnKind, detail: u64) {
        let count = self.count_warn(cpu, kind);
        self.arch.report(Event::Warn {
            kind,
            count,
            detail,
        });
    }
}
