//! The csd-lock stalls a guest reported (its `CsdStall` and `CsdUnstuck`
//! records), one summary per stall, for the outcome and the CLI.

use std::collections::HashMap;
use std::time::Duration;

use crate::records::{OwnedBody, OwnedRecord};
use crate::symbols::Symbols;

/// One stall: who waited for whom, how often it was reported, whether the
/// IPI was re-sent, and whether (and when) the lock got unstuck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsdStall {
    /// The stall number the guest gave it.
    pub id: u32,
    /// The waiting CPU (the vCPU that sent the reports).
    pub waiter: u32,
    /// The CPU that should have run the csd.
    pub target: u32,
    /// The csd's function.
    pub func: u64,
    /// The csd's `info`.
    pub info: u64,
    /// What the target was running at the first report (0: nothing).
    pub target_running: u64,
    /// Reports made.
    pub reports: u32,
    /// Reports that re-sent the IPI.
    pub resends: u32,
    /// The longest wait reported.
    pub waited: Duration,
    /// The total wait, if the lock got unstuck.
    pub unstuck_after: Option<Duration>,
}

/// Groups the stall records by (waiter, stall id), in order of first
/// report. Records are untrusted: a stall with odd values is still shown.
pub fn collect(records: &[OwnedRecord]) -> Vec<CsdStall> {
    let mut out: Vec<CsdStall> = Vec::new();
    // (waiter, stall id) -> index in `out`: a hostile guest sends many.
    let mut index: HashMap<(u32, u32), usize> = HashMap::new();
    for r in records {
        let (id, target, func, info, target_running) = match r.body {
            OwnedBody::CsdStall {
                id,
                target,
                func,
                info,
                target_running,
                ..
            } => (id, target.0, func, info, target_running),
            OwnedBody::CsdUnstuck {
                id, target, func, ..
            } => (id, target.0, func, 0, 0),
            _ => continue,
        };
        let i = *index.entry((r.vcpu, id)).or_insert_with(|| {
            out.push(CsdStall {
                id,
                waiter: r.vcpu,
                target,
                func,
                info,
                target_running,
                reports: 0,
                resends: 0,
                waited: Duration::ZERO,
                unstuck_after: None,
            });
            out.len() - 1
        });
        let s = &mut out[i];
        match r.body {
            OwnedBody::CsdStall {
                waited_ns,
                resent_ipi,
                ..
            } => {
                s.reports = s.reports.saturating_add(1);
                s.resends = s.resends.saturating_add(u32::from(resent_ipi));
                s.waited = s.waited.max(Duration::from_nanos(waited_ns));
            }
            OwnedBody::CsdUnstuck { waited_ns, .. } => {
                s.unstuck_after = Some(Duration::from_nanos(waited_ns));
            }
            _ => {}
        }
    }
    out
}

/// The CLI's summary of `stalls`: one line, and whether every stall is
/// explained by it (then the per-stall lines add nothing). `provoked` is
/// the guest's count of stalls its self-test cases provoked on purpose
/// ([`shared::record::PROVOKED_STALLS_COUNTER`]), if it sent one.
pub fn summary(stalls: &[CsdStall], provoked: Option<u64>) -> (String, bool) {
    let n = stalls.len();
    let unstuck = stalls.iter().filter(|s| s.unstuck_after.is_some()).count();
    let resends: u32 = stalls.iter().map(|s| s.resends).sum();
    let provoked = provoked.unwrap_or(0);
    if provoked == n as u64 && unstuck == n {
        let line = format!(
            "csd-lock stalls: {n} reported, all provoked on purpose by the stall self-test cases (all got unstuck, IPI re-sent {resends} times)"
        );
        return (line, true);
    }
    let mut line = format!(
        "csd-lock stalls: {n} reported, {unstuck} got unstuck, IPI re-sent {resends} times"
    );
    if provoked > 0 {
        line += &format!(" ({provoked} provoked on purpose by self-test cases)");
    }
    (line, false)
}

impl CsdStall {
    /// The stall in one line, its functions named by `syms` (unknown
    /// addresses in hex).
    pub fn line(&self, syms: &Symbols) -> String {
        Line { s: self, syms }.to_string()
    }
}

impl std::fmt::Display for CsdStall {
    /// The stall in one line, functions as addresses ([`CsdStall::line`]
    /// names them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Line {
            s: self,
            syms: &Symbols::default(),
        }
        .fmt(f)
    }
}

/// A [`CsdStall`] printed with symbols.
struct Line<'a> {
    s: &'a CsdStall,
    syms: &'a Symbols,
}

