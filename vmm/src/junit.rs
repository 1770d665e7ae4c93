//! The test cases of a run (its `Test` records) as a JUnit XML report
//! (`--junit`), written with `quick-junit`: one suite named after the
//! scenario and the CPU count, one testcase per case, failures and skips
//! with their reason.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use shared::Scenario;
use shared::record::Verdict;

use crate::records::TestResult;

/// The suite's name: `smpcall selftest, 4 CPUs`.
pub fn suite_name(scenario: Scenario, cpus: u32) -> String {
    let plural = if cpus == 1 { "" } else { "s" };
    format!("smpcall {}, {cpus} CPU{plural}", scenario.name())
}

/// The report of `tests`, the cases of `scenario` on `cpus` vCPUs.
pub fn report(scenario: Scenario, cpus: u32, tests: &[TestResult]) -> Report {
    let mut suite = TestSuite::new(suite_name(scenario, cpus));
    suite.add_test_cases(tests.iter().map(|t| {
        let status = match t.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Fail => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(t.detail.as_str());
                s
            }
            Verdict::Skip => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(t.detail.as_str());
                s
            }
        };
        let mut case = TestCase::new(t.name.as_str(), status);
        case.set_classname(scenario.name());
        if t.verdict == Verdict::Pass {
            case.set_system_out(t.detail.as_str());
        }
        case
    }));
    let mut report = Report::new("smpcall");
    report.add_test_suite(suite);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, verdict: Verdict, detail: &str) -> TestResult {
        TestResult {
            name: name.into(),
            verdict,
            detail: detail.into(),
        }
    }

    #[test]
    fn cases_survive_a_round_trip_through_xml() {
        let tests = [
            t("a", Verdict::Pass, "checked <a> & b"),
            t("b", Verdict::Fail, "ran twice"),
            t("c", Verdict::Skip, "needs 2 online CPUs"),
        ];
        let xml = report(Scenario::Selftest, 1, &tests).to_string().unwrap();
        let back = Report::deserialize_from_str(&xml).unwrap();
        let [suite] = &back.test_suites[..] else {
            panic!("{back:?}")
        };
        assert_eq!(suite.name.as_str(), "smpcall selftest, 1 CPU");
        assert_eq!((suite.tests, suite.failures, suite.skipped), (3, 1, 1));
        let names: Vec<&str> = suite.test_cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        match &suite.test_cases[2].status {
            TestCaseStatus::Skipped { message, .. } => {
                assert_eq!(
                    message.as_ref().map(|m| m.as_str()),
                    Some("needs 2 online CPUs")
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
