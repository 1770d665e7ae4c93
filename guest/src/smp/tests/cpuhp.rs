//! The core's hotplug steps (`cpuhp.rs`: the dying-CPU flush, prepare /
//! dead with injected failure, call_function_init) and the CPU masks
//! (`cpus.rs`: masks, nr_cpu_ids, boot parameters, NUMA).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed, Ordering::SeqCst};

use super::harness::{HostArch, Machine, smp, this_cpu, wait_until};
use crate::smp::{Arch, CpuId, CpuMask, Csd, IrqWork, MAX_CPUS, Smp, SmpError, WarnKind};

#[test]
fn dying_flush_runs_queued_calls_once_without_offline_warning() {
    static RAN: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
    static WRONG_CPU: AtomicBool = AtomicBool::new(false);
    fn cb(info: usize) {
        if this_cpu().0 != 2 {
            WRONG_CPU.store(true, Relaxed);
        }
        RAN[info].fetch_add(1, Relaxed);
    }
    fn work(_: &IrqWork) {
        RAN[3].fetch_add(1, Relaxed);
    }
    static LOCAL_RAN: AtomicU32 = AtomicU32::new(0);
    fn local_work(_: &IrqWork) {
        LOCAL_RAN.fetch_add(1, Relaxed);
    }
    static A: Csd = Csd::new(cb, 0);
    static W: IrqWork = IrqWork::new(work);
    static LOCAL: IrqWork = IrqWork::new(local_work);
    let m = Machine::new(3);
    // CPU 2 is going down: interrupts off (stop-machine), waiting for "go".
    let go = Arc::new(AtomicBool::new(false));
    let in_position = Arc::new(AtomicBool::new(false));
    let (g, p) = (go.clone(), in_position.clone());
    let dying = m.spawn_on(2, move || {
        let s = smp();
        let flags = s.arch().irq_save();
        p.store(true, SeqCst);
        while !g.load(SeqCst) {
            s.arch().cpu_relax();
        }
        // Its own irq_work, whose self-interrupt it cannot take now.
        assert!(s.irq_work_queue(&LOCAL));
        s.set_cpu_online(CpuId(2), false).unwrap();
        s.smpcfd_dying_cpu();
        // What ran in the dying flush, before interrupts come back on.
        let mut ran: Vec<u32> = RAN.iter().map(|r| r.load(Relaxed)).collect();
        ran.push(LOCAL_RAN.load(Relaxed));
        s.arch().irq_restore(flags); // the late IPIs: find nothing
        ran
    });
    assert!(wait_until(|| in_position.load(SeqCst)));
    // Calls queued before it went offline; their IPI cannot be taken.
    m.run_on(0, || {
        smp().smp_call_function_single_async(CpuId(2), &A).unwrap();
        smp()
            .smp_call_function_single(CpuId(2), cb, 1, false)
            .unwrap();
        assert!(smp().irq_work_queue_on(&W, CpuId(2)));
    });
    let waiter = m.spawn_on(1, || smp().smp_call_function_single(CpuId(2), cb, 2, true));
    assert!(wait_until(|| m.smp.stats(CpuId(1)).calls_queued == 1));
    go.store(true, SeqCst);
    assert_eq!(dying.wait(), [1, 1, 1, 1, 1]);
    assert_eq!(LOCAL_RAN.load(Relaxed), 1);
    assert_eq!(waiter.wait(), Ok(()));
    assert!(!WRONG_CPU.load(Relaxed));
    // Exactly once: the late IPI found nothing.
    assert_eq!(
        RAN.iter().map(|r| r.load(Relaxed)).collect::<Vec<_>>(),
        [1, 1, 1, 1]
    );
    // The call IPI and the irq_work self-interrupt, both found nothing.
    assert!(wait_until(|| m.arch().cpu(2).handled.load(Relaxed) == 2));
    assert_eq!(m.smp.warn_count(CpuId(2), WarnKind::IpiOnOfflineCpu), 0);
    // Now offline: new calls are refused.
    m.run_on(0, || {
        assert_eq!(
            smp().smp_call_function_single(CpuId(2), cb, 0, true),
            Err(SmpError::Nxio)
        );
    });
    assert_eq!(m.smp.smpcfd_dead_cpu(CpuId(2)), Ok(()));
    assert!(!m.smp.cfd_prepared(CpuId(2)));
    m.assert_clean();
}

