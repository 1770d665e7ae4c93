//! Exactly-once accounting: every request is a slot with an id, the set of
//! CPUs that must run it (`expected`), the set that did (`ran`) and a count
//! of executions still outstanding (`remaining`, plus one held by the
//! invoker until its call has returned, so that the set is complete before
//! the request can finish). Handlers find their slot from the `info` word
//! (the id), set their CPU's bit, count duplicates, unexpected CPUs and
//! stale ids, and do scftorture's in/out memory-ordering and wrong-CPU
//! checks.
//!
//! The two CPU sets of every slot are bitmaps of `nr_cpu_ids` bits (a word
//! per 64 CPUs), allocated by [`alloc`] when the torture starts: with 1024
//! CPUs that is 8 KiB per invoker, not a `NR_CPUS`-wide mask per slot.
//!
//! Ordering: the invoker fills a slot with Relaxed stores before the call.
//! On purpose: the smp core's enqueue (Release) and dequeue (Acquire) are
//! what must make them visible to the handler, and that is what the
//! checks test. Likewise a waiting call's return must make the handler's
//! stores visible (csd unlock Release / wait Acquire), so the post-checks
//! read `out` and `ran` before anything of ours could order them.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use shared::{CpuId, MAX_CPUS};

use crate::arch::x86_64::{cpu, percpu};
use crate::kernel::SMP;
use crate::mem::{OnceSlice, OutOfMemory, Zeroable};
use crate::scenarios::percpu::PerCpu;
use crate::smp::{CpuList, CpuMask};
use crate::time;

/// Request slots per invoker CPU (a ring).
pub const SLOTS: usize = 32;

/// Per-CPU counters (index into [`Counters`]).
pub mod c {
    /// `smp_call_function_single`, no wait / wait, that queued.
    pub const SINGLE: usize = 0;
    /// ... and that returned -ENXIO (offline or invalid target).
    pub const SINGLE_OFL: usize = 2;
    /// RPCs (async single + wait for completion) that queued.
    pub const RPC: usize = 4;
    /// ... and that returned -ENXIO.
    pub const RPC_OFL: usize = 5;
    /// `smp_call_function_many`, no wait / wait.
    pub const MANY: usize = 6;
    /// `smp_call_function`, no wait / wait.
    pub const ALL: usize = 8;
    /// Requests issued.
    pub const REQUESTS: usize = 10;
    /// (request, CPU) pairs that had to run.
    pub const PAIRS: usize = 11;
    /// Handler executions on this CPU (scftorture's `scf_invoked_count`).
    pub const EXEC: usize = 12;
    /// Requests verified complete.
    pub const VERIFIED: usize = 13;
    /// (request, CPU) pairs that ran exactly once.
    pub const PAIRS_OK: usize = 14;
    /// Handler delays injected.
    pub const DELAYS: usize = 15;
    /// Waiting no-op calls made to push a stuck request along.
    pub const NUDGES: usize = 16;
    /// Times an invoker (re)started on this CPU.
    pub const STARTS: usize = 17;
    /// Call-function IPIs that found nothing to run (see `spurious`).
    pub const EMPTY_IPIS: usize = 18;
    /// Waits on this CPU whose own flush ran the request it waited for:
    /// this CPU's IPI for it was lost (or never sent) and the wait
    /// repaired it (each one also printed, naming the CPU and request).
    pub const SELF_FLUSHES: usize = 19;
    /// Number of counters.
    pub const N: usize = 20;
}

/// Error counters (index into [`ERRORS`]); any non-zero one is a FAILURE.
pub mod e {
    /// A single-target call ran on the wrong CPU (scftorture `ste`).
    pub const WRONG_CPU: usize = 0;
    /// The handler did not see the caller's store (`stnmie`).
    pub const MB_IN: usize = 1;
    /// A waiting call returned before the handler's store was visible
    /// (`stnmoe`).
    pub const MB_OUT: usize = 2;
    /// A (request, CPU) pair ran more than once.
    pub const DUP: usize = 3;
    /// A CPU outside the request's set ran it.
    pub const UNEXPECTED: usize = 4;
    /// A (request, CPU) pair that had to run never did.
    pub const LOST: usize = 5;
    /// A handler ran with an id that is not a live request.
    pub const STALE: usize = 6;
    /// A waiting call returned before every CPU of its set had run it.
    pub const EARLY: usize = 7;
    /// A call returned something it must not (Ok for an invalid CPU, ...).
    pub const BAD_RET: usize = 8;
    /// A request did not complete within the deadline.
    pub const TIMEOUT: usize = 9;
    /// Number of error counters.
    pub const N: usize = 10;
    /// Their names, for the stats line and the records.
    pub const NAMES: [&str; N] = [
        "ste", "stnmie", "stnmoe", "dup", "unexp", "lost", "stale", "early", "badret", "timeout",
    ];
}

