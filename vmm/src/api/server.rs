//! The accept loop and one thread per client.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::Value;
use shared::mailbox::Op;

use super::mailroom::Mailroom;
use super::request::{self, Request, refusal};
use super::{Guest, LINE_MAX, Options, TICK, WRITE_TIMEOUT, socket};
use crate::mailbox::RequestError;

/// What every client thread shares.
struct Shared<'a> {
    options: &'a Options,
    mailroom: Mailroom,
    stopped: &'a (dyn Fn() -> bool + Sync),
    /// Clients being served.
    clients: AtomicUsize,
}

/// Serves clients of `listener` (from [`super::bind`]) with `guest`'s
/// answers until `stopped()`; returns once every thread it started has
/// seen that (within [`TICK`], or the bound of a write or of a guest
/// request in progress).
pub fn serve(
    listener: UnixListener,
    guest: &dyn Guest,
    options: &Options,
    stopped: &(dyn Fn() -> bool + Sync),
) {
    let shared = Shared {
        options,
        mailroom: Mailroom::default(),
        stopped,
        clients: AtomicUsize::new(0),
    };
    let shared = &shared;
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("api-mailroom".into())
            .spawn_scoped(s, || shared.mailroom.run(guest, stopped))
            .expect("cannot start the control socket's mailroom thread");
        let mut next_id = 0u64;
        while !stopped() {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::from(u16::try_from(TICK.as_millis()).unwrap_or(u16::MAX)),
            ) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("control socket: poll failed: {e}");
                    std::thread::sleep(TICK);
                    continue;
                }
            }
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    continue;
                }
                // Such as EMFILE: the listener stays readable, so do not spin.
                Err(e) => {
                    log::debug!("control socket: accept failed: {e}");
                    std::thread::sleep(TICK);
                    continue;
                }
            };
            next_id += 1;
            let id = next_id;
            let who = match socket::peer(&stream) {
                Some(c) => format!("pid {}, uid {}, gid {}", c.pid(), c.uid(), c.gid()),
                None => "credentials unknown".into(),
            };
            // Relaxed: a count only; it publishes no data, and the scope
            // joins the threads that decrement it.
            let serving = shared.clients.fetch_add(1, Ordering::Relaxed);
            if serving >= options.limits.clients {
                shared.clients.fetch_sub(1, Ordering::Relaxed);
                log::info!("control socket: client {id} ({who}) refused: {serving} clients");
                refuse(stream, serving);
                continue;
            }
            log::info!("control socket: client {id} connected ({who})");
            let spawned = std::thread::Builder::new()
                .name(format!("api-client-{id}"))
                .spawn_scoped(s, move || {
                    serve_client(stream, shared);
                    log::info!("control socket: client {id} gone");
                    // Relaxed: see fetch_add above.
                    shared.clients.fetch_sub(1, Ordering::Relaxed);
                });
            if let Err(e) = spawned {
                // The closure, and the stream with it, is dropped.
                log::warn!("control socket: cannot start a thread for client {id}: {e}");
                shared.clients.fetch_sub(1, Ordering::Relaxed);
            }
        }
    });
}

/// Tells a client over the limit why it is closed, without waiting on it:
/// the line fits in a fresh socket's buffer, or is lost.
fn refuse(mut stream: UnixStream, serving: usize) {
    let line = format!(
        "{}\n",
        refusal(&format!(
            "too many clients: {serving} are being served; try again later"
        ))
    );
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write(line.as_bytes());
    }
}

