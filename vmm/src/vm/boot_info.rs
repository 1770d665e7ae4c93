//! The boot information block the VMM hands the guest (`shared::bootinfo`),
//! with the guest command line after it.

use kvm_bindings::CpuId;
use shared::ApicId;
use shared::bootinfo::{BootInfo, CPU_TABLE_CAPACITY, CpuEntry, FEATURE_PV_SEND_IPI};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use crate::config::VmConfig;
use crate::error::{Error, Result};
use crate::trace_rings::TraceRegion;
use crate::{cpuid, memory};

/// Writes the boot information for `config` (CPUs with `apic_ids`, a TSC
/// of `tsc_khz`, the host's `supported` CPUID, the trace rings if any)
/// and the command line.
pub(super) fn write(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    apic_ids: &[ApicId],
    tsc_khz: u32,
    supported: &CpuId,
    trace: Option<TraceRegion>,
) -> Result<()> {
    let cmdline = config.guest_cmdline();
    let mut info = BootInfo::new();
    info.tsc_khz = u64::from(tsc_khz);
    // One region from address 0: its size is one past its last byte.
    info.mem_size = mem.last_addr().0 + 1;
    info.cpu_count = config.cpus;
    info.cmdline_len = cmdline.len() as u32;
    info.scenario = config.scenario as u32;
    if cpuid::has_pv_send_ipi(supported) {
        info.features |= FEATURE_PV_SEND_IPI;
    }
    info.features |= crate::host::emulated_feature_bit();
    if let Some(t) = trace {
        info.trace_base = t.base;
        info.trace_ring_bytes = t.ring_bytes;
    }
    if apic_ids.len() != config.cpus as usize || apic_ids.len() > CPU_TABLE_CAPACITY {
        return Err(Error::Memory(format!(
            "{} CPUs do not fit the boot information's CPU table ({CPU_TABLE_CAPACITY} entries)",
            apic_ids.len()
        )));
    }
    let table: Vec<CpuEntry> = apic_ids
        .iter()
        .enumerate()
        .map(|(cpu, id)| CpuEntry {
            apic_id: id.0,
            numa_node: u32::from(config.numa.get(cpu).copied().unwrap_or(0)),
        })
        .collect();
    memory::write_boot_info(mem, &info, &table, &cmdline)
}
