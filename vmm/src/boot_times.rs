//! How long a VM takes to come up: when the vCPU threads started, when
//! each CPU reported itself online (its first `CpuOnline` record, stamped
//! by the host as it arrives), and when the run ended. Kept as instants so
//! that a caller with an earlier origin (the CLI: its own start) can
//! measure from there ([`BootTimes::since`]).

use std::time::{Duration, Instant};

/// The instants of a run's bring-up.
#[derive(Clone, Debug)]
pub struct BootTimes {
    /// When building the VM started (after the config was checked).
    pub build_started: Instant,
    /// When every vCPU thread had been started.
    pub vcpus_started: Instant,
    /// Each CPU's first `CpuOnline` record, in arrival order.
    pub online: Vec<(u32, Instant)>,
    /// When the run ended (the guest's exit, a crash or the watchdog).
    pub ended: Instant,
}

/// [`BootTimes`] as durations from one origin, ready to report.
#[derive(Clone, Debug, PartialEq)]
pub struct BootCurve {
    /// From the origin to the start of building the VM.
    pub build_started: Duration,
    /// To every vCPU thread running (KVM set up, memory mapped, kernel loaded).
    pub vcpus_started: Duration,
    /// To each CPU's first online report, in arrival order (the boot CPU's
    /// first, then the APs as the boot CPU brings them up one by one).
    pub online: Vec<(u32, Duration)>,
    /// To the end of the run.
    pub ended: Duration,
}

impl BootTimes {
    /// The durations from `origin` (an instant before the build started).
    pub fn since(&self, origin: Instant) -> BootCurve {
        let d = |t: Instant| t.saturating_duration_since(origin);
        BootCurve {
            build_started: d(self.build_started),
            vcpus_started: d(self.vcpus_started),
            online: self.online.iter().map(|&(c, t)| (c, d(t))).collect(),
            ended: d(self.ended),
        }
    }
}

impl BootCurve {
    /// To the last CPU's online report ("Brought up N CPUs"), if any came.
    pub fn all_online(&self) -> Option<Duration> {
        self.online.last().map(|&(_, t)| t)
    }

    /// Mean time per AP from the boot CPU's online report to the last AP's
    /// (the bring-up is sequential), if any AP came up.
    pub fn per_ap(&self) -> Option<Duration> {
        let (first, last) = (self.online.first()?.1, self.online.last()?.1);
        let aps = u32::try_from(self.online.len() - 1).ok()?;
        (aps > 0).then(|| last.saturating_sub(first) / aps)
    }

    /// One line for a log: from the origin to the vCPUs running, all CPUs
    /// online (with the time per AP) and the end, in ms.
    pub fn line(&self, origin: &str) -> String {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let online = match (self.all_online(), self.per_ap()) {
            (Some(all), Some(ap)) => format!(
                "{} CPUs online at {} ({} per AP)",
                self.online.len(),
                ms(all),
                ms(ap)
            ),
            (Some(all), None) => format!("1 CPU online at {}", ms(all)),
            _ => "no CPU reported itself online".into(),
        };
        format!(
            "boot, from {origin}: vCPUs running at {}; {online}; ended at {}",
            ms(self.vcpus_started),
            ms(self.ended)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_is_measured_from_the_origin() {
        let o = Instant::now();
        let at = |ms| o + Duration::from_millis(ms);
        let t = BootTimes {
            build_started: at(2),
            vcpus_started: at(10),
            online: vec![(0, at(20)), (1, at(30)), (2, at(40))],
            ended: at(100),
        };
        let c = t.since(o);
        assert_eq!(c.vcpus_started, Duration::from_millis(10));
        assert_eq!(c.all_online(), Some(Duration::from_millis(40)));
        assert_eq!(c.per_ap(), Some(Duration::from_millis(10)));
        let line = c.line("start");
        assert!(
            line.contains("3 CPUs online at 40.0 ms (10.0 ms per AP)"),
            "{line}"
        );
        let one = BootTimes {
            online: vec![(0, at(20))],
            ..t
        }
        .since(o);
        assert_eq!(one.per_ap(), None);
        assert!(one.line("x").contains("1 CPU online"));
    }
}
