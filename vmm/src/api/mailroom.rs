//! The one queue between the clients' threads and the guest's mailbox,
//! which serves one request at a time. Stats requests jump the queue and
//! all those waiting share the next round trip; the others (hotplug,
//! exit) go in order of arrival.

use std::collections::VecDeque;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};

use shared::mailbox::Op;

use super::{Guest, TICK};
use crate::mailbox::{Reply, RequestError};

type Answer = Result<Reply, RequestError>;

/// Requests not yet sent to the guest.
#[derive(Default)]
struct Queue {
    /// Whoever waits for the next stats round trip.
    stats: Vec<Sender<Answer>>,
    /// Other requests, oldest first.
    others: VecDeque<(Op, u32, Sender<Answer>)>,
    /// Set when [`Mailroom::run`] ends: nothing will be sent any more.
    closed: bool,
}

/// What the worker does next.
enum Job {
    Stats(Vec<Sender<Answer>>),
    One(Op, u32, Sender<Answer>),
}

/// The queue and the worker that empties it.
#[derive(Default)]
pub(super) struct Mailroom {
    queue: Mutex<Queue>,
    posted: Condvar,
}

impl Mailroom {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `op` for `cpu` and waits for its answer: [`RequestError::Stopped`]
    /// once `stopped()`. The wait is bounded: each request ahead of it is
    /// ([`Guest::request`]), and there is at most one per client.
    pub(super) fn ask(&self, op: Op, cpu: u32, stopped: &dyn Fn() -> bool) -> Answer {
        let (tx, rx) = mpsc::channel();
        {
            let mut q = self.lock();
            if q.closed {
                return Err(RequestError::Stopped);
            }
            if op == Op::Stats {
                q.stats.push(tx);
            } else {
                q.others.push_back((op, cpu, tx));
            }
        }
        self.posted.notify_one();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(answer) => return answer,
                Err(RecvTimeoutError::Timeout) if !stopped() => {}
                // Stopped, or the worker dropped the request on its way out.
                Err(_) => return Err(RequestError::Stopped),
            }
        }
    }

    /// Sends the queued requests to `guest` one at a time until
    /// `stopped()`, then drops whatever is still queued.
    pub(super) fn run(&self, guest: &dyn Guest, stopped: &dyn Fn() -> bool) {
        while let Some(job) = self.next(stopped) {
            match job {
                Job::Stats(waiters) => {
                    let answer = guest.request(Op::Stats, 0);
                    for w in waiters {
                        // A client that went away no longer listens.
                        let _ = w.send(answer.clone());
                    }
                }
                Job::One(op, cpu, w) => {
                    let _ = w.send(guest.request(op, cpu));
                }
            }
        }
    }

    /// Waits for the next job; `None` once `stopped()`.
    fn next(&self, stopped: &dyn Fn() -> bool) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if stopped() {
                *q = Queue {
                    closed: true,
                    ..Queue::default()
                };
                return None;
            }
            if !q.stats.is_empty() {
                return Some(Job::Stats(std::mem::take(&mut q.stats)));
            }
            if let Some((op, cpu, w)) = q.others.pop_front() {
                return Some(Job::One(op, cpu, w));
            }
            q = self
                .posted
                .wait_timeout(q, TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    impl Mailroom {
        fn pending(&self) -> usize {
            let q = self.lock();
            q.stats.len() + q.others.len()
        }
    }

    /// Answers each request with its op as `result`, remembering the order.
    struct Recorder(Mutex<Vec<Op>>);

    impl Guest for Recorder {
        fn request(&self, op: Op, _cpu: u32) -> Answer {
            self.0.lock().unwrap().push(op);
            Ok(Reply {
                result: op as i32,
                stats: Vec::new(),
            })
        }
    }

    #[test]
    fn stats_go_first_and_share_a_round_trip() {
        let room = &Mailroom::default();
        let guest = Recorder(Mutex::new(Vec::new()));
        let stop = AtomicBool::new(false);
        let stopped = || stop.load(Ordering::SeqCst);
        let ops = [Op::Online, Op::Stats, Op::Offline, Op::Stats];
        std::thread::scope(|s| {
            // All queued before the worker starts, so the order is the queue's.
            let asks: Vec<_> = (ops.iter().enumerate())
                .map(|(i, &op)| {
                    let h = s.spawn(move || room.ask(op, 1, &stopped));
                    while room.pending() <= i {
                        std::thread::yield_now();
                    }
                    (op, h)
                })
                .collect();
            s.spawn(|| room.run(&guest, &stopped));
            for (op, h) in asks {
                assert_eq!(h.join().unwrap().unwrap().result, op as i32);
            }
            stop.store(true, Ordering::SeqCst);
        });
        assert_eq!(
            *guest.0.lock().unwrap(),
            [Op::Stats, Op::Online, Op::Offline]
        );
        // Closed: a late request is refused at once.
        assert_eq!(
            room.ask(Op::Stats, 0, &|| false),
            Err(RequestError::Stopped)
        );
    }

    #[test]
    fn a_waiting_client_sees_the_stop() {
        let room = Mailroom::default();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| room.ask(Op::Online, 1, &|| stop.load(Ordering::SeqCst)));
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::SeqCst);
            assert_eq!(h.join().unwrap(), Err(RequestError::Stopped));
        });
    }
}
