//! In-guest self-tests of CPU hotplug and the boot parameters (`run=hotplug`):
//! calls queued to a CPU that goes offline run exactly once in its dying
//! flush, an offline CPU gets -ENXIO and is skipped, a re-onlined CPU
//! takes calls again, and every AP survives down/up cycles with calls in
//! flight. Each case is one `Test` record; with no AP online, the AP cases
//! are reported skipped.

// Cases return their report line by value: the guest has no heap, and a
// 200-byte line on the stack is what every case produces anyway.
#![allow(clippy::result_large_err)]

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

use shared::record::{Body, Verdict, WarnKind};
use shared::status::GuestStatus;
use shared::{CpuId, MAX_CPUS};

use crate::arch::x86_64::percpu;
use crate::console::Line;
use crate::kernel::SMP;
use crate::kernel::cpu_down::{cpu_down, hold, release};
use crate::kernel::smpboot::cpu_up;
use crate::params::BootParams;
use crate::smp::{Csd, SmpError};
use crate::{kprintln, report, time};

/// Calls queued per case.
const N: usize = 8;

/// Per-call run counts and where they ran.
static RUNS: [AtomicU32; N] = [const { AtomicU32::new(0) }; N];
static RAN_ON: [AtomicU32; N] = [const { AtomicU32::new(u32::MAX) }; N];
static RAN_OFFLINE: [AtomicU32; N] = [const { AtomicU32::new(0) }; N];

fn count(i: usize) {
    let me = percpu::this_cpu();
    if let (Some(r), Some(on), Some(off)) = (RUNS.get(i), RAN_ON.get(i), RAN_OFFLINE.get(i)) {
        // Relaxed: read by the test after the CPU is seen dead (Acquire)
        // or after a waiting call returned.
        r.fetch_add(1, Ordering::Relaxed);
        on.store(me.0, Ordering::Relaxed);
        off.store(u32::from(!SMP.cpu_online(me)), Ordering::Relaxed);
    }
}

static CSDS: [Csd; N] = [
    Csd::new(count, 0),
    Csd::new(count, 1),
    Csd::new(count, 2),
    Csd::new(count, 3),
    Csd::new(count, 4),
    Csd::new(count, 5),
    Csd::new(count, 6),
    Csd::new(count, 7),
];

