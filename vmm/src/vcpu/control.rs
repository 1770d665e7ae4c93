//! [`Control`]: how the run ends, shared by the vCPU threads and the thread
//! that runs the VM (the first ending wins; every thread sees the stop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::fault::Injector;
use crate::outcome::{Ending, VcpuDump};

/// Whether an ending asks every vCPU for a register dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dumps {
    /// Each vCPU dumps its registers as its thread stops (a crash, a hang).
    Take,
    /// No dumps (a clean end).
    Skip,
}

/// State shared by the vCPU threads and the thread that runs the VM.
#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    want_dumps: AtomicBool,
    ending: Mutex<Option<Ending>>,
    done: Condvar,
    dumps: Mutex<Vec<VcpuDump>>,
    faults: OnceLock<Arc<Injector>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    /// Ends the run (the first ending wins), asking every vCPU for a dump
    /// when `dumps` says so, and wakes the waiter.
    pub fn finish(&self, ending: Ending, dumps: Dumps) {
        let mut e = lock(&self.ending);
        if e.is_none() {
            if dumps == Dumps::Take {
                self.want_dumps.store(true, Ordering::SeqCst);
            }
            *e = Some(ending);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.done.notify_all();
    }

    /// Hands the vCPU threads the fault injector (before they start).
    pub fn set_faults(&self, injector: Arc<Injector>) {
        let _ = self.faults.set(injector);
    }

    /// The fault injector, if one was handed over.
    pub fn faults(&self) -> Option<Arc<Injector>> {
        self.faults.get().cloned()
    }

    /// Whether the run is over.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Whether the ending asked for register dumps.
    pub fn wants_dumps(&self) -> bool {
        self.want_dumps.load(Ordering::SeqCst)
    }

    /// Keeps one vCPU's dump.
    pub fn push_dump(&self, dump: VcpuDump) {
        lock(&self.dumps).push(dump);
    }

    /// Waits until the run ends or `timeout` passes; returns the ending, or
    /// `None` on timeout.
    pub fn wait(&self, timeout: Duration) -> Option<Ending> {
        let deadline = Instant::now() + timeout;
        let mut e = lock(&self.ending);
        while e.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            e = self
                .done
                .wait_timeout(e, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        e.clone()
    }

    /// The ending, once there is one.
    pub fn ending(&self) -> Option<Ending> {
        lock(&self.ending).clone()
    }

    /// The collected vCPU dumps, sorted by CPU.
    pub fn take_dumps(&self) -> Vec<VcpuDump> {
        let mut d = std::mem::take(&mut *lock(&self.dumps));
        d.sort_by_key(|d| d.cpu);
        d
    }
}
