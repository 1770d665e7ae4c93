//! Concurrency: many senders to one target with exactly-once accounting,
//! every CPU calling everyone at once, async re-arm loops, and a mixed
//! random workload that includes self and offline targets.

use std::sync::Arc;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::harness::{Machine, smp, this_cpu, wait_until};
use crate::smp::{Arch, CpuId, CpuMask, Csd, SmpError};

#[test]
fn many_senders_one_target_run_each_call_exactly_once() {
    const PER: usize = 300;
    const SENDERS: usize = 3;
    static COUNT: [AtomicU32; SENDERS * PER] = [const { AtomicU32::new(0) }; SENDERS * PER];
    static OUT: [AtomicU32; SENDERS * PER] = [const { AtomicU32::new(0) }; SENDERS * PER];
    static WRONG_CPU: AtomicU32 = AtomicU32::new(0);
    fn cb(id: usize) {
        if this_cpu().0 != 0 {
            WRONG_CPU.fetch_add(1, Relaxed);
        }
        COUNT[id].fetch_add(1, Relaxed);
        OUT[id].store(id as u32 + 1, Relaxed);
    }
    static CSDS: [Csd; SENDERS] = [const { Csd::new(cb, 0) }; SENDERS];
    let m = Machine::new(4);
    let barrier = Arc::new(Barrier::new(SENDERS));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let b = barrier.clone();
            m.spawn_on(s as u32 + 1, move || {
                b.wait();
                let mut bad_out = 0;
                for i in 0..PER {
                    let id = s * PER + i;
                    match i % 3 {
                        0 => {
                            smp()
                                .smp_call_function_single(CpuId(0), cb, id, true)
                                .unwrap();
                            // The waiter sees the callback's store.
                            if OUT[id].load(Relaxed) != id as u32 + 1 {
                                bad_out += 1;
                            }
                        }
                        1 => smp()
                            .smp_call_function_single(CpuId(0), cb, id, false)
                            .unwrap(),
                        _ => {
                            while CSDS[s].set(cb, id).is_err() {
                                smp().arch().cpu_relax();
                            }
                            smp()
                                .smp_call_function_single_async(CpuId(0), &CSDS[s])
                                .unwrap();
                        }
                    }
                }
                bad_out
            })
        })
        .collect();
    for s in senders {
        assert_eq!(
            s.wait(),
            0,
            "a waiting call returned before its callback's store"
        );
    }
    assert!(wait_until(|| COUNT.iter().all(|c| c.load(Relaxed) >= 1)));
    // Every call is queued (the senders are done); a task-context flush on
    // CPU 0 runs whatever is still there, so nothing can run after it.
    m.run_on(0, || smp().run_pending_calls());
    assert!(
        COUNT.iter().all(|c| c.load(Relaxed) == 1),
        "some call ran twice"
    );
    assert_eq!(WRONG_CPU.load(Relaxed), 0);
    let queued: u64 = (1..4).map(|c| m.smp.stats(CpuId(c)).calls_queued).sum();
    assert_eq!(queued, (SENDERS * PER) as u64);
    assert_eq!(m.smp.stats(CpuId(0)).callbacks_run, (SENDERS * PER) as u64);
    // Coalescing: never more IPIs than calls.
    assert!(m.ipis(0).single <= (SENDERS * PER) as u64);
    m.assert_clean();
}

#[test]
fn every_cpu_calls_everyone_at_once_and_waits() {
    const N: usize = 4;
    const ROUNDS: u32 = 100;
    static RUNS: [[AtomicU32; N]; N] = [const { [const { AtomicU32::new(0) }; N] }; N];
    fn cb(caller: usize) {
        RUNS[caller][this_cpu().index()].fetch_add(1, Relaxed);
    }
    let m = Machine::new(N as u32);
    let barrier = Arc::new(Barrier::new(N));
    let callers: Vec<_> = (0..N)
        .map(|c| {
            let b = barrier.clone();
            m.spawn_on(c as u32, move || {
                b.wait();
                let mut early = 0;
                for round in 1..=ROUNDS {
                    smp().smp_call_function(cb, c, true);
                    for t in (0..N).filter(|&t| t != c) {
                        if RUNS[c][t].load(Relaxed) != round {
                            early += 1;
                        }
                    }
                }
                early
            })
        })
        .collect();
    for c in callers {
        assert_eq!(c.wait(), 0, "returned before every CPU ran the call");
    }
    for (c, row) in RUNS.iter().enumerate() {
        for (t, runs) in row.iter().enumerate() {
            assert_eq!(runs.load(Relaxed), if c == t { 0 } else { ROUNDS });
        }
    }
    m.assert_clean();
}

