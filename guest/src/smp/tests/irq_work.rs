//! irq_work: local queueing with the self-IPI, remote queueing through the
//! call queue, claiming, requeueing, sync, refusal of offline targets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use super::harness::{Machine, irqs_disabled, smp, this_cpu, wait_until};
use crate::smp::{Arch, CpuId, CpuMask, IrqWork, WarnKind};

#[test]
fn irq_work_queue_runs_from_the_self_interrupt_once() {
    static SEEN: Mutex<Vec<(u32, bool)>> = Mutex::new(Vec::new());
    fn work(_: &IrqWork) {
        SEEN.lock().unwrap().push((this_cpu().0, irqs_disabled()));
    }
    static W: IrqWork = IrqWork::new(work);
    let m = Machine::new(2);
    let pending_then = m.run_on(1, || {
        let s = smp();
        let flags = s.arch().irq_save();
        assert!(s.irq_work_queue(&W));
        assert!(!s.irq_work_queue(&W), "claimed twice while pending");
        let pending = W.is_pending() && W.is_busy();
        let ran_early = !SEEN.lock().unwrap().is_empty();
        s.arch().irq_restore(flags); // takes the irq_work interrupt
        (pending, ran_early)
    });
    assert_eq!(pending_then, (true, false));
    assert_eq!(*SEEN.lock().unwrap(), [(1, true)]);
    assert_eq!(m.ipis(1).irq_work, 1);
    assert!(!W.is_pending() && !W.is_busy());
    m.assert_clean();
}

#[test]
fn call_ipi_leaves_local_irq_work_to_its_vector_task_flush_runs_it() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn work(_: &IrqWork) {
        RAN.fetch_add(1, Relaxed);
    }
    static W: IrqWork = IrqWork::new(work);
    let m = Machine::new(2);
    let seen = m.run_on(1, || {
        let s = smp();
        let flags = s.arch().irq_save();
        assert!(s.irq_work_queue(&W));
        // A call-function IPI taken now runs calls only (modern Linux):
        // the work's own self-interrupt is pending.
        s.generic_smp_call_function_interrupt();
        let after_ipi = RAN.load(Relaxed);
        // The task-context flush (a polling idle loop) runs it, as the
        // seed's flush did.
        s.run_pending_calls();
        let after_flush = RAN.load(Relaxed);
        s.arch().irq_restore(flags); // its self-interrupt finds nothing
        (after_ipi, after_flush)
    });
    assert_eq!(seen, (0, 1));
    assert_eq!(RAN.load(Relaxed), 1);
    assert_eq!(m.ipis(1).irq_work, 1);
    m.assert_clean();
}

#[test]
fn irq_work_queue_on_runs_remotely_through_the_call_queue() {
    static RAN_ON: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    fn work(_: &IrqWork) {
        RAN_ON.lock().unwrap().push(this_cpu().0);
    }
    fn call(_: usize) {}
    static W: IrqWork = IrqWork::new(work);
    let m = Machine::new(3);
    assert!(m.run_on(0, || smp().irq_work_queue_on(&W, CpuId(2))));
    assert!(wait_until(|| RAN_ON.lock().unwrap().len() == 1));
    assert_eq!(
        m.ipis(2).single,
        1,
        "remote irq_work uses the call-function-single IPI"
    );
    assert_eq!(m.ipis(2).irq_work, 0);
    // Shares the queue with csds: one IPI for both, and a pending work is
    // not queued twice.
    let hold = m.hold_irqs_off(2);
    m.run_on(0, || {
        smp()
            .smp_call_function_single(CpuId(2), call, 0, false)
            .unwrap();
        assert!(smp().irq_work_queue_on(&W, CpuId(2)));
        assert!(!smp().irq_work_queue_on(&W, CpuId(2)));
    });
    m.run_on(1, || assert!(!smp().irq_work_queue_on(&W, CpuId(2))));
    hold.release();
    assert_eq!(*RAN_ON.lock().unwrap(), [2, 2]);
    assert_eq!(m.ipis(2).single, 2);
    m.assert_clean();
}

#[test]
fn irq_work_queue_on_self_is_local() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn work(_: &IrqWork) {
        RAN.fetch_add(1, Relaxed);
    }
    static W: IrqWork = IrqWork::new(work);
    let m = Machine::new(2);
    assert!(m.run_on(0, || smp().irq_work_queue_on(&W, CpuId(0))));
    assert!(wait_until(|| RAN.load(Relaxed) == 1));
    assert_eq!(m.ipis(0).irq_work, 1);
    assert_eq!(m.ipis(0).single, 0);
    m.assert_clean();
}

