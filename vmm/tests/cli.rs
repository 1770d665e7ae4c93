//! The command line: documented exit codes, one clear line on bad input.

use std::process::{Command, Output};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .output()
        .expect("run vmm")
}

fn usage_error(args: &[&str], want: &str) {
    let out = vmm(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
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
    usage_error(&["--cpus", "100"], "at most 64");
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
