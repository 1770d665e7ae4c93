//! Reliability on real vCPUs: the scftorture-style torture with
//! exactly-once accounting at 2, 4 and 8 vCPUs with and without hotplug
//! churn (and with churn at 64 and 128 vCPUs), the csd-lock stall detector
//! under faults the VMM injects (a stalled vCPU, spurious IPIs, dropped
//! IPIs), and a hostile guest.
//!
//! Each torture runs for a short fixed time; the assertions are on the
//! guest's own accounting and on what the VMM saw, never on timings.

use std::time::Duration;

use shared::status::{ExitCode, GuestStatus};
use smpcall_tests::{Scenario, config, explain, run};
use vmm::fault::Fault;
use vmm::hotplug_driver::Change;
use vmm::{Ending, Outcome, VmConfig};

/// How long each torture's invokers run.
const TORTURE: Duration = Duration::from_millis(1500);

fn torture(cpus: u32, cmdline: &str) -> VmConfig {
    let mut c = config(cpus, Scenario::Torture, cmdline);
    c.duration = Some(TORTURE);
    c
}

fn counter(o: &Outcome, name: &str) -> u64 {
    o.records
        .counter(name)
        .unwrap_or_else(|| panic!("counter {name} missing\n{}", explain(o)))
}

/// The torture passed, and its counters say why: requests were issued, all
/// finished, every (request, CPU) pair ran exactly once, nothing else ran,
/// and every error counter is zero.
fn torture_passed(o: &Outcome) {
    assert_eq!(
        o.ending,
        Ending::GuestExit(GuestStatus::Success),
        "{}",
        explain(o)
    );
    let verdict = o
        .records
        .tests()
        .into_iter()
        .find(|t| t.name == "scftorture");
    assert!(
        verdict.as_ref().is_some_and(|t| t.passed()),
        "{verdict:?}\n{}",
        explain(o)
    );
    assert!(o.console.contains("End of test: SUCCESS"), "{}", explain(o));
    let requests = counter(o, "scf.requests");
    assert!(requests > 0, "{}", explain(o));
    assert_eq!(counter(o, "scf.verified"), requests, "{}", explain(o));
    let pairs = counter(o, "scf.pairs");
    assert_eq!(counter(o, "scf.pairs_once"), pairs, "{}", explain(o));
    assert_eq!(counter(o, "scf.invoked"), pairs, "{}", explain(o));
    for (_, name, value) in o.records.counters() {
        if name.starts_with("scf.err.") {
            assert_eq!(value, 0, "{name}\n{}", explain(o));
        }
    }
    assert!(o.protocol_errors.is_empty(), "{}", explain(o));
}

/// With scftorture's default weights every kind of call was made
/// (offline targets included).
fn every_kind_made(o: &Outcome) {
    let sum = |names: &[&str]| names.iter().map(|n| counter(o, n)).sum::<u64>();
    assert!(sum(&["scf.single", "scf.single_ofl"]) > 0, "{}", explain(o));
    assert!(
        sum(&["scf.single_wait", "scf.single_wait_ofl"]) > 0,
        "{}",
        explain(o)
    );
    assert!(
        sum(&["scf.single_rpc", "scf.single_rpc_ofl"]) > 0,
        "{}",
        explain(o)
    );
    assert!(
        sum(&["scf.many", "scf.many_wait", "scf.all", "scf.all_wait"]) > 0,
        "{}",
        explain(o)
    );
}

/// Without fault injection no IPI is lost, so no waiter had to run a
/// request from its own flush (each such repair is also a console line).
fn no_self_flush(o: &Outcome) {
    assert_eq!(counter(o, "scf.self_flushes"), 0, "{}", explain(o));
}

fn plain_torture(cpus: u32) {
    let o = run(&torture(cpus, ""));
    torture_passed(&o);
    every_kind_made(&o);
    no_self_flush(&o);
}

#[test]
fn torture_2_cpus() {
    plain_torture(2);
}

#[test]
fn torture_4_cpus() {
    plain_torture(4);
}

#[test]
fn torture_8_cpus() {
    plain_torture(8);
}

