//! The records a run collected ([`shared::record`]), as owned copies
//! tagged with their vCPU, and what the host reads from them: online
//! CPUs, test cases, counters, warnings, exceptions and csd-lock stalls.

use std::ops::Deref;

use shared::record::{Body, Record, WarnKind};

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

/// One self-test result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    /// Case name.
    pub name: String,
    /// Passed?
    pub passed: bool,
    /// Detail.
    pub detail: String,
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

    /// Self-test results, in report order.
    pub fn tests(&self) -> Vec<TestResult> {
        self.iter()
            .filter_map(|r| match &r.body {
                Body::Test {
                    passed,
                    name,
                    detail,
                } => Some(TestResult {
                    name: name.clone(),
                    passed: *passed,
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
