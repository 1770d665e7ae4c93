//! `--fault drop-ipi`: routing the guest's x2APIC ICR writes through the
//! VMM. KVM must give the VMM a userspace exit for them (an MSR filter on
//! the ICR with `KVM_CAP_X86_USER_SPACE_MSR`); a probe VM finds out whether
//! this host's KVM does, since current kernels never filter x2APIC MSRs.

use kvm_bindings::{
    KVM_CAP_X86_USER_SPACE_MSR, KVM_MAX_CPUID_ENTRIES, KVM_MSR_EXIT_REASON_FILTER, kvm_enable_cap,
};
use kvm_ioctls::{
    Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuExit, VmFd,
};
use shared::apic::X2APIC_ICR_MSR;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::Fault;

/// Sets up the VM for `faults` before its vCPUs exist: for `drop-ipi`,
/// probes whether this host traps x2APIC ICR writes and, if so, installs
/// the filter. Returns the drop probability to route with, or why the
/// fault is skipped.
pub fn setup_vm(kvm: &Kvm, vm: &VmFd, faults: &[Fault]) -> Result<Option<f64>, String> {
    let Some(p) = faults.iter().find_map(|f| match f {
        Fault::DropIpi { probability } => Some(*probability),
        _ => None,
    }) else {
        return Ok(None);
    };
    let skip = |why: String| {
        format!("--fault drop-ipi: skipped: this host's KVM cannot trap x2APIC ICR writes ({why})")
    };
    probe_icr_trap(kvm).map_err(skip)?;
    trap_icr(vm).map_err(skip)?;
    Ok(Some(p))
}

fn trap_icr(vm: &VmFd) -> Result<(), String> {
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_X86_USER_SPACE_MSR,
        ..Default::default()
    };
    cap.args[0] = u64::from(KVM_MSR_EXIT_REASON_FILTER);
    vm.enable_cap(&cap)
        .map_err(|e| format!("KVM_CAP_X86_USER_SPACE_MSR: {e}"))?;
    // One MSR, bit 0 clear: writes to the ICR are denied, i.e. exit to us.
    let deny = [0u8; 1];
    let range = MsrFilterRange {
        flags: MsrFilterRangeFlags::WRITE,
        base: X2APIC_ICR_MSR,
        msr_count: 1,
        bitmap: &deny,
    };
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &[range])
        .map_err(|e| format!("KVM_X86_SET_MSR_FILTER: {e}"))
}

/// Real-mode code of the probe: enable x2APIC, write the ICR, `out`.
const PROBE_CODE: [u8; 35] = [
    0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00, // mov ecx, IA32_APIC_BASE
    0x0f, 0x32, // rdmsr
    0x66, 0x0d, 0x00, 0x0c, 0x00, 0x00, // or eax, EN | EXTD
    0x0f, 0x30, // wrmsr
    0x66, 0xb9, 0x30, 0x08, 0x00, 0x00, // mov ecx, X2APIC_ICR
    0x66, 0xb8, 0xfc, 0x00, 0x00, 0x00, // mov eax, vector 0xfc
    0x66, 0x31, 0xd2, // xor edx, edx (destination 0)
    0x0f, 0x30, // wrmsr
    0xe6, 0x80, // out 0x80, al: the write was not trapped
];
const PROBE_AT: u64 = 0x1000;
const PROBE_MEM: usize = 0x4000;

/// Whether a VM set up like ours gets a userspace exit for an x2APIC ICR
/// write: one throwaway vCPU runs `PROBE_CODE`.
pub fn probe_icr_trap(kvm: &Kvm) -> Result<(), String> {
    const _: () = assert!(X2APIC_ICR_MSR == 0x830, "PROBE_CODE writes MSR 0x830");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), PROBE_MEM)])
        .map_err(|e| format!("probe memory: {e}"))?;
    mem.write_slice(&PROBE_CODE, GuestAddress(PROBE_AT))
        .map_err(|e| format!("probe memory: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("probe VM: {e}"))?;
    vm.create_irq_chip()
        .map_err(|e| format!("probe irqchip: {e}"))?;
    trap_icr(&vm)?;
    // SAFETY: `mem` outlives `vm` (declared before it, so dropped after
    // it), and slot 0 is the probe VM's only slot.
    unsafe { crate::memory::register(&vm, &mem) }.map_err(|e| format!("probe memory slot: {e}"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| format!("probe vCPU: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("probe CPUID: {e}"))?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| format!("probe CPUID: {e}"))?;
    let mut sregs = vcpu.get_sregs().map_err(|e| format!("probe sregs: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("probe sregs: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("probe regs: {e}"))?;
    regs.rip = PROBE_AT;
    regs.rflags = 2;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("probe regs: {e}"))?;
    match vcpu.run() {
        Ok(VcpuExit::X86Wrmsr(exit)) if exit.index == X2APIC_ICR_MSR => Ok(()),
        Ok(VcpuExit::IoOut(..)) => Err("KVM handles x2APIC MSRs in the kernel and does not \
             apply MSR filters to them"
            .into()),
        Ok(other) => Err(format!("the probe ended with {other:?}")),
        Err(e) => Err(format!("the probe's KVM_RUN failed: {e}")),
    }
}
