//! `smp_call_function_any`: this CPU first, then its NUMA node, then any
//! online CPU of the mask; -ENXIO when the mask has no online CPU.

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use shared::CpuId;

use super::harness::{self, CpuList, PerCpuCount, RunCounts, as_task, this_cpu, wait_for};
use super::harness::{CaseResult, others};
use crate::kernel::SMP;
use crate::smp::{AtomicCpuMask, CpuMask, SmpError};

static CALLS: RunCounts = RunCounts::new();
static RUNS: &PerCpuCount = &CALLS.runs;
static IRQS_OFF: &PerCpuCount = &CALLS.irqs_off;

fn record(_: usize) {
    CALLS.record();
}

fn reset() {
    CALLS.reset();
}

/// Where the single run of `record` happened, if exactly one did.
fn ran_on() -> Option<CpuId> {
    (RUNS.total() == 1)
        .then(|| SMP.possible_mask().iter().find(|&c| RUNS.get(c) == 1))
        .flatten()
}

/// A mask containing this CPU: the call runs right here.
pub fn prefers_self() -> CaseResult {
    let me = this_cpu();
    let online = SMP.online_mask();
    let masks = [
        online,
        CpuMask::of(me).or(others().last().map_or(CpuMask::EMPTY, CpuMask::of)),
    ];
    for mask in masks {
        for wait in [true, false] {
            reset();
            let ipis = SMP.stats(me).ipis_requested;
            let r = SMP.smp_call_function_any(mask, record, 0, wait);
            ensure!(
                r.is_ok(),
                "any({}, wait={wait}) returned {r:?}",
                CpuList(mask)
            );
            ensure!(
                ran_on() == Some(me),
                "any({}, wait={wait}): ran {} times, on this CPU {} times, before return",
                CpuList(mask),
                RUNS.total(),
                RUNS.get(me)
            );
            ensure!(IRQS_OFF.get(me) == 1, "any(): local run had irqs on");
            ensure!(
                SMP.stats(me).ipis_requested == ipis,
                "any({}) requested an IPI though it contains this CPU",
                CpuList(mask)
            );
        }
    }
    Ok(text!(
        "any({}) and any({}), wait and nowait: ran once on CPU {me} before return, irqs off, no IPI",
        CpuList(masks[0]),
        CpuList(masks[1])
    ))
}

static TASK_MASK: AtomicCpuMask = AtomicCpuMask::new();
static TASK_ERR: AtomicI32 = AtomicI32::new(0);
static TASK_DONE: AtomicBool = AtomicBool::new(false);

fn any_task(_: usize) {
    as_task(|| {
        let mask = TASK_MASK.load_sc();
        let err = match SMP.smp_call_function_any(mask, record, 0, true) {
            Ok(()) => 0,
            Err(e) => e.errno(),
        };
        TASK_ERR.store(err, Ordering::SeqCst);
        TASK_DONE.store(true, Ordering::SeqCst);
    });
}

/// Runs `any(mask, wait)` on `caller` (here or as a task there) and
/// returns the CPU the function ran on.
fn any_from(caller: CpuId, mask: CpuMask) -> Result<CpuId, harness::Text> {
    reset();
    let err = if caller == this_cpu() {
        SMP.smp_call_function_any(mask, record, 0, true)
            .err()
            .map_or(0, SmpError::errno)
    } else {
        TASK_MASK.swap(mask);
        TASK_DONE.store(false, Ordering::SeqCst);
        harness::start_task(caller, any_task, 0)?;
        ensure!(
            wait_for(|| TASK_DONE.load(Ordering::SeqCst)),
            "any({}, wait) on CPU {caller} did not return within {} ms",
            CpuList(mask),
            harness::wait_ms()
        );
        TASK_ERR.load(Ordering::SeqCst)
    };
    ensure!(
        err == 0,
        "any({}) from CPU {caller} returned errno {err}",
        CpuList(mask)
    );
    ran_on().ok_or_else(|| {
        text!(
            "any({}, wait) from CPU {caller}: ran {} times at return, want 1",
            CpuList(mask),
            RUNS.total()
        )
    })
}