impl std::fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, syms) = (self.s, self.syms);
        write!(
            f,
            "csd-lock stall #{}: CPU {} waited for CPU {} to run {}({:#x}); ",
            s.id,
            s.waiter,
            s.target,
            syms.at(s.func),
            s.info
        )?;
        if s.target_running == 0 {
            write!(f, "CPU {} was running no callback; ", s.target)?;
        } else {
            write!(
                f,
                "CPU {} was running {}; ",
                s.target,
                syms.at(s.target_running)
            )?;
        }
        write!(
            f,
            "{} report(s), IPI re-sent {} time(s); ",
            s.reports, s.resends
        )?;
        match s.unstuck_after {
            Some(d) => write!(f, "unstuck after {:.1} ms", d.as_secs_f64() * 1e3),
            None => write!(
                f,
                "NOT unstuck (waited at least {:.1} ms)",
                s.waited.as_secs_f64() * 1e3
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(vcpu: u32, body: OwnedBody) -> OwnedRecord {
        OwnedRecord {
            vcpu,
            cpu: vcpu as u16,
            body,
        }
    }

    fn stall(id: u32, nth: u32, resent: bool, ms: u64) -> OwnedBody {
        OwnedBody::CsdStall {
            id,
            target: shared::CpuId(1),
            func: 0x1000,
            info: 2,
            waited_ns: ms * 1_000_000,
            target_running: 0,
            nth,
            resent_ipi: resent,
        }
    }

    #[test]
    fn groups_reports_by_stall() {
        let records = [
            rec(0, stall(1, 1, true, 100)),
            rec(2, stall(2, 1, false, 100)),
            rec(0, stall(1, 2, true, 300)),
            rec(
                0,
                OwnedBody::CsdUnstuck {
                    id: 1,
                    target: shared::CpuId(1),
                    func: 0x1000,
                    waited_ns: 450_000_000,
                    reports: 2,
                },
            ),
        ];
        let s = collect(&records);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].waiter, s[0].reports, s[0].resends), (0, 2, 2));
        assert_eq!(s[0].unstuck_after, Some(Duration::from_millis(450)));
        assert_eq!(s[0].waited, Duration::from_millis(300));
        assert_eq!((s[1].waiter, s[1].unstuck_after), (2, None));
        let line = s[0].to_string();
        assert!(line.contains("CPU 0 waited for CPU 1") && line.contains("unstuck after 450.0 ms"));
        assert!(s[1].to_string().contains("NOT unstuck"));
        let syms = Symbols::from_list(&[(0x1000, 4, "scenarios::bench::nop")]);
        assert!(
            s[0].line(&syms)
                .contains("CPU 0 waited for CPU 1 to run scenarios::bench::nop(0x2)"),
            "{}",
            s[0].line(&syms)
        );
    }

    #[test]
    fn many_stalls_are_grouped_without_rescanning() {
        // As many as a hostile guest may send; a quadratic search would
        // not finish.
        let n = 200_000u32;
        let records: Vec<_> = (0..n)
            .map(|i| rec(i % 4, stall(i, 1, false, 1)))
            .chain((0..n).map(|i| {
                rec(
                    i % 4,
                    OwnedBody::CsdUnstuck {
                        id: i,
                        target: shared::CpuId(1),
                        func: 0x1000,
                        waited_ns: 2_000_000,
                        reports: 1,
                    },
                )
            }))
            .collect();
        let s = collect(&records);
        assert_eq!(s.len(), n as usize);
        assert!(
            s.iter()
                .all(|s| s.reports == 1 && s.unstuck_after.is_some())
        );
        assert_eq!((s[5].id, s[5].waiter), (5, 1));
    }

    fn unstuck(id: u32, ms: u64) -> OwnedBody {
        OwnedBody::CsdUnstuck {
            id,
            target: shared::CpuId(1),
            func: 0x1000,
            waited_ns: ms * 1_000_000,
            reports: 1,
        }
    }

    #[test]
    fn summary_says_when_every_stall_was_provoked() {
        let records = [
            rec(0, stall(1, 1, false, 25)),
            rec(0, unstuck(1, 30)),
            rec(0, stall(2, 1, true, 25)),
            rec(0, unstuck(2, 40)),
        ];
        let stalls = collect(&records);
        let (line, explained) = summary(&stalls, Some(2));
        assert!(explained, "{line}");
        assert!(
            line.contains("2 reported, all provoked on purpose"),
            "{line}"
        );
        // One not provoked: the plain summary, and the stalls are listed.
        let (line, explained) = summary(&stalls, Some(1));
        assert!(!explained, "{line}");
        assert!(
            line.contains("2 got unstuck") && line.contains("1 provoked"),
            "{line}"
        );
        let (line, explained) = summary(&stalls, None);
        assert!(!explained && !line.contains("provoked"), "{line}");
    }
}
