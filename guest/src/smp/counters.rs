//! A CPU's live counters ([`Counters`], in its per-CPU block).
//!
//! Each counter is written only by the CPU it belongs to, with a `Relaxed`
//! `fetch_add` (one `lock add` on x86: a single instruction, so it is also
//! exact when an interrupt handler on the same CPU bumps the same counter).
//! Readers on other CPUs get a snapshot (`Smp::stats`).

use shared::record::WarnKind;

use super::sync::{AtomicU32, AtomicU64, Ordering};

/// Number of [`WarnKind`]s.
pub(super) const WARN_KINDS: usize = WarnKind::ALL.len();

/// The live counters of one CPU.
#[repr(C)]
pub(crate) struct Counters {
    /// Calls this CPU put on some CPU's call queue.
    pub(crate) calls_queued: AtomicU64,
    /// Functions this CPU ran from its call queue (csds and remote
    /// irq_work) and from its irq_work list, counted as each starts (so
    /// that the IPI path keeps nothing but the csd across the callback).
    pub(crate) callbacks_run: AtomicU64,
    /// IPIs this CPU asked the arch to send: one per target CPU of a
    /// call-function IPI, plus irq_work self-IPIs and stall re-sends.
    pub(crate) ipis_requested: AtomicU64,
    /// Flushes of this CPU's call queue that found calls: the kicks it took
    /// (call-function IPIs, polling wake-ups, task-context flushes). An IPI
    /// that finds its calls already run counts nothing.
    pub(crate) kicks_taken: AtomicU64,
    /// Kicks that found one SYNC csd alone and ran it (the IPI path of
    /// `smp_call_function_single(wait)`): each is a kick taken and a
    /// callback run, counted here once instead of in both (one `lock inc`
    /// on the round trip); [`Smp::stats`] adds it to both.
    pub(crate) lone_syncs_run: AtomicU64,
    /// WARNs that fired on this CPU, by `WarnKind as usize - 1`.
    pub(super) warns: [AtomicU32; WARN_KINDS],
}

impl Counters {
    pub(crate) const fn new() -> Self {
        Self {
            calls_queued: AtomicU64::new(0),
            callbacks_run: AtomicU64::new(0),
            ipis_requested: AtomicU64::new(0),
            kicks_taken: AtomicU64::new(0),
            lone_syncs_run: AtomicU64::new(0),
            warns: [const { AtomicU32::new(0) }; WARN_KINDS],
        }
    }
}

/// Adds one to a counter of this CPU.
#[inline(always)]
pub(crate) fn bump(counter: &AtomicU64) {
    // Relaxed: a statistic; no other data is published through it.
    counter.fetch_add(1, Ordering::Relaxed);
}
