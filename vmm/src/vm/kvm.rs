//! Opening KVM and creating the VM fd: the checks that name what this host
//! lacks, the in-kernel irqchip and x2APIC API, guest memory as slot 0.

use std::path::Path;

use kvm_bindings::{
    KVM_API_VERSION, KVM_CAP_X2APIC_API, KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
    KVM_X2APIC_API_USE_32BIT_IDS, kvm_enable_cap,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use shared::layout;
use vm_memory::GuestMemoryMmap;

use super::limits::CpuLimit;
use crate::config::VmConfig;
use crate::error::{Error, Result};
use crate::memory;

/// The error for a failed open of the KVM device, by errno.
pub fn open_error(path: &Path, errno: i32) -> Error {
    let path = path.to_path_buf();
    match errno {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::KvmMissing { path },
        libc::EACCES | libc::EPERM => Error::KvmPermission { path },
        errno => Error::KvmOpen {
            path,
            source: std::io::Error::from_raw_os_error(errno),
        },
    }
}

/// Opens KVM, naming the problem when it cannot.
pub fn open_kvm(path: &Path) -> Result<Kvm> {
    use std::os::unix::ffi::OsStrExt;
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::KvmOpen {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
    let kvm = Kvm::new_with_path(c_path).map_err(|e| open_error(path, e.errno()))?;
    if kvm.get_api_version() != KVM_API_VERSION as i32 {
        return Err(Error::NotKvm {
            path: path.to_path_buf(),
        });
    }
    Ok(kvm)
}

/// The [`Error::Kvm`] of a failed VM-wide ioctl `op`.
pub(super) fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { op, source }
}

/// Checks that this host's KVM and the guest take `config.cpus` vCPUs
/// with APIC ids `cpu * config.apic_stride`.
pub(super) fn check_cpu_limits(kvm: &Kvm, config: &VmConfig) -> Result<()> {
    CpuLimit::host(kvm, config.apic_stride).check(config.cpus)
}

/// Creates the VM: TSS, in-kernel irqchip, the x2APIC API, and `mem` as
/// its memory.
pub(super) fn create_vm(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd> {
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    if !vm.check_extension(Cap::Irqchip) {
        return Err(Error::MissingCapability(
            "an in-kernel irqchip (KVM_CAP_IRQCHIP)",
        ));
    }
    vm.set_tss_address(layout::KVM_TSS.start.0 as usize)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    enable_x2apic_api(&vm)?;
    // SAFETY: the caller keeps `mem` alive until every vCPU thread has
    // been joined and the VM fd is dropped (or leaks both together); slot 0
    // is the VM's only slot.
    unsafe { memory::register(&vm, mem) }?;
    Ok(vm)
}

/// 32-bit x2APIC ids, and no broadcast quirk (APIC id 0xff is a CPU).
fn enable_x2apic_api(vm: &VmFd) -> Result<()> {
    let wanted = u64::from(KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK);
    let have = vm.check_extension_raw(u64::from(KVM_CAP_X2APIC_API));
    if have < 0 || (have as u64) & wanted != wanted {
        return Err(Error::MissingCapability(
            "KVM_CAP_X2APIC_API with 32-bit ids",
        ));
    }
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_X2APIC_API,
        ..Default::default()
    };
    cap.args[0] = wanted;
    vm.enable_cap(&cap)
        .map_err(kvm_err("KVM_ENABLE_CAP(X2APIC_API)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_name_the_problem() {
        let p = Path::new("/dev/kvm");
        let msg = open_error(p, libc::EACCES).to_string();
        assert!(
            msg.contains("permission denied") && msg.contains("/dev/kvm"),
            "{msg}"
        );
        let msg = open_error(p, libc::ENOENT).to_string();
        assert!(msg.contains("not found"), "{msg}");
        assert!(matches!(open_error(p, libc::EIO), Error::KvmOpen { .. }));
    }
}
