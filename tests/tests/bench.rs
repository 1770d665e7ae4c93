//! The IPI benchmark in its short mode (no timing is asserted: only that
//! every case ran or said why not, that the guest's own counts add up, and
//! that the JSON has every documented field), and the IPI delivery and
//! idle modes under the core's self-tests.

use serde_json::Value;
use shared::bench::Case;
use smpcall_tests::{
    Scenario, assert_console, assert_success, config, explain, passed, run, run_serial, selftest,
};
use vmm::bench::{Report, RunInfo, fanout_plot, plot};
use vmm::{Outcome, VmConfig};

fn bench(cpus: u32, cmdline: &str) -> (Outcome, Report) {
    let c = config(cpus, Scenario::Bench, &format!("bench_ms=10 {cmdline}"));
    let o = run(&c);
    assert_success(&o);
    assert!(o.protocol_errors.is_empty(), "{}", explain(&o));
    // A lost wake-up (an IPI skipped for a CPU that was not polling after
    // all) would end only through the stall detector's re-sent IPI.
    assert!(o.records.csd_stalls().is_empty(), "{}", explain(&o));
    let info = RunInfo {
        host: vmm::host::info(),
        vcpus: cpus,
        cmdline: c.guest_cmdline(),
        trace: c.tracing(),
        boot: Some(o.boot.since(o.boot.build_started)),
    };
    let r = Report::new(info, &o.bench);
    (o, r)
}

fn case<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["cases"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("case {name} missing: {json:#}"))
}

/// Every field README.md documents for schema `smpcall-bench/1`.
fn check_schema(v: &Value) {
    assert_eq!(v["schema"], "smpcall-bench/1");
    for k in ["cpu_model", "kvm_module", "nested", "emulated", "note"] {
        assert!(v["host"].get(k).is_some(), "host.{k}: {v:#}");
    }
    for k in ["vcpus", "pinned", "pinning", "tsc_khz", "cmdline"] {
        assert!(v["vm"].get(k).is_some(), "vm.{k}: {v:#}");
    }
    assert!(v.get("kvm_stats_error").is_some());
    let counters: Vec<&str> = v["kvm_counters"]
        .as_array()
        .expect("kvm_counters")
        .iter()
        .map(|c| c.as_str().expect("counter name"))
        .collect();
    for k in ["harness_per_op", "probe_overhead"] {
        for c in &counters {
            assert!(v["calibration"][k].get(*c).is_some(), "calibration.{k}.{c}");
        }
    }
    // A number when the KVM statistics have an exit counter, else null.
    let background = &v["calibration"]["background_exits_per_s"];
    assert_eq!(
        background.is_number(),
        counters.contains(&"exits"),
        "calibration.background_exits_per_s: {background}"
    );
    for c in v["cases"].as_array().expect("cases") {
        for k in [
            "name",
            "status",
            "ipi_mode",
            "idle_mode",
            "sender",
            "targets",
            "iterations",
            "samples",
            "cycles",
            "ns",
            "mean_ns",
            "ipis_sent_per_op",
            "ipis_skipped_per_op",
            "sender_background_exits_per_op",
            "vcpus",
            "probe",
        ] {
            assert!(c.get(k).is_some(), "case field {k}: {c:#}");
        }
        for p in ["cycles", "ns"] {
            for k in ["min", "p50", "p90", "p99", "max"] {
                assert!(c[p][k].is_number(), "{p}.{k}: {c:#}");
            }
        }
        for part in c["vcpus"].as_array().expect("vcpus") {
            assert!(part["cpu"].is_u64() && part["role"].is_string(), "{part:#}");
            for n in &counters {
                assert!(part["per_op"][*n].is_number(), "per_op.{n}: {part:#}");
            }
        }
        if !c["probe"].is_null() {
            assert!(c["probe"]["pairs"].as_u64() > Some(0), "{c:#}");
            for n in &counters {
                assert!(c["probe"]["section"][*n].is_number(), "probe.section.{n}");
            }
        }
        assert!(c["target_count"].is_u64(), "{c:#}");
    }
    for p in v["fanout"].as_array().expect("fanout") {
        for k in [
            "mode",
            "case",
            "status",
            "targets",
            "iterations",
            "ns",
            "mean_ns",
            "ipis_sent_per_op",
            "sender",
            "sender_window",
            "sender_send",
            "target_cpus",
            "targets_sum",
            "targets_mean",
        ] {
            assert!(p.get(k).is_some(), "fanout field {k}: {p:#}");
        }
        // Every target named, as many as counted.
        assert_eq!(
            p["target_cpus"].as_array().map(Vec::len),
            p["targets"].as_u64().map(|n| n as usize),
            "{p:#}"
        );
        // The send window: exact counts, never negative.
        if p["status"] == "ok" && !counters.is_empty() {
            let w = &p["sender_window"];
            assert!(w["calls"].as_u64() > Some(0), "{p:#}");
            for n in &counters {
                assert!(w["per_call"][*n].as_f64() >= Some(0.0), "{n}: {p:#}");
            }
        }
        // The send part, when measured (a call that sends no IPI has none):
        // the same, never negative.
        let sp = &p["sender_send"];
        if !sp.is_null() {
            assert!(sp["calls"].as_u64() > Some(0), "{p:#}");
            for n in &counters {
                assert!(sp["per_call"][*n].as_f64() >= Some(0.0), "{n}: {p:#}");
            }
        }
    }
    let modes: Vec<&str> = v["ipi_benchmark"]
        .as_array()
        .expect("ipi_benchmark")
        .iter()
        .map(|r| r["mode"].as_str().expect("mode"))
        .collect();
    assert_eq!(
        modes,
        ["dry_run", "self", "unicast", "broadcast", "broadcast_lock"]
    );
    for r in v["ipi_benchmark"].as_array().unwrap() {
        for k in [
            "case",
            "status",
            "ns_per_op",
            "p50_ns",
            "ipis_sent_per_op",
            "sender",
        ] {
            assert!(r.get(k).is_some(), "ipi_benchmark field {k}: {r:#}");
        }
    }
    for k in ["halted", "spinning"] {
        assert!(v["spin_vs_halt"].get(k).is_some(), "spin_vs_halt.{k}");
    }
    assert!(v.get("boot").is_some());
}

