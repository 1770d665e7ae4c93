//! Concurrency: every CPU calling every other CPU at once, and many
//! senders hammering one target; every callback counted exactly once.
//!
//! The other CPUs take part as tasks (an async call whose callback runs
//! with interrupts enabled, see `harness.rs`); the boot CPU takes part
//! directly. A start barrier lines them up; every wait has a deadline.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use shared::CpuId;

use super::harness::{self, CpuList, PerCpuCount, as_task, this_cpu, wait_for};
use super::harness::{CaseResult, others};
use crate::kernel::SMP;
use crate::mem::OnceSlice;
use crate::scenarios::percpu::PerCpu;
use crate::smp::CpuMask;

static GO: AtomicBool = AtomicBool::new(false);
static READY: PerCpuCount = PerCpuCount::new();
static DONE: PerCpuCount = PerCpuCount::new();
/// Callers whose own wait returned before all their callbacks ran.
static EARLY: PerCpuCount = PerCpuCount::new();

/// Starts `task` on the other CPUs `others`, waits until all are at the
/// barrier, lets them go, runs `body` here, and waits until all are done.
fn run_everywhere(
    others: CpuMask,
    task: fn(usize),
    body: impl FnOnce(),
) -> Result<(), harness::Text> {
    GO.store(false, Ordering::SeqCst);
    READY.reset();
    DONE.reset();
    EARLY.reset();
    for c in others {
        harness::start_task(c, task, 0)?;
    }
    let all_ready = wait_for(|| others.iter().all(|c| READY.get(c) == 1));
    // Let them go even if some are missing, so that none waits forever.
    GO.store(true, Ordering::SeqCst);
    ensure!(
        all_ready,
        "CPUs {} did not reach the start barrier within {} ms",
        CpuList(others.iter().filter(|&c| READY.get(c) == 0).collect()),
        harness::wait_ms()
    );
    body();
    let all_done = wait_for(|| others.iter().all(|c| DONE.get(c) == 1));
    ensure!(
        all_done,
        "the calls of CPUs {} did not return within {} ms",
        CpuList(others.iter().filter(|&c| DONE.get(c) == 0).collect()),
        harness::wait_ms()
    );
    Ok(())
}

/// A task's start: report ready, wait for the barrier (with a deadline).
fn barrier() -> bool {
    READY.inc_here();
    wait_for(|| GO.load(Ordering::SeqCst))
}

/// HITS[caller * nr_cpu_ids + executor]: runs of the caller's function on
/// the executor; `nr_cpu_ids` squared, allocated at the first run.
static HITS: OnceSlice<AtomicU32> = OnceSlice::new();

/// The count of `caller`'s function on `exec` (None: not a CPU number).
fn hits(caller: CpuId, exec: CpuId) -> Option<&'static AtomicU32> {
    let n = SMP.nr_cpu_ids() as usize;
    if caller.index() >= n || exec.index() >= n {
        return None;
    }
    HITS.at(caller.index() * n + exec.index())
}

fn hit(caller: usize) {
    // Slow on purpose, so that a caller returning early is caught.
    harness::delay_us(10);
    if let Some(h) = hits(CpuId(caller as u32), this_cpu()) {
        h.fetch_add(1, Ordering::SeqCst);
    }
}

/// This CPU's turn: smp_call_function(wait), then check its own row.
fn call_all() {
    let me = this_cpu();
    SMP.smp_call_function(hit, me.index(), true);
    let ok = SMP
        .online_mask()
        .iter()
        .all(|c| hits(me, c).is_some_and(|h| h.load(Ordering::SeqCst) == u32::from(c != me)));
    if !ok {
        EARLY.inc(me);
    }
}

fn call_all_task(_: usize) {
    as_task(|| {
        if barrier() {
            call_all();
        }
        DONE.inc_here();
    });
}

/// Rounds of [`all_call_all`]: 4, or 1 on more than [`BIG`] CPUs (the
/// case is N² callbacks a round; one round covers the same behaviour).
fn rounds() -> u32 {
    if SMP.num_online_cpus() > BIG { 1 } else { 4 }
}

/// The CPU count above which the concurrency cases do less per CPU.
const BIG: u32 = 64;

/// All online CPUs call smp_call_function(wait) at once; each callback
/// runs exactly once on each other CPU, and each caller's wait covers all
/// of its callbacks.
pub fn all_call_all() -> CaseResult {
    let online = SMP.online_mask();
    let n = SMP.nr_cpu_ids() as usize;
    let table =
        harness::scratch(&HITS, n * n).ok_or_else(|| text!("no memory for {n} x {n} counts"))?;
    let rounds = rounds();
    for round in 1..=rounds {
        for h in table {
            h.store(0, Ordering::SeqCst);
        }
        run_everywhere(others(), call_all_task, call_all)
            .map_err(|e| text!("round {round}: {}", e.as_str()))?;
        for (i, hits) in table.iter().take(n * n).enumerate() {
            let (c, e) = (i / n, i % n);
            let (caller, exec) = (CpuId(c as u32), CpuId(e as u32));
            let want = u32::from(online.test(caller) && online.test(exec) && c != e);
            let got = hits.load(Ordering::SeqCst);
            ensure!(
                got == want,
                "round {round}: CPU {exec} ran CPU {caller}'s callback {got} times, want {want}"
            );
        }
        if let Some((c, _, _)) = EARLY.mismatch(|_| 0) {
            return Err(text!(
                "round {round}: CPU {c}'s smp_call_function(wait) returned before all its callbacks ran"
            ));
        }
    }
    Ok(text!(
        "{rounds} rounds: all of {} called smp_call_function(wait) at once; each callback ran exactly once per other CPU",
        CpuList(online)
    ))
}