fn torture_with_churn(cpus: u32) -> Outcome {
    let mut c = torture(cpus, "");
    c.hotplug_churn = Some(Duration::from_millis(60));
    let o = run(&c);
    torture_passed(&o);
    no_self_flush(&o);
    let done = o.hotplug.iter().filter(|e| e.ok()).count();
    assert!(done > 0, "no hotplug change was made\n{}", explain(&o));
    // A CPU brought back well before the end resumed its invoker.
    let early_online = o
        .hotplug
        .iter()
        .filter(|e| e.ok() && e.change == Change::Online && e.at < TORTURE / 2)
        .count() as u64;
    assert!(
        counter(&o, "scf.invoker_starts") > early_online,
        "{}",
        explain(&o)
    );
    o
}

#[test]
fn torture_2_cpus_with_hotplug_churn() {
    let _ = torture_with_churn(2);
}

#[test]
fn torture_4_cpus_with_hotplug_churn() {
    let _ = torture_with_churn(4);
}

#[test]
fn torture_8_cpus_with_hotplug_churn() {
    let _ = torture_with_churn(8);
}

/// 64 vCPUs on this 2-core host, CPUs going off and on under the torture:
/// every request still runs exactly once on each CPU it names.
#[test]
fn torture_64_cpus_with_hotplug_churn() {
    let _ = torture_with_churn(64);
}

/// 128 vCPUs (two words of CPU set per request) with CPUs going off and
/// on: every request still runs exactly once on each CPU it names, CPUs
/// 64 and up included (a run on a CPU outside a request's set is an error),
/// and more than 64 invokers ran.
#[test]
fn torture_128_cpus_with_hotplug_churn() {
    let o = torture_with_churn(128);
    assert!(counter(&o, "scf.invoker_starts") > 64, "{}", explain(&o));
}

#[test]
fn scftorture_weights_select_the_calls() {
    let o = run(&torture(2, "scf.weight_many_wait=1"));
    torture_passed(&o);
    assert!(counter(&o, "scf.many_wait") > 0, "{}", explain(&o));
    for other in ["scf.single", "scf.single_wait", "scf.single_rpc", "scf.all"] {
        assert_eq!(counter(&o, other), 0, "{other}\n{}", explain(&o));
    }
    let o = run(&torture(
        2,
        "scf.weight_single=0 scf.weight_single_rpc=0 scf.weight_single_wait=0 \
         scf.weight_many=0 scf.weight_many_wait=0 scf.weight_all=0 scf.weight_all_wait=0",
    ));
    assert_eq!(
        o.ending,
        Ending::GuestExit(GuestStatus::BadRequest),
        "{}",
        explain(&o)
    );
    assert!(o.console.contains("all zero weights makes no sense"));
}

#[test]
fn stalled_vcpu_is_reported_and_every_call_completes() {
    let mut c = torture(4, "csd_lock_timeout=100");
    c.faults = vec![Fault::Stall {
        cpu: 1,
        duration: Duration::from_millis(400),
        at: None,
    }];
    let o = run(&c);
    torture_passed(&o);
    assert_eq!(o.faults.stalls.len(), 1, "{:?}", o.faults);
    assert_eq!(o.faults.stalls[0].cpu, 1);
    let stalls = o.records.csd_stalls();
    let on_1: Vec<_> = stalls.iter().filter(|s| s.target == 1).collect();
    assert!(
        !on_1.is_empty(),
        "no stall on CPU 1 reported\n{}",
        explain(&o)
    );
    for s in &stalls {
        assert!(s.reports > 0 && s.waiter != s.target, "{s}");
        assert!(s.unstuck_after.is_some(), "{s}\n{}", explain(&o));
    }
    assert!(
        o.console.contains("non-responsive CSD lock") && o.console.contains("got unstuck"),
        "{}",
        explain(&o)
    );
}

#[test]
fn spurious_ipis_are_counted_and_harmless() {
    let mut c = torture(4, "");
    c.faults = vec![Fault::SpuriousIpi { per_sec: 2000 }];
    let o = run(&c);
    torture_passed(&o);
    let injected: u64 = o.faults.spurious_ipis.iter().sum();
    assert!(injected > 0, "{:?}", o.faults);
    assert!(counter(&o, "scf.empty_ipis") > 0, "{}", explain(&o));
}

