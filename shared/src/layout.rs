//! Guest-physical memory layout.
//!
//! Constants are in ascending order and must not overlap; the checks at the
//! bottom of this file fail the build if they do. Every address either side
//! uses is defined here.

/// A guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestPhysAddr(pub u64);

/// A fixed region of guest-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte of the region.
    pub start: GuestPhysAddr,
    /// Size in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.start.0 + self.size
    }
}

const fn region(start: u64, size: u64) -> Region {
    Region {
        start: GuestPhysAddr(start),
        size,
    }
}

/// Page size used by the layout.
pub const PAGE_SIZE: u64 = 0x1000;

/// GDT the VMM writes for the BSP's long-mode entry (null, code64, data).
pub const BOOT_GDT: Region = region(0x500, 0x100);
/// Level-4 page table built by the VMM (identity map).
pub const PML4: Region = region(0x1000, PAGE_SIZE);
/// Page-directory-pointer table of the identity map.
pub const PDPT: Region = region(0x2000, PAGE_SIZE);
/// Page directory of the identity map: 512 entries of 2 MiB pages.
pub const PD: Region = region(0x3000, PAGE_SIZE);
/// The boot information block ([`crate::bootinfo::BootInfo`]), written by
/// the VMM, read by the guest.
pub const BOOT_INFO: Region = region(0x5000, PAGE_SIZE);
/// The guest command line, written by the VMM (length in the boot info).
pub const CMDLINE: Region = region(0x6000, PAGE_SIZE);
/// Requests from the host to the guest (hotplug); the host writes, the
/// guest reads and acknowledges.
pub const HOST_MAILBOX: Region = region(0x7000, PAGE_SIZE);
/// Real-mode trampoline that application processors start in after SIPI.
/// Must be page aligned and below 1 MiB: the SIPI vector is its page number.
pub const AP_TRAMPOLINE: Region = region(0x8000, 0xf00);
/// Parameters the BSP leaves for the AP it is starting (page table root,
/// stack, entry point, CPU number), read by the trampoline.
pub const AP_BOOT_DATA: Region = region(0x8f00, 0x100);
/// Stack the BSP enters the guest on, until the guest switches to its own.
pub const BOOT_STACK: Region = region(0x9000, 0x7000);
/// The per-CPU boot table ([`crate::bootinfo::CpuEntry`], one per present
/// CPU), placed by the VMM anywhere inside this region;
/// [`crate::bootinfo::BootInfo::cpu_table`] says where. Read-only for the
/// guest.
pub const CPU_TABLE: Region = region(0x1_0000, 0x8000);
/// Per-CPU statistics ([`crate::mailbox::CpuStatsWire`], one per CPU
/// number from 0) the guest writes for [`crate::mailbox::Op::Stats`];
/// [`crate::mailbox::Mailbox::nr_stats`] says how many.
pub const HOST_STATS: Region = region(0x1_8000, 0x2_8000);
/// Where the guest ELF is linked and loaded.
pub const KERNEL: GuestPhysAddr = GuestPhysAddr(0x10_0000);

/// Bytes identity-mapped by the VMM's page tables (2 MiB pages in [`PD`]).
pub const IDENTITY_MAP_SIZE: u64 = 512 * 2 * 1024 * 1024;
/// Most guest memory the VMM will map; stays below the 32-bit MMIO hole
/// where the LAPIC and IOAPIC live, and within the identity map.
pub const MAX_MEM: u64 = IDENTITY_MAP_SIZE;
/// Default guest memory size.
pub const DEFAULT_MEM: u64 = 64 * 1024 * 1024;

/// Three pages KVM needs for the real-mode TSS on Intel hosts without
/// unrestricted guest (`KVM_SET_TSS_ADDR`); in the MMIO hole, outside RAM.
pub const KVM_TSS: Region = region(0xfffb_d000, 3 * PAGE_SIZE);

/// Base of the MSI address window: an MSI written here with the APIC id
/// in bits 19:12 (and bits 31:8 of a 32-bit id in the high half) is an
/// interrupt for that APIC (Intel SDM Vol. 3A §11.11.1).
pub const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// The SIPI vector that starts an AP at [`AP_TRAMPOLINE`].
pub const SIPI_VECTOR: u8 = (AP_TRAMPOLINE.start.0 / PAGE_SIZE) as u8;

const FIXED: [Region; 11] = [
    BOOT_GDT,
    PML4,
    PDPT,
    PD,
    BOOT_INFO,
    CMDLINE,
    HOST_MAILBOX,
    AP_TRAMPOLINE,
    AP_BOOT_DATA,
    CPU_TABLE,
    HOST_STATS,
];

const fn sorted_and_disjoint(regions: &[Region]) -> bool {
    let mut i = 1;
    while i < regions.len() {
        if regions[i - 1].end() > regions[i].start.0 {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = assert!(sorted_and_disjoint(&FIXED), "layout regions overlap");
const _: () = assert!(AP_BOOT_DATA.end() <= BOOT_STACK.start.0);
const _: () = assert!(BOOT_STACK.end() <= CPU_TABLE.start.0);
const _: () = assert!(
    HOST_STATS.end() <= KERNEL.0,
    "low regions run into the kernel"
);
const _: () = assert!(AP_TRAMPOLINE.start.0.is_multiple_of(PAGE_SIZE));
const _: () = assert!(
    AP_TRAMPOLINE.end() <= 0x10_0000,
    "trampoline must be real-mode reachable"
);
const _: () = assert!(SIPI_VECTOR as u64 * PAGE_SIZE == AP_TRAMPOLINE.start.0);
const _: () = assert!(
    MAX_MEM <= 0xC000_0000,
    "guest RAM must stay below the MMIO hole"
);
const _: () = assert!(
    KVM_TSS.start.0 >= MAX_MEM,
    "the KVM TSS must be outside RAM"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_disjoint_and_below_kernel() {
        assert!(sorted_and_disjoint(&FIXED));
        for r in FIXED {
            assert!(r.end() <= KERNEL.0);
        }
    }

    #[test]
    fn overlap_is_detected() {
        let a = region(0x1000, 0x2000);
        let b = region(0x2000, 0x1000);
        assert!(!sorted_and_disjoint(&[a, b]));
        assert!(sorted_and_disjoint(&[a, region(0x3000, 1)]));
    }
}
