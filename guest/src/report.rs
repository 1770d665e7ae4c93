//! Structured reports to the VMM and the exit.

use shared::ports::Port;
use shared::record::{Body, RECORD_MAX, Record};
use shared::status::GuestStatus;

use crate::arch::x86_64::{cpu, percpu};

/// Sends one record to the VMM, from the current CPU. Safe in interrupt
/// context: no lock, one port write.
pub fn send(body: Body<&str>) {
    let mut buf = [0u8; RECORD_MAX];
    let rec = Record {
        cpu: percpu::this_cpu().0 as u16,
        body,
    };
    if rec.encode(&mut buf).is_ok() {
        // Identity-mapped: the buffer's address is its guest-physical one.
        cpu::out_buffer(Port::Record as u16, &buf);
    }
}

/// Reports the exit status to the VMM, which ends the VM.
pub fn exit(status: GuestStatus) -> ! {
    cpu::outl(Port::Exit as u16, status as u32);
    cpu::halt_forever()
}
