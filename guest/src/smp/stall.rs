//! Waiting for a csd, and the csd-lock stall detector (modern Linux's
//! `csd_lock_wait_toolong`).
//!
//! Every csd wait spins on [`Csd::is_locked`] with [`Arch::cpu_relax`]. A
//! wait that ends within [`CHECK_EVERY`] spins never reads the clock. After
//! that the clock is read once per `CHECK_EVERY` spins; the first read is
//! the start of the wait. Once the wait has lasted the timeout, the waiter
//! reports [`Event::CsdStall`] naming itself, the target, the function and
//! what the target is running right now; if the target is not running any
//! callback the IPI may have been lost, so it is sent again. Further reports
//! back off like Linux: the *n*-th comes `timeout * n * (log2(online) / 2 +
//! 1)` after the previous one. When the lock is finally released after a
//! report, [`Event::CsdUnstuck`] says so.

use shared::CpuId;

use super::arch::Arch;
use super::csd::{CSD_TYPE_ASYNC, Csd};
use super::event::Event;
use super::state::Smp;
use super::sync::Ordering;
use shared::record::WarnKind;

/// Spins between two clock reads of a waiting loop (a power of two).
pub(crate) const CHECK_EVERY: u32 = 32;
const _: () = assert!(CHECK_EVERY.is_power_of_two());

/// The state of one stalled wait.
#[derive(Default)]
struct Watch {
    /// Clock at the first check, if checked yet.
    start: Option<u64>,
    /// Clock at the last report (or at the start).
    last: u64,
    /// Stall id, 0 until the first report.
    id: u32,
    /// Reports so far.
    reports: u32,
    /// Address of the csd's function, recorded at the first report.
    func: usize,
}

/// The address of `csd`'s function, for the csd-lock wait's trace events.
#[cfg(feature = "trace")]
#[inline(always)]
fn traced_func(csd: &Csd) -> usize {
    // SAFETY: a waiter only waits on its own csds (the on-stack csd of its
    // call, its cfd csds, its per-CPU csd before relocking it), which it
    // locked and queued itself: their func is not written while they are
    // locked (the flusher only reads it), and only this CPU writes it once
    // they are unlocked, not during this wait.
    unsafe { csd.read() }.0 as usize
}

impl<A: Arch> Smp<A> {
    /// Waits until `csd` is unlocked (the seed's `csd_lock_wait`), with the
    /// stall detector. `this` is this CPU. The Acquire in `is_locked` makes
    /// everything the function wrote visible once this returns.
    #[inline]
    pub(crate) fn csd_lock_wait(&self, csd: &Csd, this: CpuId) {
        if csd.is_locked() {
            self.csd_lock_wait_spin(csd, this);
        }
    }

    /// [`Self::csd_lock_wait`] for the on-stack csd of a waiting call to
    /// `target`, which records its destination only now, when the wait has
    /// to spin (the stall detector reads it; nobody else does).
    #[inline]
    pub(crate) fn csd_lock_wait_stack(&self, csd: &Csd, this: CpuId, target: CpuId) {
        if csd.is_locked() {
            csd.set_dst(target.0);
            self.csd_lock_wait_spin(csd, this);
        }
    }

    /// Waits for an owner-only csd (per-CPU `csd_data`, cfd) to be free and
    /// locks it with type `csd_type` (the seed's `csd_lock`).
    #[inline]
    pub(crate) fn csd_lock(&self, csd: &Csd, this: CpuId, csd_type: u32) {
        self.csd_lock_wait(csd, this);
        csd.lock_owned(csd_type);
    }

    /// Unlocks `csd` (the seed's `csd_unlock`), warning if it was not locked.
    /// `func` is only for the warning. The csd must not be touched after.
    #[inline]
    pub(crate) fn csd_unlock(&self, this: CpuId, csd: &Csd, func: usize) {
        if !csd.unlock() {
            self.warn(this, WarnKind::UnlockNotLocked, func as u64);
        }
    }

