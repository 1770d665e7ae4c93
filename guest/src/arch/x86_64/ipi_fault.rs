//! Guest-side fault injection for the csd-lock stall detector's re-send
//! path (`ipi_drop=N` on the command line): N per mille of the
//! call-function IPIs this kernel would send are not sent, as if the
//! hypervisor had lost them. Off by default; then it costs nothing on the
//! single-target path (a bit of `ipi.rs`'s flag word sends those the slow
//! way) and one load and a branch per mask IPI. (The VMM's own
//! `--fault drop-ipi` drops IPIs in the host instead, where the host's KVM
//! lets it trap the ICR.)

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shared::CpuId;

use super::{cpu, percpu};
use crate::mem::{self, OnceSlice, OutOfMemory};
use crate::smp::CpuMask;

/// Per mille of call-function IPIs to drop.
static PERMILLE: AtomicU32 = AtomicU32::new(0);
/// Call-function IPIs dropped, by sending CPU.
static DROPPED: OnceSlice<AtomicU64> = OnceSlice::new();
/// The decision's random state (shared: racing CPUs only repeat a draw).
static RNG: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

/// Allocates the counters of `cpus` CPUs (boot CPU, before the APs
/// start, once).
pub fn alloc(cpus: u32) -> Result<(), OutOfMemory> {
    // Set once: a second call is a bug that leaves the first counters.
    let _ = DROPPED.set(mem::alloc_zeroed(cpus as usize)?);
    Ok(())
}

/// Turns the drop on (boot CPU, before the APs start; through
/// `IpiDelivery::set_drop_permille`, which also routes single-target IPIs
/// through the drop).
pub(super) fn set_permille(permille: u32) {
    // Relaxed: set before the APs start; starting them orders it.
    PERMILLE.store(permille.min(1000), Ordering::Relaxed);
}

/// Whether any IPI may be dropped.
pub fn enabled() -> bool {
    // Relaxed: a switch set at boot.
    PERMILLE.load(Ordering::Relaxed) != 0
}

/// Call-function IPIs dropped so far, on all CPUs.
pub fn dropped() -> u64 {
    // Relaxed: a statistic.
    DROPPED
        .get()
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .sum()
}

/// Call-function IPIs `cpu` would have sent that were dropped.
pub fn dropped_by(cpu: CpuId) -> u64 {
    // Relaxed: a statistic.
    DROPPED
        .at(cpu.index())
        .map_or(0, |d| d.load(Ordering::Relaxed))
}

#[cold]
fn draw(permille: u32) -> bool {
    // Relaxed: a random stream, not a publication.
    let mut x = RNG.load(Ordering::Relaxed) ^ cpu::rdtsc();
    shared::xorshift64(&mut x);
    RNG.store(x, Ordering::Relaxed);
    let drop = x % 1000 < u64::from(permille);
    if drop {
        // Relaxed: a statistic of this CPU.
        if let Some(d) = DROPPED.at(percpu::this_cpu().index()) {
            d.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop
}

/// Whether to drop the next single-target IPI (called from `ipi.rs`'s
/// slow path only when [`enabled`]).
#[inline(always)]
pub fn drop_single() -> bool {
    // Relaxed: a switch set at boot.
    let permille = PERMILLE.load(Ordering::Relaxed);
    permille != 0 && draw(permille)
}

/// The targets of a mask IPI that are not dropped.
#[inline(always)]
pub fn filter_mask(mask: CpuMask) -> CpuMask {
    // Relaxed: a switch set at boot.
    let permille = PERMILLE.load(Ordering::Relaxed);
    if permille == 0 {
        return mask;
    }
    let mut kept = CpuMask::EMPTY;
    for c in mask.iter() {
        if !draw(permille) {
            kept.set(c);
        }
    }
    kept
}
