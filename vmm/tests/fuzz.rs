//! A bounded fuzzer on stable Rust for every host-side decoder of guest or
//! user input (`vmm::fuzzing::TARGETS`): seeds (the `fuzz/corpus/TARGET`
//! files, the malformed-ELF corpus, built-in valid inputs) mutated at
//! random for `SMPCALL_FUZZ_MS` milliseconds per target (default 1500).
//! A panic is a finding: the input is saved and printed.
//!
//! The coverage-guided libFuzzer versions of the same targets are in
//! `fuzz/` (`fuzz/run.sh SECS`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::record::{Body, RECORD_MAX, Record, Verdict, WarnKind};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, 8, 16, 0xfe, b'S', b'R'];

/// One to four mutations: bit flips, bytes, interesting values, inserts,
/// deletes, truncation, splices with another seed.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 if len < 1 << 16 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i).min(64) + 1;
                input.drain(i..i + n);
            }
            5 => input.truncate(rng.below(len + 1)),
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let at = rng.below(len + 1);
                input.splice(at..at, other[from..].iter().take(256).copied());
            }
            _ if len >= 4 => {
                // A little-endian length or address somewhere.
                let i = rng.below(len - 3);
                let v = [0u32, 1, 0x7fff, 0xffff, 0x1_0000, 0x8000_0000, u32::MAX][rng.below(7)];
                input[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => input.push(rng.next() as u8),
        }
    }
}

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn encoded(body: Body<&str>) -> Vec<u8> {
    let mut buf = [0u8; RECORD_MAX];
    let n = Record { cpu: 1, body }.encode(&mut buf).expect("fits");
    buf[..n].to_vec()
}

/// Marker writes of a fan-out point's window and send parts (5 bytes each:
/// vCPU, marker value), as `vmm::fuzzing::bench` reads them: `Begin` /
/// `Probe`, `SendBegin` / `Probe`, `SendBegin` / `send-path`'s `Probe`, a
/// `Probe` without a begin, two `SendBegin`s, and one from another vCPU.
fn send_part_markers() -> Vec<u8> {
    use shared::bench::{Case, Marker, Phase};
    let fan = Case::FanoutShorthand;
    let mut v = Vec::new();
    for (cpu, case, phase) in [
        (0u8, fan, Phase::Begin),
        (0, fan, Phase::Probe),
        (0, fan, Phase::SendBegin),
        (0, fan, Phase::Probe),
        (0, fan, Phase::SendBegin),
        (0, Case::SendPath, Phase::Probe),
        (0, fan, Phase::Probe),
        (0, fan, Phase::SendBegin),
        (0, fan, Phase::SendBegin),
        (1, fan, Phase::Probe),
        (0, fan, Phase::Probe),
    ] {
        v.push(cpu);
        v.extend_from_slice(&Marker { case, phase }.value().to_le_bytes());
    }
    v
}

