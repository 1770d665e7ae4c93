//! `smp_call_function_single_async`: queue order, IPI coalescing, -EBUSY
//! and reuse, and callbacks that requeue their own csd.

use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use shared::CpuId;

use super::harness::{self, PerCpuCount, Until, park, this_cpu, wait_for};
use super::harness::{CaseResult, others};
use crate::kernel::SMP;
use crate::smp::{Csd, SmpError};

const N: usize = 16;

fn nothing(_: usize) {}

/// One async csd per position in a batch.
static BATCH: [Csd; N] = [const { Csd::new(nothing, 0) }; N];

/// Queues `BATCH[i]` with `func(i)` to `cpu`, for every i, in order.
fn queue_batch(cpu: CpuId, func: fn(usize)) -> Result<(), harness::Text> {
    for (i, csd) in BATCH.iter().enumerate() {
        ensure!(csd.set(func, i).is_ok(), "batch csd {i} still busy");
        let r = SMP.smp_call_function_single_async(cpu, csd);
        ensure!(r.is_ok(), "async call {i} to CPU {cpu} returned {r:?}");
    }
    Ok(())
}

static ORDER: [AtomicU32; N] = [const { AtomicU32::new(u32::MAX) }; N];
static POS: AtomicU32 = AtomicU32::new(0);
static WRONG_CPU: AtomicU32 = AtomicU32::new(0);
static TARGET: AtomicU32 = AtomicU32::new(0);

fn in_order(info: usize) {
    let pos = POS.fetch_add(1, Ordering::SeqCst) as usize;
    if let Some(slot) = ORDER.get(pos) {
        slot.store(info as u32, Ordering::SeqCst);
    }
    if this_cpu().0 != TARGET.load(Ordering::SeqCst) {
        WRONG_CPU.fetch_add(1, Ordering::SeqCst);
    }
}

fn check_order(t: CpuId, how: &str) -> Result<(), harness::Text> {
    ensure!(
        wait_for(|| POS.load(Ordering::SeqCst) as usize >= N),
        "{how}: {} of {N} calls ran on CPU {t} within {} ms",
        POS.load(Ordering::SeqCst),
        harness::wait_ms()
    );
    ensure!(
        POS.load(Ordering::SeqCst) as usize == N,
        "{how}: more than {N} runs"
    );
    for (pos, slot) in ORDER.iter().enumerate() {
        let got = slot.load(Ordering::SeqCst);
        ensure!(
            got == pos as u32,
            "{how}: run #{pos} was call {got}, want call {pos}"
        );
    }
    let wrong = WRONG_CPU.load(Ordering::SeqCst);
    ensure!(
        wrong == 0,
        "{how}: {wrong} calls ran on a CPU other than {t}"
    );
    Ok(())
}

fn reset_order(t: CpuId) {
    for slot in &ORDER {
        slot.store(u32::MAX, Ordering::SeqCst);
    }
    POS.store(0, Ordering::SeqCst);
    WRONG_CPU.store(0, Ordering::SeqCst);
    TARGET.store(t.0, Ordering::SeqCst);
}

/// N async calls from one CPU to one target run in the order queued: once
/// with the target live, once all in one batch while it is parked.
pub fn fifo_order() -> CaseResult {
    let t = others().last().ok_or_else(|| text!("no other CPU"))?;
    reset_order(t);
    queue_batch(t, in_order)?;
    check_order(t, "live target")?;

    reset_order(t);
    let parked = park(t, Until::Released)?;
    let queued = queue_batch(t, in_order);
    let ran_early = POS.load(Ordering::SeqCst);
    let released = parked.release();
    queued?;
    ensure!(
        ran_early == 0,
        "{ran_early} calls ran while CPU {t} was parked with irqs off"
    );
    ensure!(released, "CPU {t} did not leave its park");
    check_order(t, "batched while parked")?;
    Ok(text!(
        "2 x {N} async calls to CPU {t} ran in queue order (live, and as one batch after a park)"
    ))
}

static COALESCED: PerCpuCount = PerCpuCount::new();

fn count(_: usize) {
    COALESCED.inc_here();
}

/// N calls queued to a CPU that is busy with irqs off cost one IPI.
pub fn ipi_coalescing() -> CaseResult {
    let me = this_cpu();
    let t = others().last().ok_or_else(|| text!("no other CPU"))?;
    COALESCED.reset();
    let parked = park(t, Until::Released)?;
    let before = SMP.stats(me);
    // A statistic of CPU t, bumped when its flush found the park call,
    // before the park callback we saw running (SeqCst): current here.
    let received = SMP.stats(t).kicks_taken;
    let queued = queue_batch(t, count);
    let after = SMP.stats(me);
    let released = parked.release();
    queued?;
    ensure!(released, "CPU {t} did not leave its park");
    ensure!(
        wait_for(|| COALESCED.get(t) as usize == N),
        "only {} of {N} calls ran on CPU {t} within {} ms",
        COALESCED.get(t),
        harness::wait_ms()
    );
    let ipis = after.ipis_requested - before.ipis_requested;
    let calls = after.calls_queued - before.calls_queued;
    // As above: bumped by the flush that found the calls.
    let got = SMP.stats(t).kicks_taken - received;
    ensure!(calls == N as u64, "{calls} calls queued, want {N}");
    ensure!(
        ipis == 1,
        "{N} calls to busy CPU {t} requested {ipis} IPIs, want exactly 1"
    );
    ensure!(
        got == 1,
        "busy CPU {t} took {got} kicks (IPIs or polling wake-ups that found calls) afterwards, want 1"
    );
    ensure!(
        COALESCED.total() as usize == N,
        "{} runs in all, want {N}",
        COALESCED.total()
    );
    Ok(text!(
        "{N} async calls to CPU {t} parked with irqs off: 1 IPI requested, 1 taken, all {N} ran once"
    ))
}

