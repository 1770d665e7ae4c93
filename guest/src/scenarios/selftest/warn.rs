//! The WARN conditions that the public API can trigger on real hardware,
//! each with a negative check, and the dying-CPU flush (which must *not*
//! warn).
//!
//! `hotplug-sender-timeout` is triggered with a sender stuck in its send
//! window (see [`hotplug_sender_timeout`]); it costs the core's 2 s wait.
//!
//! `csd-unlock-not-locked` cannot be triggered through the public API:
//! the core only unlocks csds it locked itself (user csds are locked with a
//! compare-exchange that fails with -EBUSY instead), so it is not tested.

use core::sync::atomic::{AtomicU32, Ordering};

use shared::CpuId;
use shared::record::WarnKind;

use super::harness::{
    self, PerCpuCount, ShortCsdTimeout, Until, irqs_off, irqs_on, park, this_cpu, wait_for,
};
use super::harness::{CaseResult, others};
use crate::kernel::SMP;
use crate::smp::{CpuMask, Csd, IrqWork};

static RUNS: PerCpuCount = PerCpuCount::new();

fn count(_: usize) {
    RUNS.inc_here();
}

static CSD: Csd = Csd::new(count, 0);

/// Waiting calls with irqs disabled warn (made safe here: the targets are
/// this CPU and nobody); the same calls with irqs on, and an async call
/// with irqs off, do not.
pub fn wait_with_irqs_disabled() -> CaseResult {
    let me = this_cpu();
    let warns = || SMP.warn_count(me, WarnKind::WaitWithIrqsDisabled);
    RUNS.reset();
    let w0 = warns();
    let r0 = SMP.smp_call_function_single(me, count, 0, true);
    SMP.smp_call_function_many(CpuMask::EMPTY, count, 0, true);
    let w_on = warns();
    irqs_off();
    let r1 = SMP.smp_call_function_single(me, count, 0, true);
    let w1 = warns();
    SMP.smp_call_function_many(CpuMask::EMPTY, count, 0, true);
    let w2 = warns();
    let r3 = SMP.smp_call_function_single_async(me, &CSD);
    let w3 = warns();
    irqs_on();
    ensure!(
        r0.is_ok() && r1.is_ok() && r3.is_ok(),
        "calls failed: {r0:?} {r1:?} {r3:?}"
    );
    ensure!(w_on == w0, "calls with irqs on warned {} times", w_on - w0);
    ensure!(
        w1 == w0 + 1,
        "single(self, wait) with irqs off: {} warnings, want 1",
        w1 - w0
    );
    ensure!(
        w2 == w1 + 1,
        "many(empty, wait) with irqs off: {} warnings, want 1",
        w2 - w1
    );
    ensure!(
        w3 == w2,
        "single_async with irqs off warned (it is allowed there)"
    );
    ensure!(
        RUNS.get(me) == 3,
        "the local calls ran {} times, want 3",
        RUNS.get(me)
    );
    Ok(text!(
        "single(self, wait) and many(empty, wait) with irqs off: 1 warning each; with irqs on, and async with irqs off: none"
    ))
}

/// The IPI handler entry points called with irqs enabled warn; with irqs
/// off, and the task-context flush, they do not.
pub fn flush_with_irqs_enabled() -> CaseResult {
    let me = this_cpu();
    let warns = || SMP.warn_count(me, WarnKind::FlushWithIrqsEnabled);
    let f0 = warns();
    irqs_off();
    SMP.generic_smp_call_function_interrupt();
    SMP.irq_work_run();
    irqs_on();
    SMP.run_pending_calls();
    let f_ok = warns();
    SMP.generic_smp_call_function_interrupt();
    let f1 = warns();
    SMP.irq_work_run();
    let f2 = warns();
    ensure!(
        f_ok == f0,
        "flushes with irqs off / task-context flush warned {} times",
        f_ok - f0
    );
    ensure!(
        f1 == f0 + 1,
        "call-function handler with irqs on: {} warnings, want 1",
        f1 - f0
    );
    ensure!(
        f2 == f1 + 1,
        "irq_work_run with irqs on: {} warnings, want 1",
        f2 - f1
    );
    Ok(text!(
        "generic_smp_call_function_interrupt and irq_work_run with irqs on: 1 warning each; irqs off / task flush: none"
    ))
}

static WORK_RUNS: AtomicU32 = AtomicU32::new(0);

fn work_fn(_: &IrqWork) {
    WORK_RUNS.fetch_add(1, Ordering::SeqCst);
}

static WORK: IrqWork = IrqWork::new(work_fn);