fn reset() {
    for i in 0..N {
        // Relaxed: no call is in flight between cases.
        RUNS[i].store(0, Ordering::Relaxed);
        RAN_ON[i].store(u32::MAX, Ordering::Relaxed);
        RAN_OFFLINE[i].store(0, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Suite {
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Suite {
    /// Reports one case as a `Test` record and a console line.
    fn verdict(&mut self, name: &str, verdict: Verdict, detail: &str) {
        report::send(Body::Test {
            verdict,
            name,
            detail,
        });
        match verdict {
            Verdict::Pass => {
                self.passed += 1;
                kprintln!("PASS {name}");
            }
            Verdict::Fail => {
                self.failed += 1;
                kprintln!("FAIL {name}: {detail}");
            }
            Verdict::Skip => {
                self.skipped += 1;
                kprintln!("SKIP {name}: {detail}");
            }
        }
    }

    fn report(&mut self, name: &str, result: Result<Line, Line>) {
        match &result {
            Ok(d) => self.verdict(name, Verdict::Pass, d.as_str()),
            Err(d) => self.verdict(name, Verdict::Fail, d.as_str()),
        }
    }
}

/// The cases that take an AP down and up, in order.
const AP_CASES: [&str; 4] = [
    "dying-flush-runs-queued-calls-once",
    "offline-cpu-enxio-and-skipped",
    "reonlined-cpu-takes-calls",
    "down-up-cycles-with-calls-in-flight",
];

macro_rules! line {
    ($($arg:tt)*) => {{
        let mut l = Line::new();
        let _ = write!(l, $($arg)*);
        l
    }};
}

/// Every queued call ran exactly once, on `cpu`, while `cpu` was offline
/// (`offline`), or while online.
fn check_runs(cpu: CpuId, offline: bool) -> Result<(), Line> {
    for i in 0..N {
        // Relaxed: see `count`.
        let runs = RUNS[i].load(Ordering::Relaxed);
        let on = RAN_ON[i].load(Ordering::Relaxed);
        let off = RAN_OFFLINE[i].load(Ordering::Relaxed) == 1;
        if runs != 1 || on != cpu.0 || off != offline {
            return Err(line!(
                "call {i}: ran {runs} times, last on CPU {on}, offline={off} (want once on CPU {cpu}, offline={offline})"
            ));
        }
    }
    Ok(())
}

fn queue_all(cpu: CpuId) -> Result<(), Line> {
    for (i, csd) in CSDS.iter().enumerate() {
        if !time::spin_until(1_000, || !csd.is_locked()) {
            return Err(line!("csd {i} still in flight from an earlier case"));
        }
        if let Err(e) = SMP.smp_call_function_single_async(cpu, csd) {
            return Err(line!("queueing call {i} to CPU {cpu}: {}", e.errno()));
        }
    }
    Ok(())
}

/// Queue N calls to a CPU sitting with irqs off, take it down: they run in
/// the dying flush, once each, with no offline-IPI warning.
fn dying_flush(target: CpuId) -> Result<Line, Line> {
    reset();
    let warns_before = SMP.warn_count(target, WarnKind::IpiOnOfflineCpu);
    if !hold(target) {
        return Err(line!("CPU {target} did not reach the hold point"));
    }
    let ipis_before = SMP.stats(percpu::this_cpu()).ipis_requested;
    let queued = queue_all(target);
    let ipis = SMP.stats(percpu::this_cpu()).ipis_requested - ipis_before;
    if let Err(e) = queued {
        release(target);
        return Err(e);
    }
    // Relaxed: this CPU's own view of the counts it just reset.
    if RUNS.iter().any(|r| r.load(Ordering::Relaxed) != 0) {
        release(target);
        return Err(line!("a call ran while CPU {target} had irqs off"));
    }
    if let Err(e) = cpu_down(target) {
        // Or the CPU sits out the rest of its hold with irqs off.
        release(target);
        return Err(line!("cpu_down({target}): {e:?}"));
    }
    check_runs(target, true)?;
    let warns = SMP.warn_count(target, WarnKind::IpiOnOfflineCpu) - warns_before;
    if warns != 0 {
        return Err(line!("{warns} IPI-on-offline-CPU warnings"));
    }
    Ok(line!(
        "{N} calls queued with {ipis} IPI to CPU {target} (irqs off) ran once each in its dying flush"
    ))
}

fn offline_behaviour(target: CpuId) -> Result<Line, Line> {
    if SMP.cpu_online(target) {
        return Err(line!("CPU {target} is still online"));
    }
    match SMP.smp_call_function_single(target, count, 0, true) {
        Err(SmpError::Nxio) => {}
        other => return Err(line!("single(wait) to offline CPU {target}: {other:?}")),
    }
    reset();
    SMP.on_each_cpu(count, 0, true);
    // Relaxed: after the waiting call returned.
    let runs = RUNS[0].load(Ordering::Relaxed);
    let want = SMP.num_online_cpus();
    if runs != want {
        return Err(line!(
            "on_each_cpu ran {runs} times with {want} CPUs online"
        ));
    }
    Ok(line!(
        "-ENXIO for CPU {target}; on_each_cpu ran on the {want} online CPUs"
    ))
}

fn reonline(target: CpuId) -> Result<Line, Line> {
    cpu_up(target).map_err(|e| line!("cpu_up({target}): {e:?}"))?;
    reset();
    SMP.smp_call_function_single(target, count, 0, true)
        .map_err(|e| line!("single(wait) after re-online: {}", e.errno()))?;
    // Relaxed: after the waiting call returned.
    let on = RAN_ON[0].load(Ordering::Relaxed);
    if on != target.0 || RUNS[0].load(Ordering::Relaxed) != 1 {
        return Err(line!("the call ran on CPU {on}, not {target}"));
    }
    Ok(line!("CPU {target} came back and ran a waiting call"))
}

/// IPI-on-offline-CPU warnings so far, summed over all CPUs.
fn offline_ipi_warns() -> u32 {
    (0..MAX_CPUS as u32)
        .map(|c| SMP.warn_count(CpuId(c), WarnKind::IpiOnOfflineCpu))
        .fold(0, u32::wrapping_add)
}

/// Every AP goes down and up `cycles` times with async calls in flight.
fn cycles(cycles: u32) -> Result<Line, Line> {
    let aps: u32 = SMP.online_mask().iter().filter(|c| c.0 != 0).count() as u32;
    let warns_before = offline_ipi_warns();
    let mut done = 0;
    for _ in 0..cycles {
        for cpu in SMP.online_mask().iter().filter(|c| c.0 != 0) {
            reset();
            queue_all(cpu)?;
            cpu_down(cpu).map_err(|e| line!("cpu_down({cpu}): {e:?}"))?;
            // Each call ran once: before the CPU went down (online) or in
            // its dying flush (offline) — either is correct.
            for (i, r) in RUNS.iter().enumerate() {
                // Relaxed: after `cpu_down` saw the CPU dead (Acquire).
                let runs = r.load(Ordering::Relaxed);
                if runs != 1 {
                    return Err(line!("CPU {cpu}: call {i} ran {runs} times"));
                }
            }
            cpu_up(cpu).map_err(|e| line!("cpu_up({cpu}): {e:?}"))?;
            done += 1;
        }
    }
    // Over this case only: an earlier case's warning is its own failure.
    let warns = offline_ipi_warns().wrapping_sub(warns_before);
    if warns != 0 {
        return Err(line!("{warns} IPI-on-offline-CPU warnings"));
    }
    Ok(line!(
        "{done} down/up cycles of {aps} APs, {N} calls in flight each, all ran once"
    ))
}

fn boot_params(params: &BootParams<'_>, present: u32) -> Result<Line, Line> {
    let online = SMP.num_online_cpus();
    let nr = SMP.nr_cpu_ids();
    let want_nr = if params.smp_disabled {
        1
    } else {
        match params.nr_cpus {
            Some(n) if n > 0 && n < present => n,
            _ => present,
        }
    };
    let want_online = params.max_cpus.unwrap_or(u32::MAX).clamp(1, want_nr);
    if nr != want_nr || online != want_online {
        return Err(line!(
            "nr_cpu_ids {nr} (want {want_nr}), online {online} (want {want_online})"
        ));
    }
    if params.smp_disabled && SMP.num_possible_cpus() != 1 {
        return Err(line!(
            "SMP disabled but {} CPUs possible",
            SMP.num_possible_cpus()
        ));
    }
    Ok(line!(
        "nr_cpu_ids {nr}, {online} CPUs brought up of {present} present"
    ))
}

/// Runs the hotplug cases.
pub fn run(params: &BootParams<'_>, present: u32) -> GuestStatus {
    let mut s = Suite::default();
    s.report("boot-params-applied", boot_params(params, present));
    let target = SMP.online_mask().iter().filter(|c| c.0 != 0).last();
    match target {
        Some(t) => {
            s.report(AP_CASES[0], dying_flush(t));
            s.report(AP_CASES[1], offline_behaviour(t));
            s.report(AP_CASES[2], reonline(t));
            s.report(AP_CASES[3], cycles(3));
        }
        None => {
            for name in AP_CASES {
                s.verdict(name, Verdict::Skip, "needs an AP online (2 online CPUs)");
            }
        }
    }
    kprintln!(
        "hotplug: {} passed, {} failed, {} skipped",
        s.passed,
        s.failed,
        s.skipped
    );
    if s.failed == 0 {
        GuestStatus::Success
    } else {
        GuestStatus::Failure
    }
}
