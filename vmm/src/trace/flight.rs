//! The flight recorder: the last events of some CPUs' rings, read from
//! live guest memory while the guest runs (no vCPU is stopped: a slot
//! being rewritten reads as torn and is skipped, `shared::trace`), printed
//! symbolized, newest last.

use std::fmt::Write as _;
use std::sync::Arc;

use shared::trace::{self, RingSource};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::text::guest_line;
use super::{GuestEvent, clock::Calibration};
use crate::symbols::Symbols;
use crate::trace_rings::TraceRegion;

/// Largest `--flight`.
pub const MAX_FLIGHT: usize = 4096;

/// One CPU's ring in live guest memory. Reads stay inside the ring: the
/// VMM's own `ring_bytes`, never a size from the guest.
pub struct LiveRing<'a> {
    mem: &'a GuestMemoryMmap,
    base: u64,
    ring_bytes: u64,
}

impl RingSource for LiveRing<'_> {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        buf.fill(0);
        let Some(room) = self.ring_bytes.checked_sub(offset) else {
            return;
        };
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let addr = GuestAddress(self.base.saturating_add(offset));
        if n == 8 && addr.0.is_multiple_of(8) {
            // `seq` and `head`: one aligned 8-byte load (RingSource's
            // contract). Acquire: pairs with the guest's Release stores of
            // them (shared::trace module docs).
            if let Ok(v) = self
                .mem
                .load::<u64>(addr, std::sync::atomic::Ordering::Acquire)
            {
                buf[..8].copy_from_slice(&v.to_le_bytes());
            }
            return;
        }
        // Outside guest memory: an error, and the zeros stay.
        let _ = self.mem.read_slice(&mut buf[..n], addr);
    }
}

/// The live rings of a run.
#[derive(Clone)]
pub struct LiveRings {
    /// Guest memory.
    pub mem: Arc<GuestMemoryMmap>,
    /// Where the rings are.
    pub region: TraceRegion,
}

impl LiveRings {
    /// CPU `cpu`'s ring (`None` past the last CPU).
    pub fn ring(&self, cpu: u32) -> Option<LiveRing<'_>> {
        (cpu < self.region.cpus).then(|| LiveRing {
            mem: &self.mem,
            base: self
                .region
                .base
                .saturating_add(u64::from(cpu).saturating_mul(self.region.ring_bytes)),
            ring_bytes: self.region.ring_bytes,
        })
    }
}

/// The last `n` whole events of a ring, oldest first, and how many of the
/// last `n` slots could not be read (torn or overwritten meanwhile). Reads
/// only those slots.
pub fn last_events(
    src: &(impl RingSource + ?Sized),
    ring_bytes: u64,
    cpu: u32,
    n: usize,
    to_ns: &dyn Fn(u64) -> u64,
) -> (Vec<GuestEvent>, usize) {
    let cap = trace::capacity(ring_bytes);
    if cap == 0 || n == 0 {
        return (Vec::new(), 0);
    }
    let head = trace::read_head(src);
    let live = trace::live_range(cap, head);
    let start = live.end.saturating_sub(n as u64).max(live.start);
    let mut out = Vec::new();
    let mut skipped = 0;
    for i in start..live.end {
        match trace::read_entry(src, cap, i) {
            Ok(e) if u32::from(e.cpu) == cpu => match e.event_id() {
                Ok(id) => out.push(GuestEvent {
                    ns: to_ns(e.tsc),
                    id,
                    entry: e,
                }),
                Err(_) => skipped += 1,
            },
            _ => skipped += 1,
        }
    }
    (out, skipped)
}

/// A flight-recorder report: `title`, then for each CPU of `cpus` its
/// last `n` events, symbolized, newest last.
pub fn report(
    title: &str,
    rings: &LiveRings,
    cpus: &[u32],
    n: usize,
    clock: Option<Calibration>,
    syms: &Symbols,
) -> String {
    let to_ns = |tsc| clock.map_or(tsc, |c| c.to_ns(tsc));
    let mut s = format!("flight recorder: {title}\n");
    for &cpu in cpus {
        let Some(ring) = rings.ring(cpu) else {
            continue;
        };
        let (events, skipped) = last_events(&ring, rings.region.ring_bytes, cpu, n, &to_ns);
        let _ = write!(s, "  CPU {cpu}: last {} events, newest last", events.len());
        if skipped > 0 {
            let _ = write!(s, " ({skipped} being rewritten, skipped)");
        }
        s.push('\n');
        for e in &events {
            let _ = writeln!(s, "    {}", guest_line(e, syms));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use shared::trace::{Entry, TraceEventId, write_entry};

    use super::*;

    #[test]
    fn reads_only_the_last_n_whole_events_of_its_cpu() {
        let ring_bytes = 4096;
        let mut ring = vec![0u8; ring_bytes as usize];
        for i in 0..100u64 {
            let e = Entry {
                tsc: i,
                event: TraceEventId::CsdFunctionEntry as u16,
                cpu: if i == 98 { 7 } else { 1 },
                args: [i, 0, 0, 0, 0],
                ..Default::default()
            };
            write_entry(&mut ring, ring_bytes, i, &e);
        }
        let (ev, skipped) = last_events(&ring[..], ring_bytes, 1, 4, &|t| t * 10);
        // Event 98 claims another CPU: skipped, not shown.
        assert_eq!(skipped, 1);
        let got: Vec<_> = ev.iter().map(|e| (e.entry.args[0], e.ns)).collect();
        assert_eq!(got, [(96, 960), (97, 970), (99, 990)]);
        // More than the ring holds: only what it holds (capacity 32).
        let (ev, _) = last_events(&ring[..], ring_bytes, 1, 1000, &|t| t);
        assert_eq!(ev.first().map(|e| e.entry.args[0]), Some(68));
        // A lying head reads nothing out of bounds.
        ring[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let (ev, skipped) = last_events(&ring[..], ring_bytes, 1, 16, &|t| t);
        assert!(ev.is_empty() && skipped == 16);
    }
}
