//! The benchmark report: percentiles, per-operation KVM counters per vCPU,
//! the probed send path, where it ran (rendered as a table and as JSON in
//! `render.rs`).

use shared::bench::{Case, IdleMode, IpiMode, Status};

use super::collect::{BenchRun, CaseData, ProbeStats};
use crate::host::HostInfo;

/// What the report says about the machine.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// The host.
    pub host: HostInfo,
    /// vCPUs.
    pub vcpus: u32,
    /// The guest command line.
    pub cmdline: String,
    /// Tracing was on (the traced guest, with its trace points: more guest
    /// instructions per operation, no more VM exits). Compare a run with
    /// and without `--trace` for the cost.
    pub trace: bool,
    /// How long the VM took to come up, from the vmm's start (`None` when
    /// not measured).
    pub boot: Option<crate::boot_times::BootCurve>,
}

/// Nearest-rank percentiles of a set of values.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Of `values` (sorted or not); all zero when empty.
    pub fn of(values: &[u64]) -> Percentiles {
        let mut v = values.to_vec();
        v.sort_unstable();
        let rank = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i] as f64
        };
        Percentiles {
            min: rank(0.0),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: v.last().map_or(0.0, |&x| x as f64),
        }
    }

    /// Each value times `f`.
    pub fn scaled(self, f: f64) -> Percentiles {
        Percentiles {
            min: self.min * f,
            p50: self.p50 * f,
            p90: self.p90 * f,
            p99: self.p99 * f,
            max: self.max * f,
        }
    }
}

/// A vCPU's part in a case.
#[derive(Clone, Debug, PartialEq)]
pub struct VcpuPart {
    /// The vCPU (= guest CPU number).
    pub cpu: u32,
    /// `sender`, `target` or `idle`.
    pub role: &'static str,
    /// Counter deltas per operation, in [`BenchRun::counters`] order. The
    /// sender's have the measuring loop's own cost subtracted, and its
    /// `exits` the background exits of a spinning vCPU over the operation's
    /// time ([`Report::background_exits_per_s`]) instead.
    pub per_op: Vec<f64>,
}

/// One case, ready to print.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseReport {
    /// The case.
    pub case: Case,
    /// How it ended.
    pub status: Status,
    /// IPI mode it ran with.
    pub ipi_mode: IpiMode,
    /// Idle mode of the other CPUs.
    pub idle_mode: IdleMode,
    /// The issuing CPU.
    pub sender: u32,
    /// The CPUs taking part besides the sender, every one of them.
    pub targets: Vec<u32>,
    /// How many other CPUs take part.
    pub target_count: u32,
    /// Operations in the measured round.
    pub iterations: u64,
    /// Samples the percentiles are over.
    pub samples: usize,
    /// Per-operation latency in TSC cycles.
    pub cycles: Percentiles,
    /// The same in nanoseconds.
    pub ns: Percentiles,
    /// Round time divided by operations, in ns (for async: throughput).
    pub mean_ns: f64,
    /// IPIs the guest sent per operation.
    pub ipis_sent_per_op: f64,
    /// IPIs skipped (polling target) per operation.
    pub ipis_skipped_per_op: f64,
    /// Every vCPU's counters per operation (empty without KVM stats).
    pub vcpus: Vec<VcpuPart>,
    /// Background exits taken off the sender's `exits` per operation.
    pub sender_background_exits: Option<f64>,
    /// The probed section: counter deltas with the probe's own cost
    /// subtracted (minimum over `probe_pairs`), if the case has one.
    pub probe: Option<Vec<f64>>,
    /// Probe pairs measured.
    pub probe_pairs: u64,
    /// The send window of a fan-out point: the sender's counter deltas
    /// from the call of `smp_call_function_many(wait)` to its return, per
    /// call (mean over `probe_pairs` calls, each with the probe's own cost
    /// subtracted and never below 0), if the case has probe pairs. Exact
    /// counts of the window, no background estimate.
    pub window: Option<Vec<f64>>,
    /// The send part of a fan-out point: the sender's counter deltas from
    /// the call of `smp_call_function_many(wait)` to the end of its IPI
    /// send (the probe the arch writes after the last ICR write), per
    /// call, as `window` (mean over `send_pairs` calls less the probe's
    /// cost, never below 0).
    pub send_part: Option<Vec<f64>>,
    /// Send-part sections measured.
    pub send_pairs: u64,
    /// Sorted per-operation latencies in ns (for the plot).
    pub sorted_ns: Vec<f64>,
}

