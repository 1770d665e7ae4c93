//! The run's timeline (issue 12, host side): the guest's trace rings
//! ([`crate::trace_rings`]) with the VMM's own events and VM-exit samples
//! on one clock ([`clock`]), written as Perfetto's protobuf trace
//! ([`perfetto`]) or ftrace-style text ([`text`]); and the flight
//! recorder ([`flight`]): the last events of the CPUs involved in a stall,
//! a crash, a protocol error or a watchdog timeout, read from the live
//! rings.
//!
//! Everything from the rings is untrusted guest data: entries are taken
//! only whole (`shared::trace::entries`), from the ring of the CPU they
//! claim, with a known event id; addresses are only printed.

pub mod clock;
pub mod fields;
pub mod flight;
pub mod flows;
pub mod perfetto;
pub mod recorder;
pub mod text;

use shared::trace::{self, Entry, TraceEventId};

pub use recorder::Recorder;

use crate::outcome::Outcome;

/// VMM events kept at most (a hotplug churn makes thousands).
pub const MAX_VMM_EVENTS: usize = 100_000;
/// VM-exit samples kept at most (10 minutes at one per 10 ms).
pub const MAX_EXIT_SAMPLES: usize = 60_000;
/// How often the main thread samples each vCPU's VM exits.
pub const EXIT_SAMPLE_PERIOD: std::time::Duration = std::time::Duration::from_millis(10);

/// What kind of thing the VMM did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmmEventKind {
    /// A hotplug request to the guest (`--hotplug`, `--hotplug-churn`).
    Hotplug,
    /// A `--fault stall` stopped a vCPU.
    FaultStall,
    /// The watchdog ended the run.
    Watchdog,
    /// The guest reported a csd-lock stall.
    StallReport,
    /// The guest reported an exception.
    Crash,
    /// The guest broke the protocol.
    ProtocolError,
}

impl VmmEventKind {
    /// The event's name in the trace.
    pub fn name(self) -> &'static str {
        match self {
            VmmEventKind::Hotplug => "hotplug",
            VmmEventKind::FaultStall => "fault_stall",
            VmmEventKind::Watchdog => "watchdog",
            VmmEventKind::StallReport => "csd_stall_report",
            VmmEventKind::Crash => "guest_crash",
            VmmEventKind::ProtocolError => "protocol_error",
        }
    }
}

/// One thing the VMM did or saw, on the VMM's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmmEvent {
    /// `CLOCK_BOOTTIME` ns.
    pub ns: u64,
    /// What.
    pub kind: VmmEventKind,
    /// How long it lasted, if it is a span (a fault stall).
    pub dur_ns: Option<u64>,
    /// The details, `key=value` words.
    pub detail: String,
}

/// Each vCPU's VM-exit count (cumulative; `None` where stats are missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitSample {
    /// `CLOCK_BOOTTIME` ns.
    pub ns: u64,
    /// By vCPU.
    pub exits: Vec<Option<u64>>,
}

/// What the VMM recorded for the timeline during a run.
#[derive(Clone, Debug, Default)]
pub struct VmmTimeline {
    /// Guest TSC to ns.
    pub clock: Option<clock::Calibration>,
    /// The VMM's events, in time order.
    pub events: Vec<VmmEvent>,
    /// VM-exit samples (with tracing on).
    pub exit_samples: Vec<ExitSample>,
    /// Flight-recorder reports, each a block of lines.
    pub flight: Vec<String>,
}

/// One guest event on the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestEvent {
    /// On the VMM's clock (ns), or the raw TSC without a calibration.
    pub ns: u64,
    /// Its event.
    pub id: TraceEventId,
    /// The entry (its `cpu` is the ring's).
    pub entry: Entry,
}

impl GuestEvent {
    /// The CPU that wrote it.
    pub fn cpu(&self) -> u32 {
        u32::from(self.entry.cpu)
    }
}

/// Whole entries of one ring, as guest events: only those written by
/// `cpu` with a known id. `to_ns` converts their TSC.
pub fn ring_events(
    ring: &(impl trace::RingSource + ?Sized),
    ring_bytes: u64,
    cpu: u32,
    to_ns: &dyn Fn(u64) -> u64,
) -> Vec<GuestEvent> {
    trace::entries(ring, ring_bytes)
        .filter_map(Result::ok)
        .filter(|e| u32::from(e.cpu) == cpu)
        .filter_map(|e| {
            Some(GuestEvent {
                ns: to_ns(e.tsc),
                id: e.event_id().ok()?,
                entry: e,
            })
        })
        .collect()
}

/// Every guest event of the run's snapshot, in time order (stable: each
/// CPU's own order is kept).
pub fn guest_events(outcome: &Outcome) -> Vec<GuestEvent> {
    let Some(snap) = &outcome.trace else {
        return Vec::new();
    };
    let clock = outcome.timeline.clock;
    let to_ns = |tsc| clock.map_or(tsc, |c| c.to_ns(tsc));
    let mut all: Vec<GuestEvent> = (0..snap.region.cpus)
        .flat_map(|cpu| ring_events(snap.ring(cpu), snap.region.ring_bytes, cpu, &to_ns))
        .collect();
    all.sort_by_key(|e| e.ns);
    all
}

/// The form of a `--trace` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Perfetto's protobuf trace ([`perfetto`]).
    Perfetto,
    /// ftrace-style text lines ([`text`]).
    Text,
}

impl Format {
    /// `.txt`: text; anything else: Perfetto.
    pub fn of_path(path: &std::path::Path) -> Format {
        match path.extension() {
            Some(e) if e.eq_ignore_ascii_case("txt") => Format::Text,
            _ => Format::Perfetto,
        }
    }
}

/// The run's trace in `format`: the guest's events (if tracing was on),
/// the VMM's events and the VM-exit samples.
pub fn render(outcome: &Outcome, format: Format) -> Vec<u8> {
    render_events(outcome, &guest_events(outcome), format)
}

/// [`render`] with the guest's events already read ([`guest_events`]).
pub fn render_events(outcome: &Outcome, guest: &[GuestEvent], format: Format) -> Vec<u8> {
    let t = &outcome.timeline;
    match format {
        Format::Text => text::render(guest, &t.events, &outcome.symbols).into_bytes(),
        Format::Perfetto => {
            let cpus = outcome.trace.as_ref().map_or(0, |s| s.region.cpus);
            let cpus = t
                .exit_samples
                .iter()
                .map(|s| s.exits.len() as u32)
                .fold(cpus, u32::max);
            perfetto::encode(cpus, guest, &t.events, &t.exit_samples, &outcome.symbols)
        }
    }
}
