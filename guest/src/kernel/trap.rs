//! CPU exceptions: report vector, error code, RIP and CPU to the VMM, then
//! stop the VM (the VMM exits non-zero with that report). An expected
//! fault of a probe never gets here: the arch's fixup table resumes it
//! first (`arch::x86_64::fixup`).

use shared::record::Body;
use shared::status::GuestStatus;
use shared::vectors::{self, exception_name};

use crate::arch::x86_64::cpu;
use crate::arch::x86_64::interrupts::TrapFrame;
use crate::kprintln;
use crate::report;

/// The exception handler: reports the fault and ends the VM.
pub fn exception(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    let cr2 = if vector == vectors::PAGE_FAULT.0 {
        cpu::cr2()
    } else {
        0
    };
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
