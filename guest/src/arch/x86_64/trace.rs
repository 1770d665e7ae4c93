//! The trace ring writer (`shared::trace`): each CPU appends to its own
//! ring in the region the VMM placed, with the TSC as the timestamp.
//! Built only with the `trace` feature.
//!
//! A CPU's ring is written only by that CPU, with interrupts disabled
//! around each entry, so an interrupt handler's trace point cannot
//! interleave with the one it interrupted: no atomic read-modify-write is
//! needed, only the seqlock order of stores the reader checks.

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

use shared::trace::{self, TraceEventId, offsets};

use super::{cpu, percpu};

/// Base of the rings, 0 while tracing is off.
static BASE: AtomicU64 = AtomicU64::new(0);
/// Bytes of one CPU's ring.
static RING_BYTES: AtomicU64 = AtomicU64::new(0);
/// Entries of one ring (a power of two).
static CAPACITY: AtomicU64 = AtomicU64::new(0);

/// Turns tracing on with the rings the VMM placed (`BootInfo::trace_rings`:
/// checked to lie in guest memory). The boot CPU calls it before any other
/// CPU starts.
pub fn init(base: u64, ring_bytes: u64) {
    // Relaxed: written on the boot CPU before any AP starts (starting one
    // orders it) and before the first trace point.
    RING_BYTES.store(ring_bytes, Ordering::Relaxed);
    CAPACITY.store(trace::capacity(ring_bytes), Ordering::Relaxed);
    BASE.store(base, Ordering::Relaxed);
}

/// The atomic word of type `T` at guest address `addr`.
///
/// # Safety
///
/// `addr` is aligned for `T`, inside this CPU's ring (identity-mapped guest
/// memory the VMM reserved for it and nothing else uses), and only this
/// CPU writes it.
unsafe fn at<T>(addr: u64) -> &'static T {
    // SAFETY: forwarded from the caller; atomics have no invalid values.
    unsafe { &*(addr as *const T) }
}

/// Appends one event to this CPU's ring (nothing while tracing is off).
pub fn record(event: TraceEventId, arg32: u32, args: [u64; 5]) {
    // Relaxed: see `init`.
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    let cap = CAPACITY.load(Ordering::Relaxed);
    let ring_bytes = RING_BYTES.load(Ordering::Relaxed);
    let this = percpu::this_cpu();
    let ring = base + u64::from(this.0) * ring_bytes;
    let enabled = cpu::irqs_enabled();
    cpu::cli();
    // Every `at` below: `init` took base and size from the checked boot
    // information, this CPU's ring is `ring_bytes` at `ring`, the header
    // word and the slot (`slot_offset`, masked by the capacity that fits)
    // are inside it and 8-byte aligned (ring_bytes and base are multiples
    // of 8), and only this CPU writes them.
    // SAFETY: as just said.
    let head: &AtomicU64 = unsafe { at(ring + trace::HEAD_OFFSET as u64) };
    // Relaxed: only this CPU writes `head`, with interrupts off.
    let index = head.load(Ordering::Relaxed);
    let slot = ring + trace::slot_offset(cap, index);
    // SAFETY: as above.
    let seq: &AtomicU64 = unsafe { at(slot + offsets::SEQ as u64) };
    // Relaxed: ordered before the field stores by the fence below.
    seq.store(0, Ordering::Relaxed);
    // Release: pairs with the reader's Acquire fence before its second
    // `seq` read: a reader that sees a field stored below sees `seq` 0 (or
    // newer) then, and drops the entry as torn.
    fence(Ordering::Release);
    // Relaxed (the field stores): published by the Release store of `seq`.
    // SAFETY: as above.
    unsafe { at::<AtomicU64>(slot + offsets::TSC as u64) }.store(cpu::rdtsc(), Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { at::<AtomicU16>(slot + offsets::EVENT as u64) }.store(event as u16, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { at::<AtomicU16>(slot + offsets::CPU as u64) }.store(this.0 as u16, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { at::<AtomicU32>(slot + offsets::ARG32 as u64) }.store(arg32, Ordering::Relaxed);
    for (i, a) in args.iter().enumerate() {
        let addr = slot + (offsets::ARGS + 8 * i) as u64;
        // SAFETY: as above.
        unsafe { at::<AtomicU64>(addr) }.store(*a, Ordering::Relaxed);
    }
    // Release: pairs with the reader's Acquire after its first `seq`
    // read: the fields above are whole when it sees this number.
    seq.store(index + 1, Ordering::Release);
    // Release: pairs with the reader's read of `head`; the entry is
    // written before the count says so.
    head.store(index + 1, Ordering::Release);
    if enabled {
        cpu::sti();
    }
}
