//! Polling idle (`idle=poll`): a CPU with nothing to do spins with
//! interrupts enabled on its idle word, and a sender that finds the word
//! saying "polling" wakes it with one compare-exchange instead of an IPI
//! (Linux's `TIF_POLLING_NRFLAG` / `set_nr_if_polling`); the idle loop then
//! drains its call queue itself. Which CPUs poll is chosen in `ipi.rs`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shared::{CpuId, MAX_CPUS};

use super::{cpu, percpu};

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
/// The idle word: a sender queued work and skipped the IPI.
const WAKE: u32 = 1 << 1;

static POLL: [PollWord; MAX_CPUS] = [const {
    PollWord {
        state: AtomicU32::new(0),
        skipped: AtomicU64::new(0),
        polls: AtomicU64::new(0),
    }
}; MAX_CPUS];

fn poll_word(cpu: CpuId) -> &'static PollWord {
    &POLL[cpu.index() % MAX_CPUS]
}

/// Wakes `cpu` through its idle word if it is polling (Linux's
/// `set_nr_if_polling`); true if the IPI is not needed.
///
/// Only a successful compare-exchange skips the IPI: it is ordered after
/// this CPU's queue insertion (AcqRel), and the target's `swap` that ends
/// its polling either reads it (and then sees the queued call) or came
/// first, in which case the exchange fails on the changed word and the IPI
/// is sent.
#[inline(always)]
pub(super) fn set_nr_if_polling(cpu: CpuId) -> bool {
    let w = &poll_word(cpu).state;
    // Relaxed: a first guess; the compare-exchange decides.
    let mut v = w.load(Ordering::Relaxed);
    loop {
        if v & POLLING == 0 {
            return false;
        }
        // AcqRel on success: pairs with the target's AcqRel swap in
        // `polling_exit`. Relaxed on failure: we only retry.
        match w.compare_exchange_weak(v, v | WAKE, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => v = now,
        }
    }
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

/// Pauses in one batch of polling (between two hotplug poll points).
const POLL_SPINS: u32 = 256;
/// A polling idle CPU halts after polling this long without being woken...
const POLL_WINDOW_MS: u64 = 2;
/// ...and at least this many batches (host preemption must not use up
/// the window: only time this CPU actually spent polling counts).
const POLL_MIN_BATCHES: u32 = 8;

/// How long a polling idle CPU keeps polling without being woken, as
/// KVM's guest haltpoll bounds it: a vCPU that spins forever starves the
/// others on an overcommitted host.
pub struct PollWindow {
    until: Option<crate::time::Deadline>,
    batches: u32,
}

impl PollWindow {
    /// A window that starts at the first [`Self::open`].
    pub const fn new() -> Self {
        PollWindow {
            until: None,
            batches: 0,
        }
    }

    /// Whether to poll another batch.
    pub fn open(&mut self) -> bool {
        let until = *self
            .until
            .get_or_insert_with(|| crate::time::Deadline::after_ms(POLL_WINDOW_MS));
        self.batches < POLL_MIN_BATCHES || !until.expired()
    }

    /// Starts over (after a halt).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// One batch of polling on `me`: called and returns with interrupts
    /// disabled, enables them while it spins; stops early when a sender
    /// wakes this CPU. Returns whether one did. The caller drains its call
    /// queue, then hands the result to [`Self::batch_done`] (after the
    /// drain: the window's bookkeeping is off the woken call's critical
    /// path).
    #[inline(always)]
    pub fn poll_batch(&mut self, me: CpuId) -> bool {
        polling_enter(me);
        cpu::sti();
        for _ in 0..POLL_SPINS {
            if !still_polling(me) {
                break;
            }
            cpu::pause();
        }
        cpu::cli();
        let woken = polling_exit(me);
        if woken {
            // The kick that replaced an IPI, counted as one taken (before
            // the drain, as the IPI handler counts).
            percpu::count_ipi_received();
        }
        woken
    }

    /// Accounts for a batch: a wake-up starts the window over.
    pub fn batch_done(&mut self, woken: bool) {
        if woken {
            self.reset();
        } else {
            self.batches += 1;
        }
    }
}

impl Default for PollWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// Polling idle, step 1 (interrupts off): announce that this CPU polls.
pub fn polling_enter(me: CpuId) {
    let w = poll_word(me);
    // Relaxed: a sender that does not see it yet sends the IPI, which a
    // polling CPU takes; the skip is decided only by the compare-exchange.
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

/// Polling idle, step 2 (interrupts on): whether no sender has woken this
/// CPU yet. The caller also stops now and then to see whether it should
/// still poll (`ipi::idle_polls`) and for its hotplug poll point.
#[inline(always)]
pub fn still_polling(me: CpuId) -> bool {
    // Relaxed: a hint; `polling_exit` is the Acquire.
    poll_word(me).state.load(Ordering::Relaxed) == POLLING
}

/// Polling idle, step 3: stop polling; afterwards the caller drains its
/// call queue (a sender that skipped the IPI relies on that). Returns
/// whether a sender woke this CPU.
pub fn polling_exit(me: CpuId) -> bool {
    // AcqRel: pairs with the senders' AcqRel compare-exchange in
    // `set_nr_if_polling`, so their queue insertions are visible to the
    // drain that follows.
    poll_word(me).state.swap(0, Ordering::AcqRel) & WAKE != 0
}
