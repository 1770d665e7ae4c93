//! Interrupt entry: the IDT, naked entry stubs, and the trap frame handed
//! to the kernel's handlers.
//!
//! Exception stubs push a dummy error code where the CPU pushes none, then
//! the vector, then the caller-saved registers, so every handler sees one
//! [`TrapFrame`] layout. Interrupt stubs for the IPI vectors are leaner:
//! caller-saved registers, one indirect call through the handler's slot,
//! `iretq` (the IPI path is counted in guest instructions).

use core::arch::naked_asm;
use core::sync::atomic::{AtomicUsize, Ordering};

use shared::vectors::{self, Vector};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

use super::fixup;
use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CODE_SELECTOR};

/// Registers saved on exception entry, lowest address first: the
/// caller-saved registers the common stub pushes, the vector and error
/// code (dummy 0 where the CPU pushes none), then the CPU's interrupt frame.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// Saved R11.
    pub r11: u64,
    /// Saved R10.
    pub r10: u64,
    /// Saved R9.
    pub r9: u64,
    /// Saved R8.
    pub r8: u64,
    /// Saved RDI.
    pub rdi: u64,
    /// Saved RSI.
    pub rsi: u64,
    /// Saved RDX.
    pub rdx: u64,
    /// Saved RCX.
    pub rcx: u64,
    /// Saved RAX.
    pub rax: u64,
    /// The exception vector (pushed by the stub).
    pub vector: u64,
    /// The CPU's error code, or 0 for exceptions without one.
    pub error_code: u64,
    /// Where the exception happened; the handler may change it (a fixup).
    pub rip: u64,
    /// Code segment of the interrupted code.
    pub cs: u64,
    /// RFLAGS of the interrupted code.
    pub rflags: u64,
    /// Stack pointer of the interrupted code.
    pub rsp: u64,
    /// Stack segment of the interrupted code.
    pub ss: u64,
}

/// The kernel's handlers, installed once at boot.
#[derive(Clone, Copy)]
pub struct Handlers {
    /// Any CPU exception (may fix up `rip` and return).
    pub exception: fn(&mut TrapFrame),
    /// CALL_FUNCTION and CALL_FUNCTION_SINGLE.
    pub call_function: extern "C" fn(),
    /// The irq_work self-interrupt.
    pub irq_work: extern "C" fn(),
    /// A request from the VMM.
    pub host_request: extern "C" fn(),
    /// The benchmark's raw ping vector.
    pub bench_ping: extern "C" fn(),
    /// A wake-up to look at hotplug flags.
    pub wake: extern "C" fn(),
    /// APIC error.
    pub apic_error: extern "C" fn(),
}

/// The exception handler (the interrupt handlers are in the slots below).
static EXCEPTION: Once<fn(&mut TrapFrame)> = Once::new();

extern "C" fn exception_entry(frame: &mut TrapFrame) {
    if fixup::handle(frame) {
        return;
    }
    // The IDT is only loaded after `install` stored the handler, so this
    // never waits.
    (EXCEPTION.wait())(frame)
}

/// The handler an interrupt stub calls, read by the stub itself with one
/// `call [rip + slot]` (the IPI path is counted in guest instructions, so
/// no lookup through a `Once`). Holds an `extern "C" fn()` address.
#[repr(transparent)]
struct Slot(AtomicUsize);

impl Slot {
    const fn new() -> Self {
        Slot(AtomicUsize::new(0))
    }

    fn set(&self, f: extern "C" fn()) {
        // Relaxed: `init` writes the slots on the boot CPU before any AP
        // starts (starting one orders it) and before this CPU's `lidt`;
        // a later switch (`set_call_function`) needs no ordering, as each
        // handler is complete by itself and an interrupt runs either one.
        self.0.store(f as usize, Ordering::Relaxed);
    }
}

static CALL_FUNCTION_SLOT: Slot = Slot::new();
static IRQ_WORK_SLOT: Slot = Slot::new();
static HOST_REQUEST_SLOT: Slot = Slot::new();
static BENCH_PING_SLOT: Slot = Slot::new();
static WAKE_SLOT: Slot = Slot::new();
static APIC_ERROR_SLOT: Slot = Slot::new();

/// Switches the CALL_FUNCTION(_SINGLE) handler at run time (the torture
/// installs a counting one). Interrupts in flight run the old or the new
/// handler.
pub fn set_call_function(f: extern "C" fn()) {
    CALL_FUNCTION_SLOT.set(f);
}