/// The whole report.
#[derive(Clone, Debug)]
pub struct Report {
    /// Where it ran.
    pub info: RunInfo,
    /// KVM counter names, in order.
    pub counters: Vec<&'static str>,
    /// Why there are no KVM counters, if there are none.
    pub stats_error: Option<String>,
    /// Host CPU of each vCPU thread.
    pub pinning: Vec<Option<usize>>,
    /// The guest's TSC frequency.
    pub tsc_khz: u64,
    /// The measuring loop's own cost per operation on the sender.
    pub harness_per_op: Vec<f64>,
    /// A `Begin`/`Probe` pair's own cost.
    pub probe_overhead: Vec<f64>,
    /// VM exits per second of a vCPU that spins without sending anything
    /// (the sender during the measuring loop's calibration round): what
    /// the host takes anyway, e.g. for its timer ticks. Without it a long
    /// operation would be charged for them.
    pub background_exits_per_s: Option<f64>,
    /// The measured cases (one row each).
    pub cases: Vec<CaseReport>,
    /// The fan-out curve: one point per mode and target count, in the
    /// order measured.
    pub fanout: Vec<CaseReport>,
}

/// Yury Norov's ipi_benchmark modes, and the case that is each.
pub const IPI_BENCHMARK: [(&str, &str); 5] = [
    ("dry_run", "dry-run"),
    ("self", "single-local"),
    ("unicast", "single-wait"),
    ("broadcast", "many-wait/"),
    ("broadcast_lock", "many-wait/lock"),
];

fn per_op(delta: &[u64], iterations: u64) -> Vec<f64> {
    delta
        .iter()
        .map(|&d| d as f64 / iterations.max(1) as f64)
        .collect()
}

impl Report {
    /// Builds the report of a run.
    pub fn new(info: RunInfo, run: &BenchRun) -> Report {
        let find = |c: Case| run.cases.iter().find(|d| d.header.case == c);
        // The calibration round's sender, and its counters.
        let calibrate = find(Case::Calibrate)
            .and_then(|d| Some((d, d.round.as_ref()?.get(usize::from(d.header.sender))?)));
        let harness_per_op = calibrate
            .map(|(d, sender)| per_op(sender, d.header.iterations))
            .unwrap_or_else(|| vec![0.0; run.counters.len()]);
        let probe_overhead = find(Case::ProbeCalibrate)
            .and_then(|d| d.probe.as_ref())
            .map(|p| p.min.iter().map(|&v| v as f64).collect())
            .unwrap_or_else(|| vec![0.0; run.counters.len()]);
        let tsc_khz = run
            .cases
            .iter()
            .map(|c| c.header.tsc_khz)
            .find(|&k| k != 0)
            .unwrap_or(0);
        let exits = run.counters.iter().position(|n| *n == "exits");
        let background_exits_per_s = calibrate.and_then(|(d, sender)| {
            let n = *sender.get(exits?)?;
            let (cycles, khz) = (d.header.total_cycles, d.header.tsc_khz);
            (cycles > 0 && khz > 0).then(|| n as f64 * khz as f64 * 1e3 / cycles as f64)
        });
        let background = exits.zip(background_exits_per_s);
        let report = |d| case_report(d, info.vcpus, &harness_per_op, &probe_overhead, background);
        let (fanout, cases): (Vec<CaseReport>, Vec<CaseReport>) = run
            .cases
            .iter()
            .filter(|d| !d.header.case.is_internal())
            .map(report)
            .partition(|c| c.case.is_fanout());
        Report {
            info,
            counters: run.counters.clone(),
            stats_error: run.stats_error.clone(),
            pinning: run.pinning.clone(),
            tsc_khz,
            harness_per_op,
            probe_overhead,
            background_exits_per_s,
            cases,
            fanout,
        }
    }

    /// The IPI mode the guest booted with (that of `single-wait`).
    pub fn boot_ipi_mode(&self) -> Option<IpiMode> {
        self.cases
            .iter()
            .find(|c| c.case == Case::SingleWait)
            .map(|c| c.ipi_mode)
    }

    /// The rows of ipi_benchmark's table: each mode with the case that is
    /// it (`broadcast`: `many-wait` under the boot IPI mode), if reported.
    pub fn ipi_benchmark(&self) -> Vec<(&'static str, Option<&CaseReport>)> {
        let boot = self.boot_ipi_mode().unwrap_or(IpiMode::Phys);
        IPI_BENCHMARK
            .iter()
            .map(|&(mode, name)| {
                let row = if mode == "broadcast" {
                    self.cases.iter().find(|c| {
                        c.case.name().starts_with(name)
                            && c.case != Case::ManyWaitLock
                            && c.ipi_mode == boot
                    })
                } else {
                    self.cases.iter().find(|c| c.case.name() == name)
                };
                (mode, row)
            })
            .collect()
    }