static BUSY_RUNS: PerCpuCount = PerCpuCount::new();

fn busy_cb(_: usize) {
    BUSY_RUNS.inc_here();
}

static BUSY_CSD: Csd = Csd::new(busy_cb, 0);

/// A second async call with an in-flight csd is -EBUSY and changes
/// nothing; once the first ran, the csd works again.
pub fn ebusy_and_reuse() -> CaseResult {
    let me = this_cpu();
    let t = others().last().ok_or_else(|| text!("no other CPU"))?;
    BUSY_RUNS.reset();
    let parked = park(t, Until::Released)?;
    let checks = (|| {
        let r = SMP.smp_call_function_single_async(t, &BUSY_CSD);
        ensure!(r.is_ok(), "first async call to CPU {t} returned {r:?}");
        ensure!(
            BUSY_CSD.is_locked(),
            "csd not locked while queued to parked CPU {t}"
        );
        let r = SMP.smp_call_function_single_async(t, &BUSY_CSD);
        ensure!(
            r.map_err(SmpError::errno) == Err(-16),
            "second async call with the in-flight csd returned {r:?}, want -EBUSY (-16)"
        );
        let r = SMP.smp_call_function_single_async(me, &BUSY_CSD);
        ensure!(
            r == Err(SmpError::Busy),
            "in-flight csd to this CPU returned {r:?}, want Busy"
        );
        ensure!(
            BUSY_RUNS.get(me) == 0,
            "the -EBUSY call to this CPU ran anyway"
        );
        ensure!(
            BUSY_CSD.set(busy_cb, 1) == Err(SmpError::Busy),
            "Csd::set on an in-flight csd did not say Busy"
        );
        Ok(())
    })();
    let released = parked.release();
    checks?;
    ensure!(released, "CPU {t} did not leave its park");
    ensure!(
        wait_for(|| BUSY_RUNS.get(t) == 1),
        "the queued call did not run on CPU {t} within {} ms",
        harness::wait_ms()
    );
    ensure!(!BUSY_CSD.is_locked(), "csd still locked after its call ran");
    let r = SMP.smp_call_function_single_async(t, &BUSY_CSD);
    ensure!(r.is_ok(), "reusing the completed csd returned {r:?}");
    ensure!(
        wait_for(|| BUSY_RUNS.get(t) == 2),
        "the reused csd did not run on CPU {t} within {} ms",
        harness::wait_ms()
    );
    ensure!(
        BUSY_RUNS.total() == 2,
        "{} runs in all, want 2",
        BUSY_RUNS.total()
    );
    Ok(text!(
        "in-flight csd: async to CPU {t} and to self -EBUSY, set() Busy, one run; reused after completion"
    ))
}

static REQUEUE_CSD: Csd = Csd::new(requeue, 0);
static REQUEUE_RUNS: AtomicU32 = AtomicU32::new(0);
static REQUEUE_ERR: AtomicI32 = AtomicI32::new(0);
static REQUEUE_ON: [AtomicU32; N] = [const { AtomicU32::new(u32::MAX) }; N];

/// Records where it ran, then requeues its own csd to the next online CPU
/// until it ran N times. The csd must already be unlocked here.
fn requeue(_: usize) {
    let n = REQUEUE_RUNS.fetch_add(1, Ordering::SeqCst) as usize;
    if let Some(slot) = REQUEUE_ON.get(n) {
        slot.store(this_cpu().0, Ordering::SeqCst);
    }
    if n + 1 < N {
        let next = harness::next_online(this_cpu());
        if let Err(e) = SMP.smp_call_function_single_async(next, &REQUEUE_CSD) {
            REQUEUE_ERR.store(e.errno(), Ordering::SeqCst);
        }
    }
}

/// An async callback that requeues its own csd N times works
/// (unlock-before-call): through remote queues with several CPUs, through
/// the local path with one.
pub fn requeue_own_csd() -> CaseResult {
    let me = this_cpu();
    REQUEUE_RUNS.store(0, Ordering::SeqCst);
    REQUEUE_ERR.store(0, Ordering::SeqCst);
    for slot in &REQUEUE_ON {
        slot.store(u32::MAX, Ordering::SeqCst);
    }
    let first = harness::next_online(me);
    let r = SMP.smp_call_function_single_async(first, &REQUEUE_CSD);
    ensure!(r.is_ok(), "first async call to CPU {first} returned {r:?}");
    let done = wait_for(|| REQUEUE_RUNS.load(Ordering::SeqCst) as usize >= N);
    let err = REQUEUE_ERR.load(Ordering::SeqCst);
    ensure!(
        err == 0,
        "a callback's requeue of its own csd failed with {err}"
    );
    ensure!(
        done,
        "the csd ran {} of {N} times within {} ms",
        REQUEUE_RUNS.load(Ordering::SeqCst),
        harness::wait_ms()
    );
    ensure!(
        wait_for(|| !REQUEUE_CSD.is_locked()),
        "csd still locked after the last run"
    );
    let runs = REQUEUE_RUNS.load(Ordering::SeqCst) as usize;
    ensure!(runs == N, "the csd ran {runs} times, want {N}");
    let mut want = first;
    for (i, slot) in REQUEUE_ON.iter().enumerate() {
        let got = slot.load(Ordering::SeqCst);
        ensure!(got == want.0, "run {i} was on CPU {got}, want CPU {want}");
        want = harness::next_online(want);
    }
    let path = if first == me {
        "local path"
    } else {
        "remote queues, round robin over online CPUs"
    };
    Ok(text!(
        "an async callback requeued its own csd {} times ({path})",
        N - 1
    ))
}
