//! `smp_call_function_single_async` and user csds: `-EBUSY`, reuse,
//! requeueing from the callback, the local path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use super::harness::{Machine, irqs_disabled, smp, this_cpu, wait_until};
use crate::smp::{Arch, CpuId, Csd, SmpError};

#[test]
fn busy_while_in_flight_then_reusable() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    fn other(_: usize) {}
    static CSD: Csd = Csd::new(cb, 0);
    let m = Machine::new(3);
    let hold = m.hold_irqs_off(1);
    m.run_on(0, || {
        let s = smp();
        s.smp_call_function_single_async(CpuId(1), &CSD).unwrap();
        assert!(CSD.is_locked());
        assert_eq!(
            s.smp_call_function_single_async(CpuId(1), &CSD),
            Err(SmpError::Busy)
        );
        assert_eq!(
            s.smp_call_function_single_async(CpuId(2), &CSD),
            Err(SmpError::Busy)
        );
        assert_eq!(
            s.smp_call_function_single_async(CpuId(0), &CSD),
            Err(SmpError::Busy)
        );
        assert_eq!(CSD.set(other, 5), Err(SmpError::Busy));
    });
    assert_eq!(RAN.load(Relaxed), 0);
    hold.release();
    assert_eq!(RAN.load(Relaxed), 1);
    assert!(!CSD.is_locked());
    // Reusable, also from another CPU.
    m.run_on(2, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &CSD)
            .unwrap()
    });
    assert!(wait_until(|| RAN.load(Relaxed) == 2));
    m.assert_clean();
}

#[test]
fn callback_requeues_its_own_csd() {
    static HOPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    static FAILED: AtomicBool = AtomicBool::new(false);
    fn hop(_: usize) {
        let me = this_cpu().0;
        let mut hops = HOPS.lock().unwrap();
        hops.push(me);
        if hops.len() < 9 {
            drop(hops);
            // The flush unlocked the csd before calling us.
            if smp()
                .smp_call_function_single_async(CpuId((me + 1) % 3), &CSD)
                .is_err()
            {
                FAILED.store(true, Relaxed);
            }
        }
    }
    static CSD: Csd = Csd::new(hop, 0);
    let m = Machine::new(3);
    m.run_on(0, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &CSD)
            .unwrap()
    });
    assert!(wait_until(|| HOPS.lock().unwrap().len() == 9));
    assert!(!FAILED.load(Relaxed));
    assert_eq!(*HOPS.lock().unwrap(), [1, 2, 0, 1, 2, 0, 1, 2, 0]);
    assert!(wait_until(|| !CSD.is_locked()));
    m.assert_clean();
}

#[test]
fn async_to_self_runs_now_with_irqs_off_and_unlocked() {
    static SEEN: Mutex<Vec<(u32, bool, bool, usize)>> = Mutex::new(Vec::new());
    fn cb(info: usize) {
        SEEN.lock()
            .unwrap()
            .push((this_cpu().0, irqs_disabled(), CSD.is_locked(), info));
    }
    static CSD: Csd = Csd::new(cb, 33);
    let m = Machine::new(2);
    m.run_on(1, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &CSD)
            .unwrap()
    });
    assert_eq!(*SEEN.lock().unwrap(), [(1, true, false, 33)]);
    assert_eq!(m.ipis(1), Default::default());
    m.assert_clean();
}

#[test]
fn async_is_allowed_with_irqs_disabled() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    static CSD: Csd = Csd::new(cb, 0);
    let m = Machine::new(2);
    m.run_on(0, || {
        let flags = smp().arch().irq_save();
        smp()
            .smp_call_function_single_async(CpuId(1), &CSD)
            .unwrap();
        smp().arch().irq_restore(flags);
    });
    assert!(wait_until(|| RAN.load(Relaxed) == 1));
    m.assert_clean();
}

#[test]
fn csd_set_changes_function_and_info_when_idle() {
    static GOT: Mutex<Vec<(u8, usize)>> = Mutex::new(Vec::new());
    fn a(info: usize) {
        GOT.lock().unwrap().push((b'a', info));
    }
    fn b(info: usize) {
        GOT.lock().unwrap().push((b'b', info));
    }
    static CSD: Csd = Csd::new(a, 1);
    let m = Machine::new(2);
    m.run_on(0, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &CSD)
            .unwrap()
    });
    assert!(wait_until(|| GOT.lock().unwrap().len() == 1));
    assert!(wait_until(|| CSD.set(b, 2).is_ok()));
    m.run_on(0, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &CSD)
            .unwrap()
    });
    assert!(wait_until(|| GOT.lock().unwrap().len() == 2));
    assert_eq!(*GOT.lock().unwrap(), [(b'a', 1), (b'b', 2)]);
    m.assert_clean();
}
