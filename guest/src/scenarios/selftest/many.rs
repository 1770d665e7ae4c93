//! `smp_call_function_many_cond` and its wrappers: who runs the function,
//! when the caller may return, `on_each_cpu*`, `kick_all_cpus_sync`.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use shared::CpuId;

use super::harness::{
    self, CpuList, END_SIGNAL, END_STUCK, Offline, PerCpuCount, RunCounts, ShortCsdTimeout, Until,
    irqs_disabled, park, this_cpu, wait_for,
};
use super::harness::{CaseResult, others};
use crate::kernel::SMP;
use crate::mem::OnceSlice;
use crate::smp::{CpuMask, Csd};

static CALLS: RunCounts = RunCounts::new();
static RUNS: &PerCpuCount = &CALLS.runs;
static IRQS_ON: &PerCpuCount = &CALLS.irqs_on;

fn count(_: usize) {
    CALLS.record();
}

fn reset() {
    CALLS.reset();
}

/// Checks that exactly the CPUs of `want` ran `count` once, none other.
fn ran_exactly(want: CpuMask, what: &str) -> Result<(), harness::Text> {
    if let Some((cpu, got, w)) = RUNS.mismatch(|c| u32::from(want.test(c))) {
        return Err(text!(
            "{what}: CPU {cpu} ran the function {got} times, want {w}"
        ));
    }
    if let Some((cpu, n, _)) = IRQS_ON.mismatch(|_| 0) {
        return Err(text!("{what}: CPU {cpu} ran it {n} times with irqs on"));
    }
    Ok(())
}

/// smp_call_function_many never runs the function on the caller, nor on
/// offline or invalid CPUs.
pub fn skips_self_and_offline() -> CaseResult {
    let me = this_cpu();
    let off: Option<Offline> = if SMP.num_online_cpus() >= 2
        || !SMP.present_mask().and_not(SMP.online_mask()).is_empty()
    {
        Some(harness::offline_cpu()?)
    } else {
        None
    };
    reset();
    // Everything: this CPU, the offline one, invalid numbers.
    SMP.smp_call_function_many(CpuMask::ALL, count, 0, true);
    let want = SMP.online_mask().without(me);
    let all = ran_exactly(want, "many(all 64 bits, wait)");
    reset();
    let first = others().first();
    let mut mask = CpuMask::of(me).or(harness::invalid_cpus());
    if let Some(f) = first {
        mask.set(f);
    }
    if let Some(o) = &off {
        mask.set(o.cpu());
    }
    SMP.smp_call_function_many(mask, count, 0, true);
    let sub = ran_exactly(
        first.map_or(CpuMask::EMPTY, CpuMask::of),
        "many(subset, wait)",
    );
    let offline_note = off.as_ref().map(|o| (o.cpu(), o.how()));
    drop(off);
    all?;
    sub?;
    Ok(match offline_note {
        Some((cpu, how)) => text!(
            "many(wait) ran once on each online CPU in the mask; never on self, invalid bits, or offline CPU {cpu} ({how})"
        ),
        None => text!(
            "many(wait) ran once on each online CPU in the mask; never on self or invalid bits (no CPU to spare for offline)"
        ),
    })
}

static WAITED_FOR: PerCpuCount = PerCpuCount::new();
static CALLER: AtomicU32 = AtomicU32::new(0);

/// On the caller (run locally): tell the parked target to go on. On the
/// target: count.
fn waited_for(_: usize) {
    if this_cpu().0 == CALLER.load(Ordering::SeqCst) {
        harness::signal();
    } else {
        WAITED_FOR.inc_here();
    }
}

static FILLER_RAN: AtomicBool = AtomicBool::new(false);

fn filler(_: usize) {
    FILLER_RAN.store(true, Ordering::SeqCst);
}

static FILLER: Csd = Csd::new(filler, 0);

/// Parks `t`, then queues an async call to it so that its queue is not
/// empty (its IPI is pending behind irqs off).
fn park_with_full_queue(t: CpuId, until: Until) -> Result<harness::Parked, harness::Text> {
    let parked = park(t, until)?;
    FILLER_RAN.store(false, Ordering::SeqCst);
    let r = SMP.smp_call_function_single_async(t, &FILLER);
    ensure!(r.is_ok(), "filler async call to CPU {t} returned {r:?}");
    Ok(parked)
}