/// Every measured fan-out point (halted targets: every call sends its IPI)
/// has its send part, over as many probed calls as its send window, never
/// negative, and with fewer sender instructions than the whole call.
fn check_send_parts(v: &Value) {
    let counters: Vec<&str> = v["kvm_counters"]
        .as_array()
        .expect("kvm_counters")
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for p in v["fanout"].as_array().expect("fanout") {
        if p["status"] != "ok" || counters.is_empty() {
            continue;
        }
        let (w, sp) = (&p["sender_window"], &p["sender_send"]);
        assert!(sp.is_object(), "no send part: {p:#}");
        assert_eq!(sp["calls"], w["calls"], "{p:#}");
        for n in &counters {
            assert!(sp["per_call"][*n].as_f64() >= Some(0.0), "{n}: {p:#}");
        }
        if counters.contains(&"insn_emulation") && v["host"]["emulated"] == true {
            let insn = |x: &Value| x["per_call"]["insn_emulation"].as_f64().unwrap();
            assert!(insn(sp) < insn(w), "send part not inside the call: {p:#}");
        }
    }
}

#[test]
fn bench_at_16_cpus_draws_the_fanout_curve_and_the_ipi_benchmark_table() {
    let (o, r) = bench(16, "");
    let text = serde_json::to_string_pretty(&r.json()).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    check_schema(&v);
    check_send_parts(&v);
    let points = v["fanout"].as_array().unwrap();
    let curve = |mode: &str| -> Vec<u64> {
        points
            .iter()
            .filter(|p| p["mode"] == mode)
            .map(|p| {
                assert_eq!(p["status"], "ok", "{p:#}");
                // Exact counts: every point sent instructions and every
                // target took its IPI.
                assert!(p["sender"]["insn_emulation"].as_f64() > Some(0.0), "{p:#}");
                assert!(p["targets_sum"]["exits"].as_f64() > Some(0.0), "{p:#}");
                assert_eq!(p["case"], format!("fanout/{mode}"));
                p["targets"].as_u64().unwrap()
            })
            .collect()
    };
    assert_eq!(curve("phys"), [1, 2, 4, 8, 15], "{}", explain(&o));
    assert_eq!(curve("cluster"), [1, 2, 4, 8, 15], "{}", explain(&o));
    // The shorthand applies only to all others.
    assert_eq!(curve("shorthand"), [15], "{}", explain(&o));
    // A phys point sends one IPI per target (halted targets).
    for p in points.iter().filter(|p| p["mode"] == "phys") {
        assert_eq!(
            p["ipis_sent_per_op"],
            p["targets"].as_f64().unwrap(),
            "{p:#}"
        );
    }
    let rows = v["ipi_benchmark"].as_array().unwrap();
    let cases: Vec<&str> = rows.iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert_eq!(
        cases,
        [
            "dry-run",
            "single-local",
            "single-wait",
            "many-wait/phys",
            "many-wait/lock"
        ]
    );
    for r in rows {
        assert_eq!(r["status"], "ok", "{r:#}");
        assert!(r["ns_per_op"].as_f64() > Some(0.0), "{r:#}");
    }
    assert_eq!(rows[4]["ipis_sent_per_op"], 15.0);
    // Halted: the boot mode's single-wait; spinning: the polling target.
    assert_eq!(v["spin_vs_halt"]["halted"]["case"], "single-wait");
    assert_eq!(
        v["spin_vs_halt"]["spinning"]["case"],
        "single-wait/idle-poll"
    );
    // The bring-up curve: every CPU online, in order of time.
    let online = v["boot"]["online_ms"].as_array().unwrap();
    assert_eq!(online.len(), 16, "{:#}", v["boot"]);
    let times: Vec<f64> = online.iter().map(|t| t["ms"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(v["boot"]["per_ap_ms"].is_number());
    let table = r.table();
    assert!(
        table.contains("fan-out") && table.contains("ipi_benchmark"),
        "{table}"
    );
    let svg = fanout_plot::svg(&r);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("cluster"));
}

#[test]
fn bench_at_72_cpus_names_every_target_and_counts_the_send_window() {
    let (o, r) = bench(72, "");
    let text = serde_json::to_string_pretty(&r.json()).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    check_schema(&v);
    check_send_parts(&v);
    let cpus = |c: &Value| -> Vec<u64> {
        c.as_array()
            .unwrap_or_else(|| panic!("not a list: {c}"))
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect()
    };
    // Targets above 63 are named, in the cases and the fan-out curve.
    let others: Vec<u64> = (1..72).collect();
    for name in ["many-wait/phys", "many-wait/cluster", "many-wait/lock"] {
        let c = case(&v, name);
        assert_eq!(c["status"], "ok", "{c:#}\n{}", explain(&o));
        assert_eq!(cpus(&c["targets"]), others, "{name}");
        assert_eq!(c["target_count"], 71);
        let roles = c["vcpus"].as_array().unwrap();
        if !roles.is_empty() {
            let targets = roles.iter().filter(|p| p["role"] == "target").count();
            assert_eq!(targets, 71, "{name}");
        }
    }
    assert_eq!(
        cpus(&case(&v, "on-each-cpu")["targets"]),
        (0..72).collect::<Vec<u64>>()
    );
    let points = v["fanout"].as_array().unwrap();
    for mode in ["phys", "shorthand", "cluster"] {
        let last = points
            .iter()
            .rfind(|p| p["mode"] == mode)
            .unwrap_or_else(|| panic!("no {mode} point: {v:#}"));
        assert_eq!(last["status"], "ok", "{last:#}");
        assert_eq!(last["targets"], 71);
        assert_eq!(cpus(&last["target_cpus"]), others, "{mode}");
        if v["host"]["emulated"] == true && !v["kvm_counters"].as_array().unwrap().is_empty() {
            // The window holds the call itself: its instructions.
            let w = &last["sender_window"];
            assert!(
                w["per_call"]["insn_emulation"].as_f64() > Some(0.0),
                "{w:#}"
            );
        }
    }
}

#[test]
fn short_bench_at_4_cpus_reports_every_case_with_documented_json() {
    let (o, r) = bench(4, "");
    // Through text and back, as `--json` writes it.
    let text = serde_json::to_string_pretty(&r.json()).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    check_schema(&v);
    let rows: Vec<&str> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = Case::ALL
        .iter()
        .filter(|c| !c.is_internal() && !c.is_fanout())
        .map(|c| c.name())
        .collect();
    let mut sorted = rows.clone();
    sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted, "{}", explain(&o));
    for name in [
        "raw-ping",
        "single-wait",
        "single-async",
        "single-local",
        "irq-work-on",
    ] {
        let c = case(&v, name);
        assert_eq!(c["status"], "ok", "{c:#}");
        assert!(c["iterations"].as_u64() > Some(0));
        assert!(c["samples"].as_u64() <= c["iterations"].as_u64());
        assert!(c["ns"]["min"].as_f64() <= c["ns"]["p50"].as_f64());
        assert!(c["ns"]["p50"].as_f64() <= c["ns"]["max"].as_f64());
    }
    for (name, targets) in [
        ("many-wait/phys", 3),
        ("many-wait/shorthand", 3),
        ("many-wait/cluster", 3),
        ("many-wait/lock", 3),
        ("on-each-cpu", 4),
    ] {
        let c = case(&v, name);
        assert_eq!(c["status"], "ok", "{c:#}");
        assert_eq!(c["targets"].as_array().unwrap().len(), targets, "{c:#}");
    }
    // The guest's own IPI accounting: a halted target's empty queue gets
    // exactly one IPI per waiting call; a polling target is woken through
    // memory at least sometimes.
    assert_eq!(case(&v, "single-wait")["ipis_sent_per_op"], 1.0);
    assert_eq!(case(&v, "many-wait/phys")["ipis_sent_per_op"], 3.0);
    assert!(case(&v, "single-wait/idle-poll")["ipis_skipped_per_op"].as_f64() > Some(0.0));
    assert_eq!(case(&v, "single-wait/idle-halt")["status"], "skipped");
    // The send path was probed.
    assert!(!case(&v, "send-path")["probe"].is_null(), "{}", explain(&o));
    // Where it ran is stated.
    let table = r.table();
    assert!(
        table.contains("host:") && table.contains("KVM module"),
        "{table}"
    );
    assert!(table.contains("4 vCPUs"), "{table}");
    // The plot names every measured case and is one closed document.
    let svg = plot::svg(&r);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for c in r.cases.iter().filter(|c| !c.sorted_ns.is_empty()) {
        assert!(svg.contains(c.case.name()), "{}", c.case.name());
    }
}

