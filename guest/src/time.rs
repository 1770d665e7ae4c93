//! Time from the TSC, whose frequency the VMM hands over.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::x86_64::cpu;
use crate::wait_scale;

/// Assumed when the VMM could not tell (KVM_GET_TSC_KHZ failed).
const FALLBACK_KHZ: u64 = 1_000_000;

static TSC_KHZ: AtomicU64 = AtomicU64::new(FALLBACK_KHZ);

/// Sets the TSC frequency (boot CPU, before anything measures time).
pub fn init(tsc_khz: u64) {
    // Relaxed: set before any AP is started; the start orders it.
    TSC_KHZ.store(
        if tsc_khz == 0 { FALLBACK_KHZ } else { tsc_khz },
        Ordering::Relaxed,
    );
}

/// TSC ticks per millisecond.
pub fn khz() -> u64 {
    // Relaxed: written once at boot, see `init`.
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Converts TSC ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000 / u128::from(khz())) as u64
}

/// Nanoseconds since the TSC started.
pub fn now_ns() -> u64 {
    ticks_to_ns(cpu::rdtsc())
}

/// A point in time to wait until.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    /// `ms` milliseconds from now.
    pub fn after_ms(ms: u64) -> Self {
        Deadline(cpu::rdtsc().saturating_add(ms.saturating_mul(khz())))
    }

    /// Whether it has passed.
    pub fn expired(&self) -> bool {
        cpu::rdtsc() >= self.0
    }
}

/// Spins until `cond` holds or `ms` milliseconds pass; returns whether it
/// held.
pub fn spin_until(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Deadline::after_ms(ms);
    loop {
        if cond() {
            return true;
        }
        if deadline.expired() {
            return cond();
        }
        cpu::pause();
    }
}

/// Steps of the calibration loop (under a millisecond on the reference
/// host).
const CALIBRATION_STEPS: u64 = 64;

/// By how much every wait for other CPUs is stretched: see
/// [`calibrate_waits`].
static WAIT_SCALE: AtomicU64 = AtomicU64::new(1);

/// Measures how fast this host runs guest code and sizes every wait for
/// other CPUs ([`scaled_ms`]) for `cpus` CPUs on it (boot CPU, before the
/// APs start; after [`init`]). The policy is [`crate::wait_scale`]'s.
/// Returns the scale.
pub fn calibrate_waits(cpus: u32) -> u64 {
    let start = cpu::rdtsc();
    let mut x = 0u64;
    for i in 0..CALIBRATION_STEPS {
        x = core::hint::black_box(x.wrapping_add(i));
    }
    let step_ns = ticks_to_ns(cpu::rdtsc().wrapping_sub(start)) / CALIBRATION_STEPS;
    let scale = wait_scale::scale(u64::from(cpus), step_ns);
    // Relaxed: set before any AP is started; the start orders it.
    WAIT_SCALE.store(scale, Ordering::Relaxed);
    scale
}

/// The scale [`calibrate_waits`] settled on (1 before it ran).
pub fn wait_scale_factor() -> u64 {
    // Relaxed: see `calibrate_waits`.
    WAIT_SCALE.load(Ordering::Relaxed)
}

/// `ms`, a wait sized for a few CPUs on the reference host, scaled for
/// this machine and host (see [`calibrate_waits`]).
pub fn scaled_ms(ms: u64) -> u64 {
    ms.saturating_mul(wait_scale_factor())
}