#[test]
fn async_rearm_loops_on_every_cpu() {
    const N: usize = 4;
    const HOPS: u32 = 200;
    static COUNT: [AtomicU32; N] = [const { AtomicU32::new(0) }; N];
    static FAILURES: AtomicU32 = AtomicU32::new(0);
    fn hop(k: usize) {
        if COUNT[k].fetch_add(1, Relaxed) + 1 < HOPS {
            let next = CpuId((this_cpu().0 + 1 + k as u32 % 2) % N as u32);
            if smp()
                .smp_call_function_single_async(next, &CSDS[k])
                .is_err()
            {
                FAILURES.fetch_add(1, Relaxed);
            }
        }
    }
    static CSDS: [Csd; N] = [
        Csd::new(hop, 0),
        Csd::new(hop, 1),
        Csd::new(hop, 2),
        Csd::new(hop, 3),
    ];
    let m = Machine::new(N as u32);
    for (k, csd) in CSDS.iter().enumerate() {
        m.run_on(k as u32, move || {
            smp()
                .smp_call_function_single_async(CpuId(((k + 1) % N) as u32), csd)
                .unwrap()
        });
    }
    assert!(wait_until(|| COUNT.iter().all(|c| c.load(Relaxed) == HOPS)));
    assert_eq!(FAILURES.load(Relaxed), 0);
    assert!(wait_until(|| CSDS.iter().all(|c| !c.is_locked())));
    m.assert_clean();
}

#[test]
fn mixed_random_workload_with_self_and_offline_targets() {
    const N: u32 = 5; // CPU 4 stays offline
    const OPS: u32 = 150;
    static RAN: AtomicU64 = AtomicU64::new(0);
    static EXPECTED: AtomicU64 = AtomicU64::new(0);
    fn cb(_: usize) {
        RAN.fetch_add(1, Relaxed);
    }
    let online = CpuMask::from_word0(0b01111);
    let m = Machine::with_online(N, online);
    let barrier = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4u32)
        .map(|c| {
            let b = barrier.clone();
            m.spawn_on(c, move || {
                b.wait();
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(c);
                let mut rand = move || shared::xorshift64(&mut seed);
                let s = smp();
                for _ in 0..OPS {
                    let r = rand();
                    let target = CpuId((r >> 8) as u32 % (N + 1)); // includes 4 (offline) and 5 (invalid)
                    let wait = r & 1 == 0;
                    let mask = CpuMask::from_word0((r >> 16) & 0b11111);
                    match (r >> 4) % 5 {
                        0 | 1 => {
                            let res = s.smp_call_function_single(target, cb, 0, wait);
                            if online.test(target) {
                                assert_eq!(res, Ok(()));
                                EXPECTED.fetch_add(1, Relaxed);
                            } else {
                                assert_eq!(res, Err(SmpError::Nxio));
                            }
                        }
                        2 => {
                            s.smp_call_function_many(mask, cb, 0, wait);
                            EXPECTED.fetch_add(
                                u64::from(mask.and(online).without(this_cpu()).weight()),
                                Relaxed,
                            );
                        }
                        3 => {
                            s.on_each_cpu_mask(mask, cb, 0, wait);
                            let local = u64::from(mask.test(this_cpu()));
                            EXPECTED.fetch_add(
                                u64::from(mask.and(online).without(this_cpu()).weight()) + local,
                                Relaxed,
                            );
                        }
                        _ => {
                            let res = s.smp_call_function_any(mask, cb, 0, wait);
                            if mask.intersects(online) {
                                assert_eq!(res, Ok(()));
                                EXPECTED.fetch_add(1, Relaxed);
                            } else {
                                assert_eq!(res, Err(SmpError::Nxio));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.wait();
    }
    assert!(wait_until(|| RAN.load(Relaxed) == EXPECTED.load(Relaxed)));
    // Every call is queued (the workers are done); a task-context flush on
    // each online CPU runs whatever is still there: nothing can run later.
    for cpu in online {
        m.run_on(cpu.0, || smp().run_pending_calls());
    }
    assert_eq!(RAN.load(Relaxed), EXPECTED.load(Relaxed));
    assert_eq!(m.ipis(4), Default::default(), "offline CPU got an IPI");
    m.assert_clean();
}