#[test]
fn prepare_failure_is_injectable() {
    let smp = Smp::new(HostArch::new(8));
    assert!(!smp.cfd_prepared(CpuId(3)));
    smp.set_cfd_alloc_fail(CpuId(3), true);
    assert_eq!(smp.smpcfd_prepare_cpu(CpuId(3)), Err(SmpError::NoMem));
    assert_eq!(SmpError::NoMem.errno(), -12);
    assert!(!smp.cfd_prepared(CpuId(3)));
    smp.set_cfd_alloc_fail(CpuId(3), false);
    assert_eq!(smp.smpcfd_prepare_cpu(CpuId(3)), Ok(()));
    assert_eq!(smp.smpcfd_prepare_cpu(CpuId(3)), Ok(()), "idempotent");
    assert!(smp.cfd_prepared(CpuId(3)));
    assert_eq!(smp.smpcfd_dead_cpu(CpuId(3)), Ok(()));
    assert!(!smp.cfd_prepared(CpuId(3)));
    let bad = CpuId(MAX_CPUS as u32);
    assert_eq!(smp.smpcfd_prepare_cpu(bad), Err(SmpError::Nxio));
    assert_eq!(smp.smpcfd_dead_cpu(bad), Err(SmpError::Nxio));
    smp.set_cfd_alloc_fail(bad, true); // ignored
    assert!(!smp.cfd_prepared(bad));
}

#[test]
fn prepare_fails_when_the_cfd_row_cannot_be_allocated() {
    let smp = Smp::new(HostArch::new(8));
    smp.set_nr_cpu_ids(5);
    smp.arch().cfd_alloc_fails.store(true, SeqCst);
    assert_eq!(smp.smpcfd_prepare_cpu(CpuId(3)), Err(SmpError::NoMem));
    assert!(!smp.cfd_prepared(CpuId(3)));
    assert_eq!(smp.arch().cfd_rows_allocated.load(SeqCst), 0);
    // Nothing half-set: the next prepare allocates and succeeds.
    smp.arch().cfd_alloc_fails.store(false, SeqCst);
    assert_eq!(smp.smpcfd_prepare_cpu(CpuId(3)), Ok(()));
    assert!(smp.cfd_prepared(CpuId(3)));
    assert_eq!(smp.arch().cfd_rows_allocated.load(SeqCst), 1);
}

#[test]
fn cfd_rows_are_reused_when_a_cpu_comes_back() {
    let m = Machine::new(4);
    // One row per CPU, for every possible target.
    assert_eq!(m.smp.arch().cfd_rows_allocated.load(SeqCst), 4);
    let row = m.smp.cfd_csd_addr(CpuId(2), CpuId(1));
    m.smp.set_cpu_online(CpuId(2), false).unwrap();
    m.smp.smpcfd_dead_cpu(CpuId(2)).unwrap();
    // Even with no memory left, a CPU that had a row comes back with it.
    m.smp.arch().cfd_alloc_fails.store(true, SeqCst);
    assert_eq!(m.smp.smpcfd_prepare_cpu(CpuId(2)), Ok(()));
    m.smp.arch().cfd_alloc_fails.store(false, SeqCst);
    m.smp.set_cpu_online(CpuId(2), true).unwrap();
    assert_eq!(m.smp.arch().cfd_rows_allocated.load(SeqCst), 4);
    assert_eq!(m.smp.cfd_csd_addr(CpuId(2), CpuId(1)), row);
    // The rows still work: CPU 2 calls every other CPU and waits.
    static HITS: AtomicU32 = AtomicU32::new(0);
    fn hit(_: usize) {
        HITS.fetch_add(1, SeqCst);
    }
    m.run_on(2, || smp().smp_call_function(hit, 0, true));
    assert_eq!(HITS.load(SeqCst), 3);
    // Each (caller, target) pair has a csd of its own.
    let mut addrs = std::collections::BTreeSet::new();
    for c in 0..4 {
        for t in 0..4 {
            assert!(addrs.insert(m.smp.cfd_csd_addr(CpuId(c), CpuId(t))));
        }
    }
    m.assert_clean();
}

