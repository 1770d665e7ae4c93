//! [`Recorder`]: what the VMM notes for the timeline while the run goes
//! on, from any thread: its own events, VM-exit samples, and the
//! flight-recorder reports (read from the live rings at that moment).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::clock::{self, Calibration};
use super::flight::{self, LiveRings};
use super::{ExitSample, MAX_EXIT_SAMPLES, MAX_VMM_EVENTS, VmmEvent, VmmEventKind, VmmTimeline};
use crate::symbols::Symbols;

/// Flight-recorder reports kept at most (a stall storm, a hostile guest).
pub const MAX_FLIGHT_REPORTS: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Collects the VMM's side of the timeline during a run.
pub struct Recorder {
    /// The run's start and its `CLOCK_BOOTTIME` ns.
    started: (Instant, u64),
    clock: Option<Calibration>,
    symbols: Arc<Symbols>,
    /// The rings, when tracing is on (the flight recorder needs them).
    live: Option<LiveRings>,
    /// Events per CPU a flight report shows.
    flight_n: usize,
    events: Mutex<Vec<VmmEvent>>,
    samples: Mutex<Vec<ExitSample>>,
    flight: Mutex<Vec<String>>,
}

impl Recorder {
    /// A recorder for a run that started at `started`.
    pub fn new(
        started: Instant,
        clock: Option<Calibration>,
        symbols: Arc<Symbols>,
        live: Option<LiveRings>,
        flight_n: usize,
    ) -> Recorder {
        let now_ns = clock::boottime_ns();
        let since = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Recorder {
            started: (started, now_ns.saturating_sub(since)),
            clock,
            symbols,
            live,
            flight_n: flight_n.min(flight::MAX_FLIGHT),
            events: Mutex::default(),
            samples: Mutex::default(),
            flight: Mutex::default(),
        }
    }

    /// The function symbols.
    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// `CLOCK_BOOTTIME` ns of a moment `at` after the run's start.
    pub fn ns_after_start(&self, at: std::time::Duration) -> u64 {
        let at = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.started.1.saturating_add(at)
    }

    /// Notes a VMM event at `ns`.
    pub fn event_at(&self, ns: u64, kind: VmmEventKind, dur_ns: Option<u64>, detail: String) {
        let mut ev = lock(&self.events);
        if ev.len() < MAX_VMM_EVENTS {
            ev.push(VmmEvent {
                ns,
                kind,
                dur_ns,
                detail,
            });
        }
    }

    /// Notes a VMM event now.
    pub fn event(&self, kind: VmmEventKind, detail: String) {
        self.event_at(clock::boottime_ns(), kind, None, detail);
    }

    /// Keeps one VM-exit sample (taken now).
    pub fn sample(&self, exits: Vec<Option<u64>>) {
        let mut s = lock(&self.samples);
        if s.len() < MAX_EXIT_SAMPLES {
            s.push(ExitSample {
                ns: clock::boottime_ns(),
                exits,
            });
        }
    }

    /// Reads the live rings of `cpus` now and keeps the report (if
    /// tracing is on and fewer than [`MAX_FLIGHT_REPORTS`] were made).
    pub fn flight(&self, title: &str, cpus: &[u32]) {
        let Some(live) = &self.live else { return };
        if self.flight_n == 0 || lock(&self.flight).len() >= MAX_FLIGHT_REPORTS {
            return;
        }
        let r = flight::report(title, live, cpus, self.flight_n, self.clock, &self.symbols);
        let mut f = lock(&self.flight);
        if f.len() < MAX_FLIGHT_REPORTS {
            f.push(r);
        }
    }

    /// A csd-lock stall report from the guest: the event, and a flight
    /// report of the waiter and the stuck target (at its first report).
    pub fn stall(&self, waiter: u32, target: u32, id: u32, func: u64, info: u64, nth: u32) {
        let f = self.symbols.at(func);
        self.event(
            VmmEventKind::StallReport,
            format!("stall={id} waiter={waiter} target={target} func={f} nth={nth}"),
        );
        if nth <= 1 {
            let title = format!(
                "csd-lock stall #{id}: CPU {waiter} waiting for CPU {target} to run {f}({info:#x})"
            );
            let cpus = if waiter == target {
                vec![waiter]
            } else {
                vec![waiter, target]
            };
            self.flight(&title, &cpus);
        }
    }

    /// A guest exception report: the event, and a flight report of the
    /// crashing CPU.
    pub fn crash(&self, cpu: u32, vector: u8, name: &str, rip: u64) {
        let at = self.symbols.at(rip);
        self.event(
            VmmEventKind::Crash,
            format!("cpu={cpu} vector={vector} rip={at}"),
        );
        self.flight(
            &format!("CPU {cpu} exception {vector} ({name}) at {at}"),
            &[cpu],
        );
    }

    /// A protocol error (the first few get a flight report of `cpu`, or
    /// of every CPU if it is not known).
    pub fn protocol_error(&self, cpu: Option<u32>, msg: &str) {
        self.event(VmmEventKind::ProtocolError, msg.to_string());
        let cpus: Vec<u32> = match (cpu, &self.live) {
            (Some(c), _) => vec![c],
            (None, Some(l)) => (0..l.region.cpus).collect(),
            (None, None) => return,
        };
        self.flight(&format!("protocol error: {msg}"), &cpus);
    }

    /// The watchdog fired: the event, and a flight report of every CPU.
    pub fn watchdog(&self, cpus: u32, secs: f64) {
        self.event(VmmEventKind::Watchdog, format!("timeout_s={secs}"));
        let all: Vec<u32> = (0..cpus).collect();
        self.flight(
            &format!("watchdog: no end after {secs:.1} s, every CPU"),
            &all,
        );
    }

    /// Everything recorded (events in time order).
    pub fn take(&self) -> VmmTimeline {
        let mut events = std::mem::take(&mut *lock(&self.events));
        events.sort_by_key(|e| e.ns);
        VmmTimeline {
            clock: self.clock,
            events,
            exit_samples: std::mem::take(&mut *lock(&self.samples)),
            flight: std::mem::take(&mut *lock(&self.flight)),
        }
    }
}