    /// The first [`CHECK_EVERY`] spins of a wait: nothing but the csd is
    /// live, so a wait that ends here (an IPI round trip) returns with no
    /// stack frame to tear down.
    #[inline(never)]
    fn csd_lock_wait_spin(&self, csd: &Csd, this: CpuId) {
        // The wait's events name the csd's function (shared::trace's
        // contract); read once, only in the traced build.
        #[cfg(feature = "trace")]
        let func = traced_func(csd);
        trace_point!(
            self,
            CsdLockWaitStart,
            csd.dst(),
            csd as *const Csd as usize,
            func
        );
        'wait: {
            for _ in 0..CHECK_EVERY {
                self.arch.cpu_relax();
                if !csd.is_locked() {
                    break 'wait;
                }
            }
            self.csd_lock_wait_watched(csd, this);
        }
        trace_point!(
            self,
            CsdLockWaitEnd,
            csd.dst(),
            csd as *const Csd as usize,
            func
        );
    }

    /// The rest of a wait, under the stall detector; its first clock read
    /// comes at once (the wait has spun `CHECK_EVERY` times already).
    #[cold]
    #[inline(never)]
    fn csd_lock_wait_watched(&self, csd: &Csd, this: CpuId) {
        let mut watch = Watch::default();
        self.csd_lock_wait_toolong(csd, this, &mut watch);
        let mut spins: u32 = 0;
        loop {
            self.arch.cpu_relax();
            if !csd.is_locked() {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins & (CHECK_EVERY - 1) == 0 {
                self.csd_lock_wait_toolong(csd, this, &mut watch);
            }
        }
        if watch.id != 0 {
            self.csd_unstuck(csd, &watch);
        }
    }

    #[cold]
    #[inline(never)]
    fn csd_lock_wait_toolong(&self, csd: &Csd, this: CpuId, watch: &mut Watch) {
        let timeout = self.csd_lock_timeout_ns();
        if timeout == 0 {
            return;
        }
        let now = self.arch.now_ns();
        let Some(start) = watch.start else {
            watch.start = Some(now);
            watch.last = now;
            return;
        };
        if now < watch.last {
            // Our clock went backwards: don't blame the target, restart the
            // interval (Linux does the same).
            watch.last = now;
            return;
        }
        let factor = if watch.reports == 0 {
            1
        } else {
            u64::from(self.num_online_cpus().max(1).ilog2() / 2 + 1)
        };
        let threshold = timeout
            .saturating_mul(u64::from(watch.reports) + 1)
            .saturating_mul(factor);
        if now - watch.last <= threshold {
            return;
        }
        if watch.id == 0 {
            // Relaxed: a unique id and a diagnostic count; nothing is
            // published through them.
            watch.id = self
                .csd_bug_count
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            self.csd_lock_stuck.fetch_add(1, Ordering::Relaxed);
        }
        watch.reports += 1;
        let target = CpuId(csd.dst());
        let valid = target.index() < shared::MAX_CPUS;
        let running = if valid { self.arch.running(target) } else { 0 };
        // SAFETY: we are the CPU that locked and queued this csd (a waiter
        // only waits on its own csds), and its func/info are not written
        // while it is locked; the flusher only reads them.
        let (func, info) = unsafe { csd.read() };
        let resend = running == 0 && valid;
        watch.func = func as usize;
        self.arch.report(Event::CsdStall {
            id: watch.id,
            target,
            func: watch.func as u64,
            info: info as u64,
            waited_ns: now - start,
            target_running: running as u64,
            nth: watch.reports,
            resent_ipi: resend,
        });
        trace_point!(
            self,
            CsdStallReport,
            target.0,
            watch.func,
            now - start,
            csd as *const Csd as usize
        );
        if resend {
            trace_point!(
                self,
                CsdStallResend,
                target.0,
                watch.func,
                now - start,
                csd as *const Csd as usize
            );
            // Relaxed: a diagnostic count (read by the self-test after the
            // wait, on this CPU).
            self.stall_resends.fetch_add(1, Ordering::Relaxed);
            self.send_single_ipi(this, target);
        }
        watch.last = now;
    }

    #[cold]
    #[inline(never)]
    fn csd_unstuck(&self, csd: &Csd, watch: &Watch) {
        let now = self.arch.now_ns();
        trace_point!(
            self,
            CsdStallUnstuck,
            csd.dst(),
            watch.func,
            now.saturating_sub(watch.start.unwrap_or(now)),
            csd as *const Csd as usize
        );
        // Relaxed: diagnostic count, see `csd_lock_wait_toolong`.
        self.csd_lock_stuck.fetch_sub(1, Ordering::Relaxed);
        self.arch.report(Event::CsdUnstuck {
            id: watch.id,
            // Only this CPU writes `dst` (before it queues the csd).
            target: CpuId(csd.dst()),
            func: watch.func as u64,
            waited_ns: now.saturating_sub(watch.start.unwrap_or(now)),
            reports: watch.reports,
        });
    }
}

/// Keeps a queued on-stack csd alive if the waiting caller unwinds (host
/// tests only: the guest aborts on panic). Dropping it waits until the
/// flusher is done with the csd; the normal path forgets it after its own
/// wait, so it costs nothing there.
pub(crate) struct StackCsdGuard<'a>(pub(crate) &'a Csd);

impl Drop for StackCsdGuard<'_> {
    fn drop(&mut self) {
        while self.0.is_locked() {
            super::sync::spin_loop();
        }
    }
}

/// The csd type of a call: SYNC when the caller waits.
#[inline]
pub(crate) const fn csd_type_for(wait: bool) -> u32 {
    if wait {
        super::csd::CSD_TYPE_SYNC
    } else {
        CSD_TYPE_ASYNC
    }
}
