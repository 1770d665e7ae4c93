//! `run=hostile`: a guest that abuses the host/guest protocol on purpose,
//! to show the VMM treats it as untrusted input. It writes unknown ports,
//! protocol ports with the wrong width, reads ports, hands over console
//! buffers and records at addresses outside guest memory or straddling its
//! end, with huge lengths, bad magic, unknown kinds, bad fields, invalid
//! UTF-8, trailing garbage and a spoofed CPU number, touches unbacked
//! guest-physical memory, spams the console (also with terminal escape
//! sequences), and finally writes a meaningless exit status.
//!
//! The VMM must report each abuse as a protocol error, keep working (the
//! valid line and record sent after the abuse arrive intact), and end the
//! run with "unknown exit status" (exit code 3), never panicking or reading
//! outside guest memory.

use shared::bootinfo::BootInfo;
use shared::layout::{IDENTITY_MAP_SIZE, PAGE_SIZE};
use shared::ports::{CONSOLE_CHUNK_MAX, CONSOLE_HEADER, Port};
use shared::record::{Body, HEADER_LEN, RECORD_MAX, Record, Verdict};
use shared::status::GuestStatus;

use crate::arch::x86_64::{cpu, percpu};
use crate::{kprintln, report};

/// The exit status the hostile guest ends with: no [`GuestStatus`].
pub const BOGUS_EXIT: u32 = 0xdead_beef;

/// Ports that no protocol uses: the highest ones.
fn unassigned_ports() -> impl Iterator<Item = u16> {
    (0..=u16::MAX)
        .rev()
        .filter(|p| Port::try_from(*p).is_err())
        .take(3)
}

/// A buffer of the console or record wire format, handed over by address.
#[repr(C, align(8))]
struct Buf([u8; RECORD_MAX + CONSOLE_CHUNK_MAX]);

impl Buf {
    const fn new() -> Self {
        Buf([0; RECORD_MAX + CONSOLE_CHUNK_MAX])
    }
}

fn send_buf(port: Port, buf: &Buf) {
    cpu::out_buffer(port as u16, buf);
}

/// An encoded valid record in `buf`; its length.
fn encode(buf: &mut Buf, cpu: u16, body: Body<&str>) -> usize {
    Record { cpu, body }.encode(&mut buf.0).unwrap_or(0)
}

fn ports() {
    for p in unassigned_ports() {
        cpu::outb(p, 0x5a);
        cpu::outl(p, 0x5a5a_5a5a);
    }
    // The protocol ports with the wrong width.
    cpu::outb(Port::Console as u16, 0);
    cpu::outw(Port::Record as u16, 0);
    cpu::outb(Port::Exit as u16, 0);
    // Reads: there are no input ports; the VMM answers all-ones.
    let a = cpu::inl(Port::Console as u16);
    let b = cpu::inl(unassigned_ports().next().unwrap_or(0));
    kprintln!("hostile: port reads gave {a:#x} and {b:#x}");
}

fn console(mem_size: u64) {
    let mut buf = Buf::new();
    // A length far above the limit.
    buf.0[..CONSOLE_HEADER].copy_from_slice(&u16::MAX.to_le_bytes());
    send_buf(Port::Console, &buf);
    // Addresses outside guest memory.
    cpu::outl(Port::Console as u16, u32::MAX - 1);
    cpu::outl(Port::Console as u16, mem_size as u32);
    // A length prefix in the last bytes of RAM: the text runs past the end.
    let last = mem_size - CONSOLE_HEADER as u64;
    // SAFETY: the last bytes of guest RAM are identity-mapped and unused:
    // the VMM keeps RAM at least 2 MiB larger than the kernel image, and
    // nothing else lives above it.
    unsafe { core::ptr::write_volatile(last as *mut [u8; 2], 64u16.to_le_bytes()) };
    cpu::outl(Port::Console as u16, last as u32);
}

