//! What the tests that drive the `vmm` binary share: a child VMM that is
//! killed if the test fails first, and a control-socket client. Every wait
//! has a deadline.

#![allow(dead_code)] // each test binary uses its own part of it

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest any wait of these tests takes before it fails.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A `vmm` child with its output captured, killed if the test fails
/// before it exits.
pub struct Vmm(Option<Child>);

impl Vmm {
    /// Starts `vmm ARGS`.
    pub fn spawn(args: &[&str]) -> Vmm {
        let child = Command::new(env!("CARGO_BIN_EXE_vmm"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Vmm(Some(child))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// Waits for it to exit by [`DEADLINE`].
    pub fn wait(mut self) -> Output {
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

/// Connects to the control socket at `path` once it exists (by
/// [`DEADLINE`]); reads and writes time out after [`DEADLINE`].
pub fn connect(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
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

/// Sends one request line and returns the answer.
pub fn ask(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> Value {
    writeln!(w, "{line}").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
}
