//! `--trace` and the flight recorder, end to end: the Perfetto trace
//! decoded with an independent decoder built from Perfetto's own schema
//! (`perfetto_protos`), the text form, a stall's and a crash's reports.

use std::collections::HashMap;
use std::time::Duration;

use perfetto_protos::debug_annotation::DebugAnnotation;
use perfetto_protos::trace::Trace;
use perfetto_protos::track_event::track_event::Type;
use protobuf::Message;
use shared::Scenario;
use shared::status::ExitCode;
use smpcall_tests::{config, demo_callbacks, explain, run};
use vmm::config::VmConfig;
use vmm::trace::{Format, render};

/// The demo on 4 traced vCPUs, and what the guest says it ran: the
/// callbacks in all, and the two demo callbacks' addresses.
fn traced_demo() -> (vmm::Outcome, u64, [u64; 2]) {
    let mut c = VmConfig::with_cpus(4);
    c.trace_rings = true;
    let o = run(&c);
    assert_eq!(o.exit_code(), ExitCode::Success, "{}", explain(&o));
    let (total, [say, irq_say]) = demo_callbacks(&o);
    (o, total, [say, irq_say])
}

fn annotation<'a>(a: &'a [DebugAnnotation], name: &str) -> Option<&'a DebugAnnotation> {
    a.iter().find(|d| d.name() == name)
}

#[test]
fn demo_perfetto_trace_decodes_with_perfettos_own_schema() {
    let (o, total, callbacks) = traced_demo();
    let bytes = render(&o, Format::Perfetto);
    let trace = Trace::parse_from_bytes(&bytes).expect("the trace decodes");
    assert!(trace.packet.len() > 10);

    let mut tracks: HashMap<u64, String> = HashMap::new();
    let mut last_ts: HashMap<u64, u64> = HashMap::new();
    let mut flow_starts: HashMap<u64, u32> = HashMap::new();
    let mut flow_ends: HashMap<u64, u32> = HashMap::new();
    let mut demo_slices = 0;
    let mut seq_ids = std::collections::HashSet::new();
    for (i, p) in trace.packet.iter().enumerate() {
        // Every field we write is one Perfetto knows (right numbers).
        assert!(
            p.special_fields.unknown_fields().iter().next().is_none(),
            "packet {i}: {p:?}"
        );
        seq_ids.insert(p.trusted_packet_sequence_id());
        if i == 0 {
            assert!(p.first_packet_on_sequence());
            assert_eq!(p.sequence_flags(), 1, "SEQ_INCREMENTAL_STATE_CLEARED");
        }
        if p.has_track_descriptor() {
            let d = p.track_descriptor();
            assert!(d.special_fields.unknown_fields().iter().next().is_none());
            assert!(tracks.insert(d.uuid(), d.name().to_string()).is_none());
            continue;
        }
        assert!(
            p.has_track_event(),
            "packet {i} is a descriptor or an event"
        );
        let e = p.track_event();
        assert!(
            e.special_fields.unknown_fields().iter().next().is_none(),
            "{e:?}"
        );
        assert!(
            tracks.contains_key(&e.track_uuid()),
            "event on a described track"
        );
        let last = last_ts.entry(e.track_uuid()).or_default();
        assert!(
            p.timestamp() >= *last,
            "track {} goes back in time",
            e.track_uuid()
        );
        *last = p.timestamp();
        for id in &e.flow_ids {
            *flow_starts.entry(*id).or_default() += 1;
        }
        for id in &e.terminating_flow_ids {
            *flow_ends.entry(*id).or_default() += 1;
        }
        if e.type_() == Type::TYPE_SLICE_BEGIN
            && let Some(f) = annotation(&e.debug_annotations, "func_addr")
            && annotation(&e.debug_annotations, "event").map(|a| a.string_value())
                == Some("csd_function_entry")
            && callbacks.contains(&f.pointer_value())
        {
            demo_slices += 1;
        }
    }
    assert_eq!(seq_ids.len(), 1, "one sequence");
    let names: Vec<&str> = tracks.values().map(String::as_str).collect();
    for cpu in 0..4 {
        assert!(names.contains(&format!("vCPU {cpu}").as_str()), "{names:?}");
        assert!(
            names.contains(&format!("vCPU {cpu} VM exits").as_str()),
            "{names:?}"
        );
    }
    assert!(names.contains(&"VMM"), "{names:?}");
    assert!(!flow_starts.is_empty(), "the demo's calls have flows");
    assert_eq!(
        flow_starts
            .keys()
            .collect::<std::collections::BTreeSet<_>>(),
        flow_ends.keys().collect(),
        "every flow has both ends"
    );
    assert!(
        flow_starts
            .values()
            .chain(flow_ends.values())
            .all(|&n| n == 1)
    );
    assert_eq!(
        demo_slices, total,
        "one callback slice per callback the guest ran"
    );
}

