//! The flush's short path for a lone SYNC csd (what a waiting single call
//! finds) must behave exactly like the general path: it is taken only on
//! an online CPU, a lone SYNC csd on an offline CPU still gets the offline
//! warning, and the interrupts-off flush (the IPI handler's and a polling
//! idle loop's) runs calls whose IPI never came.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

use super::harness::{Machine, addr, smp, this_cpu, wait_until};
use crate::smp::{Arch, CpuId, WarnKind};

#[test]
fn lone_sync_csd_on_an_offline_cpu_takes_the_general_path_and_warns() {
    static RAN_ON: AtomicU32 = AtomicU32::new(u32::MAX);
    #[inline(never)]
    fn cb(_: usize) {
        RAN_ON.store(this_cpu().0, Relaxed);
    }
    let m = Machine::new(3);
    // The call reaches CPU 2 while it is online with interrupts off; then
    // it goes offline and the IPI arrives late: the lone SYNC csd is
    // reported with its callback, runs once, and the waiter returns.
    let hold = m.hold_irqs_off(2);
    let caller = m.spawn_on(0, || smp().smp_call_function_single(CpuId(2), cb, 0, true));
    assert!(wait_until(|| m.smp.stats(CpuId(0)).calls_queued == 1));
    m.smp.set_cpu_online(CpuId(2), false).unwrap();
    hold.release();
    assert_eq!(caller.wait(), Ok(()));
    assert_eq!(RAN_ON.load(Relaxed), 2);
    assert_eq!(
        m.warns(),
        [
            (2, WarnKind::IpiOnOfflineCpu, 1),
            (2, WarnKind::CallbackOnOfflineCpu, addr(cb) as u64),
        ]
    );
}

#[test]
fn lone_sync_csd_runs_once_unlocked_and_counted() {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    fn cb(info: usize) {
        assert_eq!(info, 0x5a);
        RUNS.fetch_add(1, Relaxed);
    }
    let m = Machine::new(2);
    for n in 1..=5u64 {
        m.run_on(0, || {
            smp().smp_call_function_single(CpuId(1), cb, 0x5a, true)
        })
        .unwrap();
        assert_eq!(RUNS.load(Relaxed) as u64, n);
        // One kick, one callback: the short path counts both at once.
        assert_eq!(m.smp.stats(CpuId(1)).callbacks_run, n);
        assert_eq!(m.smp.stats(CpuId(1)).kicks_taken, n);
        assert_eq!(m.smp.stats(CpuId(0)).calls_queued, n);
        assert_eq!(m.smp.stats(CpuId(0)).ipis_requested, n);
    }
    m.assert_clean();
}

#[test]
fn interrupts_off_flush_runs_a_waiting_call_whose_ipi_was_lost() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    let m = Machine::new(2);
    m.arch().drop_next_ipis(1, 1);
    let caller = m.spawn_on(0, || smp().smp_call_function_single(CpuId(1), cb, 0, true));
    assert!(wait_until(|| m.ipis(1).dropped == 1));
    assert_eq!(RAN.load(Relaxed), 0, "ran without an IPI");
    // What a polling idle loop does once woken through memory.
    m.run_on(1, || {
        let flags = smp().arch().irq_save();
        smp().run_call_queue_irqs_off();
        smp().arch().irq_restore(flags);
    });
    assert_eq!(caller.wait(), Ok(()));
    assert_eq!(RAN.load(Relaxed), 1);
    m.assert_clean();
}

#[test]
fn the_polling_loops_drain_runs_a_call_found_through_the_queue_word() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    let m = Machine::new(2);
    let word = m.smp.call_queue_word(CpuId(1)) as usize;
    // SAFETY: the word is the call queue head of CPU 1 (an atomic pointer,
    // pointer-sized), which lives as long as the machine.
    let head = unsafe { &*(word as *const AtomicUsize) };
    // Relaxed: a hint, as the polling loop's plain load.
    let queued = move || head.load(Relaxed) != 0;
    assert!(!queued());
    m.arch().drop_next_ipis(1, 1);
    let caller = m.spawn_on(0, || smp().smp_call_function_single(CpuId(1), cb, 0, true));
    assert!(wait_until(queued), "the queue word did not show the call");
    // What the polling idle loop does once its spin sees the word.
    m.run_on(1, || {
        let flags = smp().arch().irq_save();
        smp().run_call_queue_of(this_cpu());
        smp().arch().irq_restore(flags);
    });
    assert_eq!(caller.wait(), Ok(()));
    assert_eq!(RAN.load(Relaxed), 1);
    assert!(!queued());
    m.assert_clean();
}
