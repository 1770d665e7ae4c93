//! The BSP's register state for a direct 64-bit entry at the ELF entry
//! point: long mode, paging on the VMM's identity map, the boot GDT.

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use shared::layout;

use crate::error::{Error, Result};
use crate::memory::{BOOT_CODE_SELECTOR, BOOT_DATA_SELECTOR, BOOT_GDT_ENTRIES};

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// A segment register cache that matches a GDT descriptor (as `iretq` and
/// segment loads will reload it from memory).
fn segment_from_descriptor(selector: u16, desc: u64) -> kvm_segment {
    let base = ((desc >> 16) & 0xff_ffff) | ((desc >> 32) & 0xff00_0000);
    let limit_raw = (desc & 0xffff) | ((desc >> 32) & 0xf_0000);
    let g = ((desc >> 55) & 1) as u8;
    let limit = if g == 1 {
        (limit_raw << 12) | 0xfff
    } else {
        limit_raw
    };
    kvm_segment {
        base,
        limit: limit as u32,
        selector,
        type_: ((desc >> 40) & 0xf) as u8,
        present: ((desc >> 47) & 1) as u8,
        dpl: ((desc >> 45) & 3) as u8,
        db: ((desc >> 54) & 1) as u8,
        s: ((desc >> 44) & 1) as u8,
        l: ((desc >> 53) & 1) as u8,
        g,
        avl: ((desc >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the BSP in 64-bit mode at `entry` with `arg` in RDI.
pub fn setup_bsp(vcpu: &VcpuFd, entry: u64, arg: u64) -> Result<()> {
    let err = |op| move |source| Error::Vcpu { cpu: 0, op, source };
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
    let code = segment_from_descriptor(
        BOOT_CODE_SELECTOR,
        BOOT_GDT_ENTRIES[usize::from(BOOT_CODE_SELECTOR / 8)],
    );
    let data = segment_from_descriptor(
        BOOT_DATA_SELECTOR,
        BOOT_GDT_ENTRIES[usize::from(BOOT_DATA_SELECTOR / 8)],
    );
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = layout::BOOT_GDT.start.0;
    sregs.gdt.limit = (BOOT_GDT_ENTRIES.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr3 = layout::PML4.start.0;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;

    let regs = kvm_regs {
        rip: entry,
        rsp: layout::BOOT_STACK.end() - 8,
        rflags: RFLAGS_RESERVED,
        rdi: arg,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(err("KVM_SET_REGS"))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(err("KVM_SET_FPU"))
}

/// IA32_APIC_BASE (KVM_SET_MSRS index).
const MSR_IA32_APIC_BASE: u32 = 0x1b;
/// The architectural default APIC base address (SDM Vol. 3A §11.4.4).
const APIC_BASE_ADDRESS: u64 = 0xfee0_0000;
/// IA32_APIC_BASE: x2APIC mode (EXTD).
const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE: APIC globally enabled (EN).
const APIC_BASE_EN: u64 = 1 << 11;
/// An application processor's IA32_APIC_BASE as firmware leaves it on
/// machines with x2APIC ids: enabled, in x2APIC mode, not the BSP.
pub const AP_APIC_BASE: u64 = APIC_BASE_ADDRESS | APIC_BASE_EN | APIC_BASE_EXTD;

/// Hands application processor `cpu` its local APIC already in x2APIC
/// mode ([`AP_APIC_BASE`], with `KVM_SET_MSRS`), as firmware does on
/// machines with APIC ids above 255, so that the AP's own enable finds
/// it done and makes no write. INIT keeps the APIC's mode and base
/// (SDM Vol. 3A, x2APIC state transitions: only a reset returns it to
/// xAPIC mode), so a CPU brought back online finds it too. Call after
/// `KVM_SET_CPUID2` (EXTD needs x2APIC in CPUID).
///
/// Why: KVM rebuilds its APIC map over every vCPU, and asks each vCPU to
/// rescan, whenever an APIC's mode changes; done by the host before any
/// vCPU runs, the N mode changes cost host time once, not guest boot
/// time per AP.
pub fn preset_ap_x2apic(vcpu: &VcpuFd, cpu: u32) -> Result<()> {
    let op = "KVM_SET_MSRS (IA32_APIC_BASE)";
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_APIC_BASE,
        data: AP_APIC_BASE,
        ..Default::default()
    }])
    .map_err(|_| Error::Vcpu {
        cpu,
        op,
        source: kvm_ioctls::Error::new(libc::E2BIG),
    })?;
    match vcpu.set_msrs(&msrs) {
        Ok(1) => Ok(()),
        // KVM set none: it refused the value.
        Ok(_) => Err(Error::Vcpu {
            cpu,
            op,
            source: kvm_ioctls::Error::new(libc::EINVAL),
        }),
        Err(source) => Err(Error::Vcpu { cpu, op, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_decode() {
        let cs = segment_from_descriptor(8, BOOT_GDT_ENTRIES[1]);
        assert_eq!((cs.l, cs.db, cs.s, cs.present, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment_from_descriptor(0x10, BOOT_GDT_ENTRIES[2]);
        assert_eq!((ds.l, ds.db, ds.type_, ds.g), (0, 1, 3, 1));
    }
}