/// irq_work_queue_on to an invalid or offline CPU warns, claims nothing,
/// and the work stays usable.
pub fn irq_work_on_offline_cpu() -> CaseResult {
    let me = this_cpu();
    let warns = || SMP.warn_count(me, WarnKind::IrqWorkOnOfflineCpu);
    WORK_RUNS.store(0, Ordering::SeqCst);
    let off = if SMP.num_online_cpus() >= 2
        || !SMP.present_mask().and_not(SMP.online_mask()).is_empty()
    {
        Some(harness::offline_cpu()?)
    } else {
        None
    };
    let mut targets = [CpuId(SMP.nr_cpu_ids()), CpuId(u32::MAX), CpuId(u32::MAX)];
    if let Some(o) = &off {
        targets[2] = o.cpu();
    }
    let k0 = warns();
    let mut result = Ok(());
    for cpu in targets {
        if SMP.irq_work_queue_on(&WORK, cpu) {
            result = Err(text!("irq_work_queue_on(CPU {cpu}) returned true"));
        } else if WORK.is_pending() || WORK.is_busy() {
            result = Err(text!(
                "refused irq_work_queue_on(CPU {cpu}) left the work claimed"
            ));
        }
    }
    let k1 = warns();
    let note = off.as_ref().map(|o| (o.cpu(), o.how()));
    drop(off);
    result?;
    ensure!(
        k1 == k0 + 3,
        "{} warnings for 3 refused queue_on calls",
        k1 - k0
    );
    ensure!(
        WORK.is_pending() || SMP.irq_work_queue(&WORK),
        "work not reusable afterwards"
    );
    ensure!(
        wait_for(|| WORK_RUNS.load(Ordering::SeqCst) == 1 && !WORK.is_busy()),
        "the reused work did not run here within {} ms",
        harness::wait_ms()
    );
    Ok(match note {
        Some((cpu, how)) => text!(
            "queue_on(CPU {}, 2^32-1, offline CPU {cpu} ({how})): false, 1 warning each, not claimed; reused locally",
            SMP.nr_cpu_ids()
        ),
        None => text!(
            "queue_on(CPU {}, 2^32-1 twice): false, 1 warning each, not claimed; reused locally",
            SMP.nr_cpu_ids()
        ),
    })
}

/// A call queued to a CPU that then goes offline before taking the IPI:
/// the IPI warns (ipi-on-offline-cpu, callback-on-offline-cpu) and the
/// call still runs exactly once.
pub fn ipi_on_offline_cpu() -> CaseResult {
    let x = others().last().ok_or_else(|| text!("no other CPU"))?;
    RUNS.reset();
    let mut parked = park(x, Until::Released)?;
    let r = SMP.smp_call_function_single_async(x, &CSD);
    let ipi0 = SMP.warn_count(x, WarnKind::IpiOnOfflineCpu);
    let cb0 = SMP.warn_count(x, WarnKind::CallbackOnOfflineCpu);
    parked.set_offline();
    let (released, online_again) = parked.release_offline();
    let ran = wait_for(|| RUNS.get(x) == 1);
    let ipi = SMP.warn_count(x, WarnKind::IpiOnOfflineCpu) - ipi0;
    let cb = SMP.warn_count(x, WarnKind::CallbackOnOfflineCpu) - cb0;
    drop(online_again);
    ensure!(
        r.is_ok(),
        "async call to CPU {x} (online then) returned {r:?}"
    );
    ensure!(released, "CPU {x} did not leave its park");
    ensure!(
        ran,
        "the call never ran on offline CPU {x} within {} ms",
        harness::wait_ms()
    );
    ensure!(RUNS.total() == 1, "the call ran {} times", RUNS.total());
    ensure!(
        ipi == 1,
        "ipi-on-offline-cpu fired {ipi} times on CPU {x}, want 1"
    );
    ensure!(
        cb == 1,
        "callback-on-offline-cpu fired {cb} times on CPU {x}, want 1"
    );
    Ok(text!(
        "call queued to CPU {x}, then offline: its IPI warned once (1 pending callback listed), call ran once"
    ))
}

const DYING_N: usize = 8;
static DYING: [Csd; DYING_N] = [const { Csd::new(count, 0) }; DYING_N];

