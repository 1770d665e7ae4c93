//! Helpers for the integration tests: boot a VM through the vmm library
//! and explain any failure with the whole guest console; the checks the
//! self-test and hotplug scenarios share wherever they are run.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

pub use shared::Scenario;
use shared::record::WarnKind;
use shared::status::{ExitCode, GuestStatus};
use vmm::{Ending, Outcome, VmConfig};

/// A config for `cpus` vCPUs running `scenario` with extra command-line
/// words, and a watchdog generous enough for a slow nested host.
pub fn config(cpus: u32, scenario: Scenario, cmdline: &str) -> VmConfig {
    VmConfig {
        cpus,
        scenario,
        cmdline: cmdline.into(),
        timeout: Duration::from_secs(300),
        ..VmConfig::default()
    }
}

/// Everything about a run, for a failing assertion's message.
pub fn explain(o: &Outcome) -> String {
    format!(
        "ending: {:?}\n--- console ---\n{}--- diagnosis ---\n{}--- protocol errors ---\n{:#?}",
        o.ending,
        o.console,
        o.diagnosis(),
        o.protocol_errors
    )
}

/// Runs `config`, panicking with the setup error if it could not start.
pub fn run(config: &VmConfig) -> Outcome {
    match vmm::run(config) {
        Ok(o) => o,
        Err(e) => panic!("vmm failed to start: {e}"),
    }
}

/// Timeout used by tests that expect the watchdog to fire.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(2);

/// One self-test VM at a time within a test binary: the cases spin on
/// several vCPUs and lower the csd-lock timeout to tens of ms in a few
/// places, and several such guests at once on a small host can starve each
/// other past it. One at a time keeps their deadlines meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `config` while no other [`run_serial`] of this test binary runs.
pub fn run_serial(config: &VmConfig) -> Outcome {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run(config)
}

/// Asserts the guest exited on its own and reported success.
#[track_caller]
pub fn assert_success(o: &Outcome) {
    assert_eq!(
        o.ending,
        Ending::GuestExit(GuestStatus::Success),
        "{}",
        explain(o)
    );
}

/// Asserts the guest console contains `needle`.
#[track_caller]
pub fn assert_console(o: &Outcome, needle: &str) {
    assert!(
        o.console.contains(needle),
        "console lacks {needle:?}\n{}",
        explain(o)
    );
}

/// The CPUs that reported themselves online, in ascending order.
pub fn sorted_online(o: &Outcome) -> Vec<u16> {
    let mut online = o.records.online_cpus();
    online.sort_unstable();
    online
}

/// Self-test cases that run with one online CPU.
pub const ONE_CPU: &[&str] = &[
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

/// Self-test cases that also need a CPU that can be offline (a second
/// online CPU, or a present CPU left offline by `maxcpus=`).
pub const OFFLINE_CPU: &[&str] = &["enxio-offline-cpu"];

/// Self-test cases that also need two online CPUs.
pub const TWO_CPUS: &[&str] = &[
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

/// Self-test cases that also need three online CPUs.
pub const THREE_CPUS: &[&str] = &["warn-hotplug-sender-timeout", "concurrency-many-to-one"];

/// The self-test cases that apply with `online` CPUs (and a spare offline
/// present CPU when `spare_offline`).
pub fn selftest_cases(online: u32, spare_offline: bool) -> BTreeSet<&'static str> {
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

/// WARN kinds the self-test suite triggers on purpose with `online` CPUs.
pub fn selftest_warns(online: u32) -> BTreeSet<&'static str> {
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

/// Runs the self-test scenario `c` (one at a time, see [`run_serial`]) and
/// checks everything that does not depend on the machine's shape beyond
/// the online CPU count: exactly the applicable cases, each reported once
/// with a detail and passed, a not-applicable line for every other case,
/// only the WARNs the suite provokes, the stalls it provokes and no other,
/// no protocol error, and a successful exit.
pub fn selftest(c: &VmConfig, online: u32, spare_offline: bool) -> Outcome {
    let o = run_serial(c);
    let why = explain(&o);
    assert!(o.protocol_errors.is_empty(), "protocol errors\n{why}");
    let results = o.records.tests();
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
    let want = selftest_cases(online, spare_offline);
    let missing: Vec<_> = want.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "cases missing: {missing:?}, unexpected: {extra:?}\n{why}"
    );
    assert_success(&o);
    assert_eq!(o.exit_code(), ExitCode::Success, "{why}");
    assert_console(&o, &format!("selftest: {} passed, 0 failed", want.len()));
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
    let warns: BTreeSet<&str> = o
        .records
        .warnings()
        .iter()
        .map(|(_, k, _)| k.name())
        .collect();
    assert_eq!(warns, selftest_warns(online), "WARN kinds\n{why}");
    // The suite provokes one csd-lock stall on purpose per stall-released
    // park (wait-iff-enqueued, kick-all-cpus-sync, the sender timeout):
    // the boot CPU waits for a target busy in its park callback, so the
    // IPI is never re-sent, and every stall resolves.
    let stalls = o.records.csd_stalls();
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

/// The detail line of self-test case `name`, empty if it was not reported.
pub fn detail(o: &Outcome, name: &str) -> String {
    o.records
        .tests()
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.detail)
        .unwrap_or_default()
}

/// Every case of the hotplug scenario, in report order, with at least two
/// CPUs brought up (with one, only the first applies).
pub const HOTPLUG_CASES: [&str; 5] = [
    "boot-params-applied",
    "dying-flush-runs-queued-calls-once",
    "offline-cpu-enxio-and-skipped",
    "reonlined-cpu-takes-calls",
    "down-up-cycles-with-calls-in-flight",
];

/// Asserts a successful exit with exactly the cases `names` reported, each
/// passed, and no protocol error.
#[track_caller]
pub fn passed(o: &Outcome, names: &[&str]) {
    assert_success(o);
    let tests = o.records.tests();
    for name in names {
        match tests.iter().find(|t| t.name == *name) {
            Some(t) => assert!(t.passed, "{name}: {}\n{}", t.detail, explain(o)),
            None => panic!("case {name} missing\n{}", explain(o)),
        }
    }
    assert_eq!(tests.len(), names.len(), "{}", explain(o));
    assert!(o.protocol_errors.is_empty(), "{}", explain(o));
}
