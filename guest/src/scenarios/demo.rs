//! The default scenario: a short tour of the API. Each kind of call once,
//! a line from every CPU that ran it, then per-CPU IPI counts. On a machine
//! of more than [`LINES_CPUS`] CPUs, only CPUs below that number print
//! their lines and table rows (one console line is one VM exit; a thousand
//! CPUs' lines would take longer than the calls): the others count, and
//! the table sums them in one row.

use core::sync::atomic::{AtomicU32, Ordering};

use shared::CpuId;
use shared::status::GuestStatus;

use crate::arch::x86_64::percpu;
use crate::kernel::{SMP, stats};
use crate::kprintln;
use crate::scenarios::percpu::PerCpu;
use crate::smp::{CpuList, CpuMask, Csd, IrqWork};

/// The demo's own callbacks (`say`) that ran, per CPU: local runs
/// included, the core's internal ones (kick_all_cpus_sync's empty
/// function) not. The summary line is their sum, the table shows each.
static RAN: PerCpu<AtomicU32> = PerCpu::new();

/// CPUs that print their own lines (see the module docs).
const LINES_CPUS: u32 = 64;

/// Whether `cpu` prints its lines (see the module docs).
fn prints(cpu: CpuId) -> bool {
    cpu.0 < LINES_CPUS || SMP.num_online_cpus() <= LINES_CPUS
}

fn ran_on(cpu: CpuId) -> u32 {
    // Relaxed: read after the waiting calls returned and the async ones
    // were seen done.
    RAN.get(cpu).map_or(0, |c| c.load(Ordering::Relaxed))
}

/// A callback that says where it runs. `info` is a static string's index
/// into `WHAT`.
fn say(info: usize) {
    const WHAT: [&str; 9] = [
        "smp_call_function_single(wait)",
        "smp_call_function_single_async",
        "smp_call_function_any",
        "smp_call_function_many(wait)",
        "smp_call_function(wait)",
        "on_each_cpu(wait)",
        "on_each_cpu_mask(even CPUs)",
        "on_each_cpu_cond(odd CPUs)",
        "irq_work_queue_on",
    ];
    let me = percpu::this_cpu();
    if let Some(c) = RAN.get(me) {
        // Relaxed: a count read after the waiting calls returned.
        c.fetch_add(1, Ordering::Relaxed);
    }
    if !prints(me) {
        return;
    }
    kprintln!("  ran {}", WHAT.get(info).copied().unwrap_or("?"));
}

fn is_odd(cpu: CpuId, _info: usize) -> bool {
    cpu.0 % 2 == 1
}

fn irq_work_say(_: &IrqWork) {
    say(8);
}

/// How long an asynchronous call (or irq_work) may take to run.
const SETTLE_MS: u64 = 1_000;

static ASYNC_CSD: Csd = Csd::new(say, 1);
static WORK: IrqWork = IrqWork::new(irq_work_say);

/// Runs the tour; fails only if a call that must succeed did not.
pub fn run() -> GuestStatus {
    let online = SMP.online_mask();
    let me = percpu::this_cpu();
    let other = online.iter().find(|c| *c != me).unwrap_or(me);
    let last = online.iter().last().unwrap_or(me);
    let mut ok = true;
    // Allocated here, before any callback counts into it.
    if let Err(oom) = RAN.alloc() {
        kprintln!(
            "demo: no memory for the per-CPU run counts ({} bytes, {} left)",
            oom.need,
            oom.left
        );
        return GuestStatus::BadRequest;
    }

    kprintln!("demo: {} CPUs online: {}", online.weight(), CpuList(online));
    // The traced build names its callbacks, to find them in the trace.
    #[cfg(feature = "trace")]
    kprintln!(
        "demo: traced callbacks: say {:#x}, irq_work_say {:#x}",
        say as *const () as usize,
        irq_work_say as *const () as usize
    );
    kprintln!("demo: smp_call_function_single(CPU {other}, wait):");
    ok &= SMP.smp_call_function_single(other, say, 0, true).is_ok();

    kprintln!("demo: smp_call_function_single_async(CPU {last}):");
    ok &= SMP.smp_call_function_single_async(last, &ASYNC_CSD).is_ok();
    // Wait for it (with a deadline) so its line comes before the next.
    if !crate::time::spin_until(SETTLE_MS, || !ASYNC_CSD.is_locked()) {
        kprintln!(
            "demo: smp_call_function_single_async(CPU {last}) did not run within {SETTLE_MS} ms (IPI lost?)"
        );
        ok = false;
    }

    let mut upper = CpuMask::EMPTY;
    for c in online.iter().filter(|c| c.0 >= online.weight() / 2) {
        upper.set(c);
    }
    kprintln!("demo: smp_call_function_any({}, wait):", CpuList(upper));
    ok &= SMP.smp_call_function_any(upper, say, 2, true).is_ok();

    kprintln!("demo: smp_call_function_many(all online, wait) — skips CPU {me}:");
    SMP.smp_call_function_many(online, say, 3, true);

    kprintln!("demo: smp_call_function(wait):");
    SMP.smp_call_function(say, 4, true);

    kprintln!("demo: on_each_cpu(wait) — includes CPU {me}:");
    SMP.on_each_cpu(say, 5, true);

    let mut even = CpuMask::EMPTY;
    for c in online.iter().filter(|c| c.0 % 2 == 0) {
        even.set(c);
    }
    kprintln!("demo: on_each_cpu_mask({}, wait):", CpuList(even));
    SMP.on_each_cpu_mask(even, say, 6, true);

    kprintln!("demo: on_each_cpu_cond(odd CPUs, wait):");
    SMP.on_each_cpu_cond(is_odd, say, 7, true);

    kprintln!("demo: kick_all_cpus_sync()");
    SMP.kick_all_cpus_sync();

    kprintln!("demo: irq_work_queue_on(CPU {last}):");
    ok &= SMP.irq_work_queue_on(&WORK, last);
    // `irq_work_sync` with a deadline: a lost IPI must not hang the demo.
    if !crate::time::spin_until(SETTLE_MS, || !WORK.is_busy()) {
        kprintln!(
            "demo: irq_work_queue_on(CPU {last}) did not run within {SETTLE_MS} ms (IPI lost?)"
        );
        ok = false;
    }

    let total: u32 = online.iter().map(ran_on).sum();
    kprintln!(
        "demo: {total} demo callbacks ran; per CPU (IPIs sent / IPIs received / demo callbacks run):"
    );
    let (mut quiet, mut sums) = (CpuMask::EMPTY, [0u64; 3]);
    for cpu in online.iter() {
        // Relaxed: statistics, read after the calls completed.
        let sent = stats::ipis_sent(cpu);
        let received = SMP.stats(cpu).kicks_taken;
        if prints(cpu) {
            kprintln!("  CPU {cpu}: {sent} / {received} / {}", ran_on(cpu));
        } else {
            quiet.set(cpu);
            sums[0] += sent;
            sums[1] += received;
            sums[2] += u64::from(ran_on(cpu));
        }
    }
    if !quiet.is_empty() {
        kprintln!(
            "  CPUs {} together: {} / {} / {}",
            CpuList(quiet),
            sums[0],
            sums[1],
            sums[2]
        );
    }
    if ok {
        GuestStatus::Success
    } else {
        kprintln!("demo: a call that must succeed failed");
        GuestStatus::Failure
    }
}
