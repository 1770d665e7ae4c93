//! `run=bench`: IPI round trips and the smp call paths, timed with the TSC
//! on the boot CPU, each case bracketed by markers so that the VMM reads
//! every vCPU's KVM counters around it (see `shared::bench`).
//!
//! Cases, in order: the marker calibrations; `raw-ping` (the floor: an
//! x2APIC IPI and an acknowledgement in memory, no smp call layer);
//! `single-wait`, and the same with the target in the other idle mode;
//! `single-async` (throughput); `single-local`; `irq-work-on`;
//! `many-wait` to all others under every IPI delivery mode available, and
//! with a contended lock in the callback; `on-each-cpu`; the fan-out curve
//! (`fanout/*`: `smp_call_function_many(wait)` to 1, 2, 4, ... and all
//! other CPUs, one result per point, each with probed send windows and
//! send parts for the sender's exact VM exits per call); `send-path` (guest instructions from
//! the call to the ICR write, from probe markers). `dry-run`, `single-local`,
//! `single-wait`, `many-wait` and `many-wait/lock` are Yury Norov's
//! ipi_benchmark cases. Each runs until one round takes `bench_ms=`
//! (kvm-unit-tests' vmexit style); a fan-out point until one takes a
//! quarter of that.

mod cases;
mod harness;

use core::cell::Cell;

use shared::CpuId;
use shared::bench::{Case, IdleMode, IpiMode, Status};
use shared::status::GuestStatus;

use harness::{Fail, Measured, Rounds, measure, send_result};

use super::selftest::others;
use crate::arch::x86_64::ipi::PvStatus;
use crate::arch::x86_64::{interrupts, percpu, poll_idle};
use crate::kernel::{cpu_down, ipi, ipi_modes};
use crate::kprintln;
use crate::params::BootParams;
use crate::smp::CpuMask;
use crate::time;

/// Operations of the calibration round (the measuring loop's own cost).
const CALIBRATE_OPS: u64 = 1024;
/// Probe pairs per probed case.
const PROBE_PAIRS: u32 = 32;
/// A fan-out point's time goal is the case goal divided by this (there
/// are a dozen points per mode).
const FANOUT_GOAL_DIVISOR: u64 = 4;
/// Probed calls per fan-out point after its timed round: each bracketed by
/// probe markers, for the sender's exact VM exits in the send window; then
/// as many with the probe after the IPI send, for the send part.
const FANOUT_WINDOW_CALLS: u32 = 16;

/// Runs one case and reports it; false if it failed.
fn run_case(
    case: Case,
    targets: CpuMask,
    rounds: Rounds,
    op: impl FnMut(u64) -> Result<(), Fail>,
    finish: impl FnMut() -> Result<(), Fail>,
) -> bool {
    match measure(case, rounds, op, finish) {
        Ok(m) => {
            report_ok(case, targets, &m);
            true
        }
        Err(why) => fail(case, targets, why),
    }
}

fn report_ok(case: Case, targets: CpuMask, m: &Measured) {
    let ns = time::ticks_to_ns(m.cycles) / m.iterations.max(1);
    kprintln!(
        "bench: {:<22} {:>7} ops, {:>9} ns/op",
        case.name(),
        m.iterations,
        ns
    );
    send_result(case, Status::Ok, targets, Some(m));
}

fn fail(case: Case, targets: CpuMask, why: Fail) -> bool {
    kprintln!("bench: {}: FAILED: {}", case.name(), why);
    send_result(case, Status::Failed, targets, None);
    false
}

fn skip(case: Case, why: &str) {
    kprintln!("bench: {}: skipped: {}", case.name(), why);
    send_result(case, Status::Skipped, CpuMask::EMPTY, None);
}

/// Runs `f` with the mask IPI mode set to `mode`, restoring it after.
fn with_mode<R>(mode: IpiMode, f: impl FnOnce() -> R) -> R {
    let prev = ipi().set_mask_mode(mode);
    let r = f();
    ipi().set_mask_mode(prev);
    r
}

