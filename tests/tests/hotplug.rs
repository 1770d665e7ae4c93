//! CPU hotplug and the boot parameters on real vCPUs: guest-driven
//! down/up cycles, host-driven schedules, and the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use smpcall_tests::{
    Scenario, Verdict, assert_cases_ok, assert_console, assert_skips_justified, assert_success,
    config, explain, passed, run, sorted_online, verdict,
};
use vmm::Outcome;
use vmm::hotplug_driver::{Change, parse_schedule};

#[test]
fn guest_driven_hotplug_at_2_cpus() {
    passed(&run(&config(2, Scenario::Hotplug, "")));
}

#[test]
fn guest_driven_hotplug_at_4_cpus() {
    passed(&run(&config(4, Scenario::Hotplug, "")));
}

#[test]
fn guest_driven_hotplug_at_8_cpus_with_distinct_apic_ids() {
    let mut c = config(8, Scenario::Hotplug, "");
    c.apic_stride = 2;
    passed(&run(&c));
}

fn boot_params(cmdline: &str, cpus: u32, brought_up: u32) -> Outcome {
    let o = run(&config(cpus, Scenario::Hotplug, cmdline));
    if brought_up > 1 {
        passed(&o);
    } else {
        // Only the boot-parameter case applies; the AP cases are skipped.
        assert_success(&o);
        let counts = assert_cases_ok(&o);
        assert_skips_justified(&o, brought_up, false);
        assert!(counts.skipped > 0, "{}", explain(&o));
        assert_eq!(
            verdict(&o, "boot-params-applied"),
            Some(Verdict::Pass),
            "{}",
            explain(&o)
        );
    }
    assert_console(&o, &format!("Brought up {brought_up} CPUs"));
    o
}

#[test]
fn nosmp_brings_up_no_ap() {
    boot_params("nosmp", 4, 1);
}

#[test]
fn maxcpus_0_disables_smp() {
    boot_params("maxcpus=0", 4, 1);
}

#[test]
fn nr_cpus_limits_possible_cpus() {
    let o = boot_params("nr_cpus=3", 8, 3);
    assert_console(&o, "nr_cpu_ids 3");
}

#[test]
fn nr_cpus_larger_than_possible_is_ignored() {
    let o = boot_params("nr_cpus=99", 4, 4);
    assert_console(&o, "nr_cpu_ids 4");
}

#[test]
fn maxcpus_leaves_present_cpus_offline() {
    boot_params("maxcpus=2", 6, 2);
}

#[test]
fn malformed_values_keep_defaults() {
    let o = boot_params("maxcpus=abc nr_cpus= maxcpus=-2", 3, 3);
    assert_console(&o, "warning: maxcpus=abc");
}

fn schedule(cpus: u32, cmdline: &str, spec: &str) -> Outcome {
    let mut c = config(cpus, Scenario::Wait, cmdline);
    c.hotplug = parse_schedule(spec, cpus).unwrap();
    run(&c)
}

fn event_results(o: &Outcome) -> Vec<(Change, u32, i32)> {
    o.hotplug
        .iter()
        .map(|e| {
            let r = e
                .result
                .clone()
                .unwrap_or_else(|err| panic!("{err}\n{}", explain(o)));
            (e.change, e.cpu, r)
        })
        .collect()
}

#[test]
fn maxcpus_2_then_the_other_four_at_run_time() {
    let o = schedule(6, "maxcpus=2", "0ms:on 2; 0ms:on 3; 0ms:on 4; 0ms:on 5");
    assert_success(&o);
    assert_console(&o, "Brought up 2 CPUs");
    assert!(
        o.hotplug.iter().all(|e| e.ok()),
        "{:?}\n{}",
        o.hotplug,
        explain(&o)
    );
    assert_eq!(o.hotplug.len(), 4);
    assert_console(&o, "6 CPUs online: 0-5");
    assert_eq!(sorted_online(&o), [0, 1, 2, 3, 4, 5], "{}", explain(&o));
}

#[test]
fn schedule_takes_cpus_down_and_up_and_refuses_bad_changes() {
    let mut c = config(4, Scenario::Wait, "");
    c.hotplug = parse_schedule(
        "10ms:off 3; 20ms:off 3; 30ms:on 3; 40ms:on 3; 60ms:off 2; 70ms:off 1",
        4,
    )
    .unwrap();
    // `--hotplug` refuses CPU 0 when parsed; the guest must refuse it too.
    c.hotplug.push(vmm::hotplug_driver::Step {
        at: Duration::from_millis(50),
        change: Change::Offline,
        cpu: 0,
    });
    c.hotplug.sort_by_key(|s| s.at);
    let o = run(&c);
    assert_success(&o);
    use Change::{Offline, Online};
    assert_eq!(
        event_results(&o),
        [
            (Offline, 3, 0),
            (Offline, 3, -114),
            (Online, 3, 0),
            (Online, 3, -114),
            (Offline, 0, -22),
            (Offline, 2, 0),
            (Offline, 1, 0),
        ],
        "{}",
        explain(&o)
    );
    assert_console(&o, "2 CPUs online: 0,3");
}

