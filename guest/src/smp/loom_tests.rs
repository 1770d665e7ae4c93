//! loom models of the lock-free parts: the llist add / del_all pairing and
//! the csd lock / unlock / wait protocol. loom runs every interleaving (and
//! the weak-memory outcomes it models) and reports any access to a csd's
//! `func`/`info`, or to a payload, that is not ordered by these protocols.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p guest --release --lib smp::`

use core::ptr::NonNull;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::api::{SmpCallFunc, SmpError};
use super::csd::{CSD_TYPE_ASYNC, Csd};
use super::llist::{self, LlistHead, LlistNode};

/// A queued object with a payload written before it is queued.
#[repr(C)]
struct Item {
    link: LlistNode,
    payload: UnsafeCell<usize>,
}

impl Item {
    fn new() -> Self {
        Self {
            link: LlistNode::new(),
            payload: UnsafeCell::new(0),
        }
    }
}

/// Collects the payloads of a detached chain of `Item`s.
/// `loom::model` with a preemption bound of 3 unless `LOOM_MAX_PREEMPTIONS`
/// says otherwise: enough for these protocols, and keeps the runs short.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn drain(chain: *mut LlistNode, out: &mut Vec<usize>) {
    // SAFETY: the chain was detached by `del_all`, and its items outlive
    // every thread of the model (the model's main thread holds them).
    let mut cur = unsafe { llist::reverse_order(chain) };
    while let Some(node) = NonNull::new(cur) {
        // SAFETY: `Item` is repr(C) with the link first; it is alive.
        let item = unsafe { node.cast::<Item>().as_ref() };
        cur = item.link.next();
        // SAFETY: loom checks this read against the producer's write.
        out.push(item.payload.with(|p| unsafe { *p }));
    }
}

/// Writes the payload, then queues the item; returns `add`'s result.
fn produce(head: &LlistHead, item: &Item, payload: usize) -> bool {
    // SAFETY: not queued yet; only this thread touches it.
    item.payload.with_mut(|p| unsafe { *p = payload });
    // SAFETY: the items outlive the list (the test holds them); added once.
    unsafe { head.add(NonNull::from(&item.link)) }
}

#[test]
fn llist_add_publishes_payload_to_del_all() {
    model(|| {
        let head = Arc::new(LlistHead::new());
        let items = Arc::new([Item::new(), Item::new()]);
        let producer = {
            let (head, items) = (head.clone(), items.clone());
            thread::spawn(move || produce(&head, &items[1], 11))
        };
        // A consumer racing with the producers.
        let consumer = {
            let head = head.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                drain(head.del_all(), &mut got);
                got
            })
        };
        let first_empty = produce(&head, &items[0], 10);
        let second_empty = producer.join().unwrap();
        let mut got = consumer.join().unwrap();
        drain(head.del_all(), &mut got);
        assert!(
            first_empty || second_empty,
            "the first add saw an empty list"
        );
        got.sort_unstable();
        assert_eq!(got, [10, 11], "every node taken exactly once");
    });
}

fn nothing(_: usize) {}

#[test]
fn csd_sync_call_publishes_both_ways() {
    // Waiter: stack csd born locked+SYNC, enqueued; handler: takes it, reads
    // func/info, "runs" it (writes the result), unlocks; waiter: waits and
    // reads the result. loom flags any unordered access.
    model(|| {
        let head = Arc::new(LlistHead::new());
        let csd = Arc::new(Csd::new_sync_locked(nothing as SmpCallFunc, 42));
        let result = Arc::new(UnsafeCell::new(0usize));
        let handler = {
            let (head, csd, result) = (head.clone(), csd.clone(), result.clone());
            thread::spawn(move || {
                let chain = loop {
                    let chain = head.del_all();
                    if !chain.is_null() {
                        break chain;
                    }
                    thread::yield_now();
                };
                assert!(core::ptr::eq(
                    chain,
                    NonNull::from(&csd.node().llist).as_ptr()
                ));
                // SAFETY: taken off the queue, not unlocked yet.
                let (func, info) = unsafe { csd.read() };
                func(info);
                // SAFETY: the waiter reads this only after the unlock.
                result.with_mut(|p| unsafe { *p = info + 1 });
                assert!(csd.unlock());
            })
        };
        // SAFETY: `csd` (in the Arc) outlives the queue.
        assert!(unsafe { head.add(csd.node().link()) });
        while csd.is_locked() {
            thread::yield_now();
        }
        // SAFETY: ordered after the handler's write by unlock/is_locked.
        assert_eq!(result.with(|p| unsafe { *p }), 43);
        handler.join().unwrap();
    });
}