#[test]
fn call_function_init_prepares_the_boot_cpu() {
    let m = Machine::new(2);
    m.smp.smpcfd_dead_cpu(CpuId(1)).unwrap();
    assert_eq!(m.run_on(1, || smp().call_function_init()), Ok(()));
    assert!(m.smp.cfd_prepared(CpuId(1)));
    m.assert_clean();
}

#[test]
fn masks_and_nr_cpu_ids() {
    let smp = Smp::new(HostArch::new(8));
    assert_eq!(smp.nr_cpu_ids(), MAX_CPUS as u32);
    assert_eq!(smp.online_mask(), CpuMask::EMPTY);
    for cpu in 0..6 {
        smp.set_cpu_possible(CpuId(cpu), true).unwrap();
    }
    for cpu in [0, 1, 2, 4] {
        smp.set_cpu_present(CpuId(cpu), true).unwrap();
    }
    smp.setup_nr_cpu_ids();
    assert_eq!(smp.nr_cpu_ids(), 6);
    assert_eq!(smp.set_cpu_online(CpuId(6), true), Err(SmpError::Nxio));
    assert_eq!(smp.set_cpu_online(CpuId(64), true), Err(SmpError::Nxio));
    assert_eq!(
        smp.set_cpu_possible(CpuId(u32::MAX), true),
        Err(SmpError::Nxio)
    );
    assert_eq!(smp.set_cpu_online(CpuId(64), false), Ok(()));
    for cpu in [0, 2, 4] {
        smp.set_cpu_online(CpuId(cpu), true).unwrap();
    }
    assert_eq!(smp.online_mask(), CpuMask::from_word0(0b10101));
    assert_eq!(
        (
            smp.num_online_cpus(),
            smp.num_present_cpus(),
            smp.num_possible_cpus()
        ),
        (3, 4, 6)
    );
    assert!(smp.cpu_online(CpuId(2)) && !smp.cpu_online(CpuId(1)) && !smp.cpu_online(CpuId(99)));
    assert!(smp.cpu_present(CpuId(4)) && !smp.cpu_present(CpuId(3)));
    assert!(smp.cpu_possible(CpuId(5)) && !smp.cpu_possible(CpuId(6)));
    smp.set_cpu_online(CpuId(2), false).unwrap();
    assert_eq!(smp.online_mask(), CpuMask::from_word0(0b10001));

    // nr_cpus=: only lowers, and trims every mask.
    smp.apply_nr_cpus_param(0);
    smp.apply_nr_cpus_param(10);
    assert_eq!(smp.nr_cpu_ids(), 6);
    smp.apply_nr_cpus_param(4);
    assert_eq!(smp.nr_cpu_ids(), 4);
    assert_eq!(smp.online_mask(), CpuMask::from_word0(0b1));
    assert_eq!(smp.present_mask(), CpuMask::from_word0(0b111));
    assert_eq!(smp.possible_mask(), CpuMask::from_word0(0b1111));
    smp.set_nr_cpu_ids(0);
    assert_eq!(smp.nr_cpu_ids(), 1);
    smp.set_nr_cpu_ids(MAX_CPUS as u32 + 1000);
    assert_eq!(smp.nr_cpu_ids(), MAX_CPUS as u32);

    // maxcpus= / nosmp.
    assert_eq!(smp.setup_max_cpus(), MAX_CPUS as u32);
    smp.set_setup_max_cpus(0);
    assert_eq!(smp.setup_max_cpus(), 0);
}

