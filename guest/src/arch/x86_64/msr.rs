//! Model-specific registers, one constant per register used.

use core::arch::asm;

/// An MSR number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msr(pub u32);

/// IA32_APIC_BASE: the APIC's enable and x2APIC-mode bits.
pub const IA32_APIC_BASE: Msr = Msr(0x1b);
/// IA32_GS_BASE: the per-CPU area pointer.
pub const IA32_GS_BASE: Msr = Msr(0xc000_0101);
/// x2APIC ID register.
pub const X2APIC_ID: Msr = Msr(0x802);
/// x2APIC task priority register.
pub const X2APIC_TPR: Msr = Msr(0x808);
/// x2APIC logical destination register (read-only in x2APIC mode).
pub const X2APIC_LDR: Msr = Msr(0x80d);
/// x2APIC end-of-interrupt register.
pub const X2APIC_EOI: Msr = Msr(0x80b);
/// x2APIC spurious-interrupt vector register.
pub const X2APIC_SVR: Msr = Msr(0x80f);
/// x2APIC error status register.
pub const X2APIC_ESR: Msr = Msr(0x828);
/// x2APIC interrupt command register (one 64-bit write sends an IPI).
pub const X2APIC_ICR: Msr = Msr(0x830);
/// x2APIC LVT timer register.
pub const X2APIC_LVT_TIMER: Msr = Msr(0x832);
/// x2APIC timer initial count (writing starts the timer, 0 stops it).
pub const X2APIC_TIMER_INITIAL: Msr = Msr(0x838);
/// x2APIC timer divide configuration.
pub const X2APIC_TIMER_DIVIDE: Msr = Msr(0x83e);
/// x2APIC LVT error register.
pub const X2APIC_LVT_ERROR: Msr = Msr(0x837);
/// x2APIC self-IPI register.
pub const X2APIC_SELF_IPI: Msr = Msr(0x83f);

/// IA32_APIC_BASE: x2APIC mode.
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE: APIC globally enabled.
pub const APIC_BASE_EN: u64 = 1 << 11;

impl Msr {
    /// Reads the MSR.
    ///
    /// # Safety
    /// The MSR must exist on this CPU and reading it must have no side
    /// effect the caller has not accounted for.
    #[inline(always)]
    pub unsafe fn read(self) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: the caller guarantees the MSR exists and may be read.
        unsafe {
            asm!("rdmsr", in("ecx") self.0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
        };
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// Writes the MSR.
    ///
    /// # Safety
    /// The MSR must exist, `value` must be valid for it, and the write's
    /// effect on the CPU (interrupts, address translation) must be one the
    /// caller intends.
    #[inline(always)]
    pub unsafe fn write(self, value: u64) {
        // SAFETY: the caller guarantees the MSR and value are valid.
        unsafe {
            asm!(
                "wrmsr",
                in("ecx") self.0,
                in("eax") value as u32,
                in("edx") (value >> 32) as u32,
                options(nostack, preserves_flags)
            )
        };
    }
}
