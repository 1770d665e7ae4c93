//! The control socket (`--api-sock PATH`): line-delimited JSON requests,
//! one JSON answer line each, while the VM runs.
//!
//! Requests: `{"cpu":3,"state":"offline"}`, `{"cpu":3,"state":"online"}`,
//! `{"stats":true}` (per-CPU counters), `{"exit":true}` (ends `--run wait`).
//! Answers: `{"ok":true,...}` or `{"ok":false,"error":"..."}`. Every line
//! gets an answer, bad ones included (empty, ambiguous, unknown or
//! duplicate keys), and the VM keeps running.
//!
//! The peer is untrusted, so the server never waits on one client for
//! another's sake:
//! - [`socket::bind`] refuses a path another process serves and anything
//!   that is not a socket; the socket is mode 0600 from its creation and
//!   close-on-exec.
//! - Each client gets its own thread, at most [`Limits::clients`] at once;
//!   the accept loop answers one over that with an error line and closes
//!   it, without blocking on it.
//! - A client must complete each request line within [`Limits::idle`] of
//!   connecting or of its last answer, in at most [`LINE_MAX`] bytes, and
//!   read each answer within [`WRITE_TIMEOUT`], or it is dropped.
//! - Requests that reach the guest go through one queue ([`mailroom`]),
//!   since the mailbox serves one request at a time: stats requests go
//!   first and all those waiting share one round trip, so a stats request
//!   waits for at most the round trip in flight, however many hotplug
//!   requests are queued (plus one, should a `--hotplug` schedule hold the
//!   mailbox at that moment).
//! - When the VM stops, every thread sees it within [`TICK`] (or a write's
//!   or a guest request's own bound) and [`serve`] returns.

mod mailroom;
pub mod request;
mod server;
pub mod socket;

use std::time::Duration;

use shared::mailbox::Op;

use crate::hotplug_driver::REQUEST_TIMEOUT;
use crate::mailbox::{Channel, Reply, RequestError};

pub use request::{Request, parse_request};
pub use server::serve;
pub use socket::{BindError, bind};

/// Longest request line accepted.
pub const LINE_MAX: usize = 64 * 1024;

/// Longest time one answer may take to write.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Most clients served at once.
pub const MAX_CLIENTS: usize = 64;

/// How long a client may take to send a complete request line.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often waiting threads look at `stopped()`.
pub const TICK: Duration = Duration::from_millis(100);

/// How many clients, and how patient with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most clients served at once; one more is refused.
    pub clients: usize,
    /// Time a client has for each request line.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            clients: MAX_CLIENTS,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// What the server needs to know about the VM it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The VM's CPU count (requests for others are refused).
    pub cpus: u32,
    /// Whether `{"exit":true}` ends the run (the guest runs `wait`);
    /// otherwise it is refused.
    pub exit_ends_run: bool,
    /// Client limits.
    pub limits: Limits,
}

/// The guest's request mailbox as the server uses it: one request at a
/// time, each bounded in time. [`Channel`] in a VM; a fake in tests.
pub trait Guest: Sync {
    /// Posts `op` for `cpu` and waits, for a bounded time, for the answer.
    fn request(&self, op: Op, cpu: u32) -> Result<Reply, RequestError>;
}

impl Guest for Channel {
    fn request(&self, op: Op, cpu: u32) -> Result<Reply, RequestError> {
        Channel::request(self, op, cpu, REQUEST_TIMEOUT)
    }
}
