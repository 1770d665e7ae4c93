//! The kernel proper: boot flow ([`boot`]), the machine's smp state
//! (`machine`), CPU bring-up (`smpboot`), taking CPUs down (`cpu_down`),
//! the idle loop, the host mailbox and its requests, the IPI delivery-mode
//! set-up, statistics, interrupt and exception handlers. The scenarios run
//! on top of it (`crate::scenarios`); nothing here knows them.

pub mod cpu_down;
pub mod host_requests;
pub mod idle;
pub mod ipi_modes;
pub mod irq;
pub mod machine;
pub mod mailbox;
pub mod mem;
pub mod smpboot;
pub mod stats;
pub mod trap;

pub use idle::idle;
pub use machine::{SMP, ipi};

use core::sync::atomic::Ordering;

use shared::bootinfo::{BootInfo, CpuEntry};
use shared::layout;
use shared::ports::{PIC1_DATA, PIC2_DATA};
use shared::record::Body;
use shared::status::GuestStatus;
use shared::{ApicId, CpuId, MAX_CPUS};

use crate::arch::x86_64::{cpu, interrupts, percpu, x2apic};
use crate::params::{BootParams, Crash};
use crate::smp::{CSD_LOCK_TIMEOUT_DEFAULT_NS, set_nr_cpumask_bits};
use crate::{kprintln, report, time};

fn boot_info() -> &'static BootInfo {
    // SAFETY: the VMM wrote a BootInfo at this identity-mapped address
    // before the first instruction ran and never changes it; BootInfo is
    // plain integers, so any bytes are a valid value (checked next).
    unsafe { &*(layout::BOOT_INFO.start.0 as *const BootInfo) }
}

/// The per-CPU table of a valid boot information block.
fn cpu_table(info: &BootInfo) -> &'static [CpuEntry] {
    let Some(region) = info.cpu_table_region() else {
        return &[];
    };
    // SAFETY: `cpu_table_region` checked that `cpu_count` aligned entries
    // lie inside the identity-mapped CPU_TABLE region, which the VMM wrote
    // before the first instruction ran and never changes; CpuEntry is
    // plain integers, valid for any bytes.
    unsafe {
        core::slice::from_raw_parts(region.start.0 as *const CpuEntry, info.cpu_count as usize)
    }
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
        Crash::PerCpuWrite => {
            // The last CPU number's area: read-only zero page unless all
            // MAX_CPUS CPUs exist.
            let last = CpuId(MAX_CPUS as u32 - 1);
            // Relaxed: this store faults on purpose.
            percpu::area(last).host_requests.store(1, Ordering::Relaxed);
            kprintln!("CPU {last} has a per-CPU slot of its own: nothing faulted");
        }
        Crash::GeneralProtection => {
            let p = 0x8000_0000_0000_0000u64 as *const u64;
            // SAFETY: none; a non-canonical address faults on purpose.
            let _ = unsafe { core::ptr::read_volatile(p) };
        }
    }
    report::exit(GuestStatus::Crashed)
}

/// What boot found, for the scenario that runs next.
pub struct Boot {
    /// The boot information the VMM wrote.
    pub info: &'static BootInfo,
    /// The parsed command line.
    pub params: BootParams<'static>,
    /// The present CPUs.
    pub present: u32,
}

impl Boot {
    /// The raw command line.
    pub fn cmdline(&self) -> &'static str {
        cmdline(self.info)
    }
}

