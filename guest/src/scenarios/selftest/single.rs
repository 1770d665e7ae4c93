//! `smp_call_function_single`: the local path, -ENXIO, and memory
//! ordering between caller and callback.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use shared::{CpuId, MAX_CPUS};

use super::harness::{self, PerCpuCount, RunCounts, irqs_disabled, this_cpu, wait_for};
use super::harness::{CaseResult, others};
use crate::kernel::SMP;
use crate::scenarios::percpu::PerCpu;
use crate::smp::{CpuMask, Csd, SmpError};

static CALLS: RunCounts = RunCounts::new();
static RUNS: &PerCpuCount = &CALLS.runs;
static IRQS_OFF: &PerCpuCount = &CALLS.irqs_off;
static INFO: AtomicUsize = AtomicUsize::new(0);

fn record(info: usize) {
    CALLS.record();
    INFO.store(info, Ordering::SeqCst);
}

fn reset() {
    CALLS.reset();
    INFO.store(0, Ordering::SeqCst);
}

/// A call to this CPU runs right away, interrupts off, and sends no IPI.
pub fn local_path_irqs_off() -> CaseResult {
    let me = this_cpu();
    for wait in [true, false] {
        reset();
        let ipis = SMP.stats(me).ipis_requested;
        let queued = SMP.stats(me).calls_queued;
        let r = SMP.smp_call_function_single(me, record, 0x5eed, wait);
        ensure!(
            r.is_ok(),
            "single(self, wait={wait}) returned {r:?}, want Ok"
        );
        ensure!(
            RUNS.get(me) == 1 && RUNS.total() == 1,
            "single(self, wait={wait}): callback ran {} times here, {} in all, before return; want 1",
            RUNS.get(me),
            RUNS.total()
        );
        ensure!(
            IRQS_OFF.get(me) == 1,
            "single(self, wait={wait}): callback ran with irqs on"
        );
        ensure!(
            INFO.load(Ordering::SeqCst) == 0x5eed,
            "single(self): wrong info"
        );
        ensure!(
            !irqs_disabled(),
            "single(self, wait={wait}) left irqs disabled"
        );
        ensure!(
            SMP.stats(me).ipis_requested == ipis && SMP.stats(me).calls_queued == queued,
            "single(self, wait={wait}) queued a call or requested an IPI"
        );
    }
    Ok(text!(
        "single(self) with and without wait: ran once before return, irqs off, no IPI, Ok"
    ))
}

static ENXIO_CSD: Csd = Csd::new(record, 0);

/// Tries every kind of single call to `cpu`; all must be -ENXIO, run
/// nothing, queue nothing and leave the async csd unlocked.
fn expect_enxio(cpu: CpuId) -> Result<(), harness::Text> {
    let me = this_cpu();
    let queued = SMP.stats(me).calls_queued;
    for wait in [true, false] {
        let r = SMP.smp_call_function_single(cpu, record, 1, wait);
        ensure!(
            r == Err(SmpError::Nxio),
            "single(CPU {cpu}, wait={wait}) returned {r:?}, want Nxio"
        );
    }
    ensure!(
        ENXIO_CSD.set(record, 2).is_ok(),
        "async csd busy before the test"
    );
    let r = SMP.smp_call_function_single_async(cpu, &ENXIO_CSD);
    ensure!(
        r.map_err(SmpError::errno) == Err(-6),
        "single_async(CPU {cpu}) returned {r:?}, want -ENXIO (-6)"
    );
    ensure!(
        !ENXIO_CSD.is_locked(),
        "csd left LOCKED after -ENXIO for CPU {cpu}"
    );
    ensure!(
        SMP.stats(me).calls_queued == queued,
        "a call to CPU {cpu} was queued despite -ENXIO"
    );
    ensure!(RUNS.total() == 0, "a callback for CPU {cpu} ran somewhere");
    Ok(())
}

