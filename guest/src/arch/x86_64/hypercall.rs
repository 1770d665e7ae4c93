//! KVM hypercalls (Documentation/virt/kvm/x86/hypercalls.rst): the number
//! in RAX, arguments in RBX, RCX, RDX, RSI, the result in RAX, issued with
//! `vmcall` on Intel and `vmmcall` on AMD. Only `KVM_HC_SEND_IPI` is used,
//! and only after [`probe_send_ipi`] showed it works: some hosts advertise
//! the feature in CPUID yet raise #UD on the instruction, or (this
//! nested, software-assisted host) restart it forever without completing
//! it, so the probe runs under a #UD fixup *and* a one-shot LAPIC timer
//! whose interrupt moves a stuck probe to the same fixup.

use core::arch::{asm, naked_asm};

use shared::vectors;

use super::{cpu, fixup, x2apic};

/// `KVM_HC_SEND_IPI`: a0/a1 = 128-bit APIC id bitmap, a2 = the id of bit
/// 0, a3 = ICR low (vector and delivery mode); returns how many CPUs got
/// it, or a negative errno.
pub const KVM_HC_SEND_IPI: u64 = 10;
/// CPUID leaf with KVM's signature ("KVMKVMKVM\0\0\0" in EBX, ECX, EDX).
const LEAF_SIGNATURE: u32 = 0x4000_0000;
/// CPUID leaf with KVM's feature bits in EAX.
const LEAF_FEATURES: u32 = 0x4000_0001;
/// `KVM_FEATURE_PV_SEND_IPI`.
pub const KVM_FEATURE_PV_SEND_IPI: u32 = 1 << 11;
/// What a probe returns when the instruction faulted (not a value KVM's
/// send-IPI hypercall can return: a small count or a negative errno).
const PROBE_FAULTED: u32 = 0xdead_0001;
/// How long the probe may take before the timer rescues it: 20 ms of
/// KVM's 1 GHz APIC bus.
const RESCUE_TICKS: u32 = 20_000_000;

/// The hypercall instruction of this CPU's vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// Intel VMX: `vmcall`.
    Vmcall,
    /// AMD SVM: `vmmcall`.
    Vmmcall,
}

/// The instruction for this CPU, by CPUID vendor (KVM would patch the
/// other one in guest memory; better not to rely on that).
pub fn insn() -> Insn {
    let [_, ebx, ecx, edx] = cpu::cpuid(0, 0);
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&ebx.to_le_bytes());
    v[4..8].copy_from_slice(&edx.to_le_bytes());
    v[8..].copy_from_slice(&ecx.to_le_bytes());
    match &v {
        b"AuthenticAMD" | b"HygonGenuine" => Insn::Vmmcall,
        _ => Insn::Vmcall,
    }
}

/// KVM's paravirtual feature bits, or 0 when not running on KVM.
pub fn kvm_features() -> u32 {
    let [max, ebx, ecx, edx] = cpu::cpuid(LEAF_SIGNATURE, 0);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&ecx.to_le_bytes());
    sig[8..].copy_from_slice(&edx.to_le_bytes());
    if &sig != b"KVMKVMKVM\0\0\0" || max < LEAF_FEATURES {
        return 0;
    }
    cpu::cpuid(LEAF_FEATURES, 0)[0]
}

/// A four-argument hypercall.
///
/// # Safety
/// The hypercall must be one this host executes (probed), and its effect
/// (for `KVM_HC_SEND_IPI`: interrupts on other CPUs) one the caller wants.
#[inline(always)]
pub unsafe fn hypercall4(insn: Insn, nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: u64;
    // SAFETY: the caller guarantees the hypercall is supported; RBX is
    // reserved by the compiler, so a0 is swapped into it and back.
    unsafe {
        match insn {
            Insn::Vmcall => asm!(
                "xchg {a0}, rbx", "vmcall", "xchg {a0}, rbx",
                a0 = inout(reg) a0 => _,
                inout("rax") nr => ret,
                in("rcx") a1, in("rdx") a2, in("rsi") a3,
                options(nostack)
            ),
            Insn::Vmmcall => asm!(
                "xchg {a0}, rbx", "vmmcall", "xchg {a0}, rbx",
                a0 = inout(reg) a0 => _,
                inout("rax") nr => ret,
                in("rcx") a1, in("rdx") a2, in("rsi") a3,
                options(nostack)
            ),
        }
    }
    ret as i64
}