/// Switches the [`vectors::BENCH_PING`] handler at run time (the
/// benchmark installs its raw ping's). Install it before the first ping:
/// the ping's ICR write (`x2apic::send`, fenced) orders the slot's store
/// before the interrupt.
pub fn set_bench_ping(f: extern "C" fn()) {
    BENCH_PING_SLOT.set(f);
}

#[unsafe(naked)]
extern "C" fn exception_common() {
    naked_asm!(
        "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
        "push r8", "push r9", "push r10", "push r11",
        "mov rdi, rsp",
        "cld",
        "call {handler}",
        "pop r11", "pop r10", "pop r9", "pop r8",
        "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
        "add rsp, 16",
        "iretq",
        handler = sym exception_entry,
    )
}

macro_rules! exception_stubs {
    ($($name:ident = $vector:literal $(, $err:ident)?;)*) => {
        $(
            #[unsafe(naked)]
            extern "C" fn $name() {
                exception_stubs!(@body $vector $(, $err)?)
            }
        )*
        const EXCEPTION_STUBS: [extern "C" fn(); 32] = [$($name),*];
    };
    (@body $vector:literal, err) => {
        naked_asm!("push {v}", "jmp {common}", v = const $vector, common = sym exception_common)
    };
    (@body $vector:literal) => {
        naked_asm!("push 0", "push {v}", "jmp {common}", v = const $vector, common = sym exception_common)
    };
}

exception_stubs! {
    exc0 = 0; exc1 = 1; exc2 = 2; exc3 = 3; exc4 = 4; exc5 = 5; exc6 = 6; exc7 = 7;
    exc8 = 8, err; exc9 = 9; exc10 = 10, err; exc11 = 11, err; exc12 = 12, err;
    exc13 = 13, err; exc14 = 14, err; exc15 = 15; exc16 = 16; exc17 = 17, err;
    exc18 = 18; exc19 = 19; exc20 = 20; exc21 = 21, err; exc22 = 22; exc23 = 23;
    exc24 = 24; exc25 = 25; exc26 = 26; exc27 = 27; exc28 = 28; exc29 = 29, err;
    exc30 = 30, err; exc31 = 31;
}

macro_rules! irq_stub {
    ($name:ident => $slot:ident) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!(
                "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
                "push r8", "push r9", "push r10", "push r11",
                "call qword ptr [rip + {slot}]",
                "pop r11", "pop r10", "pop r9", "pop r8",
                "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
                "iretq",
                slot = sym $slot,
            )
        }
    };
    ($name:ident => fn $f:ident) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!(
                "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
                "push r8", "push r9", "push r10", "push r11",
                "call {f}",
                "pop r11", "pop r10", "pop r9", "pop r8",
                "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
                "iretq",
                f = sym $f,
            )
        }
    };
}

#[cfg(not(feature = "trace"))]
irq_stub!(call_function_stub => CALL_FUNCTION_SLOT);
#[cfg(feature = "trace")]
irq_stub!(call_function_traced_stub => fn call_function_traced);
#[cfg(feature = "trace")]
irq_stub!(call_function_single_traced_stub => fn call_function_single_traced);

/// The handler in [`CALL_FUNCTION_SLOT`].
#[cfg(feature = "trace")]
fn call_function_handler() -> extern "C" fn() {
    // Relaxed: see `Slot::set`.
    let f = CALL_FUNCTION_SLOT.0.load(Ordering::Relaxed);
    // SAFETY: `install` stored an `extern "C" fn()` in the slot before any
    // CPU loaded the IDT, and `set` stores only such addresses.
    unsafe { core::mem::transmute::<usize, extern "C" fn()>(f) }
}

/// CALL_FUNCTION in the traced build: the slot's handler between
/// `call_function_entry` and `call_function_exit`.
#[cfg(feature = "trace")]
extern "C" fn call_function_traced() {
    use shared::trace::TraceEventId as E;
    let v = u32::from(vectors::CALL_FUNCTION.0);
    super::trace::record(E::CallFunctionEntry, v, [0; 5]);
    call_function_handler()();
    super::trace::record(E::CallFunctionExit, v, [0; 5]);
}

