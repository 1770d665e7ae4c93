//! Polling idle (`idle=poll`): a CPU with nothing to do spins with
//! interrupts enabled on its own call queue, having published a polling
//! flag; a sender that queued work to it and then finds the flag set skips
//! the IPI (Linux's `TIF_POLLING_NRFLAG`), and the idle loop drains the
//! queue itself once its spin sees work. The flag stays set through that
//! drain and the next spin (whatever is queued meanwhile, the next spin
//! sees); the idle loop clears it only to leave polling, and then drains
//! once more. So the callbacks of that drain run with the flag set: calls
//! queued to this CPU meanwhile skip their IPI and are found by the next
//! spin once the callback returns (it must return, as every callback
//! must, interrupts off). Which CPUs poll is chosen in `ipi.rs`.
//!
//! Lost wake-ups are excluded Dekker-style, with SeqCst on both sides: the
//! sender queues (the call queue's add is a SeqCst read-modify-write), then
//! reads the flag (SeqCst); the idle CPU clears the flag (SeqCst), then
//! drains its queue a last time (the take is a SeqCst exchange). In the
//! single order of SeqCst operations, whichever side comes second sees the
//! other's write: either the sender sees the flag clear and sends the IPI,
//! or the drain finds the call. On x86 none of it costs an instruction
//! beyond the locked add, the load, the exchange and the take. Linux sets
//! `TIF_NEED_RESCHED` with a compare-exchange of the idle task's flags
//! instead (`set_nr_if_polling`), because those flags carry other bits;
//! polling the queue itself needs neither that read-modify-write on the
//! sender nor a second flag for the idle CPU to test.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shared::{CpuId, percpu_window};

use super::cpu_table::CpuTable;
use super::percpu;
use crate::mem::Zeroable;

/// A CPU's idle word is polled by itself and written by senders: each on
/// its own cache line.
#[repr(C, align(64))]
struct PollWord {
    state: AtomicU32,
    /// IPIs this CPU (as sender) skipped because the target was polling.
    skipped: AtomicU64,
    /// How often this CPU started polling.
    polls: AtomicU64,
}

/// The idle word: the CPU is spinning in its idle loop.
const POLLING: u32 = 1 << 0;

// SAFETY: atomics at 0: not polling, no counts.
unsafe impl Zeroable for PollWord {}

/// The poll words, a table of the per-CPU window for the same reason as
/// the per-CPU areas (the sender tests its target's word on the IPI path,
/// at a constant base). Only CPUs that exist write theirs (their own).
static POLL: CpuTable<PollWord> = CpuTable::new(percpu_window::POLL_WORDS);

fn poll_word(cpu: CpuId) -> &'static PollWord {
    POLL.get(cpu)
}

/// Whether `cpu` is polling, so that the call this CPU has just queued to
/// it needs no IPI. Call only after the queueing.
#[inline(always)]
pub(super) fn polls_after_queueing(cpu: CpuId) -> bool {
    // SeqCst: after this CPU's SeqCst queue insertion, against the idle
    // CPU's SeqCst clear in `polling_exit` (see the module docs).
    poll_word(cpu).state.load(Ordering::SeqCst) & POLLING != 0
}

/// IPIs `cpu` skipped so far because their target was polling.
pub fn skipped(cpu: CpuId) -> u64 {
    // Relaxed: a statistic.
    poll_word(cpu).skipped.load(Ordering::Relaxed)
}

/// Counts an IPI this CPU skipped because its target was polling.
pub(super) fn count_skipped() {
    // Relaxed: a statistic of this CPU.
    poll_word(percpu::this_cpu())
        .skipped
        .fetch_add(1, Ordering::Relaxed);
}

/// Pauses in one batch of polling (a multiple of 4; see
/// [`PollWindow::poll_batch`]).
const POLL_SPINS: u32 = 256;
const _: () = assert!(POLL_SPINS >= 4 && POLL_SPINS.is_multiple_of(4));
/// A polling idle CPU halts after polling this long without being woken...
const POLL_WINDOW_MS: u64 = 2;
/// ...and at least this many batches (host preemption must not use up
/// the window: only time this CPU actually spent polling counts).
const POLL_MIN_BATCHES: u32 = 8;

