//! Guest memory and the boot structures the VMM writes into it: identity
//! page tables, the BSP's boot GDT, the boot information block and the
//! command line. Every address comes from `shared::layout`.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use shared::bootinfo::BootInfo;
use shared::layout::{self, GuestPhysAddr};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::error::{Error, Result};

/// Boot GDT entries: null, 64-bit code, data. Selectors are index * 8.
pub const BOOT_GDT_ENTRIES: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
/// Code selector in the boot GDT.
pub const BOOT_CODE_SELECTOR: u16 = 0x08;
/// Data selector in the boot GDT.
pub const BOOT_DATA_SELECTOR: u16 = 0x10;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_HUGE: u64 = 1 << 7;
const HUGE_PAGE: u64 = 2 << 20;

/// A `shared` wire struct as plain bytes for vm-memory.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
pub struct Plain<T>(pub T);

// SAFETY: CpuStatsWire is a repr(C) struct of five u64 with no padding, for
// which every byte pattern is a valid value.
unsafe impl ByteValued for Plain<shared::mailbox::CpuStatsWire> {}

// SAFETY: CpuEntry is a repr(C) struct of two u32 with no padding, for which
// every byte pattern is a valid value.
unsafe impl ByteValued for Plain<shared::bootinfo::CpuEntry> {}

// SAFETY: BootInfo is repr(C), made only of integers and integer arrays, and
// has no padding (shared asserts its size equals the sum of its fields), so
// every byte pattern is a valid value.
unsafe impl ByteValued for Plain<BootInfo> {}

/// Creates `size` bytes of guest RAM at guest-physical 0.
pub fn create(size: u64) -> Result<GuestMemoryMmap> {
    let len = usize::try_from(size).map_err(|_| Error::Memory(format!("{size} bytes")))?;
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)])
        .map_err(|e| Error::Memory(format!("cannot map {} MiB: {e}", size >> 20)))
}

/// Makes `mem` (one region at guest-physical 0, as [`create`] makes it)
/// memory slot 0 of `vm`.
///
/// # Safety
///
/// `mem` must stay mapped as long as `vm` or any of its vCPUs may run, and
/// `vm` must have no other slot overlapping it.
pub unsafe fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| Error::Memory(e.to_string()))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.last_addr().0 + 1,
        userspace_addr: host as u64,
    };
    // SAFETY: `region` is the mapping of `mem`, which the caller keeps
    // alive while `vm` may use it and which overlaps no other slot (this
    // function's contract).
    unsafe { vm.set_user_memory_region(region) }.map_err(|source| Error::Kvm {
        op: "KVM_SET_USER_MEMORY_REGION",
        source,
    })
}

fn write<T: ByteValued>(mem: &GuestMemoryMmap, at: GuestPhysAddr, what: &str, v: T) -> Result<()> {
    mem.write_obj(v, GuestAddress(at.0))
        .map_err(|e| Error::Memory(format!("writing {what} at {:#x}: {e}", at.0)))
}

/// Writes identity page tables for [`layout::IDENTITY_MAP_SIZE`] with
/// 2 MiB pages.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<()> {
    let pml4 = layout::PML4.start;
    let pdpt = layout::PDPT.start;
    let pd = layout::PD.start;
    write(mem, pml4, "PML4", pdpt.0 | PTE_PRESENT | PTE_WRITABLE)?;
    write(mem, pdpt, "PDPT", pd.0 | PTE_PRESENT | PTE_WRITABLE)?;
    let entries = layout::IDENTITY_MAP_SIZE / HUGE_PAGE;
    let mut table = vec![0u8; (entries * 8) as usize];
    for i in 0..entries {
        let pde = (i * HUGE_PAGE) | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE;
        table[(i * 8) as usize..(i * 8 + 8) as usize].copy_from_slice(&pde.to_le_bytes());
    }
    mem.write_slice(&table, GuestAddress(pd.0))
        .map_err(|e| Error::Memory(format!("writing PD at {:#x}: {e}", pd.0)))
}

/// Writes the BSP's boot GDT.
pub fn write_boot_gdt(mem: &GuestMemoryMmap) -> Result<()> {
    for (i, entry) in BOOT_GDT_ENTRIES.iter().enumerate() {
        let at = GuestPhysAddr(layout::BOOT_GDT.start.0 + 8 * i as u64);
        write(mem, at, "boot GDT", *entry)?;
    }
    Ok(())
}

/// Writes the boot information block, the per-CPU table it points at
/// (`info.cpu_table`, which must lie inside [`layout::CPU_TABLE`] for
/// `table.len()` entries) and the command line.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    info: &BootInfo,
    table: &[shared::bootinfo::CpuEntry],
    cmdline: &str,
) -> Result<()> {
    let fits = info
        .cpu_table_region()
        .is_some_and(|r| r.size == table.len() as u64 * shared::bootinfo::CPU_ENTRY_SIZE);
    if !fits {
        return Err(Error::Memory(format!(
            "a CPU table of {} entries at {:#x} does not fit its region",
            table.len(),
            info.cpu_table
        )));
    }
    write(mem, layout::BOOT_INFO.start, "boot info", Plain(*info))?;
    for (i, e) in table.iter().enumerate() {
        let at = info.cpu_table + i as u64 * shared::bootinfo::CPU_ENTRY_SIZE;
        write(mem, layout::GuestPhysAddr(at), "CPU table", Plain(*e))?;
    }
    mem.write_slice(cmdline.as_bytes(), GuestAddress(layout::CMDLINE.start.0))
        .map_err(|e| Error::Memory(format!("writing the command line: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_structures_land_where_layout_says() {
        let mem = create(16 << 20).unwrap();
        write_page_tables(&mem).unwrap();
        write_boot_gdt(&mem).unwrap();
        let mut info = BootInfo::new();
        info.cpu_count = 2;
        let table = [
            shared::bootinfo::CpuEntry {
                apic_id: 0,
                numa_node: 0,
            },
            shared::bootinfo::CpuEntry {
                apic_id: 2049,
                numa_node: 1,
            },
        ];
        write_boot_info(&mem, &info, &table, "run=demo").unwrap();
        let second: Plain<shared::bootinfo::CpuEntry> = mem
            .read_obj(GuestAddress(layout::CPU_TABLE.start.0 + 8))
            .unwrap();
        assert_eq!(second.0, table[1]);
        // A table that does not match the count, or lies outside its
        // region, is refused.
        assert!(write_boot_info(&mem, &info, &table[..1], "").is_err());
        let mut outside = info;
        outside.cpu_table = layout::CPU_TABLE.end() - 8;
        assert!(write_boot_info(&mem, &outside, &table, "").is_err());

        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4.start.0)).unwrap();
        assert_eq!(pml4 & !0xfff, layout::PDPT.start.0);
        let pde1: u64 = mem.read_obj(GuestAddress(layout::PD.start.0 + 8)).unwrap();
        assert_eq!(pde1, HUGE_PAGE | 0x83);
        let code: u64 = mem
            .read_obj(GuestAddress(
                layout::BOOT_GDT.start.0 + u64::from(BOOT_CODE_SELECTOR),
            ))
            .unwrap();
        assert_eq!(code, BOOT_GDT_ENTRIES[1]);
        let back: Plain<BootInfo> = mem
            .read_obj(GuestAddress(layout::BOOT_INFO.start.0))
            .unwrap();
        assert_eq!(back.0, info);
        let mut line = [0u8; 8];
        mem.read_slice(&mut line, GuestAddress(layout::CMDLINE.start.0))
            .unwrap();
        assert_eq!(&line, b"run=demo");
    }
}
