//! CPU exceptions: report vector, error code, RIP and CPU to the VMM, then
//! stop the VM (the VMM exits non-zero with that report). A fixup table
//! lets a probe survive one expected fault.

use core::sync::atomic::{AtomicU64, Ordering};

use shared::record::Body;
use shared::status::GuestStatus;
use shared::vectors::exception_name;

use crate::arch::x86_64::cpu;
use crate::arch::x86_64::interrupts::TrapFrame;
use crate::kprintln;
use crate::report;

/// An instruction that may fault with #UD, and where to resume if it does.
static FIXUP_RIP: AtomicU64 = AtomicU64::new(0);
static FIXUP_TO: AtomicU64 = AtomicU64::new(0);
/// The vector that last used the fixup (0: none since the last take).
static FIXUP_HIT: AtomicU64 = AtomicU64::new(0);

/// Lets one #UD at `rip` resume at `to` instead of crashing (a probe of an
/// instruction the host may not support). Boot CPU only, before APs run.
pub fn set_ud_fixup(rip: u64, to: u64) {
    // Relaxed: written and read on the boot CPU only.
    FIXUP_RIP.store(rip, Ordering::Relaxed);
    FIXUP_TO.store(to, Ordering::Relaxed);
}

/// Which vector used the fixup since the last call (6 for #UD, the
/// probe timer's for an instruction that never completed), or 0.
pub fn take_fixup_hit() -> u64 {
    // Relaxed: see `set_ud_fixup`.
    FIXUP_HIT.swap(0, Ordering::Relaxed)
}

/// The exception handler. Also takes the hypercall-probe timer: an
/// instruction the hypervisor keeps restarting is left at its fixup.
pub fn exception(frame: &mut TrapFrame) {
    let fixup = |frame: &mut TrapFrame| {
        // Relaxed: see `set_ud_fixup`.
        if frame.rip != 0 && frame.rip == FIXUP_RIP.load(Ordering::Relaxed) {
            frame.rip = FIXUP_TO.load(Ordering::Relaxed);
            FIXUP_HIT.store(frame.vector, Ordering::Relaxed);
            true
        } else {
            false
        }
    };
    if frame.vector == u64::from(shared::vectors::PROBE_TIMER.0) {
        crate::arch::x86_64::x2apic::eoi();
        fixup(frame);
        return;
    }
    if frame.vector == 6 && fixup(frame) {
        return;
    }
    let vector = frame.vector as u8;
    let cr2 = if vector == 14 { cpu::cr2() } else { 0 };
    report::send(Body::Exception {
        vector,
        error_code: frame.error_code,
        rip: frame.rip,
        cr2,
    });
    kprintln!(
        "exception {} ({}) error code {:#x} at RIP {:#x} RSP {:#x} CR2 {:#x}",
        vector,
        exception_name(vector),
        frame.error_code,
        frame.rip,
        frame.rsp,
        cr2
    );
    report::exit(GuestStatus::Crashed)
}