fn records(mem_size: u64) {
    let me = percpu::this_cpu().0 as u16;
    let mut buf = Buf::new();
    let test = Body::Test {
        verdict: Verdict::Pass,
        name: "n",
        detail: "d",
    };
    // Outside guest memory, and a header straddling its end.
    cpu::outl(Port::Record as u16, u32::MAX - 3);
    cpu::outl(Port::Record as u16, (mem_size - 4) as u32);
    // A header at the end of RAM that declares a payload beyond it.
    let at = mem_size - HEADER_LEN as u64;
    encode(&mut buf, me, test);
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&buf.0[..HEADER_LEN]);
    header[6..8].copy_from_slice(&100u16.to_le_bytes());
    // SAFETY: as in `console`: the last bytes of RAM are unused.
    unsafe { core::ptr::write_volatile(at as *mut [u8; HEADER_LEN], header) };
    cpu::outl(Port::Record as u16, at as u32);
    // Corruptions of a valid record, one field at a time.
    let corrupt: [(usize, u8); 4] = [(0, b'X'), (2, 0x63), (3, 1), (HEADER_LEN, 7)];
    for (offset, value) in corrupt {
        let n = encode(&mut buf, me, test);
        if offset < n {
            buf.0[offset] = value;
        }
        send_buf(Port::Record, &buf);
    }
    // A declared length above the limit.
    encode(&mut buf, me, test);
    buf.0[6..8].copy_from_slice(&u16::MAX.to_le_bytes());
    send_buf(Port::Record, &buf);
    // A string whose length runs past the payload.
    encode(
        &mut buf,
        me,
        Body::Counter {
            name: "x",
            value: 1,
        },
    );
    buf.0[HEADER_LEN] = 200;
    send_buf(Port::Record, &buf);
    // Invalid UTF-8 in a string.
    encode(
        &mut buf,
        me,
        Body::Counter {
            name: "xy",
            value: 1,
        },
    );
    buf.0[HEADER_LEN + 1] = 0xff;
    send_buf(Port::Record, &buf);
    // Trailing garbage: a payload longer than its fields.
    let n3 = encode(&mut buf, me, test);
    let payload = (n3 - HEADER_LEN + 3) as u16;
    buf.0[6..8].copy_from_slice(&payload.to_le_bytes());
    send_buf(Port::Record, &buf);
    // A valid record claiming to come from another CPU (kept, flagged).
    encode(&mut buf, me.wrapping_add(7), test);
    send_buf(Port::Record, &buf);
}

fn unbacked_memory(mem_size: u64) {
    let addr = IDENTITY_MAP_SIZE - PAGE_SIZE;
    if addr < mem_size {
        kprintln!("hostile: all of the identity map is RAM; no unbacked address to touch");
        return;
    }
    let p = addr as *mut u64;
    // SAFETY: `addr` is identity-mapped but not RAM: the access exits to
    // the VMM (MMIO), which answers reads with all-ones and drops writes.
    let v = unsafe { core::ptr::read_volatile(p) };
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(p, 0x1234) };
    kprintln!("hostile: unbacked read at {addr:#x} gave {v:#x}");
}

fn spam() {
    // Many lines, one with terminal escape sequences the VMM must not pass
    // through raw.
    for i in 0..500 {
        kprintln!(
            "hostile: console spam line {i} ........................................................................"
        );
    }
    kprintln!("hostile: escape \u{1b}[2J\u{1b}]0;pwned\u{7} bell \u{7} done");
    // Long text without a newline: the VMM cuts it into lines.
    let mut buf = Buf::new();
    buf.0[..CONSOLE_HEADER].copy_from_slice(&(CONSOLE_CHUNK_MAX as u16).to_le_bytes());
    buf.0[CONSOLE_HEADER..CONSOLE_HEADER + CONSOLE_CHUNK_MAX].fill(b'z');
    for _ in 0..10 {
        send_buf(Port::Console, &buf);
    }
    buf.0[CONSOLE_HEADER] = b'\n';
    let one = 1u16.to_le_bytes();
    buf.0[..CONSOLE_HEADER].copy_from_slice(&one);
    send_buf(Port::Console, &buf);
}

/// Runs the abuse, then shows the VMM still works, then exits with a
/// meaningless status.
pub fn run(info: &BootInfo) -> GuestStatus {
    kprintln!("hostile: abusing the protocol on purpose");
    let mem_size = info.mem_size.min(u64::from(u32::MAX));
    ports();
    console(mem_size);
    records(mem_size);
    unbacked_memory(mem_size);
    spam();
    // Still heard after all that: a valid line and a valid record.
    kprintln!("hostile: the VMM still listens");
    report::send(Body::Test {
        verdict: Verdict::Pass,
        name: "hostile-survived",
        detail: "a valid record after the abuse",
    });
    kprintln!("hostile: exiting with status {BOGUS_EXIT:#x}");
    cpu::outl(Port::Exit as u16, BOGUS_EXIT);
    // The VMM stops the VM at that write; if it did not, say so.
    GuestStatus::Failure
}
