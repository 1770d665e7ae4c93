//! The command line: documented exit codes, one clear line on bad input.

use std::process::{Command, Output};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .output()
        .expect("run vmm")
}

fn usage_error(args: &[&str], want: &str) {
    if let Some(problem) = check_rejected(args, want) {
        panic!("{problem}");
    }
}

#[test]
fn help_documents_exit_codes() {
    let out = vmm(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--cpus",
        "--kernel",
        "--run",
        "--timeout",
        "Exit codes",
        "4  timeout",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    usage_error(&["--cpus", "0"], "--cpus must be at least 1");
    usage_error(&["--cpus", "-3"], "'-3'");
    usage_error(&["--cpus", "many"], "--cpus");
    usage_error(&["--cpus", "100000"], "--cpus 100000: ");
    usage_error(&["--mem", "0"], "--mem");
    usage_error(&["--timeout", "0"], "--timeout");
    usage_error(&["--timeout", "nan"], "--timeout");
    usage_error(&["--numa", "0-3", "--cpus", "8"], "--numa");
    usage_error(&["--run", "a;b"], "--run");
    usage_error(&["--apic-stride", "0"], "--apic-stride");
    usage_error(&["--kernel", "/nonexistent"], "--kernel /nonexistent");
    usage_error(&["--cmdline", &"x".repeat(5000)], "--cmdline");
    usage_error(&["--bogus"], "--bogus");
}

/// The one line of a refused run.
fn refused(args: &[&str]) -> String {
    let out = vmm(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    err
}

#[test]
fn cpus_above_the_limit_exit_2_naming_whose_limit_it_is() {
    let kvm = vmm::vm::open_kvm(std::path::Path::new(vmm::vm::KVM_DEVICE)).expect("/dev/kvm");
    let limit = vmm::vm::CpuLimit::host(&kvm, 1);
    for n in [limit.max + 1, 1025.max(limit.max + 1)] {
        let err = refused(&["--cpus", &n.to_string()]);
        assert!(
            err.contains(&format!("--cpus {n}: {limit}")),
            "{err:?} does not name {limit}"
        );
    }
    // With a stride, the APIC ids run out first on a small KVM_CAP_MAX_VCPU_ID.
    let strided = vmm::vm::CpuLimit::host(&kvm, 16);
    let err = refused(&[
        "--cpus",
        &(strided.max + 1).to_string(),
        "--apic-stride",
        "16",
    ]);
    assert!(err.contains(&strided.to_string()), "{err:?}");
}

#[test]
fn memory_too_small_for_the_cpus_is_refused_naming_the_amount() {
    let err = refused(&["--cpus", "8", "--mem", "4", "--quiet"]);
    assert!(
        err.contains("--mem 4 MiB is too small") && err.contains("8 CPUs"),
        "{err}"
    );
    let need: u64 = err
        .split("at least ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no amount in {err:?}"));
    // The amount named is enough.
    let out = vmm(&["--cpus", "8", "--mem", &need.to_string(), "--quiet"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn boots_and_exits_0() {
    let out = vmm(&["--cpus", "2", "--quiet"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vmm(&["--cpus", "2"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Brought up 2 CPUs"));
}

#[test]
fn crash_exits_3_and_hang_exits_4() {
    let out = vmm(&["--cpus", "1", "--cmdline", "crash=ud", "--quiet"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exception 6"));
    let out = vmm(&[
        "--cpus",
        "2",
        "--cmdline",
        "hang",
        "--timeout",
        "1",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timeout") && err.contains("vCPU 1"), "{err}");
}

/// Runs `args`; it must exit 2 with exactly one line on stderr, starting
/// `vmm: ` and containing `want`, without running a VM (nothing on
/// stdout). Returns what is wrong, if anything.
fn check_rejected(args: &[&str], want: &str) -> Option<String> {
    let out = vmm(args);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let one = match lines[..] {
        [line] => line.starts_with("vmm: ") && line.contains(want),
        _ => false,
    };
    if out.status.code() != Some(2) || !one || !out.stdout.is_empty() {
        return Some(format!(
            "{args:?}: exit {:?}, stderr {err:?}, stdout {} bytes; wanted one line with {want:?}",
            out.status.code(),
            out.stdout.len()
        ));
    }
    None
}

fn rejected(args: &[&str], want: &str) {
    if let Some(problem) = check_rejected(args, want) {
        panic!("{problem}");
    }
}

#[test]
fn every_argument_rejects_invalid_values() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let regular = dir.join("cli-not-a-socket");
    std::fs::write(&regular, b"x").expect("temp file");
    let regular = regular.to_string_lossy().into_owned();
    let sparse = dir.join("cli-sparse-kernel");
    std::fs::File::create(&sparse)
        .and_then(|f| f.set_len(20 << 30))
        .expect("sparse file");
    let sparse = sparse.to_string_lossy().into_owned();
    let dir_s = dir.to_string_lossy().into_owned();
    let same = dir.join("cli-same.json").to_string_lossy().into_owned();
    let same_again = dir.join(".").join("cli-same.json");
    let same_again = same_again.to_string_lossy().into_owned();
    let cases: &[(&[&str], &str)] = &[
        (&["--cpus", "0"], "--cpus must be at least 1"),
        (&["--cpus=-3"], "--cpus"),
        (&["--cpus", "-3"], "'--cpus <N>': must not be negative"),
        (&["--cpus", "-1"], "'--cpus <N>': must not be negative"),
        (&["--cpus", "+2"], "'--cpus <N>': not a whole number"),
        (&["--cpus"], "--cpus"),
        (&["--cpus", "many"], "--cpus"),
        (&["--cpus", ""], "--cpus"),
        (&["--cpus", "1025"], "at most 1024"),
        (&["--cpus", "4294967296"], "--cpus"),
        (&["--mem", "0"], "--mem 0 MiB is too small"),
        (&["--mem", "1"], "--mem 1 MiB is too small"),
        (&["--mem=-1"], "--mem"),
        (&["--mem", "-1"], "'--mem <MIB>': must not be negative"),
        (&["--mem", "abc"], "--mem"),
        (&["--mem", "1025"], "--mem 1025 MiB is too large"),
        (&["--mem", "18446744073709551615"], "is too large"),
        (&["--cmdline", &"x".repeat(5000)], "--cmdline is 5"),
        (&["--kernel", "/nonexistent"], "--kernel /nonexistent"),
        (
            &["--kernel", "/"],
            "--kernel /: not a regular file (a directory)",
        ),
        (
            &["--kernel", "/dev/null"],
            "not a regular file (a character device)",
        ),
        (
            &["--kernel", "/dev/zero"],
            "--kernel /dev/zero: not a regular file",
        ),
        (
            &["--kernel", &sparse],
            "21474836480 bytes is larger than guest memory",
        ),
        (&["--kernel", &regular], "not an ELF file"),
        (&["--run", ""], "--run"),
        (&["--run", "a;b"], "--run"),
        (&["--run", "a b"], "--run"),
        (&["--run", "ünïcode"], "--run"),
        (&["--run", "Demo"], "unknown scenario"),
        (&["--cmdline", "run=selftest"], "--cmdline run=selftest"),
        (&["--cmdline", "maxcpus=1 run"], "--cmdline run="),
        (&["--timeout", "0"], "--timeout"),
        (&["--timeout=-1"], "--timeout"),
        (&["--timeout", "-1"], "--timeout -1: must be more than 0"),
        (&["--timeout", "nan"], "--timeout"),
        (&["--timeout", "inf"], "--timeout"),
        (&["--timeout", "1e9"], "--timeout"),
        (&["--timeout", "soon"], "--timeout"),
        (&["--numa", "0-3", "--cpus", "8"], "--numa"),
        (&["--numa", "a", "--cpus", "2"], "--numa"),
        (&["--numa", "1-0", "--cpus", "2"], "backwards"),
        (&["--numa", "0-1,1-2", "--cpus", "3"], "in two nodes"),
        (&["--numa", "", "--cpus", "2"], "--numa"),
        (&["--apic-stride", "0"], "--apic-stride"),
        (&["--apic-stride", "17"], "--apic-stride 17"),
        (&["--apic-stride=-1"], "--apic-stride"),
        (&["--apic-stride", "-1"], "--apic-stride"),
        (&["--hotplug", ""], "--hotplug"),
        (&["--hotplug", "100ms"], "--hotplug"),
        (&["--hotplug", "x:off 1", "--cpus", "2"], "bad time"),
        (
            &["--hotplug", "10ms:off 9", "--cpus", "2"],
            "does not exist",
        ),
        (&["--hotplug", "10ms:up 1", "--cpus", "2"], "'off' or 'on'"),
        (
            &["--hotplug", "100ms:off 0", "--cpus", "2"],
            "CPU 0 (the boot CPU)",
        ),
        (
            &["--hotplug", "100ms:off 4", "--cpus", "4"],
            "CPU 4 does not exist",
        ),
        (&["--hotplug", "100:off 3", "--cpus", "4"], "needs a unit"),
        (
            &["--hotplug", "1.5s:off 3", "--cpus", "4"],
            "whole numbers only",
        ),
        (&["--hotplug-churn", "0"], "--hotplug-churn"),
        (&["--hotplug-churn=-5"], "--hotplug-churn"),
        (&["--hotplug-churn", "-5"], "--hotplug-churn"),
        (&["--hotplug-churn", "often"], "--hotplug-churn"),
        (
            &["--api-sock", "/nonexistent-dir/vmm.sock", "--quiet"],
            "--api-sock /nonexistent-dir/vmm.sock",
        ),
        (&["--api-sock", &regular, "--quiet"], "not a socket"),
        (&["--duration", "0", "--run", "torture"], "--duration"),
        (&["--duration=-1"], "--duration"),
        (
            &["--duration", "-1", "--run", "torture"],
            "--duration -1: must be more than 0",
        ),
        (&["--duration", "nan"], "--duration"),
        (&["--duration", "long"], "--duration"),
        (
            &["--duration", "200", "--run", "torture"],
            "less than --timeout",
        ),
        (&["--fault", "bogus"], "--fault"),
        (&["--fault", "melt:1"], "unknown fault"),
        (
            &["--fault", "stall:9:10", "--cpus", "2"],
            "CPU 9 does not exist",
        ),
        (&["--fault", "stall:1:0", "--cpus", "2"], "a stall lasts"),
        (&["--fault", "stall:1:x", "--cpus", "2"], "--fault"),
        (&["--fault", "spurious-ipi:0"], "RATE"),
        (&["--fault", "spurious-ipi:lots"], "RATE"),
        (&["--fault", "drop-ipi:2"], "at most 1"),
        (&["--fault", "drop-ipi:nan"], "at most 1"),
        (&["--json", "/tmp/x.json"], "--run bench"),
        (&["--plot", "/tmp/x.svg"], "--run bench"),
        (
            &["--junit", "/tmp/x.xml"],
            "--junit applies only to --run selftest|hotplug|torture",
        ),
        (
            &["--duration", "5"],
            "--duration applies only to --run wait|torture",
        ),
        (
            &["--duration", "5", "--run", "selftest"],
            "not to --run selftest",
        ),
        (
            &["--run", "wait", "--hotplug-churn", "100", "--cpus", "2"],
            "never ends",
        ),
        (&["--run", "wait", "--cpus", "2"], "--run wait needs an end"),
        (
            &["--run", "bench", "--json", "/nonexistent/x.json"],
            "--json /nonexistent/x.json: cannot create",
        ),
        (
            &["--run", "bench", "--plot", "/dev/full"],
            "--plot /dev/full: not a regular file",
        ),
        (
            &["--run", "selftest", "--junit", "/dev/full"],
            "--junit /dev/full: not a regular file",
        ),
        (
            &["--run", "bench", "--json", &dir_s],
            "not a regular file (a directory)",
        ),
        (
            &["--run", "bench", "--json", &same, "--plot", &same_again],
            "--json and --plot are the same file",
        ),
        (
            &["--junit", "/tmp/x.xml", "--run", "bench"],
            "--run selftest",
        ),
        (&["--pin=yes"], "--pin"),
        (&["--quiet=yes"], "--quiet"),
        (&["--verbose=3"], "--verbose"),
        (&["--bogus"], "--bogus"),
    ];
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|(args, want)| check_rejected(args, want))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Output files are checked before the VM starts; a refused one leaves no
/// file behind that the run created, and an existing file is left as it
/// was.
#[test]
fn output_paths_are_checked_before_the_run() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let json = dir.join("cli-early.json");
    let _ = std::fs::remove_file(&json);
    let json_s = json.to_string_lossy().into_owned();
    rejected(
        &["--run", "bench", "--json", &json_s, "--plot", "/dev/full"],
        "--plot /dev/full: not a regular file",
    );
    assert!(!json.exists(), "a refused run left {json_s} behind");
    std::fs::write(&json, b"keep").expect("temp file");
    rejected(
        &["--run", "bench", "--json", &json_s, "--plot", &json_s],
        "same file",
    );
    assert_eq!(std::fs::read(&json).expect("still there"), b"keep");
}

/// `--run wait` with churn ends at `--duration`, with success.
#[test]
fn wait_with_churn_ends_at_duration() {
    let out = vmm(&[
        "--cpus",
        "2",
        "--run",
        "wait",
        "--hotplug-churn",
        "50",
        "--duration",
        "1",
        "--quiet",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The churn is one summary line, not a line per request.
    let summary: Vec<_> = stdout
        .lines()
        .filter(|l| l.starts_with("hotplug churn: "))
        .collect();
    assert_eq!(summary.len(), 1, "{stdout}");
    let requests: u32 = summary[0]["hotplug churn: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests > 0, "no churn: {stdout}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("hotplug: ")),
        "{stdout}"
    );
}

/// A requested fault the run ended before is said in one line, and the
/// run fails (exit 1) although the guest succeeded. The stall is due after
/// the watchdog's --timeout, so it can never be injected.
#[test]
fn a_fault_not_injected_fails_the_run() {
    let out = vmm(&[
        "--cpus",
        "2",
        "--timeout",
        "60",
        "--fault",
        "stall:1:300@99999",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        ["vmm: --fault stall:1:300@99999 was not injected: the run ended before it was due"],
        "{err}"
    );
}

/// Guest command-line warnings name the real problem: a switch given a
/// value (which does not turn it on: the run does not hang), a weight
/// that is not a number.
#[test]
fn cmdline_warnings_name_the_problem() {
    let out = vmm(&[
        "--cpus",
        "1",
        "--run",
        "torture",
        "--duration",
        "0.5",
        "--timeout",
        "60",
        "--cmdline",
        "hang=0 scf.weight_all=abc scf.weight_many=-2",
    ]);
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}");
    for want in [
        "warning: hang=0: takes no value; ignored",
        "scftorture: scf.weight_all=abc: is not a number (a weight, -1 or more); ignored",
        "scftorture: scf.weight_many=-2: is negative; a weight is -1 (unset) or more; ignored",
    ] {
        assert!(console.contains(want), "{want:?} not in\n{console}");
    }
}

/// An unknown `--run` is refused before any VM exists (nothing on
/// stdout, no guest console), with every scenario listed.
#[test]
fn unknown_scenario_is_refused_with_the_list() {
    let out = vmm(&["--run", "nosuch", "--cpus", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "a VM ran: {:?}", out.stdout);
    assert!(err.contains("'nosuch'") && err.contains("--run"), "{err}");
    for s in shared::Scenario::ALL {
        assert!(err.contains(s.name()), "{err:?} lacks {}", s.name());
    }
}

/// `--junit` writes a file a JUnit reader accepts, one testcase per case,
/// and the summary line counts the same cases.
#[test]
fn junit_report_and_summary() {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-selftest.xml");
    let _ = std::fs::remove_file(&path);
    let out = vmm(&[
        "--cpus",
        "1",
        "--run",
        "selftest",
        "--quiet",
        "--junit",
        path.to_str().expect("UTF-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.ends_with(" skipped"))
        .expect("a summary line");
    let summary: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [passed, failed, skipped] = summary[..] else {
        panic!("{line:?}")
    };
    // Exactly this shape, alone on its line.
    assert_eq!(
        line,
        format!("{passed} passed, {failed} failed, {skipped} skipped")
    );
    assert!(passed > 0 && failed == 0 && skipped > 0, "{stdout}");
    let xml = std::fs::read_to_string(&path).expect("--junit wrote the file");
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("valid JUnit");
    let [suite] = &report.test_suites[..] else {
        panic!("{report:?}")
    };
    assert_eq!(suite.name.as_str(), "smpcall selftest, 1 CPU");
    assert_eq!(suite.test_cases.len(), passed + skipped);
    assert_eq!((suite.skipped, suite.failures), (skipped, 0));
}

/// Every file of the malformed-ELF corpus is refused with its clear error.
#[test]
fn malformed_guest_elfs_get_clear_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/elf-corpus");
    let expected = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt");
    let mut n = 0;
    for line in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (file, want) = line.split_once('\t').expect("file<TAB>error");
        let path = dir.join(file);
        rejected(&["--kernel", &path.to_string_lossy(), "--quiet"], want);
        n += 1;
    }
    let files = std::fs::read_dir(&dir)
        .expect("corpus")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "elf"))
        })
        .count();
    assert_eq!(n, files, "every corpus file has an expected error");
    assert!(n >= 20);
}

/// The report files of a bench run are written through the binary, under
/// its default seccomp filters (the main thread's allow-list must cover
/// writing them).
#[test]
fn bench_reports_are_written_under_seccomp() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (json, plot) = (dir.join("cli-bench.json"), dir.join("cli-bench.svg"));
    let fanout = dir.join("cli-bench-fanout.svg");
    for p in [&json, &plot, &fanout] {
        let _ = std::fs::remove_file(p);
    }
    let out = vmm(&[
        "--cpus",
        "2",
        "--run",
        "bench",
        "--quiet",
        "--cmdline",
        "bench_ms=10",
        "--json",
        json.to_str().expect("UTF-8 path"),
        "--plot",
        plot.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
    assert!(report["cases"].as_array().is_some_and(|c| !c.is_empty()));
    for svg in [&plot, &fanout] {
        let text = std::fs::read_to_string(svg).expect("the SVG");
        assert!(
            text.starts_with("<svg") || text.starts_with("<?xml"),
            "{svg:?}"
        );
    }
}

/// A `--trace` path that cannot be written, and a `--flight` out of range,
/// are refused in one line before the VM starts (nothing on stdout), and
/// a refused run creates no trace file.
#[test]
fn trace_and_flight_are_checked_before_the_run() {
    rejected(
        &["--trace", "/nonexistent/t.pftrace"],
        "--trace /nonexistent/t.pftrace: cannot create",
    );
    rejected(
        &["--trace", "/dev/full"],
        "--trace /dev/full: not a regular file",
    );
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir_s = dir.to_string_lossy().into_owned();
    // Under a regular file (not a directory): also for the text form.
    let file = dir.join("cli-trace-not-a-dir");
    std::fs::write(&file, b"x").expect("temp file");
    let under = file.join("t.txt").to_string_lossy().into_owned();
    rejected(&["--trace", &under], &format!("--trace {under}: "));
    rejected(&["--trace", &dir_s], "not a regular file (a directory)");
    let max = vmm::trace::flight::MAX_FLIGHT;
    let over = (max + 1).to_string();
    rejected(
        &["--flight", &over],
        &format!("--flight {over}: at most {max} events per CPU"),
    );
    rejected(&["--flight", "-1"], "--flight");
    rejected(&["--flight", "many"], "--flight");
    rejected(&["--flight", "99999999999999999999999"], "--flight");
    // Refused for --flight: the (new) trace file is not created.
    let trace = dir.join("cli-refused.pftrace");
    let _ = std::fs::remove_file(&trace);
    rejected(
        &["--trace", &trace.to_string_lossy(), "--flight", &over],
        "--flight",
    );
    assert!(!trace.exists(), "a refused run left {trace:?} behind");
    // The same file as --json.
    let json = dir.join("cli-trace-json.json");
    let json_s = json.to_string_lossy().into_owned();
    rejected(
        &["--run", "bench", "--json", &json_s, "--trace", &json_s],
        "same file",
    );
}

/// The watchdog's flight report covers every CPU, symbolized, and the
/// `--trace` file is still written when the run ends with exit 4: a
/// torture whose invokers wait for a vCPU stopped past `--timeout`.
#[test]
fn a_watchdog_timeout_prints_every_cpu_and_still_writes_the_trace() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let trace = dir.join("cli-watchdog.txt");
    let _ = std::fs::remove_file(&trace);
    let out = vmm(&[
        "--cpus",
        "4",
        "--run",
        "torture",
        "--duration",
        "1",
        "--timeout",
        "2",
        "--fault",
        "stall:2:8000",
        "--flight",
        "6",
        "--trace",
        &trace.to_string_lossy(),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let block: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.starts_with("flight recorder: watchdog"))
        .take_while(|l| l.starts_with("flight recorder: watchdog") || l.starts_with("  "))
        .collect();
    assert!(!block.is_empty(), "no watchdog flight report: {err}");
    for cpu in 0..4 {
        let head = format!("  CPU {cpu}: last ");
        assert!(block.iter().any(|l| l.starts_with(&head)), "{err}");
    }
    // Symbolized: every function is named, none is an address (the
    // csd-lock waits name theirs too).
    let events: Vec<&&str> = block.iter().filter(|l| l.starts_with("    ")).collect();
    assert!(events.len() >= 4, "{err}");
    let funcs: Vec<&str> = events
        .iter()
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.strip_prefix("func="))
        .collect();
    assert!(!funcs.is_empty(), "{err}");
    assert!(funcs.iter().all(|f| f.starts_with("guest::")), "{err}");
    let text = std::fs::read_to_string(&trace).expect("the trace is written at exit 4");
    assert!(
        text.lines().any(|l| l.contains(": watchdog: timeout_s=2")),
        "{text}"
    );
    assert!(
        text.contains(": csd_function_entry: func=guest::"),
        "{text}"
    );
    assert!(text.ends_with('\n'), "whole lines");
}

/// A crash (exit 3) still writes `--trace`: a whole Perfetto trace with the
/// crash on the VMM's track.
#[test]
fn a_crash_still_writes_the_trace() {
    use prost::Message;
    use vmm::trace::perfetto::Trace;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let trace = dir.join("cli-crash.pftrace");
    let _ = std::fs::remove_file(&trace);
    let out = vmm(&[
        "--cpus",
        "2",
        "--cmdline",
        "crash=pf",
        "--trace",
        &trace.to_string_lossy(),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("flight recorder: CPU "), "{err}");
    let bytes = std::fs::read(&trace).expect("the trace is written at exit 3");
    let t = Trace::decode(bytes.as_slice()).expect("it decodes");
    let crash = t
        .packet
        .iter()
        .filter_map(|p| p.track_event.as_ref())
        .find(|e| e.name.as_deref() == Some("guest_crash"));
    assert!(
        crash.is_some(),
        "no guest_crash event in {} packets",
        t.packet.len()
    );
    let guest = t
        .packet
        .iter()
        .filter_map(|p| p.track_event.as_ref())
        .filter(|e| e.name.as_deref().is_some_and(|n| n.starts_with("cpuhp ")))
        .count();
    assert!(guest > 0, "the guest's events are in it");
}

/// The bench report says whether tracing was on (console `vm:` line and
/// JSON `vm.trace`), following `--trace` and the command-line word
/// `trace`, so that two runs can be compared.
#[test]
fn bench_report_says_whether_tracing_was_on() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let json = dir.join("cli-bench-trace.json");
    let json_s = json.to_string_lossy().into_owned();
    let trace = dir.join("cli-bench-trace.pftrace");
    let trace_s = trace.to_string_lossy().into_owned();
    let cases: [(&[&str], bool); 3] = [
        (&["--cmdline", "bench_ms=10"], false),
        (&["--cmdline", "bench_ms=10", "--trace", &trace_s], true),
        (&["--cmdline", "bench_ms=10 trace"], true),
    ];
    for (extra, on) in cases {
        let _ = std::fs::remove_file(&json);
        let mut args = vec!["--cpus", "2", "--run", "bench", "--json", &json_s];
        args.extend_from_slice(extra);
        let out = vmm(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {err}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
        assert_eq!(report["vm"]["trace"], on, "{extra:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let vm = stdout
            .lines()
            .find(|l| l.starts_with("vm: "))
            .unwrap_or_else(|| panic!("no vm: line in {stdout}"));
        let want = if on { ", tracing on" } else { ", tracing off" };
        assert!(vm.contains(want), "{extra:?}: {vm}");
    }
}
