//! The trace as ftrace-style text lines (`--trace PATH.txt`), one per
//! event, guest and VMM, in time order:
//!
//! ```text
//!   vcpu0 [000] 8123.456789012: csd_queue_cpu: cpu=3 callsite=scenarios::demo::run+0x4a func=scenarios::demo::say csd=0x2c4c0
//!     vmm [---] 8123.500000000: hotplug: cpu=3 change=offline result=done
//! ```
//!
//! The timestamp is seconds of `CLOCK_BOOTTIME` with ns (the guest's TSC
//! converted, [`super::clock`]).

use std::fmt::Write as _;

use super::fields::words;
use super::{GuestEvent, VmmEvent};
use crate::symbols::Symbols;

/// `secs.nnnnnnnnn`.
pub fn timestamp(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// One guest event's line (no newline).
pub fn guest_line(e: &GuestEvent, syms: &Symbols) -> String {
    let cpu = e.cpu();
    let fields = words(e.id, &e.entry, syms);
    let label = format!("vcpu{cpu}");
    let mut s = format!(
        "{label:>7} [{cpu:03}] {}: {}:",
        timestamp(e.ns),
        e.id.name()
    );
    if !fields.is_empty() {
        s.push(' ');
        s.push_str(&fields);
    }
    s
}

/// One VMM event's line (no newline).
pub fn vmm_line(e: &VmmEvent) -> String {
    let mut s = format!("{:>7} [---] {}: {}:", "vmm", timestamp(e.ns), e.kind.name());
    if !e.detail.is_empty() {
        s.push(' ');
        s.push_str(&e.detail);
    }
    if let Some(d) = e.dur_ns {
        let _ = write!(s, " dur_ns={d}");
    }
    s
}

/// The whole text trace: guest and VMM events merged in time order
/// (`guest` and `vmm` each in time order already).
pub fn render(guest: &[GuestEvent], vmm: &[VmmEvent], syms: &Symbols) -> String {
    let mut out = String::new();
    let (mut g, mut v) = (guest.iter().peekable(), vmm.iter().peekable());
    loop {
        let guest_first = match (g.peek(), v.peek()) {
            (Some(a), Some(b)) => a.ns <= b.ns,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let line = if guest_first {
            g.next().map(|e| guest_line(e, syms))
        } else {
            v.next().map(vmm_line)
        }
        .unwrap_or_default();
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use shared::trace::{Entry, TraceEventId};

    use super::super::VmmEventKind;
    use super::*;

    #[test]
    fn lines_look_like_ftrace_and_merge_in_time_order() {
        let syms = Symbols::from_list(&[(0x1000, 0x100, "demo::run"), (0x2000, 8, "demo::say")]);
        let q = GuestEvent {
            ns: 12_000_000_123,
            id: TraceEventId::CsdQueueCpu,
            entry: Entry {
                cpu: 2,
                arg32: 3,
                args: [0x1004, 0x2000, 0x40, 0, 0],
                ..Default::default()
            },
        };
        let run = GuestEvent {
            ns: 12_000_000_500,
            id: TraceEventId::CsdFunctionEntry,
            entry: Entry {
                cpu: 3,
                args: [0x2000, 0x40, 0, 0, 0],
                ..Default::default()
            },
        };
        let hp = VmmEvent {
            ns: 12_000_000_200,
            kind: VmmEventKind::Hotplug,
            dur_ns: None,
            detail: "cpu=1 change=offline".into(),
        };
        let text = render(&[q, run], &[hp], &syms);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "  vcpu2 [002] 12.000000123: csd_queue_cpu: cpu=3 callsite=demo::run+0x4 func=demo::say csd=0x40",
                "    vmm [---] 12.000000200: hotplug: cpu=1 change=offline",
                "  vcpu3 [003] 12.000000500: csd_function_entry: func=demo::say csd=0x40",
            ]
        );
    }
}
