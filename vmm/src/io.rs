//! The host side of the guest's port I/O: console bytes, records and the
//! exit status. All of it is untrusted: lengths are capped, records are
//! decoded by the checked decoder, and anything odd becomes a protocol
//! error in the outcome, never a panic.

use std::io::Write as _;
use std::sync::Mutex;

use shared::ports::{CONSOLE_CHUNK_MAX, CONSOLE_HEADER, Port};
use shared::record::{self, Body, HEADER_LEN, RECORD_MAX, Record};
use shared::status::GuestStatus;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::records::{OwnedRecord, Records};

/// Longest console line kept before it is cut.
const LINE_MAX: usize = 4096;
/// Most console bytes kept per run.
const CONSOLE_MAX: usize = 16 << 20;
/// Most records kept per run.
const RECORDS_MAX: usize = 1 << 20;
/// Most bytes of record strings kept per run (a guest sending a million
/// records of two 255-byte strings would otherwise cost the host half a
/// GiB).
const RECORD_BYTES_MAX: usize = 64 << 20;
/// Most protocol errors kept (the rest are counted).
const ERRORS_MAX: usize = 64;

/// What an `out` asked the VMM to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep running.
    Continue,
    /// The guest is done.
    Exit(GuestStatus),
    /// The guest wrote a meaningless exit status.
    BadExit(u32),
}

#[derive(Default)]
struct Console {
    text: String,
    partial: Vec<Vec<u8>>,
    dropped: bool,
}

/// Reads guest memory for the protocol; `false` when any byte of the range
/// is outside guest RAM.
pub trait GuestRead: Send + Sync {
    /// Fills `buf` from guest-physical `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

impl GuestRead for GuestMemoryMmap {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.read_slice(buf, GuestAddress(addr)).is_ok()
    }
}

/// Guest memory made of a byte vector at guest-physical 0: for tests and
/// fuzzing of everything that reads guest memory.
pub struct VecMemory(Mutex<Vec<u8>>);

impl VecMemory {
    /// Memory holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        VecMemory(Mutex::new(bytes))
    }

    /// Copies `bytes` to `addr` (panics outside the vector: test use only).
    pub fn write(&self, addr: usize, bytes: &[u8]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner())[addr..addr + bytes.len()]
            .copy_from_slice(bytes);
    }
}