/// CALL_FUNCTION_SINGLE in the traced build, as [`call_function_traced`].
#[cfg(feature = "trace")]
extern "C" fn call_function_single_traced() {
    use shared::trace::TraceEventId as E;
    let v = u32::from(vectors::CALL_FUNCTION_SINGLE.0);
    super::trace::record(E::CallFunctionSingleEntry, v, [0; 5]);
    call_function_handler()();
    super::trace::record(E::CallFunctionSingleExit, v, [0; 5]);
}
irq_stub!(irq_work_stub => IRQ_WORK_SLOT);
irq_stub!(host_request_stub => HOST_REQUEST_SLOT);
irq_stub!(bench_ping_stub => BENCH_PING_SLOT);
irq_stub!(apic_error_stub => APIC_ERROR_SLOT);
irq_stub!(wake_stub => WAKE_SLOT);

/// The hypercall-probe timer enters like an exception: its handler needs
/// the interrupted RIP (see `fixup`).
#[unsafe(naked)]
extern "C" fn probe_timer_stub() {
    naked_asm!(
        "push 0", "push {v}", "jmp {common}",
        v = const vectors::PROBE_TIMER.0 as u64,
        common = sym exception_common,
    )
}

/// The spurious vector needs no EOI and does nothing.
#[unsafe(naked)]
extern "C" fn spurious_stub() {
    naked_asm!("iretq")
}

/// The call-function vectors' stubs: one shared stub, or in the traced
/// build one per vector (the trace names the vector).
#[cfg(not(feature = "trace"))]
const CALL_FUNCTION_STUB: extern "C" fn() = call_function_stub;
#[cfg(not(feature = "trace"))]
const CALL_FUNCTION_SINGLE_STUB: extern "C" fn() = call_function_stub;
#[cfg(feature = "trace")]
const CALL_FUNCTION_STUB: extern "C" fn() = call_function_traced_stub;
#[cfg(feature = "trace")]
const CALL_FUNCTION_SINGLE_STUB: extern "C" fn() = call_function_single_traced_stub;

/// A 64-bit interrupt gate (SDM Vol. 3A §6.14.1).
const fn gate(handler: u64, ist: u16) -> u128 {
    let present_ring0_intgate: u128 = 0x8e;
    (handler as u128 & 0xffff)
        | ((KERNEL_CODE_SELECTOR as u128) << 16)
        | (((ist as u128) & 0x7) << 32)
        | (present_ring0_intgate << 40)
        | (((handler as u128 >> 16) & 0xffff) << 48)
        | (((handler as u128 >> 32) & 0xffff_ffff) << 64)
}

#[repr(C, align(16))]
struct Idt([u128; 256]);

static IDT: Once<Idt> = Once::new();

fn build() -> Idt {
    let mut idt = [0u128; 256];
    for (v, stub) in EXCEPTION_STUBS.iter().enumerate() {
        let ist = match v {
            2 => IST_NMI + 1,
            8 => IST_DOUBLE_FAULT + 1,
            18 => IST_MACHINE_CHECK + 1,
            _ => 0,
        };
        idt[v] = gate(*stub as usize as u64, ist);
    }
    let irqs: [(Vector, extern "C" fn()); 9] = [
        (vectors::CALL_FUNCTION, CALL_FUNCTION_STUB),
        (vectors::CALL_FUNCTION_SINGLE, CALL_FUNCTION_SINGLE_STUB),
        (vectors::IRQ_WORK, irq_work_stub),
        (vectors::HOST_REQUEST, host_request_stub),
        (vectors::BENCH_PING, bench_ping_stub),
        (vectors::PROBE_TIMER, probe_timer_stub),
        (vectors::WAKE, wake_stub),
        (vectors::APIC_ERROR, apic_error_stub),
        (vectors::SPURIOUS, spurious_stub),
    ];
    for (v, stub) in irqs {
        idt[usize::from(v.0)] = gate(stub as usize as u64, 0);
    }
    Idt(idt)
}

/// Stores the kernel's handlers in the slots (first call wins). The boot
/// CPU calls it once, before any CPU loads the IDT ([`load`]): the slots
/// are 0 until then.
pub fn install(h: Handlers) {
    EXCEPTION.call_once(|| {
        CALL_FUNCTION_SLOT.set(h.call_function);
        IRQ_WORK_SLOT.set(h.irq_work);
        HOST_REQUEST_SLOT.set(h.host_request);
        BENCH_PING_SLOT.set(h.bench_ping);
        WAKE_SLOT.set(h.wake);
        APIC_ERROR_SLOT.set(h.apic_error);
        h.exception
    });
}

/// Loads the IDT on this CPU. Every CPU calls it before enabling
/// interrupts, after [`install`].
pub fn load() {
    let idt = IDT.call_once(build);
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the table is a static that lives forever and every present
    // gate points at a stub in this kernel's code segment.
    unsafe { lidt(&ptr) };
}
