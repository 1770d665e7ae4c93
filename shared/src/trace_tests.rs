use super::*;
use core::cell::Cell;
use std::vec;
use std::vec::Vec;

fn sample(i: u64) -> Entry {
    Entry {
        seq: 0,
        tsc: 1000 + i,
        event: TraceEventId::CsdFunctionEntry as u16,
        cpu: 3,
        arg32: 7,
        args: [i, 2, 3, 4, 0xdead_beef_0000_0001],
    }
}

#[test]
fn encode_decode_round_trip_and_layout() {
    let e = Entry {
        seq: 0x0102_0304_0506_0708,
        tsc: 0x1112_1314_1516_1718,
        event: TraceEventId::IpiSendCpumask as u16,
        cpu: 0x2122,
        arg32: 0x3132_3334,
        args: [1, 2, 3, 4, u64::MAX],
    };
    let b = e.encode();
    assert_eq!(Entry::decode(&b), e);
    assert_eq!(b[offsets::SEQ], 0x08);
    assert_eq!(b[offsets::TSC], 0x18);
    assert_eq!(b[offsets::EVENT..offsets::EVENT + 2], [3, 0]);
    assert_eq!(b[offsets::CPU..offsets::CPU + 2], [0x22, 0x21]);
    assert_eq!(b[offsets::ARG32], 0x34);
    assert_eq!(b[offsets::ARGS], 1);
    assert_eq!(b[ENTRY_BYTES - 1], 0xff);
    assert_eq!(e.event_id(), Ok(TraceEventId::IpiSendCpumask));
    let bad = Entry { event: 999, ..e };
    assert_eq!(bad.event_id(), Err(999));
}

#[test]
fn event_names_are_linux_names_and_unique() {
    assert_eq!(TraceEventId::CsdQueueCpu.name(), "csd_queue_cpu");
    assert_eq!(
        TraceEventId::from_name("call_function_single_entry"),
        Some(TraceEventId::CallFunctionSingleEntry)
    );
    for (i, a) in TraceEventId::ALL.iter().enumerate() {
        for b in &TraceEventId::ALL[i + 1..] {
            assert_ne!(a.name(), b.name());
        }
    }
    assert_eq!(CpuhpStep::try_from(3), Ok(CpuhpStep::SmpcfdDying));
}

#[test]
fn capacity_is_a_power_of_two_that_fits() {
    assert_eq!(capacity(0), 0);
    assert_eq!(capacity(127), 0);
    assert_eq!(capacity(128), 1);
    assert_eq!(capacity(ring_bytes(MIN_RING_KIB)), 32);
    assert_eq!(capacity(ring_bytes(DEFAULT_RING_KIB)), 4096);
    assert_eq!(capacity(4096 * 64), 2048, "the header needs room too");
    for kib in [MIN_RING_KIB, 5, 17, 100, DEFAULT_RING_KIB, MAX_RING_KIB] {
        let b = ring_bytes(kib);
        let c = capacity(b);
        assert!(c.is_power_of_two());
        assert!(HEADER_BYTES as u64 + c * ENTRY_BYTES as u64 <= b);
        assert!(HEADER_BYTES as u64 + 2 * c * ENTRY_BYTES as u64 > b);
    }
    assert_eq!(slot_offset(4, 0), 64);
    assert_eq!(slot_offset(4, 5), 128);
}

#[test]
fn cmdline() {
    assert_eq!(parse_cmdline("run=demo"), Ok(TraceCmdline::default()));
    let t = parse_cmdline("run=demo trace").unwrap();
    assert!(t.on);
    assert_eq!(t.kib(), DEFAULT_RING_KIB);
    let t = parse_cmdline("trace_buf=8").unwrap();
    assert_eq!((t.on, t.ring_kib), (true, Some(8)));
    assert_eq!(
        parse_cmdline("trace_buf=1"),
        Err(TraceBufError::OutOfRange(1))
    );
    assert_eq!(
        parse_cmdline("trace_buf=x"),
        Err(TraceBufError::Number(NumberError::Invalid))
    );
    assert!(!parse_cmdline("trace=1").unwrap().on);
}

