//! The benchmark report as a table for a terminal and as JSON (schema
//! [`SCHEMA`], documented in README.md, "Benchmark").

use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use shared::bench::{Case, Status};

use super::report::{Percentiles, Report, VcpuPart};

/// JSON schema id.
pub const SCHEMA: &str = "smpcall-bench/1";

fn percentiles(p: &Percentiles) -> Value {
    json!({"min": p.min, "p50": p.p50, "p90": p.p90, "p99": p.p99, "max": p.max})
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
            "vm: {} vCPUs, {}, TSC {} kHz, boot modes {modes}",
            self.info.vcpus,
            self.pinning_line(),
            self.tsc_khz
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
        let cases: Vec<Value> = self
            .cases
            .iter()
            .map(|c| {
                json!({
                    "name": c.case.name(),
                    "status": c.status.name(),
                    "ipi_mode": c.ipi_mode.name(),
                    "idle_mode": c.idle_mode.name(),
                    "sender": c.sender,
                    "targets": c.targets,
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
            },
            "kvm_counters": self.counters,
            "kvm_stats_error": self.stats_error,
            "calibration": {
                "harness_per_op": named(&self.harness_per_op),
                "probe_overhead": named(&self.probe_overhead),
                "background_exits_per_s": self.background_exits_per_s,
            },
            "cases": cases,
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
        let c = &v["cases"][0];
        assert_eq!(c["vcpus"][1]["per_op"]["insn_emulation"], 60.0);
        assert_eq!(c["probe"]["section"]["insn_emulation"], 37.0);
        assert_eq!(v["calibration"]["harness_per_op"]["exits"], 1.0);
        assert_eq!(v["calibration"]["background_exits_per_s"], 1e6);
        assert_eq!(c["sender_background_exits_per_op"], 1.0);
    }
}
