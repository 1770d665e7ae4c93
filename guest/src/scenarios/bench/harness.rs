//! The measuring loop (kvm-unit-tests' vmexit style): run a case's
//! operation 16, 32, 64, ... times until one round takes at least the time
//! goal, timing every operation with the TSC. Each round is bracketed by
//! `Start` / `End` markers, so the VMM's KVM counters cover exactly the
//! last (measured) round; then the result goes to the VMM with the
//! round's samples.

use core::cell::UnsafeCell;

use shared::CpuId;
use shared::bench::{Case, IdleMode, MAX_SAMPLES, Marker, Phase, ResultHeader, Status, TargetSet};
use shared::ports::Port;

use crate::arch::x86_64::{cpu, percpu, poll_idle};
use crate::kernel::{SMP, ipi, stats};
use crate::smp::CpuMask;
use crate::time;

/// Most operations in one round.
pub const MAX_ITERATIONS: u64 = 1 << 20;
/// Operations in the first round (so that even a slow case's measured
/// round has a distribution).
pub const MIN_ITERATIONS: u64 = 16;
/// How long one operation may take before the case fails.
pub const OP_DEADLINE_MS: u64 = 2_000;

/// Why an operation did not complete.
pub type Fail = &'static str;

/// The per-operation cycle counts of the current round, read by the VMM
/// at the address in the result header.
struct Samples(UnsafeCell<[u64; MAX_SAMPLES]>);

// SAFETY: only the CPU running the bench (one at a time) writes the buffer,
// through `record`, and nobody in the guest reads it; the VMM reads it
// while that CPU is stopped in the result port's exit.
unsafe impl Sync for Samples {}

static SAMPLES: Samples = Samples(UnsafeCell::new([0; MAX_SAMPLES]));

fn record(i: u64, cycles: u64) {
    let slot = (i % MAX_SAMPLES as u64) as usize;
    // SAFETY: see `Samples`: this CPU is the only writer and there is no
    // reader in the guest; `slot` is in range.
    unsafe { (*SAMPLES.0.get())[slot] = cycles };
}

/// Writes a marker; the VMM snapshots KVM's counters before it returns.
#[inline(always)]
pub fn marker(case: Case, phase: Phase) {
    cpu::outl(Port::BenchMarker as u16, Marker { case, phase }.value());
}

/// Spins until `cond` holds, at most [`OP_DEADLINE_MS`]. The first
/// spins do not read the clock: most waits end within them.
#[inline(always)]
pub fn wait_until(what: Fail, mut cond: impl FnMut() -> bool) -> Result<(), Fail> {
    for _ in 0..1024 {
        if cond() {
            return Ok(());
        }
        cpu::pause();
    }
    if time::spin_until(OP_DEADLINE_MS, cond) {
        Ok(())
    } else {
        Err(what)
    }
}

/// IPIs sent and skipped so far, over every CPU.
fn ipi_counts() -> (u64, u64) {
    let mut sent = 0;
    let mut skipped = 0;
    for c in 0..SMP.nr_cpu_ids() {
        let cpu = CpuId(c);
        // Relaxed: statistics, read before and after a round.
        sent += stats::ipis_sent(cpu);
        skipped += poll_idle::skipped(cpu);
    }
    (sent, skipped)
}

/// A finished measurement (all zero by default: a failed or probe-only
/// case's).
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    /// Operations in the final round.
    pub iterations: u64,
    /// Its TSC cycles.
    pub cycles: u64,
    /// Samples recorded.
    pub samples: u32,
    /// IPIs sent during it.
    pub ipis_sent: u64,
    /// IPIs skipped during it.
    pub ipis_skipped: u64,
}

/// How many operations to run.
#[derive(Clone, Copy, Debug)]
pub enum Rounds {
    /// Double until a round takes this many TSC cycles.
    Goal(u64),
    /// One round of exactly this many.
    Fixed(u64),
}

/// Measures `op` (given the operation's index) and then `finish` (once
/// per round, inside the timed span: waiting for asynchronous work).
pub fn measure(
    case: Case,
    rounds: Rounds,
    mut op: impl FnMut(u64) -> Result<(), Fail>,
    mut finish: impl FnMut() -> Result<(), Fail>,
) -> Result<Measured, Fail> {
    let mut n = match rounds {
        Rounds::Goal(_) => MIN_ITERATIONS,
        Rounds::Fixed(n) => n.clamp(1, MAX_ITERATIONS),
    };
    loop {
        let (sent0, skipped0) = ipi_counts();
        marker(case, Phase::Start);
        let t0 = cpu::rdtsc();
        for i in 0..n {
            let a = cpu::rdtsc();
            op(i)?;
            let b = cpu::rdtsc();
            record(i, b.wrapping_sub(a));
        }
        finish()?;
        let t1 = cpu::rdtsc();
        marker(case, Phase::End);
        let (sent1, skipped1) = ipi_counts();
        let cycles = t1.wrapping_sub(t0);
        let done = match rounds {
            Rounds::Goal(goal) => cycles >= goal || n >= MAX_ITERATIONS,
            Rounds::Fixed(_) => true,
        };
        if done {
            return Ok(Measured {
                iterations: n,
                cycles,
                samples: n.min(MAX_SAMPLES as u64) as u32,
                ipis_sent: sent1 - sent0,
                ipis_skipped: skipped1 - skipped0,
            });
        }
        n *= 2;
    }
}

/// The idle mode a case's targets were in (this CPU's for a local case).
fn idle_mode_of(targets: CpuMask) -> IdleMode {
    let polling = ipi().poll_cpus();
    let who = if targets.is_empty() {
        CpuMask::of(percpu::this_cpu())
    } else {
        targets
    };
    if polling.and(who).is_empty() {
        IdleMode::Halt
    } else {
        IdleMode::Poll
    }
}

/// Sends a case's result (and its samples, if `m` has any) to the VMM.
pub fn send_result(case: Case, status: Status, targets: CpuMask, m: Option<&Measured>) {
    let z = Measured::default();
    let m = m.unwrap_or(&z);
    let h = ResultHeader {
        case,
        status,
        ipi_mode: ipi().mask_mode(),
        idle_mode: idle_mode_of(targets),
        sender: percpu::this_cpu().0 as u16,
        targets: TargetSet::from_words(|i| targets.word(i)),
        target_count: targets.weight(),
        iterations: m.iterations,
        total_cycles: m.cycles,
        tsc_khz: time::khz(),
        ipis_sent: m.ipis_sent,
        ipis_skipped: m.ipis_skipped,
        sample_count: m.samples,
        samples_addr: SAMPLES.0.get() as u64,
    };
    // The VMM reads the length the header declares (`result_len`).
    let (buf, _) = h.encode();
    // Identity-mapped: the buffer's address is its guest-physical one.
    cpu::out_buffer(Port::BenchResult as u16, &buf);
}