/// A mask without this CPU: the first online CPU of the mask on this CPU's
/// node, else the first online CPU of the mask.
pub fn prefers_same_node() -> CaseResult {
    let online = SMP.online_mask();
    let node = |c: CpuId| SMP.cpu_to_node(c);
    // A caller and mask where "same node first" and "first online" differ.
    let pick = online.iter().find_map(|c| {
        let mask = online.without(c);
        let same = mask.iter().find(|&m| node(m) == node(c))?;
        (Some(same) != mask.first()).then_some((c, mask, same))
    });
    if let Some((caller, mask, want)) = pick {
        let got = any_from(caller, mask)?;
        ensure!(
            got == want,
            "any({}) from CPU {caller} (node {}) ran on CPU {got} (node {}), want CPU {want} (same node)",
            CpuList(mask),
            node(caller),
            node(got)
        );
        // Nothing of the mask on the caller's node: first online of it.
        let far: CpuMask = online.iter().filter(|&c| node(c) != node(caller)).collect();
        let far_want = far.first().unwrap_or(caller);
        let got_far = any_from(caller, far)?;
        ensure!(
            got_far == far_want,
            "any({}) from CPU {caller}: ran on CPU {got_far}, want first online CPU {far_want}",
            CpuList(far)
        );
        return Ok(text!(
            "from CPU {caller} (node {}): any({}) chose same-node CPU {want}; any({}) other node: CPU {far_want}",
            node(caller),
            CpuList(mask),
            CpuList(far),
        ));
    }
    // One NUMA node: only the "first online CPU of the mask" order shows.
    let me = this_cpu();
    let others = others();
    let want = others.first().ok_or_else(|| text!("no other CPU"))?;
    let got = any_from(me, others)?;
    ensure!(
        got == want,
        "any({}) ran on CPU {got}, want CPU {want}",
        CpuList(others)
    );
    let last = others.last().unwrap_or(want);
    let mask = CpuMask::of(last).or(harness::invalid_cpus());
    let got = any_from(me, mask)?;
    ensure!(
        got == last,
        "any({last} + invalid bits) ran on CPU {got}, want CPU {last}"
    );
    Ok(text!(
        "one NUMA node: any({}) ran on first CPU {want}; any({last} + invalid bits) on CPU {last}",
        CpuList(others)
    ))
}

/// A mask with no online CPU (empty, invalid bits, an offline CPU):
/// -ENXIO, nothing runs.
pub fn enxio_all_offline() -> CaseResult {
    reset();
    let mut masks = [CpuMask::EMPTY, harness::invalid_cpus(), CpuMask::EMPTY];
    let off = if SMP.num_online_cpus() >= 2
        || !SMP.present_mask().and_not(SMP.online_mask()).is_empty()
    {
        let off = harness::offline_cpu()?;
        masks[2] = CpuMask::of(off.cpu()).or(harness::invalid_cpus());
        Some(off)
    } else {
        None
    };
    let mut result = Ok(());
    for mask in masks {
        for wait in [true, false] {
            let r = SMP.smp_call_function_any(mask, record, 0, wait);
            if r != Err(SmpError::Nxio) {
                result = Err(text!(
                    "any({}, wait={wait}) returned {r:?}, want Nxio",
                    CpuList(mask)
                ));
            }
        }
    }
    let note = off.as_ref().map(|o| (o.cpu(), o.how()));
    drop(off);
    result?;
    ensure!(RUNS.total() == 0, "the function ran {} times", RUNS.total());
    Ok(match note {
        Some((cpu, how)) => text!(
            "empty mask, invalid bits only, offline CPU {cpu} ({how}) + invalid bits: -ENXIO, nothing ran"
        ),
        None => {
            text!("empty mask, invalid bits only: -ENXIO, nothing ran (no CPU to take offline)")
        }
    })
}