/// Calls each sender makes at most (each kind 4 times)...
const PER_SENDER: usize = 16;

/// ... and on more than [`BIG`] CPUs (each kind once), where the target
/// gets N x this many calls.
fn per_sender() -> usize {
    if SMP.num_online_cpus() > BIG {
        4
    } else {
        PER_SENDER
    }
}

/// SLOTS[sender][seq]: runs of that call.
static SLOTS: PerCpu<[AtomicU32; PER_SENDER]> = PerCpu::new();
static TARGET: AtomicU32 = AtomicU32::new(0);
static WRONG_CPU: AtomicU32 = AtomicU32::new(0);
static CALL_ERRORS: AtomicU32 = AtomicU32::new(0);

fn slot(info: usize) {
    if this_cpu().0 != TARGET.load(Ordering::SeqCst) {
        WRONG_CPU.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(s) = SLOTS.at(info >> 8).and_then(|row| row.get(info & 0xff)) {
        s.fetch_add(1, Ordering::SeqCst);
    }
}

/// This CPU's burst at the target: single wait / nowait, many wait / nowait.
fn send_burst() {
    let me = this_cpu();
    let t = CpuId(TARGET.load(Ordering::SeqCst));
    for seq in 0..per_sender() {
        let info = (me.index() << 8) | seq;
        let r = match seq % 4 {
            0 => SMP.smp_call_function_single(t, slot, info, true),
            1 => SMP.smp_call_function_single(t, slot, info, false),
            2 => {
                SMP.smp_call_function_many(CpuMask::of(t), slot, info, true);
                Ok(())
            }
            _ => {
                SMP.smp_call_function_many(CpuMask::of(t), slot, info, false);
                Ok(())
            }
        };
        if r.is_err() {
            CALL_ERRORS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn burst_task(_: usize) {
    as_task(|| {
        if barrier() {
            send_burst();
        }
        DONE.inc_here();
    });
}

/// Every online CPU but one sends a burst of calls to that one at once;
/// every call runs exactly once, on the target.
pub fn many_to_one() -> CaseResult {
    let online = SMP.online_mask();
    let t = others().last().ok_or_else(|| text!("no other CPU"))?;
    let senders = online.without(t);
    TARGET.store(t.0, Ordering::SeqCst);
    WRONG_CPU.store(0, Ordering::SeqCst);
    CALL_ERRORS.store(0, Ordering::SeqCst);
    let nr = SMP.nr_cpu_ids() as usize;
    for row in SLOTS.table().iter().take(nr) {
        for s in row {
            s.store(0, Ordering::SeqCst);
        }
    }
    let per_sender = per_sender();
    let total = senders.weight() as usize * per_sender;
    let run_before = SMP.stats(t).callbacks_run;
    run_everywhere(senders.without(this_cpu()), burst_task, send_burst)?;
    let count = || {
        SLOTS
            .table()
            .iter()
            .take(nr)
            .flatten()
            .map(|s| s.load(Ordering::SeqCst) as usize)
            .sum::<usize>()
    };
    ensure!(
        wait_for(|| count() >= total),
        "only {} of {total} calls ran on CPU {t} within {} ms",
        count(),
        harness::wait_ms()
    );
    let errors = CALL_ERRORS.load(Ordering::SeqCst);
    ensure!(errors == 0, "{errors} calls to CPU {t} returned an error");
    for (s, row) in SLOTS.table().iter().take(nr).enumerate() {
        for (seq, n) in row.iter().enumerate() {
            let got = n.load(Ordering::SeqCst);
            let want = u32::from(senders.test(CpuId(s as u32)) && seq < per_sender);
            ensure!(
                got == want,
                "call {seq} of CPU {s} ran {got} times, want {want}"
            );
        }
    }
    let wrong = WRONG_CPU.load(Ordering::SeqCst);
    ensure!(wrong == 0, "{wrong} calls ran on a CPU other than {t}");
    let ran = SMP.stats(t).callbacks_run - run_before;
    ensure!(
        ran as usize == total,
        "CPU {t} counted {ran} callbacks, want {total}"
    );
    Ok(text!(
        "{} senders ({}) x {per_sender} calls (single/many, wait/nowait) to CPU {t} at once: each ran exactly once there",
        senders.weight(),
        CpuList(senders)
    ))
}
