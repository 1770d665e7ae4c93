//! The control socket through the `vmm` binary: a real VM serving it, a
//! second VMM refused on the same path, a file that is not a socket left
//! alone. Every wait has a deadline.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmm_sys_util::tempdir::TempDir;

const DEADLINE: Duration = Duration::from_secs(60);

fn vmm(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmm"));
    c.args(args);
    c
}

/// A `vmm` child, killed if the test fails before it exits.
struct Vmm(Option<Child>);

impl Vmm {
    /// Waits for it to exit by [`DEADLINE`].
    fn wait(mut self) -> Output {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("vmm did not exit within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn connect(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let deadline = Instant::now() + DEADLINE;
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("{}: {e}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn ask(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> Value {
    writeln!(w, "{line}").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
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
    let first = Vmm(Some(
        vmm(&["--cpus", "2", "--run", "wait", "--api-sock", p, "-q", "-v"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
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
