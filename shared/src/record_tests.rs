//! Tests of the record wire format.

use super::*;

fn round_trip(rec: Record<'_>) {
    let mut buf = [0u8; RECORD_MAX];
    let n = rec.encode(&mut buf).unwrap();
    assert_eq!(Record::decode(&buf[..n]), Ok(rec));
    // Every strict prefix is rejected, never a panic.
    for cut in 0..n {
        assert!(
            Record::decode(&buf[..cut]).is_err(),
            "prefix {cut} accepted"
        );
    }
    // Trailing garbage is rejected.
    assert_eq!(
        Record::decode(&buf[..n + 1]),
        Err(DecodeError::TooLong {
            payload: (n - HEADER_LEN) as u16
        })
    );
}

#[test]
fn every_kind_round_trips() {
    round_trip(Record {
        cpu: 3,
        body: Body::CpuOnline { apic_id: ApicId(3) },
    });
    round_trip(Record {
        cpu: 0,
        body: Body::Test {
            verdict: Verdict::Pass,
            name: "fifo-order",
            detail: "8 calls ran in order",
        },
    });
    round_trip(Record {
        cpu: 0,
        body: Body::Test {
            verdict: Verdict::Skip,
            name: "fifo-order",
            detail: "needs 2 online CPUs",
        },
    });
    round_trip(Record {
        cpu: 7,
        body: Body::Exception {
            vector: 14,
            error_code: 2,
            rip: 0x10_2345,
            cr2: 0xdead_0000,
        },
    });
    round_trip(Record {
        cpu: 1,
        body: Body::Warn {
            kind: WarnKind::IpiOnOfflineCpu,
            count: 1,
            detail: 0x10_1000,
        },
    });
    round_trip(Record {
        cpu: 2,
        body: Body::Counter {
            name: "ipi-sent",
            value: u64::MAX,
        },
    });
    round_trip(Record {
        cpu: 0,
        body: Body::CsdStall {
            id: 1,
            target: CpuId(3),
            func: 0x10_4000,
            info: 7,
            waited_ns: 150_000_000,
            target_running: 0,
            nth: 2,
            resent_ipi: true,
        },
    });
    round_trip(Record {
        cpu: 0,
        body: Body::CsdUnstuck {
            id: 1,
            target: CpuId(3),
            func: 0x10_4000,
            waited_ns: 500_000_000,
            reports: 2,
        },
    });
}

#[test]
fn stall_flag_must_be_a_bool() {
    let mut buf = [0u8; RECORD_MAX];
    let n = Record {
        cpu: 1,
        body: Body::CsdStall {
            id: 1,
            target: CpuId(0),
            func: 0,
            info: 0,
            waited_ns: 0,
            target_running: 0,
            nth: 1,
            resent_ipi: false,
        },
    }
    .encode(&mut buf)
    .unwrap();
    buf[n - 1] = 2;
    assert_eq!(
        Record::decode(&buf[..n]),
        Err(DecodeError::BadField("resent_ipi"))
    );
}

#[test]
fn long_strings_are_cut_at_char_boundary() {
    let long = "é".repeat(200); // 400 bytes
    let rec = Record {
        cpu: 0,
        body: Body::Test {
            verdict: Verdict::Fail,
            name: "x",
            detail: &long,
        },
    };
    let mut buf = [0u8; RECORD_MAX];
    let n = rec.encode(&mut buf).unwrap();
    match Record::decode(&buf[..n]).unwrap().body {
        Body::Test { detail, .. } => assert_eq!(detail.len(), 254),
        other => panic!("{other:?}"),
    }
}

#[test]
fn declared_length() {
    let mut buf = [0u8; RECORD_MAX];
    let n = Record {
        cpu: 1,
        body: Body::CpuOnline { apic_id: ApicId(9) },
    }
    .encode(&mut buf)
    .unwrap();
    let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
    assert_eq!(declared_len(&header), Ok(n));
    assert_eq!(
        declared_len(b"SR\x01\0\0\0\xff\xff"),
        Err(DecodeError::TooLong { payload: 0xffff })
    );
    assert_eq!(
        declared_len(b"XR\x01\0\0\0\0\0"),
        Err(DecodeError::BadMagic)
    );
}

#[test]
fn small_buffer_overflows() {
    let rec = Record {
        cpu: 0,
        body: Body::CpuOnline { apic_id: ApicId(1) },
    };
    assert_eq!(rec.encode(&mut [0u8; 10]), Err(Overflow));
}

#[test]
fn malformed_input_is_rejected() {
    assert_eq!(Record::decode(b""), Err(DecodeError::Truncated));
    assert_eq!(
        Record::decode(b"XX\x01\0\0\0\x04\0abcd"),
        Err(DecodeError::BadMagic)
    );
    assert_eq!(
        Record::decode(b"SR\x63\0\0\0\0\0"),
        Err(DecodeError::UnknownKind(0x63))
    );
    assert_eq!(
        Record::decode(b"SR\x01\x01\0\0\x04\0abcd"),
        Err(DecodeError::BadField("reserved"))
    );
    // Declared payload longer than the data.
    assert_eq!(
        Record::decode(b"SR\x01\0\0\0\xff\xff"),
        Err(DecodeError::Truncated)
    );
    // A string whose length runs past the payload.
    assert_eq!(
        Record::decode(b"SR\x05\0\0\0\x01\0\xff"),
        Err(DecodeError::Truncated)
    );
    // Invalid UTF-8.
    assert_eq!(
        Record::decode(b"SR\x05\0\0\0\x0a\0\x01\xff\0\0\0\0\0\0\0\0"),
        Err(DecodeError::BadUtf8)
    );
    // Bad warn kind and bad bool.
    assert_eq!(
        Record::decode(b"SR\x04\0\0\0\x0d\0\x09\0\0\0\0\0\0\0\0\0\0\0\0"),
        Err(DecodeError::BadField("kind"))
    );
    assert_eq!(
        Record::decode(b"SR\x02\0\0\0\x03\0\x03\0\0"),
        Err(DecodeError::BadField("verdict"))
    );
    let big = [0u8; RECORD_MAX + 1];
    assert_eq!(
        Record::decode(&big),
        Err(DecodeError::TooLong { payload: 0 })
    );
}

#[test]
fn deterministic_garbage_never_panics() {
    // A cheap xorshift sweep over random and mutated inputs.
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut good = [0u8; RECORD_MAX];
    let n = Record {
        cpu: 5,
        body: Body::Test {
            verdict: Verdict::Pass,
            name: "n",
            detail: "d",
        },
    }
    .encode(&mut good)
    .unwrap();
    for _ in 0..20_000 {
        let seed = crate::xorshift64(&mut rng);
        let mut b = good;
        b[(seed as usize) % n] = (seed >> 32) as u8;
        let len = (seed >> 40) as usize % (n + 2);
        let _ = Record::decode(&b[..len.min(RECORD_MAX)]);
    }
}
