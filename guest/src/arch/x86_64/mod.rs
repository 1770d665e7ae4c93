//! x86_64 on KVM: the only place in the guest with `asm!`.

pub mod ap_boot;
pub mod cpu;
pub mod cpu_table;
pub mod fixup;
pub mod gdt;
pub mod hypercall;
pub mod interrupts;
pub mod ipi;
pub mod ipi_fault;
pub mod msr;
pub mod paging;
pub mod percpu;
pub mod poll_idle;
pub mod smp_arch;
pub mod stacks;
#[cfg(feature = "trace")]
pub mod trace;
pub mod x2apic;

/// Allocates the arch's per-CPU data for `cpus` CPUs: the per-CPU window
/// (the tables the IPI paths index, at fixed addresses), GDTs and TSSs,
/// stacks, fault-injection counters. Boot CPU, first thing (before it
/// touches any per-CPU table or loads its own GDT), once.
pub fn alloc_percpu(cpus: u32) -> Result<(), crate::mem::OutOfMemory> {
    paging::map_window(cpus)?;
    gdt::alloc(cpus)?;
    stacks::alloc(cpus)?;
    ipi_fault::alloc(cpus)
}

/// The end of the kernel image in memory (its BSS included), from the
/// linker script's `__kernel_end`.
pub fn kernel_end() -> u64 {
    // SAFETY: the symbol is defined by link.ld; only its address is taken.
    unsafe extern "C" {
        static __kernel_end: u8;
    }
    (&raw const __kernel_end) as u64
}