/// The csd left by `expect_enxio` is reusable: an async call with it to
/// `cpu` (online) runs once there.
fn reuse_csd(cpu: CpuId) -> Result<(), harness::Text> {
    let r = SMP.smp_call_function_single_async(cpu, &ENXIO_CSD);
    ensure!(r.is_ok(), "reusing the csd for CPU {cpu} returned {r:?}");
    ensure!(
        wait_for(|| RUNS.get(cpu) == 1),
        "reused csd did not run on CPU {cpu} within {} ms",
        harness::wait_ms()
    );
    ensure!(RUNS.total() == 1, "reused csd ran {} times", RUNS.total());
    Ok(())
}

/// -ENXIO for CPU numbers at and beyond nr_cpu_ids.
pub fn enxio_invalid_cpu() -> CaseResult {
    reset();
    let nr = SMP.nr_cpu_ids();
    for cpu in [CpuId(nr), CpuId(MAX_CPUS as u32), CpuId(u32::MAX)] {
        expect_enxio(cpu)?;
    }
    let target = others().first().unwrap_or(this_cpu());
    reuse_csd(target)?;
    Ok(text!(
        "CPUs {nr}, {MAX_CPUS}, 2^32-1: single(wait/nowait) and async -ENXIO, nothing queued, csd unlocked and reused on CPU {target}"
    ))
}

/// -ENXIO for a valid CPU that is not online.
pub fn enxio_offline_cpu() -> CaseResult {
    reset();
    let off = harness::offline_cpu()?;
    let cpu = off.cpu();
    let how = off.how();
    let checked = expect_enxio(cpu);
    drop(off);
    checked?;
    let target = others()
        .and_not(CpuMask::of(cpu))
        .first()
        .unwrap_or(this_cpu());
    reuse_csd(target)?;
    if SMP.cpu_online(cpu) {
        // Anything wrongly queued to it runs before a later async call
        // (async calls run in queue order): send one and wait for it.
        MARKED.store(false, Ordering::SeqCst);
        let r = SMP.smp_call_function_single_async(cpu, &MARK_CSD);
        ensure!(
            r.is_ok(),
            "CPU {cpu} back online, but async to it failed: {r:?}"
        );
        ensure!(
            wait_for(|| MARKED.load(Ordering::SeqCst)),
            "CPU {cpu} back online, but did not run an async call within {} ms",
            harness::wait_ms()
        );
        ensure!(
            RUNS.get(cpu) == 0,
            "CPU {cpu} ran a call refused with -ENXIO"
        );
    }
    Ok(text!(
        "CPU {cpu} ({how}): single(wait/nowait) and async -ENXIO, nothing queued, csd unlocked and reused on CPU {target}"
    ))
}

static MARKED: AtomicBool = AtomicBool::new(false);
static MARK_CSD: Csd = Csd::new(mark, 0);

fn mark(_: usize) {
    MARKED.store(true, Ordering::SeqCst);
}

// ------------------------------------------------------- memory ordering --

const WORDS: usize = 8;
const ROUNDS: usize = 16;

/// Words each CPU's callback writes, one row per CPU.
static OUT: PerCpu<[AtomicU64; WORDS]> = PerCpu::new();

fn value(round: usize, word: usize) -> u64 {
    ((round as u64) << 32) | (word as u64 + 1)
}

fn write_row(round: usize) {
    // Slow on purpose: a caller that returns before the callback finished
    // (e.g. a csd unlocked before its function ran) sees stale words.
    harness::delay_us(20);
    if let Some(row) = OUT.get(this_cpu()) {
        for (i, w) in row.iter().enumerate() {
            // Relaxed on purpose: the visibility to the waiting caller must
            // come from the core (csd unlock Release / wait Acquire), which
            // is what this case checks.
            w.store(value(round, i), Ordering::Relaxed);
        }
    }
}