/// One round of the 2025 regression check: `call` must wait for parked
/// `t` although its queue was non-empty and so it got no new IPI.
fn wait_iff_enqueued_round(
    t: CpuId,
    until: Until,
    what: &str,
    call: impl FnOnce(),
) -> Result<(), harness::Text> {
    let me = this_cpu();
    WAITED_FOR.reset();
    let parked = park_with_full_queue(t, until)?;
    let ipis = harness::call_ipis(me);
    call();
    let ran_at_return = WAITED_FOR.get(t);
    let new_ipis = harness::call_ipis(me).wrapping_sub(ipis);
    let end = parked.wait_end();
    ensure!(
        ran_at_return == 1,
        "{what} returned before CPU {t} ran the function (ran {ran_at_return} times)"
    );
    ensure!(
        new_ipis == 0,
        "{what} requested {new_ipis} IPIs although CPU {t}'s queue was not empty"
    );
    let want_end = if until == Until::CallerStuck {
        END_STUCK
    } else {
        END_SIGNAL
    };
    ensure!(
        end == want_end,
        "parked CPU {t} ended its park with code {end}, want {want_end} (1 released, 2 caller stuck, 3 signal, 4 timeout)"
    );
    ensure!(
        wait_for(|| FILLER_RAN.load(Ordering::SeqCst)),
        "the filler call never ran on CPU {t}"
    );
    Ok(())
}

/// The 2025 regression ("wait only if work was enqueued"): a CPU whose
/// queue is already non-empty gets no new IPI, but a waiting caller must
/// still wait for it.
///
/// The target is parked (irqs off) with an earlier async call queued.
/// Round 1: `smp_call_function_many({t}, wait)`; the target leaves its
/// park by itself only once the stall detector (timeout lowered to 20 ms)
/// reports the caller stuck, i.e. the caller provably waits. Round 2:
/// `on_each_cpu_mask({me, t}, wait)`; the local run (after queueing) tells
/// the target to go on. Both check the function ran on `t` before return
/// and no IPI was requested. Nothing can deadlock: every park ends on its
/// own deadline.
pub fn wait_iff_enqueued() -> CaseResult {
    let me = this_cpu();
    let t = others().last().ok_or_else(|| text!("no other CPU"))?;
    CALLER.store(me.0, Ordering::SeqCst);
    let short = ShortCsdTimeout::new("wait-iff-enqueued");
    let r1 = wait_iff_enqueued_round(t, Until::CallerStuck, "many({t}, wait)", || {
        SMP.smp_call_function_many(CpuMask::of(t), waited_for, 0, true)
    });
    drop(short);
    r1?;
    let mask = CpuMask::of(me).with(t);
    wait_iff_enqueued_round(t, Until::Signal, "on_each_cpu_mask({me},{t}, wait)", || {
        SMP.on_each_cpu_mask(mask, waited_for, 0, true)
    })?;
    Ok(text!(
        "CPU {t} parked with a queued call: many(wait) and on_each_cpu_mask(wait) sent no IPI and returned only after it ran"
    ))
}

static COND_CALLS: PerCpuCount = PerCpuCount::new();
static COND_ON: PerCpuCount = PerCpuCount::new();

fn parity_is(cpu: CpuId, parity: usize) -> bool {
    COND_CALLS.inc(cpu);
    COND_ON.inc_here();
    cpu.index() % 2 == parity
}

