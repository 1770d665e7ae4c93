//! irq_work: local (self-interrupt) and remote (call queue) work items,
//! each queued at most once at a time and run exactly once per queueing.

use super::harness::{self, PerCpuCount, RunCounts, Until, irqs_off, irqs_on, park, this_cpu};
use super::harness::{CaseResult, others};
use crate::kernel::SMP;
use crate::smp::IrqWork;

static CALLS: RunCounts = RunCounts::new();
static RUNS: &PerCpuCount = &CALLS.runs;
static IRQS_ON: &PerCpuCount = &CALLS.irqs_on;

fn work_fn(_: &IrqWork) {
    CALLS.record();
}

fn reset() {
    CALLS.reset();
}

/// Waits until `work` ran `n` times in all, all of them on `cpu`, irqs off.
fn ran(work: &IrqWork, cpu: shared::CpuId, n: u32, what: &str) -> Result<(), harness::Text> {
    ensure!(
        harness::wait_for(|| RUNS.total() >= n && !work.is_busy()),
        "{what}: ran {} of {n} times within {} ms",
        RUNS.total(),
        harness::wait_ms()
    );
    ensure!(
        RUNS.total() == n && RUNS.get(cpu) == n,
        "{what}: ran {} times, {} of them on CPU {cpu}; want {n}, all there",
        RUNS.total(),
        RUNS.get(cpu)
    );
    ensure!(IRQS_ON.total() == 0, "{what}: ran with irqs on");
    Ok(())
}

static LOCAL: IrqWork = IrqWork::new(work_fn);

/// irq_work_queue: runs on this CPU from its self-interrupt; queued twice
/// while pending (irqs off) it runs once.
pub fn queue_local() -> CaseResult {
    let me = this_cpu();
    reset();
    ensure!(
        SMP.irq_work_queue(&LOCAL),
        "irq_work_queue on an idle work returned false"
    );
    ran(&LOCAL, me, 1, "queued with irqs on")?;

    irqs_off();
    let first = SMP.irq_work_queue(&LOCAL);
    let second = SMP.irq_work_queue(&LOCAL);
    let pending = LOCAL.is_pending();
    let early = RUNS.total();
    irqs_on();
    ensure!(first, "irq_work_queue with irqs off returned false");
    ensure!(!second, "irq_work_queue on a pending work returned true");
    ensure!(pending, "work not pending while irqs were off");
    ensure!(early == 1, "work ran while irqs were off");
    ran(&LOCAL, me, 2, "queued twice with irqs off")?;
    // Not busy any more (checked with a deadline above): returns at once.
    SMP.irq_work_sync(&LOCAL);
    ensure!(
        !LOCAL.is_busy() && !LOCAL.is_pending(),
        "work still busy after irq_work_sync"
    );
    Ok(text!(
        "ran on CPU {me} with irqs off; queued twice while pending: second refused, ran once when irqs came back"
    ))
}

static REMOTE: IrqWork = IrqWork::new(work_fn);

/// irq_work_queue_on: runs on the chosen CPU (through its call queue), or
/// locally when that is this CPU; queued twice to a parked CPU it runs once.
pub fn queue_on() -> CaseResult {
    let me = this_cpu();
    reset();
    ensure!(
        SMP.irq_work_queue_on(&REMOTE, me),
        "irq_work_queue_on(self) returned false"
    );
    ran(&REMOTE, me, 1, "queue_on(self)")?;
    let t = others().last().ok_or_else(|| text!("no other CPU"))?;
    reset();
    ensure!(
        SMP.irq_work_queue_on(&REMOTE, t),
        "irq_work_queue_on({t}) returned false"
    );
    ran(&REMOTE, t, 1, "queue_on(remote)")?;

    let parked = park(t, Until::Released)?;
    let first = SMP.irq_work_queue_on(&REMOTE, t);
    let second = SMP.irq_work_queue_on(&REMOTE, t);
    let pending = REMOTE.is_pending();
    let early = RUNS.total();
    let released = parked.release();
    ensure!(first, "irq_work_queue_on(parked {t}) returned false");
    ensure!(!second, "irq_work_queue_on on a pending work returned true");
    ensure!(pending, "work not pending while CPU {t} was parked");
    ensure!(early == 1, "work ran while CPU {t} was parked");
    ensure!(released, "CPU {t} did not leave its park");
    ran(&REMOTE, t, 2, "queued twice to a parked CPU")?;
    // Not busy any more (checked with a deadline above): returns at once.
    SMP.irq_work_sync(&REMOTE);
    Ok(text!(
        "queue_on(self) ran here; queue_on({t}) ran on CPU {t}, irqs off; twice while pending: second refused, ran once"
    ))
}
