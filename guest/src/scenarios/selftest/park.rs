//! Parking a CPU for a test.
//!
//! **Parking** ([`park`]) is a test-only device, not CPU hotplug: an async
//! call makes the CPU spin inside its callback with interrupts off until it
//! is released (or a deadline passes), so it takes no IPI and its call
//! queue fills up without being flushed. While parked it may be marked
//! offline ([`Parked::set_offline`]) to stand in for a CPU that is going
//! away; it is always marked online again before it is released, unless a
//! case explicitly wants the IPI to arrive while it is offline
//! ([`Parked::release_offline`]).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use shared::CpuId;

use super::harness::{Text, this_cpu, wait_for, wait_ms};
use crate::arch::x86_64::cpu;
use crate::kernel::SMP;
use crate::mem::Zeroable;
use crate::scenarios::percpu::PerCpu;
use crate::smp::{Csd, IrqWork};
use crate::time::{self, Deadline, spin_until};

/// How long a CPU stays parked at most before it gives up by itself (more
/// than the core's 2 s sender wait in `synchronize_senders`), on a few CPUs
/// of the reference host (see [`park_max_ms`]).
const PARK_MAX_MS: u64 = 5_000;

/// [`PARK_MAX_MS`] scaled for this machine and host (never shorter).
pub fn park_max_ms() -> u64 {
    time::scaled_ms(PARK_MAX_MS)
}

/// What else than [`Parked::release`] ends a park.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Only the release (or the deadline).
    Released,
    /// Also: some CPU's csd-lock wait is reported stuck
    /// ([`crate::smp::Smp::csd_lock_is_stuck`]), i.e. a caller is provably
    /// waiting for this CPU.
    CallerStuck,
    /// Also: [`signal`] was called.
    Signal,
}

const MODE_RELEASED: u32 = 0;
const MODE_STUCK: u32 = 1;
const MODE_SIGNAL: u32 = 2;
/// Command to a parked CPU: run `smpcfd_dying_cpu` (see [`Parked::dying_flush`]).
const CMD_DYING: u32 = 1;
/// Command to a parked CPU: queue [`MARKER`] locally (see [`Parked::queue_marker`]).
const CMD_MARKER: u32 = 2;
/// Command to a parked CPU: see [`Parked::post_synchronize_senders`].
const CMD_SYNC_SENDERS: u32 = 3;

/// Whether the last [`CMD_SYNC_SENDERS`] saw a caller stuck and ran
/// `synchronize_senders`.
static SYNC_SENDERS_RAN: AtomicBool = AtomicBool::new(false);
/// The csd-lock stall timeout [`CMD_SYNC_SENDERS`] restores once it saw
/// the stall (the stalled caller cannot, and one report is enough).
static RESTORE_TIMEOUT_NS: AtomicU64 = AtomicU64::new(0);

/// A local irq_work a parked CPU queues on itself, to learn when its next
/// call-function flush is past the offline check. It runs from the
/// irq_work self-IPI (vector 0xF6) once the park ends and interrupts come
/// back on, and requeues itself once, so its second run comes from a
/// second self-IPI. A call-function IPI pending at the same time is taken
/// first, because its vector (0xFB) is higher, so by the second run that
/// flush is over. (Were it the other way round, a late warning could be
/// missed: a false pass, never a false fail.)
static MARKER: IrqWork = IrqWork::new(marker_fn);
static MARKER_RUNS: AtomicU32 = AtomicU32::new(0);
static MARKER_REQUEUE: AtomicBool = AtomicBool::new(false);

fn marker_fn(_: &IrqWork) {
    MARKER_RUNS.fetch_add(1, Ordering::SeqCst);
    if MARKER_REQUEUE.swap(false, Ordering::SeqCst) {
        SMP.irq_work_queue(&MARKER);
    }
}

/// How often [`MARKER`] ran.
pub fn marker_runs() -> u32 {
    MARKER_RUNS.load(Ordering::SeqCst)
}

