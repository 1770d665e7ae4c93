//! The control socket through the `vmm` binary: a real VM serving it, a
//! second VMM refused on the same path, a file that is not a socket left
//! alone. Every wait has a deadline.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use serde_json::Value;
use vmm_sys_util::tempdir::TempDir;

mod support;

use support::{Vmm, ask, connect};

fn vmm(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmm"));
    c.args(args);
    c
}

/// Asserts `out` is exit 2 with one line on stderr containing `want`.
fn usage_error(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains(want), "{err:?} lacks {want:?}");
}

#[test]
fn a_second_vmm_on_a_served_socket_is_refused_and_the_first_still_answers() {
    let dir = TempDir::new_with_prefix("/tmp/vmm-api-cli-").unwrap();
    let path = dir.as_path().join("api.sock");
    let p = path.to_str().unwrap();
    let first = Vmm::spawn(&["--cpus", "2", "--run", "wait", "--api-sock", p, "-q", "-v"]);
    let (mut w, mut r) = connect(&path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600, "{mode:o}");
    let stats = ask(&mut w, &mut r, r#"{"stats":true}"#);
    assert_eq!(stats["cpus"].as_array().map(Vec::len), Some(2), "{stats}");

    let second = vmm(&["--cpus", "2", "--run", "wait", "--api-sock", p, "-q"])
        .output()
        .unwrap();
    usage_error(
        &second,
        &format!("--api-sock {p}: another process is serving this socket"),
    );
    let stats = ask(&mut w, &mut r, r#"{"stats":true}"#);
    assert_eq!(stats["ok"], Value::Bool(true), "{stats}");
    let ambiguous = ask(&mut w, &mut r, r#"{"exit":true,"stats":true}"#);
    assert_eq!(ambiguous["ok"], Value::Bool(false), "{ambiguous}");
    assert_eq!(
        ask(&mut w, &mut r, r#"{"exit":true}"#)["ok"],
        Value::Bool(true)
    );

    let out = first.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // -v logs each client's credentials.
    let me = format!("connected (pid {}, uid ", std::process::id());
    assert!(err.contains(&me), "{err:?} lacks {me:?}");
    assert!(!path.exists(), "the socket file is removed at exit");
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = TempDir::new_with_prefix("/tmp/vmm-api-cli-").unwrap();
    let path = dir.as_path().join("notes.txt");
    std::fs::write(&path, "keep me").unwrap();
    let out = vmm(&["--api-sock", path.to_str().unwrap(), "-q"])
        .output()
        .unwrap();
    usage_error(&out, "exists and is not a socket");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}
