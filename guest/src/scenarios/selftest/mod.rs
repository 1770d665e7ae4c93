//! In-guest self-tests of the smp core: one named case per semantic, run
//! on real vCPUs with real x2APIC IPIs, each reported to the VMM as a
//! `Test` record (pass, fail or skip) and a `PASS name` / `FAIL name:
//! detail` / `SKIP name: reason` console line.
//!
//! Cases run one after the other on the boot CPU, in task context with
//! interrupts enabled; the other CPUs idle (`sti; hlt`) and take part
//! through IPIs, parks and tasks (see `harness.rs`). Every wait has a
//! deadline. A case that needs more CPUs than are online (one that could
//! not exercise its behaviour here) is not run: it is reported skipped,
//! with what it needs.
//!
//! Besides its own checks, the runner fails a case if a WARN fired on any
//! CPU that the case did not declare, or if a parked CPU had to give up on
//! its deadline.

// Case failures are `Err(Text)`, a fixed 200-byte buffer: there is no
// allocator to box it, and these are test paths, not hot ones.
#![allow(clippy::result_large_err)]

/// Formats a [`harness::Text`].
#[macro_export]
#[doc(hidden)]
macro_rules! text {
    ($($arg:tt)*) => {{
        let mut t = $crate::scenarios::selftest::harness::Text::new();
        let _ = core::fmt::Write::write_fmt(&mut t, format_args!($($arg)*));
        t
    }};
}

/// Fails the case (returns `Err(text)`) unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::text!($($arg)*));
        }
    };
}

mod any;
mod async_calls;
mod concurrency;
pub mod harness;
mod irq_work;
mod many;
mod park;
mod single;
mod warn;

use core::sync::atomic::{AtomicU32, Ordering};

use shared::CpuId;
use shared::record::{Body, PROVOKED_STALLS_COUNTER, Verdict, WarnKind};
use shared::status::GuestStatus;

pub use self::harness::{CaseResult, others};
use self::harness::{PARK_TIMEOUTS, Text};
use crate::kernel::SMP;
use crate::mem::OnceSlice;
use crate::{kprintln, report};

/// What a case needs to be applicable.
#[derive(Clone, Copy)]
pub enum Needs {
    /// Nothing: works on one CPU.
    Nothing,
    /// At least this many online CPUs.
    Cpus(u32),
    /// A CPU that can be offline: a present CPU left offline at boot, or
    /// a second online CPU to park.
    OfflineCpu,
}

/// One case.
pub struct Case {
    /// Unique kebab-case name.
    pub name: &'static str,
    /// When it can run.
    pub needs: Needs,
    /// WARN kinds it triggers on purpose (any other WARN fails it).
    pub warns: &'static [WarnKind],
    /// The case.
    pub run: fn() -> CaseResult,
}

const fn case(name: &'static str, needs: Needs, run: fn() -> CaseResult) -> Case {
    Case {
        name,
        needs,
        warns: &[],
        run,
    }
}