fn check_row(cpu: CpuId, round: usize) -> Result<(), harness::Text> {
    let row = OUT
        .get(cpu)
        .ok_or_else(|| crate::text!("no output row for CPU {cpu}"))?;
    for (i, w) in row.iter().enumerate() {
        // Relaxed on purpose: see `write_row`.
        let v = w.load(Ordering::Relaxed);
        ensure!(
            v == value(round, i),
            "round {round}: word {i} written by CPU {cpu} reads {v:#x}, want {:#x}",
            value(round, i)
        );
    }
    Ok(())
}

/// After a waiting call returns, every store of the callback is visible.
pub fn wait_sees_callback_stores() -> CaseResult {
    let others = others();
    let targets: u32 = others.weight();
    for round in 1..=ROUNDS {
        let t = others
            .iter()
            .nth(round % targets as usize)
            .unwrap_or(this_cpu());
        let r = SMP.smp_call_function_single(t, write_row, round, true);
        ensure!(r.is_ok(), "single(CPU {t}, wait) returned {r:?}");
        check_row(t, round)?;
        let round = round + 1000;
        SMP.smp_call_function_many(others, write_row, round, true);
        for c in others {
            check_row(c, round)?;
        }
    }
    Ok(text!(
        "{ROUNDS} rounds of single(wait) and many(wait) to {}: all {WORDS} words of each callback visible at return",
        harness::CpuList(others)
    ))
}

/// What the caller stored before a call, read by the callbacks.
static IN: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
static SEEN_BAD: AtomicU32 = AtomicU32::new(0);
static READS: PerCpuCount = PerCpuCount::new();

fn read_in(round: usize) {
    for (i, w) in IN.iter().enumerate() {
        // Relaxed on purpose: the visibility must come from the core (the
        // Release llist add / IPI, and the flusher's Acquire del_all).
        if w.load(Ordering::Relaxed) != value(round, i) {
            SEEN_BAD.fetch_add(1, Ordering::SeqCst);
        }
    }
    READS.inc_here();
}

fn write_in(round: usize) {
    for (i, w) in IN.iter().enumerate() {
        // Relaxed on purpose: see `read_in`.
        w.store(value(round, i), Ordering::Relaxed);
    }
}

static IN_CSD: Csd = Csd::new(read_in, 0);

/// scftorture's `scfc_in`: stores the caller made before the call are
/// visible to the callback, for waiting, non-waiting, async and many calls.
pub fn caller_stores_visible() -> CaseResult {
    SEEN_BAD.store(0, Ordering::SeqCst);
    READS.reset();
    let others = others();
    let mut expect = 0;
    for round in 1..=ROUNDS {
        let t = others
            .iter()
            .nth(round % others.weight() as usize)
            .unwrap_or(this_cpu());
        write_in(round);
        let r = match round % 4 {
            0 => SMP.smp_call_function_single(t, read_in, round, true),
            1 => SMP.smp_call_function_single(t, read_in, round, false),
            2 => IN_CSD
                .set(read_in, round)
                .and_then(|()| SMP.smp_call_function_single_async(t, &IN_CSD)),
            _ => {
                SMP.smp_call_function_many(others, read_in, round, true);
                expect += others.weight() - 1;
                Ok(())
            }
        };
        ensure!(r.is_ok(), "round {round}: call to CPU {t} returned {r:?}");
        expect += 1;
        // The next round rewrites IN: wait until this one was read.
        ensure!(
            wait_for(|| READS.total() == expect),
            "round {round}: callbacks ran {} times, want {expect}",
            READS.total()
        );
        let bad = SEEN_BAD.load(Ordering::SeqCst);
        ensure!(
            bad == 0,
            "round {round}: a callback on CPU {t} saw {bad} stale words"
        );
    }
    Ok(text!(
        "{ROUNDS} rounds (single wait/nowait, async, many): callbacks saw all {WORDS} words stored before the call"
    ))
}