/// on_each_cpu_cond(_mask): the predicate is asked once per candidate
/// CPU, on the caller, and the function runs exactly where it said yes.
pub fn cond_predicate() -> CaseResult {
    let me = this_cpu();
    let online = SMP.online_mask();
    for parity in [0, 1] {
        reset();
        COND_CALLS.reset();
        COND_ON.reset();
        SMP.on_each_cpu_cond(parity_is, count, parity, true);
        let yes: CpuMask = online.iter().filter(|c| c.index() % 2 == parity).collect();
        ran_exactly(yes, "on_each_cpu_cond")?;
        if let Some((cpu, got, w)) = COND_CALLS.mismatch(|c| u32::from(online.test(c))) {
            return Err(text!(
                "predicate asked {got} times about CPU {cpu}, want {w}"
            ));
        }
        let asked = COND_ON.get(me);
        ensure!(
            asked == online.weight(),
            "predicate ran {asked} times on the caller, want {}",
            online.weight()
        );
    }
    // A mask that leaves out CPUs: they are never even asked about.
    reset();
    COND_CALLS.reset();
    let last = online.last().unwrap_or(me);
    let mask = CpuMask::of(last).or(harness::invalid_cpus());
    SMP.on_each_cpu_cond_mask(parity_is, count, last.index() % 2, true, mask);
    ran_exactly(CpuMask::of(last), "on_each_cpu_cond_mask")?;
    ensure!(
        COND_CALLS.total() == 1 && COND_CALLS.get(last) == 1,
        "on_each_cpu_cond_mask({last}) asked the predicate about other CPUs"
    );
    Ok(text!(
        "even/odd predicate over {}: asked once per CPU on the caller, ran exactly where true; mask {last} asked only about it",
        CpuList(online)
    ))
}

/// on_each_cpu runs the function everywhere, on the caller with irqs off.
pub fn on_each_cpu_local() -> CaseResult {
    let me = this_cpu();
    let online = SMP.online_mask();
    for wait in [true, false] {
        reset();
        SMP.on_each_cpu(count, 0, wait);
        let local_ran = RUNS.get(me) == 1;
        ensure!(
            !irqs_disabled(),
            "on_each_cpu(wait={wait}) left irqs disabled"
        );
        ensure!(
            local_ran,
            "on_each_cpu(wait={wait}) returned before running the function here"
        );
        if !wait {
            ensure!(
                wait_for(|| RUNS.total() == online.weight()),
                "on_each_cpu(nowait): {} of {} CPUs ran it within {} ms",
                RUNS.total(),
                online.weight(),
                harness::wait_ms()
            );
        }
        ran_exactly(
            online,
            if wait {
                "on_each_cpu(wait)"
            } else {
                "on_each_cpu(nowait)"
            },
        )?;
    }
    Ok(text!(
        "on_each_cpu(wait and nowait): once on each of {}, on CPU {me} before return, irqs off everywhere",
        CpuList(online)
    ))
}

/// Callback counts before a kick, by CPU number (see [`kick_round`]).
static KICK_BEFORE: OnceSlice<AtomicU64> = OnceSlice::new();

/// One kick; checks every other online CPU ran exactly one callback during
/// it and one IPI per other CPU was requested (beyond the stall
/// detector's re-sends). A parked CPU's park callback
/// was counted when it started, before the kick: it too runs just the
/// kick's during the kick.
fn kick_round() -> Result<(), harness::Text> {
    let me = this_cpu();
    let others = others();
    let before = harness::scratch(&KICK_BEFORE, SMP.nr_cpu_ids() as usize)
        .ok_or_else(|| text!("no memory for the counts of {} CPUs", SMP.nr_cpu_ids()))?;
    for (c, b) in harness::cpu_ids().zip(before) {
        b.store(SMP.stats(c).callbacks_run, Ordering::Relaxed);
    }
    let ipis = harness::call_ipis(me);
    SMP.kick_all_cpus_sync();
    let sent = harness::call_ipis(me).wrapping_sub(ipis);
    for c in SMP.online_mask() {
        let b = before
            .get(c.index())
            .map_or(0, |b| b.load(Ordering::Relaxed));
        let n = SMP.stats(c).callbacks_run.wrapping_sub(b);
        let want = u64::from(c != me);
        ensure!(
            n == want,
            "CPU {c} ran {n} callbacks during the kick, want {want}"
        );
    }
    ensure!(
        sent == u64::from(others.weight()),
        "{sent} IPIs requested, want {}",
        others.weight()
    );
    Ok(())
}

