//! The VMM side of a benchmark run: handles the guest's markers and results
//! (`shared::bench`) as they arrive, from whichever vCPU thread took the
//! exit, and keeps what the report needs.
//!
//! A `Start` / `End` marker pair snapshots every vCPU's KVM counters; the
//! latest complete pair of a case is attached to the case's result when it
//! arrives. A `Begin` / `Probe` pair measures one section on the marking
//! vCPU only; the minimum over all pairs of a case is kept (the section is
//! deterministic, so the minimum is the section without interference),
//! with the maximum and the sum. A `SendBegin` / `Probe` pair (a fan-out
//! call's send part) is kept the same way, apart, under the `SendBegin`'s
//! case: its `Probe` names that case or `send-path` (the single-target
//! path's constant marker). A vCPU has one open section: a second
//! `Begin` or `SendBegin` replaces the first, and a `Probe` without one is
//! a protocol error.
//!
//! Everything is bounded: the guest chooses how many markers it writes, but
//! state is kept per case id, and at most [`MAX_CASES`] results are kept.

use std::collections::BTreeMap;
use std::sync::Mutex;

use shared::bench::{Case, MAX_SAMPLES, Marker, Phase, RESULT_MIN_LEN, ResultHeader, result_len};

use crate::io::GuestRead;
use crate::kvm_stats::{self, VcpuStats};

/// Most case results kept per run.
pub const MAX_CASES: usize = 256;

/// Counter deltas of every vCPU over one measured round, `[vcpu][counter]`.
pub type Deltas = Vec<Vec<u64>>;

/// Counter deltas of the section between a `Begin` and a `Probe` marker
/// of one vCPU: minimum, maximum and sum over the pairs seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStats {
    /// The vCPU that wrote the markers.
    pub vcpu: u32,
    /// Pairs seen.
    pub count: u64,
    /// Per counter, the smallest delta.
    pub min: Vec<u64>,
    /// Per counter, the largest delta.
    pub max: Vec<u64>,
    /// Per counter, the sum of the deltas (for the mean over `count`).
    pub sum: Vec<u64>,
}

/// One case as the guest reported it, with the KVM counters around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseData {
    /// The guest's result header (untrusted, but validated).
    pub header: ResultHeader,
    /// Per-operation TSC cycles (the last operations of the final round).
    pub samples: Vec<u64>,
    /// Counter deltas of the final round (`None` without markers or stats).
    pub round: Option<Deltas>,
    /// Probe sections of this case, if it had any.
    pub probe: Option<ProbeStats>,
    /// Send-part sections of this case (`SendBegin` / `Probe`), if any.
    pub send_probe: Option<ProbeStats>,
}

/// What a run's benchmark produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BenchRun {
    /// Names of the KVM counters in every delta, in order.
    pub counters: Vec<&'static str>,
    /// Why KVM statistics are unavailable, if they are.
    pub stats_error: Option<String>,
    /// The host CPU each vCPU thread was pinned to (`None`: not pinned).
    pub pinning: Vec<Option<usize>>,
    /// The reported cases, in arrival order.
    pub cases: Vec<CaseData>,
}

/// A vCPU's open probed section: its snapshot at the `Begin`, and for a
/// `SendBegin` the case the send part counts for.
struct Open {
    send: Option<Case>,
    snap: Vec<u64>,
}

#[derive(Default)]
struct State {
    open: BTreeMap<Case, Vec<Vec<u64>>>,
    rounds: BTreeMap<Case, Deltas>,
    begin: BTreeMap<u32, Open>,
    probes: BTreeMap<Case, ProbeStats>,
    send_probes: BTreeMap<Case, ProbeStats>,
    cases: Vec<CaseData>,
    pinning: Vec<Option<usize>>,
}

/// Collects a run's markers and results.
pub struct Collector {
    vcpus: Vec<VcpuStats>,
    names: Vec<&'static str>,
    /// Per vCPU, the byte offset of each of `names`.
    offsets: Vec<Vec<usize>>,
    stats_error: Option<String>,
    /// vCPUs of the VM (every CPU a result names is below).
    cpus: u32,
    state: Mutex<State>,
}

fn sub(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_sub(*y)).collect()
}

/// Adds section `d` of vCPU `cpu` to `case`'s stats in `map`; an error if
/// the case's sections came from another vCPU.
fn add_section(
    map: &mut BTreeMap<Case, ProbeStats>,
    case: Case,
    cpu: u32,
    d: &[u64],
) -> Result<(), String> {
    let p = map.entry(case).or_insert_with(|| ProbeStats {
        vcpu: cpu,
        count: 0,
        min: vec![u64::MAX; d.len()],
        max: vec![0; d.len()],
        sum: vec![0; d.len()],
    });
    if p.vcpu != cpu || p.min.len() != d.len() {
        return Err(format!("bench: probes of {} from two vCPUs", case.name()));
    }
    p.count += 1;
    for (i, v) in d.iter().enumerate() {
        p.min[i] = p.min[i].min(*v);
        p.max[i] = p.max[i].max(*v);
        p.sum[i] = p.sum[i].saturating_add(*v);
    }
    Ok(())
}