#[test]
fn short_bench_at_1_cpu_skips_the_remote_cases() {
    let (_, r) = bench(1, "");
    let v = r.json();
    check_schema(&v);
    assert_eq!(case(&v, "single-local")["status"], "ok");
    for name in [
        "raw-ping",
        "single-wait",
        "many-wait/phys",
        "send-path",
        "irq-work-on",
    ] {
        assert_eq!(case(&v, name)["status"], "skipped", "{name}");
    }
}

#[test]
fn bench_with_polling_idle_sends_fewer_ipis() {
    let (o, r) = bench(2, "idle=poll");
    let v = r.json();
    check_schema(&v);
    let polled = case(&v, "single-wait");
    assert_eq!(polled["idle_mode"], "poll");
    assert!(
        polled["ipis_skipped_per_op"].as_f64() > Some(0.0),
        "{polled:#}"
    );
    let halted = case(&v, "single-wait/idle-halt");
    assert_eq!(halted["idle_mode"], "halt");
    assert_eq!(halted["ipis_sent_per_op"], 1.0, "{halted:#}");
    // The floor stays an IPI to a halted target: a spinning one would make
    // raw-ping measure the host's tick.
    let raw = case(&v, "raw-ping");
    assert_eq!(raw["idle_mode"], "halt", "{raw:#}");
    let console = &o.console;
    assert!(
        console.contains("raw-ping: CPU 1 halts when idle"),
        "{console}"
    );
}

