//! Single instructions: interrupt flag, halting, port I/O, TSC, fences,
//! control registers. Every `asm!` of the guest outside the boot and
//! interrupt entry code lives here.

use core::arch::asm;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Reads RFLAGS.
#[inline(always)]
pub fn rflags() -> u64 {
    let f: u64;
    // SAFETY: pushfq/pop only reads the flags into a register.
    unsafe { asm!("pushfq", "pop {}", out(reg) f, options(nomem, preserves_flags)) };
    f
}

/// Whether maskable interrupts are enabled on this CPU.
#[inline(always)]
pub fn irqs_enabled() -> bool {
    rflags() & RFLAGS_IF != 0
}

/// Disables maskable interrupts.
#[inline(always)]
pub fn cli() {
    // SAFETY: clearing IF only delays interrupt delivery; it is how the
    // kernel enters its irqs-off sections.
    // No `nomem`: like Linux's "memory" clobber, memory accesses must not
    // move across the start or end of an irqs-off section.
    unsafe { asm!("cli", options(nostack)) };
}

/// Enables maskable interrupts.
#[inline(always)]
pub fn sti() {
    // SAFETY: the IDT is loaded on every CPU before its first `sti`, so any
    // interrupt that arrives has a handler.
    unsafe { asm!("sti", options(nostack)) };
}

/// Enables interrupts and halts until one arrives (the `sti` shadow makes
/// the pair atomic: no wake-up is lost between them).
#[inline(always)]
pub fn sti_hlt() {
    // SAFETY: as for `sti`; `hlt` just waits for the next interrupt.
    unsafe { asm!("sti", "hlt", options(nostack)) };
}

/// Halts with interrupts disabled, for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: stops this CPU; only an NMI or INIT can wake it.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// An address in the code this is inlined into (`lea` of the next
/// instruction), for a trace event's `callsite`.
#[cfg(feature = "trace")]
#[inline(always)]
pub fn code_address() -> u64 {
    let ip: u64;
    // SAFETY: `lea` of a RIP-relative address only computes a value.
    unsafe { asm!("lea {}, [rip]", out(reg) ip, options(nomem, nostack, preserves_flags)) };
    ip
}

/// Spin-loop hint.
#[inline(always)]
pub fn pause() {
    core::hint::spin_loop();
}

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter into edx:eax; no memory is touched.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes one 32-bit value to an I/O port.
#[inline(always)]
pub fn outl(port: u16, value: u32) {
    // SAFETY: port I/O to the protocol ports only exits to the VMM; the
    // callers pass ports from `shared::ports`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes one byte to an I/O port.
#[inline(always)]
pub fn outb(port: u16, value: u8) {
    // SAFETY: as for `outl`.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes one 16-bit value to an I/O port.
#[inline(always)]
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outl`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads one 32-bit value from an I/O port (the protocol has no input
/// ports: the hostile scenario checks the VMM answers all-ones).
#[inline(always)]
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: port input from an unassigned port only exits to the VMM,
    // which fills the value.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Hands the VMM the guest-physical address of a buffer through a 32-bit
/// port write. Unlike [`outl`] this tells the compiler the buffer is read,
/// so every store to it happens before the write.
#[inline(always)]
pub fn out_buffer<T>(port: u16, buffer: &T) {
    let addr = buffer as *const T as u64 as u32;
    // SAFETY: port I/O to a protocol port exits to the VMM, which reads the
    // buffer; `readonly` keeps the compiler's stores to it in front.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") addr, options(nostack, preserves_flags, readonly))
    };
}

/// Full memory fence followed by a load fence: orders earlier stores
/// before a following non-serializing WRMSR (the x2APIC ICR), as Linux's
/// `weak_wrmsr_fence()`.
#[inline(always)]
pub fn wrmsr_fence() {
    // SAFETY: fences only order memory accesses.
    unsafe { asm!("mfence", "lfence", options(nostack, preserves_flags)) };
}

/// Load fence: later instructions (a WRMSR) start only after every
/// earlier one completed.
#[inline(always)]
pub fn lfence() {
    // SAFETY: a fence only orders instruction execution.
    unsafe { asm!("lfence", options(nostack, preserves_flags)) };
}

/// Reads CR2 (the faulting address of a page fault).
#[inline]
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3 (the page-table root).
#[inline]
pub fn cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Executes CPUID.
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// CR0's write-protect bit: supervisor writes to read-only pages fault.
const CR0_WP: u64 = 1 << 16;

/// Makes supervisor writes honour read-only pages on this CPU (CR0.WP),
/// so that a write to the per-CPU window's shared zero page faults (see
/// `paging`). Every CPU, first thing.
pub fn enable_write_protect() {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    // SAFETY: setting WP only makes writes to read-only pages fault; the
    // kernel's own mappings are all writable except the window's zero
    // page, which nothing may write. The write orders no memory access
    // (not `nomem` so that the compiler does not move stores across it).
    unsafe { asm!("mov cr0, {}", in(reg) v | CR0_WP, options(nostack, preserves_flags)) };
}

/// Reloads CR3 with its own value: drops this CPU's cached translations
/// (none for the global pages this kernel does not use).
pub fn reload_cr3() {
    let v = cr3();
    // SAFETY: the same page-table root again; only the TLB is flushed.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}