#[test]
fn irq_work_may_requeue_itself() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn work(w: &IrqWork) {
        // PENDING is clear while we run: the claim succeeds.
        if RAN.fetch_add(1, Relaxed) < 4 {
            let me = this_cpu().0;
            assert!(smp().irq_work_queue_on(STATIC, CpuId((me + 1) % 2)));
        }
        assert!(w.is_busy());
    }
    static W: IrqWork = IrqWork::new(work);
    static STATIC: &IrqWork = &W;
    let m = Machine::new(2);
    assert!(m.run_on(0, || smp().irq_work_queue(&W)));
    assert!(wait_until(|| RAN.load(Relaxed) == 5 && !W.is_busy()));
    m.assert_clean();
}

#[test]
fn irq_work_sync_waits_until_it_ran() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn work(_: &IrqWork) {
        RAN.fetch_add(1, Relaxed);
    }
    static W: IrqWork = IrqWork::new(work);
    let m = Machine::new(3);
    let hold = m.hold_irqs_off(2);
    assert!(m.run_on(0, || smp().irq_work_queue_on(&W, CpuId(2))));
    let mut syncer = m.spawn_on(1, || {
        smp().irq_work_sync(&W);
        RAN.load(Relaxed)
    });
    assert!(!syncer.finished_within(Duration::from_millis(30)));
    assert!(W.is_busy());
    hold.release();
    assert_eq!(syncer.wait(), 1);
    assert!(!W.is_busy());
    m.assert_clean();
}

#[test]
fn irq_work_sync_reports_a_long_wait_once_and_goes_on() {
    fn work(_: &IrqWork) {}
    static W: IrqWork = IrqWork::new(work);
    let m = Machine::new(3);
    m.smp.set_csd_lock_timeout_ns(10_000_000);
    let hold = m.hold_irqs_off(2);
    assert!(m.run_on(0, || smp().irq_work_queue_on(&W, CpuId(2))));
    let mut syncer = m.spawn_on(1, || smp().irq_work_sync(&W));
    let stalled = [(1, WarnKind::IrqWorkSyncStall, W.func_addr() as u64)];
    assert!(wait_until(|| m.warns() == stalled), "{:?}", m.warns());
    // Reported, still waiting (a work that is queued will run).
    assert!(!syncer.finished_within(Duration::from_millis(30)));
    hold.release();
    syncer.wait();
    assert!(!W.is_busy());
    assert_eq!(m.warns(), stalled, "reported once");
    assert_eq!(m.smp.warn_count(CpuId(1), WarnKind::IrqWorkSyncStall), 1);
}

#[test]
fn irq_work_to_offline_or_invalid_cpu_is_refused_and_warned() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn work(_: &IrqWork) {
        RAN.fetch_add(1, Relaxed);
    }
    static W: IrqWork = IrqWork::new(work);
    let m = Machine::with_online(3, CpuMask::from_word0(0b011));
    m.run_on(0, || {
        assert!(!smp().irq_work_queue_on(&W, CpuId(2)));
        assert!(!smp().irq_work_queue_on(&W, CpuId(70)));
        assert!(!W.is_pending());
    });
    assert_eq!(
        m.warns(),
        [
            (0, WarnKind::IrqWorkOnOfflineCpu, 2),
            (0, WarnKind::IrqWorkOnOfflineCpu, 70)
        ]
    );
    assert_eq!(m.smp.warn_count(CpuId(0), WarnKind::IrqWorkOnOfflineCpu), 2);
    assert_eq!(RAN.load(Relaxed), 0);
    assert_eq!(m.ipis(2), Default::default());
}

#[test]
fn irq_work_run_with_irqs_enabled_warns() {
    let m = Machine::new(1);
    m.run_on(0, || smp().irq_work_run());
    assert_eq!(m.warns(), [(0, WarnKind::FlushWithIrqsEnabled, 1)]);
}

#[test]
fn local_irq_work_runs_oldest_first() {
    static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    fn a(_: &IrqWork) {
        LOG.lock().unwrap().push(b'a');
    }
    fn b(_: &IrqWork) {
        LOG.lock().unwrap().push(b'b');
    }
    fn c(_: &IrqWork) {
        LOG.lock().unwrap().push(b'c');
    }
    static WORKS: [IrqWork; 3] = [IrqWork::new(a), IrqWork::new(b), IrqWork::new(c)];
    let m = Machine::new(1);
    m.run_on(0, || {
        let flags = smp().arch().irq_save();
        for w in &WORKS {
            assert!(smp().irq_work_queue(w));
        }
        smp().arch().irq_restore(flags);
    });
    assert_eq!(*LOG.lock().unwrap(), b"abc");
    assert_eq!(m.ipis(0).irq_work, 1, "one self-IPI for the three");
    m.assert_clean();
}
