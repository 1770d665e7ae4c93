//! x86_64 on KVM: the only place in the guest with `asm!`.

pub mod ap_boot;
pub mod cpu;
pub mod fixup;
pub mod gdt;
pub mod hypercall;
pub mod interrupts;
pub mod ipi;
pub mod ipi_fault;
pub mod msr;
pub mod percpu;
pub mod poll_idle;
pub mod smp_arch;
pub mod stacks;
#[cfg(feature = "trace")]
pub mod trace;
pub mod x2apic;