/// How long a polling idle CPU keeps polling without being woken, as
/// KVM's guest haltpoll bounds it: a vCPU that spins forever starves the
/// others on an overcommitted host.
pub struct PollWindow {
    /// Set when the first batch since the last wake-up ended without one
    /// (not at the wake-up itself: the way back into polling after a
    /// wake-up, when the next call may come at once, reads no clock).
    until: Option<crate::time::Deadline>,
    batches: u32,
}

impl PollWindow {
    /// A window that starts with the first batch that is not woken.
    pub const fn new() -> Self {
        PollWindow {
            until: None,
            batches: 0,
        }
    }

    /// Whether to poll another batch.
    #[inline(always)]
    pub fn open(&self) -> bool {
        match self.until {
            None => true,
            Some(until) => self.batches < POLL_MIN_BATCHES || !until.expired(),
        }
    }

    /// Starts over (after a halt).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// One batch of polling, between [`polling_enter`] and
    /// [`polling_exit`]: called and returns with interrupts disabled,
    /// enables them while it spins; stops early once the word at `queue`
    /// (this CPU's call queue head, `Smp::call_queue_word`) is non-zero,
    /// and returns whether it did. The caller then drains its queue, still
    /// polling (a sender that queues meanwhile skips the IPI, and the next
    /// batch sees its call), and hands the result to [`Self::batch_done`].
    ///
    /// Three instructions a spin (`pause`, a compare with memory, a
    /// branch), four spins to a round: the spin runs on every round trip
    /// to a polling CPU, and this host counts every instruction.
    #[inline(always)]
    pub fn poll_batch(&mut self, queue: *const usize) -> bool {
        let mut rounds = POLL_SPINS / 4;
        // SAFETY: `queue` is the address of an aligned, always-live word
        // (a static call queue head) that other CPUs write atomically; the
        // plain 8-byte loads are atomic on x86 and only a hint (Relaxed:
        // the drain's SeqCst take is the synchronizing read). `sti` and
        // `cli` bracket the spin: interrupt handlers may run in it and
        // write memory (the block is not `nomem`). The first `pause` is in
        // the one-instruction shadow of `sti`: an interrupt already pending
        // (an IPI sent before this CPU polled) is taken before the queue is
        // looked at, so its flush runs what it was sent for and no wake-up
        // is counted for that work as well.
        unsafe {
            core::arch::asm!(
                "sti",
                "2:",
                ".rept 4",
                "pause",
                "cmp qword ptr [{q}], 0",
                "jne 3f",
                ".endr",
                "dec {n:e}",
                "jnz 2b",
                "3:",
                "cli",
                q = in(reg) queue,
                n = inout(reg) rounds,
                options(nostack)
            )
        };
        // Non-zero: the spin ended before its last round did.
        rounds != 0
    }

    /// Accounts for a batch: a wake-up starts the window over; the first
    /// batch without one starts its clock.
    #[inline(always)]
    pub fn batch_done(&mut self, woken: bool) {
        if woken {
            self.reset();
        } else {
            self.batches += 1;
            if self.until.is_none() {
                self.until = Some(crate::time::Deadline::after_ms(POLL_WINDOW_MS));
            }
        }
    }
}

impl Default for PollWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// Polling idle, step 1 (interrupts off): announce that this CPU polls:
/// from here until [`polling_exit`] senders skip the IPI to it.
pub fn polling_enter(me: CpuId) {
    let w = poll_word(me);
    // Relaxed: a sender that does not see it yet sends the IPI, which a
    // polling CPU takes (its interrupts are on).
    w.state.store(POLLING, Ordering::Relaxed);
    // Relaxed: a statistic of this CPU.
    w.polls.fetch_add(1, Ordering::Relaxed);
}

/// How often `cpu` started polling so far.
pub fn polls(cpu: CpuId) -> u64 {
    // Relaxed: a statistic.
    poll_word(cpu).polls.load(Ordering::Relaxed)
}

/// Whether `cpu` is spinning in its polling idle loop right now.
pub fn is_polling(cpu: CpuId) -> bool {
    // Relaxed: a snapshot for the benchmark's mode switches.
    poll_word(cpu).state.load(Ordering::Relaxed) & POLLING != 0
}

/// Polling idle, last step (interrupts off): stop polling. Afterwards the
/// caller drains its call queue once more: a sender that skipped the IPI
/// relies on that.
#[inline(always)]
pub fn polling_exit(me: CpuId) {
    // SeqCst: before the drain's SeqCst take of the queue, against the
    // sender's SeqCst insertion and load in `polls_after_queueing`.
    poll_word(me).state.store(0, Ordering::SeqCst);
}