#[test]
fn a_cpu_without_a_block_of_its_own_cannot_become_possible_or_online() {
    let smp = Smp::new(HostArch::new(4));
    let unbacked = CpuId(4);
    assert!(smp.nr_cpu_ids() > unbacked.0);
    assert_eq!(smp.set_cpu_possible(unbacked, true), Err(SmpError::Nxio));
    assert_eq!(smp.set_cpu_present(unbacked, true), Err(SmpError::Nxio));
    assert_eq!(smp.set_cpu_online(unbacked, true), Err(SmpError::Nxio));
    assert!(!smp.cpu_online(unbacked) && !smp.cpu_possible(unbacked));
    assert_eq!(smp.smpcfd_prepare_cpu(unbacked), Err(SmpError::Nxio));
    smp.set_cfd_alloc_fail(unbacked, true); // ignored
    assert!(!smp.cfd_prepared(unbacked));
    assert_eq!(smp.set_cpu_online(CpuId(3), true), Ok(()));
    assert!(smp.cpu_online(CpuId(3)));
}

#[test]
fn a_zeroed_block_is_a_new_one_but_for_its_unwritten_csd() {
    // Every host test runs on zeroed blocks (`HostArch`); this names what
    // the zero bytes mean, field by field.
    let new = crate::smp::CpuBlock::new();
    // SAFETY: all-zero bytes are a `CpuBlock` (its `Zeroable` impl).
    let zero: crate::smp::CpuBlock = unsafe { core::mem::zeroed() };
    for b in [&new, &zero] {
        assert!(!b.csd_data.0.is_locked());
        assert!(b.irq_work.is_empty() && b.queue.0.is_empty());
        assert_eq!(b.sending.load(SeqCst), 0);
        assert_eq!(b.node.load(SeqCst), 0);
        assert!(!b.online.load(SeqCst) && !b.cfd_prepared.load(SeqCst));
        assert!(!b.cfd_alloc_fail.load(SeqCst));
        assert_eq!(b.cfd_len.load(SeqCst), 0);
        assert!(b.cfd_row.load(SeqCst).is_null());
        assert_eq!(b.counters.calls_queued.load(SeqCst), 0);
        assert_eq!(b.counters.lone_syncs_run.load(SeqCst), 0);
    }
}

#[test]
fn setup_nr_cpu_ids_without_possible_cpus_is_one() {
    let smp = Smp::new(HostArch::new(8));
    smp.setup_nr_cpu_ids();
    assert_eq!(smp.nr_cpu_ids(), 1);
}

#[test]
fn numa_node_map() {
    let smp = Smp::new(HostArch::new(8));
    for cpu in 0..4 {
        smp.set_cpu_possible(CpuId(cpu), true).unwrap();
        smp.set_cpu_node(CpuId(cpu), cpu % 2);
    }
    let beyond = CpuId(MAX_CPUS as u32 + 6);
    smp.set_cpu_node(beyond, 5); // ignored
    // A CPU number below MAX_CPUS without a block of its own (the arch has
    // 8 CPUs): nothing is written, and it reads as a new block.
    smp.set_cpu_node(CpuId(8), 5);
    assert_eq!(smp.cpu_to_node(CpuId(8)), 0);
    assert_eq!(smp.cpu_to_node(CpuId(3)), 1);
    assert_eq!(smp.cpu_to_node(beyond), 0);
    assert_eq!(smp.cpumask_of_node(0), CpuMask::from_word0(0b0101));
    assert_eq!(smp.cpumask_of_node(1), CpuMask::from_word0(0b1010));
    assert_eq!(smp.cpumask_of_node(2), CpuMask::EMPTY);
}

