//! x86_64 on KVM: the only place in the guest with `asm!`.

pub mod ap_boot;
pub mod cpu;
pub mod gdt;
pub mod interrupts;
pub mod msr;
pub mod percpu;
pub mod smp_arch;
pub mod stacks;
pub mod x2apic;