/// The boot CPU's Rust entry: sets up the machine, brings up the CPUs and
/// returns what the scenario needs (with interrupts enabled and the host
/// mailbox ready).
pub fn boot() -> Boot {
    let info = boot_info();
    let cpu0 = CpuId(0);
    let table = cpu_table(info);
    // Per-CPU data for the CPUs that exist (one for an invalid block,
    // which is stopped on below).
    let present = if info.is_valid() {
        info.cpu_count.min(MAX_CPUS as u32)
    } else {
        1
    };
    mem::init(info);
    if let Err(e) = mem::alloc_percpu(present) {
        kprintln!(
            "out of memory for the per-CPU data of {} CPUs: {} more bytes needed, {} left above the kernel (--mem {} MiB is too small)",
            present,
            e.need,
            e.left,
            info.mem_size >> 20
        );
        report::exit(GuestStatus::BadRequest);
    }
    // An invalid block has no table: 0 will do.
    percpu::init_area(cpu0, ApicId(table.first().map_or(0, |e| e.apic_id)));
    interrupts::install(irq::handlers());
    smpboot::cpu_init(cpu0);
    // Mask the legacy PICs: nothing arrives through ExtINT.
    cpu::outb(PIC1_DATA, 0xff);
    cpu::outb(PIC2_DATA, 0xff);
    if !info.is_valid() {
        kprintln!("bad boot information (magic, protocol version or CPU count); stopping");
        report::exit(GuestStatus::BadRequest);
    }
    time::init(info.tsc_khz);
    #[cfg(feature = "trace")]
    if let Some((base, ring_bytes)) = info.trace_rings() {
        crate::arch::x86_64::trace::init(base, ring_bytes);
        kprintln!("tracing: {} KiB per CPU at {:#x}", ring_bytes / 1024, base);
    }
    let params = BootParams::parse(cmdline(info));
    for w in params.warnings() {
        match w.value {
            Some(v) => kprintln!("warning: {}={}: {}", w.key, v, w.problem),
            None => kprintln!("warning: {}: {}", w.key, w.problem),
        }
    }
    for c in 0..present {
        let cpu = CpuId(c);
        let entry = table.get(c as usize).copied().unwrap_or_default();
        percpu::init_area(cpu, ApicId(entry.apic_id));
        SMP.set_cpu_node(cpu, entry.numa_node);
        // nosmp / maxcpus=0: only the boot CPU exists (x86's disable_smp).
        if c == 0 || !params.smp_disabled {
            let _ = SMP.set_cpu_present(cpu, true);
            let _ = SMP.set_cpu_possible(cpu, true);
        }
    }
    let wait_scale = time::calibrate_waits(present);
    SMP.setup_nr_cpu_ids();
    if let Some(n) = params.nr_cpus {
        SMP.apply_nr_cpus_param(n);
    }
    // CPUs at or above nr_cpu_ids are not possible at all.
    for c in SMP.nr_cpu_ids()..present {
        let _ = SMP.set_cpu_present(CpuId(c), false);
        let _ = SMP.set_cpu_possible(CpuId(c), false);
    }
    // Mask walks stop at nr_cpu_ids from now on (no mask holds a CPU above).
    set_nr_cpumask_bits(SMP.nr_cpu_ids());
    SMP.set_setup_max_cpus(params.max_cpus.unwrap_or(MAX_CPUS as u32));
    smpboot::configure(params.ap_timeout_ms, params.stuck_ap);
    if let Some(cpu) = params.fail_prepare {
        SMP.set_cfd_alloc_fail(CpuId(cpu), true);
    }
    // The stall timeout is a wait for another CPU too: scaled unless set.
    let csd_timeout_ns = match params.csd_lock_timeout_ms {
        Some(ms) => ms.saturating_mul(1_000_000),
        None => CSD_LOCK_TIMEOUT_DEFAULT_NS.saturating_mul(wait_scale),
    };
    SMP.set_csd_lock_timeout_ns(csd_timeout_ns);
    if let Some(permille) = params.ipi_drop_permille {
        kprintln!(
            "fault injection: dropping {permille} per mille of call-function IPIs (ipi_drop=)"
        );
        ipi().set_drop_permille(permille);
    }
    kprintln!(
        "smpcall guest: {} present CPUs, nr_cpu_ids {}, TSC {} kHz, waits x{}, command line \"{}\"",
        present,
        SMP.nr_cpu_ids(),
        info.tsc_khz,
        wait_scale,
        cmdline(info)
    );
    ipi_modes::setup(&params, present);
    if SMP.call_function_init().is_err() {
        kprintln!("call_function_init failed");
        report::exit(GuestStatus::Crashed);
    }
    report::send(Body::CpuOnline {
        apic_id: x2apic::id(),
    });
    let _ = SMP.set_cpu_online(cpu0, true);
    if let Some(kind) = params.crash {
        crash(kind);
    }
    smpboot::smp_init();
    cpu::sti();
    mailbox::set_ready();
    if params.hang {
        kprintln!("hanging on purpose");
        cpu::cli();
        loop {
            cpu::pause();
        }
    }
    Boot {
        info,
        params,
        present,
    }
}