#[test]
fn smp_is_const_constructible_for_statics() {
    struct NoArch;
    impl crate::smp::Arch for NoArch {
        fn this_cpu(&self) -> CpuId {
            CpuId(0)
        }
        fn irq_save(&self) -> crate::smp::IrqFlags {
            crate::smp::IrqFlags(false)
        }
        fn irq_restore(&self, _: crate::smp::IrqFlags) {}
        fn irqs_disabled(&self) -> bool {
            true
        }
        fn send_call_function_single_ipi(&self, _: CpuId) {}
        fn send_call_function_ipi_mask(&self, _: CpuMask, _: CpuMask) {}
        fn send_irq_work_self_ipi(&self) {}
        fn set_running(&self, _: usize) {}
        fn clear_running(&self) {}
        fn running(&self, _: CpuId) -> usize {
            0
        }
        fn cpu_blocks(&self) -> &'static [crate::smp::CpuBlock; MAX_CPUS] {
            static BLOCKS: [crate::smp::CpuBlock; MAX_CPUS] =
                [const { crate::smp::CpuBlock::new() }; MAX_CPUS];
            &BLOCKS
        }
        fn cpu_blocks_backed(&self) -> usize {
            MAX_CPUS
        }
        fn alloc_cfd_row(&self, len: usize) -> Option<&'static [Csd]> {
            Some(Vec::leak((0..len).map(|_| Csd::idle()).collect()))
        }
        fn cpu_relax(&self) {}
        fn now_ns(&self) -> u64 {
            0
        }
        fn report(&self, _: crate::smp::Event) {}
    }
    static SMP: Smp<NoArch> = Smp::new(NoArch);
    static CSD: Csd = Csd::new(noop, 0);
    fn noop(_: usize) {}
    SMP.set_cpu_possible(CpuId(0), true).unwrap();
    SMP.set_cpu_online(CpuId(0), true).unwrap();
    assert_eq!(SMP.call_function_init(), Ok(()));
    // Single CPU: everything runs locally.
    assert_eq!(
        SMP.smp_call_function_single(CpuId(0), noop, 0, true),
        Ok(())
    );
    assert_eq!(SMP.smp_call_function_single_async(CpuId(0), &CSD), Ok(()));
    SMP.on_each_cpu(noop, 0, true);
    assert_eq!(
        SMP.csd_lock_timeout_ns(),
        crate::smp::CSD_LOCK_TIMEOUT_DEFAULT_NS
    );
    assert!(!SMP.csd_lock_is_stuck());
}

/// A CPU going down waits for a sender that tested it online and has not
/// queued yet, then its dying flush runs that call exactly once.
#[test]
fn synchronize_senders_waits_for_a_sender_inside_its_window() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    let m = Machine::new(3);
    // CPU 0 opens its send window and tests CPU 2 online (as a sender
    // does), then pauses before queueing.
    let tested = Arc::new(AtomicBool::new(false));
    let proceed = Arc::new(AtomicBool::new(false));
    let (t, p) = (tested.clone(), proceed.clone());
    let sender = m.spawn_on(0, move || {
        let s = smp();
        let this = this_cpu();
        let window = s.send_enter(this);
        let online = s.cpu_online_in_window(CpuId(2));
        t.store(true, SeqCst);
        while !p.load(SeqCst) {
            s.arch().cpu_relax();
        }
        static CSD: Csd = Csd::new(cb, 0);
        CSD.try_lock(super::super::csd::CSD_TYPE_ASYNC).unwrap();
        // SAFETY: locked above, 'static, func/info set by `new`.
        let kick = unsafe { s.queue_add(CpuId(2), CSD.node()) };
        s.send_exit(this, window);
        (online, kick)
    });
    assert!(wait_until(|| tested.load(SeqCst)));
    // CPU 2 goes down with interrupts off: it must not finish its dying
    // flush while CPU 0 is inside the window.
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let dying = m.spawn_on(2, move || {
        let s = smp();
        let flags = s.arch().irq_save();
        s.set_cpu_online(CpuId(2), false).unwrap();
        s.synchronize_senders();
        s.smpcfd_dying_cpu();
        d.store(true, SeqCst);
        let ran = RAN.load(Relaxed);
        s.arch().irq_restore(flags);
        ran
    });
    // CPU 2 spins (interrupts off, so only in `synchronize_senders`) or,
    // if it did not wait, is done: either is observed, no delay decides.
    assert!(
        m.wait_spinning_or(2, || done.load(SeqCst)),
        "CPU 2 neither waits nor finished"
    );
    assert!(
        !done.load(SeqCst),
        "the dying flush did not wait for the sender"
    );
    proceed.store(true, SeqCst);
    assert_eq!(sender.wait(), (true, true));
    assert_eq!(dying.wait(), 1, "the call ran in the dying flush");
    assert_eq!(RAN.load(Relaxed), 1);
    assert!(m.warns().is_empty(), "{:?}", m.warns());
}