/// smpcfd_dying_cpu on a CPU marked offline with calls queued (IPI pending
/// behind irqs off) runs each once, and the late IPI then finds nothing
/// and does not warn.
pub fn dying_cpu_flush() -> CaseResult {
    let x = others().last().ok_or_else(|| text!("no other CPU"))?;
    RUNS.reset();
    let mut parked = park(x, Until::Released)?;
    let mut queued = Ok(());
    for csd in &DYING {
        if let Err(e) = SMP.smp_call_function_single_async(x, csd) {
            queued = Err(text!("async call to CPU {x} returned {e:?}"));
        }
    }
    let ipi0 = SMP.warn_count(x, WarnKind::IpiOnOfflineCpu);
    let cb0 = SMP.warn_count(x, WarnKind::CallbackOnOfflineCpu);
    parked.set_offline();
    let early = RUNS.total();
    let flushed = parked.dying_flush();
    let by_flush = RUNS.get(x);
    // A marker that runs at the end of the late IPI's flush, i.e. after its
    // offline check: only then are the warning counts final.
    let marker0 = harness::marker_runs();
    let marked = parked.queue_marker();
    let (released, online_again) = parked.release_offline();
    let late_flush = wait_for(|| harness::marker_runs() == marker0 + 2);
    let ipi = SMP.warn_count(x, WarnKind::IpiOnOfflineCpu) - ipi0;
    let cb = SMP.warn_count(x, WarnKind::CallbackOnOfflineCpu) - cb0;
    drop(online_again);
    queued?;
    flushed?;
    marked?;
    ensure!(early == 0, "{early} calls ran while CPU {x} was parked");
    ensure!(
        by_flush as usize == DYING_N,
        "smpcfd_dying_cpu ran {by_flush} of {DYING_N} calls"
    );
    ensure!(released, "CPU {x} did not leave its park");
    ensure!(
        late_flush,
        "CPU {x} never flushed after its park (marker did not run)"
    );
    ensure!(
        RUNS.total() as usize == DYING_N,
        "calls ran {} times, want {DYING_N}",
        RUNS.total()
    );
    ensure!(
        ipi == 0 && cb == 0,
        "offline CPU {x} warned during the dying flush or the late IPI: ipi-on-offline x{ipi}, callback-on-offline x{cb}"
    );
    // A polling CPU gets no IPI for these calls: its own drain, after the
    // park, is what finds nothing.
    let late = if crate::kernel::ipi().idle_polls(x) {
        "its drain after the park"
    } else {
        "the late IPI"
    };
    Ok(text!(
        "{DYING_N} calls queued to parked CPU {x}, marked offline: dying flush ran each once; {late} found nothing, no warning"
    ))
}

/// An outgoing CPU whose `synchronize_senders` finds a sender stuck in its
/// send window for over 2 s warns (hotplug-sender-timeout) and goes on.
///
/// The sender (this CPU) gets stuck in the core's documented way: its
/// second no-wait many() to parked CPU `x` spins, inside its send window,
/// on the csd lock of its first one. CPU `y`, parked and marked offline
/// (test-only, not hotplug), waits until that spin is reported as a stall
/// (timeout lowered to 20 ms; it puts it back), runs `synchronize_senders`,
/// which gives up after 2 s with the warning, then lets `x` go, which
/// unblocks the sender.
pub fn hotplug_sender_timeout() -> CaseResult {
    let me = this_cpu();
    let others = others();
    let (Some(x), Some(y)) = (others.last(), others.first()) else {
        return Err(text!("needs two other CPUs"));
    };
    ensure!(x != y, "needs two other CPUs");
    RUNS.reset();
    let px = park(x, Until::Signal)?;
    let mut py = park(y, Until::Released)?;
    py.set_offline();
    let w0 = SMP.warn_count(y, WarnKind::HotplugSenderTimeout);
    SMP.smp_call_function_many(CpuMask::of(x), count, 0, false);
    let posted = py.post_synchronize_senders(SMP.csd_lock_timeout_ns());
    let short = ShortCsdTimeout::new("hotplug-sender-timeout");
    // Blocks until `y` has given up on us and signalled `x`.
    SMP.smp_call_function_many(CpuMask::of(x), count, 0, false);
    drop(short);
    let synced = py.wait_synchronize_senders(posted);
    let warned = SMP.warn_count(y, WarnKind::HotplugSenderTimeout) - w0;
    let x_end = px.wait_end();
    let ran = wait_for(|| RUNS.get(x) == 2);
    drop(py);
    ensure!(
        synced?,
        "CPU {y} never saw CPU {me}'s csd-lock wait reported stuck"
    );
    ensure!(
        warned == 1,
        "hotplug-sender-timeout fired {warned} times on CPU {y}, want 1"
    );
    ensure!(
        x_end == harness::END_SIGNAL,
        "parked CPU {x} ended its park with code {x_end}"
    );
    ensure!(
        ran && RUNS.total() == 2,
        "the 2 calls ran {} times on CPU {x}",
        RUNS.total()
    );
    Ok(text!(
        "offline CPU {y}: synchronize_senders warned once after CPU {me} sat in its send window for 2 s; CPU {x} then ran both calls"
    ))
}