    /// The single round trip to a halted and to a spinning (polling)
    /// target: `single-wait` in the boot idle mode, and the case of the
    /// other mode.
    pub fn spin_vs_halt(&self) -> [(&'static str, Option<&CaseReport>); 2] {
        let find = |idle: IdleMode| {
            self.cases.iter().find(|c| {
                matches!(
                    c.case,
                    Case::SingleWait | Case::SingleWaitIdlePoll | Case::SingleWaitIdleHalt
                ) && c.status == Status::Ok
                    && c.idle_mode == idle
            })
        };
        [
            ("halted", find(IdleMode::Halt)),
            ("spinning", find(IdleMode::Poll)),
        ]
    }

    /// Index of a counter by name.
    pub fn counter(&self, name: &str) -> Option<usize> {
        self.counters.iter().position(|n| *n == name)
    }

    /// The one-line statement of where the numbers come from.
    pub fn host_line(&self) -> String {
        let h = &self.info.host;
        format!(
            "host: {}; KVM module {}; {}{}",
            h.cpu_model,
            h.kvm_module,
            if h.nested {
                "nested (the host is itself a guest)"
            } else {
                "bare metal"
            },
            if h.emulated {
                "; guest instructions are emulated"
            } else {
                ""
            }
        )
    }

    /// The caveat for hosts whose timings say little about bare-metal KVM.
    pub fn emulation_note(&self) -> Option<&'static str> {
        self.info.host.emulated.then_some(
            "this host's KVM emulates guest instructions (nested / software-assisted): \
             times are dominated by instruction count and mean little for bare-metal KVM; \
             the guest-instruction (insn_emulation) and VM-exit counts are exact",
        )
    }

    /// How the vCPU threads were placed.
    pub fn pinning_line(&self) -> String {
        if self.pinning.iter().all(Option::is_none) {
            return "not pinned".into();
        }
        let parts: Vec<String> = self
            .pinning
            .iter()
            .enumerate()
            .map(|(v, p)| match p {
                Some(h) => format!("vCPU{v}->CPU{h}"),
                None => format!("vCPU{v}->any"),
            })
            .collect();
        format!("pinned {}", parts.join(" "))
    }
}

