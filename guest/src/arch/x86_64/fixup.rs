//! The exception fixup table: one instruction that may fault with #UD (a
//! probe of an instruction the host may not support), or never complete
//! (the probe timer rescues it), and where to resume if it does. The
//! exception entry consults it before the kernel's handler sees the fault.

use core::sync::atomic::{AtomicU64, Ordering};

use shared::vectors;

use super::interrupts::TrapFrame;

/// The instruction that may fault (0: none).
static FIXUP_RIP: AtomicU64 = AtomicU64::new(0);
/// Where to resume after it faulted.
static FIXUP_TO: AtomicU64 = AtomicU64::new(0);
/// The vector that last used the fixup (0: none since the last take).
static FIXUP_HIT: AtomicU64 = AtomicU64::new(0);

/// Lets one #UD at `rip`, or the probe timer taken at `rip`, resume at
/// `to` instead of crashing; `(0, 0)` clears it. Boot CPU only, before
/// the APs run.
pub fn set(rip: u64, to: u64) {
    // Relaxed: written and read on the boot CPU only.
    FIXUP_RIP.store(rip, Ordering::Relaxed);
    FIXUP_TO.store(to, Ordering::Relaxed);
}

/// Which vector used the fixup since the last call
/// ([`vectors::INVALID_OPCODE`] or [`vectors::PROBE_TIMER`]), or 0.
pub fn take_hit() -> u64 {
    // Relaxed: see `set`.
    FIXUP_HIT.swap(0, Ordering::Relaxed)
}

/// Resumes `frame` at the fixup if it faulted at the fixup's instruction;
/// returns whether it did.
fn apply(frame: &mut TrapFrame) -> bool {
    // Relaxed: see `set`.
    if frame.rip != 0 && frame.rip == FIXUP_RIP.load(Ordering::Relaxed) {
        frame.rip = FIXUP_TO.load(Ordering::Relaxed);
        FIXUP_HIT.store(frame.vector, Ordering::Relaxed);
        true
    } else {
        false
    }
}

/// What the exception entry does before the kernel's handler: the probe
/// timer (which enters like an exception, see `interrupts`) is
/// acknowledged and leaves a stuck instruction at its fixup; a #UD at the
/// fixup's instruction resumes there. Returns whether the exception was
/// handled here.
pub(super) fn handle(frame: &mut TrapFrame) -> bool {
    if frame.vector == u64::from(vectors::PROBE_TIMER.0) {
        super::x2apic::eoi();
        apply(frame);
        return true;
    }
    frame.vector == u64::from(vectors::INVALID_OPCODE.0) && apply(frame)
}
