//! CPU hotplug: the idle loop's poll points, taking a CPU down (on the
//! outgoing CPU, with irqs off: offline, wait for senders, dying flush,
//! free its call data, halt), bringing it back (`smpboot::cpu_up`, which
//! INIT-SIPI-SIPIs the halted CPU), and the host's requests.
//!
//! States follow modern Linux's ordered cpuhp steps for the smp core:
//! prepare (`smpcfd_prepare_cpu`, failure cancels), online, dying (on the
//! outgoing CPU: `smpcfd_dying_cpu`), dead (`smpcfd_dead_cpu`), and
//! up-canceled for a CPU that does not come up in time.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use shared::mailbox::{CpuStatsWire, Op, result};
use shared::vectors;
use shared::{CpuId, MAX_CPUS};

use super::smpboot::{self, UpError};
use super::{SMP, mailbox};
use crate::arch::x86_64::x2apic::{self, Destination, Icr};
use crate::arch::x86_64::{cpu, percpu};
use crate::kprintln;
use crate::time;

/// How long a CPU gets to go down.
const DOWN_TIMEOUT_MS: u64 = 5_000;
/// Longest a CPU sits in a test `hold` before it lets itself go.
const HOLD_TIMEOUT_MS: u64 = 10_000;

/// Per-CPU hotplug control, written by the controlling CPU and read by
/// the CPU itself at its poll points.
struct HpCpu {
    /// Go offline at the next poll point.
    down_requested: AtomicBool,
    /// Test hook: sit with irqs off at the next poll point until released.
    hold: AtomicBool,
    /// The CPU is sitting in `hold`.
    held: AtomicBool,
    /// The CPU finished going down (it executes nothing now).
    dead: AtomicBool,
    /// Mailbox request to acknowledge once dead (0: none).
    ack_seq: AtomicU32,
}

impl HpCpu {
    const fn new() -> Self {
        HpCpu {
            down_requested: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            held: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            ack_seq: AtomicU32::new(0),
        }
    }
}

static HP: [HpCpu; MAX_CPUS] = [const { HpCpu::new() }; MAX_CPUS];
/// `run=wait` ends when the host says so.
static FINISH: AtomicBool = AtomicBool::new(false);

fn hp(cpu: CpuId) -> &'static HpCpu {
    &HP[cpu.index() % MAX_CPUS]
}

/// Sends `cpu` the WAKE IPI (out of a halt, to a poll point).
pub(crate) fn wake(cpu: CpuId) {
    let apic = percpu::area(cpu).apic_id();
    x2apic::send(Icr::fixed(vectors::WAKE, Destination::Physical(apic)));
}

/// Called by a CPU that (re)starts, before it marks itself online.
pub fn starting(cpu: CpuId) {
    let h = hp(cpu);
    // Relaxed: the controller reads these only after it sees the CPU
    // online, which `set_cpu_online` publishes with release semantics.
    h.down_requested.store(false, Ordering::Relaxed);
    h.dead.store(false, Ordering::Relaxed);
    h.hold.store(false, Ordering::Relaxed);
    h.held.store(false, Ordering::Relaxed);
}

/// Work an idle CPU runs in task context (interrupts enabled) while it is
/// set: `run=torture` puts its invokers here, so that a CPU that went
/// down and came back resumes its work.
static IDLE_TASK: [IdleTask; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];

/// One CPU's idle task.
type IdleTask = spin::Mutex<Option<fn()>>;

/// Sets (or clears) the task `cpu` runs whenever it is idle, and wakes it.
pub fn set_idle_task(cpu: CpuId, task: Option<fn()>) {
    *IDLE_TASK[cpu.index() % MAX_CPUS].lock() = task;
    if SMP.cpu_online(cpu) {
        wake(cpu);
    }
}

/// What an idle CPU does: take interrupts, act on hotplug requests, and
/// run its idle task if it has one.
///
/// With `idle=poll` it spins with interrupts on instead of halting, on its
/// call queue, and announces that it polls: a sender then skips the IPI
/// (`arch::x86_64::poll_idle`), so after polling it drains its call queue
/// itself, still polling, and goes straight back to its spin unless a
/// hotplug request or an idle task is waiting (the next call may follow
/// at once). It stops polling (and drains once more) after each batch of
/// pauses that found no work, for the hotplug poll point, and halts once
/// it polled a while without being woken (see `ipi::PollWindow`); after
/// the next interrupt it polls again.
pub fn idle() -> ! {
    use crate::arch::x86_64::ipi;
    let me = percpu::this_cpu();
    ipi::note_booted(me);
    let mut window = ipi::PollWindow::new();
    loop {
        cpu::cli();
        poll(me);
        // Copied out: the lock is not held while the task runs.
        let task = *IDLE_TASK[me.index() % MAX_CPUS].lock();
        if let Some(task) = task {
            // The task calls `poll` itself, with interrupts off.
            cpu::sti();
            task();
            continue;
        }
        if ipi::idle_polls(me) && window.open() {
            ipi::polling_enter(me);
            loop {
                let woken = window.poll_batch(|| SMP.call_queue_pending(me));
                if woken {
                    SMP.flush_smp_call_function_queue_irqs_off();
                }
                window.batch_done(woken);
                if !woken || !ipi::idle_polls(me) || wanted_elsewhere(me) {
                    break;
                }
            }
            ipi::polling_exit(me);
            // What senders queued while they saw this CPU polling.
            SMP.flush_smp_call_function_queue_irqs_off();
            continue;
        }
        // The wake-up from this halt starts a new polling window.
        window.reset();
        // Atomically re-enable interrupts and halt: a wake-up that arrives
        // after `poll` looked is not lost.
        cpu::sti_hlt();
    }
}

