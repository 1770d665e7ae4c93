//! What every case needs: result text without allocation, per-CPU counters,
//! interrupt on/off helpers, "tasks" on other CPUs, and (re-exported from
//! `park.rs`) parking a CPU.
//!
//! **Tasks** ([`start_task`], [`as_task`]): there is no scheduler, so a
//! case that needs another CPU to *make* calls starts an async call there
//! whose callback re-enables interrupts for its body (the IPI was already
//! acknowledged, so nested IPIs are taken on the same stack) and disables
//! them again before returning.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering, compiler_fence};

use shared::{CpuId, MAX_CPUS};

use crate::arch::x86_64::{cpu, percpu};
use crate::kernel::SMP;
use crate::mem::{OnceSlice, Zeroable};
use crate::scenarios::percpu::PerCpu;
use crate::smp::{CpuMask, Csd, SmpCallFunc};
use crate::time::{self, spin_until};

pub use super::park::{
    END_SIGNAL, END_STUCK, Offline, PARK_TIMEOUTS, Parked, Until, marker_runs, offline_cpu, park,
    signal,
};

/// How long a case waits for anything another CPU must do, on a few CPUs
/// of the reference host (see [`wait_ms`]).
const WAIT_MS: u64 = 2_000;

/// How long a case waits for anything another CPU must do: [`WAIT_MS`]
/// scaled for this machine's size and host speed.
pub fn wait_ms() -> u64 {
    time::scaled_ms(WAIT_MS)
}

/// A short text (case detail), formatted on the stack; longer text is cut.
pub struct Text {
    buf: [u8; 192],
    len: usize,
}

