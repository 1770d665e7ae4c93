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
use super::{EMBEDDED_GUEST, EMBEDDED_GUEST_TRACED, KVM_DEVICE, Vm, boot_info};
use crate::config::{Kernel, VmConfig};
use crate::elf::{self, KernelImage};
use crate::error::{Error, Result};
use crate::{api, cpuid, kick, memory, regs, trace_rings};

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
        let traced = trace_rings::ring_bytes(config)?.is_some();
        let kernel = read_kernel(config, traced)?;
        let mem_size = limits::mem_size(config, kernel.image.end)?;
        // The rings go above what the guest needs (`--mem` included).
        let (trace, mem_size_all) = trace_rings::place(config, mem_size)?;
        let kvm = open_kvm(&self.kvm_device)?;
        let apic_ids = apic_ids(config.cpus, config.apic_stride);
        kick::install()?;
        let listener = bind_api(config.api_sock.as_deref())?;
        let started = Instant::now();
        let mem = Arc::new(memory::create(mem_size_all)?);
        let vm = Arc::new(create_vm(&kvm, &mem)?);
        let drop_ipi = crate::fault::setup_vm(&kvm, &vm, &config.faults);
        load_kernel(&mem, &kernel)?;
        memory::write_page_tables(&mem)?;
        memory::write_boot_gdt(&mem)?;
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let (vcpus, tsc_khz) = create_vcpus(&vm, &apic_ids, &supported)?;
        // Before any vCPU runs: the guest TSC and CLOCK_BOOTTIME together.
        let clock = crate::trace::clock::Calibration::read(&vcpus[0], tsc_khz);
        boot_info::write(&mem, config, &apic_ids, tsc_khz, &supported, trace)?;
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
            trace,
            symbols: Arc::new(symbols(&kernel)),
            clock,
        })
    }
}

/// The APIC id of each CPU number. Kept distinct from the CPU number when
/// `stride > 1`, so that any confusion of the two ids shows up in tests.
pub fn apic_ids(cpus: u32, stride: u32) -> Vec<ApicId> {
    (0..cpus).map(|c| ApicId(c * stride)).collect()
}

/// The kernel's function symbols (none, with one warning, if its symbol
/// table cannot be read: reports then print addresses).
fn symbols(kernel: &GuestKernel) -> crate::symbols::Symbols {
    crate::symbols::Symbols::from_elf(&kernel.bytes).unwrap_or_else(|e| {
        log::warn!("{}: {e}", kernel.path.display());
        crate::symbols::Symbols::default()
    })
}

/// The guest kernel; the embedded one with its trace points if `traced`.
fn read_kernel(config: &VmConfig, traced: bool) -> Result<GuestKernel> {
    let (bytes, path) = match &config.kernel {
        Kernel::Embedded if traced => (
            Cow::Borrowed(EMBEDDED_GUEST_TRACED),
            PathBuf::from("<embedded, traced>"),
        ),
        Kernel::Embedded => (Cow::Borrowed(EMBEDDED_GUEST), PathBuf::from("<embedded>")),
        Kernel::Path(p) => {
            // The guest's memory bounds the file (the default: what the CPUs need).
            let limit = config
                .mem_mib
                .map_or(shared::sizing::default_mem(config.cpus), |m| m << 20);
            let bytes = read_kernel_file(p, limit)?;
            (Cow::Owned(bytes), p.clone())
        }
    };
    let image = elf::check(&bytes).map_err(|reason| Error::KernelInvalid {
        path: path.clone(),
        reason,
    })?;
    Ok(GuestKernel { bytes, path, image })
}

/// What a file that is not regular is, for the error.
fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads the `--kernel` file, at most `limit` bytes (guest memory): only a
/// regular file, checked before it is opened (a FIFO would block the open,
/// a device would never end) and again on the opened descriptor (the path
/// may have changed in between); opened non-blocking; its size checked
/// before reading and the read bounded, in case the file grows.
fn read_kernel_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let read_err = |source| Error::KernelRead {
        path: path.to_path_buf(),
        source,
    };
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(Error::KernelNotRegular {
                path: path.to_path_buf(),
                kind: file_kind(meta.file_type()),
            });
        }
        if meta.len() > limit {
            return Err(Error::KernelTooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                limit,
            });
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(read_err)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check(&meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(Error::KernelTooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
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

/// Creates the vCPUs, each set up before the next is created: its CPUID
/// and, for an AP, its x2APIC preset (`regs::preset_ap_x2apic`). KVM
/// rebuilds its APIC map over the vCPUs that exist at every APIC base
/// change, so presetting each as it is created costs half of presetting
/// all of them afterwards. Returns them with the TSC frequency (kHz, 0 if
/// KVM does not say), read from the first.
fn create_vcpus(vm: &VmFd, apic_ids: &[ApicId], supported: &CpuId) -> Result<(Vec<VcpuFd>, u32)> {
    let count = apic_ids.len() as u32;
    let mut vcpus = Vec::with_capacity(apic_ids.len());
    let mut tsc_khz = 0;
    for (cpu, id) in apic_ids.iter().enumerate() {
        let cpu = cpu as u32;
        let err = |op| move |source| Error::Vcpu { cpu, op, source };
        let vcpu = vm
            .create_vcpu(u64::from(id.0))
            .map_err(err("KVM_CREATE_VCPU"))?;
        if cpu == 0 {
            tsc_khz = vcpu.get_tsc_khz().unwrap_or(0);
        }
        let c = cpuid::for_vcpu(supported, *id, count, tsc_khz);
        vcpu.set_cpuid2(&c).map_err(err("KVM_SET_CPUID2"))?;
        if cpu > 0 {
            regs::preset_ap_x2apic(&vcpu, cpu)?;
        }
        vcpus.push(vcpu);
    }
    Ok((vcpus, tsc_khz))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_error(path: &Path, limit: u64) -> String {
        match read_kernel_file(path, limit) {
            Ok(b) => panic!("{} read: {} bytes", path.display(), b.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn kernel_files_are_regular_and_bounded() {
        let dir = std::env::temp_dir().join(format!("vmm-kernel-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A device is refused before it is read (/dev/zero never ends).
        let e = kernel_error(Path::new("/dev/zero"), 1 << 20);
        assert!(e.contains("not a regular file (a character device)"), "{e}");
        let e = kernel_error(&dir, 1 << 20);
        assert!(e.contains("not a regular file (a directory)"), "{e}");
        // A FIFO with no writer: opening it blocking would hang here.
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = kernel_error(&fifo, 1 << 20);
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
        // A sparse file larger than guest memory is refused by its size,
        // without reading it.
        let big = dir.join("sparse");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(20 << 30).unwrap();
        let e = kernel_error(&big, 64 << 20);
        assert!(
            e.contains("21474836480 bytes is larger than guest memory (67108864 bytes"),
            "{e}"
        );
        // One byte over the limit is refused; at the limit it is read.
        f.set_len(4097).unwrap();
        assert!(kernel_error(&big, 4096).contains("4097 bytes is larger"));
        assert_eq!(read_kernel_file(&big, 4097).unwrap().len(), 4097);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn apic_ids_follow_the_stride() {
        assert_eq!(apic_ids(3, 1), [ApicId(0), ApicId(1), ApicId(2)]);
        assert_eq!(apic_ids(3, 4), [ApicId(0), ApicId(4), ApicId(8)]);
    }
}
