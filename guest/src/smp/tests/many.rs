//! `smp_call_function_many_cond` and its wrappers.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use super::harness::{Machine, irqs_disabled, smp, this_cpu, wait_until};
use crate::smp::{Arch, CpuId, CpuMask, Csd, ScfFlags, WarnKind};

fn counts(ran: &[AtomicU32]) -> Vec<u32> {
    ran.iter().map(|c| c.load(Relaxed)).collect()
}

#[test]
fn many_skips_self_and_offline_cpus() {
    static RAN: [AtomicU32; 5] = [const { AtomicU32::new(0) }; 5];
    fn cb(info: usize) {
        assert_eq!(info, 77);
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    // CPU 4 offline.
    let m = Machine::with_online(5, CpuMask::from_word0(0b01111));
    m.run_on(1, || {
        smp().smp_call_function_many(CpuMask::ALL, cb, 77, true)
    });
    assert_eq!(counts(&RAN), [1, 0, 1, 1, 0]);
    // One mask IPI to the three CPUs whose queues were empty.
    assert_eq!(m.arch().mask_sends.load(Relaxed), 1);
    for (cpu, many) in [(0, 1), (1, 0), (2, 1), (3, 1), (4, 0)] {
        assert_eq!(m.ipis(cpu).many, many, "cpu{cpu}");
        assert_eq!(m.ipis(cpu).single, 0, "cpu{cpu}");
    }
    assert_eq!(m.smp.stats(CpuId(1)).ipis_requested, 3);
    // Only itself and offline CPUs: nothing happens.
    m.run_on(1, || {
        smp().smp_call_function_many(CpuMask::from_word0(0b10010), cb, 77, true)
    });
    assert_eq!(counts(&RAN), [1, 0, 1, 1, 0]);
    m.assert_clean();
}

#[test]
fn one_target_gets_the_single_ipi() {
    static RAN: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(3);
    m.run_on(0, || {
        smp().smp_call_function_many(CpuMask::from_word0(0b101), cb, 0, true)
    });
    assert_eq!(counts(&RAN), [0, 0, 1]);
    assert_eq!(m.ipis(2).single, 1);
    assert_eq!(m.arch().mask_sends.load(Relaxed), 0);
    m.assert_clean();
}

#[test]
fn wait_iff_enqueued_even_without_an_ipi() {
    // The 2025 regression: a CPU whose queue was already non-empty gets no
    // new IPI, but the caller must still wait for it.
    static RAN: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    fn earlier(_: usize) {}
    static EARLIER: Csd = Csd::new(earlier, 0);
    let m = Machine::new(3);
    let hold = m.hold_irqs_off(1);
    m.run_on(0, || {
        smp()
            .smp_call_function_single_async(CpuId(1), &EARLIER)
            .unwrap()
    });
    assert_eq!(m.ipis(1).single, 1);
    let mut caller = m.spawn_on(2, || {
        smp().smp_call_function_many(CpuMask::from_word0(0b011), cb, 0, true);
        // What the caller sees the moment it returns.
        (RAN[0].load(Relaxed), RAN[1].load(Relaxed))
    });
    // CPU 0 ran it; CPU 1 cannot yet, and the caller must be waiting for it.
    assert!(wait_until(|| RAN[0].load(Relaxed) == 1));
    assert!(
        !caller.finished_within(Duration::from_millis(50)),
        "returned before CPU 1 ran the call"
    );
    assert_eq!(RAN[1].load(Relaxed), 0);
    // CPU 1 got no second IPI: its queue was not empty. CPU 0 was the only
    // CPU that needed one, so it got the single-target IPI.
    assert_eq!(
        m.ipis(1),
        crate::smp::tests::harness::Ipis {
            single: 1,
            ..Default::default()
        }
    );
    assert_eq!(m.ipis(0).single, 1);
    assert_eq!(m.arch().mask_sends.load(Relaxed), 0);
    hold.release();
    assert_eq!(caller.wait(), (1, 1));
    m.assert_clean();
}

#[test]
fn nowait_many_reuses_its_per_target_csds() {
    static RAN: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(3);
    m.run_on(0, || {
        for _ in 0..100 {
            smp().smp_call_function_many(CpuMask::from_word0(0b110), cb, 0, false);
        }
    });
    assert!(wait_until(|| counts(&RAN) == [0, 100, 100]));
    m.assert_clean();
}

#[test]
fn smp_call_function_reaches_every_other_online_cpu() {
    static RAN: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::with_online(4, CpuMask::from_word0(0b1011));
    m.run_on(3, || smp().smp_call_function(cb, 0, true));
    assert_eq!(counts(&RAN), [1, 1, 0, 0]);
    m.run_on(0, || smp().smp_call_function(cb, 0, false));
    assert!(wait_until(|| counts(&RAN) == [1, 2, 0, 1]));
    m.assert_clean();
}

#[test]
fn on_each_cpu_runs_everywhere_and_locally_with_irqs_off() {
    static RAN: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
    static IRQS_ON_SEEN: AtomicBool = AtomicBool::new(false);
    fn cb(_: usize) {
        if !irqs_disabled() {
            IRQS_ON_SEEN.store(true, Relaxed);
        }
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(4);
    m.run_on(1, || smp().on_each_cpu(cb, 0, true));
    assert_eq!(counts(&RAN), [1, 1, 1, 1]);
    assert!(!IRQS_ON_SEEN.load(Relaxed));
    m.assert_clean();
}

#[test]
fn on_each_cpu_runs_locally_even_before_this_cpu_is_online() {
    static RAN: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::with_online(3, CpuMask::from_word0(0b011));
    m.run_on(2, || smp().on_each_cpu(cb, 0, true));
    assert_eq!(counts(&RAN), [1, 1, 1]);
    m.assert_clean();
}

#[test]
fn on_each_cpu_mask_respects_the_mask() {
    static RAN: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(4);
    m.run_on(0, || {
        smp().on_each_cpu_mask(CpuMask::from_word0(0b0101), cb, 0, true)
    });
    assert_eq!(counts(&RAN), [1, 0, 1, 0]);
    m.run_on(1, || {
        smp().on_each_cpu_mask(CpuMask::from_word0(0b0101), cb, 0, true)
    });
    assert_eq!(counts(&RAN), [2, 0, 2, 0]);
    m.assert_clean();
}

#[test]
fn local_part_runs_while_remote_cpus_are_pending() {
    static RAN: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(2);
    let hold = m.hold_irqs_off(1);
    let mut caller = m.spawn_on(0, || smp().on_each_cpu(cb, 0, true));
    assert!(
        wait_until(|| RAN[0].load(Relaxed) == 1),
        "local call did not run first"
    );
    assert!(!caller.finished_within(Duration::from_millis(30)));
    assert_eq!(RAN[1].load(Relaxed), 0);
    hold.release();
    caller.wait();
    assert_eq!(counts(&RAN), [1, 1]);
    m.assert_clean();
}

#[test]
fn on_each_cpu_cond_asks_the_predicate_before_queueing() {
    static ASKED: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
    static RAN: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
    fn even(cpu: CpuId, info: usize) -> bool {
        assert_eq!(info, 5);
        ASKED[cpu.index()].fetch_add(1, Relaxed);
        cpu.0.is_multiple_of(2)
    }
    fn never(_: CpuId, _: usize) -> bool {
        false
    }
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(4);
    m.run_on(1, || smp().on_each_cpu_cond(even, cb, 5, true));
    assert_eq!(counts(&ASKED), [1, 1, 1, 1]);
    assert_eq!(counts(&RAN), [1, 0, 1, 0]);
    // Rejected CPUs got no IPI; two accepted remote CPUs: one mask IPI.
    assert_eq!(m.ipis(3), Default::default());
    assert_eq!(m.arch().mask_sends.load(Relaxed), 1);
    m.run_on(2, || {
        smp().on_each_cpu_cond_mask(even, cb, 5, true, CpuMask::from_word0(0b0011))
    });
    assert_eq!(counts(&RAN), [2, 0, 1, 0]);
    assert_eq!(m.ipis(0).single, 1);
    m.run_on(0, || smp().on_each_cpu_cond(never, cb, 5, true));
    assert_eq!(counts(&RAN), [2, 0, 1, 0]);
    assert_eq!(m.arch().mask_sends.load(Relaxed), 1);
    assert_eq!(
        m.ipis(0).single + m.ipis(1).single + m.ipis(2).single + m.ipis(3).single,
        1
    );
    m.assert_clean();
}

#[test]
fn many_cond_flags_select_local_and_wait() {
    static RAN: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
    fn cb(_: usize) {
        RAN[this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(2);
    m.run_on(0, || {
        smp().smp_call_function_many_cond(CpuMask::ALL, cb, 0, ScfFlags::NONE, None)
    });
    assert!(wait_until(|| counts(&RAN) == [0, 1]));
    m.run_on(0, || {
        smp().smp_call_function_many_cond(
            CpuMask::ALL,
            cb,
            0,
            ScfFlags::RUN_LOCAL | ScfFlags::WAIT,
            None,
        )
    });
    assert_eq!(counts(&RAN), [1, 2]);
    m.assert_clean();
}

#[test]
fn kick_all_cpus_sync_interrupts_every_other_cpu() {
    let m = Machine::new(4);
    m.run_on(2, || smp().kick_all_cpus_sync());
    for cpu in [0, 1, 3] {
        assert_eq!(m.smp.stats(CpuId(cpu)).callbacks_run, 1, "cpu{cpu}");
        assert_eq!(m.arch().cpu(cpu).handled.load(Relaxed), 1, "cpu{cpu}");
    }
    assert_eq!(m.smp.stats(CpuId(2)).callbacks_run, 0);
    m.assert_clean();
}

#[test]
fn many_with_irqs_disabled_warns() {
    fn cb(_: usize) {}
    let m = Machine::new(3);
    m.run_on(0, || {
        let flags = smp().arch().irq_save();
        smp().smp_call_function(cb, 0, false);
        smp().arch().irq_restore(flags);
    });
    assert_eq!(
        m.smp.warn_count(CpuId(0), WarnKind::WaitWithIrqsDisabled),
        1
    );
    assert_eq!(
        m.warns(),
        [(
            0,
            WarnKind::WaitWithIrqsDisabled,
            CpuMask::from_word0(0b111).word(0)
        )]
    );
}

#[test]
fn waiting_many_returns_only_after_every_callback_finished() {
    static DONE: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
    fn slow(_: usize) {
        std::thread::sleep(Duration::from_millis(10 * u64::from(this_cpu().0)));
        DONE[this_cpu().index()].store(1, Relaxed);
    }
    let m = Machine::new(3);
    let seen = m.run_on(0, || {
        smp().smp_call_function_many(CpuMask::ALL, slow, 0, true);
        counts(&DONE)
    });
    assert_eq!(seen, [0, 1, 1]);
    m.assert_clean();
}