/// `background`: the index of the `exits` counter and the background exit
/// rate per second, if known.
fn case_report(
    d: &CaseData,
    vcpus: u32,
    harness: &[f64],
    probe_cost: &[f64],
    background: Option<(usize, f64)>,
) -> CaseReport {
    let h = &d.header;
    let ns_per_cycle = if h.tsc_khz == 0 {
        0.0
    } else {
        1e6 / h.tsc_khz as f64
    };
    let iterations = h.iterations.max(1);
    let mean_ns = h.total_cycles as f64 * ns_per_cycle / iterations as f64;
    let sender_background = background.map(|(i, rate)| (i, rate * mean_ns / 1e9));
    let cycles = Percentiles::of(&d.samples);
    let mut sorted_ns: Vec<f64> = d.samples.iter().map(|&c| c as f64 * ns_per_cycle).collect();
    sorted_ns.sort_by(f64::total_cmp);
    let targets: Vec<u32> = h.targets.iter().collect();
    let target_count = h.target_count;
    let parts = d
        .round
        .as_ref()
        .map(|round| {
            round
                .iter()
                .enumerate()
                .take(vcpus as usize)
                .map(|(cpu, delta)| {
                    let cpu = cpu as u32;
                    let mut per = per_op(delta, h.iterations);
                    let role = if cpu == u32::from(h.sender) {
                        for (p, k) in per.iter_mut().zip(harness) {
                            *p -= k;
                        }
                        // The loop's exits are background too: charge the
                        // whole operation's time instead.
                        if let Some((i, bg)) = sender_background
                            && let (Some(p), Some(k)) = (per.get_mut(i), harness.get(i))
                        {
                            *p += k - bg;
                        }
                        "sender"
                    } else if h.targets.contains(cpu) {
                        "target"
                    } else {
                        "idle"
                    };
                    VcpuPart {
                        cpu,
                        role,
                        per_op: per,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let probe = d.probe.as_ref().map(|p| {
        p.min
            .iter()
            .zip(probe_cost.iter().chain(std::iter::repeat(&0.0)))
            .map(|(&v, &k)| v as f64 - k)
            .collect()
    });
    // Per call: the pairs' sum less the probe's cost for each pair.
    let per_call = |p: &ProbeStats| -> Vec<f64> {
        p.sum
            .iter()
            .zip(probe_cost.iter().chain(std::iter::repeat(&0.0)))
            .map(|(&v, &k)| (v as f64 / p.count as f64 - k).max(0.0))
            .collect()
    };
    let window = d.probe.as_ref().filter(|p| p.count > 0).map(per_call);
    let send_part = d.send_probe.as_ref().filter(|p| p.count > 0).map(per_call);
    CaseReport {
        case: h.case,
        status: h.status,
        ipi_mode: h.ipi_mode,
        idle_mode: h.idle_mode,
        sender: u32::from(h.sender),
        targets,
        target_count,
        iterations: h.iterations,
        samples: d.samples.len(),
        ns: cycles.scaled(ns_per_cycle),
        cycles,
        mean_ns,
        ipis_sent_per_op: h.ipis_sent as f64 / iterations as f64,
        ipis_skipped_per_op: h.ipis_skipped as f64 / iterations as f64,
        sender_background_exits: sender_background.map(|(_, bg)| bg),
        vcpus: parts,
        probe,
        probe_pairs: d.probe.as_ref().map_or(0, |p| p.count),
        window,
        send_part,
        send_pairs: d.send_probe.as_ref().map_or(0, |p| p.count),
        sorted_ns,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use shared::bench::{ResultHeader, TargetSet};

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).rev().collect();
        let p = Percentiles::of(&v);
        assert_eq!(
            (p.min, p.p50, p.p90, p.p99, p.max),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        let p = Percentiles::of(&[7]);
        assert_eq!((p.min, p.p50, p.p99, p.max), (7.0, 7.0, 7.0, 7.0));
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        assert_eq!(Percentiles::of(&[10, 20]).scaled(0.5).p50, 5.0);
    }

    pub(crate) fn sample_run() -> BenchRun {
        let header = |case, iterations, sample_count| ResultHeader {
            case,
            status: Status::Ok,
            ipi_mode: IpiMode::Phys,
            idle_mode: IdleMode::Halt,
            sender: 0,
            targets: TargetSet::from_words(|i| if i == 0 { 0b10 } else { 0 }),
            target_count: 1,
            iterations,
            total_cycles: iterations * 2000,
            tsc_khz: 2_000_000,
            ipis_sent: iterations,
            ipis_skipped: 0,
            sample_count,
            samples_addr: 0,
        };
        BenchRun {
            counters: vec!["exits", "insn_emulation"],
            stats_error: None,
            pinning: vec![Some(0), None],
            cases: vec![
                CaseData {
                    header: header(Case::Calibrate, 10, 0),
                    samples: vec![],
                    round: Some(vec![vec![10, 200], vec![0, 0]]),
                    probe: None,
                    send_probe: None,
                },
                CaseData {
                    header: header(Case::ProbeCalibrate, 4, 0),
                    samples: vec![],
                    round: None,
                    probe: Some(ProbeStats {
                        vcpu: 0,
                        count: 4,
                        min: vec![1, 3],
                        max: vec![1, 3],
                        sum: vec![4, 12],
                    }),
                    send_probe: None,
                },
                CaseData {
                    header: header(Case::SingleWait, 4, 4),
                    samples: vec![4000, 2000, 3000, 2200],
                    round: Some(vec![vec![16, 400], vec![8, 240]]),
                    probe: Some(ProbeStats {
                        vcpu: 0,
                        count: 4,
                        min: vec![2, 40],
                        max: vec![2, 50],
                        sum: vec![8, 180],
                    }),
                    send_probe: None,
                },
            ],
        }
    }

    pub(crate) fn sample_info() -> RunInfo {
        RunInfo {
            host: HostInfo {
                cpu_model: "Test CPU <&>".into(),
                kvm_module: "kvm_pvm".into(),
                nested: true,
                emulated: true,
            },
            vcpus: 2,
            cmdline: "run=bench".into(),
            trace: false,
            boot: None,
        }
    }

    #[test]
    fn numbers_are_derived_per_operation() {
        let r = Report::new(sample_info(), &sample_run());
        assert_eq!(r.cases.len(), 1, "internal cases are not rows");
        let c = &r.cases[0];
        assert_eq!(c.targets, [1]);
        assert_eq!(c.ns.p50, 1100.0);
        assert_eq!(c.mean_ns, 1000.0);
        assert_eq!(r.harness_per_op, [1.0, 20.0]);
        let sender = &c.vcpus[0];
        assert_eq!(
            (sender.role, sender.per_op.clone()),
            ("sender", vec![3.0, 80.0])
        );
        assert_eq!(c.vcpus[1].per_op, [2.0, 60.0]);
        assert_eq!(c.probe.as_deref(), Some(&[1.0, 37.0][..]));
        let t = r.table();
        assert!(t.contains("single-wait") && t.contains("NOTE:"), "{t}");
        assert!(t.contains("37 guest instructions"), "{t}");
        assert!(t.contains("1000000 exits/s"), "{t}");
    }

    #[test]
    fn sender_exits_are_charged_the_background_over_the_operation_time() {
        let mut run = sample_run();
        // The calibration round: 10 exits in 10 µs of spinning.
        assert_eq!(
            Report::new(sample_info(), &run).background_exits_per_s,
            Some(1e6)
        );
        // A case whose operations take 5 µs (5 times the loop's): 5
        // background exits each, 9 in all, so 4 beyond background; the
        // instructions still lose only the loop's 20 per operation.
        let case = &mut run.cases[2];
        case.header.total_cycles = case.header.iterations * 10_000;
        case.round = Some(vec![vec![36, 400], vec![8, 240]]);
        let r = Report::new(sample_info(), &run);
        let c = &r.cases[0];
        assert_eq!(c.mean_ns, 5000.0);
        assert_eq!(c.sender_background_exits, Some(5.0));
        assert_eq!(c.vcpus[0].per_op, [4.0, 80.0]);
        assert_eq!(c.vcpus[1].per_op, [2.0, 60.0], "targets untouched");
        // Without a calibration round nothing is charged but the loop.
        run.cases.remove(0);
        let r = Report::new(sample_info(), &run);
        assert_eq!(r.background_exits_per_s, None);
        assert_eq!(r.cases[0].vcpus[0].per_op, [9.0, 100.0]);
    }

    #[test]
    fn fanout_send_window_is_exact_per_call_and_never_negative() {
        let mut run = sample_run();
        let mut h = run.cases[2].header;
        h.case = Case::FanoutCluster;
        // 72 vCPUs: targets above 63 are named.
        h.targets = TargetSet::EMPTY;
        for cpu in 1..72 {
            assert!(h.targets.insert(cpu));
        }
        h.target_count = 71;
        run.cases.push(CaseData {
            header: h,
            samples: vec![2000; 4],
            round: Some(vec![vec![1, 400]; 72]),
            // 4 calls: 1 + 2 + 2 + 3 exits with the probe's 1 each, so 4
            // in the windows; instructions 100 each with the probe's 3.
            probe: Some(ProbeStats {
                vcpu: 0,
                count: 4,
                min: vec![1, 103],
                max: vec![3, 103],
                sum: vec![8, 412],
            }),
            // 2 send parts: 2 + 4 exits with the probe's 1 each, so 2 per
            // call; instructions 43 and 53 with the probe's 3 each: 45.
            send_probe: Some(ProbeStats {
                vcpu: 0,
                count: 2,
                min: vec![2, 43],
                max: vec![4, 53],
                sum: vec![6, 96],
            }),
        });
        let mut info = sample_info();
        info.vcpus = 72;
        let r = Report::new(info, &run);
        let f = &r.fanout[0];
        assert_eq!(f.targets, (1..72).collect::<Vec<u32>>());
        assert_eq!(f.vcpus.iter().filter(|v| v.role == "target").count(), 71);
        assert_eq!(f.window.as_deref(), Some(&[1.0, 100.0][..]));
        assert_eq!(f.send_part.as_deref(), Some(&[2.0, 45.0][..]));
        assert_eq!((f.probe_pairs, f.send_pairs), (4, 2));
        // The background estimate can go negative; the window cannot.
        assert!(f.sender_part().unwrap().per_op[0] < 0.0);
        run.cases[3].probe.as_mut().unwrap().sum = vec![4, 0];
        run.cases[3].send_probe.as_mut().unwrap().sum = vec![0, 0];
        let r = Report::new(sample_info(), &run);
        assert_eq!(r.fanout[0].window.as_deref(), Some(&[0.0, 0.0][..]));
        assert_eq!(r.fanout[0].send_part.as_deref(), Some(&[0.0, 0.0][..]));
        let j = r.json();
        assert_eq!(j["fanout"][0]["sender_send"]["calls"], 2);
        assert_eq!(j["fanout"][0]["sender_send"]["per_call"]["exits"], 0.0);
        assert_eq!(
            j["fanout"][0]["sender_send"]["per_call"]["insn_emulation"],
            0.0
        );
        assert_eq!(j["fanout"][0]["sender_window"]["calls"], 4);
        assert_eq!(j["fanout"][0]["sender_window"]["per_call"]["exits"], 0.0);
        assert_eq!(j["fanout"][0]["target_cpus"].as_array().unwrap().len(), 71);
    }
}
