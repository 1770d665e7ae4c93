//! Bringing CPUs up: `smp_init` (present CPUs up to `maxcpus`), `cpu_up`
//! with INIT-SIPI-SIPI through the trampoline, each AP's own set-up, and
//! `smp_announce`.

use core::sync::atomic::{AtomicU64, Ordering};

use shared::record::Body;
use shared::{ApicId, CpuId};

use crate::arch::x86_64::{ap_boot, cpu, gdt, interrupts, percpu, x2apic};
use crate::kprintln;
use crate::report;
use crate::time;

/// How long an AP gets to come online before its bring-up is cancelled.
const AP_START_TIMEOUT_MS: u64 = 5_000;

static ONLINE: AtomicU64 = AtomicU64::new(0);

/// Whether `cpu` is online.
pub fn cpu_online(cpu: CpuId) -> bool {
    cpu.0 < 64 && ONLINE.load(Ordering::Acquire) & (1 << cpu.0) != 0
}

/// Marks `cpu` online. Release: pairs with the Acquire in `cpu_online`,
/// so the waiter sees everything the AP set up before it.
pub fn set_online(cpu: CpuId) {
    ONLINE.fetch_or(1 << cpu.0, Ordering::Release);
}

/// Number of online CPUs.
pub fn num_online_cpus() -> u32 {
    ONLINE.load(Ordering::Acquire).count_ones()
}

/// Set-up every CPU does for itself: per-CPU area, GDT/TSS, IDT, x2APIC.
pub fn cpu_init(cpu: CpuId) {
    percpu::install(cpu);
    gdt::init(cpu);
    interrupts::init(super::handlers());
    x2apic::enable();
}

extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = CpuId(cpu as u32);
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
    // Report before marking online: once online, the boot CPU may finish
    // and end the VM before a later report would get out.
    report::send(Body::CpuOnline { apic_id: apic_id.0 });
    set_online(cpu);
    super::idle()
}

/// Starts `cpu` and waits until it is online. Returns false (the
/// CPU_UP_CANCELED path) if it does not come up in time.
pub fn cpu_up(cpu: CpuId) -> bool {
    let apic_id: ApicId = percpu::area(cpu).apic_id();
    ap_boot::start(cpu, apic_id, ap_entry);
    if time::spin_until(AP_START_TIMEOUT_MS, || cpu_online(cpu)) {
        return true;
    }
    kprintln!(
        "CPU {} (APIC id {}) did not come online within {} ms; bring-up cancelled",
        cpu,
        apic_id,
        AP_START_TIMEOUT_MS
    );
    false
}

/// Brings up present CPUs until `max_cpus` are online, then announces.
pub fn smp_init(present: u32, max_cpus: u32) {
    ap_boot::install_trampoline();
    for c in 1..present {
        if num_online_cpus() >= max_cpus {
            break;
        }
        let cpu = CpuId(c);
        if !cpu_online(cpu) {
            cpu_up(cpu);
        }
    }
    smp_announce();
    let _ = cpu::rflags();
}

/// The seed's announcement.
pub fn smp_announce() {
    kprintln!("Brought up {} CPUs", num_online_cpus());
}
