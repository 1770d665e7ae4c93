//! What the smp core reports to the host through [`super::Arch::report`].

use shared::CpuId;
use shared::record::WarnKind;

/// A warning or a csd-lock stall report. `Copy`, and holds only numbers:
/// function addresses and `info` words are plain `usize` values, never
/// references, so an event can be kept after the call it describes is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// One of the seed's WARN conditions fired on `cpu`. Maps one to one
    /// onto [`shared::record::Body::Warn`].
    Warn {
        /// The CPU it fired on.
        cpu: CpuId,
        /// Which condition.
        kind: WarnKind,
        /// How often this kind has fired on `cpu`, this one included.
        count: u32,
        /// Context, by kind:
        /// - [`WarnKind::WaitWithIrqsDisabled`]: the target CPU of a single
        ///   call, or the mask bits of a multi-CPU call;
        /// - [`WarnKind::UnlockNotLocked`]: the csd's function address;
        /// - [`WarnKind::IpiOnOfflineCpu`]: how many calls were pending;
        /// - [`WarnKind::CallbackOnOfflineCpu`]: one pending function's
        ///   address (one event per pending call);
        /// - [`WarnKind::FlushWithIrqsEnabled`]: 0 from the call-queue flush,
        ///   1 from `irq_work_run`;
        /// - [`WarnKind::IrqWorkOnOfflineCpu`]: the refused target CPU.
        detail: u64,
    },
    /// `waiter` has waited `waited_ns` for a csd it sent to `target`
    /// (modern Linux's "Detected / Continued non-responsive CSD lock").
    CsdStall {
        /// Stall number, shared with the matching [`Event::CsdUnstuck`].
        id: u32,
        /// The CPU that is waiting.
        waiter: CpuId,
        /// The CPU that should run the csd.
        target: CpuId,
        /// Address of the csd's function.
        func: usize,
        /// The csd's `info` word.
        info: usize,
        /// Nanoseconds since the wait was first checked.
        waited_ns: u64,
        /// Address of the function `target` is running right now (this csd's
        /// or a prior one), or 0 if it is not running any.
        target_running: usize,
        /// 1 for the first report of this stall, then 2, 3, ...
        nth: u32,
        /// Whether the IPI was re-sent (done when `target_running` is 0: the
        /// target is not busy with a callback, so the IPI may have been lost).
        resent_ipi: bool,
    },
    /// A stalled csd lock was released after it had been reported.
    CsdUnstuck {
        /// The stall number of the earlier [`Event::CsdStall`] reports.
        id: u32,
        /// The CPU that was waiting.
        waiter: CpuId,
        /// The CPU that released the lock.
        target: CpuId,
        /// Address of the csd's function.
        func: usize,
        /// Total wait, in nanoseconds since the wait was first checked.
        waited_ns: u64,
        /// How many [`Event::CsdStall`] reports were made.
        reports: u32,
    },
}
