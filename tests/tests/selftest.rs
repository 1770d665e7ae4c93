//! The in-guest self-test suite (`--run selftest`) on real vCPUs, checked
//! from its `Test` records: every case is reported, by name, and passes or
//! is skipped for a reason the CPU count justifies; the only WARNs are the
//! ones the suite triggers on purpose.

use smpcall_tests::{Scenario, Verdict, config, detail, explain, selftest, verdict};

/// Cases that need a second CPU to exercise their behaviour.
const NEED_A_SECOND_CPU: [&str; 2] = ["kick-all-cpus-sync", "irq-work-queue-on"];

#[test]
fn selftest_1_cpu() {
    let o = selftest(&config(1, Scenario::Selftest, ""), 1, false);
    for name in NEED_A_SECOND_CPU {
        assert_eq!(verdict(&o, name), Some(Verdict::Skip), "{}", explain(&o));
        assert_eq!(detail(&o, name), "needs 2 online CPUs");
    }
    // The JUnit report has one testcase per case record, verdicts kept.
    let tests = o.records.tests();
    let xml = vmm::junit::report(Scenario::Selftest, 1, &tests)
        .to_string()
        .expect("serializes");
    let back = quick_junit::Report::deserialize_from_str(&xml).expect("a JUnit reader accepts it");
    let [suite] = &back.test_suites[..] else {
        panic!("{back:?}")
    };
    assert_eq!(suite.name.as_str(), "smpcall selftest, 1 CPU");
    assert_eq!(suite.test_cases.len(), tests.len());
    let skipped = tests.iter().filter(|t| t.verdict == Verdict::Skip).count();
    assert_eq!((suite.skipped, suite.failures), (skipped, 0));
    for (case, t) in suite.test_cases.iter().zip(&tests) {
        assert_eq!(case.name.as_str(), t.name);
        let is_skip = matches!(case.status, quick_junit::TestCaseStatus::Skipped { .. });
        assert_eq!(is_skip, t.verdict == Verdict::Skip, "{}", t.name);
    }
}

#[test]
fn selftest_2_cpus() {
    let o = selftest(&config(2, Scenario::Selftest, ""), 2, false);
    for name in NEED_A_SECOND_CPU {
        assert_eq!(verdict(&o, name), Some(Verdict::Pass), "{}", explain(&o));
    }
    // The stall cases say how many stalls they provoked on purpose, and
    // the VMM's summary then calls every reported stall provoked.
    let stalls = o.records.csd_stalls();
    let provoked = o
        .records
        .counter(shared::record::PROVOKED_STALLS_COUNTER)
        .unwrap_or_else(|| panic!("no provoked-stalls counter\n{}", explain(&o)));
    assert!(
        provoked >= 1,
        "wait-iff-enqueued provokes one\n{}",
        explain(&o)
    );
    assert_eq!(provoked, stalls.len() as u64, "{}", explain(&o));
    let (line, explained) = vmm::stalls::summary(&stalls, Some(provoked));
    assert!(
        explained && line.contains("all provoked on purpose"),
        "{line}"
    );
}

#[test]
fn selftest_3_cpus() {
    selftest(&config(3, Scenario::Selftest, ""), 3, false);
}

#[test]
fn selftest_4_cpus() {
    selftest(&config(4, Scenario::Selftest, ""), 4, false);
}

#[test]
fn selftest_8_cpus() {
    let o = selftest(&config(8, Scenario::Selftest, ""), 8, false);
    assert!(
        detail(&o, "any-prefers-same-node").starts_with("one NUMA node"),
        "{}",
        explain(&o)
    );
}

#[test]
fn selftest_8_cpus_two_numa_nodes() {
    let mut c = config(8, Scenario::Selftest, "");
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
    let mut c = config(8, Scenario::Selftest, "");
    c.apic_stride = 3;
    selftest(&c, 8, false);
}

/// The wait scale the guest printed in its boot banner ("waits xN").
fn wait_scale(o: &vmm::Outcome) -> u64 {
    o.console
        .split("waits x")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wait scale in the banner\n{}", explain(o)))
}

/// 64 vCPUs on a host with far fewer cores: the start barriers of the
/// concurrency cases only pass because every wait scales with the CPU
/// count (at least 64 / 8). About 20 s.
#[test]
fn selftest_64_cpus() {
    let o = selftest(&config(64, Scenario::Selftest, ""), 64, false);
    assert!(wait_scale(&o) >= 8, "{}", explain(&o));
}

#[test]
fn selftest_with_present_cpus_left_offline() {
    // One online CPU, one present but never brought up: -ENXIO for an
    // offline CPU becomes checkable without a second online CPU.
    let o = selftest(&config(2, Scenario::Selftest, "maxcpus=1"), 1, true);
    assert!(
        detail(&o, "enxio-offline-cpu").contains("present, never brought up"),
        "{}",
        explain(&o)
    );
    let o = selftest(&config(4, Scenario::Selftest, "maxcpus=2"), 2, true);
    assert!(
        detail(&o, "many-skips-self-and-offline").contains("present, never brought up"),
        "{}",
        explain(&o)
    );
}

/// 255 vCPUs with APIC ids 0, 3, ..., 762 (past 255: x2APIC only, several
/// clusters): the same cases, the concurrency ones with fewer rounds and
/// calls per CPU above 64 CPUs.
#[test]
fn selftest_255_cpus_apic_stride_3() {
    let mut c = config(255, Scenario::Selftest, "");
    c.apic_stride = 3;
    let o = selftest(&c, 255, false);
    assert!(wait_scale(&o) >= 8, "{}", explain(&o));
}
