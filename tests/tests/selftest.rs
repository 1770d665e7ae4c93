//! The in-guest self-test suite (`run=selftest`) on real vCPUs: every case
//! that applies to the CPU count must be reported, by name, and pass; the
//! only WARNs are the ones the suite triggers on purpose.

use std::collections::BTreeSet;
use std::sync::Mutex;

use shared::record::WarnKind;
use shared::status::{ExitCode, GuestStatus};
use smpcall_tests::{config, explain, run};
use vmm::{Ending, Outcome, VmConfig};

/// Cases that run with one online CPU.
const ONE_CPU: &[&str] = &[
    "local-path-irqs-off",
    "enxio-invalid-cpu",
    "async-requeue-own-csd",
    "many-skips-self-and-offline",
    "on-each-cpu-cond-predicate",
    "on-each-cpu-runs-local-with-irqs-off",
    "kick-all-cpus-sync",
    "any-prefers-self",
    "any-enxio-all-offline",
    "irq-work-queue-local",
    "irq-work-queue-on",
    "warn-wait-with-irqs-disabled",
    "warn-flush-with-irqs-enabled",
    "warn-irq-work-on-offline-cpu",
];

/// Cases that also need a CPU that can be offline (a second online CPU,
/// or a present CPU left offline by `maxcpus=`).
const OFFLINE_CPU: &[&str] = &["enxio-offline-cpu"];

/// Cases that also need two online CPUs.
const TWO_CPUS: &[&str] = &[
    "wait-sees-callback-stores",
    "caller-stores-visible-in-callback",
    "fifo-order",
    "ipi-coalescing",
    "async-ebusy-and-reuse",
    "wait-iff-enqueued",
    "any-prefers-same-node",
    "warn-ipi-on-offline-cpu",
    "dying-cpu-flush",
    "concurrency-all-call-all",
];

/// Cases that also need three online CPUs.
const THREE_CPUS: &[&str] = &["warn-hotplug-sender-timeout", "concurrency-many-to-one"];

/// One VM at a time: the cases spin on several vCPUs, and a few 8-vCPU
/// guests at once on a small host only make every deadline tighter.
static SERIAL: Mutex<()> = Mutex::new(());

fn expected(online: u32, spare_offline: bool) -> BTreeSet<&'static str> {
    let mut names: BTreeSet<&str> = ONE_CPU.iter().copied().collect();
    if online >= 2 || spare_offline {
        names.extend(OFFLINE_CPU);
    }
    if online >= 2 {
        names.extend(TWO_CPUS);
    }
    if online >= 3 {
        names.extend(THREE_CPUS);
    }
    names
}

/// WARN kinds the suite triggers on purpose.
fn expected_warns(online: u32) -> BTreeSet<&'static str> {
    let mut kinds = BTreeSet::from([
        WarnKind::WaitWithIrqsDisabled.name(),
        WarnKind::FlushWithIrqsEnabled.name(),
        WarnKind::IrqWorkOnOfflineCpu.name(),
    ]);
    if online >= 2 {
        kinds.insert(WarnKind::IpiOnOfflineCpu.name());
        kinds.insert(WarnKind::CallbackOnOfflineCpu.name());
    }
    if online >= 3 {
        kinds.insert(WarnKind::HotplugSenderTimeout.name());
    }
    kinds
}

