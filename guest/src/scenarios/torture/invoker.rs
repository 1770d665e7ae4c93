//! The invokers: one per online CPU, each issuing random operations
//! (scftorture's `scftorture_invoker` / `scftorture_invoke_one`) until the
//! leader says stop. Between operations an invoker is at a hotplug poll
//! point (interrupts off), where the host may take its CPU down; it then
//! stops invoking, and resumes when the CPU comes back (the idle loop runs
//! it again).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use shared::{CpuId, MAX_CPUS};

use super::account::{self, Issue, c, e};
use super::config::{Config, Op};
use super::rand;
use crate::arch::x86_64::{cpu, percpu};
use crate::kernel::{SMP, cpu_down};
use crate::mem::OutOfMemory;
use crate::scenarios::percpu::PerCpu;
use crate::smp::{AtomicCpuMask, CpuList, CpuMask, ScfFlags, SmpError};
use crate::time;

/// The leader asked every invoker to stop.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// The start barrier has been passed: late joiners go straight in.
static STARTED: AtomicBool = AtomicBool::new(false);
/// CPUs that must meet at the start barrier, and those that arrived.
static PARTICIPANTS: AtomicCpuMask = AtomicCpuMask::new();
static ARRIVED: AtomicCpuMask = AtomicCpuMask::new();
/// Per CPU: inside the loop, past the stop check (cleared at each poll
/// point, where the CPU may go down).
/// Zero: not in the loop.
static IN_LOOP: PerCpu<AtomicBool> = PerCpu::new();
/// Per CPU: the next request number (from zero).
static SEQ: PerCpu<AtomicU64> = PerCpu::new();
/// The configuration, set by the leader before any invoker starts.
static CONFIG: spin::Once<Config> = spin::Once::new();

/// How long the start barrier waits for stragglers.
const BARRIER_TIMEOUT_MS: u64 = 5_000;

/// Allocates the invokers' per-CPU state (the leader, before starting
/// anyone; once per boot, later calls find it allocated).
pub fn alloc() -> Result<(), OutOfMemory> {
    IN_LOOP.alloc()?;
    SEQ.alloc()?;
    Ok(())
}

/// Sets the configuration and the barrier's participants (leader, before
/// starting anyone).
pub fn prepare(cfg: Config, participants: CpuMask) {
    CONFIG.call_once(|| cfg);
    // (SeqCst word stores, more than needed: published anyway by the
    // Release in `set_idle_task` that starts each invoker, and the leader
    // runs its own after this.)
    PARTICIPANTS.swap(participants);
}

/// A poll point: interrupts off, the host may take this CPU down here
/// (never to return); then the stop check. True if the invoker must stop.
fn poll_point(me: CpuId) -> bool {
    // None: no table (see `alloc`), so the leader could not wait for this
    // invoker: it stops.
    let Some(flag) = IN_LOOP.get(me) else {
        return true;
    };
    // Release: pairs with the leader's SeqCst load in `all_stopped`.
    flag.store(false, Ordering::Release);
    cpu::cli();
    cpu_down::poll(me);
    cpu::sti();
    // SeqCst with the SeqCst `STOP` store/load below and the leader's
    // `STOP` store then `IN_LOOP` load: either we see STOP, or the leader
    // sees us in the loop and waits.
    flag.store(true, Ordering::SeqCst);
    if STOP.load(Ordering::SeqCst) {
        // Release: pairs with the leader's SeqCst load in `all_stopped`.
        flag.store(false, Ordering::Release);
        return true;
    }
    false
}

/// Whether no invoker is in its loop any more (leader, after STOP).
pub fn all_stopped() -> bool {
    // SeqCst: see `poll_point`.
    IN_LOOP.table().iter().all(|f| !f.load(Ordering::SeqCst))
}

/// The start barrier: wait until every participant that is still online
/// arrived (or the barrier was passed, or the deadline).
fn barrier(me: CpuId) -> bool {
    // SeqCst: arrival (`assign`: a SeqCst RMW of `me`'s word) and the test
    // of the others' arrival (`load_sc`: a SeqCst load of every word) form
    // one total order, so the last to arrive sees everyone.
    ARRIVED.assign(me, true);
    let deadline = time::Deadline::after_ms(time::scaled_ms(BARRIER_TIMEOUT_MS));
    loop {
        if STARTED.load(Ordering::SeqCst) {
            return true;
        }
        let want = PARTICIPANTS.load().and(SMP.online_mask());
        if want.and_not(ARRIVED.load_sc()).is_empty() {
            STARTED.store(true, Ordering::SeqCst);
            return true;
        }
        if deadline.expired() {
            crate::kprintln!(
                "scftorture: start barrier: CPUs {} did not arrive in {} ms",
                CpuList(want.and_not(ARRIVED.load_sc())),
                time::scaled_ms(BARRIER_TIMEOUT_MS)
            );
            STARTED.store(true, Ordering::SeqCst);
            return true;
        }
        if poll_point(me) {
            return false;
        }
    }
}