/// Makes exactly the CPUs of `mask` poll when idle: a halted CPU that
/// should poll is woken and waited for until it started polling, and a
/// polling CPU that should halt until it left its spin (it does within
/// one batch of spins); returns the previous set. On timeout the CPU is
/// named on the console before the error returns.
fn switch_poll_cpus(mask: CpuMask) -> Result<CpuMask, Fail> {
    let prev = ipi().set_poll_cpus(mask);
    let named = |cpu: CpuId| move |why: &Fail| kprintln!("bench: CPU {cpu}: {why}");
    for cpu in others() {
        if mask.test(cpu) && !prev.test(cpu) {
            let before = poll_idle::polls(cpu);
            cpu_down::wake(cpu);
            harness::wait_until("an idle CPU did not start polling", || {
                poll_idle::polls(cpu) != before
            })
            .inspect_err(named(cpu))?;
        } else if !mask.test(cpu) {
            harness::wait_until("an idle CPU did not stop polling", || {
                !poll_idle::is_polling(cpu)
            })
            .inspect_err(named(cpu))?;
        }
    }
    Ok(prev)
}

/// Runs `case` with exactly the CPUs of `mask` polling when idle,
/// restoring the previous set after.
fn with_poll_cpus(case: Case, targets: CpuMask, mask: CpuMask, f: impl FnOnce() -> bool) -> bool {
    match switch_poll_cpus(mask) {
        Ok(prev) => {
            let ok = f();
            match switch_poll_cpus(prev) {
                Ok(_) => ok,
                Err(why) => {
                    kprintln!(
                        "bench: {}: restoring the idle-poll CPUs failed",
                        case.name()
                    );
                    fail(case, targets, why)
                }
            }
        }
        Err(why) => fail(case, targets, why),
    }
}

/// Why a mask mode cannot be measured here, if it cannot.
fn mode_unavailable(mode: IpiMode) -> Option<&'static str> {
    match mode {
        IpiMode::Pv if ipi_modes::probe_pv() != PvStatus::Usable => {
            Some(ipi_modes::pv_problem(ipi().pv_status()))
        }
        IpiMode::Shorthand if !ipi().shorthand_ready() => {
            Some("not every CPU has booted, so the shorthand stays off")
        }
        IpiMode::Cluster if !ipi().ldr_mismatches().is_empty() => {
            Some("some CPU's LDR is not the id cluster mode derives")
        }
        _ => None,
    }
}

