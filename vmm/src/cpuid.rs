//! Per-vCPU CPUID: x2APIC, the APIC id in leaves 1 and 0xB, the hypervisor
//! bit, and the TSC frequency in KVM's timing leaf.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};
use shared::ApicId;

/// Leaf 1 ECX: x2APIC supported.
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: the logical-processor-count field is valid.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// KVM's signature leaf; EAX holds the highest hypervisor leaf.
pub const LEAF_KVM_SIGNATURE: u32 = 0x4000_0000;
/// KVM's feature leaf (EAX: `KVM_FEATURE_*` bits).
pub const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
/// The timing leaf: EAX = TSC kHz, EBX = APIC bus kHz.
pub const LEAF_TIMING: u32 = 0x4000_0010;
/// `KVM_FEATURE_PV_SEND_IPI` in [`LEAF_KVM_FEATURES`] EAX.
pub const KVM_FEATURE_PV_SEND_IPI: u32 = 1 << 11;
/// KVM's LAPIC timer runs at 1 GHz.
const APIC_BUS_KHZ: u32 = 1_000_000;
/// Topology level types in leaf 0xB ECX[15:8].
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Whether KVM's supported CPUID advertises PV send-IPI.
pub fn has_pv_send_ipi(supported: &CpuId) -> bool {
    supported
        .as_slice()
        .iter()
        .any(|e| e.function == LEAF_KVM_FEATURES && e.eax & KVM_FEATURE_PV_SEND_IPI != 0)
}

/// Builds the CPUID of the vCPU with `apic_id`, one of `count`, from what
/// KVM supports.
pub fn for_vcpu(supported: &CpuId, apic_id: ApicId, count: u32, tsc_khz: u32) -> CpuId {
    let id = apic_id.0;
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .filter(|e| e.function != 0xb && e.function != 0x1f && e.function != LEAF_TIMING)
        .copied()
        .collect();
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ecx |= LEAF1_ECX_X2APIC | LEAF1_ECX_HYPERVISOR;
                e.ebx = (e.ebx & 0x0000_ffff) | ((id & 0xff) << 24) | ((count.min(255)) << 16);
                e.edx |= LEAF1_EDX_HTT;
            }
            LEAF_KVM_SIGNATURE if tsc_khz != 0 => e.eax = e.eax.max(LEAF_TIMING),
            _ => {}
        }
    }
    // Extended topology: every vCPU is a core of one package.
    let core_shift = 32 - count.max(1).next_power_of_two().leading_zeros() - 1;
    let index_flag = kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    for (index, eax, ebx, level) in [(0, 0, 1, LEVEL_SMT), (1, core_shift, count, LEVEL_CORE)] {
        entries.push(kvm_cpuid_entry2 {
            function: 0xb,
            index,
            flags: index_flag,
            eax,
            ebx,
            ecx: (level << 8) | index,
            edx: id,
            ..Default::default()
        });
    }
    entries.push(kvm_cpuid_entry2 {
        function: 0xb,
        index: 2,
        flags: index_flag,
        ecx: 2,
        edx: id,
        ..Default::default()
    });
    if tsc_khz != 0 {
        entries.push(kvm_cpuid_entry2 {
            function: LEAF_TIMING,
            eax: tsc_khz,
            ebx: APIC_BUS_KHZ,
            ..Default::default()
        });
    }
    // Leaf 0 must admit leaf 0xB.
    for e in entries.iter_mut().filter(|e| e.function == 0) {
        e.eax = e.eax.max(0xb);
    }
    CpuId::from_entries(&entries).unwrap_or_else(|_| supported.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_supported() -> CpuId {
        CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0xd,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_KVM_SIGNATURE,
                eax: LEAF_KVM_FEATURES,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_KVM_FEATURES,
                eax: KVM_FEATURE_PV_SEND_IPI,
                ..Default::default()
            },
        ])
        .unwrap()
    }

    fn leaf(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn apic_id_and_x2apic_bits() {
        let c = for_vcpu(&fake_supported(), ApicId(5), 8, 2_000_000);
        let l1 = leaf(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 5);
        assert_eq!((l1.ebx >> 16) & 0xff, 8);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert!(l1.ecx & LEAF1_ECX_X2APIC != 0 && l1.ecx & LEAF1_ECX_HYPERVISOR != 0);
        assert_eq!(leaf(&c, 0xb, 0).edx, 5);
        assert_eq!(leaf(&c, 0xb, 1).edx, 5);
        assert_eq!(leaf(&c, 0xb, 1).eax, 3);
        assert_eq!(leaf(&c, 0xb, 1).ebx, 8);
        assert_eq!(leaf(&c, LEAF_TIMING, 0).eax, 2_000_000);
        assert_eq!(leaf(&c, LEAF_KVM_SIGNATURE, 0).eax, LEAF_TIMING);
        assert!(has_pv_send_ipi(&fake_supported()));
    }
}