/// One CPU's counters.
#[repr(C, align(64))]
pub struct Counters([AtomicU64; c::N]);

// SAFETY: an array of atomics (zero is each counter at 0, the initial
// value), padded to 64 bytes by the alignment: padding is never read.
unsafe impl Zeroable for Counters {}

/// Each CPU's counters (allocated by [`alloc`]).
static COUNTERS: PerCpu<Counters> = PerCpu::new();
static ERRORS: [AtomicU64; e::N] = [const { AtomicU64::new(0) }; e::N];

/// Adds `n` to counter `i` of this CPU.
pub fn count(i: usize, n: u64) {
    let me = percpu::this_cpu();
    if let Some(ctr) = COUNTERS.get(me).and_then(|p| p.0.get(i)) {
        // Relaxed: a statistic, summed by the leader for reports.
        ctr.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counts an error.
pub fn error(i: usize, n: u64) {
    if let Some(err) = ERRORS.get(i) {
        // Relaxed: a statistic.
        err.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counter `i` summed over all CPUs.
pub fn total(i: usize) -> u64 {
    COUNTERS
        .table()
        .iter()
        .filter_map(|p| p.0.get(i))
        // Relaxed: a statistics snapshot.
        .map(|v| v.load(Ordering::Relaxed))
        .sum()
}

/// Error counter `i`.
pub fn errors(i: usize) -> u64 {
    // Relaxed: a statistics snapshot.
    ERRORS.get(i).map_or(0, |v| v.load(Ordering::Relaxed))
}

/// Whether any error counter is non-zero.
pub fn any_error() -> bool {
    (0..e::N).any(|i| errors(i) != 0)
}

/// One request.
#[repr(C, align(64))]
pub struct Req {
    /// The request's id (see [`make_id`]); 0 if never used.
    id: AtomicU64,
    /// Executions outstanding, plus one held by the invoker.
    remaining: AtomicU32,
    /// For single calls: the CPU asked for.
    want: AtomicU32,
    /// scftorture's `scfc_in`: set by the caller before the call.
    in_flag: AtomicBool,
    /// scftorture's `scfc_out`: cleared on handler entry, set at its end.
    out_flag: AtomicBool,
    /// Not verified (counted) yet; false when never used, so that a
    /// never-used request is all zero (the table is allocated zeroed).
    unchecked: AtomicBool,
}

// SAFETY: atomics only; all zero is the request never used (id 0, nothing
// remaining, flags false: see the fields). The padding to 64 bytes (the
// alignment) is never read.
unsafe impl Zeroable for Req {}

/// Each invoker's request slots (allocated by [`alloc`]).
static REQS: PerCpu<[Req; SLOTS]> = PerCpu::new();

/// The slots' CPU sets: for slot `s` of invoker `o`, `expected` at
/// `((o * SLOTS + s) * 2) * WORDS` and `ran` right after, `WORDS` words
/// each (see [`alloc`]).
static SETS: OnceSlice<AtomicU64> = OnceSlice::new();
/// Words in one CPU set: `nr_cpu_ids` bits rounded up to a word.
static WORDS: AtomicUsize = AtomicUsize::new(0);

/// Allocates the per-CPU counters and request slots and the slots' CPU
/// sets for `nr_cpu_ids` CPUs (the leader, before
/// any invoker starts; they read them through `SETS`). Once per boot: a
/// second call checks that the first one's are large enough.
pub fn alloc(nr_cpu_ids: u32) -> Result<(), OutOfMemory> {
    // The per-CPU counters and request slots, for `nr_cpu_ids` CPUs too.
    COUNTERS.alloc()?;
    REQS.alloc()?;
    let nr = (nr_cpu_ids as usize).min(MAX_CPUS);
    let words = nr.div_ceil(64).max(1);
    let len = nr * SLOTS * 2 * words;
    if SETS.get().is_empty() {
        // Err only if set already: the check below then decides.
        let _ = SETS.set(crate::mem::alloc_zeroed(len)?);
        // Relaxed: published with the start of each invoker (the Release
        // in `set_idle_task`), as the configuration.
        WORDS.store(words, Ordering::Relaxed);
    }
    // Relaxed: as above.
    if SETS.get().len() < len || WORDS.load(Ordering::Relaxed) != words {
        return Err(OutOfMemory {
            need: (len * 8) as u64,
            left: crate::mem::FRAMES.left(),
        });
    }
    Ok(())
}

/// Bits of the id above the sequence number: the owner CPU (11 bits, room
/// for `MAX_CPUS`).
const SEQ_BITS: u32 = 53;
const _: () = assert!(MAX_CPUS as u64 <= 1 << (64 - SEQ_BITS));

/// The id of request `seq` of invoker `owner`: never 0, and it names its
/// slot.
pub const fn make_id(owner: CpuId, seq: u64) -> u64 {
    ((owner.0 as u64 % MAX_CPUS as u64) << SEQ_BITS) | ((seq & ((1 << (SEQ_BITS - 1)) - 1)) + 1)
}

/// A set of CPUs of one slot: `nr_cpu_ids` bits in words of 64.
#[derive(Clone, Copy)]
struct Set(&'static [AtomicU64]);

impl Set {
    /// Word index and bit of `cpu`, `None` if the set cannot hold it.
    fn word_bit(self, cpu: CpuId) -> Option<(&'static AtomicU64, u64)> {
        let w = self.0.get(cpu.index() / 64)?;
        Some((w, 1 << (cpu.index() % 64)))
    }

    /// Whether the set can hold `cpu`.
    fn holds(self, cpu: CpuId) -> bool {
        self.word_bit(cpu).is_some()
    }

    /// Empties the set. Relaxed: see the module docs.
    fn clear(self) {
        for w in self.0 {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Adds `cpu`; whether it was there already. Relaxed: see the callers.
    fn add(self, cpu: CpuId) -> bool {
        self.word_bit(cpu)
            .is_some_and(|(w, b)| w.fetch_or(b, Ordering::Relaxed) & b != 0)
    }

    /// Removes `cpu`. Relaxed: see the caller.
    fn remove(self, cpu: CpuId) {
        if let Some((w, b)) = self.word_bit(cpu) {
            w.fetch_and(!b, Ordering::Relaxed);
        }
    }

    /// Whether `cpu` is in the set. Relaxed: see the callers.
    fn contains(self, cpu: CpuId) -> bool {
        self.word_bit(cpu)
            .is_some_and(|(w, b)| w.load(Ordering::Relaxed) & b != 0)
    }

    /// Word `i`. Relaxed: see the callers.
    fn word(self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }

    fn words(self) -> usize {
        self.0.len()
    }
}

/// A request slot with its two CPU sets.
#[derive(Clone, Copy)]
struct Slot {
    req: &'static Req,
    /// CPUs that must run it.
    expected: Set,
    /// CPUs that ran it.
    ran: Set,
}

impl Slot {
    /// Slot `slot` of invoker `owner`, `None` past the CPUs allocated for.
    fn at(owner: usize, slot: usize) -> Option<Slot> {
        // Relaxed: see `alloc`.
        let words = WORDS.load(Ordering::Relaxed);
        if words == 0 {
            return None;
        }
        let base = (owner * SLOTS + slot % SLOTS) * 2 * words;
        let sets = SETS.get().get(base..base + 2 * words)?;
        let (expected, ran) = sets.split_at(words);
        Some(Slot {
            req: &REQS.at(owner)?[slot % SLOTS],
            expected: Set(expected),
            ran: Set(ran),
        })
    }

    /// `(expected & ran, expected & !ran)` CPU counts.
    fn once_and_lost(self) -> (u32, u32) {
        let (mut once, mut lost) = (0, 0);
        for i in 0..self.expected.words() {
            let (x, r) = (self.expected.word(i), self.ran.word(i));
            once += (x & r).count_ones();
            lost += (x & !r).count_ones();
        }
        (once, lost)
    }

    /// The CPUs expected that did not run it yet.
    fn pending(self) -> CpuMask {
        CpuMask::from_words(
            (0..self.expected.words()).map(|i| self.expected.word(i) & !self.ran.word(i)),
        )
    }
}

/// The slot `id` names, `None` for an owner without slots.
fn slot_of(id: u64) -> Option<Slot> {
    let owner = (id >> SEQ_BITS) as usize;
    let seq = (id & ((1 << SEQ_BITS) - 1)).wrapping_sub(1);
    Slot::at(owner, seq as usize % SLOTS)
}

/// The live request `info` names, or `None` (counted as stale).
fn lookup(info: usize) -> Option<Slot> {
    let id = info as u64;
    let live = slot_of(id)
        // Relaxed: written before the call; see the module docs.
        .filter(|s| id != 0 && s.req.id.load(Ordering::Relaxed) == id);
    if live.is_none() {
        error(e::STALE, 1);
    }
    live
}

/// A request being issued by this CPU's invoker.
pub struct Issue {
    slot: Slot,
    id: u64,
}

impl Issue {
    /// Claims the slot for request `seq` of `me` (waiting, with nudges and
    /// a deadline, until its previous request finished) and fills it in.
    /// `None` if the previous request never finished (counted; the torture
    /// stops).
    pub fn start(me: CpuId, seq: u64, want: u32) -> Option<Issue> {
        let id = make_id(me, seq);
        // No slot: `alloc` did not run for this CPU (cannot happen: every
        // invoker's CPU is below nr_cpu_ids). Counted as a stuck request.
        let Some(slot) = slot_of(id) else {
            error(e::TIMEOUT, 1);
            return None;
        };
        if !wait_done(slot, 0) {
            return None;
        }
        verify(slot);
        let req = slot.req;
        // Relaxed (all): see the module docs.
        slot.expected.clear();
        slot.ran.clear();
        req.want.store(want, Ordering::Relaxed);
        req.out_flag.store(false, Ordering::Relaxed);
        req.unchecked.store(true, Ordering::Relaxed);
        req.remaining.store(1, Ordering::Relaxed);
        req.id.store(id, Ordering::Relaxed);
        // scftorture sets `scfc_in` last, right before the call.
        req.in_flag.store(true, Ordering::Relaxed);
        count(c::REQUESTS, 1);
        Some(Issue { slot, id })
    }

    /// The `info` word for the call.
    pub fn info(&self) -> usize {
        self.id as usize
    }

    /// Adds `cpu` to the set that must run it (before it is queued there).
    pub fn expect(&self, cpu: CpuId) {
        add_expected(self.slot, cpu);
    }

    /// Takes `cpu` out of the set again: the call returned an error, so
    /// nothing was queued.
    pub fn unexpect(&self, cpu: CpuId) {
        if !self.slot.expected.holds(cpu) {
            return;
        }
        // Relaxed: nothing was queued, so no handler reads these.
        self.slot.expected.remove(cpu);
        self.slot.req.remaining.fetch_sub(1, Ordering::Relaxed);
    }

    /// After a waiting call returned: every CPU of the set must have run
    /// it, and the handler's last store (`out`) must be visible.
    pub fn check_waited(&self) {
        // Relaxed: the core's wait (Acquire) must order these; see the
        // module docs. Read before anything of ours orders them.
        let out = self.slot.req.out_flag.load(Ordering::Relaxed);
        let (once, lost) = self.slot.once_and_lost();
        if once + lost != 0 && !out {
            error(e::MB_OUT, 1);
        }
        if lost != 0 {
            error(e::EARLY, 1);
        }
    }

    /// RPC: waits until every execution finished (the completion), with
    /// nudges and a deadline; false on timeout.
    pub fn wait_rpc(&self) -> bool {
        wait_done(self.slot, 1)
    }

    /// The call has returned: counts the set, drops the invoker's hold,
    /// and verifies the request if that finished it.
    pub fn finish(self) {
        // Relaxed: our own writes (the set is complete once the call
        // returned: the recording cond ran on this CPU).
        let expected: u32 = (0..self.slot.expected.words())
            .map(|i| self.slot.expected.word(i).count_ones())
            .sum();
        count(c::PAIRS, u64::from(expected));
        // AcqRel: the Release half publishes our slot writes to whoever
        // verifies; the Acquire half pairs with the handlers' Release
        // decrements when ours is the last.
        if self.slot.req.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            verify(self.slot);
        }
    }
}

fn add_expected(slot: Slot, cpu: CpuId) {
    // A CPU number the set cannot hold (at or above nr_cpu_ids rounded up
    // to a word) is never queued to (the core says -ENXIO); if it were,
    // its run would count as unexpected.
    if !slot.expected.holds(cpu) {
        return;
    }
    // Relaxed: published to the handler by the enqueue; see module docs.
    slot.expected.add(cpu);
    slot.req.remaining.fetch_add(1, Ordering::Relaxed);
}

/// The recording `cond` of multi-CPU calls: runs on the caller right
/// before the csd for `cpu` is queued, so it learns the exact set.
pub fn record_target(cpu: CpuId, info: usize) -> bool {
    let id = info as u64;
    // Relaxed: our own slot, written by this CPU.
    if let Some(slot) = slot_of(id)
        && slot.req.id.load(Ordering::Relaxed) == id
    {
        add_expected(slot, cpu);
    }
    true
}

/// Counts a finished request's pairs once (by its owner or the final
/// sweep).
fn verify(slot: Slot) {
    // Relaxed: only a claim on the counting; the caller saw `remaining`
    // reach 0 with Acquire.
    if !slot.req.unchecked.swap(false, Ordering::Relaxed) {
        return;
    }
    // Relaxed (the sets' loads): the caller's Acquire on `remaining` (or
    // its own writes) ordered every handler's bit before these loads.
    let (once, lost) = slot.once_and_lost();
    count(c::VERIFIED, 1);
    count(c::PAIRS_OK, u64::from(once));
    if lost != 0 {
        error(e::LOST, u64::from(lost));
    }
}

/// How long a request may take before it counts as lost.
const DONE_TIMEOUT_MS: u64 = 15_000;
/// How often a waiter pushes a stuck request along.
const NUDGE_EVERY_MS: u64 = 50;

fn nothing(_: usize) {}

/// Waits until at most `hold` executions (plus holds) remain, with
/// interrupts enabled. Every few ms it makes a waiting no-op call to each
/// other CPU that still has to run the request: that call waits in the
/// core's csd-lock wait, whose stall detector re-sends a lost IPI. If this
/// CPU itself still has to run it (its own IPI was lost), it flushes its
/// queue from task context, as an idle loop would (counted and reported
/// by [`self_flush`]). False (and an error counted, with a diagnostic)
/// after the deadline.
fn wait_done(slot: Slot, hold: u32) -> bool {
    let req = slot.req;
    // Acquire: pairs with the handlers' Release decrements.
    if req.remaining.load(Ordering::Acquire) <= hold {
        return true;
    }
    let deadline = time::Deadline::after_ms(time::scaled_ms(DONE_TIMEOUT_MS));
    loop {
        let nudge = time::Deadline::after_ms(NUDGE_EVERY_MS);
        while !nudge.expired() {
            // Acquire: as above.
            if req.remaining.load(Ordering::Acquire) <= hold {
                return true;
            }
            cpu::pause();
        }
        // Relaxed: a hint of whom to nudge.
        let pending = slot.pending();
        for cpu in pending.and(SMP.online_mask()).iter() {
            count(c::NUDGES, 1);
            if cpu == percpu::this_cpu() {
                self_flush(slot, cpu);
            } else {
                let _ = SMP.smp_call_function_single(cpu, nothing, 0, true);
            }
        }
        if deadline.expired() {
            crate::kprintln!(
                "scftorture: request {:#x} still waits for CPUs {} after {} ms",
                // Relaxed: for the diagnostic only.
                req.id.load(Ordering::Relaxed),
                CpuList(pending),
                time::scaled_ms(DONE_TIMEOUT_MS)
            );
            error(e::TIMEOUT, 1);
            return false;
        }
    }
}

/// Flushes this CPU's (`me`) call queue from task context for `req`,
/// which `me` still has to run although it waited a nudge period with
/// interrupts enabled: its IPI got lost. If the flush did run `req` here,
/// that is counted ([`c::SELF_FLUSHES`]) and reported, so that a lost
/// self IPI is never repaired silently.
fn self_flush(slot: Slot, me: CpuId) {
    let req = slot.req;
    let irqs = cpu::irqs_enabled();
    // Interrupts off from the look before to the look after: a late IPI
    // arriving in between must not be mistaken for the flush's work.
    cpu::cli();
    // Relaxed: our own CPU's bit, set (or not) by handlers on this CPU.
    let id = req.id.load(Ordering::Relaxed);
    let before = slot.ran.contains(me);
    SMP.run_pending_calls();
    // Relaxed: as above; `id` guards against a reused slot.
    let ran_now = !before && slot.ran.contains(me) && req.id.load(Ordering::Relaxed) == id;
    if irqs {
        cpu::sti();
    }
    if ran_now {
        count(c::SELF_FLUSHES, 1);
        crate::kprintln!(
            "scftorture: CPU {} ran request {:#x} only from its own flush in a wait: its call-function IPI was lost",
            me.0,
            id
        );
    }
}

/// The final sweep (leader, after every invoker stopped): waits for every
/// request to finish and verifies the ones nobody verified yet.
pub fn sweep() {
    for owner in 0..MAX_CPUS {
        for s in 0..SLOTS {
            // None: past the CPUs allocated for, never used.
            let Some(slot) = Slot::at(owner, s) else {
                return;
            };
            // Relaxed: 0 means never used.
            if slot.req.id.load(Ordering::Relaxed) == 0 {
                continue;
            }
            // On timeout (counted in `wait_done`) this counts what never
            // ran as lost.
            let _ = wait_done(slot, 0);
            verify(slot);
        }
    }
}

/// Handler delays: like scftorture, about one call in 1024 busy-waits
/// 0-63 µs.
fn maybe_delay(me: CpuId) {
    let r = super::rand::next_handler(me);
    if r & 0xffc0 == 0 {
        count(c::DELAYS, 1);
        let ticks = (r & 0x3f) * time::khz() / 1000;
        let end = cpu::rdtsc().saturating_add(ticks);
        while cpu::rdtsc() < end {
            cpu::pause();
        }
    }
}

fn run_handler(slot: Slot, me: CpuId) {
    let req = slot.req;
    // For multiple receivers (scftorture): every handler clears `out`
    // first, so a waiter that returns while any is still running sees it
    // clear. Relaxed: the core's csd unlock (Release) / wait (Acquire)
    // must order it; that is what the waiter's check tests.
    req.out_flag.store(false, Ordering::Relaxed);
    count(c::EXEC, 1);
    // Relaxed: published by the enqueue (see module docs).
    if !slot.expected.contains(me) {
        error(e::UNEXPECTED, 1);
    }
    // Relaxed: the bit itself is the record; the decrement below orders
    // it for the verifier.
    if slot.ran.add(me) {
        error(e::DUP, 1);
    }
    maybe_delay(me);
    req.out_flag.store(true, Ordering::Relaxed);
    // Release: pairs with the Acquire of whoever sees the count drop (the
    // RPC waiter, the verifier). The slot is not touched after this.
    req.remaining.fetch_sub(1, Ordering::Release);
}

/// scftorture's `scf_handler_1`: a single-target call must run on the CPU
/// asked for.
pub fn handler_single(info: usize) {
    let me = percpu::this_cpu();
    let Some(slot) = lookup(info) else { return };
    // Relaxed: see the module docs (these are the checks).
    if !slot.req.in_flag.load(Ordering::Relaxed) {
        error(e::MB_IN, 1);
    }
    if slot.req.want.load(Ordering::Relaxed) != me.0 {
        error(e::WRONG_CPU, 1);
    }
    run_handler(slot, me);
}

/// scftorture's `scf_handler` for multi-CPU calls.
pub fn handler_multi(info: usize) {
    let me = percpu::this_cpu();
    let Some(slot) = lookup(info) else { return };
    // Relaxed: the check; see the module docs.
    if !slot.req.in_flag.load(Ordering::Relaxed) {
        error(e::MB_IN, 1);
    }
    run_handler(slot, me);
}
