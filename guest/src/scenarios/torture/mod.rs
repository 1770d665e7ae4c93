//! `run=torture`: Linux's scftorture on real vCPUs, with explicit
//! exactly-once accounting (see `account.rs`).
//!
//! Every online CPU runs an invoker (`invoker.rs`): the boot CPU runs one
//! itself and also prints the statistics and the verdict; the others run
//! theirs from the idle loop, so that a CPU the host takes down stops
//! invoking and resumes when it comes back. After a real start barrier they
//! issue random single, single_rpc, single_wait, many, many_wait, all and
//! all_wait calls with scftorture's weights to random targets (self,
//! offline and invalid CPUs included) for `torture.duration_ms`. Then the
//! leader stops them, waits for every request to finish, checks every
//! (request, CPU) pair ran exactly once and nothing else ran, and reports
//! `End of test: SUCCESS` or `FAILURE` with every counter, as records too.

mod account;
mod config;
mod invoker;

use core::sync::atomic::Ordering;

use crate::arch::x86_64::{cpu, ipi_fault, percpu};
use crate::kernel::{SMP, idle};
use crate::{kprintln, report, time};
use account::{c, e};
use config::Config;
use shared::record::{Body, Verdict};
use shared::status::GuestStatus;

/// How long the leader waits for the invokers to stop.
const STOP_TIMEOUT_MS: u64 = 10_000;

/// Per-CPU random numbers (xorshift64*), one stream for invokers and one
/// for handlers, which never interleave on one CPU.
pub(crate) mod rand {
    use core::sync::atomic::{AtomicU64, Ordering};

    use shared::CpuId;

    use crate::mem::OutOfMemory;
    use crate::scenarios::percpu::PerCpu;

    /// Each CPU's streams; zero is a stream not seeded yet (`step`).
    static INVOKER: PerCpu<AtomicU64> = PerCpu::new();
    static HANDLER: PerCpu<AtomicU64> = PerCpu::new();

    /// Allocates the streams (the leader, before any invoker starts).
    pub fn alloc() -> Result<(), OutOfMemory> {
        INVOKER.alloc()?;
        HANDLER.alloc()?;
        Ok(())
    }

