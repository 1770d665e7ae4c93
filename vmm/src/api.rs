//! The control socket (`--api-sock PATH`): line-delimited JSON requests,
//! one JSON answer line each, while the VM runs.
//!
//! Requests: `{"cpu":3,"state":"offline"}`, `{"cpu":3,"state":"online"}`,
//! `{"stats":true}` (per-CPU counters), `{"exit":true}` (ends `--run wait`).
//! Answers: `{"ok":true,...}` or `{"ok":false,"error":"..."}`. Bad requests
//! get an error answer and the VM keeps running.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shared::mailbox::{Op, result};

use crate::hotplug::{Change, REQUEST_TIMEOUT};
use crate::mailbox::Channel;

/// Longest request line accepted.
pub const LINE_MAX: usize = 64 * 1024;

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

fn errno_text(res: i32, cpu: u32, change: Change) -> String {
    match res {
        result::EALREADY => format!("CPU {cpu} is already {}", change.name()),
        result::EBUSY => format!("CPU {cpu} is the last online CPU"),
        result::EINVAL if cpu == 0 => "CPU 0 (the boot CPU) cannot go offline".into(),
        result::EINVAL => format!(
            "CPU {cpu} cannot be brought {} (not possible)",
            change.name()
        ),
        result::EIO => format!("CPU {cpu} did not go {} in time", change.name()),
        other => format!("the guest answered {other}"),
    }
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
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        let found_newline = done <= chunk.len() && chunk.get(done - 1) == Some(&b'\n');
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

/// Serves clients one at a time until `stopped()`.
pub fn serve(listener: UnixListener, channel: &Channel, cpus: u32, stopped: &dyn Fn() -> bool) {
    while !stopped() {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => continue,
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let Ok(mut writer) = stream.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(stream);
        while let Some(line) = read_line(&mut reader, stopped) {
            let reply = match line {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => answer(&l, channel, cpus),
                Err(()) => {
                    json!({"ok": false, "error": format!("request longer than {LINE_MAX} bytes")})
                }
            };
            if writeln!(writer, "{reply}").is_err() {
                break;
            }
        }
        let _ = reader.get_mut().read(&mut [0u8; 0]);
    }
}