/// Runs the suite and checks everything that does not depend on the
/// machine's shape beyond the online CPU count.
fn selftest(c: &VmConfig, online: u32, spare_offline: bool) -> Outcome {
    let o = {
        let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        run(c)
    };
    let why = explain(&o);
    assert!(o.protocol_errors.is_empty(), "protocol errors\n{why}");
    let results = o.tests();
    let failed: Vec<String> = results
        .iter()
        .filter(|t| !t.passed)
        .map(|t| format!("{}: {}", t.name, t.detail))
        .collect();
    assert!(failed.is_empty(), "failed cases: {failed:#?}\n{why}");
    let mut seen = BTreeSet::new();
    for t in &results {
        assert!(
            seen.insert(t.name.as_str()),
            "case {} reported twice\n{why}",
            t.name
        );
        assert!(!t.detail.is_empty(), "case {} has no detail\n{why}", t.name);
    }
    let want = expected(online, spare_offline);
    let missing: Vec<_> = want.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "cases missing: {missing:?}, unexpected: {extra:?}\n{why}"
    );
    assert_eq!(o.ending, Ending::GuestExit(GuestStatus::Success), "{why}");
    assert_eq!(o.exit_code(), ExitCode::Success, "{why}");
    assert!(
        o.console
            .contains(&format!("selftest: {} passed, 0 failed", want.len())),
        "{why}"
    );
    for name in ONE_CPU
        .iter()
        .chain(OFFLINE_CPU)
        .chain(TWO_CPUS)
        .chain(THREE_CPUS)
    {
        let said_na = o.console.contains(&format!(
            "not applicable with {online} online CPUs: {name} ("
        ));
        assert_eq!(
            said_na,
            !want.contains(name),
            "not-applicable line for {name}\n{why}"
        );
    }
    let warns: BTreeSet<&str> = o.warnings().iter().map(|(_, k, _)| k.name()).collect();
    assert_eq!(warns, expected_warns(online), "WARN kinds\n{why}");
    // The suite provokes one csd-lock stall on purpose per stall-released
    // park (wait-iff-enqueued, kick-all-cpus-sync, the sender timeout):
    // the boot CPU waits for a target busy in its park callback, so the
    // IPI is never re-sent, and every stall resolves.
    let stalls = o.csd_stalls();
    let want_stalls = match online {
        1 => 0,
        2 => 2,
        _ => 3,
    };
    assert_eq!(
        stalls.len(),
        want_stalls,
        "csd-lock stalls: {stalls:#?}\n{why}"
    );
    for s in &stalls {
        assert!(
            s.waiter == 0 && s.resends == 0 && s.target_running != 0 && s.unstuck_after.is_some(),
            "unexpected csd-lock stall {s:#?}\n{why}"
        );
    }
    o
}

fn detail(o: &Outcome, name: &str) -> String {
    o.tests()
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.detail)
        .unwrap_or_default()
}

#[test]
fn selftest_1_cpu() {
    selftest(&config(1, "selftest", ""), 1, false);
}

#[test]
fn selftest_2_cpus() {
    selftest(&config(2, "selftest", ""), 2, false);
}

#[test]
fn selftest_3_cpus() {
    selftest(&config(3, "selftest", ""), 3, false);
}

#[test]
fn selftest_4_cpus() {
    selftest(&config(4, "selftest", ""), 4, false);
}

#[test]
fn selftest_8_cpus() {
    let o = selftest(&config(8, "selftest", ""), 8, false);
    assert!(
        detail(&o, "any-prefers-same-node").starts_with("one NUMA node"),
        "{}",
        explain(&o)
    );
}

#[test]
fn selftest_8_cpus_two_numa_nodes() {
    let mut c = config(8, "selftest", "");
    c.numa = vec![0, 0, 0, 0, 1, 1, 1, 1];
    let o = selftest(&c, 8, false);
    // CPU 4 is the first CPU whose nearest same-node CPU is not the first
    // online one: from it, mask 0-3,5-7 must give 5, mask 0-3 gives 0.
    let d = detail(&o, "any-prefers-same-node");
    assert!(
        d.contains("from CPU 4 (node 1)") && d.contains("same-node CPU 5") && d.contains("CPU 0"),
        "{d}\n{}",
        explain(&o)
    );
}

#[test]
fn selftest_8_cpus_apic_stride_3() {
    let mut c = config(8, "selftest", "");
    c.apic_stride = 3;
    selftest(&c, 8, false);
}

#[test]
fn selftest_with_present_cpus_left_offline() {
    // One online CPU, one present but never brought up: -ENXIO for an
    // offline CPU becomes checkable without a second online CPU.
    let o = selftest(&config(2, "selftest", "maxcpus=1"), 1, true);
    assert!(
        detail(&o, "enxio-offline-cpu").contains("present, never brought up"),
        "{}",
        explain(&o)
    );
    let o = selftest(&config(4, "selftest", "maxcpus=2"), 2, true);
    assert!(
        detail(&o, "many-skips-self-and-offline").contains("present, never brought up"),
        "{}",
        explain(&o)
    );
}