impl Collector {
    /// A collector over these vCPUs' statistics (`stats` in vCPU order; an
    /// error when KVM has no binary statistics: timings are still kept).
    pub fn new(stats: Result<Vec<VcpuStats>, kvm_stats::StatsError>, cpus: usize) -> Self {
        let (vcpus, stats_error) = match stats {
            Ok(v) => (v, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        // The counters every vCPU has, in report order.
        let names: Vec<&'static str> = kvm_stats::WANTED
            .iter()
            .copied()
            .filter(|n| !vcpus.is_empty() && vcpus.iter().all(|v| v.layout().counter(n).is_some()))
            .collect();
        let offsets = vcpus
            .iter()
            .map(|v| names.iter().filter_map(|n| v.layout().counter(n)).collect())
            .collect();
        Collector {
            vcpus,
            names,
            offsets,
            stats_error,
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
            state: Mutex::new(State {
                pinning: vec![None; cpus],
                ..State::default()
            }),
        }
    }

    /// A collector without KVM statistics (for tests).
    pub fn without_stats(cpus: usize, why: &str) -> Self {
        let mut c = Self::new(Ok(Vec::new()), cpus);
        c.stats_error = Some(why.to_string());
        c
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_one(&self, vcpu: usize) -> Vec<u64> {
        match (self.vcpus.get(vcpu), self.offsets.get(vcpu)) {
            (Some(s), Some(o)) => s.read(o).unwrap_or_else(|_| vec![0; o.len()]),
            _ => Vec::new(),
        }
    }

    fn read_all(&self) -> Vec<Vec<u64>> {
        (0..self.vcpus.len()).map(|v| self.read_one(v)).collect()
    }

    /// Notes where vCPU `cpu`'s thread is pinned.
    pub fn set_pinning(&self, cpu: u32, host_cpu: Option<usize>) {
        if let Some(slot) = self.lock().pinning.get_mut(cpu as usize) {
            *slot = host_cpu;
        }
    }

    /// Handles a marker written by vCPU `cpu`; an error is a protocol error.
    pub fn marker(&self, cpu: u32, value: u32) -> Result<(), String> {
        let m = Marker::decode(value).map_err(|e| e.to_string())?;
        match m.phase {
            Phase::Start => {
                let snap = self.read_all();
                self.lock().open.insert(m.case, snap);
            }
            Phase::End => {
                let snap = self.read_all();
                let mut st = self.lock();
                let Some(start) = st.open.remove(&m.case) else {
                    return Err(format!("bench: end of {} without a start", m.case.name()));
                };
                let deltas = snap.iter().zip(&start).map(|(e, s)| sub(e, s)).collect();
                st.rounds.insert(m.case, deltas);
            }
            Phase::Begin | Phase::SendBegin => {
                let snap = self.read_one(cpu as usize);
                let send = (m.phase == Phase::SendBegin).then_some(m.case);
                self.lock().begin.insert(cpu, Open { send, snap });
            }
            Phase::Probe => {
                let snap = self.read_one(cpu as usize);
                let mut st = self.lock();
                let Some(open) = st.begin.remove(&cpu) else {
                    return Err(format!("bench: probe of {} without a begin", m.case.name()));
                };
                let d = sub(&snap, &open.snap);
                match open.send {
                    None => add_section(&mut st.probes, m.case, cpu, &d)?,
                    Some(case) if m.case == case || m.case == Case::SendPath => {
                        add_section(&mut st.send_probes, case, cpu, &d)?
                    }
                    Some(case) => {
                        return Err(format!(
                            "bench: probe of {} ends the send part of {}",
                            m.case.name(),
                            case.name()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles a result block at guest-physical `addr`, written by vCPU
    /// `cpu`; an error is a protocol error.
    pub fn result(&self, cpu: u32, addr: u64, mem: &dyn GuestRead) -> Result<(), String> {
        let mut head = [0u8; RESULT_MIN_LEN];
        if !mem.read(addr, &mut head) {
            return Err(format!("bench result at {addr:#x} is outside guest memory"));
        }
        // The fixed part says how many target words follow (bounded by
        // `shared::MAX_CPUS`); read exactly those.
        let len = result_len(&head).map_err(|e| e.to_string())?;
        let mut raw = vec![0u8; len];
        if !mem.read(addr, &mut raw) {
            return Err(format!(
                "bench result at {addr:#x}+{len} is outside guest memory"
            ));
        }
        let header = ResultHeader::decode(&raw).map_err(|e| e.to_string())?;
        if let Some(t) = header.targets.iter().find(|&t| t >= self.cpus) {
            return Err(format!(
                "bench result of {} names target CPU {t} of a {}-vCPU VM",
                header.case.name(),
                self.cpus
            ));
        }
        if u32::from(header.sender) != cpu {
            return Err(format!(
                "bench result of {} claims sender CPU {} but came from vCPU {cpu}",
                header.case.name(),
                header.sender
            ));
        }
        let n = (header.sample_count as usize).min(MAX_SAMPLES);
        let mut bytes = vec![0u8; n * 8];
        if !mem.read(header.samples_addr, &mut bytes) {
            return Err(format!(
                "bench samples of {} at {:#x}+{} are outside guest memory",
                header.case.name(),
                header.samples_addr,
                n * 8
            ));
        }
        let samples = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let mut st = self.lock();
        if st.cases.len() >= MAX_CASES {
            return Err(format!("bench: more than {MAX_CASES} results; dropped"));
        }
        let round = st.rounds.remove(&header.case);
        let probe = st.probes.remove(&header.case);
        let send_probe = st.send_probes.remove(&header.case);
        st.cases.push(CaseData {
            header,
            samples,
            round,
            probe,
            send_probe,
        });
        Ok(())
    }

    /// Everything collected; the collector starts over.
    pub fn take(&self) -> BenchRun {
        let mut st = self.lock();
        let cases = std::mem::take(&mut st.cases);
        let pinning = st.pinning.clone();
        *st = State {
            pinning: pinning.clone(),
            ..State::default()
        };
        BenchRun {
            counters: self.names.clone(),
            stats_error: self.stats_error.clone(),
            pinning,
            cases,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::VecMemory;
    use shared::bench::{IdleMode, IpiMode, Status, TargetSet};

    fn set_of(cpus: &[u32]) -> TargetSet {
        let mut s = TargetSet::EMPTY;
        for &c in cpus {
            assert!(s.insert(c));
        }
        s
    }

    fn header(case: Case, samples: u32, addr: u64) -> ResultHeader {
        ResultHeader {
            case,
            status: Status::Ok,
            ipi_mode: IpiMode::Phys,
            idle_mode: IdleMode::Halt,
            sender: 0,
            targets: set_of(&[1]),
            target_count: 1,
            iterations: 8,
            total_cycles: 800,
            tsc_khz: 1_000_000,
            ipis_sent: 8,
            ipis_skipped: 0,
            sample_count: samples,
            samples_addr: addr,
        }
    }

    fn mem_with(h: &ResultHeader, samples: &[u64]) -> VecMemory {
        let mut m = vec![0u8; 0x1000];
        let (b, n) = h.encode();
        m[..n].copy_from_slice(&b[..n]);
        for (i, s) in samples.iter().enumerate() {
            let at = 0x100 + i * 8;
            m[at..at + 8].copy_from_slice(&s.to_le_bytes());
        }
        VecMemory::new(m)
    }

    #[test]
    fn results_pair_with_their_last_round() {
        let c = Collector::without_stats(2, "test");
        let start = Marker {
            case: Case::SingleWait,
            phase: Phase::Start,
        };
        let end = Marker {
            case: Case::SingleWait,
            phase: Phase::End,
        };
        for _ in 0..3 {
            c.marker(0, start.value()).unwrap();
            c.marker(0, end.value()).unwrap();
        }
        let h = header(Case::SingleWait, 3, 0x100);
        let mem = mem_with(&h, &[10, 20, 30]);
        c.result(0, 0, &mem).unwrap();
        let run = c.take();
        assert_eq!(run.cases.len(), 1);
        assert_eq!(run.cases[0].samples, [10, 20, 30]);
        assert!(run.cases[0].round.is_some());
        assert_eq!(run.stats_error.as_deref(), Some("test"));
        assert!(c.take().cases.is_empty());
    }

    #[test]
    fn hostile_input_is_refused() {
        let c = Collector::without_stats(2, "test");
        assert!(c.marker(0, 0xdead_beef).is_err());
        let end = Marker {
            case: Case::RawPing,
            phase: Phase::End,
        };
        assert!(c.marker(0, end.value()).is_err(), "end without start");
        let probe = Marker {
            case: Case::SendPath,
            phase: Phase::Probe,
        };
        assert!(c.marker(1, probe.value()).is_err(), "probe without begin");
        let h = header(Case::SingleWait, 3, 0x100);
        let mem = mem_with(&h, &[1, 2, 3]);
        assert!(c.result(0, 0xffff_0000, &mem).is_err(), "outside memory");
        assert!(c.result(1, 0, &mem).is_err(), "spoofed sender");
        let far = header(Case::SingleWait, 3, 0xfff0);
        assert!(
            c.result(0, 0, &mem_with(&far, &[])).is_err(),
            "samples outside"
        );
        let mut garbage = h.encode().0;
        garbage[0] = 0;
        let m = VecMemory::new(garbage.to_vec());
        assert!(c.result(0, 0, &m).is_err());
        // A target beyond the VM's vCPUs.
        let mut beyond = header(Case::SingleWait, 0, 0);
        beyond.targets = set_of(&[1, 2]);
        beyond.target_count = 2;
        assert!(c.result(0, 0, &mem_with(&beyond, &[])).is_err());
        // Target words running past the end of guest memory.
        let mut wide = header(Case::SingleWait, 0, 0);
        wide.targets = set_of(&[1023]);
        let (b, n) = wide.encode();
        let end = VecMemory::new(b[..n - 1].to_vec());
        assert!(c.result(0, 0, &end).is_err(), "words outside memory");
        assert!(c.take().cases.is_empty());
    }

    #[test]
    fn every_target_is_kept_above_63() {
        let c = Collector::without_stats(1024, "test");
        let cpus = [1, 63, 64, 71, 700, 1023];
        let mut h = header(Case::FanoutPhys, 0, 0);
        h.targets = set_of(&cpus);
        h.target_count = cpus.len() as u32;
        c.result(0, 0, &mem_with(&h, &[])).unwrap();
        let run = c.take();
        assert_eq!(run.cases[0].header.targets.iter().collect::<Vec<_>>(), cpus);
        // A count that disagrees with the set is refused.
        h.target_count = 5;
        assert!(c.result(0, 0, &mem_with(&h, &[])).is_err());
    }

    #[test]
    fn send_parts_pair_apart_from_windows_and_hostile_order_is_safe() {
        let c = Collector::without_stats(72, "test");
        let m = |case, phase| Marker { case, phase }.value();
        let fan = Case::FanoutCluster;
        // Two whole-call windows.
        for _ in 0..2 {
            c.marker(0, m(fan, Phase::Begin)).unwrap();
            c.marker(0, m(fan, Phase::Probe)).unwrap();
        }
        // Send parts: ended by the case's own probe, or by send-path's (the
        // single-target path's marker).
        c.marker(0, m(fan, Phase::SendBegin)).unwrap();
        c.marker(0, m(fan, Phase::Probe)).unwrap();
        c.marker(0, m(fan, Phase::SendBegin)).unwrap();
        c.marker(0, m(Case::SendPath, Phase::Probe)).unwrap();
        // Two begins: the later one counts, once.
        c.marker(0, m(fan, Phase::Begin)).unwrap();
        c.marker(0, m(fan, Phase::SendBegin)).unwrap();
        c.marker(0, m(fan, Phase::Probe)).unwrap();
        // A probe without a begin, and one of another case ending a send
        // part: refused, nothing counted.
        assert!(c.marker(0, m(fan, Phase::Probe)).is_err());
        c.marker(0, m(fan, Phase::SendBegin)).unwrap();
        assert!(c.marker(0, m(Case::RawPing, Phase::Probe)).is_err());
        assert!(c.marker(0, m(fan, Phase::Probe)).is_err(), "consumed");
        // A send part of one vCPU, ended by another vCPU's probe: refused.
        c.marker(0, m(fan, Phase::SendBegin)).unwrap();
        assert!(c.marker(1, m(fan, Phase::Probe)).is_err());
        // A send part from a second vCPU: refused, as for windows.
        c.marker(1, m(fan, Phase::SendBegin)).unwrap();
        assert!(c.marker(1, m(fan, Phase::Probe)).is_err());
        // An open section left at the result counts nothing.
        let h = header(fan, 0, 0);
        c.result(0, 0, &mem_with(&h, &[])).unwrap();
        let run = c.take();
        let d = &run.cases[0];
        assert_eq!(d.probe.as_ref().map(|p| p.count), Some(2));
        assert_eq!(d.send_probe.as_ref().map(|p| p.count), Some(3));
        assert_eq!(d.send_probe.as_ref().map(|p| p.vcpu), Some(0));
    }

    #[test]
    fn results_are_capped() {
        let c = Collector::without_stats(2, "test");
        let h = header(Case::RawPing, 0, 0);
        let mem = mem_with(&h, &[]);
        for _ in 0..MAX_CASES {
            c.result(0, 0, &mem).unwrap();
        }
        assert!(c.result(0, 0, &mem).is_err());
        assert_eq!(c.take().cases.len(), MAX_CASES);
    }
}
