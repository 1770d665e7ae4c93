//! Starting application processors: a real-mode trampoline that climbs to
//! long mode, and INIT-SIPI-SIPI through the x2APIC ICR.
//!
//! After SIPI an AP runs in real mode at CS = vector << 8, IP = 0 — the
//! start of [`layout::AP_TRAMPOLINE`]. The trampoline loads its own small
//! GDT, enters protected mode, enables PAE and long mode with the BSP's
//! page tables, and jumps to the 64-bit entry the BSP left in
//! [`layout::AP_BOOT_DATA`] with that CPU's stack and number.

use core::mem::offset_of;
use core::sync::atomic::{Ordering, fence};

use shared::layout;
use shared::vectors::Vector;
use shared::{ApicId, CpuId};

use super::x2apic::{self, DeliveryMode, Destination, Icr};
use super::{cpu, stacks};

/// What the trampoline reads, at [`layout::AP_BOOT_DATA`].
#[repr(C)]
struct ApBootData {
    cr3: u64,
    stack_top: u64,
    entry: u64,
    cpu: u64,
}

const _: () = assert!(core::mem::size_of::<ApBootData>() as u64 <= layout::AP_BOOT_DATA.size);

core::arch::global_asm!(
    ".section .rodata.ap_trampoline, \"a\"",
    ".balign 16",
    ".global smpcall_ap_trampoline_start",
    ".global smpcall_ap_trampoline_end",
    "smpcall_ap_trampoline_start:",
    ".code16",
    "cli",
    "cld",
    "xorw %ax, %ax",
    "movw %ax, %ds",
    "lgdtl {tramp} + (.Ltramp_gdtr - smpcall_ap_trampoline_start)",
    "movl %cr0, %eax",
    "orl $1, %eax",
    "movl %eax, %cr0",
    // ljmp 0x08:protected, with a 32-bit offset
    ".byte 0x66, 0xea",
    ".long {tramp} + (.Ltramp_pm32 - smpcall_ap_trampoline_start)",
    ".word 0x08",
    ".code32",
    ".Ltramp_pm32:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movl %cr4, %eax",
    "orl $0x20, %eax", // PAE
    "movl %eax, %cr4",
    "movl {cr3}, %eax",
    "movl %eax, %cr3",
    "movl $0xc0000080, %ecx", // EFER
    "rdmsr",
    "orl $0x100, %eax", // LME
    "wrmsr",
    "movl %cr0, %eax",
    "orl $0x80000001, %eax", // PG | PE
    "movl %eax, %cr0",
    // ljmp 0x18:long
    ".byte 0xea",
    ".long {tramp} + (.Ltramp_lm64 - smpcall_ap_trampoline_start)",
    ".word 0x18",
    ".code64",
    ".Ltramp_lm64:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movq {stack}, %rsp",
    "movq {cpu}, %rdi",
    "movq {entry}, %rax",
    "callq *%rax",
    "ud2",
    ".balign 8",
    ".Ltramp_gdt:",
    ".quad 0",
    ".quad 0x00cf9a000000ffff", // 0x08: 32-bit code
    ".quad 0x00cf92000000ffff", // 0x10: data
    ".quad 0x00af9a000000ffff", // 0x18: 64-bit code
    ".Ltramp_gdtr:",
    ".word 31",
    ".long {tramp} + (.Ltramp_gdt - smpcall_ap_trampoline_start)",
    "smpcall_ap_trampoline_end:",
    ".text",
    tramp = const layout::AP_TRAMPOLINE.start.0,
    cr3 = const layout::AP_BOOT_DATA.start.0 + offset_of!(ApBootData, cr3) as u64,
    stack = const layout::AP_BOOT_DATA.start.0 + offset_of!(ApBootData, stack_top) as u64,
    cpu = const layout::AP_BOOT_DATA.start.0 + offset_of!(ApBootData, cpu) as u64,
    entry = const layout::AP_BOOT_DATA.start.0 + offset_of!(ApBootData, entry) as u64,
    options(att_syntax),
);

unsafe extern "C" {
    static smpcall_ap_trampoline_start: u8;
    static smpcall_ap_trampoline_end: u8;
}

/// Copies the trampoline to its page. Done once by the BSP before the
/// first AP is started.
pub fn install_trampoline() {
    let start = &raw const smpcall_ap_trampoline_start;
    let end = &raw const smpcall_ap_trampoline_end;
    let len = end as usize - start as usize;
    assert!(
        len as u64 <= layout::AP_TRAMPOLINE.size,
        "AP trampoline too large"
    );
    // SAFETY: the source is the trampoline's bytes in this image; the
    // destination is the identity-mapped page the layout reserves for it,
    // which nothing else uses, and no AP runs it while it is written.
    unsafe { core::ptr::copy_nonoverlapping(start, layout::AP_TRAMPOLINE.start.0 as *mut u8, len) };
}

/// Leaves the start parameters of `cpu` for the trampoline and sends
/// INIT, SIPI, SIPI to its APIC. `entry` receives the CPU number in RDI on
/// that CPU's own kernel stack. One AP may be starting at a time. False
/// (nothing sent) for a CPU without a stack.
#[must_use]
pub fn start(cpu: CpuId, apic_id: ApicId, entry: extern "C" fn(u64) -> !) -> bool {
    let Some(stack_top) = stacks::kernel_top(cpu) else {
        return false;
    };
    let data = ApBootData {
        cr3: cpu::cr3(),
        stack_top,
        entry: entry as usize as u64,
        cpu: u64::from(cpu.0),
    };
    // SAFETY: the layout reserves this identity-mapped area for the AP
    // boot parameters; no AP is reading it now (starts are serialized).
    unsafe { core::ptr::write_volatile(layout::AP_BOOT_DATA.start.0 as *mut ApBootData, data) };
    // The parameters must be visible before the AP can run (the ICR write
    // below is preceded by mfence in `x2apic::send` as well).
    fence(Ordering::SeqCst);
    let dest = Destination::Physical(apic_id);
    x2apic::send(Icr {
        vector: Vector(0),
        mode: DeliveryMode::Init,
        dest,
    });
    let sipi = Icr {
        vector: Vector(layout::SIPI_VECTOR),
        mode: DeliveryMode::StartUp,
        dest,
    };
    x2apic::send(sipi);
    x2apic::send(sipi);
    true
}
