//! The csd-lock stall detector: report, IPI re-send after a lost IPI,
//! "handling a prior request", back-off, unstuck, and off.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use super::harness::{Machine, addr, smp, wait_until};
use crate::smp::{CpuId, CpuMask, Csd, Event};

const MS: u64 = 1_000_000;

fn stalls(m: &Machine) -> Vec<Event> {
    m.events()
        .into_iter()
        .filter(|e| matches!(e, Event::CsdStall { .. }))
        .collect()
}

fn unstuck(m: &Machine) -> Vec<Event> {
    m.events()
        .into_iter()
        .filter(|e| matches!(e, Event::CsdUnstuck { .. }))
        .collect()
}

#[test]
fn lost_ipi_is_reported_resent_and_unstuck() {
    // One instance with a body of its own, so that its address is the one
    // the core reports (release builds copy small functions per codegen
    // unit and merge identical ones).
    #[inline(never)]
    fn cb(info: usize) {
        std::hint::black_box(info ^ 0x5101);
    }
    let m = Machine::new(2);
    m.smp.set_csd_lock_timeout_ns(20 * MS);
    m.arch().drop_next_ipis(1, 1);
    assert_eq!(
        m.run_on(0, || smp().smp_call_function_single(CpuId(1), cb, 42, true)),
        Ok(())
    );
    // One report, normally; a heavily loaded host may delay the target long
    // enough for a second one (another re-send), which is fine too.
    let s = stalls(&m);
    assert!(!s.is_empty());
    let Event::CsdStall {
        id,
        target,
        func,
        info,
        waited_ns,
        target_running,
        nth,
        resent_ipi,
    } = s[0]
    else {
        unreachable!()
    };
    assert_eq!((target, func, info), (CpuId(1), addr(cb) as u64, 42));
    // The waiter reports its own stall (the record's sender).
    assert!(m.reporters().iter().all(|&c| c == CpuId(0)));
    assert_eq!((target_running, nth, resent_ipi), (0, 1, true));
    // Every report that re-sent counts once in stall_ipis_resent.
    let resends = s
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::CsdStall {
                    resent_ipi: true,
                    ..
                }
            )
        })
        .count() as u64;
    assert_eq!(m.smp.stall_ipis_resent(), resends);
    assert!(waited_ns > 20 * MS, "{waited_ns}");
    assert!(id >= 1);
    match unstuck(&m)[..] {
        [
            Event::CsdUnstuck {
                id: uid,
                target,
                func: ufunc,
                waited_ns: total,
                reports,
            },
        ] => {
            assert_eq!(
                (uid, target, ufunc, reports as usize),
                (id, CpuId(1), func, s.len())
            );
            assert!(total >= waited_ns);
        }
        ref other => panic!("{other:?}"),
    }
    let resent = s.len() as u64;
    assert_eq!(m.ipis(1).single, 1 + resent);
    assert_eq!(m.ipis(1).dropped, 1);
    assert_eq!(m.smp.stats(CpuId(0)).ipis_requested, 1 + resent);
    assert!(!m.smp.csd_lock_is_stuck());
    assert_eq!(m.events().len(), s.len() + 1);
}

#[test]
fn busy_target_is_reported_with_its_running_callback_and_no_resend() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    static STARTED: AtomicBool = AtomicBool::new(false);
    #[inline(never)]
    fn long(_: usize) {
        STARTED.store(true, SeqCst);
        while !RELEASE.load(SeqCst) {
            std::thread::yield_now();
        }
    }
    // One instance with a body of its own, so that its address is the one
    // the core reports (release builds copy small functions per codegen
    // unit and merge identical ones).
    #[inline(never)]
    fn cb(info: usize) {
        std::hint::black_box(info ^ 0x5102);
    }
    static LONG: Csd = Csd::new(long, 0);
    let m = Machine::new(3);
    m.smp.set_csd_lock_timeout_ns(10 * MS);
    m.run_on(2, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &LONG)
            .unwrap()
    });
    // CPU 1 must be inside `long` before the waiter queues (else the flush
    // would take both and run the waited-for call first).
    assert!(wait_until(|| STARTED.load(SeqCst)));
    let waiter = m.spawn_on(0, || smp().smp_call_function_single(CpuId(1), cb, 7, true));
    assert!(wait_until(|| !stalls(&m).is_empty()));
    assert!(m.smp.csd_lock_is_stuck());
    RELEASE.store(true, SeqCst);
    assert_eq!(waiter.wait(), Ok(()));
    let Event::CsdStall {
        target,
        func,
        target_running,
        resent_ipi,
        ..
    } = stalls(&m)[0]
    else {
        unreachable!()
    };
    assert_eq!((target, func), (CpuId(1), addr(cb) as u64));
    assert_eq!(
        target_running,
        addr(long) as u64,
        "names the prior callback"
    );
    assert!(!resent_ipi);
    assert_eq!(m.smp.stall_ipis_resent(), 0);
    assert!(stalls(&m).iter().all(|e| matches!(
        e,
        Event::CsdStall {
            resent_ipi: false,
            ..
        }
    )));
    assert_eq!(unstuck(&m).len(), 1);
    assert!(!m.smp.csd_lock_is_stuck());
    // One IPI per call (the flush had emptied the queue when the second
    // call came), none re-sent.
    assert_eq!(m.ipis(1).single, 2);
}

