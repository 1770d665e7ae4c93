//! The boot information block the VMM writes at [`crate::layout::BOOT_INFO`].

use crate::MAX_CPUS;
use crate::layout::{CPU_TABLE, Region};

/// `BootInfo::magic`: "SMPCALL\0" little-endian.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"SMPCALL\0");

/// Feature bit: the VMM advertises KVM's paravirtual send-IPI hypercall in
/// CPUID. The guest must still probe it before use.
pub const FEATURE_PV_SEND_IPI: u32 = 1 << 0;
/// Feature bit: the host's KVM emulates guest instructions (nested or
/// software-assisted), so timings mean little for bare-metal KVM.
pub const FEATURE_EMULATED_HOST: u32 = 1 << 1;

/// Machine description handed from the VMM to the guest. Written once by the
/// VMM before the first vCPU runs; read-only for the guest.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// TSC frequency in kHz, from `KVM_GET_TSC_KHZ` (0 if unknown).
    pub tsc_khz: u64,
    /// Bytes of guest RAM, starting at guest-physical 0.
    pub mem_size: u64,
    /// [`crate::PROTOCOL_VERSION`] of the VMM.
    pub protocol_version: u32,
    /// Present CPUs (vCPUs created by the VMM), at most [`MAX_CPUS`].
    pub cpu_count: u32,
    /// Bytes of command line at [`crate::layout::CMDLINE`].
    pub cmdline_len: u32,
    /// `FEATURE_*` bits.
    pub features: u32,
    /// The [`crate::Scenario`] to run, as its number (the guest refuses an
    /// unknown one).
    pub scenario: u32,
    /// Zero.
    pub reserved: u32,
    /// Guest-physical base of the trace rings ([`crate::trace`]), 0 when
    /// tracing is off.
    pub trace_base: u64,
    /// Bytes of one CPU's trace ring (CPU `n`'s is at `trace_base + n *
    /// trace_ring_bytes`), 0 when tracing is off.
    pub trace_ring_bytes: u64,
    /// Guest-physical address of the per-CPU table: `cpu_count`
    /// [`CpuEntry`]s, entry *n* for CPU *n*, inside
    /// [`crate::layout::CPU_TABLE`] (see [`BootInfo::cpu_table_region`]).
    pub cpu_table: u64,
}

/// What the boot information says about one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuEntry {
    /// Its x2APIC id (32 bits).
    pub apic_id: u32,
    /// Its NUMA node.
    pub numa_node: u32,
}

/// Bytes of a [`CpuEntry`].
pub const CPU_ENTRY_SIZE: u64 = core::mem::size_of::<CpuEntry>() as u64;

/// Entries the [`crate::layout::CPU_TABLE`] region holds.
pub const CPU_TABLE_CAPACITY: usize = (CPU_TABLE.size / CPU_ENTRY_SIZE) as usize;

const _: () = assert!(CPU_ENTRY_SIZE == 8);
const _: () = assert!(CPU_TABLE_CAPACITY >= crate::NR_CPUS);

/// Size of [`BootInfo`] in bytes.
pub const BOOT_INFO_SIZE: usize = core::mem::size_of::<BootInfo>();

// No padding: every byte is a field, so the block can be copied as bytes.
const _: () = assert!(BOOT_INFO_SIZE == 72);
const _: () = assert!(BOOT_INFO_SIZE as u64 <= crate::layout::BOOT_INFO.size);

impl BootInfo {
    /// An empty block with the magic and version filled in.
    pub const fn new() -> Self {
        BootInfo {
            magic: BOOT_INFO_MAGIC,
            tsc_khz: 0,
            mem_size: 0,
            protocol_version: crate::PROTOCOL_VERSION,
            cpu_count: 0,
            cmdline_len: 0,
            features: 0,
            scenario: crate::Scenario::Demo as u32,
            reserved: 0,
            trace_base: 0,
            trace_ring_bytes: 0,
            cpu_table: CPU_TABLE.start.0,
        }
    }

    /// Where the per-CPU table is, if all of it (`cpu_count` entries,
    /// 8-byte aligned) lies inside [`crate::layout::CPU_TABLE`].
    pub fn cpu_table_region(&self) -> Option<Region> {
        let size = u64::from(self.cpu_count).checked_mul(CPU_ENTRY_SIZE)?;
        let end = self.cpu_table.checked_add(size)?;
        (self.cpu_table >= CPU_TABLE.start.0
            && end <= CPU_TABLE.end()
            && self.cpu_table.is_multiple_of(CPU_ENTRY_SIZE))
        .then_some(Region {
            start: crate::layout::GuestPhysAddr(self.cpu_table),
            size,
        })
    }

    /// Whether the block is one this guest understands.
    pub fn is_valid(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC
            && self.protocol_version == crate::PROTOCOL_VERSION
            && self.cpu_count >= 1
            && self.cpu_count as usize <= MAX_CPUS
            && u64::from(self.cmdline_len) <= crate::layout::CMDLINE.size
            && self.cpu_table_region().is_some()
    }
}

impl BootInfo {
    /// The trace rings as (base, bytes of one ring), if tracing is on and
    /// the VMM placed `cpu_count` rings of at least one entry inside guest
    /// memory, 8-byte aligned.
    pub fn trace_rings(&self) -> Option<(u64, u64)> {
        let (base, ring) = (self.trace_base, self.trace_ring_bytes);
        let total = crate::trace::region_bytes(ring, self.cpu_count);
        let fits = base
            .checked_add(total)
            .is_some_and(|end| end <= self.mem_size);
        (base != 0
            && crate::trace::capacity(ring) > 0
            && base.is_multiple_of(8)
            && ring.is_multiple_of(8)
            && fits)
            .then_some((base, ring))
    }
}

impl Default for BootInfo {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_rings_only_when_placed_inside_memory() {
        let mut b = BootInfo::new();
        b.cpu_count = 2;
        b.mem_size = 64 << 20;
        assert_eq!(b.trace_rings(), None, "off");
        b.trace_base = 32 << 20;
        b.trace_ring_bytes = crate::trace::ring_bytes(crate::trace::DEFAULT_RING_KIB);
        assert_eq!(b.trace_rings(), Some((32 << 20, 260 * 1024)));
        b.trace_base = (64 << 20) - 260 * 1024;
        assert_eq!(b.trace_rings(), None, "second ring past the end");
        b.trace_base = u64::MAX - 8;
        assert_eq!(b.trace_rings(), None, "overflow");
        b.trace_base = 32 << 20;
        b.trace_ring_bytes = 64;
        assert_eq!(b.trace_rings(), None, "no room for an entry");
    }

    #[test]
    fn the_cpu_table_must_lie_inside_its_region() {
        let mut b = BootInfo::new();
        b.cpu_count = 2;
        assert!(b.is_valid());
        assert_eq!(b.cpu_table_region().map(|r| r.size), Some(16));
        // The last entry ends exactly at the region's end.
        b.cpu_table = CPU_TABLE.end() - 16;
        assert!(b.is_valid());
        for bad in [
            CPU_TABLE.end() - 8,
            CPU_TABLE.start.0 - 8,
            CPU_TABLE.start.0 + 4,
            u64::MAX - 7,
        ] {
            b.cpu_table = bad;
            assert!(!b.is_valid(), "table at {bad:#x}");
        }
        b.cpu_table = CPU_TABLE.start.0;
        b.cpu_count = u32::MAX;
        assert_eq!(b.cpu_table_region(), None);
        assert!(!b.is_valid());
    }
}