fn ring_with(ring_bytes: u64, events: u64) -> Vec<u8> {
    let mut ring = vec![0u8; ring_bytes as usize];
    for i in 0..events {
        write_entry(&mut ring, ring_bytes, i, &sample(i));
    }
    ring
}

#[test]
fn wrap_around_keeps_the_newest_capacity_events_in_order() {
    let rb = ring_bytes(MIN_RING_KIB);
    let cap = capacity(rb);
    let ring = ring_with(rb, cap * 3 + 5);
    assert_eq!(read_head(&ring[..]), cap * 3 + 5);
    let got: Vec<_> = entries(&ring[..], rb).collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len() as u64, cap);
    for (k, e) in got.iter().enumerate() {
        let i = cap * 2 + 5 + k as u64;
        assert_eq!(e.seq, i + 1);
        assert_eq!(e.args[0], i);
    }
    // An overwritten event is reported as such.
    assert_eq!(
        read_entry(&ring[..], cap, cap * 2),
        Err(EntryError::Overwritten(cap * 3 + 1))
    );
    // A not yet written one too.
    let short = ring_with(rb, 3);
    assert_eq!(entries(&short[..], rb).count(), 3);
    assert_eq!(read_entry(&short[..], cap, 5), Err(EntryError::Missing(0)));
}

#[test]
fn lying_head_and_sizes_stay_in_bounds() {
    let rb = ring_bytes(MIN_RING_KIB);
    let cap = capacity(rb);
    let mut ring = ring_with(rb, 10);
    ring[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let res: Vec<_> = entries(&ring[..], rb).collect();
    assert_eq!(res.len() as u64, cap);
    assert!(res.iter().all(|r| r.is_err()));
    // A ring buffer shorter than the size the reader was told reads
    // zeros past its end, never out of bounds.
    let res: Vec<_> = entries(&ring[..100], rb).collect();
    assert!(res.iter().all(|r| r.is_err()));
    let mut tiny = [0u8; 8];
    write_entry(&mut tiny, rb, 0, &sample(0));
    assert_eq!(tiny, [0; 8]);
}

/// A ring whose slot is rewritten by a "writer" at a chosen point of the
/// reader's three reads (after read number `at`).
struct Racing<'a> {
    ring: &'a [u8],
    rewritten: &'a [u8],
    at: u32,
    reads: Cell<u32>,
}

impl RingSource for Racing<'_> {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        let n = self.reads.get();
        self.reads.set(n + 1);
        let src = if n < self.at {
            self.ring
        } else {
            self.rewritten
        };
        src.read(offset, buf);
    }
}

#[test]
fn torn_entries_are_rejected() {
    let rb = ring_bytes(MIN_RING_KIB);
    let cap = capacity(rb);
    let ring = ring_with(rb, cap);
    // Mid-rewrite: event `cap` is going into slot 0, its seq already 0
    // and some fields new.
    let mut mid = ring.clone();
    let at = slot_offset(cap, 0) as usize;
    mid[at..at + 8].fill(0);
    mid[at + 8..at + 16].fill(0xaa);
    let done = ring_with(rb, cap + 1);
    // Rewrite begins between the first seq read and the fields.
    for (rewritten, want) in [(&mid, EntryError::Torn), (&done, EntryError::Torn)] {
        let src = Racing {
            ring: &ring,
            rewritten,
            at: 1,
            reads: Cell::new(0),
        };
        assert_eq!(read_entry(&src, cap, 0), Err(want));
    }
    // Rewrite begins between the fields and the second seq read.
    let src = Racing {
        ring: &ring,
        rewritten: &mid,
        at: 2,
        reads: Cell::new(0),
    };
    assert_eq!(read_entry(&src, cap, 0), Err(EntryError::Torn));
    // No race: whole.
    let src = Racing {
        ring: &ring,
        rewritten: &ring,
        at: 0,
        reads: Cell::new(0),
    };
    assert_eq!(read_entry(&src, cap, 0).unwrap().args[0], 0);
    // Seen mid-rewrite from the start: seq 0.
    assert_eq!(read_entry(&mid[..], cap, 0), Err(EntryError::Missing(0)));
}