/// Whether something other than calls waits for this idle CPU: a hotplug
/// request or an idle task (a task being set counts as one).
#[inline(always)]
fn wanted_elsewhere(me: CpuId) -> bool {
    let h = hp(me);
    // Relaxed: a hint; `poll` reads both again with Acquire.
    h.hold.load(Ordering::Relaxed)
        || h.down_requested.load(Ordering::Relaxed)
        || IDLE_TASK[me.index() % MAX_CPUS]
            .try_lock()
            .is_none_or(|t| t.is_some())
}

/// A poll point: must be called with interrupts disabled. Goes offline
/// (never returns) if asked to, sits in `hold` if asked to.
pub fn poll(me: CpuId) {
    let h = hp(me);
    // Acquire: pairs with the Release store of the requester, so what it
    // set up before asking is visible here.
    if h.hold.load(Ordering::Acquire) {
        // Release: pairs with the Acquire load in `hold`.
        h.held.store(true, Ordering::Release);
        let deadline = time::Deadline::after_ms(HOLD_TIMEOUT_MS);
        while h.hold.load(Ordering::Acquire) && !h.down_requested.load(Ordering::Acquire) {
            if deadline.expired() {
                kprintln!(
                    "held for {HOLD_TIMEOUT_MS} ms with irqs off and never released; going on"
                );
                // Relaxed: this CPU's own flag; the holder's `release`
                // finds it already cleared.
                h.hold.store(false, Ordering::Relaxed);
                break;
            }
            cpu::pause();
        }
        // Release: pairs with the Acquire load in `release`.
        h.held.store(false, Ordering::Release);
    }
    if h.down_requested.load(Ordering::Acquire) {
        take_cpu_down(me);
    }
}

/// The outgoing CPU's part (Linux's `take_cpu_down` + the smp core's
/// dying step), with interrupts disabled: leave the online mask, wait
/// until no CPU is between its online check and its enqueue, run whatever
/// is queued without waiting for an IPI, free the call data, halt.
fn take_cpu_down(me: CpuId) -> ! {
    let _ = SMP.set_cpu_online(me, false);
    SMP.synchronize_senders();
    SMP.smpcfd_dying_cpu();
    let _ = SMP.smpcfd_dead_cpu(me);
    let h = hp(me);
    // Relaxed: read by this CPU only, after the host asked.
    let seq = h.ack_seq.swap(0, Ordering::Relaxed);
    if seq != 0 {
        mailbox::complete(seq, result::OK);
    }
    // Release: pairs with the Acquire in `cpu_down`'s wait: everything
    // above happened before the CPU is seen dead.
    h.dead.store(true, Ordering::Release);
    cpu::halt_forever()
}

/// Why a CPU could not go down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownError {
    /// Not a CPU, or the boot CPU (which stays online here).
    Invalid,
    /// Already offline.
    AlreadyOffline,
    /// The calling CPU cannot take itself down this way.
    IsSelf,
    /// It is the last online CPU.
    LastCpu,
    /// It did not finish going down in time.
    Timeout,
}

fn check_down(cpu: CpuId) -> Result<(), DownError> {
    if cpu.0 == 0 || cpu.0 >= SMP.nr_cpu_ids() {
        return Err(DownError::Invalid);
    }
    if !SMP.cpu_online(cpu) {
        return Err(DownError::AlreadyOffline);
    }
    if SMP.num_online_cpus() <= 1 {
        return Err(DownError::LastCpu);
    }
    Ok(())
}

fn request_down(cpu: CpuId, ack_seq: u32) {
    let h = hp(cpu);
    // Relaxed: ordered before the Release store below.
    h.ack_seq.store(ack_seq, Ordering::Relaxed);
    // Release: pairs with the Acquire load in `poll` on `cpu`.
    h.down_requested.store(true, Ordering::Release);
    wake(cpu);
}