/// The invoker of an AP, run by its idle loop in task context.
pub fn ap_invoker() {
    let me = percpu::this_cpu();
    run(me, &mut || false);
}

/// An invoker's loop; `tick` is the leader's bookkeeping (true: stop).
pub fn run(me: CpuId, tick: &mut dyn FnMut() -> bool) {
    let Some(cfg) = CONFIG.get() else { return };
    if poll_point(me) {
        return;
    }
    account::count(c::STARTS, 1);
    if !barrier(me) {
        return;
    }
    loop {
        if poll_point(me) {
            return;
        }
        if tick() {
            // Release: pairs with the leader's SeqCst load in `all_stopped`.
            if let Some(flag) = IN_LOOP.get(me) {
                flag.store(false, Ordering::Release);
            }
            return;
        }
        let r = rand::next(me);
        if !invoke_one(me, cfg.select(r), r >> 32) {
            // A request never finished: stop everything.
            STOP.store(true, Ordering::SeqCst);
        }
        // scftorture sleeps a jiffy one time in 4096.
        if rand::next(me) & 0xfff == 0 {
            let _ = time::spin_until(1, || false);
        }
    }
}

/// A random single-call target: any CPU below `nr_cpu_ids` (self and
/// offline ones included, as scftorture), and one time in `nr + 1` an
/// invalid one.
fn random_target(r: u64) -> CpuId {
    let nr = u64::from(SMP.nr_cpu_ids());
    let pick = r % (nr + 1);
    if pick < nr {
        return CpuId(pick as u32);
    }
    const INVALID: [u32; 3] = [MAX_CPUS as u32, 1000, u32::MAX];
    match (r >> 16) % 4 {
        0 => CpuId(nr as u32),
        i => CpuId(INVALID[(i - 1) as usize]),
    }
}

/// A random mask: each CPU number below `nr_cpu_ids` rounded up to a word
/// (offline, invalid and this CPU's included) with probability 1/2.
fn random_mask(me: CpuId) -> CpuMask {
    let words = (SMP.nr_cpu_ids() as usize).div_ceil(64);
    CpuMask::from_words((0..words).map(|_| rand::next(me)))
}

/// Issues one operation; false if its request slot never freed.
fn invoke_one(me: CpuId, op: Op, r: u64) -> bool {
    // Relaxed: this CPU's own request counter.
    // (0 past the table: none, it is allocated for every CPU number.)
    let seq = SEQ.get(me).map_or(0, |s| s.fetch_add(1, Ordering::Relaxed));
    match op {
        Op::Single(wait) => single(me, seq, random_target(r), wait, false),
        Op::SingleRpc => single(me, seq, random_target(r), false, true),
        Op::Many(wait) => {
            // scftorture passes cpu_online_mask; half the time a random
            // mask instead, with offline, invalid and this CPU's bits.
            let mask = if r & 1 == 0 {
                SMP.online_mask()
            } else {
                random_mask(me)
            };
            multi(me, seq, mask, wait, c::MANY)
        }
        Op::All(wait) => multi(me, seq, SMP.online_mask(), wait, c::ALL),
    }
}

fn single(me: CpuId, seq: u64, cpu: CpuId, wait: bool, rpc: bool) -> bool {
    let Some(req) = Issue::start(me, seq, cpu.0) else {
        return false;
    };
    let valid = cpu.0 < SMP.nr_cpu_ids();
    req.expect(cpu);
    let res = SMP.smp_call_function_single(cpu, account::handler_single, req.info(), wait);
    let (ok, ofl) = match (rpc, wait) {
        (true, _) => (c::RPC, c::RPC_OFL),
        (false, w) => (c::SINGLE + usize::from(w), c::SINGLE_OFL + usize::from(w)),
    };
    let mut done = true;
    match res {
        Ok(()) => {
            account::count(ok, 1);
            if !valid {
                account::error(e::BAD_RET, 1);
            }
            if wait {
                req.check_waited();
            }
            if rpc {
                done = req.wait_rpc();
                req.check_waited();
            }
        }
        Err(SmpError::Nxio) => {
            account::count(ofl, 1);
            req.unexpect(cpu);
        }
        Err(_) => {
            account::error(e::BAD_RET, 1);
            req.unexpect(cpu);
        }
    }
    req.finish();
    done
}

fn multi(me: CpuId, seq: u64, mask: CpuMask, wait: bool, counter: usize) -> bool {
    let Some(req) = Issue::start(me, seq, u32::MAX) else {
        return false;
    };
    // The engine behind smp_call_function_many and smp_call_function, with
    // a `cond` that records each CPU right before its csd is queued: that
    // is how the request learns its exact set under hotplug.
    SMP.smp_call_function_many_cond(
        mask,
        account::handler_multi,
        req.info(),
        ScfFlags::wait_if(wait),
        Some(account::record_target),
    );
    account::count(counter + usize::from(wait), 1);
    if wait {
        req.check_waited();
    }
    req.finish();
    true
}