#[test]
fn demo_text_trace_has_one_line_per_callback() {
    let (o, total, [say, irq_say]) = traced_demo();
    let text = String::from_utf8(render(&o, Format::Text)).unwrap();
    let (say, irq_say) = (
        format!("func={} ", o.symbols.at(say)),
        format!("func={} ", o.symbols.at(irq_say)),
    );
    assert!(say.contains("say"), "the callback is named: {say}");
    let lines = text
        .lines()
        .filter(|l| l.contains(": csd_function_entry: "))
        .filter(|l| l.contains(&say) || l.contains(&irq_say))
        .count() as u64;
    assert_eq!(lines, total, "{text}");
    // The csd-lock waits name the csd's function (shared::trace's
    // contract), as the callbacks do.
    let waits: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": csd_lock_wait_"))
        .collect();
    assert!(!waits.is_empty(), "the demo's calls wait: {text}");
    for l in &waits {
        assert!(l.contains(" func=guest::"), "{l}");
    }
    // ftrace's shape: `vcpuN [00N] secs.ns: event: fields`.
    let first = text.lines().next().expect("a line");
    let words: Vec<&str> = first.split_whitespace().collect();
    assert!(
        words[0].starts_with("vcpu") && words[1].starts_with("[00"),
        "{first}"
    );
    assert!(words[2].ends_with(':') && words[2].contains('.'), "{first}");
}

#[test]
fn a_stall_prints_a_flight_report_naming_the_callback() {
    let mut c = config(4, Scenario::Torture, "csd_lock_timeout=200");
    c.trace_rings = true;
    c.duration = Some(Duration::from_secs(2));
    c.faults = vec![vmm::fault::Fault::parse("stall:2:3000").unwrap()];
    let o = run(&c);
    let flight = o.timeline.flight.join("");
    // The report for the stalled CPU 2 (with a 200 ms timeout a loaded
    // host can also make another vCPU late enough for a report of its own).
    let stall = o
        .timeline
        .flight
        .iter()
        .find(|r| {
            let title = r.lines().next().unwrap_or("");
            title.starts_with("flight recorder: csd-lock stall")
                && title.contains(" waiting for CPU 2 to run ")
        })
        .unwrap_or_else(|| panic!("no stall report for CPU 2:\n{flight}\n{}", explain(&o)));
    // The title names the callback, not its address.
    let title = stall.lines().next().unwrap();
    let callback = title.split(" to run ").nth(1).unwrap_or("");
    assert!(callback.starts_with("guest::"), "{title}");
    // The waiter's and the target's last events, each line symbolized.
    assert!(stall.contains("  CPU 2: last"), "{stall}");
    assert!(
        stall.lines().filter(|l| l.starts_with("    ")).count() >= 2,
        "{stall}"
    );
    let stalls = o.records.csd_stalls();
    assert!(
        stalls
            .iter()
            .any(|s| s.line(&o.symbols).contains("to run guest::")),
        "{stalls:?}"
    );
}

#[test]
fn a_crash_names_the_crashing_function() {
    let mut c = config(2, Scenario::Demo, "crash=pf");
    c.trace_rings = true;
    let o = run(&c);
    assert_eq!(o.exit_code(), ExitCode::Crashed, "{}", explain(&o));
    let d = o.diagnosis();
    let line = d
        .lines()
        .find(|l| l.contains("exception 14"))
        .unwrap_or_else(|| panic!("{d}"));
    let after_rip = line.split(" at RIP ").nth(1).unwrap_or("");
    assert!(after_rip.contains(" guest::"), "{line}");
    let report = o
        .timeline
        .flight
        .iter()
        .find(|r| r.contains("exception 14"))
        .unwrap_or_else(|| panic!("{:?}", o.timeline.flight));
    assert!(report.contains("at guest::"), "{report}");
}

#[test]
fn a_watchdog_timeout_reports_every_cpu_and_its_trace_decodes() {
    // The invokers wait for vCPU 2, stopped past the watchdog's timeout.
    let mut c = config(4, Scenario::Torture, "");
    c.trace_rings = true;
    c.duration = Some(Duration::from_secs(1));
    c.timeout = smpcall_tests::SHORT_TIMEOUT;
    c.faults = vec![vmm::fault::Fault::parse("stall:2:8000").unwrap()];
    let o = run(&c);
    assert_eq!(o.exit_code(), ExitCode::Timeout, "{}", explain(&o));
    let report = o
        .timeline
        .flight
        .iter()
        .find(|r| r.starts_with("flight recorder: watchdog"))
        .unwrap_or_else(|| panic!("{:?}\n{}", o.timeline.flight, explain(&o)));
    for cpu in 0..4 {
        assert!(
            report.contains(&format!("\n  CPU {cpu}: last ")),
            "{report}"
        );
    }
    let funcs: Vec<&str> = report
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("func="))
        .collect();
    assert!(!funcs.is_empty(), "{report}");
    assert!(funcs.iter().all(|f| f.starts_with("guest::")), "{report}");

    // The trace of a run that ended badly decodes with Perfetto's schema,
    // with the watchdog on the VMM's track.
    let trace = Trace::parse_from_bytes(&render(&o, Format::Perfetto)).expect("decodes");
    let vmm_track = trace
        .packet
        .iter()
        .filter(|p| p.has_track_descriptor())
        .map(|p| p.track_descriptor())
        .find(|d| d.name() == "VMM")
        .map(|d| d.uuid())
        .expect("a VMM track");
    let watchdog = trace
        .packet
        .iter()
        .filter(|p| p.has_track_event())
        .map(|p| p.track_event())
        .find(|e| e.name() == "watchdog")
        .expect("the watchdog event");
    assert_eq!(watchdog.track_uuid(), vmm_track);
    let callbacks = trace
        .packet
        .iter()
        .filter(|p| p.has_track_event())
        .filter(|p| {
            annotation(&p.track_event().debug_annotations, "event").map(|a| a.string_value())
                == Some("csd_function_entry")
        })
        .count();
    assert!(callbacks > 0, "the torture's callbacks are in it");
}