/// Probe bodies: an empty `KVM_HC_SEND_IPI` (no destination: harmless),
/// with global labels on the instruction and on the resume point, so the
/// #UD handler can skip the instruction.
macro_rules! probe_fn {
    ($name:ident, $insn:literal, $at:literal, $resume:literal) => {
        #[unsafe(naked)]
        extern "C" fn $name(icr: u64) -> u64 {
            naked_asm!(
                "push rbx",
                "mov eax, {nr}",
                "xor ebx, ebx",
                "xor ecx, ecx",
                "xor edx, edx",
                "mov rsi, rdi",
                concat!(".globl ", $at),
                concat!($at, ":"),
                $insn,
                "pop rbx",
                "ret",
                concat!(".globl ", $resume),
                concat!($resume, ":"),
                "mov eax, {faulted}",
                "pop rbx",
                "ret",
                nr = const KVM_HC_SEND_IPI,
                faulted = const PROBE_FAULTED,
            )
        }
    };
}

probe_fn!(
    probe_vmcall,
    "vmcall",
    "smpcall_probe_vmcall",
    "smpcall_probe_vmcall_resume"
);
probe_fn!(
    probe_vmmcall,
    "vmmcall",
    "smpcall_probe_vmmcall",
    "smpcall_probe_vmmcall_resume"
);

unsafe extern "C" {
    static smpcall_probe_vmcall: u8;
    static smpcall_probe_vmcall_resume: u8;
    static smpcall_probe_vmmcall: u8;
    static smpcall_probe_vmmcall_resume: u8;
}

/// What probing the send-IPI hypercall found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// It returned this (0: delivered to nobody, as asked).
    Returned(i64),
    /// The instruction raised #UD.
    Faulted,
    /// The instruction did not complete; the rescue timer moved on.
    Hung,
}

/// Issues one harmless `KVM_HC_SEND_IPI` (empty bitmap, `icr` as ICR low)
/// with `insn`, under the exception [`fixup`]: a #UD, or the
/// [`vectors::PROBE_TIMER`] interrupt taken at the instruction, resumes
/// after it. Interrupts are enabled for the probe (the timer must get in)
/// and restored after. Boot CPU only, before the APs run (the fixup table
/// is the boot CPU's).
pub fn probe_send_ipi(insn: Insn, icr: u64) -> Probe {
    let (at, resume, f): (u64, u64, extern "C" fn(u64) -> u64) = match insn {
        Insn::Vmcall => (
            (&raw const smpcall_probe_vmcall) as u64,
            (&raw const smpcall_probe_vmcall_resume) as u64,
            probe_vmcall,
        ),
        Insn::Vmmcall => (
            (&raw const smpcall_probe_vmmcall) as u64,
            (&raw const smpcall_probe_vmmcall_resume) as u64,
            probe_vmmcall,
        ),
    };
    fixup::set(at, resume);
    let _ = fixup::take_hit();
    let were_enabled = cpu::irqs_enabled();
    x2apic::timer_oneshot(vectors::PROBE_TIMER, RESCUE_TICKS);
    cpu::sti();
    let r = f(icr);
    cpu::cli();
    x2apic::timer_stop();
    if were_enabled {
        cpu::sti();
    }
    fixup::set(0, 0);
    let hit = fixup::take_hit();
    if r != u64::from(PROBE_FAULTED) {
        Probe::Returned(r as i64)
    } else if hit == u64::from(vectors::PROBE_TIMER.0) {
        Probe::Hung
    } else {
        Probe::Faulted
    }
}