/// The benchmark scenario.
pub fn run(params: &BootParams<'_>) -> GuestStatus {
    interrupts::set_bench_ping(cases::raw_ping_handler);
    let me = percpu::this_cpu();
    let goal = params.bench_ms.saturating_mul(time::khz());
    let others = others();
    let target = others.first();
    kprintln!(
        "bench: {} CPUs online, goal {} ms per case, ipi={} idle={}",
        others.weight() + 1,
        params.bench_ms,
        ipi().mask_mode().name(),
        ipi().idle_mode().name()
    );
    let mut ok = true;
    let none = CpuMask::EMPTY;

    ok &= run_case(
        Case::Calibrate,
        none,
        Rounds::Fixed(CALIBRATE_OPS),
        |_| Ok(()),
        || Ok(()),
    );
    ok &= match cases::probe_pairs(Case::ProbeCalibrate, None, PROBE_PAIRS) {
        Ok(()) => {
            let m = Measured {
                iterations: u64::from(PROBE_PAIRS),
                ..Measured::default()
            };
            send_result(Case::ProbeCalibrate, Status::Ok, none, Some(&m));
            true
        }
        Err(why) => fail(Case::ProbeCalibrate, none, why),
    };

    ok &= run_case(
        Case::DryRun,
        none,
        Rounds::Goal(goal),
        |_| Ok(()),
        || Ok(()),
    );

    let remote = [
        Case::RawPing,
        Case::SingleWait,
        Case::SingleWaitIdlePoll,
        Case::SingleWaitIdleHalt,
        Case::SingleAsync,
    ];
    match target {
        None => {
            for case in remote {
                skip(case, "needs 2 CPUs");
            }
        }
        Some(t) => ok &= remote_cases(t, goal, params.idle),
    }
    let local = CpuMask::of(me);
    ok &= run_case(
        Case::SingleLocal,
        local,
        Rounds::Goal(goal),
        |_| cases::single_wait(me),
        || Ok(()),
    );
    match target {
        Some(t) => {
            let tm = CpuMask::of(t);
            ok &= run_case(
                Case::IrqWorkOn,
                tm,
                Rounds::Goal(goal),
                |_| cases::irq_work_on(t),
                || Ok(()),
            );
        }
        None => skip(Case::IrqWorkOn, "needs 2 CPUs"),
    }
    let many = [
        (Case::ManyWaitPhys, IpiMode::Phys),
        (Case::ManyWaitShorthand, IpiMode::Shorthand),
        (Case::ManyWaitCluster, IpiMode::Cluster),
        (Case::ManyWaitPv, IpiMode::Pv),
    ];
    for (case, mode) in many {
        if others.weight() < 2 {
            skip(
                case,
                "needs 3 CPUs (with one target a mask call is a single call)",
            );
        } else if let Some(why) = mode_unavailable(mode) {
            skip(case, why);
        } else {
            ok &= with_mode(mode, || {
                run_case(
                    case,
                    others,
                    Rounds::Goal(goal),
                    |_| cases::many_wait(),
                    || Ok(()),
                )
            });
        }
    }
    if others.is_empty() {
        skip(Case::ManyWaitLock, "needs 2 CPUs");
    } else {
        ok &= run_case(
            Case::ManyWaitLock,
            others,
            Rounds::Goal(goal),
            |_| cases::many_wait_lock(),
            || Ok(()),
        );
    }
    ok &= run_case(
        Case::OnEachCpu,
        others.with(me),
        Rounds::Goal(goal),
        |_| cases::on_each_cpu(),
        || Ok(()),
    );
    ok &= fanout(others, goal / FANOUT_GOAL_DIVISOR);
    match target {
        // A polling target would be woken without an IPI: probe the path
        // to a halted one.
        Some(t) => {
            let tm = CpuMask::of(t);
            let halted = ipi().poll_cpus().without(t);
            ok &= with_poll_cpus(Case::SendPath, tm, halted, || probe_case(t));
        }
        None => skip(Case::SendPath, "needs 2 CPUs"),
    }
    kprintln!("bench: {}", if ok { "done" } else { "FAILED" });
    if ok {
        GuestStatus::Success
    } else {
        GuestStatus::Failure
    }
}

/// The target counts of the fan-out curve below `n` other CPUs: 1, 2, 4,
/// ... up to `n` itself.
fn fanout_points(n: u32) -> impl Iterator<Item = u32> {
    let powers = core::iter::successors(Some(1u32), |k| k.checked_mul(2));
    powers
        .take_while(move |&k| k < n)
        .chain((n > 0).then_some(n))
}

