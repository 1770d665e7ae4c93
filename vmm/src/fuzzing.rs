//! Fuzz-target bodies for every host-side decoder of guest or user input,
//! shared by the libFuzzer targets in `fuzz/` and the bounded stable fuzzer
//! that `cargo test` runs (`vmm/tests/fuzz.rs`). Each takes arbitrary
//! bytes, must never panic, and asserts the decoder's own invariants: a
//! panic is a finding.

use std::sync::{Mutex, OnceLock};

use shared::layout::{HOST_MAILBOX, HOST_STATS, KERNEL, MAX_MEM};
use shared::mailbox::Op;
use shared::ports::Port;
use shared::record::{self, HEADER_LEN, RECORD_MAX, Record};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::io::{Action, GuestIo, VecMemory};

/// A fuzz target: a name (the `fuzz/` target and corpus directory) and its
/// body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 6] = [
    ("record", record),
    ("bench", bench),
    ("guest_io", guest_io),
    ("elf", elf),
    ("mailbox", mailbox),
    ("specs", specs),
];

/// `shared::record`: `declared_len` and `Record::decode`. A record that
/// decodes re-encodes to exactly the same bytes, and its header declares
/// exactly its length.
pub fn record(data: &[u8]) {
    let header = data
        .get(..HEADER_LEN)
        .and_then(|h| <[u8; HEADER_LEN]>::try_from(h).ok());
    if let Some(h) = header
        && let Ok(n) = record::declared_len(&h)
    {
        assert!((HEADER_LEN..=RECORD_MAX).contains(&n), "declared_len {n}");
    }
    if let Ok(rec) = Record::decode(data) {
        let mut buf = [0u8; RECORD_MAX];
        let n = rec.encode(&mut buf).expect("a decoded record re-encodes");
        assert_eq!(&buf[..n], data, "decode then encode changed the bytes");
        assert_eq!(header.map(|h| record::declared_len(&h)), Some(Ok(n)));
    }
}

/// vCPUs of the VM [`bench`] pretends to run in: more than 64, so that
/// targets above CPU 63 are accepted and those past the VM refused.
const BENCH_CPUS: usize = 72;

/// `shared::bench` and the VMM's bench collector: `result_len`,
/// `ResultHeader::decode` (a result that decodes re-encodes to exactly its
/// bytes, `result_len` says its length, its targets are exactly
/// `target_count` CPUs below `MAX_CPUS`), `Marker::decode` on the first 4
/// bytes, `Collector::marker` on every 5-byte chunk (a vCPU, a marker
/// value: any order of `Begin`, `SendBegin`, `Probe`, `Start`, `End`), and
/// `Collector::result` on a fake guest memory holding the input at 0 (a
/// result it keeps names only CPUs of the VM, and counts no more probed
/// sections than there were `Probe` markers).
pub fn bench(data: &[u8]) {
    use shared::bench::{Marker, RESULT_MAX_LEN, RESULT_MIN_LEN, ResultHeader, result_len};
    let len = result_len(data);
    if let Ok(n) = len {
        assert!(
            (RESULT_MIN_LEN..=RESULT_MAX_LEN).contains(&n),
            "result_len {n}"
        );
    }
    if let Ok(h) = ResultHeader::decode(data) {
        let (b, n) = h.encode();
        assert_eq!(len, Ok(n), "result_len disagrees with the decoded length");
        assert_eq!(&b[..n], &data[..n], "decode then encode changed the bytes");
        assert_eq!(h.targets.count(), h.target_count);
        assert!(h.targets.iter().all(|c| (c as usize) < shared::MAX_CPUS));
    }
    if let Some(b) = data.get(..4) {
        let _ = Marker::decode(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
    let collector = crate::bench::Collector::without_stats(BENCH_CPUS, "fuzz");
    let mut probes = 0u64;
    for c in data.chunks_exact(5) {
        let cpu = u32::from(c[0]) % BENCH_CPUS as u32;
        let value = u32::from_le_bytes([c[1], c[2], c[3], c[4]]);
        let _ = collector.marker(cpu, value);
        probes += u64::from(matches!(
            Marker::decode(value),
            Ok(m) if m.phase == shared::bench::Phase::Probe
        ));
    }
    let mem = VecMemory::new(data.to_vec());
    let sender = data.get(8).map_or(0, |&c| u32::from(c) % BENCH_CPUS as u32);
    if collector.result(sender, 0, &mem).is_ok() {
        let run = collector.take();
        assert_eq!(run.cases.len(), 1);
        let d = &run.cases[0];
        let h = &d.header;
        assert!(h.targets.iter().all(|c| (c as usize) < BENCH_CPUS));
        assert!(d.samples.len() <= shared::bench::MAX_SAMPLES);
        let sections = [&d.probe, &d.send_probe]
            .iter()
            .filter_map(|p| p.as_ref().map(|p| p.count))
            .sum::<u64>();
        assert!(
            sections <= probes,
            "{sections} sections from {probes} probes"
        );
    }
}

/// Size of [`guest_io`]'s fake guest memory.
const IO_MEM: usize = 0x2000;

/// `vmm::io`: the console, record and exit ports, on a fake guest memory.
/// The input is a memory image followed by port writes (7 bytes each: CPU,
/// port, width, 32-bit value), addresses landing in and around the image.
/// Nothing the guest writes may panic the VMM, produce more records than
/// record writes, or end the run except a 4-byte exit write.
pub fn guest_io(data: &[u8]) {
    let split = data.len().saturating_sub(7 * 64).max(data.len() / 2);
    let (image, ops) = data.split_at(split);
    let mut mem = vec![0u8; IO_MEM];
    let n = image.len().min(IO_MEM);
    mem[..n].copy_from_slice(&image[..n]);
    let io = GuestIo::new(std::sync::Arc::new(VecMemory::new(mem)), 4, false);
    let mut record_writes = 0;
    for op in ops.chunks_exact(7) {
        let cpu = u32::from(op[0] % 5); // 4 is not a vCPU of this VM
        let port = match op[1] % 4 {
            0 => Port::Console as u16,
            1 => Port::Record as u16,
            2 => Port::Exit as u16,
            _ => u16::from_le_bytes([op[2], op[1]]),
        };
        let width = [1usize, 2, 4, 4, 8][usize::from(op[2]) % 5];
        let raw = u32::from_le_bytes([op[3], op[4], op[5], op[6]]);
        // Mostly addresses in and just past the image, sometimes anything.
        let value = if raw & 0x8000_0000 == 0 {
            raw % (IO_MEM as u32 + 64)
        } else {
            raw
        };
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&value.to_le_bytes());
        let action = io.port_out(cpu, port, &bytes[..width]);
        if port == Port::Record as u16 {
            record_writes += 1;
        }
        if port != Port::Exit as u16 || width != 4 {
            assert_eq!(action, Action::Continue, "port {port:#x} width {width}");
        }
    }
    let (text, records, _errors) = io.take();
    assert!(records.len() <= record_writes);
    assert!(
        !text.contains('\u{1b}'),
        "an escape character reached the console"
    );
}

/// `vmm::elf::check`, then linux-loader on what it accepts (as the VMM
/// does): an accepted image has its entry in its extent, fits the largest
/// guest memory, and loading it never panics.
pub fn elf(data: &[u8]) {
    let Ok(image) = crate::elf::check(data) else {
        return;
    };
    assert!(image.entry >= KERNEL.0 && image.entry < image.end);
    assert!(image.end <= MAX_MEM);
    // Load small images into a reused 4 MiB memory.
    const LOAD_MEM: usize = 4 << 20;
    if image.end as usize > LOAD_MEM {
        return;
    }
    static MEM: OnceLock<Option<Mutex<GuestMemoryMmap>>> = OnceLock::new();
    let Some(mem) = MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), LOAD_MEM)])
            .ok()
            .map(Mutex::new)
    }) else {
        return;
    };
    let mem = mem.lock().unwrap_or_else(|p| p.into_inner());
    use linux_loader::loader::KernelLoader;
    let _ = linux_loader::loader::elf::Elf::load(
        &*mem,
        None,
        &mut std::io::Cursor::new(data),
        Some(GuestAddress(KERNEL.0)),
    );
}