#[test]
fn repeated_reports_back_off() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    static STARTED: AtomicBool = AtomicBool::new(false);
    #[inline(never)]
    fn long(_: usize) {
        STARTED.store(true, SeqCst);
        while !RELEASE.load(SeqCst) {
            std::thread::yield_now();
        }
    }
    // One instance with a body of its own, so that its address is the one
    // the core reports (release builds copy small functions per codegen
    // unit and merge identical ones).
    #[inline(never)]
    fn cb(info: usize) {
        std::hint::black_box(info ^ 0x5103);
    }
    static LONG: Csd = Csd::new(long, 0);
    const T: u64 = 5 * MS;
    // Four online CPUs: later reports are spaced by T * n * (log2(4)/2 + 1).
    let m = Machine::new(4);
    m.smp.set_csd_lock_timeout_ns(T);
    m.run_on(2, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &LONG)
            .unwrap()
    });
    // CPU 1 must be inside `long` before the waiter queues (else the flush
    // would take both and run the waited-for call first).
    assert!(wait_until(|| STARTED.load(SeqCst)));
    let waiter = m.spawn_on(0, || smp().smp_call_function_single(CpuId(1), cb, 0, true));
    assert!(wait_until(|| stalls(&m).len() >= 3));
    RELEASE.store(true, SeqCst);
    assert_eq!(waiter.wait(), Ok(()));
    let times: Vec<(u32, u64)> = stalls(&m)
        .iter()
        .map(|e| match *e {
            Event::CsdStall { nth, waited_ns, .. } => (nth, waited_ns),
            _ => unreachable!(),
        })
        .collect();
    for (i, w) in times.windows(2).enumerate() {
        let n = i as u64 + 1; // reports made before the later one
        assert_eq!(w[1].0, w[0].0 + 1);
        assert!(w[1].1 - w[0].1 > T * (n + 1) * 2, "{times:?}");
    }
    match unstuck(&m)[..] {
        [Event::CsdUnstuck { reports, .. }] => assert_eq!(reports as usize, times.len()),
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn stall_in_a_many_call_names_the_right_target() {
    // One instance with a body of its own, so that its address is the one
    // the core reports (release builds copy small functions per codegen
    // unit and merge identical ones).
    #[inline(never)]
    fn cb(info: usize) {
        std::hint::black_box(info ^ 0x5104);
    }
    let m = Machine::new(3);
    m.smp.set_csd_lock_timeout_ns(10 * MS);
    // Both targets need an IPI, so they get one mask IPI; CPU 2's is lost.
    m.arch().drop_next_ipis(2, 1);
    m.run_on(0, || {
        smp().smp_call_function_many(CpuMask::from_word0(0b110), cb, 9, true)
    });
    let s = stalls(&m);
    assert!(!s.is_empty());
    for e in &s {
        match *e {
            Event::CsdStall {
                target,
                resent_ipi,
                info,
                ..
            } => assert_eq!((target, resent_ipi, info), (CpuId(2), true, 9)),
            _ => unreachable!(),
        }
    }
    assert_eq!(m.ipis(2).many, 1);
    assert_eq!(
        m.ipis(2).single,
        s.len() as u64,
        "re-sent with the single-target IPI"
    );
    assert_eq!(
        m.ipis(1),
        crate::smp::tests::harness::Ipis {
            many: 1,
            ..Default::default()
        }
    );
    assert_eq!(unstuck(&m).len(), 1);
}

#[test]
fn detector_off_with_zero_timeout() {
    // One instance with a body of its own, so that its address is the one
    // the core reports (release builds copy small functions per codegen
    // unit and merge identical ones).
    #[inline(never)]
    fn cb(info: usize) {
        std::hint::black_box(info ^ 0x5105);
    }
    let m = Machine::new(2);
    m.smp.set_csd_lock_timeout_ns(0);
    m.arch().drop_next_ipis(1, 1);
    let mut waiter = m.spawn_on(0, || smp().smp_call_function_single(CpuId(1), cb, 0, true));
    assert!(!waiter.finished_within(Duration::from_millis(50)));
    m.send_ipi(1); // the "late" IPI
    assert_eq!(waiter.wait(), Ok(()));
    m.assert_clean();
}