/// Every case, in the order they run.
const CASES: &[Case] = &[
    case(
        "local-path-irqs-off",
        Needs::Nothing,
        single::local_path_irqs_off,
    ),
    case(
        "enxio-invalid-cpu",
        Needs::Nothing,
        single::enxio_invalid_cpu,
    ),
    case(
        "enxio-offline-cpu",
        Needs::OfflineCpu,
        single::enxio_offline_cpu,
    ),
    case(
        "wait-sees-callback-stores",
        Needs::Cpus(2),
        single::wait_sees_callback_stores,
    ),
    case(
        "caller-stores-visible-in-callback",
        Needs::Cpus(2),
        single::caller_stores_visible,
    ),
    case("fifo-order", Needs::Cpus(2), async_calls::fifo_order),
    case(
        "ipi-coalescing",
        Needs::Cpus(2),
        async_calls::ipi_coalescing,
    ),
    case(
        "async-ebusy-and-reuse",
        Needs::Cpus(2),
        async_calls::ebusy_and_reuse,
    ),
    case(
        "async-requeue-own-csd",
        Needs::Nothing,
        async_calls::requeue_own_csd,
    ),
    case(
        "many-skips-self-and-offline",
        Needs::Nothing,
        many::skips_self_and_offline,
    ),
    case("wait-iff-enqueued", Needs::Cpus(2), many::wait_iff_enqueued),
    case(
        "sync-released-after-callback",
        Needs::Cpus(2),
        many::sync_released_after_callback,
    ),
    case(
        "on-each-cpu-cond-predicate",
        Needs::Nothing,
        many::cond_predicate,
    ),
    case(
        "on-each-cpu-runs-local-with-irqs-off",
        Needs::Nothing,
        many::on_each_cpu_local,
    ),
    case(
        "kick-all-cpus-sync",
        Needs::Cpus(2),
        many::kick_all_cpus_sync,
    ),
    case("any-prefers-self", Needs::Nothing, any::prefers_self),
    case(
        "any-prefers-same-node",
        Needs::Cpus(2),
        any::prefers_same_node,
    ),
    case(
        "any-enxio-all-offline",
        Needs::Nothing,
        any::enxio_all_offline,
    ),
    case(
        "irq-work-queue-local",
        Needs::Nothing,
        irq_work::queue_local,
    ),
    case("irq-work-queue-on", Needs::Cpus(2), irq_work::queue_on),
    Case {
        warns: &[WarnKind::WaitWithIrqsDisabled],
        ..case(
            "warn-wait-with-irqs-disabled",
            Needs::Nothing,
            warn::wait_with_irqs_disabled,
        )
    },
    Case {
        warns: &[WarnKind::FlushWithIrqsEnabled],
        ..case(
            "warn-flush-with-irqs-enabled",
            Needs::Nothing,
            warn::flush_with_irqs_enabled,
        )
    },
    Case {
        warns: &[WarnKind::IrqWorkOnOfflineCpu],
        ..case(
            "warn-irq-work-on-offline-cpu",
            Needs::Nothing,
            warn::irq_work_on_offline_cpu,
        )
    },
    Case {
        warns: &[WarnKind::IpiOnOfflineCpu, WarnKind::CallbackOnOfflineCpu],
        ..case(
            "warn-ipi-on-offline-cpu",
            Needs::Cpus(2),
            warn::ipi_on_offline_cpu,
        )
    },
    case("dying-cpu-flush", Needs::Cpus(2), warn::dying_cpu_flush),
    Case {
        warns: &[WarnKind::HotplugSenderTimeout],
        ..case(
            "warn-hotplug-sender-timeout",
            Needs::Cpus(3),
            warn::hotplug_sender_timeout,
        )
    },
    case(
        "concurrency-all-call-all",
        Needs::Cpus(2),
        concurrency::all_call_all,
    ),
    case(
        "concurrency-many-to-one",
        Needs::Cpus(3),
        concurrency::many_to_one,
    ),
];

fn applicable(needs: Needs) -> Result<(), Text> {
    let online = SMP.num_online_cpus();
    match needs {
        Needs::Nothing => Ok(()),
        Needs::Cpus(n) if online >= n => Ok(()),
        Needs::Cpus(n) => Err(text!("needs {n} online CPUs")),
        Needs::OfflineCpu => {
            let spare = SMP.present_mask().and_not(SMP.online_mask());
            if online >= 2 || !spare.is_empty() {
                Ok(())
            } else {
                Err(text!("needs 2 online CPUs or a present offline CPU"))
            }
        }
    }
}

/// WARN counts of one CPU, by kind.
type Warns = [AtomicU32; WarnKind::ALL.len()];

/// The snapshot of [`warn_snapshot`], one entry per CPU number.
static WARNS_BEFORE: OnceSlice<Warns> = OnceSlice::new();

/// Takes the WARN counts of every CPU (into [`WARNS_BEFORE`]); `false` if
/// there is no memory for them.
fn warn_snapshot() -> bool {
    let Some(table) = harness::scratch(&WARNS_BEFORE, SMP.nr_cpu_ids() as usize) else {
        return false;
    };
    for (c, slot) in harness::cpu_ids().zip(table) {
        for (s, w) in slot.iter().zip(SMP.stats(c).warns) {
            s.store(w, Ordering::Relaxed);
        }
    }
    true
}

