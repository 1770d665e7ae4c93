//! The operations the benchmark times, one function per case, and the raw
//! ping's interrupt handler.

use core::sync::atomic::{AtomicU64, Ordering};

use shared::CpuId;
use shared::bench::{Case, Phase};
use shared::vectors;

use super::harness::{Fail, marker, wait_until};
use crate::arch::x86_64::x2apic::{self, Destination, Icr};
use crate::arch::x86_64::{ipi, percpu};
use crate::kernel::{SMP, ipi as delivery};
use crate::smp::{CpuMask, Csd, IrqWork, SmpError};

/// The function every call runs: nothing, so that what is measured is the
/// cross-call machinery itself.
pub fn nop(_: usize) {}

/// The raw ping's acknowledgement count, on its own cache line.
#[repr(C, align(64))]
struct Ack(AtomicU64);

static PING_ACK: Ack = Ack(AtomicU64::new(0));

/// Handler of [`vectors::BENCH_PING`] (installed by [`super::run`]):
/// acknowledge, then tell the sender in memory, the least a cross-CPU call
/// can do.
pub extern "C" fn raw_ping_handler() {
    x2apic::eoi();
    // Relaxed load: only this handler writes the count, and one ping is
    // in flight at a time.
    let v = PING_ACK.0.load(Ordering::Relaxed);
    // Release: pairs with the sender's Acquire in `raw_ping`.
    PING_ACK.0.store(v.wrapping_add(1), Ordering::Release);
}

/// `raw-ping`: one x2APIC IPI to `target`, then spin until it answered.
#[inline(always)]
pub fn raw_ping(target: CpuId) -> Result<(), Fail> {
    // Relaxed: our own last observation of the count (Acquire below).
    let want = PING_ACK.0.load(Ordering::Relaxed).wrapping_add(1);
    let apic = percpu::area(target).apic_id();
    x2apic::send(Icr::fixed(vectors::BENCH_PING, Destination::Physical(apic)));
    // Acquire: pairs with the handler's Release store.
    wait_until("raw ping not answered", || {
        PING_ACK.0.load(Ordering::Acquire) == want
    })
}

/// `single-wait` and `single-local`.
#[inline(always)]
pub fn single_wait(target: CpuId) -> Result<(), Fail> {
    SMP.smp_call_function_single(target, nop, 0, true)
        .map_err(|_| "smp_call_function_single failed")
}

/// Async calls completed (incremented by the callback).
static ASYNC_DONE: AtomicU64 = AtomicU64::new(0);

fn async_done(_: usize) {
    // Relaxed: counted; the sender's final wait reads it with Acquire.
    ASYNC_DONE.fetch_add(1, Ordering::Relaxed);
}

/// Csds the async case rotates through, so that calls pipeline.
pub const ASYNC_RING: usize = 16;
static RING: [Csd; ASYNC_RING] = [const { Csd::new(async_done, 0) }; ASYNC_RING];

/// Completed async calls so far.
pub fn async_completed() -> u64 {
    // Acquire: pairs with the callbacks' increments through the csd
    // unlock (Release) that precedes each of them.
    ASYNC_DONE.load(Ordering::Acquire)
}

/// `single-async`, operation `i`: queue the next csd of the ring, waiting
/// for it if its previous call has not started yet.
#[inline(always)]
pub fn single_async(target: CpuId, i: u64) -> Result<(), Fail> {
    let csd = &RING[(i % ASYNC_RING as u64) as usize];
    let mut result = Ok(());
    wait_until("async csd stayed busy", || {
        match SMP.smp_call_function_single_async(target, csd) {
            Err(SmpError::Busy) => false,
            Ok(()) => true,
            Err(_) => {
                result = Err("smp_call_function_single_async refused");
                true
            }
        }
    })?;
    result
}

/// `many-wait/*`: every other online CPU.
#[inline(always)]
pub fn many_wait() -> Result<(), Fail> {
    SMP.smp_call_function_many(SMP.online_mask(), nop, 0, true);
    Ok(())
}

