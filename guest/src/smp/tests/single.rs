//! `smp_call_function_single`: target, waiting, local path, errors, FIFO
//! order, IPI coalescing, and the irqs-disabled WARN.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use super::harness::{Machine, irqs_disabled, smp, this_cpu, wait_until};
use crate::smp::{Arch, CpuId, CpuMask, Csd, Event, SmpError, WarnKind};

#[test]
fn wait_runs_on_target_and_sees_callers_and_callbacks_stores() {
    static INPUT: AtomicU64 = AtomicU64::new(0);
    static OUTPUT: AtomicU64 = AtomicU64::new(0);
    static RAN_ON: AtomicU32 = AtomicU32::new(u32::MAX);
    static IRQS_OFF: AtomicBool = AtomicBool::new(false);
    fn cb(info: usize) {
        RAN_ON.store(this_cpu().0, Relaxed);
        IRQS_OFF.store(irqs_disabled(), Relaxed);
        OUTPUT.store(INPUT.load(Relaxed) + info as u64, Relaxed);
    }
    let m = Machine::new(4);
    for target in 1..4u32 {
        let got = m.run_on(0, move || {
            INPUT.store(100 * u64::from(target), Relaxed);
            let r = smp().smp_call_function_single(CpuId(target), cb, 7, true);
            (r, OUTPUT.load(Relaxed), RAN_ON.load(Relaxed))
        });
        assert_eq!(got, (Ok(()), 100 * u64::from(target) + 7, target));
        assert!(IRQS_OFF.load(Relaxed), "callback ran with interrupts on");
        assert_eq!(m.ipis(target).single, 1);
        assert_eq!(m.ipis(target).many, 0);
    }
    let s = m.smp.stats(CpuId(0));
    assert_eq!((s.calls_queued, s.ipis_requested), (3, 3));
    assert_eq!(m.smp.stats(CpuId(2)).callbacks_run, 1);
    m.assert_clean();
}

#[test]
fn nowait_call_runs_on_target() {
    static RAN: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
    fn cb(info: usize) {
        assert_eq!(info, 0xabc);
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(4);
    m.run_on(1, || {
        for _ in 0..20 {
            smp()
                .smp_call_function_single(CpuId(3), cb, 0xabc, false)
                .unwrap();
        }
    });
    assert!(wait_until(|| RAN[3].load(Relaxed) == 20));
    assert_eq!(
        RAN[0].load(Relaxed) + RAN[1].load(Relaxed) + RAN[2].load(Relaxed),
        0
    );
    m.assert_clean();
}

#[test]
fn call_to_self_runs_locally_with_irqs_off_and_sends_no_ipi() {
    static SEEN: Mutex<Vec<(u32, bool, usize)>> = Mutex::new(Vec::new());
    fn cb(info: usize) {
        SEEN.lock()
            .unwrap()
            .push((this_cpu().0, irqs_disabled(), info));
    }
    let m = Machine::new(3);
    let irqs_on_after = m.run_on(2, || {
        smp()
            .smp_call_function_single(CpuId(2), cb, 1, true)
            .unwrap();
        smp()
            .smp_call_function_single(CpuId(2), cb, 2, false)
            .unwrap();
        !irqs_disabled()
    });
    assert!(irqs_on_after, "irq_restore did not re-enable");
    assert_eq!(*SEEN.lock().unwrap(), [(2, true, 1), (2, true, 2)]);
    for cpu in 0..3 {
        assert_eq!(m.ipis(cpu), Default::default());
    }
    assert_eq!(m.smp.stats(CpuId(2)).calls_queued, 0);
    m.assert_clean();
}

#[test]
fn invalid_or_offline_cpu_is_nxio_and_leaves_csds_unlocked() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    static ASYNC: Csd = Csd::new(cb, 0);
    // CPU 3 exists but is offline; nr_cpu_ids is 4.
    let m = Machine::with_online(4, CpuMask::from_word0(0b0111));
    m.run_on(0, || {
        let s = smp();
        for cpu in [3, 4, 63, 64, 1000, u32::MAX] {
            for wait in [true, false] {
                assert_eq!(
                    s.smp_call_function_single(CpuId(cpu), cb, 0, wait),
                    Err(SmpError::Nxio)
                );
            }
            assert_eq!(
                s.smp_call_function_single_async(CpuId(cpu), &ASYNC),
                Err(SmpError::Nxio)
            );
            assert!(!ASYNC.is_locked(), "async csd left locked after -ENXIO");
        }
        // The per-CPU csd_data and the user's csd are usable right away.
        s.smp_call_function_single(CpuId(1), cb, 0, false).unwrap();
        s.smp_call_function_single_async(CpuId(2), &ASYNC).unwrap();
    });
    assert!(wait_until(|| RAN.load(Relaxed) == 2));
    assert_eq!(m.ipis(3), Default::default());
    assert_eq!(SmpError::Nxio.errno(), -6);
    assert_eq!(SmpError::Busy.errno(), -16);
    assert_eq!(SmpError::NoMem.errno(), -12);
    m.assert_clean();
}