/// The self-test suite and the hotplug scenario on `shape(scenario)`
/// with `cpus` vCPUs, held to the same checks as under the default modes
/// (exactly the cases that apply to the CPU count, each passed, only the
/// WARNs and stalls the suite provokes, no protocol error), so that a case
/// that silently became not applicable under a mode is caught. One VM at a
/// time, as in the self-test binary. Returns both outcomes.
fn mode_passes(cpus: u32, shape: impl Fn(Scenario) -> VmConfig) -> [Outcome; 2] {
    let st = selftest(&shape(Scenario::Selftest), cpus, false);
    let hp = run_serial(&shape(Scenario::Hotplug));
    passed(&hp);
    let outcomes = [st, hp];
    for o in &outcomes {
        assert_console(o, &format!("Brought up {cpus} CPUs"));
    }
    outcomes
}

/// 4 CPUs with APIC ids 0, 8, 16, 24: two x2APIC clusters.
fn four_cpus_two_clusters(scenario: Scenario, cmdline: &str) -> VmConfig {
    let mut c = config(4, scenario, cmdline);
    c.apic_stride = 8;
    c
}

fn mode_passes_selftest_and_hotplug(cmdline: &str, console_says: &str) {
    for o in mode_passes(4, |s| four_cpus_two_clusters(s, cmdline)) {
        assert_console(&o, console_says);
    }
}

#[test]
fn ipi_phys_passes_selftest_and_hotplug() {
    mode_passes_selftest_and_hotplug("ipi=phys", "Brought up 4 CPUs");
}

#[test]
fn ipi_shorthand_passes_selftest_and_hotplug() {
    mode_passes_selftest_and_hotplug("ipi=shorthand", "ipi=shorthand idle=halt");
}

#[test]
fn ipi_cluster_passes_selftest_and_hotplug() {
    mode_passes_selftest_and_hotplug("ipi=cluster", "ipi=cluster idle=halt");
}

#[test]
fn ipi_pv_falls_back_or_works_and_passes_selftest_and_hotplug() {
    // Here the hypercall never completes and the guest falls back to phys
    // with a console line; where it works the guest says ipi=pv.
    for o in mode_passes(4, |s| four_cpus_two_clusters(s, "ipi=pv")) {
        assert!(
            o.console.contains("ipi=pv: ") && o.console.contains("using ipi=phys")
                || o.console.contains("ipi=pv idle=halt"),
            "{}",
            explain(&o)
        );
    }
}

#[test]
fn idle_poll_passes_selftest_and_hotplug() {
    for o in mode_passes(3, |s| config(3, s, "idle=poll")) {
        assert_console(&o, "ipi=phys idle=poll");
    }
}
