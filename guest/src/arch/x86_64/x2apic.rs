//! The local APIC in x2APIC mode: enable, id, EOI, and IPIs through a typed
//! interrupt command register (Intel SDM Vol. 3A §11.12.9-10: in x2APIC
//! mode the ICR is one 64-bit MSR write with the destination in bits
//! 63:32 and no delivery-status bit to poll).

use shared::ApicId;
use shared::vectors::{self, Vector};

use super::cpu;
use super::msr::{self, APIC_BASE_EN, APIC_BASE_EXTD};

/// ICR delivery mode (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum DeliveryMode {
    /// Deliver the vector.
    Fixed = 0b000 << 8,
    /// INIT: reset the target into wait-for-SIPI.
    Init = 0b101 << 8,
    /// Start-up IPI: start the target in real mode at vector * 4 KiB.
    StartUp = 0b110 << 8,
}

/// ICR destination (shorthand bits 19:18, destination mode bit 11,
/// destination field bits 63:32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// One CPU, by x2APIC id (physical mode).
    Physical(ApicId),
    /// A cluster and a 16-bit set of CPUs in it (logical mode): the
    /// logical id is `cluster << 16 | bitmap`.
    Logical(u32),
    /// Every CPU except this one.
    AllButSelf,
}

const DEST_LOGICAL: u64 = 1 << 11;
const LEVEL_ASSERT: u64 = 1 << 14;
const SHORTHAND_ALL_BUT_SELF: u64 = 0b11 << 18;

/// An interrupt command: what to deliver and to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    /// Vector (ignored by INIT; the start page for SIPI).
    pub vector: Vector,
    /// Delivery mode.
    pub mode: DeliveryMode,
    /// Destination.
    pub dest: Destination,
}

impl Icr {
    /// A fixed interrupt.
    pub const fn fixed(vector: Vector, dest: Destination) -> Self {
        Icr {
            vector,
            mode: DeliveryMode::Fixed,
            dest,
        }
    }

    /// The 64-bit register value.
    #[inline(always)]
    pub const fn value(self) -> u64 {
        let low = self.vector.0 as u64 | self.mode as u64 | LEVEL_ASSERT;
        match self.dest {
            Destination::Physical(id) => low | ((id.0 as u64) << 32),
            Destination::Logical(ldr) => low | DEST_LOGICAL | ((ldr as u64) << 32),
            Destination::AllButSelf => low | SHORTHAND_ALL_BUT_SELF,
        }
    }
}

/// Puts this CPU's local APIC in x2APIC mode (unless firmware, here the
/// VMM for the APs, left it so: no write then), software-enables it with
/// the spurious vector, and accepts every priority.
pub fn enable() {
    let x2apic = APIC_BASE_EN | APIC_BASE_EXTD;
    // SAFETY: IA32_APIC_BASE exists on every CPU whose CPUID reports x2APIC
    // (the VMM sets that bit); going xAPIC-enabled -> x2APIC is the legal
    // transition, setting EN and EXTD together from either state.
    unsafe {
        let base = msr::IA32_APIC_BASE.read();
        if base & x2apic != x2apic {
            msr::IA32_APIC_BASE.write(base | x2apic);
        }
    }
    // SAFETY: x2APIC registers exist once x2APIC mode is on; a TPR of 0
    // accepts every vector.
    unsafe { msr::X2APIC_TPR.write(0) };
    // SAFETY: as above; errors go to the APIC error vector, not a NMI.
    unsafe { msr::X2APIC_LVT_ERROR.write(u64::from(vectors::APIC_ERROR.0)) };
    // SAFETY: bit 8 software-enables the APIC; the vector is ours.
    unsafe { msr::X2APIC_SVR.write(0x100 | u64::from(vectors::SPURIOUS.0)) };
}

/// This CPU's x2APIC id, read from the APIC.
pub fn id() -> ApicId {
    // SAFETY: the ID register exists in x2APIC mode and reading it has no
    // side effect.
    ApicId(unsafe { msr::X2APIC_ID.read() } as u32)
}

/// This CPU's logical id (LDR): in x2APIC mode the hardware derives it
/// from the APIC id (SDM Vol. 3A §11.12.10.2).
pub fn logical_id() -> u32 {
    // SAFETY: the LDR exists in x2APIC mode and reading it has no side
    // effect.
    unsafe { msr::X2APIC_LDR.read() as u32 }
}

/// LVT: the entry is masked.
const LVT_MASKED: u64 = 1 << 16;
/// Timer divide configuration: divide by 1.
const TIMER_DIVIDE_BY_1: u64 = 0b1011;

/// Starts the LAPIC timer in one-shot mode: `vector` after `ticks` APIC
/// bus cycles (1 ns each on KVM).
pub fn timer_oneshot(vector: Vector, ticks: u32) {
    // SAFETY: the timer registers exist in x2APIC mode; one-shot mode
    // (bits 18:17 = 0) with an unmasked fixed vector that has a handler.
    unsafe {
        msr::X2APIC_TIMER_DIVIDE.write(TIMER_DIVIDE_BY_1);
        msr::X2APIC_LVT_TIMER.write(u64::from(vector.0));
        msr::X2APIC_TIMER_INITIAL.write(u64::from(ticks));
    }
}

/// Stops and masks the LAPIC timer.
pub fn timer_stop() {
    // SAFETY: as in `timer_oneshot`; a zero count stops the timer.
    unsafe {
        msr::X2APIC_TIMER_INITIAL.write(0);
        msr::X2APIC_LVT_TIMER.write(LVT_MASKED);
    }
}

/// Signals end of interrupt.
#[inline(always)]
pub fn eoi() {
    // SAFETY: writing 0 to EOI retires the in-service interrupt; called
    // only from interrupt handlers of fixed vectors.
    unsafe { msr::X2APIC_EOI.write(0) };
}

/// Sends an IPI. The fence first makes every earlier store (a queued csd,
/// a flag) globally visible before the non-serializing ICR write.
#[inline(always)]
pub fn send(icr: Icr) {
    cpu::wrmsr_fence();
    // SAFETY: the ICR accepts any well-formed command; `Icr::value` only
    // builds well-formed ones.
    unsafe { msr::X2APIC_ICR.write(icr.value()) };
}

/// Sends an IPI right after a locked read-modify-write that published what
/// the target will look at (the call queue insertion): that instruction
/// already drained the store buffer, so only the `lfence` that keeps the
/// non-serializing WRMSR behind it is needed (Linux needs the `mfence` of
/// `weak_wrmsr_fence` because it cannot know what came before).
#[inline(always)]
pub fn send_after_locked_rmw(icr: Icr) {
    cpu::lfence();
    // SAFETY: as in `send`.
    unsafe { msr::X2APIC_ICR.write(icr.value()) };
}

/// Sends a self-IPI through the dedicated register (no ICR decode).
#[inline(always)]
pub fn send_self(vector: Vector) {
    // SAFETY: the self-IPI register takes a vector and delivers it to this
    // CPU only.
    unsafe { msr::X2APIC_SELF_IPI.write(u64::from(vector.0)) };
}

/// Reads and clears the APIC error status.
pub fn read_error() -> u32 {
    // SAFETY: writing ESR latches the errors, reading it returns them.
    unsafe {
        msr::X2APIC_ESR.write(0);
        msr::X2APIC_ESR.read() as u32
    }
}