impl Text {
    /// Empty text.
    pub const fn new() -> Self {
        Text {
            buf: [0; 192],
            len: 0,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Default for Text {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut n = s.len().min(self.buf.len() - self.len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// One counter per CPU, for "where did the callback run, how often",
/// allocated for the CPUs that exist at first use ([`PerCpu`]).
/// Every access is SeqCst: these are test observations, not hot paths.
pub struct PerCpuCount(PerCpu<AtomicU32>);

impl PerCpuCount {
    /// All zero.
    pub const fn new() -> Self {
        PerCpuCount(PerCpu::new())
    }

    /// Sets every counter to 0.
    pub fn reset(&self) {
        for c in self.0.table() {
            c.store(0, Ordering::SeqCst);
        }
    }

    /// Adds one for `cpu` (ignored if out of range).
    pub fn inc(&self, cpu: CpuId) {
        if let Some(c) = self.0.get(cpu) {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Adds one for this CPU.
    pub fn inc_here(&self) {
        self.inc(this_cpu());
    }

    /// The count of `cpu` (0 if out of range).
    pub fn get(&self, cpu: CpuId) -> u32 {
        self.0.get(cpu).map_or(0, |c| c.load(Ordering::SeqCst))
    }

    /// Sum over all CPUs.
    pub fn total(&self) -> u32 {
        self.0
            .table()
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    /// The first CPU whose count differs from `want(cpu)`, with its count
    /// (CPU numbers past the table count 0).
    pub fn mismatch(&self, want: impl Fn(CpuId) -> u32) -> Option<(CpuId, u32, u32)> {
        (0..MAX_CPUS as u32).map(CpuId).find_map(|c| {
            let (got, w) = (self.get(c), want(c));
            (got != w).then_some((c, got, w))
        })
    }
}

impl Default for PerCpuCount {
    fn default() -> Self {
        Self::new()
    }
}

/// A test callback's runs per CPU, split by the interrupt state they ran
/// in: what most cases' callbacks record.
pub struct RunCounts {
    /// Runs.
    pub runs: PerCpuCount,
    /// Runs with interrupts disabled.
    pub irqs_off: PerCpuCount,
    /// Runs with interrupts enabled.
    pub irqs_on: PerCpuCount,
}

impl RunCounts {
    /// All zero.
    pub const fn new() -> Self {
        RunCounts {
            runs: PerCpuCount::new(),
            irqs_off: PerCpuCount::new(),
            irqs_on: PerCpuCount::new(),
        }
    }

    /// Counts one run on this CPU (call from the callback).
    pub fn record(&self) {
        self.runs.inc_here();
        if irqs_disabled() {
            self.irqs_off.inc_here();
        } else {
            self.irqs_on.inc_here();
        }
    }

    /// Sets every counter to 0.
    pub fn reset(&self) {
        self.runs.reset();
        self.irqs_off.reset();
        self.irqs_on.reset();
    }
}

impl Default for RunCounts {
    fn default() -> Self {
        Self::new()
    }
}

/// The csd-lock stall timeout a case lowers to provoke a stall report,
/// on the reference host with a few CPUs; scaled like every other wait
/// ([`short_csd_timeout_ns`]): a kick to every other CPU waits for each
/// in turn, and on a loaded host with hundreds of vCPUs one that is merely
/// descheduled must not be taken for the parked one.
pub const SHORT_CSD_TIMEOUT_NS: u64 = 20_000_000;

/// [`SHORT_CSD_TIMEOUT_NS`] scaled for this machine and host
/// (`time::scaled_ms`).
pub fn short_csd_timeout_ns() -> u64 {
    SHORT_CSD_TIMEOUT_NS.saturating_mul(crate::time::wait_scale_factor())
}

/// Stalls detected while some case had lowered the timeout on purpose
/// (see [`ShortCsdTimeout`]); the runner reports the total to the VMM.
pub static PROVOKED_STALLS: AtomicU32 = AtomicU32::new(0);

/// Lowers the csd-lock stall timeout to [`short_csd_timeout_ns`] for a
/// case that provokes a stall report on purpose (announced on the
/// console first); dropping it puts the previous timeout back and counts
/// the stalls detected meanwhile in [`PROVOKED_STALLS`].
pub struct ShortCsdTimeout {
    prev: u64,
    stalls: u32,
}

impl ShortCsdTimeout {
    /// Announces the report for case `case` and lowers the timeout.
    pub fn new(case: &str) -> Self {
        crate::kprintln!("selftest: {case}: a csd-lock stall report follows on purpose");
        let prev = SMP.csd_lock_timeout_ns();
        let stalls = SMP.csd_stalls_detected();
        SMP.set_csd_lock_timeout_ns(short_csd_timeout_ns());
        ShortCsdTimeout { prev, stalls }
    }
}

impl Drop for ShortCsdTimeout {
    fn drop(&mut self) {
        SMP.set_csd_lock_timeout_ns(self.prev);
        let n = SMP.csd_stalls_detected().wrapping_sub(self.stalls);
        PROVOKED_STALLS.fetch_add(n, Ordering::SeqCst);
    }
}

/// This CPU's number.
pub fn this_cpu() -> CpuId {
    percpu::this_cpu()
}

/// Whether interrupts are disabled on this CPU.
pub fn irqs_disabled() -> bool {
    !cpu::irqs_enabled()
}

/// Disables interrupts. The compiler fences keep the surrounding memory
/// accesses on their side of the `cli` (the arch helper is `nomem`).
pub fn irqs_off() {
    compiler_fence(Ordering::SeqCst);
    cpu::cli();
    compiler_fence(Ordering::SeqCst);
}

/// Enables interrupts (pending ones are taken right away). Fenced as
/// [`irqs_off`].
pub fn irqs_on() {
    compiler_fence(Ordering::SeqCst);
    cpu::sti();
    compiler_fence(Ordering::SeqCst);
}

/// Waits up to [`wait_ms`] for `cond`.
pub fn wait_for(cond: impl FnMut() -> bool) -> bool {
    spin_until(wait_ms(), cond)
}

/// Busy-waits `us` microseconds: a slow callback, so that a caller that
/// returns too early (before the callback finished) is caught.
pub fn delay_us(us: u64) {
    let end = crate::time::now_ns().saturating_add(us.saturating_mul(1_000));
    while crate::time::now_ns() < end {
        cpu::pause();
    }
}

/// The online CPU after `cpu`, wrapping around (`cpu` itself if alone).
pub fn next_online(cpu: CpuId) -> CpuId {
    let online = SMP.online_mask();
    online
        .iter()
        .find(|c| c.0 > cpu.0)
        .or(online.first())
        .unwrap_or(cpu)
}

/// CPU masks for the detail text, as CPU lists (`0-3,6`).
pub use crate::smp::CpuList;

/// A case's verdict: `Ok(what was checked)` or `Err(what went wrong)`.
pub type CaseResult = Result<Text, Text>;

/// The IPIs `cpu` requested for its calls: its `ipis_requested` less the
/// stall detector's re-sends (which it counts too). The re-sends are
/// counted machine-wide: in the cases that use this, only the measuring
/// CPU waits for a csd while it measures, so every re-send is its own (a
/// parked target that a loaded host keeps from answering in time can be
/// reported, and re-sent to, more than once).
pub fn call_ipis(cpu: CpuId) -> u64 {
    SMP.stats(cpu)
        .ipis_requested
        .wrapping_sub(SMP.stall_ipis_resent())
}

/// The online CPUs other than this one (also the bench's targets).
pub fn others() -> CpuMask {
    SMP.online_mask().without(this_cpu())
}

/// Bits for CPU numbers that are not valid (at or above `nr_cpu_ids`).
pub fn invalid_cpus() -> CpuMask {
    CpuMask::ALL.and_not(CpuMask::first_n(SMP.nr_cpu_ids()))
}

// ---------------------------------------------------------------- tasks --

/// Each CPU's task csd. Zero is an unlocked csd with no function yet:
/// [`start_task`] writes its function under the csd lock ([`Csd::set`])
/// before queueing it.
static TASK_CSD: PerCpu<Csd> = PerCpu::new();

/// Starts `func(info)` on the other CPU `cpu` through an async call;
/// `func` normally wraps its body in [`as_task`].
pub fn start_task(cpu: CpuId, func: SmpCallFunc, info: usize) -> Result<(), Text> {
    let csd = TASK_CSD
        .get(cpu)
        .ok_or_else(|| crate::text!("no task slot for CPU {cpu}"))?;
    csd.set(func, info)
        .map_err(|e| crate::text!("CPU {cpu}: its task csd is still busy ({})", e.errno()))?;
    SMP.smp_call_function_single_async(cpu, csd)
        .map_err(|e| crate::text!("starting a task on CPU {cpu} failed ({})", e.errno()))
}

/// Runs `body` as this CPU's "task": with interrupts enabled, so that it
/// may make waiting calls and serve the calls of others meanwhile.
pub fn as_task(body: impl FnOnce()) {
    irqs_on();
    body();
    irqs_off();
}

/// A scratch table of at least `len` zeroed `T`s from the kernel's
/// allocator for a case's bookkeeping (sized by the CPUs that exist, not
/// `MAX_CPUS`, and not on the 32 KiB kernel stack): allocated at the first
/// call and kept for the next runs. `None` when memory is short or a
/// first call asked for fewer. Called by the CPU that runs the cases, before
/// it starts others on them (they read the table through `cell.get()`).
pub fn scratch<T: Zeroable>(cell: &OnceSlice<T>, len: usize) -> Option<&'static [T]> {
    if cell.get().is_empty() {
        let fresh = crate::mem::alloc_zeroed(len).ok()?;
        // Err only if set already: the table below is then the first one.
        let _ = cell.set(fresh);
    }
    Some(cell.get()).filter(|t| t.len() >= len)
}

/// The CPU numbers a case looks at: `0..nr_cpu_ids`.
pub fn cpu_ids() -> impl Iterator<Item = CpuId> {
    (0..SMP.nr_cpu_ids()).map(CpuId)
}