/// The first WARN that fired since [`warn_snapshot`] and is not in
/// `allowed`.
fn unexpected_warn(allowed: &[WarnKind]) -> Option<(CpuId, WarnKind, u32)> {
    for (c, before) in harness::cpu_ids().zip(WARNS_BEFORE.get()) {
        let after = SMP.stats(c).warns;
        for (i, kind) in WarnKind::ALL.iter().enumerate() {
            let delta = after[i].wrapping_sub(before[i].load(Ordering::Relaxed));
            if delta != 0 && !allowed.contains(kind) {
                return Some((c, *kind, delta));
            }
        }
    }
    None
}

fn run_case(case: &Case) -> Verdict {
    let warns_taken = warn_snapshot();
    let park_timeouts = PARK_TIMEOUTS.load(Ordering::SeqCst);
    let online = SMP.online_mask();
    let mut result = (case.run)();
    let irqs_left_off = !crate::arch::x86_64::cpu::irqs_enabled();
    if irqs_left_off {
        // Leave the boot CPU as found, for the next case.
        harness::irqs_on();
    }
    let problem = if !warns_taken {
        Some(text!(
            "no memory for the WARN counts of {} CPUs",
            SMP.nr_cpu_ids()
        ))
    } else if let Some((cpu, kind, n)) = unexpected_warn(case.warns) {
        Some(text!("unexpected WARN {} x{n} on CPU {cpu}", kind.name()))
    } else if PARK_TIMEOUTS.load(Ordering::SeqCst) != park_timeouts {
        Some(text!(
            "a parked CPU gave up after {} ms",
            park::park_max_ms()
        ))
    } else if SMP.online_mask() != online {
        Some(text!(
            "online CPUs changed from {} to {}",
            harness::CpuList(online),
            harness::CpuList(SMP.online_mask())
        ))
    } else if irqs_left_off {
        Some(text!("returned with interrupts disabled"))
    } else {
        None
    };
    // The case's own failure says most; these only turn a pass into a fail.
    if let (Ok(_), Some(p)) = (&result, problem) {
        result = Err(p);
    }
    let (verdict, detail) = match &result {
        Ok(t) => (Verdict::Pass, t.as_str()),
        Err(t) => (Verdict::Fail, t.as_str()),
    };
    report_case(case.name, verdict, detail);
    verdict
}

/// Reports one case's verdict as a `Test` record and a console line.
fn report_case(name: &str, verdict: Verdict, detail: &str) {
    report::send(Body::Test {
        verdict,
        name,
        detail,
    });
    match verdict {
        Verdict::Pass => kprintln!("PASS {name}"),
        Verdict::Fail => kprintln!("FAIL {name}: {detail}"),
        Verdict::Skip => kprintln!("SKIP {name}: {detail}"),
    }
}

/// Runs every applicable case; success only if all of them passed.
pub fn run() -> GuestStatus {
    let online = SMP.online_mask();
    let offline = SMP.present_mask().and_not(online);
    kprintln!(
        "selftest: {} CPUs online ({}), present but offline: {}, nr_cpu_ids {}",
        online.weight(),
        harness::CpuList(online),
        harness::CpuList(offline),
        SMP.nr_cpu_ids()
    );
    if !crate::arch::x86_64::cpu::irqs_enabled() {
        kprintln!("selftest: must start with interrupts enabled");
        return GuestStatus::Failure;
    }
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    for case in CASES {
        let verdict = match applicable(case.needs) {
            Ok(()) => run_case(case),
            Err(why) => {
                report_case(case.name, Verdict::Skip, why.as_str());
                Verdict::Skip
            }
        };
        match verdict {
            Verdict::Pass => passed += 1,
            Verdict::Fail => failed += 1,
            Verdict::Skip => skipped += 1,
        }
    }
    kprintln!("selftest: {passed} passed, {failed} failed, {skipped} skipped");
    // For the VMM's summary: which stall reports were provoked on purpose.
    report::send(Body::Counter {
        name: PROVOKED_STALLS_COUNTER,
        value: u64::from(harness::PROVOKED_STALLS.load(Ordering::SeqCst)),
    });
    if failed == 0 && passed > 0 {
        GuestStatus::Success
    } else {
        GuestStatus::Failure
    }
}
