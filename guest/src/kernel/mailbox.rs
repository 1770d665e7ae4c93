//! The guest's side of the host mailbox ([`shared::mailbox`]): volatile
//! reads of what the host wrote, volatile writes of the answer.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{Ordering, fence};

use shared::layout;
use shared::mailbox::{CpuStatsWire, Mailbox, Op};

fn mailbox() -> *mut Mailbox {
    layout::HOST_MAILBOX.start.0 as *mut Mailbox
}

/// A request read from the mailbox.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Its sequence number (to acknowledge).
    pub seq: u32,
    /// What is asked, or the unknown number.
    pub op: Result<Op, u32>,
    /// Target CPU number.
    pub cpu: u32,
}

/// Field selectors for [`read`].
#[derive(Clone, Copy)]
enum Field {
    Seq,
    Ack,
    Op,
    Cpu,
}

/// One volatile read of a field the host may be writing.
fn read(field: Field) -> u32 {
    let m = mailbox();
    // SAFETY: the layout reserves this identity-mapped page for the
    // mailbox; the host writes it concurrently, so fields are read with a
    // volatile load of a plain integer, never through a reference.
    unsafe {
        match field {
            Field::Seq => addr_of!((*m).seq).read_volatile(),
            Field::Ack => addr_of!((*m).ack).read_volatile(),
            Field::Op => addr_of!((*m).op).read_volatile(),
            Field::Cpu => addr_of!((*m).cpu).read_volatile(),
        }
    }
}

/// The pending request, if the host posted one not yet acknowledged.
pub fn pending() -> Option<Request> {
    let seq = read(Field::Seq);
    if seq == read(Field::Ack) {
        return None;
    }
    // The host wrote op and cpu before seq (x86 keeps its stores in
    // order); keep the compiler from hoisting the reads above `seq`.
    fence(Ordering::Acquire);
    let op = read(Field::Op);
    let cpu = read(Field::Cpu);
    Some(Request {
        seq,
        op: Op::try_from(op),
        cpu,
    })
}

/// Writes the result of request `seq`, then acknowledges it.
pub fn complete(seq: u32, result: i32) {
    let m = mailbox();
    // SAFETY: the mailbox page is reserved for this protocol; the guest
    // owns `result` and `ack` while a request is pending.
    unsafe { addr_of_mut!((*m).result).write_volatile(result) };
    // The result must be visible before the acknowledgement.
    fence(Ordering::Release);
    // SAFETY: as above.
    unsafe { addr_of_mut!((*m).ack).write_volatile(seq) };
}

/// Tells the host that requests are taken from now on (the boot CPU's
/// APIC is enabled and its interrupts are on).
pub fn set_ready() {
    let m = mailbox();
    // SAFETY: the mailbox page is reserved for this protocol and the guest
    // owns `ready`.
    unsafe { addr_of_mut!((*m).ready).write_volatile(shared::mailbox::READY) };
}

/// Writes the statistics of CPUs `0..n` (`stat(i)` for CPU *i*; as many
/// as the stats region holds) and their count.
pub fn write_stats(n: usize, stat: impl Fn(usize) -> CpuStatsWire) {
    let mut written = 0;
    for (i, at) in (0..n).map_while(|i| Some((i, shared::mailbox::stats_entry(i)?))) {
        // SAFETY: `stats_entry` gave an aligned entry inside the
        // identity-mapped HOST_STATS region, reserved for this protocol.
        unsafe { (at as *mut CpuStatsWire).write_volatile(stat(i)) };
        written = i + 1;
    }
    let m = mailbox();
    // SAFETY: the mailbox page is reserved for this protocol and the guest
    // owns `nr_stats`.
    unsafe { addr_of_mut!((*m).nr_stats).write_volatile(written as u32) };
}
