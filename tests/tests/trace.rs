//! The guest's trace rings (`shared::trace`), read from the raw bytes the
//! VMM copies out at the end of the run.

use std::collections::HashMap;

use shared::status::ExitCode;
use shared::trace::{self, Entry, TraceEventId};
use smpcall_tests::{demo_callbacks, explain, run};
use vmm::config::VmConfig;

#[test]
fn demo_rings_hold_every_callback_whole_and_in_tsc_order() {
    let mut c = VmConfig::with_cpus(4);
    c.trace_rings = true;
    let o = run(&c);
    assert_eq!(o.exit_code(), ExitCode::Success, "{}", explain(&o));
    let snap = o.trace.as_ref().expect("tracing was on");
    assert_eq!(snap.region.cpus, 4);
    assert_eq!(
        snap.region.ring_bytes,
        trace::ring_bytes(trace::DEFAULT_RING_KIB)
    );
    let (total, [say, irq_say]) = demo_callbacks(&o);

    let mut per_event: HashMap<TraceEventId, u64> = HashMap::new();
    let mut demo_callbacks = 0;
    for cpu in 0..snap.region.cpus {
        let ring = snap.ring(cpu);
        let head = trace::read_head(ring);
        assert!(head > 0, "CPU {cpu} wrote no event");
        assert!(
            head <= trace::capacity(snap.region.ring_bytes),
            "the demo fits the ring"
        );
        let entries: Vec<Entry> = trace::entries(ring, snap.region.ring_bytes)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("CPU {cpu}: an entry is not whole: {e:?}"));
        assert_eq!(entries.len() as u64, head);
        let mut last_tsc = 0;
        for e in &entries {
            assert_eq!(u32::from(e.cpu), cpu, "written by its own CPU");
            assert!(e.tsc >= last_tsc, "CPU {cpu}: TSC went backwards");
            last_tsc = e.tsc;
            let id = e.event_id().unwrap_or_else(|n| panic!("unknown event {n}"));
            *per_event.entry(id).or_default() += 1;
            if id == TraceEventId::CsdFunctionEntry && (e.args[0] == say || e.args[0] == irq_say) {
                demo_callbacks += 1;
            }
        }
    }
    assert_eq!(demo_callbacks, total, "{per_event:?}\n{}", o.console);
    let n = |id| per_event.get(&id).copied().unwrap_or(0);
    use TraceEventId as E;
    assert_eq!(n(E::CsdFunctionEntry), n(E::CsdFunctionExit));
    assert_eq!(n(E::CallFunctionEntry), n(E::CallFunctionExit));
    assert_eq!(n(E::CallFunctionSingleEntry), n(E::CallFunctionSingleExit));
    assert_eq!(n(E::CsdLockWaitStart), n(E::CsdLockWaitEnd));
    // 4 CPUs: the mask calls send mask IPIs, the single calls single ones,
    // and every csd queued is one csd_queue_cpu.
    assert!(n(E::IpiSendCpumask) > 0 && n(E::IpiSendCpu) > 0);
    assert!(n(E::CsdQueueCpu) >= n(E::IpiSendCpu));
    // The APs' bring-up: prepare on the boot CPU, once per AP.
    assert!(n(E::CpuhpEnter) >= 3);
}

#[test]
fn tracing_off_reserves_nothing_and_boots_the_untraced_guest() {
    let o = run(&VmConfig::with_cpus(2));
    assert_eq!(o.exit_code(), ExitCode::Success, "{}", explain(&o));
    assert!(o.trace.is_none());
    assert!(!o.console.contains("traced callbacks"));
    assert_ne!(vmm::EMBEDDED_GUEST, vmm::EMBEDDED_GUEST_TRACED);
}
