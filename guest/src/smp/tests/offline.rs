//! The flush's WARNs: IPI on an offline CPU (with the pending callbacks),
//! flush with interrupts enabled, unlock of an unlocked csd; and the
//! task-context flush.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::harness::{Machine, addr, smp, this_cpu, wait_until};
use crate::smp::{Arch, CpuId, Csd, Event, WarnKind};

#[test]
fn ipi_on_offline_cpu_is_reported_with_its_pending_callbacks() {
    static LOG: Mutex<Vec<(u32, usize)>> = Mutex::new(Vec::new());
    // `inline(never)` and distinct bodies: the addresses are compared below.
    #[inline(never)]
    fn a(info: usize) {
        LOG.lock().unwrap().push((this_cpu().0, info));
    }
    #[inline(never)]
    fn b(info: usize) {
        LOG.lock().unwrap().push((this_cpu().0, info + 1000));
    }
    static A: Csd = Csd::new(a, 1);
    let m = Machine::new(3);
    // Calls reach CPU 2 while it is online but has interrupts off; then it
    // goes offline without the dying flush, and the IPI arrives late.
    let hold = m.hold_irqs_off(2);
    m.run_on(0, || {
        smp().smp_call_function_single_async(CpuId(2), &A).unwrap();
        smp()
            .smp_call_function_single(CpuId(2), b, 2, false)
            .unwrap();
    });
    m.smp.set_cpu_online(CpuId(2), false).unwrap();
    hold.release();
    assert_eq!(
        m.warns(),
        [
            (2, WarnKind::IpiOnOfflineCpu, 2),
            (2, WarnKind::CallbackOnOfflineCpu, addr(a) as u64),
            (2, WarnKind::CallbackOnOfflineCpu, addr(b) as u64),
        ]
    );
    // They still ran, in order, once.
    assert_eq!(*LOG.lock().unwrap(), [(2, 1), (2, 1002)]);

    // A second time: counted, not reported again.
    m.smp.set_cpu_online(CpuId(2), true).unwrap();
    let hold = m.hold_irqs_off(2);
    m.run_on(1, || {
        smp().smp_call_function_single_async(CpuId(2), &A).unwrap()
    });
    m.smp.set_cpu_online(CpuId(2), false).unwrap();
    hold.release();
    assert_eq!(m.warns().len(), 3);
    assert_eq!(m.smp.warn_count(CpuId(2), WarnKind::IpiOnOfflineCpu), 2);
    assert_eq!(
        m.smp.warn_count(CpuId(2), WarnKind::CallbackOnOfflineCpu),
        3
    );
    assert_eq!(LOG.lock().unwrap().len(), 3);
}

#[test]
fn empty_ipi_on_offline_cpu_is_not_a_warning() {
    let m = Machine::with_online(2, crate::smp::CpuMask::from_word0(0b01));
    m.send_ipi(1);
    assert!(wait_until(|| m.arch().cpu(1).handled.load(Relaxed) == 1));
    m.assert_clean();
}

#[test]
fn flush_with_irqs_enabled_warns() {
    let m = Machine::new(2);
    m.run_on(0, || smp().generic_smp_call_function_interrupt());
    assert_eq!(m.warns(), [(0, WarnKind::FlushWithIrqsEnabled, 0)]);
    assert_eq!(
        m.smp
            .stats(CpuId(0))
            .warn_count(WarnKind::FlushWithIrqsEnabled),
        1
    );
}

#[test]
fn task_context_flush_runs_calls_whose_ipi_was_lost() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    static CSD: Csd = Csd::new(cb, 0);
    let m = Machine::new(2);
    m.arch().drop_next_ipis(1, 1);
    m.run_on(0, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &CSD)
            .unwrap()
    });
    assert_eq!(m.ipis(1).dropped, 1);
    // CPU 1 passes a point where it takes pending interrupts (interrupts
    // on): had the IPI got through, the call would have run by now.
    let ran = m.run_on(1, || {
        smp().arch().cpu_relax();
        RAN.load(Relaxed)
    });
    assert_eq!(ran, 0, "ran without an IPI");
    m.run_on(1, || smp().run_pending_calls());
    assert_eq!(RAN.load(Relaxed), 1);
    // Nothing queued: returns at once.
    m.run_on(1, || smp().run_pending_calls());
    assert_eq!(RAN.load(Relaxed), 1);
    m.assert_clean();
}

#[test]
fn unlocking_an_unlocked_csd_warns() {
    fn cb(_: usize) {}
    let m = Machine::new(1);
    m.run_on(0, || {
        let csd = Csd::new(cb, 0);
        smp().csd_unlock(this_cpu(), &csd, 0x1234);
    });
    assert_eq!(m.warns(), [(0, WarnKind::UnlockNotLocked, 0x1234)]);
    match m.events()[0] {
        Event::Warn { count, .. } => assert_eq!(count, 1),
        e => panic!("{e:?}"),
    }
}
