//! When a waiting (SYNC) call is released on the general flush path: the
//! flush of a queue that holds more than the one SYNC csd.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

use super::harness::{Machine, smp, this_cpu, wait_until};
use crate::smp::{CpuId, CpuMask, Csd};

/// A waiting call that shares its target's queue with an async call is
/// still in flight while its function runs: its csd is unlocked only
/// after the function, so the waiter cannot have returned yet.
///
/// The target is held with interrupts off while the caller queues an async
/// call and then a `many({target}, wait)`; released, it flushes both in
/// one go (the general path, not the lone-SYNC one: checked below). The
/// SYNC function itself looks at its csd: unlocking it before the function
/// fails this every time, whatever the timing.
#[test]
fn sync_csd_stays_locked_while_its_function_runs_in_a_shared_flush() {
    /// What the SYNC function saw: 0 not run, 1 in flight, 2 released early.
    static SEEN: AtomicU32 = AtomicU32::new(0);
    static RETURNED: AtomicBool = AtomicBool::new(false);
    static WAITER_BACK_DURING_CB: AtomicBool = AtomicBool::new(false);
    static ASYNC_RAN: AtomicBool = AtomicBool::new(false);
    fn sync_cb(caller: usize) {
        let in_flight = smp().many_call_in_flight(CpuId(caller as u32), this_cpu());
        SEEN.store(if in_flight { 1 } else { 2 }, SeqCst);
        WAITER_BACK_DURING_CB.store(RETURNED.load(SeqCst), SeqCst);
    }
    fn async_cb(_: usize) {
        ASYNC_RAN.store(true, SeqCst);
    }
    static ASYNC: Csd = Csd::new(async_cb, 0);

    let m = Machine::new(2);
    let hold = m.hold_irqs_off(1);
    let kicks = m.smp.stats(CpuId(1)).kicks_taken;
    let runs = m.smp.stats(CpuId(1)).callbacks_run;
    let queued = m.smp.stats(CpuId(0)).calls_queued;
    let waiter = m.spawn_on(0, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &ASYNC)
            .unwrap();
        smp().smp_call_function_many(CpuMask::of(CpuId(1)), sync_cb, 0, true);
        RETURNED.store(true, SeqCst);
    });
    // Both calls are on CPU 1's queue before it may flush.
    assert!(wait_until(
        || m.smp.stats(CpuId(0)).calls_queued == queued + 2
    ));
    assert!(
        !RETURNED.load(SeqCst),
        "the waiter returned before the flush"
    );
    hold.release();
    waiter.wait();
    assert!(wait_until(|| ASYNC_RAN.load(SeqCst)));
    // One flush ran both: the general path.
    let st = m.smp.stats(CpuId(1));
    assert_eq!(st.kicks_taken - kicks, 1, "not flushed together");
    assert_eq!(st.callbacks_run - runs, 2);
    assert_eq!(
        SEEN.load(SeqCst),
        1,
        "the SYNC csd was unlocked before its function ran (0: not run, 2: unlocked)"
    );
    assert!(
        !WAITER_BACK_DURING_CB.load(SeqCst),
        "the waiter returned during its function"
    );
    m.assert_clean();
}