/// `fanout/*`: the CPUs of `targets`.
#[inline(always)]
pub fn many_wait_to(targets: CpuMask) -> Result<(), Fail> {
    SMP.smp_call_function_many(targets, nop, 0, true);
    Ok(())
}

/// The send windows of a fan-out point: `calls` times a `Begin` marker,
/// `smp_call_function_many(targets, wait)`, a `Probe` marker, so that the
/// VMM counts the sender's VM exits (and instructions) from the call to
/// its return, and nothing else (the probe pair's own cost is
/// `probe-calibrate`'s: the same two marker writes).
pub fn send_windows(case: Case, targets: CpuMask, calls: u32) {
    for _ in 0..calls {
        marker(case, Phase::Begin);
        SMP.smp_call_function_many(targets, nop, 0, true);
        marker(case, Phase::Probe);
    }
}

/// The send parts of a fan-out point: `calls` times a `SendBegin` marker
/// and `smp_call_function_many(targets, wait)` with the arch's probe on:
/// the mask send writes the `Probe` marker of `case` right after its last
/// ICR write (`IpiDelivery::set_mask_probe`), or, when the call's one IPI
/// goes through the single-target path (one target), that path writes
/// `send-path`'s (`IpiDelivery::set_probe`). So the VMM counts the sender
/// from the call to the end of its IPI send; the wait is outside. No
/// marker follows the call: a call that sent no IPI (every target already
/// had work queued) leaves its `SendBegin` open, and the next one replaces
/// it (the VMM counts the sections that ended).
pub fn send_parts(case: Case, targets: CpuMask, calls: u32) {
    delivery().set_mask_probe(Some(case));
    delivery().set_probe(true);
    for _ in 0..calls {
        marker(case, Phase::SendBegin);
        SMP.smp_call_function_many(targets, nop, 0, true);
    }
    delivery().set_probe(false);
    delivery().set_mask_probe(None);
}

/// The lock every `many-wait/lock` callback takes (ipi_benchmark's
/// `POKE_ALL_LOCK`: the targets contend for one lock), with a count so
/// that the critical section is not empty.
static LOCK: spin::Mutex<u64> = spin::Mutex::new(0);

fn take_lock(_: usize) {
    *LOCK.lock() += 1;
}

/// `many-wait/lock`: every other online CPU takes [`LOCK`].
#[inline(always)]
pub fn many_wait_lock() -> Result<(), Fail> {
    SMP.smp_call_function_many(SMP.online_mask(), take_lock, 0, true);
    Ok(())
}

/// `on-each-cpu`.
#[inline(always)]
pub fn on_each_cpu() -> Result<(), Fail> {
    SMP.on_each_cpu(nop, 0, true);
    Ok(())
}

fn work_nop(_: &IrqWork) {}

static WORK: IrqWork = IrqWork::new(work_nop);

/// `irq-work-on`: queue the work on `target`, wait until it ran.
#[inline(always)]
pub fn irq_work_on(target: CpuId) -> Result<(), Fail> {
    if !SMP.irq_work_queue_on(&WORK, target) {
        return Err("irq_work_queue_on refused");
    }
    wait_until("irq_work did not run", || !WORK.is_busy())
}

/// `send-path` (and its calibration): `Begin` marker, then a waiting call
/// whose ICR write is followed by the `Probe` marker (see
/// `IpiDelivery::set_probe`). `None` calibrates: `Begin` then `Probe` at once.
pub fn probe_pairs(case: Case, target: Option<CpuId>, pairs: u32) -> Result<(), Fail> {
    for _ in 0..pairs {
        match target {
            Some(t) => {
                delivery().set_probe(true);
                marker(case, Phase::Begin);
                let r = SMP.smp_call_function_single(t, nop, 0, true);
                delivery().set_probe(false);
                r.map_err(|_| "smp_call_function_single failed")?;
            }
            None => {
                // The same marker code as after the ICR write of a probed
                // send (see `ipi::probe_marker`).
                marker(case, Phase::Begin);
                ipi::probe_marker(case);
            }
        }
    }
    Ok(())
}
