//! The benchmark report as a table for a terminal and as JSON (schema
//! [`SCHEMA`], documented in README.md, "Benchmark").

use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use shared::bench::{Case, Status};

use super::breakdown::{self, Breakdown};
use super::report::{CaseReport, Percentiles, Report, VcpuPart};
use crate::boot_times::BootCurve;

/// JSON schema id.
pub const SCHEMA: &str = "smpcall-bench/1";

fn percentiles(p: &Percentiles) -> Value {
    json!({"min": p.min, "p50": p.p50, "p90": p.p90, "p99": p.p99, "max": p.max})
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn boot_json(b: &BootCurve) -> Value {
    json!({
        "from": "vmm start",
        "build_started_ms": ms(b.build_started),
        "vcpus_started_ms": ms(b.vcpus_started),
        "online_ms": b.online.iter().map(|&(cpu, t)| json!({"cpu": cpu, "ms": ms(t)})).collect::<Vec<_>>(),
        "all_online_ms": b.all_online().map(ms),
        "per_ap_ms": b.per_ap().map(ms),
        "ended_ms": ms(b.ended),
    })
}

impl CaseReport {
    /// The sender's counters per operation.
    pub fn sender_part(&self) -> Option<&VcpuPart> {
        self.vcpus.iter().find(|v| v.role == "sender")
    }

    /// Per counter, the sum and the mean over the target vCPUs per
    /// operation (empty without counters or targets).
    pub fn target_sum_and_mean(&self) -> (Vec<f64>, Vec<f64>) {
        let tgts: Vec<&VcpuPart> = self.vcpus.iter().filter(|v| v.role == "target").collect();
        let Some(first) = tgts.first() else {
            return (Vec::new(), Vec::new());
        };
        let sum: Vec<f64> = (0..first.per_op.len())
            .map(|i| tgts.iter().map(|v| v.per_op[i]).sum())
            .collect();
        let mean = sum.iter().map(|s| s / tgts.len() as f64).collect();
        (sum, mean)
    }
}

impl Report {
    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.host_line());
        if let Some(n) = self.emulation_note() {
            let _ = writeln!(s, "NOTE: {n}");
        }
        let modes = self
            .cases
            .iter()
            .find(|c| c.case == Case::SingleWait)
            .or(self.cases.first())
            .map(|c| format!("ipi={} idle={}", c.ipi_mode.name(), c.idle_mode.name()))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "vm: {} vCPUs, {}, TSC {} kHz, boot modes {modes}, tracing {}",
            self.info.vcpus,
            self.pinning_line(),
            self.tsc_khz,
            if self.info.trace {
                "on (guest trace points: compare a run without --trace)"
            } else {
                "off"
            }
        );
        if let Some(e) = &self.stats_error {
            let _ = writeln!(s, "KVM statistics unavailable: {e}");
        }
        let insn = self.counter("insn_emulation");
        let exits = self.counter("exits");
        let _ = writeln!(
            s,
            "{:<22} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>7} | {:>9} {:>7} {:>5}",
            "case",
            "iters",
            "min ns",
            "p50 ns",
            "p90 ns",
            "p99 ns",
            "max ns",
            "snd insn",
            "snd ex",
            "tgt insn",
            "tgt ex",
            "IPIs"
        );
        for c in &self.cases {
            if c.status != Status::Ok {
                let _ = writeln!(s, "{:<22} {}", c.case.name(), c.status.name());
                continue;
            }
            let sender = c.vcpus.iter().find(|v| v.role == "sender");
            let tgts: Vec<&VcpuPart> = c.vcpus.iter().filter(|v| v.role == "target").collect();
            // Rounded first, so that a background estimate a hair above
            // the count does not print as "-0.0".
            let val = |v: Option<&VcpuPart>, i: Option<usize>| match (v, i) {
                (Some(v), Some(i)) => format!("{:.1}", (v.per_op[i] * 10.0).round() / 10.0 + 0.0),
                _ => "-".into(),
            };
            let mean = |i: Option<usize>| match i {
                Some(i) if !tgts.is_empty() => format!(
                    "{:.1}",
                    tgts.iter().map(|v| v.per_op[i]).sum::<f64>() / tgts.len() as f64
                ),
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<22} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} | {:>9} {:>7} | {:>9} {:>7} {:>5.2}",
                c.case.name(),
                c.iterations,
                c.ns.min,
                c.ns.p50,
                c.ns.p90,
                c.ns.p99,
                c.ns.max,
                val(sender, insn),
                val(sender, exits),
                mean(insn),
                mean(exits),
                c.ipis_sent_per_op,
            );
            if let (Some(p), Some(i)) = (&c.probe, insn) {
                let _ = writeln!(
                    s,
                    "  {} guest instructions on CPU {} from the call to its ICR write \
                     (minimum of {} probes, probe cost subtracted){}",
                    p[i].round(),
                    c.sender,
                    c.probe_pairs,
                    exits
                        .map(|e| format!("; {} VM exits", p[e].round()))
                        .unwrap_or_default()
                );
            }
        }
        self.breakdown_table(&mut s, insn);
        self.fanout_table(&mut s, insn, exits);
        self.ipi_benchmark_table(&mut s, insn, exits);
        if let Some(b) = &self.info.boot {
            let _ = writeln!(s, "{}", b.line("vmm start"));
        }
        let _ = writeln!(
            s,
            "per operation: snd = sender CPU (measuring loop subtracted), tgt = mean over target \
             CPUs; insn = guest instructions (KVM insn_emulation), ex = VM exits"
        );
        if let Some(rate) = self.background_exits_per_s {
            let _ = writeln!(
                s,
                "snd ex is beyond the background of a spinning vCPU ({rate:.0} exits/s here, \
                 the host's own interrupts), charged over each operation's mean time: an \
                 estimate, a small negative value is its noise"
            );
        }
        s
    }

    /// The cases that have a [`breakdown`], each with the target's
    /// measured instructions per operation (if counted).
    pub fn breakdowns(&self) -> Vec<(&CaseReport, &'static Breakdown, Option<f64>)> {
        let insn = self.counter("insn_emulation");
        self.cases
            .iter()
            .filter(|c| c.status == Status::Ok)
            .filter_map(|c| {
                let b = breakdown::of(c.case, c.idle_mode)?;
                let (_, mean) = c.target_sum_and_mean();
                Some((c, b, insn.and_then(|i| mean.get(i).copied())))
            })
            .collect()
    }

    fn breakdown_table(&self, s: &mut String, insn: Option<usize>) {
        let rows = self.breakdowns();
        if rows.is_empty() || insn.is_none() {
            return;
        }
        let _ = writeln!(
            s,
            "where the target's instructions go (counted in the guest's disassembly; \
             measured: tgt insn)"
        );
        for (c, b, measured) in rows {
            let _ = writeln!(
                s,
                "  {} (target {}): {} counted, {} measured",
                c.case.name(),
                c.idle_mode.name(),
                b.total(),
                measured.map_or("-".into(), |m| format!("{m:.1}"))
            );
            for p in b.parts {
                let _ = writeln!(s, "    {:>3}  {}", p.insn, p.what);
            }
        }
    }

    fn fanout_table(&self, s: &mut String, insn: Option<usize>, exits: Option<usize>) {
        if self.fanout.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "fan-out: smp_call_function_many(wait) to the first N other CPUs\n{:<18} {:>4} {:>9} {:>9} {:>10} {:>9} {:>7} {:>7} {:>7} {:>7} {:>5}",
            "mode",
            "N",
            "p50 ns",
            "p99 ns",
            "snd insn",
            "send insn",
            "send ex",
            "win ex",
            "snd ex",
            "tgt ex",
            "IPIs"
        );
        let at = |v: &[f64], i: Option<usize>| match i.and_then(|i| v.get(i)) {
            Some(x) => format!("{:.1}", (x * 10.0).round() / 10.0 + 0.0),
            None => "-".into(),
        };
        for c in &self.fanout {
            if c.status != Status::Ok {
                let _ = writeln!(s, "{:<18} {}", c.case.name(), c.status.name());
                continue;
            }
            let snd = c
                .sender_part()
                .map(|v| v.per_op.clone())
                .unwrap_or_default();
            let (sum, _) = c.target_sum_and_mean();
            let win = c.window.clone().unwrap_or_default();
            let send = c.send_part.clone().unwrap_or_default();
            let _ = writeln!(
                s,
                "{:<18} {:>4} {:>9.0} {:>9.0} {:>10} {:>9} {:>7} {:>7} {:>7} {:>7} {:>5.2}",
                c.case.name(),
                c.target_count,
                c.ns.p50,
                c.ns.p99,
                at(&snd, insn),
                at(&send, insn),
                at(&send, exits),
                at(&win, exits),
                at(&snd, exits),
                at(&sum, exits),
                c.ipis_sent_per_op
            );
        }
        let calls = self.fanout.iter().map(|c| c.probe_pairs).max().unwrap_or(0);
        let sends = self.fanout.iter().map(|c| c.send_pairs).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "  (send insn, send ex: the sender's guest instructions and VM exits from the call to \
             the end of its IPI send (the probe after the last ICR write), exact, mean of {sends} \
             probed calls per point; win ex: the sender's VM exits from the call to its return, \
             exact, mean of {calls} probed calls per point; snd ex: over the timed round less the background estimate; \
             tgt ex: summed over the N targets)"
        );
    }

    fn ipi_benchmark_table(&self, s: &mut String, insn: Option<usize>, exits: Option<usize>) {
        let _ = writeln!(
            s,
            "ipi_benchmark (Yury Norov's modes)\n{:<15} {:<20} {:>9} {:>9} {:>10} {:>7} {:>5}",
            "mode", "case", "ns/op", "p50 ns", "snd insn", "snd ex", "IPIs"
        );
        for (mode, row) in self.ipi_benchmark() {
            match row {
                Some(c) if c.status == Status::Ok => {
                    let snd = c
                        .sender_part()
                        .map(|v| v.per_op.clone())
                        .unwrap_or_default();
                    let at = |i: Option<usize>| match i.and_then(|i| snd.get(i)) {
                        Some(x) => format!("{:.1}", (x * 10.0).round() / 10.0 + 0.0),
                        None => "-".into(),
                    };
                    let _ = writeln!(
                        s,
                        "{:<15} {:<20} {:>9.0} {:>9.0} {:>10} {:>7} {:>5.2}",
                        mode,
                        c.case.name(),
                        c.mean_ns,
                        c.ns.p50,
                        at(insn),
                        at(exits),
                        c.ipis_sent_per_op
                    );
                }
                Some(c) => {
                    let _ = writeln!(s, "{:<15} {:<20} {}", mode, c.case.name(), c.status.name());
                }
                None => {
                    let _ = writeln!(s, "{mode:<15} -");
                }
            }
        }
    }

    /// The report as JSON (schema [`SCHEMA`]).
    pub fn json(&self) -> Value {
        let named = |v: &[f64]| -> Value {
            let mut m = Map::new();
            for (n, x) in self.counters.iter().zip(v) {
                m.insert((*n).to_string(), json!(x));
            }
            Value::Object(m)
        };
        let h = &self.info.host;
        let case_json = |c: &CaseReport| {
            json!({
                "name": c.case.name(),
                "status": c.status.name(),
                "ipi_mode": c.ipi_mode.name(),
                "idle_mode": c.idle_mode.name(),
                "sender": c.sender,
                "targets": c.targets,
                "target_count": c.target_count,
                "iterations": c.iterations,
                "samples": c.samples,
                "cycles": percentiles(&c.cycles),
                "ns": percentiles(&c.ns),
                "mean_ns": c.mean_ns,
                "ipis_sent_per_op": c.ipis_sent_per_op,
                "ipis_skipped_per_op": c.ipis_skipped_per_op,
                "sender_background_exits_per_op": c.sender_background_exits,
                "vcpus": c.vcpus.iter().map(|v| json!({
                    "cpu": v.cpu, "role": v.role, "per_op": named(&v.per_op)
                })).collect::<Vec<_>>(),
                "probe": c.probe.as_ref().map(|p| json!({
                    "cpu": c.sender, "pairs": c.probe_pairs, "section": named(p)
                })),
            })
        };
        let cases: Vec<Value> = self.cases.iter().map(case_json).collect();
        let fanout: Vec<Value> = self
            .fanout
            .iter()
            .map(|c| {
                let (sum, mean) = c.target_sum_and_mean();
                json!({
                    "mode": c.ipi_mode.name(),
                    "case": c.case.name(),
                    "status": c.status.name(),
                    "targets": c.target_count,
                    "iterations": c.iterations,
                    "ns": percentiles(&c.ns),
                    "mean_ns": c.mean_ns,
                    "ipis_sent_per_op": c.ipis_sent_per_op,
                    "sender": c.sender_part().map(|v| named(&v.per_op)),
                    "sender_window": c.window.as_ref().map(|w| json!({
                        "calls": c.probe_pairs, "per_call": named(w)
                    })),
                    "sender_send": c.send_part.as_ref().map(|w| json!({
                        "calls": c.send_pairs, "per_call": named(w)
                    })),
                    "target_cpus": c.targets,
                    "targets_sum": (!sum.is_empty()).then(|| named(&sum)),
                    "targets_mean": (!mean.is_empty()).then(|| named(&mean)),
                })
            })
            .collect();
        let ipi_benchmark: Vec<Value> = self
            .ipi_benchmark()
            .into_iter()
            .map(|(mode, row)| {
                json!({
                    "mode": mode,
                    "case": row.map(|c| c.case.name()),
                    "status": row.map(|c| c.status.name()),
                    "ns_per_op": row.map(|c| c.mean_ns),
                    "p50_ns": row.map(|c| c.ns.p50),
                    "ipis_sent_per_op": row.map(|c| c.ipis_sent_per_op),
                    "sender": row.and_then(|c| c.sender_part()).map(|v| named(&v.per_op)),
                })
            })
            .collect();
        let spin_vs_halt: Map<String, Value> = self
            .spin_vs_halt()
            .into_iter()
            .map(|(target, row)| {
                let v = row.map(|c| {
                    let (_, mean) = c.target_sum_and_mean();
                    json!({
                        "case": c.case.name(),
                        "ns": percentiles(&c.ns),
                        "ipis_sent_per_op": c.ipis_sent_per_op,
                        "ipis_skipped_per_op": c.ipis_skipped_per_op,
                        "sender": c.sender_part().map(|v| named(&v.per_op)),
                        "target": (!mean.is_empty()).then(|| named(&mean)),
                    })
                });
                (target.to_string(), v.unwrap_or(Value::Null))
            })
            .collect();
        let target_breakdown: Vec<Value> = self
            .breakdowns()
            .into_iter()
            .map(|(c, b, measured)| {
                json!({
                    "case": c.case.name(),
                    "idle_mode": c.idle_mode.name(),
                    "parts": b.parts.iter().map(|p| json!({"what": p.what, "insn": p.insn}))
                        .collect::<Vec<_>>(),
                    "counted": b.total(),
                    "measured": measured,
                })
            })
            .collect();
        json!({
            "schema": SCHEMA,
            "host": {
                "cpu_model": h.cpu_model,
                "kvm_module": h.kvm_module,
                "nested": h.nested,
                "emulated": h.emulated,
                "note": self.emulation_note(),
            },
            "vm": {
                "vcpus": self.info.vcpus,
                "pinned": self.pinning.iter().any(Option::is_some),
                "pinning": self.pinning,
                "tsc_khz": self.tsc_khz,
                "cmdline": self.info.cmdline,
                "trace": self.info.trace,
            },
            "kvm_counters": self.counters,
            "kvm_stats_error": self.stats_error,
            "calibration": {
                "harness_per_op": named(&self.harness_per_op),
                "probe_overhead": named(&self.probe_overhead),
                "background_exits_per_s": self.background_exits_per_s,
            },
            "cases": cases,
            "fanout": fanout,
            "ipi_benchmark": ipi_benchmark,
            "spin_vs_halt": spin_vs_halt,
            "target_breakdown": target_breakdown,
            "boot": self.info.boot.as_ref().map(boot_json),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::{sample_info, sample_run};

    #[test]
    fn json_has_the_documented_fields() {
        let v = Report::new(sample_info(), &sample_run()).json();
        assert_eq!(v["schema"], SCHEMA);
        for k in ["cpu_model", "kvm_module", "nested", "emulated", "note"] {
            assert!(v["host"].get(k).is_some(), "host.{k}");
        }
        for k in ["vcpus", "pinned", "pinning", "tsc_khz", "cmdline"] {
            assert!(v["vm"].get(k).is_some(), "vm.{k}");
        }
        assert_eq!(v["vm"]["trace"], false);
        let table = Report::new(sample_info(), &sample_run()).table();
        assert!(table.contains(", tracing off\n"), "{table}");
        let mut info = sample_info();
        info.trace = true;
        let r = Report::new(info, &sample_run());
        assert_eq!(r.json()["vm"]["trace"], true);
        assert!(r.table().contains(", tracing on"), "{}", r.table());
        let c = &v["cases"][0];
        assert_eq!(c["vcpus"][1]["per_op"]["insn_emulation"], 60.0);
        assert_eq!(c["probe"]["section"]["insn_emulation"], 37.0);
        assert_eq!(v["calibration"]["harness_per_op"]["exits"], 1.0);
        assert_eq!(v["calibration"]["background_exits_per_s"], 1e6);
        assert_eq!(c["sender_background_exits_per_op"], 1.0);
    }
}