/// kick_all_cpus_sync returns only after every other online CPU took the
/// call, and requests one IPI per other CPU. Once with all CPUs idle, once
/// with one parked (irqs off) that leaves its park only when the stall
/// detector (timeout lowered to 20 ms) reports the kick waiting for it.
pub fn kick_all_cpus_sync() -> CaseResult {
    let others = others();
    kick_round()?;
    let x = others.last().ok_or_else(|| text!("no other CPU"))?;
    let parked = park(x, Until::CallerStuck)?;
    let short = ShortCsdTimeout::new("kick-all-cpus-sync");
    let round = kick_round();
    drop(short);
    let end = parked.wait_end();
    round?;
    ensure!(
        end == END_STUCK,
        "parked CPU {x} ended its park with code {end}, want {END_STUCK}"
    );
    Ok(text!(
        "every other CPU ({}) ran one callback before return, also CPU {x} parked with irqs off; one IPI each",
        CpuList(others)
    ))
}

/// What [`check_in_flight`] saw on the target: 0 not run, 1 its call still
/// in flight, 2 already released.
static SYNC_SEEN: AtomicU32 = AtomicU32::new(0);
static SYNC_RETURNED: AtomicBool = AtomicBool::new(false);
static SYNC_BACK_DURING_CB: AtomicBool = AtomicBool::new(false);

/// On the caller (run locally, after queueing): tell the parked target to
/// go on. On the target: look at its own cfd csd and the waiter.
fn check_in_flight(_: usize) {
    let caller = CpuId(CALLER.load(Ordering::SeqCst));
    if this_cpu() == caller {
        harness::signal();
        return;
    }
    let in_flight = SMP.many_call_in_flight(caller, this_cpu());
    SYNC_SEEN.store(if in_flight { 1 } else { 2 }, Ordering::SeqCst);
    SYNC_BACK_DURING_CB.store(SYNC_RETURNED.load(Ordering::SeqCst), Ordering::SeqCst);
}

/// A waiting call that shares its target's queue with an async call is
/// released only after its function: while the function runs on the
/// target, its csd is still locked and the waiter has not returned.
///
/// The target is parked (irqs off) with an async call queued; then
/// `on_each_cpu_mask({me, t}, wait)` queues behind it (the local run tells
/// the target to go on), so the target's flush finds two csds: the
/// general path, not the lone-SYNC one (checked: one flush ran both). The
/// function checks its own csd, so an early unlock fails this every time.
pub fn sync_released_after_callback() -> CaseResult {
    let me = this_cpu();
    let t = others().last().ok_or_else(|| text!("no other CPU"))?;
    CALLER.store(me.0, Ordering::SeqCst);
    SYNC_SEEN.store(0, Ordering::SeqCst);
    SYNC_RETURNED.store(false, Ordering::SeqCst);
    SYNC_BACK_DURING_CB.store(false, Ordering::SeqCst);
    let parked = park_with_full_queue(t, Until::Signal)?;
    // The park's own flush was counted when it started.
    let before = SMP.stats(t);
    SMP.on_each_cpu_mask(CpuMask::of(me).with(t), check_in_flight, 0, true);
    SYNC_RETURNED.store(true, Ordering::SeqCst);
    let end = parked.wait_end();
    ensure!(
        end == END_SIGNAL,
        "parked CPU {t} ended its park with code {end}, want {END_SIGNAL}"
    );
    ensure!(
        wait_for(|| FILLER_RAN.load(Ordering::SeqCst)),
        "the filler call never ran on CPU {t}"
    );
    let after = SMP.stats(t);
    let (kicks, runs) = (
        after.kicks_taken - before.kicks_taken,
        after.callbacks_run - before.callbacks_run,
    );
    ensure!(
        kicks == 1 && runs == 2,
        "CPU {t} took {kicks} flushes running {runs} functions, want one flush of both (the general path)"
    );
    let seen = SYNC_SEEN.load(Ordering::SeqCst);
    ensure!(
        seen == 1,
        "the waiting call's csd was already unlocked while its function ran on CPU {t} (seen {seen}: 0 not run, 2 unlocked)"
    );
    ensure!(
        !SYNC_BACK_DURING_CB.load(Ordering::SeqCst),
        "the waiter returned while its function ran on CPU {t}"
    );
    Ok(text!(
        "CPU {t} flushed an async call and on_each_cpu_mask(wait)'s csd together; that csd was still locked while its function ran"
    ))
}
