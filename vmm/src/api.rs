//! The control socket (`--api-sock PATH`): line-delimited JSON requests,
//! one JSON answer line each, while the VM runs.
//!
//! Requests: `{"cpu":3,"state":"offline"}`, `{"cpu":3,"state":"online"}`,
//! `{"stats":true}` (per-CPU counters), `{"exit":true}` (ends `--run wait`).
//! Answers: `{"ok":true,...}` or `{"ok":false,"error":"..."}`. Bad requests
//! get an error answer and the VM keeps running.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::mailbox::{Op, result};

use crate::hotplug_driver::{Change, REQUEST_TIMEOUT, errno_text};
use crate::mailbox::Channel;

/// Longest request line accepted.
pub const LINE_MAX: usize = 64 * 1024;

/// Longest time one answer may take to write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds the socket, replacing a stale socket file (never another file).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
    }
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// One request of the control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `{"stats":true}`.
    Stats,
    /// `{"exit":true}`.
    Exit,
    /// `{"cpu":N,"state":"online"|"offline"}`.
    Hotplug {
        /// The CPU, below the VM's count.
        cpu: u32,
        /// What to do with it.
        change: Change,
    },
}

/// Parses one request line for a VM with `cpus` CPUs. `Err` is the
/// answer for a bad request. Never panics (the line is untrusted).
pub fn parse_request(line: &str, cpus: u32) -> Result<Request, Value> {
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Err(json!({"ok": false, "error": format!("malformed JSON: {e}")})),
    };
    let Some(obj) = req.as_object() else {
        return Err(json!({"ok": false, "error": "a request is a JSON object"}));
    };
    if obj.get("stats") == Some(&Value::Bool(true)) {
        return Ok(Request::Stats);
    }
    if obj.get("exit") == Some(&Value::Bool(true)) {
        return Ok(Request::Exit);
    }
    let cpu = match obj.get("cpu").and_then(Value::as_u64) {
        Some(c) if c < u64::from(cpus) => c as u32,
        Some(c) => {
            return Err(
                json!({"ok": false, "error": format!("CPU {c} does not exist (the VM has {cpus})")}),
            );
        }
        None => {
            return Err(json!({"ok": false,
                "error": "expected {\"cpu\":N,\"state\":\"online\"|\"offline\"}, {\"stats\":true} or {\"exit\":true}"}));
        }
    };
    let change = match obj.get("state").and_then(Value::as_str) {
        Some("online") => Change::Online,
        Some("offline") => Change::Offline,
        _ => {
            return Err(
                json!({"ok": false, "error": "\"state\" must be \"online\" or \"offline\""}),
            );
        }
    };
    Ok(Request::Hotplug { cpu, change })
}

/// Answers one request line.
pub fn answer(line: &str, channel: &Channel, cpus: u32) -> Value {
    match parse_request(line, cpus) {
        Err(answer) => answer,
        Ok(Request::Stats) => match channel.request(Op::Stats, 0, REQUEST_TIMEOUT) {
            Ok(reply) => {
                let cpus: Vec<Value> = reply
                    .stats
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        json!({"cpu": i, "online": s.online == 1, "ipi_sent": s.ipi_sent,
                               "ipi_received": s.ipi_received, "callbacks_run": s.callbacks_run,
                               "calls_queued": s.calls_queued})
                    })
                    .collect();
                json!({"ok": true, "cpus": cpus})
            }
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        },
        Ok(Request::Exit) => match channel.request(Op::Finish, 0, REQUEST_TIMEOUT) {
            Ok(_) => json!({"ok": true, "exit": true}),
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        },
        Ok(Request::Hotplug { cpu, change }) => {
            match channel.request(change.op(), cpu, REQUEST_TIMEOUT) {
                Ok(r) if r.result == result::OK => {
                    json!({"ok": true, "cpu": cpu, "state": change.name()})
                }
                Ok(r) => {
                    json!({"ok": false, "cpu": cpu, "error": errno_text(r.result, cpu, change)})
                }
                Err(e) => json!({"ok": false, "cpu": cpu, "error": e.to_string()}),
            }
        }
    }
}

/// Reads one line of at most [`LINE_MAX`] bytes. `Ok(None)` at end of
/// stream; an over-long line is consumed and reported as `Err(())`.
fn read_line(
    r: &mut BufReader<UnixStream>,
    stopped: &dyn Fn() -> bool,
) -> Option<Result<String, ()>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        if stopped() {
            return None;
        }
        let chunk = match r.fill_buf() {
            Ok([]) => return None,
            Ok(c) => c,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        let (part, done, found_newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        if buf.len() + part.len() > LINE_MAX {
            too_long = true;
        } else {
            buf.extend_from_slice(part);
        }
        r.consume(done);
        if found_newline {
            return Some(if too_long {
                Err(())
            } else {
                Ok(String::from_utf8_lossy(&buf).into_owned())
            });
        }
    }
}

/// Writes one answer line, giving up after [`WRITE_TIMEOUT`] in all (a
/// client that does not read must not hold up the VMM).
fn write_reply(w: &mut UnixStream, reply: &Value) -> std::io::Result<()> {
    let text = format!("{reply}\n");
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        w.set_write_timeout(Some(left))?;
        match w.write(rest) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves clients one at a time until `stopped()`.
pub fn serve(listener: UnixListener, channel: &Channel, cpus: u32, stopped: &dyn Fn() -> bool) {
    serve_with(listener, &|line| answer(line, channel, cpus), stopped);
}

/// [`serve`] with the answers of `answer`. A client whose answer cannot
/// be written within [`WRITE_TIMEOUT`] is dropped.
fn serve_with(listener: UnixListener, answer: &dyn Fn(&str) -> Value, stopped: &dyn Fn() -> bool) {
    while !stopped() {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            // Nobody waiting (WouldBlock) or a persistent error such as
            // EMFILE: either way, do not spin.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let set_up = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(Duration::from_millis(50))));
        let (Ok(()), Ok(mut writer)) = (set_up, stream.try_clone()) else {
            continue;
        };
        let mut reader = BufReader::new(stream);
        while let Some(line) = read_line(&mut reader, stopped) {
            let reply = match line {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => answer(&l),
                Err(()) => {
                    json!({"ok": false, "error": format!("request longer than {LINE_MAX} bytes")})
                }
            };
            if write_reply(&mut writer, &reply).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_client_that_never_reads_is_dropped() {
        let path = std::env::temp_dir().join(format!("vmm-api-test-{}.sock", std::process::id()));
        let listener = bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // An answer far larger than any socket buffer.
                let big = "x".repeat(16 << 20);
                serve_with(
                    listener,
                    &|line| {
                        if line == "big" {
                            json!({"ok": true, "pad": big})
                        } else {
                            json!({"ok": true})
                        }
                    },
                    &|| stop.load(Ordering::Relaxed),
                );
            })
        };
        let started = Instant::now();
        let mut hog = UnixStream::connect(&path).unwrap();
        hog.write_all(b"big\n").unwrap();
        // A second client is served once the first one is dropped.
        let mut next = UnixStream::connect(&path).unwrap();
        next.set_read_timeout(Some(WRITE_TIMEOUT * 5)).unwrap();
        next.write_all(b"small\n").unwrap();
        let mut answer = String::new();
        BufReader::new(&next).read_line(&mut answer).unwrap();
        assert_eq!(answer, "{\"ok\":true}\n");
        assert!(
            started.elapsed() < WRITE_TIMEOUT * 3,
            "{:?}",
            started.elapsed()
        );
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        drop(hog);
        let _ = std::fs::remove_file(&path);
    }
}
