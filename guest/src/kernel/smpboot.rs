//! Bringing CPUs up: `smp_init` (present CPUs up to `maxcpus`), `cpu_up`
//! (prepare the CPU's call data, INIT-SIPI-SIPI through the trampoline,
//! wait with a deadline, cancel on timeout), each AP's own set-up, and
//! `smp_announce`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shared::record::Body;
use shared::vectors::Vector;
use shared::{ApicId, CpuId};

use super::machine::SMP;
use super::{cpu_down, idle};
use crate::arch::x86_64::x2apic::{DeliveryMode, Destination, Icr};
use crate::arch::x86_64::{ap_boot, cpu, gdt, interrupts, percpu, x2apic};
use crate::kprintln;
use crate::report;
use crate::time;

/// How long an AP gets to come online before its bring-up is cancelled
/// (`ap_timeout_ms=`).
static AP_START_TIMEOUT_MS: AtomicU64 = AtomicU64::new(5_000);
/// Test hook (`stuck_ap=`): this CPU never finishes starting (0: none).
static STUCK_AP: AtomicU32 = AtomicU32::new(0);

/// Sets the bring-up timeout and the stuck-AP test hook (boot CPU, before
/// any AP starts).
pub fn configure(timeout_ms: u64, stuck_ap: Option<u32>) {
    // Relaxed: set before any AP is started; the start orders it.
    AP_START_TIMEOUT_MS.store(timeout_ms, Ordering::Relaxed);
    STUCK_AP.store(stuck_ap.unwrap_or(0), Ordering::Relaxed);
}

/// Set-up every CPU does for itself: per-CPU area, GDT/TSS, IDT (the
/// handlers are installed once, at boot), x2APIC.
pub fn cpu_init(cpu: CpuId) {
    cpu::enable_write_protect();
    percpu::install(cpu);
    gdt::init(cpu);
    interrupts::load();
    x2apic::enable();
}

extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = CpuId(cpu as u32);
    // Relaxed: see `configure`.
    if cpu.0 != 0 && STUCK_AP.load(Ordering::Relaxed) == cpu.0 {
        // Test hook: a CPU that starts but never comes online.
        loop {
            cpu::pause();
        }
    }
    cpu_init(cpu);
    let apic_id = x2apic::id();
    if apic_id != percpu::area(cpu).apic_id() {
        kprintln!(
            "APIC id {} but CPU {} should have {}",
            apic_id,
            cpu,
            percpu::area(cpu).apic_id()
        );
    }
    cpu_down::starting(cpu);
    // Calls queued to this CPU while it was offline (a sender that raced
    // with its going down) run now; the flush reports them as sent to an
    // offline CPU, with their callbacks.
    SMP.run_pending_calls();
    // Report before marking online: once online, the boot CPU may finish
    // and end the VM before a later report would get out.
    report::send(Body::CpuOnline { apic_id });
    // Interrupts are still off: nothing runs here before the CPU is
    // online, and the flag is published with release semantics.
    let _ = SMP.set_cpu_online(cpu, true);
    idle::idle()
}

/// Why a CPU did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpError {
    /// Not a present, possible CPU below `nr_cpu_ids`.
    NoSuchCpu,
    /// Already online.
    AlreadyOnline,
    /// Preparing its call data failed (`-ENOMEM`).
    PrepareFailed,
    /// It did not come online in time (CPU_UP_CANCELED).
    Timeout,
}

/// Brings `cpu` up: prepare its call data, start it, wait until it is
/// online. On failure everything prepared is undone (the up-canceled path).
pub fn cpu_up(cpu: CpuId) -> Result<(), UpError> {
    if cpu.0 >= SMP.nr_cpu_ids() || !SMP.cpu_present(cpu) || !SMP.cpu_possible(cpu) {
        return Err(UpError::NoSuchCpu);
    }
    if SMP.cpu_online(cpu) {
        return Err(UpError::AlreadyOnline);
    }
    if SMP.smpcfd_prepare_cpu(cpu).is_err() {
        kprintln!(
            "CPU {}: preparing its call data failed; bring-up cancelled",
            cpu
        );
        return Err(UpError::PrepareFailed);
    }
    let apic_id: ApicId = percpu::area(cpu).apic_id();
    if !ap_boot::start(cpu, apic_id, ap_entry) {
        let _ = SMP.smpcfd_dead_cpu(cpu);
        return Err(UpError::NoSuchCpu);
    }
    // Relaxed: see `configure`.
    let timeout = time::scaled_ms(AP_START_TIMEOUT_MS.load(Ordering::Relaxed));
    if time::spin_until(timeout, || SMP.cpu_online(cpu)) {
        return Ok(());
    }
    // CPU_UP_CANCELED: put the CPU back into wait-for-SIPI (INIT stops
    // whatever it is executing) and release its call data.
    x2apic::send(Icr {
        vector: Vector(0),
        mode: DeliveryMode::Init,
        dest: Destination::Physical(apic_id),
    });
    let _ = SMP.smpcfd_dead_cpu(cpu);
    kprintln!(
        "CPU {} (APIC id {}) did not come online within {} ms; bring-up cancelled",
        cpu,
        apic_id,
        timeout
    );
    Err(UpError::Timeout)
}

/// Brings up present CPUs until `setup_max_cpus` are online, then
/// announces (the seed's `smp_init`).
pub fn smp_init() {
    ap_boot::install_trampoline();
    for cpu in SMP.present_mask().iter() {
        if SMP.num_online_cpus() >= SMP.setup_max_cpus() {
            break;
        }
        if !SMP.cpu_online(cpu) && cpu.0 < SMP.nr_cpu_ids() {
            let _ = cpu_up(cpu);
        }
    }
    smp_announce();
}

/// The seed's announcement.
pub fn smp_announce() {
    kprintln!("Brought up {} CPUs", SMP.num_online_cpus());
}