/// Takes `cpu` offline and waits until it executes nothing. Call from
/// task context on another CPU, interrupts enabled.
pub fn cpu_down(cpu: CpuId) -> Result<(), DownError> {
    check_down(cpu)?;
    if cpu == percpu::this_cpu() {
        return Err(DownError::IsSelf);
    }
    request_down(cpu, 0);
    // Acquire: pairs with the Release store of `dead` in `take_cpu_down`.
    if time::spin_until(DOWN_TIMEOUT_MS, || hp(cpu).dead.load(Ordering::Acquire)) {
        Ok(())
    } else {
        kprintln!("CPU {cpu} did not go offline within {DOWN_TIMEOUT_MS} ms");
        Err(DownError::Timeout)
    }
}

/// Brings `cpu` back (or up for the first time).
pub fn cpu_up(cpu: CpuId) -> Result<(), UpError> {
    smpboot::cpu_up(cpu)
}

/// How long a CPU gets to reach its `hold`.
const HOLD_REACH_MS: u64 = 1_000;

/// Test hook: makes idle `cpu` sit with interrupts off until [`release`].
/// Returns false (with a diagnostic, and the hold taken back so that the
/// CPU does not sit there later) if it did not get there in time.
pub fn hold(cpu: CpuId) -> bool {
    // Release: pairs with the Acquire load in `poll`.
    hp(cpu).hold.store(true, Ordering::Release);
    wake(cpu);
    // Acquire: pairs with the Release store of `held` in `poll`.
    if time::spin_until(HOLD_REACH_MS, || hp(cpu).held.load(Ordering::Acquire)) {
        return true;
    }
    kprintln!("hold: CPU {cpu} did not reach its hold within {HOLD_REACH_MS} ms (wake IPI lost?)");
    release(cpu);
    false
}

/// Ends a [`hold`].
pub fn release(cpu: CpuId) {
    // Release: pairs with the Acquire load in `poll`.
    hp(cpu).hold.store(false, Ordering::Release);
}

/// The host's request interrupt (on the boot CPU).
pub fn host_request() {
    x2apic::eoi();
    // Relaxed: a statistic.
    percpu::this().host_requests.fetch_add(1, Ordering::Relaxed);
    let Some(req) = mailbox::pending() else {
        return;
    };
    let cpu = CpuId(req.cpu);
    let res = match req.op {
        Ok(Op::Offline) => match check_down(cpu) {
            // Finished and acknowledged by the outgoing CPU itself.
            Ok(()) => return request_down(cpu, req.seq),
            Err(DownError::AlreadyOffline) => result::EALREADY,
            Err(DownError::LastCpu) => result::EBUSY,
            Err(_) => result::EINVAL,
        },
        Ok(Op::Online) => match smpboot::cpu_up(cpu) {
            Ok(()) => result::OK,
            Err(UpError::AlreadyOnline) => result::EALREADY,
            Err(UpError::NoSuchCpu) => result::EINVAL,
            Err(UpError::PrepareFailed | UpError::Timeout) => result::EIO,
        },
        Ok(Op::Stats) => {
            write_stats();
            result::OK
        }
        Ok(Op::Finish) => {
            // Relaxed: read by this CPU's task context after the interrupt.
            FINISH.store(true, Ordering::Relaxed);
            result::OK
        }
        Err(_) => result::ENOSYS,
    };
    mailbox::complete(req.seq, res);
}

fn write_stats() {
    let mut stats = [CpuStatsWire::default(); MAX_CPUS];
    let n = (SMP.nr_cpu_ids() as usize).min(MAX_CPUS);
    for (i, s) in stats.iter_mut().take(n).enumerate() {
        let cpu = CpuId(i as u32);
        let core = SMP.stats(cpu);
        // Relaxed: statistics snapshots.
        *s = CpuStatsWire {
            online: u64::from(SMP.cpu_online(cpu)),
            ipi_sent: crate::arch::x86_64::ipi::ipis_sent(cpu),
            ipi_received: core.kicks_taken,
            callbacks_run: core.callbacks_run,
            calls_queued: core.calls_queued,
        };
    }
    mailbox::write_stats(&stats[..n]);
}

/// `run=wait`: serve the host's requests until it sends `Finish` (or
/// `ms` pass), then report the online CPUs.
pub fn wait_for_host(ms: u64) -> shared::status::GuestStatus {
    kprintln!("waiting for the host (at most {ms} ms)");
    let deadline = time::Deadline::after_ms(ms);
    cpu::sti();
    // Relaxed: set by this CPU's interrupt handler.
    while !FINISH.load(Ordering::Relaxed) && !deadline.expired() {
        cpu::pause();
    }
    kprintln!(
        "{} CPUs online: {}",
        SMP.num_online_cpus(),
        crate::scenarios::demo::CpuList(SMP.online_mask())
    );
    if FINISH.load(Ordering::Relaxed) {
        shared::status::GuestStatus::Success
    } else {
        kprintln!("the host did not finish in time");
        shared::status::GuestStatus::Failure
    }
}
