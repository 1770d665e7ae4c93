//! Taking a CPU down, on the outgoing CPU with irqs off: its poll points,
//! then offline, wait for senders, dying flush, free its call data, halt.
//! Bringing it back is `smpboot::cpu_up` (INIT-SIPI-SIPI to the halted
//! CPU). Also the `hold` test hook, which parks an idle CPU with its
//! interrupts off at its next poll point.
//!
//! States follow modern Linux's ordered cpuhp steps for the smp core:
//! prepare (`smpcfd_prepare_cpu`, failure cancels), online, dying (on the
//! outgoing CPU: `smpcfd_dying_cpu`), dead (`smpcfd_dead_cpu`), and
//! up-canceled for a CPU that does not come up in time.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use shared::mailbox::result;
use shared::vectors;
use shared::{CpuId, percpu_window};

use super::machine::SMP;
use super::mailbox;
use crate::arch::x86_64::cpu_table::CpuTable;
use crate::arch::x86_64::x2apic::{self, Destination, Icr};
use crate::arch::x86_64::{cpu, percpu};
use crate::kprintln;
use crate::mem::Zeroable;
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

// SAFETY: atomics at 0: nothing requested, not dead, no ack.
unsafe impl Zeroable for HpCpu {}

/// The hotplug slots, a table of the per-CPU window (read by the dying and
/// idle paths at a constant address); only the CPUs that exist have slots
/// of their own, and only theirs are written (callers check the CPU first).
static HP: CpuTable<HpCpu> = CpuTable::new(percpu_window::HOTPLUG);
fn hp(cpu: CpuId) -> &'static HpCpu {
    HP.get(cpu)
}

/// Sends `cpu` the WAKE IPI (out of a halt, to a poll point), with a
/// recheck request so that its idle loop looks at what changed.
pub fn wake(cpu: CpuId) {
    percpu::request_idle_recheck(cpu);
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

/// A poll point: must be called with interrupts disabled. Goes offline
/// (never returns) if asked to, sits in `hold` if asked to.
pub fn poll(me: CpuId) {
    let h = hp(me);
    // Acquire: pairs with the Release store of the requester, so what it
    // set up before asking is visible here.
    if h.hold.load(Ordering::Acquire) {
        // Release: pairs with the Acquire load in `hold`.
        h.held.store(true, Ordering::Release);
        let deadline = time::Deadline::after_ms(time::scaled_ms(HOLD_TIMEOUT_MS));
        while h.hold.load(Ordering::Acquire) && !h.down_requested.load(Ordering::Acquire) {
            if deadline.expired() {
                kprintln!(
                    "held for {} ms with irqs off and never released; going on",
                    time::scaled_ms(HOLD_TIMEOUT_MS)
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

/// Whether `cpu` may be taken down now.
pub fn check_down(cpu: CpuId) -> Result<(), DownError> {
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

/// Asks `cpu` to go down at its next poll point; once dead it completes
/// mailbox request `ack_seq` (0: none).
pub fn request_down(cpu: CpuId, ack_seq: u32) {
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
    if time::spin_until(time::scaled_ms(DOWN_TIMEOUT_MS), || {
        hp(cpu).dead.load(Ordering::Acquire)
    }) {
        Ok(())
    } else {
        kprintln!(
            "CPU {cpu} did not go offline within {} ms",
            time::scaled_ms(DOWN_TIMEOUT_MS)
        );
        Err(DownError::Timeout)
    }
}

/// How long a CPU gets to reach its `hold`.
const HOLD_REACH_MS: u64 = 1_000;

/// Test hook: makes idle `cpu` sit with interrupts off until [`release`].
/// Returns false (with a diagnostic, and the hold taken back so that the
/// CPU does not sit there later) if it did not get there in time.
pub fn hold(cpu: CpuId) -> bool {
    let Some(h) = HP.backed(cpu) else {
        kprintln!("hold: there is no CPU {cpu}");
        return false;
    };
    // Release: pairs with the Acquire load in `poll`.
    h.hold.store(true, Ordering::Release);
    wake(cpu);
    // Acquire: pairs with the Release store of `held` in `poll`.
    if time::spin_until(time::scaled_ms(HOLD_REACH_MS), || {
        hp(cpu).held.load(Ordering::Acquire)
    }) {
        return true;
    }
    kprintln!(
        "hold: CPU {cpu} did not reach its hold within {} ms (wake IPI lost?)",
        time::scaled_ms(HOLD_REACH_MS)
    );
    release(cpu);
    false
}

/// Ends a [`hold`].
pub fn release(cpu: CpuId) {
    if let Some(h) = HP.backed(cpu) {
        // Release: pairs with the Acquire load in `poll`.
        h.hold.store(false, Ordering::Release);
    }
}