/// The fan-out curve: `smp_call_function_many(wait)` to the first `k` of
/// `others` for each point `k`, under each mask mode (the shorthand only
/// at all others), one result per point.
fn fanout(others: CpuMask, goal: u64) -> bool {
    let n = others.weight();
    let modes = [
        (Case::FanoutPhys, IpiMode::Phys),
        (Case::FanoutShorthand, IpiMode::Shorthand),
        (Case::FanoutCluster, IpiMode::Cluster),
    ];
    let mut ok = true;
    for (case, mode) in modes {
        if n == 0 {
            skip(case, "needs 2 CPUs");
            continue;
        }
        if let Some(why) = mode_unavailable(mode) {
            skip(case, why);
            continue;
        }
        for k in fanout_points(n) {
            // The shorthand applies only when the targets are all others.
            if mode == IpiMode::Shorthand && k != n {
                continue;
            }
            let mut targets = CpuMask::EMPTY;
            for cpu in others.iter().take(k as usize) {
                targets.set(cpu);
            }
            ok &= with_mode(mode, || {
                // The timed round, then the probed send windows and send
                // parts (outside it, so that their markers do not disturb
                // its timing); the VMM attaches both to this point's
                // result.
                match measure(
                    case,
                    Rounds::Goal(goal),
                    |_| cases::many_wait_to(targets),
                    || Ok(()),
                ) {
                    Ok(m) => {
                        cases::send_windows(case, targets, FANOUT_WINDOW_CALLS);
                        cases::send_parts(case, targets, FANOUT_WINDOW_CALLS);
                        report_ok(case, targets, &m);
                        true
                    }
                    Err(why) => fail(case, targets, why),
                }
            });
        }
    }
    ok
}

/// The cases that need another CPU `t`.
fn remote_cases(t: CpuId, goal: u64, boot_idle: IdleMode) -> bool {
    let tm = CpuMask::of(t);
    let mut ok = true;
    // The floor is an IPI to a halted target in every idle mode: under
    // idle=poll the target would spin with interrupts on, and an IPI to a
    // running vCPU is then delivered at the vCPU's next VM exit on a host
    // that emulates guest instructions (its timer tick): raw-ping would
    // measure the host's tick, not the IPI.
    let raw_ping = || {
        run_case(
            Case::RawPing,
            tm,
            Rounds::Goal(goal),
            |_| cases::raw_ping(t),
            || Ok(()),
        )
    };
    ok &= match boot_idle {
        IdleMode::Halt => raw_ping(),
        IdleMode::Poll => {
            kprintln!("bench: raw-ping: CPU {t} halts when idle for this case, as with idle=halt");
            with_poll_cpus(Case::RawPing, tm, ipi().poll_cpus().without(t), raw_ping)
        }
    };
    ok &= run_case(
        Case::SingleWait,
        tm,
        Rounds::Goal(goal),
        |_| cases::single_wait(t),
        || Ok(()),
    );
    // The other idle mode, on the target only (more polling CPUs would only
    // compete with the sender for the host's CPUs).
    let (case, pollers, skipped) = match boot_idle {
        IdleMode::Halt => (Case::SingleWaitIdlePoll, tm, Case::SingleWaitIdleHalt),
        IdleMode::Poll => (
            Case::SingleWaitIdleHalt,
            ipi().poll_cpus().without(t),
            Case::SingleWaitIdlePoll,
        ),
    };
    ok &= with_poll_cpus(case, tm, pollers, || {
        run_case(
            case,
            tm,
            Rounds::Goal(goal),
            |_| cases::single_wait(t),
            || Ok(()),
        )
    });
    skip(skipped, "the boot idle mode is measured by single-wait");
    // Completions to wait for at the end of each round: the count before
    // it plus the calls it issued.
    let base = Cell::new(cases::async_completed());
    let issued = Cell::new(0u64);
    ok &= run_case(
        Case::SingleAsync,
        tm,
        Rounds::Goal(goal),
        |i| {
            issued.set(i + 1);
            cases::single_async(t, i)
        },
        || {
            let want = base.get().wrapping_add(issued.get());
            harness::wait_until("async calls did not all run", || {
                cases::async_completed() == want
            })?;
            base.set(want);
            Ok(())
        },
    );
    ok
}

/// `send-path`: guest instructions from the call to the ICR write.
fn probe_case(t: CpuId) -> bool {
    let tm = CpuMask::of(t);
    match cases::probe_pairs(Case::SendPath, Some(t), PROBE_PAIRS) {
        Ok(()) => {
            let m = Measured {
                iterations: u64::from(PROBE_PAIRS),
                ..Measured::default()
            };
            send_result(Case::SendPath, Status::Ok, tm, Some(&m));
            true
        }
        Err(why) => fail(Case::SendPath, tm, why),
    }
}