/// How a park ended: released ([`Parked::release`] and friends).
pub const END_RELEASED: u32 = 1;
/// See [`Until::CallerStuck`].
pub const END_STUCK: u32 = 2;
/// See [`Until::Signal`].
pub const END_SIGNAL: u32 = 3;
/// The park deadline passed: the case took too long or hung.
pub const END_TIMEOUT: u32 = 4;

struct ParkSlot {
    csd: Csd,
    /// Park number, bumped by each [`park`].
    seq: AtomicU32,
    /// The park number the callback entered / was released for / exited.
    entered: AtomicU32,
    released: AtomicU32,
    exited: AtomicU32,
    mode: AtomicU32,
    command: AtomicU32,
    /// Commands completed by the parked CPU.
    done: AtomicU32,
    /// One of the `END_*` values of the last park.
    end: AtomicU32,
}

// SAFETY: every field is zeroable (`Csd`, atomics) and the struct has no
// padding (a 32-byte csd and eight u32s). All zero is the slot never
// parked: sequence numbers 0, no mode, command or end, and a csd with no
// function yet, which `park` writes under the csd lock (`Csd::set`)
// before it queues it.
unsafe impl Zeroable for ParkSlot {}

const _: () = assert!(core::mem::size_of::<ParkSlot>() == 64);

/// Each CPU's park slot, for the CPUs that exist.
static PARK: PerCpu<ParkSlot> = PerCpu::new();

static SIGNAL: AtomicBool = AtomicBool::new(false);
/// Parks that ended on their deadline, ever (the runner fails the case
/// during which this grows).
pub static PARK_TIMEOUTS: AtomicU32 = AtomicU32::new(0);

/// Ends every park in [`Until::Signal`] mode. Callable from callbacks.
pub fn signal() {
    SIGNAL.store(true, Ordering::SeqCst);
}

/// The park callback: interrupts are off (IPI context) for all of it.
fn park_cb(seq: usize) {
    let seq = seq as u32;
    let Some(slot) = PARK.get(this_cpu()) else {
        return;
    };
    let deadline = Deadline::after_ms(park_max_ms());
    let mode = slot.mode.load(Ordering::SeqCst);
    slot.entered.store(seq, Ordering::SeqCst);
    let end = loop {
        if slot.released.load(Ordering::SeqCst) == seq {
            break END_RELEASED;
        }
        let cmd = slot.command.swap(0, Ordering::SeqCst);
        if cmd != 0 {
            match cmd {
                CMD_DYING => SMP.smpcfd_dying_cpu(),
                CMD_MARKER => {
                    MARKER_REQUEUE.store(true, Ordering::SeqCst);
                    SMP.irq_work_queue(&MARKER);
                }
                CMD_SYNC_SENDERS => {
                    let stuck = spin_until(wait_ms(), || SMP.csd_lock_is_stuck());
                    SMP.set_csd_lock_timeout_ns(RESTORE_TIMEOUT_NS.load(Ordering::SeqCst));
                    if stuck {
                        SMP.synchronize_senders();
                    }
                    SYNC_SENDERS_RAN.store(stuck, Ordering::SeqCst);
                    signal();
                }
                _ => {}
            }
            slot.done.fetch_add(1, Ordering::SeqCst);
        }
        if mode == MODE_STUCK && SMP.csd_lock_is_stuck() {
            break END_STUCK;
        }
        if mode == MODE_SIGNAL && SIGNAL.load(Ordering::SeqCst) {
            break END_SIGNAL;
        }
        if deadline.expired() {
            PARK_TIMEOUTS.fetch_add(1, Ordering::SeqCst);
            break END_TIMEOUT;
        }
        cpu::pause();
    };
    slot.end.store(end, Ordering::SeqCst);
    slot.exited.store(seq, Ordering::SeqCst);
}

