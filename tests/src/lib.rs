//! Helpers for the integration tests: boot a VM through the vmm library
//! and explain any failure with the whole guest console; the checks the
//! self-test and hotplug scenarios share wherever they are run.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

pub use shared::Scenario;
pub use shared::record::Verdict;
use shared::record::WarnKind;
use shared::status::{ExitCode, GuestStatus};
use vmm::{CaseCounts, Ending, Outcome, VmConfig};

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

/// Checks the skips of a run at `online` CPUs (and a spare offline present
/// CPU when `spare_offline`), from the records: each says what it needs,
/// and that is more than the run had.
#[track_caller]
pub fn assert_skips_justified(o: &Outcome, online: u32, spare_offline: bool) {
    for t in o.records.tests() {
        if t.verdict != Verdict::Skip {
            continue;
        }
        let why = &t.detail;
        let justified = if let Some(n) = why
            .strip_prefix("needs ")
            .and_then(|r| r.strip_suffix(" online CPUs"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            n > online
        } else if why == "needs 2 online CPUs or a present offline CPU" {
            online < 2 && !spare_offline
        } else {
            why.starts_with("needs an AP online") && online < 2
        };
        assert!(
            justified,
            "{} skipped at {online} online CPUs: {why:?}\n{}",
            t.name,
            explain(o)
        );
    }
}

/// Asserts every case of the run was reported once, with a detail, and
/// none failed; returns the counts by verdict.
#[track_caller]
pub fn assert_cases_ok(o: &Outcome) -> CaseCounts {
    let why = explain(o);
    let results = o.records.tests();
    let failed: Vec<String> = results
        .iter()
        .filter(|t| t.verdict == Verdict::Fail)
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
    let counts = CaseCounts::of(&results);
    assert!(counts.passed > 0, "no case passed\n{why}");
    counts
}

/// The verdict of case `name`, if it was reported.
pub fn verdict(o: &Outcome, name: &str) -> Option<Verdict> {
    o.records
        .tests()
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.verdict)
}

/// The case names the first self-test run of this test binary reported.
static SELFTEST_CASES: Mutex<Option<BTreeSet<String>>> = Mutex::new(None);

/// Runs the self-test scenario `c` (one at a time, see [`run_serial`]) and
/// checks, from its records, everything that does not depend on the
/// machine's shape beyond the online CPU count: every case reported once
/// with a detail, none failed, each skip justified by what it needs (and
/// none at 3 or more CPUs, where every case applies), the same cases as
/// every other self-test run of this test binary, only the WARNs the suite provokes, the stalls it provokes and
/// no other, no protocol error, and a successful exit.
pub fn selftest(c: &VmConfig, online: u32, spare_offline: bool) -> Outcome {
    let o = run_serial(c);
    let why = explain(&o);
    assert!(o.protocol_errors.is_empty(), "protocol errors\n{why}");
    let counts = assert_cases_ok(&o);
    assert_skips_justified(&o, online, spare_offline);
    if online >= 3 {
        assert_eq!(counts.skipped, 0, "skips with {online} CPUs\n{why}");
    } else {
        assert!(counts.skipped > 0, "no skip with {online} CPUs\n{why}");
    }
    // Every run reports every case, run or skipped: the same names as the
    // first run of this binary.
    let names: BTreeSet<String> = o.records.tests().into_iter().map(|t| t.name).collect();
    let first = SELFTEST_CASES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(|| names.clone())
        .clone();
    assert_eq!(names, first, "cases differ from an earlier run\n{why}");
    assert_success(&o);
    assert_eq!(o.exit_code(), ExitCode::Success, "{why}");
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

/// The detail line of test case `name`, empty if it was not reported.
pub fn detail(o: &Outcome, name: &str) -> String {
    o.records
        .tests()
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.detail)
        .unwrap_or_default()
}

/// Asserts a successful exit with every case reported passed (none
/// failed, none skipped), and no protocol error.
#[track_caller]
pub fn passed(o: &Outcome) {
    assert_success(o);
    let counts = assert_cases_ok(o);
    assert_eq!(counts.skipped, 0, "{}", explain(o));
    assert!(o.protocol_errors.is_empty(), "{}", explain(o));
}

/// The number after `key` in the console (first match):
/// decimal, or hex with `0x`.
pub fn console_number(console: &str, key: &str) -> Option<u64> {
    let at = console.find(key)? + key.len();
    let rest = console[at..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_hexdigit() && c != 'x')
        .unwrap_or(rest.len());
    let word = &rest[..end];
    match word.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => word.parse().ok(),
    }
}

/// What a traced demo says it ran: the callbacks in all, and the addresses
/// of its two traced callbacks (`say`, `irq_work_say`).
pub fn demo_callbacks(o: &Outcome) -> (u64, [u64; 2]) {
    let total = o
        .console
        .lines()
        .find(|l| l.contains(" demo callbacks ran"))
        .and_then(|l| console_number(l, "demo: "))
        .expect("the demo's total");
    let say = console_number(&o.console, "traced callbacks: say ").expect("say");
    let irq_say = console_number(&o.console, "irq_work_say ").expect("irq_work_say");
    (total, [say, irq_say])
}
