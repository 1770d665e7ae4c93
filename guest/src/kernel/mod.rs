//! The kernel proper: boot flow, CPU bring-up, interrupt handlers,
//! scenarios.

pub mod smpboot;
pub mod trap;

use shared::bootinfo::BootInfo;
use shared::layout;
use shared::ports::{PIC1_DATA, PIC2_DATA};
use shared::record::Body;
use shared::status::GuestStatus;
use shared::{ApicId, CpuId, MAX_CPUS};

use crate::arch::x86_64::interrupts::Handlers;
use crate::arch::x86_64::{cpu, percpu, x2apic};
use crate::params::{BootParams, Crash};
use crate::{kprintln, report, time};

/// The interrupt handlers every CPU installs.
pub fn handlers() -> Handlers {
    Handlers {
        exception: trap::exception,
        call_function: ipi_placeholder,
        irq_work: ipi_placeholder,
        host_request: ipi_placeholder,
        bench_ping: ipi_placeholder,
        apic_error,
    }
}

fn ipi_placeholder() {
    percpu::this()
        .ipi_received
        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    x2apic::eoi();
}

fn apic_error() {
    let esr = x2apic::read_error();
    // Relaxed: a statistic.
    percpu::this()
        .apic_errors
        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    x2apic::eoi();
    kprintln!("APIC error {esr:#x}");
}

/// What an idle CPU does: wait for interrupts, forever.
pub fn idle() -> ! {
    loop {
        cpu::sti_hlt();
    }
}

fn boot_info() -> &'static BootInfo {
    // SAFETY: the VMM wrote a BootInfo at this identity-mapped address
    // before the first instruction ran and never changes it; BootInfo is
    // plain integers, so any bytes are a valid value (checked next).
    unsafe { &*(layout::BOOT_INFO.start.0 as *const BootInfo) }
}

fn cmdline(info: &BootInfo) -> &'static str {
    let len = (info.cmdline_len as usize).min(layout::CMDLINE.size as usize);
    // SAFETY: the VMM wrote `len` bytes at the command-line region, which
    // is identity-mapped, never written again, and within bounds (clamped).
    let bytes = unsafe { core::slice::from_raw_parts(layout::CMDLINE.start.0 as *const u8, len) };
    core::str::from_utf8(bytes).unwrap_or("")
}

fn crash(kind: Crash) -> ! {
    kprintln!("crashing on purpose: {kind:?}");
    match kind {
        Crash::InvalidOpcode => {
            // SAFETY: raises #UD, which is the point; the handler never
            // returns here.
            unsafe { core::arch::asm!("ud2") };
        }
        Crash::PageFault => {
            // Far above guest RAM and the identity map: not present.
            let p = 0x40_0000_0000u64 as *const u64;
            // SAFETY: none; this read faults on purpose.
            let _ = unsafe { core::ptr::read_volatile(p) };
        }
        Crash::GeneralProtection => {
            let p = 0x8000_0000_0000_0000u64 as *const u64;
            // SAFETY: none; a non-canonical address faults on purpose.
            let _ = unsafe { core::ptr::read_volatile(p) };
        }
    }
    report::exit(GuestStatus::Crashed)
}

/// The boot CPU's Rust entry.
pub fn kmain() -> ! {
    let info = boot_info();
    let cpu0 = CpuId(0);
    percpu::init_area(cpu0, ApicId(info.apic_ids[0]));
    smpboot::cpu_init(cpu0);
    // Mask the legacy PICs: nothing arrives through ExtINT.
    cpu::outb(PIC1_DATA, 0xff);
    cpu::outb(PIC2_DATA, 0xff);
    if !info.is_valid() {
        kprintln!("bad boot information (magic, protocol version or CPU count); stopping");
        report::exit(GuestStatus::BadRequest);
    }
    time::init(info.tsc_khz);
    let params = BootParams::parse(cmdline(info));
    for w in params.warnings() {
        match w.value {
            Some(v) => kprintln!("warning: {}={}: {}", w.key, v, w.problem),
            None => kprintln!("warning: {}: {}", w.key, w.problem),
        }
    }
    let present = info.cpu_count.min(MAX_CPUS as u32);
    for c in 0..present {
        percpu::init_area(CpuId(c), ApicId(info.apic_ids[c as usize]));
    }
    kprintln!(
        "smpcall guest: {} present CPUs, TSC {} kHz, command line \"{}\"",
        present,
        info.tsc_khz,
        cmdline(info)
    );
    smpboot::set_online(cpu0);
    report::send(Body::CpuOnline {
        apic_id: x2apic::id().0,
    });
    if let Some(kind) = params.crash {
        crash(kind);
    }
    let nr_cpu_ids = params.nr_cpu_ids(present);
    let max_cpus = params.max_cpus.unwrap_or(u32::MAX).max(1);
    smpboot::smp_init(nr_cpu_ids, max_cpus);
    if params.hang {
        kprintln!("hanging on purpose");
        cpu::cli();
        loop {
            cpu::pause();
        }
    }
    report::exit(GuestStatus::Success)
}