    /// A stream's next number; a CPU past the tables (none: they are
    /// allocated for every CPU number) gets a one-off stream.
    fn step(state: Option<&AtomicU64>, me: CpuId) -> u64 {
        let spare = AtomicU64::new(0);
        let state = state.unwrap_or(&spare);
        // Relaxed: each stream is used by one CPU only, never nested.
        let mut x = state.load(Ordering::Relaxed);
        if x == 0 {
            x = crate::arch::x86_64::cpu::rdtsc()
                ^ (u64::from(me.0) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x |= 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next number of this CPU's invoker.
    pub fn next(me: CpuId) -> u64 {
        step(INVOKER.get(me), me)
    }

    /// The next number of this CPU's handlers.
    pub fn next_handler(me: CpuId) -> u64 {
        step(HANDLER.get(me), me)
    }
}

/// Counting call-function IPIs that find nothing to run (the VMM's
/// `--fault spurious-ipi` injects such IPIs). Off outside the torture, so
/// the IPI path costs nothing more there.
pub mod spurious {
    use super::{SMP, account, c, percpu};
    use crate::arch::x86_64::{interrupts, x2apic};
    use crate::kernel::irq::call_function;

    /// Installs the counting call-function handler (or the plain one); an
    /// IPI that misses the switch is not counted.
    pub(super) fn enable(on: bool) {
        interrupts::set_call_function(if on {
            call_function_counting
        } else {
            call_function
        });
    }

    /// The kernel's call-function handler that also counts IPIs that
    /// find nothing to run.
    extern "C" fn call_function_counting() {
        x2apic::eoi();
        let before = SMP.stats(percpu::this_cpu()).callbacks_run;
        SMP.run_call_queue_irqs_off();
        if SMP.stats(percpu::this_cpu()).callbacks_run == before {
            account::count(c::EMPTY_IPIS, 1);
        }
    }
}

fn print_stats(done: bool) {
    let errs = account::any_error();
    let bang = if errs { "!!! " } else { "" };
    let ver = if done { "VER" } else { "ver" };
    let t = account::total;
    let er = account::errors;
    kprintln!(
        "scftorture: {bang}scf_invoked_count {ver}: {} single: {}/{} single_ofl: {}/{} single_rpc: {} single_rpc_ofl: {} many: {}/{} all: {}/{} ste: {} stnmie: {} stnmoe: {}",
        t(c::EXEC),
        t(c::SINGLE),
        t(c::SINGLE + 1),
        t(c::SINGLE_OFL),
        t(c::SINGLE_OFL + 1),
        t(c::RPC),
        t(c::RPC_OFL),
        t(c::MANY),
        t(c::MANY + 1),
        t(c::ALL),
        t(c::ALL + 1),
        er(e::WRONG_CPU),
        er(e::MB_IN),
        er(e::MB_OUT)
    );
    kprintln!(
        "scftorture: {bang}exactly-once: requests {} verified {} pairs {} once {} dup {} unexp {} lost {} stale {} early {} badret {} timeout {}",
        t(c::REQUESTS),
        t(c::VERIFIED),
        t(c::PAIRS),
        t(c::PAIRS_OK),
        er(e::DUP),
        er(e::UNEXPECTED),
        er(e::LOST),
        er(e::STALE),
        er(e::EARLY),
        er(e::BAD_RET),
        er(e::TIMEOUT)
    );
    kprintln!(
        "scftorture: delays {} nudges {} self-flushes {} invoker-starts {} empty-ipis {} ipis-dropped {} online {}",
        t(c::DELAYS),
        t(c::NUDGES),
        t(c::SELF_FLUSHES),
        t(c::STARTS),
        t(c::EMPTY_IPIS),
        ipi_fault::dropped(),
        SMP.num_online_cpus()
    );
}

fn print_params(tag: &str, cfg: &Config) {
    let w = &cfg.weights;
    kprintln!(
        "scftorture: --- {tag}: duration_ms={} stat_ms={} nr_cpu_ids={} csd_lock_timeout_ms={}",
        cfg.duration_ms,
        cfg.stat_ms,
        SMP.nr_cpu_ids(),
        SMP.csd_lock_timeout_ns() / 1_000_000
    );
    kprintln!(
        "scftorture: --- {tag}: weight_single={} weight_single_rpc={} weight_single_wait={} weight_many={} weight_many_wait={} weight_all={} weight_all_wait={}",
        w[0],
        w[1],
        w[2],
        w[3],
        w[4],
        w[5],
        w[6]
    );
}

/// Why the verdict is FAILURE, or `None` for SUCCESS.
fn failure() -> Option<&'static str> {
    let t = account::total;
    if account::any_error() {
        Some("an error counter is not zero")
    } else if t(c::REQUESTS) == 0 {
        Some("no request was issued")
    } else if t(c::VERIFIED) != t(c::REQUESTS) {
        Some("not every request finished")
    } else if t(c::PAIRS_OK) != t(c::PAIRS) {
        Some("not every (request, CPU) pair ran exactly once")
    } else if t(c::EXEC) != t(c::PAIRS) {
        Some("more handler runs than (request, CPU) pairs")
    } else {
        None
    }
}

fn send_records(verdict: Option<&str>) {
    const COUNTERS: [(&str, usize); 19] = [
        ("scf.invoked", c::EXEC),
        ("scf.single", c::SINGLE),
        ("scf.single_wait", c::SINGLE + 1),
        ("scf.single_ofl", c::SINGLE_OFL),
        ("scf.single_wait_ofl", c::SINGLE_OFL + 1),
        ("scf.single_rpc", c::RPC),
        ("scf.single_rpc_ofl", c::RPC_OFL),
        ("scf.many", c::MANY),
        ("scf.many_wait", c::MANY + 1),
        ("scf.all", c::ALL),
        ("scf.all_wait", c::ALL + 1),
        ("scf.requests", c::REQUESTS),
        ("scf.verified", c::VERIFIED),
        ("scf.pairs", c::PAIRS),
        ("scf.pairs_once", c::PAIRS_OK),
        ("scf.delays", c::DELAYS),
        ("scf.invoker_starts", c::STARTS),
        ("scf.empty_ipis", c::EMPTY_IPIS),
        ("scf.self_flushes", c::SELF_FLUSHES),
    ];
    for (name, i) in COUNTERS {
        report::send(Body::Counter {
            name,
            value: account::total(i),
        });
    }
    report::send(Body::Counter {
        name: "scf.nudges",
        value: account::total(c::NUDGES),
    });
    report::send(Body::Counter {
        name: "scf.ipis_dropped",
        value: ipi_fault::dropped(),
    });
    for (i, name) in e::NAMES.iter().enumerate() {
        let mut key = crate::console::Line::new();
        let _ = core::fmt::Write::write_fmt(&mut key, format_args!("scf.err.{name}"));
        report::send(Body::Counter {
            name: key.as_str(),
            value: account::errors(i),
        });
    }
    let mut detail = crate::console::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut detail,
        format_args!(
            "{} requests, {} (request, CPU) pairs ran exactly once{}{}",
            account::total(c::VERIFIED),
            account::total(c::PAIRS_OK),
            if verdict.is_some() { "; FAILURE: " } else { "" },
            verdict.unwrap_or("")
        ),
    );
    report::send(Body::Test {
        verdict: if verdict.is_none() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        name: "scftorture",
        detail: detail.as_str(),
    });
}

/// Runs the torture on the boot CPU (the leader).
pub fn run(cmdline: &str) -> GuestStatus {
    let me = percpu::this_cpu();
    let cfg = match Config::parse(cmdline, SMP.nr_cpu_ids()) {
        Ok(cfg) => cfg,
        Err(why) => {
            kprintln!("scftorture: {why}");
            return GuestStatus::BadRequest;
        }
    };
    // The per-CPU state, the requests and their CPU sets, for nr_cpu_ids
    // CPUs.
    let allocated = account::alloc(SMP.nr_cpu_ids())
        .and_then(|()| invoker::alloc())
        .and_then(|()| rand::alloc());
    if let Err(oom) = allocated {
        kprintln!(
            "scftorture: no memory for the per-CPU state and requests ({} bytes, {} left)",
            oom.need,
            oom.left
        );
        return GuestStatus::BadRequest;
    }
    print_params("Start of test", &cfg);
    cfg.dump();
    spurious::enable(true);
    invoker::prepare(cfg, SMP.online_mask());
    let others = SMP.possible_mask().without(me);
    for cpu in others.iter() {
        idle::set_idle_task(cpu, Some(invoker::ap_invoker));
    }
    let stat_ticks = cfg.stat_ms.max(1).saturating_mul(time::khz());
    let run_ticks = cfg.duration_ms.saturating_mul(time::khz());
    let mut times: Option<(u64, u64)> = None;
    invoker::run(me, &mut || {
        let now = cpu::rdtsc();
        let (end, next) = times.get_or_insert((now.saturating_add(run_ticks), now + stat_ticks));
        if now >= *next {
            print_stats(false);
            *next = now.saturating_add(stat_ticks);
        }
        now >= *end
    });
    // SeqCst: see `invoker::poll_point`.
    invoker::STOP.store(true, Ordering::SeqCst);
    for cpu in others.iter() {
        idle::set_idle_task(cpu, None);
    }
    let stop_ms = time::scaled_ms(STOP_TIMEOUT_MS);
    if !time::spin_until(stop_ms, invoker::all_stopped) {
        kprintln!("scftorture: invokers still running {stop_ms} ms after the stop");
        account::error(e::TIMEOUT, 1);
    }
    account::sweep();
    spurious::enable(false);
    print_stats(true);
    let verdict = failure();
    send_records(verdict);
    print_params(
        if verdict.is_some() {
            "End of test: FAILURE"
        } else {
            "End of test: SUCCESS"
        },
        &cfg,
    );
    if let Some(why) = verdict {
        kprintln!("scftorture: FAILURE: {why}");
        GuestStatus::Failure
    } else {
        GuestStatus::Success
    }
}