impl GuestRead for VecMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(start) = usize::try_from(addr) else {
            return false;
        };
        match start
            .checked_add(buf.len())
            .and_then(|end| m.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// The vCPU a protocol error names (`vCPU N: ...`, as every message
/// here starts), if any.
fn vcpu_of(msg: &str) -> Option<u32> {
    let rest = msg.strip_prefix("vCPU ")?;
    rest[..rest.find(':')?].parse().ok()
}

/// Collects everything the guest sends, from all vCPU threads.
pub struct GuestIo {
    mem: std::sync::Arc<dyn GuestRead>,
    echo: bool,
    console: Mutex<Console>,
    records: Mutex<Vec<OwnedRecord>>,
    record_bytes: std::sync::atomic::AtomicUsize,
    errors: Mutex<(Vec<String>, usize)>,
    bench: Option<std::sync::Arc<crate::bench::Collector>>,
    /// Each CPU's first `CpuOnline` record, stamped on arrival.
    online_at: Mutex<Vec<(u32, std::time::Instant)>>,
    /// The timeline's VMM events and the flight recorder.
    recorder: Option<std::sync::Arc<crate::trace::Recorder>>,
}

impl GuestIo {
    /// A collector for `cpus` vCPUs; `echo` copies console lines to stdout.
    pub fn new(mem: std::sync::Arc<dyn GuestRead>, cpus: u32, echo: bool) -> Self {
        GuestIo {
            mem,
            echo,
            console: Mutex::new(Console {
                partial: vec![Vec::new(); cpus as usize],
                ..Default::default()
            }),
            records: Mutex::new(Vec::new()),
            record_bytes: std::sync::atomic::AtomicUsize::new(0),
            errors: Mutex::new((Vec::new(), 0)),
            bench: None,
            online_at: Mutex::new(Vec::new()),
            recorder: None,
        }
    }

    /// Notes stall reports, crashes and protocol errors in `recorder`
    /// (with a flight-recorder report of the CPUs involved).
    pub fn with_recorder(mut self, recorder: std::sync::Arc<crate::trace::Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Hands benchmark markers and results to `collector`.
    pub fn with_bench(mut self, collector: std::sync::Arc<crate::bench::Collector>) -> Self {
        self.bench = Some(collector);
        self
    }

    /// Notes a protocol error (kept up to a cap, then only counted).
    pub fn protocol_error(&self, msg: String) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.0.len() < ERRORS_MAX {
            log::warn!("{msg}");
            if let Some(r) = &self.recorder {
                r.protocol_error(vcpu_of(&msg), &msg);
            }
            e.0.push(msg);
        } else {
            e.1 += 1;
        }
    }

    /// Handles an `out` from `cpu`.
    pub fn port_out(&self, cpu: u32, port: u16, data: &[u8]) -> Action {
        match Port::try_from(port) {
            Ok(Port::Console) => {
                if let Some(addr) = self.address(cpu, "console", data) {
                    self.console_at(cpu, addr);
                }
                Action::Continue
            }
            Ok(Port::Record) => {
                if let Some(addr) = self.address(cpu, "record", data) {
                    self.record_at(cpu, addr);
                }
                Action::Continue
            }
            Ok(Port::BenchMarker) => {
                match (<[u8; 4]>::try_from(data), &self.bench) {
                    (Ok(b), Some(bench)) => {
                        if let Err(e) = bench.marker(cpu, u32::from_le_bytes(b)) {
                            self.protocol_error(format!("vCPU {cpu}: {e}"));
                        }
                    }
                    (Err(_), _) => self.protocol_error(format!(
                        "vCPU {cpu}: bench marker port written with {} bytes, expected 4",
                        data.len()
                    )),
                    (Ok(_), None) => {
                        self.protocol_error(format!("vCPU {cpu}: bench marker without a collector"))
                    }
                }
                Action::Continue
            }
            Ok(Port::BenchResult) => {
                if let Some(addr) = self.address(cpu, "bench result", data) {
                    match &self.bench {
                        Some(bench) => {
                            if let Err(e) = bench.result(cpu, addr, &*self.mem) {
                                self.protocol_error(format!("vCPU {cpu}: {e}"));
                            }
                        }
                        None => self.protocol_error(format!(
                            "vCPU {cpu}: bench result without a collector"
                        )),
                    }
                }
                Action::Continue
            }
            Ok(Port::Exit) => match <[u8; 4]>::try_from(data) {
                Ok(b) => {
                    let v = u32::from_le_bytes(b);
                    GuestStatus::try_from(v).map_or(Action::BadExit(v), Action::Exit)
                }
                Err(_) => {
                    self.protocol_error(format!(
                        "vCPU {cpu}: exit port written with {} bytes, expected 4",
                        data.len()
                    ));
                    Action::Continue
                }
            },
            Err(port) => {
                self.protocol_error(format!(
                    "vCPU {cpu}: write of {} bytes to unknown port {port:#x}",
                    data.len()
                ));
                Action::Continue
            }
        }
    }

    /// The guest-physical address in a 4-byte port write.
    fn address(&self, cpu: u32, what: &str, data: &[u8]) -> Option<u64> {
        match <[u8; 4]>::try_from(data) {
            Ok(b) => Some(u64::from(u32::from_le_bytes(b))),
            Err(_) => {
                self.protocol_error(format!(
                    "vCPU {cpu}: {what} port written with {} bytes, expected a 4-byte address",
                    data.len()
                ));
                None
            }
        }
    }

    fn console_at(&self, cpu: u32, addr: u64) {
        let mut len = [0u8; CONSOLE_HEADER];
        if !self.mem.read(addr, &mut len) {
            return self.protocol_error(format!(
                "vCPU {cpu}: console buffer at {addr:#x} is outside guest memory"
            ));
        }
        let len = usize::from(u16::from_le_bytes(len));
        if len > CONSOLE_CHUNK_MAX {
            return self.protocol_error(format!(
                "vCPU {cpu}: console write of {len} bytes (at most {CONSOLE_CHUNK_MAX})"
            ));
        }
        let mut text = vec![0u8; len];
        if !self.mem.read(addr + CONSOLE_HEADER as u64, &mut text) {
            return self.protocol_error(format!(
                "vCPU {cpu}: console text at {addr:#x}+{len} is outside guest memory"
            ));
        }
        self.console_bytes(cpu, &text);
    }

    fn record_at(&self, cpu: u32, addr: u64) {
        let mut header = [0u8; HEADER_LEN];
        if !self.mem.read(addr, &mut header) {
            return self.protocol_error(format!(
                "vCPU {cpu}: record at {addr:#x} is outside guest memory"
            ));
        }
        let len = match record::declared_len(&header) {
            Ok(len) => len,
            Err(record::DecodeError::TooLong { payload }) => {
                return self.protocol_error(format!(
                    "vCPU {cpu}: record at {addr:#x} declares a {payload}-byte payload; a record is at most {RECORD_MAX} bytes"
                ));
            }
            Err(e) => {
                return self.protocol_error(format!("vCPU {cpu}: record at {addr:#x}: {e}"));
            }
        };
        let mut buf = [0u8; RECORD_MAX];
        if !self.mem.read(addr, &mut buf[..len]) {
            return self.protocol_error(format!(
                "vCPU {cpu}: record at {addr:#x}+{len} runs outside guest memory"
            ));
        }
        self.record(cpu, &buf[..len]);
    }

    fn record(&self, cpu: u32, data: &[u8]) {
        match Record::decode(data) {
            Ok(rec) => {
                if u32::from(rec.cpu) != cpu {
                    self.protocol_error(format!(
                        "vCPU {cpu}: record claims to come from CPU {}",
                        rec.cpu
                    ));
                }
                self.note(cpu, &rec.body);
                // Relaxed: a budget, updated under the records lock below.
                let bytes = self
                    .record_bytes
                    .fetch_add(data.len(), std::sync::atomic::Ordering::Relaxed);
                let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
                if records.len() < RECORDS_MAX && bytes < RECORD_BYTES_MAX {
                    if let Body::CpuOnline { .. } = rec.body {
                        self.stamp_online(cpu);
                    }
                    records.push(OwnedRecord::new(cpu, &rec));
                } else {
                    drop(records);
                    self.protocol_error(format!("vCPU {cpu}: too many records; dropped"));
                }
            }
            Err(e) => self.protocol_error(format!(
                "vCPU {cpu}: malformed record ({} bytes): {e}",
                data.len()
            )),
        }
    }

    /// Stall and exception reports for the timeline and the flight
    /// recorder (read now, while the guest runs on).
    fn note(&self, cpu: u32, body: &Body<&str>) {
        let Some(r) = &self.recorder else { return };
        match *body {
            Body::CsdStall {
                id,
                target,
                func,
                info,
                nth,
                ..
            } => r.stall(cpu, target.0, id, func, info, nth),
            Body::Exception { vector, rip, .. } => {
                r.crash(cpu, vector, shared::vectors::exception_name(vector), rip)
            }
            _ => {}
        }
    }

    fn console_bytes(&self, cpu: u32, data: &[u8]) {
        let mut c = self.console.lock().unwrap_or_else(|p| p.into_inner());
        let Console {
            text,
            partial,
            dropped,
        } = &mut *c;
        let Some(buf) = partial.get_mut(cpu as usize) else {
            return;
        };
        for &b in data {
            if b == b'\n' || buf.len() >= LINE_MAX {
                let line = printable(&String::from_utf8_lossy(buf));
                buf.clear();
                if self.echo {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                }
                if text.len() + line.len() < CONSOLE_MAX {
                    text.push_str(&line);
                    text.push('\n');
                } else if !*dropped {
                    *dropped = true;
                    text.push_str("[console truncated]\n");
                }
                if b == b'\n' {
                    continue;
                }
            }
            buf.push(b);
        }
    }

    /// Notes when `cpu` first reported itself online (at most once per
    /// vCPU, so the list stays bounded by the vCPU count).
    fn stamp_online(&self, cpu: u32) {
        let now = std::time::Instant::now();
        let mut at = self.online_at.lock().unwrap_or_else(|p| p.into_inner());
        if !at.iter().any(|&(c, _)| c == cpu) {
            at.push((cpu, now));
        }
    }

    /// Each CPU's first online report, in arrival order.
    pub fn online_at(&self) -> Vec<(u32, std::time::Instant)> {
        self.online_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Everything collected: console text (with unfinished lines), records,
    /// protocol errors.
    pub fn take(&self) -> (String, Records, Vec<String>) {
        let mut c = self.console.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = std::mem::take(&mut c.text);
        for buf in c.partial.iter_mut().filter(|b| !b.is_empty()) {
            text.push_str(&printable(&String::from_utf8_lossy(buf)));
            text.push('\n');
            buf.clear();
        }
        let records = std::mem::take(&mut *self.records.lock().unwrap_or_else(|p| p.into_inner()));
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let mut errors = std::mem::take(&mut e.0);
        if e.1 > 0 {
            errors.push(format!("... and {} more protocol errors", e.1));
        }
        (text, records.into(), errors)
    }
}

/// The text with control characters (other than tab) shown as escapes, so
/// that a guest cannot drive the terminal the console is echoed to.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() && ch != '\t' {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::record::Body;
    use std::sync::Arc;

    fn setup(cpus: u32) -> (Arc<VecMemory>, GuestIo) {
        let mem = Arc::new(VecMemory::new(vec![0; 0x10000]));
        let io = GuestIo::new(mem.clone(), cpus, false);
        (mem, io)
    }

    fn put(mem: &VecMemory, addr: usize, bytes: &[u8]) {
        mem.write(addr, bytes);
    }

    fn console(mem: &VecMemory, io: &GuestIo, cpu: u32, text: &[u8]) {
        let mut b = (text.len() as u16).to_le_bytes().to_vec();
        b.extend_from_slice(text);
        put(mem, 0x1000, &b);
        io.port_out(cpu, Port::Console as u16, &0x1000u32.to_le_bytes());
    }

    #[test]
    fn console_lines_are_per_cpu() {
        let (mem, io) = setup(2);
        console(&mem, &io, 0, b"hel");
        console(&mem, &io, 1, b"other\n");
        console(&mem, &io, 0, b"lo\nrest");
        let (text, _, errors) = io.take();
        assert_eq!(text, "other\nhello\nrest\n");
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn hostile_output_becomes_protocol_errors() {
        let (mem, io) = setup(1);
        assert_eq!(io.port_out(0, 0x1234, b"x"), Action::Continue);
        assert_eq!(io.port_out(0, Port::Exit as u16, b"12"), Action::Continue);
        assert_eq!(
            io.port_out(0, Port::Exit as u16, &9u32.to_le_bytes()),
            Action::BadExit(9)
        );
        // Record port: wrong width, address outside memory, garbage.
        io.port_out(0, Port::Record as u16, b"ab");
        io.port_out(0, Port::Record as u16, &0xffff_fff0u32.to_le_bytes());
        put(&mem, 0x2000, b"garbage!");
        io.port_out(0, Port::Record as u16, &0x2000u32.to_le_bytes());
        // A header whose length runs past the end of memory.
        put(&mem, 0xfff8, b"SR\x05\0\0\0\xf0\x01");
        io.port_out(0, Port::Record as u16, &0xfff8u32.to_le_bytes());
        // Console: too long, outside memory, a CPU that does not exist.
        put(&mem, 0x3000, &u16::MAX.to_le_bytes());
        io.port_out(0, Port::Console as u16, &0x3000u32.to_le_bytes());
        io.port_out(0, Port::Console as u16, &0x10_0000u32.to_le_bytes());
        console(&mem, &io, 5, b"no such cpu\n");
        console(&mem, &io, 0, &vec![b'a'; CONSOLE_CHUNK_MAX]);
        console(&mem, &io, 0, &vec![b'a'; CONSOLE_CHUNK_MAX]);
        console(&mem, &io, 0, &vec![b'a'; CONSOLE_CHUNK_MAX]);
        console(&mem, &io, 0, &vec![b'a'; CONSOLE_CHUNK_MAX]);
        console(&mem, &io, 0, &vec![b'a'; CONSOLE_CHUNK_MAX]);
        let (text, records, errors) = io.take();
        assert!(records.is_empty());
        assert_eq!(errors.len(), 8, "{errors:#?}");
        assert!(text.lines().all(|l| l.len() <= LINE_MAX));
        for _ in 0..100 {
            io.port_out(0, 0x99, b"");
        }
        let (_, _, errors) = io.take();
        assert_eq!(errors.len(), ERRORS_MAX + 1);
    }

    #[test]
    fn console_escapes_control_characters() {
        let (mem, io) = setup(1);
        console(&mem, &io, 0, b"a\x1b[2J\x07b\tc\xc2\x9bd\n");
        let (text, _, _) = io.take();
        assert_eq!(text, "a\\u{1b}[2J\\u{7}b\tc\\u{9b}d\n");
    }

    #[test]
    fn console_and_records_are_capped() {
        let (mem, io) = setup(1);
        let mut rec = [0u8; RECORD_MAX];
        let long = "x".repeat(240);
        let n = Record {
            cpu: 0,
            body: Body::Test {
                verdict: shared::record::Verdict::Pass,
                name: &long,
                detail: &long,
            },
        }
        .encode(&mut rec)
        .unwrap();
        put(&mem, 0x4000, &rec[..n]);
        let rounds = RECORD_BYTES_MAX / n + 10;
        for _ in 0..rounds {
            io.port_out(0, Port::Record as u16, &0x4000u32.to_le_bytes());
        }
        let chunk = vec![b'y'; CONSOLE_CHUNK_MAX];
        for _ in 0..CONSOLE_MAX / CONSOLE_CHUNK_MAX + 8 {
            console(&mem, &io, 0, &chunk);
        }
        let (text, records, errors) = io.take();
        assert!(
            records.len() * n <= RECORD_BYTES_MAX + n,
            "{}",
            records.len()
        );
        assert!(records.len() < rounds);
        assert!(!errors.is_empty());
        assert!(text.len() <= CONSOLE_MAX + LINE_MAX + 64);
        assert!(text.contains("[console truncated]"));
    }

    #[test]
    fn records_are_decoded_and_tagged() {
        let (mem, io) = setup(4);
        let mut buf = [0u8; 64];
        let rec = Record {
            cpu: 3,
            body: Body::CpuOnline {
                apic_id: shared::ApicId(3),
            },
        };
        let n = rec.encode(&mut buf).unwrap();
        put(&mem, 0x4000, &buf[..n]);
        io.port_out(3, Port::Record as u16, &0x4000u32.to_le_bytes());
        io.port_out(2, Port::Record as u16, &0x4000u32.to_le_bytes());
        let (_, records, errors) = io.take();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].vcpu, 2);
        assert_eq!(errors.len(), 1, "spoofed CPU number is reported");
        assert_eq!(
            io.port_out(0, Port::Exit as u16, &0u32.to_le_bytes()),
            Action::Exit(GuestStatus::Success)
        );
    }

    #[test]
    fn bench_ports_reach_the_collector_and_garbage_is_refused() {
        use shared::bench::{
            Case, IdleMode, IpiMode, Marker, Phase, ResultHeader, Status, TargetSet,
        };
        let (mem, io) = setup(2);
        // Without a collector every bench write is a protocol error.
        let start = Marker {
            case: Case::RawPing,
            phase: Phase::Start,
        };
        io.port_out(0, Port::BenchMarker as u16, &start.value().to_le_bytes());
        let (_, _, errors) = io.take();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let bench = std::sync::Arc::new(crate::bench::Collector::without_stats(2, "test"));
        let io = GuestIo::new(mem.clone(), 2, false).with_bench(bench.clone());
        io.port_out(0, Port::BenchMarker as u16, &start.value().to_le_bytes());
        let end = Marker {
            phase: Phase::End,
            ..start
        };
        io.port_out(0, Port::BenchMarker as u16, &end.value().to_le_bytes());
        let h = ResultHeader {
            case: Case::RawPing,
            status: Status::Ok,
            ipi_mode: IpiMode::Phys,
            idle_mode: IdleMode::Halt,
            sender: 0,
            targets: TargetSet::from_words(|i| u64::from(i == 0) << 1),
            target_count: 1,
            iterations: 2,
            total_cycles: 10,
            tsc_khz: 1000,
            ipis_sent: 0,
            ipis_skipped: 0,
            sample_count: 2,
            samples_addr: 0x5100,
        };
        let (b, n) = h.encode();
        put(&mem, 0x5000, &b[..n]);
        let samples: Vec<u8> = [4u64, 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        put(&mem, 0x5100, &samples);
        io.port_out(0, Port::BenchResult as u16, &0x5000u32.to_le_bytes());
        // Garbage: a short write, a bad marker, a result outside memory.
        io.port_out(1, Port::BenchMarker as u16, b"ab");
        io.port_out(1, Port::BenchMarker as u16, &7u32.to_le_bytes());
        io.port_out(1, Port::BenchResult as u16, &0xffff_0000u32.to_le_bytes());
        let (_, _, errors) = io.take();
        assert_eq!(errors.len(), 3, "{errors:?}");
        let run = bench.take();
        assert_eq!(run.cases.len(), 1);
        assert_eq!(run.cases[0].samples, [4, 6]);
        assert!(run.cases[0].round.is_some());
    }
}