#[test]
fn fifo_order_and_ipi_coalescing() {
    static LOG: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    fn log(info: usize) {
        LOG.lock().unwrap().push(info);
    }
    static CSDS: [Csd; 8] = [const { Csd::new(log, 0) }; 8];
    let m = Machine::new(3);
    let hold = m.hold_irqs_off(1);
    m.run_on(0, || {
        for (i, csd) in CSDS.iter().enumerate() {
            csd.set(log, i).unwrap();
            smp().smp_call_function_single_async(CpuId(1), csd).unwrap();
        }
    });
    m.run_on(2, || {
        smp()
            .smp_call_function_single(CpuId(1), log, 100, false)
            .unwrap()
    });
    // Nine calls queued to a CPU that cannot take interrupts: one IPI.
    assert_eq!(m.ipis(1).single, 1);
    assert!(LOG.lock().unwrap().is_empty());
    hold.release();
    assert_eq!(*LOG.lock().unwrap(), [0, 1, 2, 3, 4, 5, 6, 7, 100]);
    assert_eq!(m.arch().cpu(1).handled.load(Relaxed), 1);
    // The queue is empty again: the next call IPIs again.
    m.run_on(0, || {
        smp()
            .smp_call_function_single(CpuId(1), log, 9, true)
            .unwrap()
    });
    assert_eq!(m.ipis(1).single, 2);
    assert_eq!(m.smp.stats(CpuId(1)).callbacks_run, 10);
    m.assert_clean();
}

#[test]
fn call_with_irqs_disabled_warns_whether_or_not_waiting() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    let m = Machine::new(3);
    m.run_on(0, || {
        let a = smp().arch();
        let flags = a.irq_save();
        // CPU 1 has interrupts on, so this does not deadlock.
        smp()
            .smp_call_function_single(CpuId(1), cb, 0, true)
            .unwrap();
        smp()
            .smp_call_function_single(CpuId(2), cb, 0, false)
            .unwrap();
        // The local call and a refused one warn too (the waiting remote
        // call checks after its IPI, the others first).
        smp()
            .smp_call_function_single(CpuId(0), cb, 0, true)
            .unwrap();
        assert_eq!(
            smp().smp_call_function_single(CpuId(9), cb, 0, true),
            Err(crate::smp::SmpError::Nxio)
        );
        a.irq_restore(flags);
    });
    assert!(wait_until(|| RAN.load(Relaxed) == 3));
    assert_eq!(
        m.smp.warn_count(CpuId(0), WarnKind::WaitWithIrqsDisabled),
        4
    );
    assert_eq!(
        m.warns(),
        [
            (0, WarnKind::WaitWithIrqsDisabled, 1),
            (0, WarnKind::WaitWithIrqsDisabled, 2),
            (0, WarnKind::WaitWithIrqsDisabled, 0),
            (0, WarnKind::WaitWithIrqsDisabled, 9)
        ]
    );
    match m.events()[1] {
        Event::Warn { count, .. } => assert_eq!(count, 2),
        e => panic!("{e:?}"),
    }
}

#[test]
fn offline_caller_may_call_with_irqs_disabled() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    // CPU 2 is still coming up (not online): nobody can be waiting for it.
    let m = Machine::with_online(3, CpuMask::from_word0(0b011));
    m.run_on(2, || {
        let flags = smp().arch().irq_save();
        smp()
            .smp_call_function_single(CpuId(0), cb, 0, true)
            .unwrap();
        smp().arch().irq_restore(flags);
    });
    assert_eq!(RAN.load(Relaxed), 1);
    m.assert_clean();
}

#[test]
fn waiting_call_to_a_cpu_with_a_nonempty_queue_sends_no_ipi() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    static FIRST: Csd = Csd::new(cb, 0);
    let m = Machine::new(3);
    let hold = m.hold_irqs_off(1);
    m.run_on(0, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &FIRST)
            .unwrap()
    });
    let mut waiter = m.spawn_on(2, || {
        smp()
            .smp_call_function_single(CpuId(1), cb, 0, true)
            .unwrap();
        RAN.load(Relaxed)
    });
    assert!(wait_until(|| m.smp.stats(CpuId(2)).calls_queued == 1));
    assert!(m.wait_spinning(2), "the waiter is not waiting");
    assert!(!waiter.finished_within(std::time::Duration::ZERO));
    assert_eq!(m.ipis(1).single, 1, "second call found the queue non-empty");
    hold.release();
    assert_eq!(waiter.wait(), 2);
    assert_eq!(m.ipis(1).single, 1);
    m.assert_clean();
}

#[test]
fn waiting_call_returns_only_after_the_callback_finished() {
    static DONE: AtomicBool = AtomicBool::new(false);
    fn slow(_: usize) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        DONE.store(true, Relaxed);
    }
    let m = Machine::new(2);
    assert!(m.run_on(0, || {
        smp()
            .smp_call_function_single(CpuId(1), slow, 0, true)
            .unwrap();
        DONE.load(Relaxed)
    }));
    m.assert_clean();
}

#[test]
fn flush_runs_waited_for_calls_before_fire_and_forget_ones() {
    static LOG: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    fn log(info: usize) {
        LOG.lock().unwrap().push(info);
    }
    static EARLY: Csd = Csd::new(log, 1);
    let m = Machine::new(3);
    let hold = m.hold_irqs_off(1);
    m.run_on(0, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &EARLY)
            .unwrap()
    });
    let waiter = m.spawn_on(2, || smp().smp_call_function_single(CpuId(1), log, 2, true));
    assert!(wait_until(|| m.smp.stats(CpuId(2)).calls_queued == 1));
    m.run_on(0, || {
        smp()
            .smp_call_function_single(CpuId(1), log, 3, false)
            .unwrap()
    });
    hold.release();
    assert_eq!(waiter.wait(), Ok(()));
    // Queued ASYNC, SYNC, ASYNC: the SYNC one runs first, the rest in order.
    assert_eq!(*LOG.lock().unwrap(), [2, 1, 3]);
    m.assert_clean();
}