#[test]
fn nosmp_cpus_cannot_be_brought_up() {
    let o = schedule(3, "nosmp", "0ms:on 1");
    assert_eq!(
        event_results(&o),
        [(Change::Online, 1, -22)],
        "{}",
        explain(&o)
    );
    // The refusal leaves the guest healthy: the host's finish request ends
    // the wait with only the boot CPU online.
    assert_success(&o);
    assert_console(&o, "Brought up 1 CPUs");
    assert_console(&o, "1 CPUs online: 0\n");
    assert_eq!(sorted_online(&o), [0], "{}", explain(&o));
}

#[test]
fn control_socket_answers_good_and_bad_requests() {
    let path = std::env::temp_dir().join(format!("smpcall-api-{}.sock", std::process::id()));
    let mut c = config(4, Scenario::Wait, "");
    c.api_sock = Some(path.clone());
    let vm = std::thread::spawn(move || run(&c));
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot connect to {}: {e}", path.display()),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut ask = |line: &str| -> serde_json::Value {
        writeln!(writer, "{line}").unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
    };
    let ok = |v: &serde_json::Value| v["ok"] == serde_json::Value::Bool(true);
    assert!(ok(&ask(r#"{"cpu":3,"state":"offline"}"#)));
    let again = ask(r#"{"cpu":3,"state":"offline"}"#);
    assert!(!ok(&again) && again["error"].as_str().unwrap().contains("already offline"));
    let boot = ask(r#"{"cpu":0,"state":"offline"}"#);
    assert!(!ok(&boot) && boot["error"].as_str().unwrap().contains("boot CPU"));
    let unknown = ask(r#"{"cpu":17,"state":"offline"}"#);
    assert!(
        !ok(&unknown)
            && unknown["error"]
                .as_str()
                .unwrap()
                .contains("does not exist")
    );
    assert!(!ok(&ask("this is not json")));
    assert!(!ok(&ask(r#"{"cpu":1,"state":"sideways"}"#)));
    let huge = ask(&"x".repeat(3 << 20));
    assert!(!ok(&huge) && huge["error"].as_str().unwrap().contains("longer than"));
    let stats = ask(r#"{"stats":true}"#);
    assert!(ok(&stats), "{stats}");
    let cpus = stats["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), 4);
    assert_eq!(cpus[3]["online"], serde_json::Value::Bool(false));
    assert_eq!(cpus[2]["online"], serde_json::Value::Bool(true));
    assert!(ok(&ask(r#"{"cpu":3,"state":"online"}"#)));
    assert!(ok(&ask(r#"{"exit":true}"#)));
    let o = vm.join().unwrap();
    assert_success(&o);
    assert_console(&o, "4 CPUs online: 0-3");
    assert!(!path.exists(), "the socket file is removed at exit");
}

#[test]
fn failed_prepare_cancels_the_bring_up() {
    let o = run(&config(4, Scenario::Demo, "fail_prepare=2"));
    assert_success(&o);
    assert_console(
        &o,
        "CPU 2: preparing its call data failed; bring-up cancelled",
    );
    assert_console(&o, "Brought up 3 CPUs");
    assert_eq!(sorted_online(&o), [0, 1, 3], "{}", explain(&o));
}

#[test]
fn an_ap_that_does_not_come_up_is_cancelled_and_can_be_retried() {
    // CPU 1 hangs during its start; after the timeout the boot CPU sends it
    // INIT (back to wait-for-SIPI) and goes on with CPU 2. A later online
    // request for CPU 1 times out the same way and is refused (-EIO), and
    // the VM stays healthy.
    let mut c = config(3, Scenario::Wait, "stuck_ap=1 ap_timeout_ms=200");
    c.hotplug = parse_schedule("0ms:on 1; 0ms:off 2; 0ms:on 2", 3).unwrap();
    let o = run(&c);
    assert_success(&o);
    // The guest prints its scaled deadline (ap_timeout_ms times the
    // host-speed factor), which a loaded host can raise: no number here.
    assert_console(&o, "CPU 1 (APIC id 0x1) did not come online within ");
    assert_console(&o, "Brought up 2 CPUs");
    use Change::{Offline, Online};
    assert_eq!(
        event_results(&o),
        [(Online, 1, -5), (Offline, 2, 0), (Online, 2, 0)],
        "{}",
        explain(&o)
    );
    let dumps_ok = o.dumps.is_empty();
    assert!(dumps_ok, "{}", explain(&o));
}