/// Stalls in `o` all got unstuck, and some only through a re-sent IPI.
fn stalls_recovered_by_resends(o: &Outcome) {
    let stalls = o.records.csd_stalls();
    assert!(stalls.iter().any(|s| s.resends > 0), "{}", explain(o));
    assert!(
        stalls.iter().all(|s| s.unstuck_after.is_some()),
        "{}",
        explain(o)
    );
}

#[test]
fn guest_dropped_ipis_are_recovered_by_the_stall_detector() {
    // The guest drops IPIs itself (`ipi_drop`): available on every host.
    let o = run(&torture(4, "ipi_drop=200 csd_lock_timeout=20"));
    torture_passed(&o);
    assert!(counter(&o, "scf.ipis_dropped") > 0, "{}", explain(&o));
    stalls_recovered_by_resends(&o);
}

/// The VMM's `drop-ipi` fault needs a KVM that lets the VMM trap x2APIC
/// ICR writes. Where it cannot, the VMM skips the fault (one line) and so
/// does this test: it prints `SKIPPED: <reason>` and checks only that the
/// skip was reported and that nothing was trapped; it does not pass as if
/// IPIs had been dropped. (The guest-side drop, tested above, exercises
/// the same recovery on every host.)
#[test]
fn vmm_dropped_ipis_are_recovered_by_the_stall_detector_or_skipped() {
    let mut c = torture(4, "csd_lock_timeout=20");
    c.faults = vec![Fault::DropIpi { probability: 0.2 }];
    let o = run(&c);
    torture_passed(&o);
    let f = &o.faults;
    if let Some(reason) = f.skipped.iter().find(|s| s.contains("drop-ipi")) {
        assert_eq!(f.skipped.len(), 1, "{f:?}");
        assert_eq!(f.icr_writes, 0, "skipped, yet ICR writes trapped: {f:?}");
        assert_eq!(f.ipis_dropped, 0, "skipped, yet IPIs dropped: {f:?}");
        eprintln!("SKIPPED: {reason}");
        return;
    }
    assert!(f.skipped.is_empty(), "{f:?}");
    assert!(f.icr_writes > 0 && f.ipis_dropped > 0, "{f:?}");
    stalls_recovered_by_resends(&o);
}

#[test]
fn hostile_guest_gets_protocol_errors_and_exit_3() {
    let o = run(&config(2, Scenario::Hostile, ""));
    assert_eq!(
        o.ending,
        Ending::BadExitStatus(0xdead_beef),
        "{}",
        explain(&o)
    );
    assert_eq!(o.exit_code(), ExitCode::Crashed);
    let errors = o.protocol_errors.join("\n");
    for want in [
        "unknown port",
        "console port written with 1 bytes",
        "record port written with 2 bytes",
        "exit port written with 1 bytes",
        "read from unknown port",
        "console write of 65535 bytes",
        "console buffer at 0xfffffffe is outside guest memory",
        "is outside guest memory",
        "runs outside guest memory",
        "record without magic",
        "unknown record kind 99",
        "bad value in field reserved",
        "bad value in field verdict",
        "a record is at most",
        "record truncated",
        "string is not UTF-8",
        "record longer than its header says",
        "record claims to come from CPU 7",
        "read of unbacked address",
        "write to unbacked address",
    ] {
        assert!(errors.contains(want), "no {want:?} in\n{errors}");
    }
    // The VMM kept working: the line and the record after the abuse
    // arrived, the spoofed record is kept under the real vCPU, the port
    // reads got all-ones, and escape sequences were defused.
    assert!(
        o.console.contains("hostile: the VMM still listens"),
        "{}",
        explain(&o)
    );
    assert!(
        o.console
            .contains("port reads gave 0xffffffff and 0xffffffff")
    );
    assert!(o.console.contains("\\u{1b}[2J") && !o.console.contains('\u{1b}'));
    assert!(
        o.records
            .tests()
            .iter()
            .any(|t| t.name == "hostile-survived" && t.passed())
    );
    assert!(o.records.iter().any(|r| r.cpu == 7 && r.vcpu == 0));
}