/// A parked CPU. Dropping it marks the CPU online again (if this marked it
/// offline), releases it and waits until it left the callback.
pub struct Parked {
    cpu: CpuId,
    /// The parked CPU's slot.
    slot: &'static ParkSlot,
    seq: u32,
    offline: bool,
    done: bool,
}

/// Parks the other, online CPU `cpu` (see the module docs): returns once
/// it spins in the park callback with interrupts off.
pub fn park(cpu: CpuId, until: Until) -> Result<Parked, Text> {
    let slot = PARK
        .get(cpu)
        .ok_or_else(|| crate::text!("cannot park CPU {cpu}"))?;
    if cpu == this_cpu() {
        return Err(crate::text!("cannot park this CPU ({cpu})"));
    }
    let seq = slot.seq.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
    let mode = match until {
        Until::Released => MODE_RELEASED,
        Until::CallerStuck => MODE_STUCK,
        Until::Signal => MODE_SIGNAL,
    };
    slot.mode.store(mode, Ordering::SeqCst);
    slot.command.store(0, Ordering::SeqCst);
    slot.end.store(0, Ordering::SeqCst);
    SIGNAL.store(false, Ordering::SeqCst);
    slot.csd
        .set(park_cb, seq as usize)
        .map_err(|e| crate::text!("CPU {cpu}: park csd busy ({})", e.errno()))?;
    SMP.smp_call_function_single_async(cpu, &slot.csd)
        .map_err(|e| crate::text!("parking CPU {cpu} failed ({})", e.errno()))?;
    if !wait_for(|| slot.entered.load(Ordering::SeqCst) == seq) {
        // Should it still get there, it leaves at once.
        slot.released.store(seq, Ordering::SeqCst);
        return Err(crate::text!(
            "CPU {cpu} did not enter its park callback within {} ms",
            wait_ms()
        ));
    }
    Ok(Parked {
        cpu,
        slot,
        seq,
        offline: false,
        done: false,
    })
}

impl Parked {
    /// The parked CPU.
    pub fn cpu(&self) -> CpuId {
        self.cpu
    }