/// `vmm::mailbox::read_reply`: whatever the guest leaves in the mailbox
/// page, a reply has at most `STATS_CAPACITY` stats, and stats only for
/// [`Op::Stats`].
pub fn mailbox(data: &[u8]) {
    static MEM: OnceLock<Option<Mutex<GuestMemoryMmap>>> = OnceLock::new();
    let Some(mem) = MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), HOST_STATS.end() as usize)])
            .ok()
            .map(Mutex::new)
    }) else {
        return;
    };
    let mem = mem.lock().unwrap_or_else(|p| p.into_inner());
    let mut page = vec![0u8; HOST_MAILBOX.size as usize];
    let n = data.len().min(page.len());
    page[..n].copy_from_slice(&data[..n]);
    if mem
        .write_slice(&page, GuestAddress(HOST_MAILBOX.start.0))
        .is_err()
    {
        return;
    }
    for op in [Op::Offline, Op::Online, Op::Stats, Op::Finish] {
        let reply = crate::mailbox::read_reply(&mem, op).expect("the mailbox page is mapped");
        assert!(reply.stats.len() <= shared::mailbox::STATS_CAPACITY);
        assert!(op == Op::Stats || reply.stats.is_empty());
    }
    if let Some(b) = data.get(..4)
        && let Ok(op) = Op::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    {
        assert_eq!(op as u32, u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
}

/// The user's and the control socket's text: `--hotplug` schedules,
/// `--numa` maps, `--fault` specs, control-socket JSON, guest command-line
/// words. The first byte picks the VM's CPU count.
pub fn specs(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let cpus = u32::from(first % 66);
    let text = String::from_utf8_lossy(rest);
    if let Ok(steps) = crate::hotplug_driver::parse_schedule(&text, cpus) {
        assert!(!steps.is_empty());
        assert!(steps.iter().all(|s| s.cpu < cpus));
        assert!(steps.windows(2).all(|w| w[0].at <= w[1].at));
    }
    if let Ok(nodes) = crate::config::parse_numa(&text, cpus) {
        assert_eq!(nodes.len(), cpus as usize);
        assert!(nodes.iter().all(|n| *n < 64));
    }
    if let Ok(crate::fault::Fault::DropIpi { probability }) = crate::fault::Fault::parse(&text) {
        assert!(probability > 0.0 && probability <= 1.0);
    }
    match crate::api::parse_request(&text, cpus) {
        Ok(crate::api::Request::Hotplug { cpu, .. }) => assert!(cpu < cpus),
        Ok(_) => {}
        Err(why) => assert!(!why.is_empty()),
    }
    for p in shared::cmdline::params(&text) {
        let _ = shared::cmdline::parse_u64(p.value);
    }
}