fn builtin_seeds(target: &str) -> Vec<Vec<u8>> {
    let records = vec![
        encoded(Body::CpuOnline {
            apic_id: shared::ApicId(3),
        }),
        encoded(Body::Test {
            verdict: Verdict::Skip,
            name: "case",
            detail: "détail",
        }),
        encoded(Body::Exception {
            vector: 14,
            error_code: 2,
            rip: 0x10_0000,
            cr2: 0xdead,
        }),
        encoded(Body::Warn {
            kind: WarnKind::IpiOnOfflineCpu,
            count: 1,
            detail: 7,
        }),
        encoded(Body::Counter {
            name: "scf.requests",
            value: 99,
        }),
        encoded(Body::CsdStall {
            id: 1,
            target: shared::CpuId(2),
            func: 0x10_1000,
            info: 3,
            waited_ns: 5_000_000,
            target_running: 0,
            nth: 1,
            resent_ipi: true,
        }),
        encoded(Body::CsdUnstuck {
            id: 1,
            target: shared::CpuId(2),
            func: 0x10_1000,
            waited_ns: 9_000_000,
            reports: 2,
        }),
    ];
    match target {
        "record" => records,
        "bench" => {
            use shared::bench::{Case, IdleMode, IpiMode, ResultHeader, Status, TargetSet};
            // Results with targets below 64, above it and at 1023, each
            // with its samples right after it.
            [&[1u32][..], &[1, 63, 64, 71][..], &[5, 1023][..]]
                .iter()
                .map(|cpus| {
                    let mut targets = TargetSet::EMPTY;
                    for &c in *cpus {
                        assert!(targets.insert(c));
                    }
                    let h = ResultHeader {
                        case: Case::FanoutCluster,
                        status: Status::Ok,
                        ipi_mode: IpiMode::Cluster,
                        idle_mode: IdleMode::Halt,
                        sender: 0,
                        iterations: 2,
                        total_cycles: 100,
                        tsc_khz: 1000,
                        ipis_sent: 8,
                        ipis_skipped: 0,
                        sample_count: 2,
                        target_count: cpus.len() as u32,
                        samples_addr: shared::bench::RESULT_MAX_LEN as u64,
                        targets,
                    };
                    let (b, _) = h.encode();
                    let mut v = b.to_vec();
                    v.extend_from_slice(&[7; 16]);
                    v
                })
                .chain([send_part_markers()])
                .collect()
        }
        "guest_io" => {
            // A console buffer and a record in memory, then writes of
            // their addresses to the console and record ports.
            let mut image = vec![0u8; 0x1000];
            image[0x100..0x102].copy_from_slice(&6u16.to_le_bytes());
            image[0x102..0x108].copy_from_slice(b"hello\n");
            image[0x200..0x200 + records[1].len()].copy_from_slice(&records[1]);
            for (port_sel, addr) in [(0u8, 0x100u32), (1, 0x200), (2, 0)] {
                image.extend_from_slice(&[0, port_sel, 2]);
                image.extend_from_slice(&addr.to_le_bytes());
            }
            vec![image]
        }
        "mailbox" => vec![vec![0; 64], {
            let mut m = vec![0u8; 0x200];
            m[..4].copy_from_slice(&shared::mailbox::READY.to_le_bytes());
            m[24..28].copy_from_slice(&8u32.to_le_bytes());
            m
        }],
        "specs" => [
            "\x04100ms:off 3; 250ms:on 3",
            "\x080-3,4-7",
            "\x04stall:1:500@20",
            "\x04spurious-ipi:1000",
            "\x04drop-ipi:0.25",
            "\x04{\"cpu\":3,\"state\":\"offline\"}",
            "\x04{\"stats\":true}",
            "\x04maxcpus=2 nr_cpus=0x10 run=torture",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        _ => Vec::new(),
    }
}

fn budget() -> Duration {
    let ms = std::env::var("SMPCALL_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    Duration::from_millis(ms)
}

fn fuzz(name: &str) {
    let (_, body) = vmm::fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known target");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seeds = files_in(&root.join("fuzz/corpus").join(name));
    if name == "elf" {
        seeds.extend(files_in(&root.join("vmm/tests/elf-corpus")));
    }
    seeds.extend(builtin_seeds(name));
    assert!(!seeds.is_empty(), "no seeds for {name}");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ name.len() as u64);
    let deadline = Instant::now() + budget();
    let mut tried = 0u64;
    let run = |input: &[u8]| {
        if std::panic::catch_unwind(|| body(input)).is_err() {
            let path =
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{name}.crash"));
            let _ = std::fs::write(&path, input);
            panic!(
                "fuzz target {name} failed on {} bytes (saved to {}): {:02x?}",
                input.len(),
                path.display(),
                &input[..input.len().min(256)]
            );
        }
    };
    for s in &seeds {
        run(s);
        tried += 1;
    }
    while Instant::now() < deadline {
        let mut input = seeds[rng.below(seeds.len())].clone();
        for _ in 0..64 {
            mutate(&mut rng, &mut input, &seeds);
            run(&input);
            tried += 1;
        }
    }
    eprintln!("fuzz {name}: {tried} inputs, no failure");
    assert!(tried > seeds.len() as u64);
}

#[test]
fn fuzz_record_decoder() {
    fuzz("record");
}

#[test]
fn fuzz_bench_result_decoder() {
    fuzz("bench");
}

#[test]
fn fuzz_guest_io() {
    fuzz("guest_io");
}

#[test]
fn fuzz_elf_check_and_load() {
    fuzz("elf");
}

#[test]
fn fuzz_mailbox_reply() {
    fuzz("mailbox");
}

#[test]
fn fuzz_user_and_socket_text() {
    fuzz("specs");
}
