//! The records a run collected ([`shared::record`]), as owned copies
//! tagged with their vCPU, and what the host reads from them: online
//! CPUs, test cases, counters, warnings, exceptions and csd-lock stalls.

use std::ops::Deref;

use shared::record::{Body, Record, Verdict, WarnKind};

use crate::stalls::CsdStall;

/// A record with owned strings, tagged with the vCPU whose exit carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    /// The vCPU that sent it (authoritative).
    pub vcpu: u32,
    /// The CPU number the guest put in the record.
    pub cpu: u16,
    /// The payload.
    pub body: OwnedBody,
}

/// [`shared::record::Body`] with owned strings.
pub type OwnedBody = Body<String>;

impl OwnedRecord {
    /// Copies a decoded record.
    pub fn new(vcpu: u32, r: &Record<'_>) -> Self {
        OwnedRecord {
            vcpu,
            cpu: r.cpu,
            body: r.body.map_str(String::from),
        }
    }
}

/// One test case's result (a `Test` record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    /// Case name.
    pub name: String,
    /// Pass, fail or skip.
    pub verdict: Verdict,
    /// What was checked, why it failed, or why it was skipped.
    pub detail: String,
}

impl TestResult {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// How many cases passed, failed and were skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaseCounts {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
}

impl CaseCounts {
    /// Counts `tests` by verdict.
    pub fn of(tests: &[TestResult]) -> Self {
        let mut c = CaseCounts::default();
        for t in tests {
            match t.verdict {
                Verdict::Pass => c.passed += 1,
                Verdict::Fail => c.failed += 1,
                Verdict::Skip => c.skipped += 1,
            }
        }
        c
    }
}

/// The summary line: `27 passed, 0 failed, 13 skipped`.
impl std::fmt::Display for CaseCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// Every well-formed record of a run, in arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records(Vec<OwnedRecord>);

impl From<Vec<OwnedRecord>> for Records {
    fn from(v: Vec<OwnedRecord>) -> Self {
        Records(v)
    }
}

impl Deref for Records {
    type Target = [OwnedRecord];

    fn deref(&self) -> &[OwnedRecord] {
        &self.0
    }
}

impl Records {
    /// CPUs that reported themselves online, in report order.
    pub fn online_cpus(&self) -> Vec<u16> {
        self.iter()
            .filter(|r| matches!(r.body, Body::CpuOnline { .. }))
            .map(|r| r.cpu)
            .collect()
    }

    /// Test case results, in report order.
    pub fn tests(&self) -> Vec<TestResult> {
        self.iter()
            .filter_map(|r| match &r.body {
                Body::Test {
                    verdict,
                    name,
                    detail,
                } => Some(TestResult {
                    name: name.clone(),
                    verdict: *verdict,
                    detail: detail.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Named counters (`Counter` records), in report order.
    pub fn counters(&self) -> Vec<(u16, &str, u64)> {
        self.iter()
            .filter_map(|r| match &r.body {
                Body::Counter { name, value } => Some((r.cpu, name.as_str(), *value)),
                _ => None,
            })
            .collect()
    }

    /// The last value of counter `name`, if the guest sent one.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters()
            .into_iter()
            .rev()
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, v)| v)
    }

    /// Warnings of the smp core, in report order.
    pub fn warnings(&self) -> Vec<(u16, WarnKind, u64)> {
        self.iter()
            .filter_map(|r| match r.body {
                Body::Warn { kind, detail, .. } => Some((r.cpu, kind, detail)),
                _ => None,
            })
            .collect()
    }

    /// The csd-lock stalls the guest reported, one per stall id.
    pub fn csd_stalls(&self) -> Vec<CsdStall> {
        crate::stalls::collect(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, verdict: Verdict) -> OwnedRecord {
        OwnedRecord {
            vcpu: 0,
            cpu: 0,
            body: Body::Test {
                verdict,
                name: name.into(),
                detail: "why".into(),
            },
        }
    }

    #[test]
    fn cases_are_counted_by_verdict() {
        let records = Records::from(vec![
            case("a", Verdict::Pass),
            case("b", Verdict::Skip),
            case("c", Verdict::Fail),
            case("d", Verdict::Pass),
        ]);
        let tests = records.tests();
        assert_eq!(tests.len(), 4);
        assert!(tests[0].passed() && !tests[1].passed());
        let counts = CaseCounts::of(&tests);
        assert_eq!(counts.to_string(), "2 passed, 1 failed, 1 skipped");
    }
}
