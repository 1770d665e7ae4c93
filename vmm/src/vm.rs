//! Builds a VM from a [`VmConfig`] and runs it to an [`Outcome`].

use std::borrow::Cow;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_API_VERSION, KVM_CAP_X2APIC_API, KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
    KVM_X2APIC_API_USE_32BIT_IDS, kvm_enable_cap,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::Elf;
use shared::ApicId;
use shared::bootinfo::{BootInfo, FEATURE_PV_SEND_IPI};
use shared::layout;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::signal::Killable;

use crate::config::{Kernel, VmConfig};
use crate::error::{Error, Result};
use crate::io::GuestIo;
use crate::outcome::{Ending, Outcome};
use crate::vcpu::{self, Control};
use crate::{api, cpuid, elf, hotplug, kick, mailbox, memory, regs};

/// The guest built with this vmm.
pub static EMBEDDED_GUEST: &[u8] = include_bytes!(env!("GUEST_ELF"));

/// Path of the KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// How long vCPU threads get to leave `KVM_RUN` after the end.
const JOIN_GRACE: Duration = Duration::from_secs(5);

/// Room the guest needs beyond its image (its own allocations, headroom).
const MEM_HEADROOM: u64 = 2 << 20;

/// The error for a failed open of the KVM device, by errno.
pub fn open_error(path: &std::path::Path, errno: i32) -> Error {
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
pub fn open_kvm(path: &std::path::Path) -> Result<Kvm> {
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

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { op, source }
}

fn load_kernel(config: &VmConfig) -> Result<(Cow<'static, [u8]>, PathBuf)> {
    match &config.kernel {
        Kernel::Embedded => Ok((Cow::Borrowed(EMBEDDED_GUEST), PathBuf::from("<embedded>"))),
        Kernel::Path(p) => {
            let bytes = std::fs::read(p).map_err(|source| Error::KernelRead {
                path: p.clone(),
                source,
            })?;
            Ok((Cow::Owned(bytes), p.clone()))
        }
    }
}

/// The APIC id of each CPU number. Kept distinct from the CPU number when
/// `stride > 1`, so that any confusion of the two ids shows up in tests.
pub fn apic_ids(cpus: u32, stride: u32) -> Vec<ApicId> {
    (0..cpus).map(|c| ApicId(c * stride)).collect()
}

fn setup_vm(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd> {
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
        .map_err(kvm_err("KVM_ENABLE_CAP(X2APIC_API)"))?;

    // SAFETY: the caller keeps `mem` alive until every vCPU thread has
    // been joined and the VM fd is dropped (or leaks both together); slot 0
    // is the VM's only slot.
    unsafe { memory::register(&vm, mem) }?;
    Ok(vm)
}

/// Boots the VM described by `config` and runs it to the end.
pub fn run(config: &VmConfig) -> Result<Outcome> {
    run_with_device(config, std::path::Path::new(KVM_DEVICE))
}

/// [`run`] with another KVM device path (for tests of the error paths).
pub fn run_with_device(config: &VmConfig, kvm_path: &std::path::Path) -> Result<Outcome> {
    config.validate()?;
    let (kernel, kernel_path) = load_kernel(config)?;
    let image = elf::check(&kernel).map_err(|reason| Error::KernelInvalid {
        path: kernel_path.clone(),
        reason,
    })?;
    let mem_size = config.mem_mib << 20;
    let min = image.end.saturating_add(MEM_HEADROOM).div_ceil(1 << 20) << 20;
    if mem_size < min {
        return Err(Error::MemTooSmall {
            mib: config.mem_mib,
            min_mib: min >> 20,
        });
    }

    let kvm = open_kvm(kvm_path)?;
    let max_vcpus = kvm.get_max_vcpus() as u32;
    if config.cpus > max_vcpus {
        return Err(Error::TooManyCpus {
            requested: config.cpus,
            limit: max_vcpus,
            why: "this host's KVM_CAP_MAX_VCPUS",
        });
    }
    let ids = apic_ids(config.cpus, config.apic_stride);
    let max_id = kvm.get_max_vcpu_id() as u32;
    if ids.last().is_some_and(|id| id.0 >= max_id) {
        return Err(Error::TooManyCpus {
            requested: config.cpus,
            limit: max_id / config.apic_stride,
            why: "this host's KVM_CAP_MAX_VCPU_ID with this APIC id stride",
        });
    }
    kick::install()?;

    let listener = match &config.api_sock {
        Some(path) => Some(api::bind(path).map_err(|source| Error::ApiSocket {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let started = Instant::now();
    let mem = Arc::new(memory::create(mem_size)?);
    let vm = Arc::new(setup_vm(&kvm, &mem)?);
    let (drop_ipi, drop_skipped) = match crate::fault::setup_vm(&kvm, &vm, &config.faults) {
        Ok(p) => (p, None),
        Err(why) => (None, Some(why)),
    };
    Elf::load(
        &*mem,
        None,
        &mut Cursor::new(&kernel[..]),
        Some(GuestAddress(layout::KERNEL.0)),
    )
    .map_err(|e| Error::KernelInvalid {
        path: kernel_path,
        reason: format!("loading failed: {e}"),
    })?;
    memory::write_page_tables(&mem)?;
    memory::write_boot_gdt(&mem)?;

    let supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus: Vec<VcpuFd> = Vec::with_capacity(ids.len());
    for (cpu, id) in ids.iter().enumerate() {
        let vcpu = vm
            .create_vcpu(u64::from(id.0))
            .map_err(|source| Error::Vcpu {
                cpu: cpu as u32,
                op: "KVM_CREATE_VCPU",
                source,
            })?;
        vcpus.push(vcpu);
    }
    let tsc_khz = vcpus[0].get_tsc_khz().unwrap_or(0);
    for (cpu, (vcpu, id)) in vcpus.iter().zip(&ids).enumerate() {
        let c = cpuid::for_vcpu(&supported, *id, config.cpus, tsc_khz);
        vcpu.set_cpuid2(&c).map_err(|source| Error::Vcpu {
            cpu: cpu as u32,
            op: "KVM_SET_CPUID2",
            source,
        })?;
    }

    let mut info = BootInfo::new();
    info.tsc_khz = u64::from(tsc_khz);
    info.mem_size = mem_size;
    info.cpu_count = config.cpus;
    let cmdline = config.guest_cmdline();
    info.cmdline_len = cmdline.len() as u32;
    info.scenario = config.scenario as u32;
    if cpuid::has_pv_send_ipi(&supported) {
        info.features |= FEATURE_PV_SEND_IPI;
    }
    info.features |= crate::host::emulated_feature_bit();
    for (cpu, id) in ids.iter().enumerate() {
        info.apic_ids[cpu] = id.0;
        info.numa_node[cpu] = config.numa.get(cpu).copied().unwrap_or(0);
    }
    memory::write_boot_info(&mem, &info, &cmdline)?;
    regs::setup_bsp(&vcpus[0], image.entry, layout::BOOT_INFO.start.0)?;

    // KVM's own counters of every vCPU, for the benchmark's markers.
    let stats = vcpus
        .iter()
        .map(crate::kvm_stats::VcpuStats::open)
        .collect();
    let bench = Arc::new(crate::bench::Collector::new(stats, vcpus.len()));
    let io = Arc::new(
        GuestIo::new(mem.clone(), config.cpus, config.echo_console).with_bench(bench.clone()),
    );
    let ctl = Arc::new(Control::default());
    let injector = Arc::new(crate::fault::Injector::new(
        started,
        vm.clone(),
        ids.clone(),
        drop_ipi,
    ));
    if let Some(why) = drop_skipped {
        injector.skip(why);
    }
    ctl.set_faults(injector.clone());
    let mut threads = Vec::with_capacity(vcpus.len());
    let host_cpus = if config.pin {
        crate::bench::pin::allowed_cpus()
    } else {
        Vec::new()
    };
    for (cpu, vcpu) in vcpus.into_iter().enumerate() {
        let (io, ctl2) = (io.clone(), ctl.clone());
        let pin = crate::bench::pin::host_cpu_for(cpu as u32, &host_cpus);
        let bench = bench.clone();
        let t = std::thread::Builder::new()
            .name(format!("vcpu{cpu}"))
            .spawn(move || {
                if let Some(host_cpu) = pin {
                    match crate::bench::pin::pin_current_thread(host_cpu) {
                        Ok(()) => bench.set_pinning(cpu as u32, Some(host_cpu)),
                        Err(e) => log::warn!("vCPU {cpu}: cannot pin to host CPU {host_cpu}: {e}"),
                    }
                }
                vcpu::run(cpu as u32, vcpu, io, ctl2)
            });
        match t {
            Ok(t) => threads.push(t),
            Err(source) => {
                ctl.finish(Ending::Timeout(Duration::ZERO), false);
                stop_threads(threads);
                return Err(Error::Thread {
                    cpu: cpu as u32,
                    source,
                });
            }
        }
    }

    let fault_thread = crate::fault::spawn(
        crate::fault::Plan {
            faults: config.faults.clone(),
            default_at: config
                .duration
                .map_or(Duration::from_millis(200), |d| d / 3),
            threads: threads
                .iter()
                .map(std::os::unix::thread::JoinHandleExt::as_pthread_t)
                .collect(),
        },
        injector.clone(),
        mem.clone(),
        {
            let ctl = ctl.clone();
            Box::new(move || ctl.stopped())
        },
    );
    let handler = ids[shared::mailbox::HANDLER_CPU as usize];
    let channel = Arc::new(mailbox::Channel::new(mem.clone(), vm.clone(), handler, {
        let ctl = ctl.clone();
        Box::new(move || ctl.stopped())
    }));
    let mut helpers = Vec::new();
    let hotplug_events = Arc::new(std::sync::Mutex::new(Vec::new()));
    if !config.hotplug.is_empty() || config.hotplug_churn.is_some() {
        let (ch, c, ev) = (channel.clone(), ctl.clone(), hotplug_events.clone());
        let (steps, churn, cpus) = (config.hotplug.clone(), config.hotplug_churn, config.cpus);
        let finish = config.scenario == shared::Scenario::Wait;
        helpers.push(std::thread::spawn(move || {
            let stopped = || c.stopped();
            let mut events = hotplug::run_schedule(&ch, &steps, started, &stopped);
            if let Some(period) = churn {
                events.extend(hotplug::churn(&ch, cpus, period, started, &stopped));
            } else if finish && !stopped() {
                let _ = ch.request(shared::mailbox::Op::Finish, 0, hotplug::REQUEST_TIMEOUT);
            }
            *ev.lock().unwrap_or_else(|p| p.into_inner()) = events;
        }));
    }
    if let Some(listener) = listener {
        let (ch, c, cpus) = (channel.clone(), ctl.clone(), config.cpus);
        helpers.push(std::thread::spawn(move || {
            api::serve(listener, &ch, cpus, &|| c.stopped());
        }));
    }

    let ending = match ctl.wait(config.timeout) {
        Some(e) => e,
        None => {
            ctl.finish(Ending::Timeout(config.timeout), true);
            ctl.ending().unwrap_or(Ending::Timeout(config.timeout))
        }
    };
    // The fault thread kicks vCPU threads: it must end before they do.
    if let Some(t) = fault_thread {
        let _ = t.join();
    }
    let stuck = stop_threads(threads);
    // They see `stopped()` within a request or an answer's write timeout.
    let stuck_helpers = join_by(helpers, Instant::now() + JOIN_GRACE, false);
    if let Some(path) = &config.api_sock {
        let _ = std::fs::remove_file(path);
    }
    let hotplug = std::mem::take(&mut *hotplug_events.lock().unwrap_or_else(|p| p.into_inner()));
    let (console, records, mut protocol_errors) = io.take();
    if stuck > 0 {
        protocol_errors.push(format!("{stuck} vCPU threads did not stop"));
    }
    if stuck_helpers > 0 {
        protocol_errors.push(format!(
            "{stuck_helpers} helper threads (hotplug, control socket) did not stop"
        ));
    }
    let outcome = Outcome {
        ending,
        console,
        records,
        protocol_errors,
        dumps: ctl.take_dumps(),
        elapsed: started.elapsed(),
        hotplug,
        faults: injector.report(),
        bench: bench.take(),
    };
    drop(channel);
    if stuck > 0 {
        // A thread may still be inside KVM_RUN: keep its VM and memory.
        std::mem::forget(vm);
        std::mem::forget(mem);
    }
    Ok(outcome)
}

/// Kicks every vCPU thread until it leaves `KVM_RUN` and joins it; returns
/// how many did not stop within the grace period (those are left running
/// detached, and the process is expected to exit).
fn stop_threads(threads: Vec<std::thread::JoinHandle<()>>) -> usize {
    join_by(threads, Instant::now() + JOIN_GRACE, true)
}

/// Joins `threads` as they finish until `deadline`, kicking them out of
/// `KVM_RUN` first if `kick`; returns how many are still running (left
/// detached).
fn join_by(mut threads: Vec<std::thread::JoinHandle<()>>, deadline: Instant, kick: bool) -> usize {
    while !threads.is_empty() && Instant::now() < deadline {
        if kick {
            for t in &threads {
                let _ = t.kill(kick::kick_signal());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
        let (done, live): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
        for t in done {
            let _ = t.join();
        }
        threads = live;
    }
    threads.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_name_the_problem() {
        let p = std::path::Path::new("/dev/kvm");
        let msg = open_error(p, libc::EACCES).to_string();
        assert!(
            msg.contains("permission denied") && msg.contains("/dev/kvm"),
            "{msg}"
        );
        let msg = open_error(p, libc::ENOENT).to_string();
        assert!(msg.contains("not found"), "{msg}");
        assert!(matches!(open_error(p, libc::EIO), Error::KvmOpen { .. }));
    }

    #[test]
    fn apic_ids_follow_the_stride() {
        assert_eq!(apic_ids(3, 1), [ApicId(0), ApicId(1), ApicId(2)]);
        assert_eq!(apic_ids(3, 4), [ApicId(0), ApicId(4), ApicId(8)]);
    }
}