#[test]
fn csd_async_try_lock_is_exclusive() {
    // Two CPUs race to arm the same idle async csd: exactly one wins.
    model(|| {
        let csd = Arc::new(Csd::new(nothing, 0));
        let other = {
            let csd = csd.clone();
            thread::spawn(move || csd.try_lock(CSD_TYPE_ASYNC).is_ok())
        };
        let mine = csd.try_lock(CSD_TYPE_ASYNC).is_ok();
        let theirs = other.join().unwrap();
        assert!(mine != theirs, "exactly one locker");
        assert!(csd.is_locked());
    });
}

#[test]
fn csd_async_reuse_after_unlock_does_not_race_with_the_flusher() {
    // A sender arms and queues the csd; the flusher reads func/info and
    // unlocks it before "calling" it; a second user spins on `try_lock`
    // (-EBUSY) and then rewrites func/info, which must be ordered after the
    // flusher's reads.
    model(|| {
        let head = Arc::new(LlistHead::new());
        let csd = Arc::new(Csd::new(nothing, 0));
        assert_eq!(csd.try_lock(CSD_TYPE_ASYNC), Ok(()));
        let flusher = {
            let (head, csd) = (head.clone(), csd.clone());
            thread::spawn(move || {
                let node = loop {
                    if let Some(node) = NonNull::new(head.del_all()) {
                        break node;
                    }
                    thread::yield_now();
                };
                assert!(core::ptr::eq(node.as_ptr(), csd.node().link().as_ptr()));
                // SAFETY: a csd node off our queue.
                let c = unsafe { Csd::from_node(node) };
                // SAFETY: taken off the queue, not unlocked yet.
                let (func, info) = unsafe { c.read() };
                assert!(c.unlock());
                func(info);
                info
            })
        };
        // SAFETY: we hold the lock of an unqueued csd.
        unsafe { csd.write(nothing, 1) };
        // SAFETY: `csd` outlives the queue.
        assert!(unsafe { head.add(csd.node().link()) });
        let reuser = {
            let csd = csd.clone();
            thread::spawn(move || {
                while csd.try_lock(CSD_TYPE_ASYNC) == Err(SmpError::Busy) {
                    thread::yield_now();
                }
                // SAFETY: we hold the lock of an unqueued csd.
                unsafe { csd.write(nothing, 2) };
            })
        };
        assert_eq!(flusher.join().unwrap(), 1);
        reuser.join().unwrap();
        assert!(csd.is_locked());
    });
}

#[test]
fn csd_owned_lock_waits_for_the_previous_call() {
    // The per-CPU csd_data pattern: the owner reuses its csd for a second
    // call after seeing it unlocked (Acquire), then `lock_owned` + write.
    model(|| {
        let head = Arc::new(LlistHead::new());
        let csd = Arc::new(Csd::new(nothing, 0));
        let flusher = {
            let head = head.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                while seen.len() < 2 {
                    if let Some(node) = NonNull::new(head.del_all()) {
                        // SAFETY: a csd node off our queue.
                        let c = unsafe { Csd::from_node(node) };
                        // SAFETY: taken off the queue, not unlocked yet.
                        seen.push(unsafe { c.read() }.1);
                        c.unlock();
                    } else {
                        thread::yield_now();
                    }
                }
                seen
            })
        };
        for info in [1, 2] {
            while csd.is_locked() {
                thread::yield_now();
            }
            csd.lock_owned(CSD_TYPE_ASYNC);
            // SAFETY: we hold the lock of an unqueued csd.
            unsafe { csd.write(nothing, info) };
            // SAFETY: `csd` outlives the queue.
            unsafe { head.add(csd.node().link()) };
        }
        assert_eq!(flusher.join().unwrap(), [1, 2]);
    });
}