/// Answers the client's lines until it leaves, is too slow, or the VM
/// stops.
fn serve_client(stream: UnixStream, shared: &Shared<'_>) {
    let set_up = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(TICK)));
    let (Ok(()), Ok(mut writer)) = (set_up, stream.try_clone()) else {
        return;
    };
    let idle = shared.options.limits.idle;
    let mut reader = BufReader::new(stream);
    loop {
        let deadline = Instant::now() + idle;
        let reply = match read_line(&mut reader, deadline, shared.stopped) {
            Line::Request(l) => answer(&l, shared),
            Line::TooLong => refusal(&format!("request longer than {LINE_MAX} bytes")),
            Line::Idle => {
                let why = format!("no complete request within {idle:?}; closing");
                let _ = write_reply(&mut writer, &refusal(&why));
                return;
            }
            Line::Closed => return,
            Line::Stopped => return refuse_pending(&mut reader, &mut writer),
        };
        if write_reply(&mut writer, &reply).is_err() {
            return;
        }
    }
}

/// Answers one request line.
fn answer(line: &str, shared: &Shared<'_>) -> Value {
    let ask = |op, cpu| shared.mailroom.ask(op, cpu, shared.stopped);
    match request::parse_request(line, shared.options.cpus) {
        Err(why) => refusal(&why),
        Ok(Request::Stats) => request::stats_answer(ask(Op::Stats, 0)),
        Ok(Request::Exit) if !shared.options.exit_ends_run => refusal(
            "{\"exit\":true} only ends --run wait; this scenario ends by itself (or at --timeout)",
        ),
        Ok(Request::Exit) => request::exit_answer(ask(Op::Finish, 0)),
        Ok(Request::Hotplug { cpu, change }) => {
            request::hotplug_answer(cpu, change, ask(change.op(), cpu))
        }
    }
}

/// One read from a client.
enum Line {
    /// A line (without its newline), or the last bytes before the end of
    /// the stream.
    Request(String),
    /// A line over [`LINE_MAX`] bytes, consumed.
    TooLong,
    /// No complete line by the deadline.
    Idle,
    /// End of stream or a read error.
    Closed,
    /// The VM stopped.
    Stopped,
}

/// Most bytes a client's connection is drained of once the VM stopped.
const DRAIN_MAX: usize = 4 * LINE_MAX;

/// Once the VM stopped: answers each complete request the client sent and
/// this thread had not read yet with the refusal a queued request gets,
/// reading what it sent (at most [`DRAIN_MAX`] bytes, waiting at most a
/// [`TICK`] for more), so that closing does not reset the connection: a
/// Unix socket closed with unread data makes the peer's next read fail
/// with ECONNRESET, answers already sent included.
fn refuse_pending(reader: &mut BufReader<UnixStream>, writer: &mut UnixStream) {
    let stopped = refusal(&RequestError::Stopped.to_string());
    let mut drained = 0;
    while drained < DRAIN_MAX {
        let (n, lines) = match reader.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(c) => (c.len(), c.iter().filter(|&&b| b == b'\n').count()),
        };
        reader.consume(n);
        drained += n;
        for _ in 0..lines {
            if write_reply(writer, &stopped).is_err() {
                return;
            }
        }
    }
}

/// Reads one line of at most [`LINE_MAX`] bytes by `deadline`. The reader's
/// timeout is [`TICK`], so `stopped()` and the deadline are seen in time.
fn read_line(r: &mut BufReader<UnixStream>, deadline: Instant, stopped: &dyn Fn() -> bool) -> Line {
    let mut buf = Vec::new();
    let mut too_long = false;
    let finish = |buf: Vec<u8>, too_long: bool| {
        if too_long {
            Line::TooLong
        } else {
            Line::Request(String::from_utf8_lossy(&buf).into_owned())
        }
    };
    loop {
        if stopped() {
            return Line::Stopped;
        }
        if Instant::now() >= deadline {
            return Line::Idle;
        }
        let chunk = match r.fill_buf() {
            Ok([]) if buf.is_empty() && !too_long => return Line::Closed,
            Ok([]) => return finish(buf, too_long),
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => return Line::Closed,
        };
        let (part, used, newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        if buf.len() + part.len() > LINE_MAX {
            too_long = true;
            buf = Vec::new();
        } else if !too_long {
            buf.extend_from_slice(part);
        }
        r.consume(used);
        if newline {
            return finish(buf, too_long);
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