    fn slot(&self) -> &'static ParkSlot {
        self.slot
    }

    /// Marks the parked CPU offline (test-only, see the module docs).
    pub fn set_offline(&mut self) {
        let _ = SMP.set_cpu_online(self.cpu, false);
        self.offline = true;
    }

    /// Makes the parked CPU run `smpcfd_dying_cpu()` (irqs off, on itself)
    /// and waits until it did.
    pub fn dying_flush(&self) -> Result<(), Text> {
        self.command(CMD_DYING, "smpcfd_dying_cpu")
    }

    /// Makes the parked CPU queue [`MARKER`] on its own irq_work list and
    /// waits until it did; [`marker_runs`] grows by 2 once the CPU's next
    /// call-function flush after the park is done.
    pub fn queue_marker(&self) -> Result<(), Text> {
        self.command(CMD_MARKER, "irq_work_queue(marker)")
    }

    /// Makes the parked (and offline) CPU wait until some caller's
    /// csd-lock wait is reported stuck, set the stall timeout to
    /// `restore_timeout_ns`, run `synchronize_senders()` (which waits for
    /// that caller's send window), then [`signal`]. Returns at once;
    /// [`Self::wait_synchronize_senders`] waits for it.
    pub fn post_synchronize_senders(&self, restore_timeout_ns: u64) -> u32 {
        SYNC_SENDERS_RAN.store(false, Ordering::SeqCst);
        RESTORE_TIMEOUT_NS.store(restore_timeout_ns, Ordering::SeqCst);
        self.post(CMD_SYNC_SENDERS)
    }

    /// Waits for [`Self::post_synchronize_senders`] (`posted` is what it
    /// returned); whether `synchronize_senders` ran.
    pub fn wait_synchronize_senders(&self, posted: u32) -> Result<bool, Text> {
        self.wait_done(posted, "synchronize_senders")?;
        Ok(SYNC_SENDERS_RAN.load(Ordering::SeqCst))
    }

    /// Posts a command; returns the `done` count to wait past.
    fn post(&self, cmd: u32) -> u32 {
        let slot = self.slot();
        // The command slot is only written here and taken by the parked CPU,
        // which counts `done` for every command it took.
        let before = slot.done.load(Ordering::SeqCst);
        slot.command.store(cmd, Ordering::SeqCst);
        before
    }

    fn command(&self, cmd: u32, what: &str) -> Result<(), Text> {
        let before = self.post(cmd);
        self.wait_done(before, what)
    }

    fn wait_done(&self, before: u32, what: &str) -> Result<(), Text> {
        let slot = self.slot();
        if wait_for(|| slot.done.load(Ordering::SeqCst) != before) {
            Ok(())
        } else {
            Err(crate::text!(
                "parked CPU {} did not run {what} within {} ms",
                self.cpu,
                wait_ms()
            ))
        }
    }

    /// Waits until the CPU left the park by itself (modes other than
    /// [`Until::Released`]); returns how it ended (`END_*`), or 0 if it
    /// was still parked after [`wait_ms`] (then it is released).
    pub fn wait_end(mut self) -> u32 {
        let slot = self.slot();
        let seq = self.seq;
        let left = wait_for(|| slot.exited.load(Ordering::SeqCst) == seq);
        let end = slot.end.load(Ordering::SeqCst);
        self.finish();
        if left { end } else { 0 }
    }

    /// Releases the CPU (online again first); false if it did not leave
    /// the callback within [`wait_ms`].
    pub fn release(mut self) -> bool {
        self.finish()
    }

    /// Releases the CPU *while it is still marked offline*, waits until it
    /// left the callback, and returns a guard that marks it online again.
    pub fn release_offline(mut self) -> (bool, OfflineGuard) {
        let guard = OfflineGuard(self.cpu);
        self.offline = false;
        (self.finish(), guard)
    }

    fn finish(&mut self) -> bool {
        if self.done {
            return true;
        }
        self.done = true;
        if self.offline {
            let _ = SMP.set_cpu_online(self.cpu, true);
            self.offline = false;
        }
        let slot = self.slot();
        let seq = self.seq;
        slot.released.store(seq, Ordering::SeqCst);
        let left = wait_for(|| slot.exited.load(Ordering::SeqCst) == seq);
        if !left {
            crate::kprintln!("selftest: CPU {} did not leave its park callback", self.cpu);
        }
        left
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Marks a CPU online again when dropped.
pub struct OfflineGuard(CpuId);

impl Drop for OfflineGuard {
    fn drop(&mut self) {
        let _ = SMP.set_cpu_online(self.0, true);
    }
}

/// A CPU that is not online for the duration of a case: a present CPU that
/// was never brought up (`maxcpus=`), or a parked AP marked offline.
pub enum Offline {
    /// Present, never brought up.
    Present(CpuId),
    /// Parked and marked offline; restored on drop.
    Parked(Parked),
}

impl Offline {
    /// The offline CPU.
    pub fn cpu(&self) -> CpuId {
        match self {
            Offline::Present(c) => *c,
            Offline::Parked(p) => p.cpu(),
        }
    }

    /// How it was made offline, for details.
    pub fn how(&self) -> &'static str {
        match self {
            Offline::Present(_) => "present, never brought up",
            Offline::Parked(_) => "parked AP marked offline",
        }
    }
}

/// An offline CPU: a present offline CPU if there is one, else the
/// highest online AP, parked and marked offline.
pub fn offline_cpu() -> Result<Offline, Text> {
    let present_off = SMP.present_mask().and_not(SMP.online_mask());
    if let Some(c) = present_off.first() {
        return Ok(Offline::Present(c));
    }
    let cpu = SMP
        .online_mask()
        .without(this_cpu())
        .last()
        .ok_or_else(|| crate::text!("no CPU available to take offline"))?;
    let mut p = park(cpu, Until::Released)?;
    p.set_offline();
    Ok(Offline::Parked(p))
}
