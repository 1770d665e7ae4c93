//! [`VmBuilder::build`]: from a [`VmConfig`] to a [`Vm`] ready to run —
//! KVM opened and checked, memory mapped, the kernel loaded, vCPUs created
//! with their CPUID, the BSP's registers and the boot information written.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuFd, VmFd};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::Elf;
use shared::ApicId;
use shared::layout;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::kvm::{check_cpu_limits, create_vm, kvm_err, open_kvm};
use super::limits;
use super::{EMBEDDED_GUEST, KVM_DEVICE, Vm, boot_info};
use crate::config::{Kernel, VmConfig};
use crate::elf::{self, KernelImage};
use crate::error::{Error, Result};
use crate::{api, cpuid, kick, memory, regs};

/// Builds [`Vm`]s on one KVM device.
#[derive(Clone, Debug)]
pub struct VmBuilder {
    kvm_device: PathBuf,
}

impl Default for VmBuilder {
    /// A builder on [`KVM_DEVICE`].
    fn default() -> Self {
        VmBuilder::with_device(KVM_DEVICE)
    }
}

/// The guest kernel's bytes, where they came from, and what they hold.
struct GuestKernel {
    bytes: Cow<'static, [u8]>,
    path: PathBuf,
    image: KernelImage,
}

impl VmBuilder {
    /// A builder on another KVM device (for tests of the error paths).
    pub fn with_device(kvm_device: impl Into<PathBuf>) -> Self {
        VmBuilder {
            kvm_device: kvm_device.into(),
        }
    }

    /// Checks `config` and builds its VM; nothing runs until [`Vm::run`].
    /// Binds the control socket if `config` asks for one.
    pub fn build(&self, config: &VmConfig) -> Result<Vm> {
        // KVM's limit first, where KVM opens: it may be below the guest's,
        // which `validate` checks.
        if let Ok(kvm) = open_kvm(&self.kvm_device) {
            check_cpu_limits(&kvm, config)?;
        }
        config.validate()?;
        let kernel = read_kernel(config)?;
        let mem_size = limits::mem_size(config, kernel.image.end)?;
        let kvm = open_kvm(&self.kvm_device)?;
        let apic_ids = apic_ids(config.cpus, config.apic_stride);
        kick::install()?;
        let listener = bind_api(config.api_sock.as_deref())?;
        let started = Instant::now();
        let mem = Arc::new(memory::create(mem_size)?);
        let vm = Arc::new(create_vm(&kvm, &mem)?);
        let drop_ipi = crate::fault::setup_vm(&kvm, &vm, &config.faults);
        load_kernel(&mem, &kernel)?;
        memory::write_page_tables(&mem)?;
        memory::write_boot_gdt(&mem)?;
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let vcpus = create_vcpus(&vm, &apic_ids)?;
        let tsc_khz = vcpus[0].get_tsc_khz().unwrap_or(0);
        set_cpuid(&vcpus, &apic_ids, &supported, tsc_khz)?;
        boot_info::write(&mem, config, &apic_ids, tsc_khz, &supported)?;
        regs::setup_bsp(&vcpus[0], kernel.image.entry, layout::BOOT_INFO.start.0)?;
        log::info!(
            "{} vCPUs, {} MiB of guest memory",
            config.cpus,
            mem_size >> 20
        );
        Ok(Vm {
            config: VmConfig {
                mem_mib: Some(mem_size >> 20),
                ..config.clone()
            },
            started,
            mem,
            vm,
            vcpus,
            apic_ids,
            listener,
            drop_ipi,
        })
    }
}

/// The APIC id of each CPU number. Kept distinct from the CPU number when
/// `stride > 1`, so that any confusion of the two ids shows up in tests.
pub fn apic_ids(cpus: u32, stride: u32) -> Vec<ApicId> {
    (0..cpus).map(|c| ApicId(c * stride)).collect()
}

fn read_kernel(config: &VmConfig) -> Result<GuestKernel> {
    let (bytes, path) = match &config.kernel {
        Kernel::Embedded => (Cow::Borrowed(EMBEDDED_GUEST), PathBuf::from("<embedded>")),
        Kernel::Path(p) => {
            let bytes = std::fs::read(p).map_err(|source| Error::KernelRead {
                path: p.clone(),
                source,
            })?;
            (Cow::Owned(bytes), p.clone())
        }
    };
    let image = elf::check(&bytes).map_err(|reason| Error::KernelInvalid {
        path: path.clone(),
        reason,
    })?;
    Ok(GuestKernel { bytes, path, image })
}

fn bind_api(path: Option<&Path>) -> Result<Option<std::os::unix::net::UnixListener>> {
    let Some(path) = path else {
        return Ok(None);
    };
    api::bind(path)
        .map(Some)
        .map_err(|source| Error::ApiSocket {
            path: path.to_path_buf(),
            source,
        })
}

fn load_kernel(mem: &GuestMemoryMmap, kernel: &GuestKernel) -> Result<()> {
    Elf::load(
        mem,
        None,
        &mut Cursor::new(&kernel.bytes[..]),
        Some(GuestAddress(layout::KERNEL.0)),
    )
    .map_err(|e| Error::KernelInvalid {
        path: kernel.path.clone(),
        reason: format!("loading failed: {e}"),
    })?;
    Ok(())
}

fn create_vcpus(vm: &VmFd, apic_ids: &[ApicId]) -> Result<Vec<VcpuFd>> {
    let create = |(cpu, id): (usize, &ApicId)| {
        vm.create_vcpu(u64::from(id.0))
            .map_err(|source| Error::Vcpu {
                cpu: cpu as u32,
                op: "KVM_CREATE_VCPU",
                source,
            })
    };
    apic_ids.iter().enumerate().map(create).collect()
}

fn set_cpuid(vcpus: &[VcpuFd], apic_ids: &[ApicId], supported: &CpuId, tsc_khz: u32) -> Result<()> {
    let count = vcpus.len() as u32;
    for (cpu, (vcpu, id)) in vcpus.iter().zip(apic_ids).enumerate() {
        let c = cpuid::for_vcpu(supported, *id, count, tsc_khz);
        vcpu.set_cpuid2(&c).map_err(|source| Error::Vcpu {
            cpu: cpu as u32,
            op: "KVM_SET_CPUID2",
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_ids_follow_the_stride() {
        assert_eq!(apic_ids(3, 1), [ApicId(0), ApicId(1), ApicId(2)]);
        assert_eq!(apic_ids(3, 4), [ApicId(0), ApicId(4), ApicId(8)]);
    }
}
