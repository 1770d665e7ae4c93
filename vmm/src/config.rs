//! What to run: the VM's shape and the guest's request, validated before
//! anything touches KVM.

use std::path::PathBuf;
use std::time::Duration;

use shared::Scenario;
use shared::cmdline::CMDLINE_MAX;
use shared::layout::MAX_MEM;

use crate::error::{Error, Result};

/// Where the guest kernel comes from.
#[derive(Clone, Debug, Default)]
pub enum Kernel {
    /// The guest built with this vmm and embedded in it.
    #[default]
    Embedded,
    /// Another guest ELF on disk.
    Path(PathBuf),
}

/// A VM to run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Number of vCPUs (present CPUs).
    pub cpus: u32,
    /// Guest memory in MiB; `None`: the default for the CPU count
    /// (`shared::sizing::default_mem`: 64 MiB, more with many CPUs).
    pub mem_mib: Option<u64>,
    /// Extra guest command-line words (`nosmp`, `maxcpus=2`, ...).
    pub cmdline: String,
    /// Scenario the guest runs (in its boot information).
    pub scenario: Scenario,
    /// The guest kernel.
    pub kernel: Kernel,
    /// Watchdog: stop the guest and report each vCPU after this long.
    pub timeout: Duration,
    /// NUMA node of each CPU; empty means one node.
    pub numa: Vec<u8>,
    /// Copy the guest console to stdout as it arrives.
    pub echo_console: bool,
    /// APIC id of CPU n is `n * apic_stride`; values above 1 keep CPU
    /// numbers and APIC ids apart so that mixing them up shows.
    pub apic_stride: u32,
    /// Hotplug changes to make while the guest runs.
    pub hotplug: Vec<crate::hotplug_driver::Step>,
    /// Toggle a random CPU this often while the guest runs.
    pub hotplug_churn: Option<Duration>,
    /// Serve the control socket here.
    pub api_sock: Option<PathBuf>,
    /// Faults to inject while the guest runs (`--fault`).
    pub faults: Vec<crate::fault::Fault>,
    /// How long `run=torture` runs (`--duration`; passed to the guest as
    /// `torture.duration_ms=`), or when the host finishes `run=wait`
    /// (after the hotplug schedule, if that ends later; churn stops then).
    pub duration: Option<Duration>,
    /// Pin each vCPU thread to a host CPU (round robin over the CPUs this
    /// process may use).
    pub pin: bool,
    /// seccomp filters of the VMM's threads (`--seccomp`; on by default).
    pub seccomp: crate::seccomp::SeccompConfig,
    /// Trace rings on: the VMM reserves them above guest memory, boots the
    /// traced guest and copies them into `Outcome::trace`
    /// ([`crate::trace_rings`]). The command-line words `trace` and
    /// `trace_buf=` turn them on too.
    pub trace_rings: bool,
    /// KiB of each CPU's ring; `None`: the command line's `trace_buf=`, or
    /// `shared::trace::DEFAULT_RING_KIB`.
    pub trace_buf_kib: Option<u32>,
    /// Flight recorder: the last events of each CPU involved printed with
    /// a stall, crash, protocol error or watchdog report (0: none; needs
    /// the trace rings).
    pub flight: usize,
}

/// Default of [`VmConfig::flight`].
pub const DEFAULT_FLIGHT: usize = 16;

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            cpus: 1,
            mem_mib: None,
            cmdline: String::new(),
            scenario: Scenario::Demo,
            kernel: Kernel::Embedded,
            timeout: Duration::from_secs(120),
            numa: Vec::new(),
            echo_console: false,
            apic_stride: 1,
            hotplug: Vec::new(),
            hotplug_churn: None,
            api_sock: None,
            faults: Vec::new(),
            duration: None,
            pin: false,
            seccomp: Default::default(),
            trace_rings: false,
            trace_buf_kib: None,
            flight: DEFAULT_FLIGHT,
        }
    }
}

impl VmConfig {
    /// A config with `cpus` vCPUs and defaults for everything else.
    pub fn with_cpus(cpus: u32) -> Self {
        VmConfig {
            cpus,
            ..Default::default()
        }
    }

    /// Whether tracing is on: [`Self::trace_rings`], or the command line's
    /// `trace` / `trace_buf=` (the traced guest boots).
    pub fn tracing(&self) -> bool {
        matches!(crate::trace_rings::ring_bytes(self), Ok(Some(_)))
    }

    /// The full guest command line: the VMM's words (`--duration`), then
    /// the user's.
    pub fn guest_cmdline(&self) -> String {
        let mut words = Vec::new();
        if let Some(d) = self.duration {
            if self.scenario == Scenario::Wait {
                // The host finishes the wait at `d`; the guest's own limit
                // (60 s by default) must not end it first: the watchdog
                // is the backstop.
                words.push(format!("wait_ms={}", self.timeout.as_millis()));
            } else {
                words.push(format!("torture.duration_ms={}", d.as_millis()));
            }
        }
        if !self.cmdline.trim().is_empty() {
            words.push(self.cmdline.trim().to_string());
        }
        words.join(" ")
    }

    /// Checks everything that can be checked without KVM.
    pub fn validate(&self) -> Result<()> {
        if self.cpus == 0 {
            return Err(Error::NoCpus);
        }
        crate::vm::CpuLimit::guest().check(self.cpus)?;
        let max_mib = MAX_MEM >> 20;
        if let Some(mib) = self.mem_mib
            && mib > max_mib
        {
            return Err(Error::MemTooLarge { mib, max_mib });
        }
        // The scenario is in the boot information; a `run=` word would
        // look as if it chose one.
        if let Some(word) = shared::cmdline::params(&self.cmdline).find(|p| p.key == "run") {
            return Err(Error::RunInCmdline(word.value.unwrap_or("").to_string()));
        }
        crate::trace_rings::ring_bytes(self)?;
        let len = self.guest_cmdline().len();
        if len > CMDLINE_MAX {
            return Err(Error::CmdlineTooLong {
                len,
                max: CMDLINE_MAX,
            });
        }
        if let Some(step) = self.hotplug.iter().find(|s| s.cpu >= self.cpus) {
            return Err(Error::BadHotplug(format!(
                "CPU {} does not exist (--cpus {})",
                step.cpu, self.cpus
            )));
        }
        if self.hotplug_churn.is_some_and(|p| p.is_zero()) {
            return Err(Error::ZeroChurn);
        }
        for f in &self.faults {
            if let crate::fault::Fault::Stall { cpu, .. } = f
                && *cpu >= self.cpus
            {
                return Err(Error::BadFault(format!(
                    "stall: CPU {cpu} does not exist (--cpus {})",
                    self.cpus
                )));
            }
        }
        if let Some(d) = self.duration
            && (d.is_zero() || d >= self.timeout)
        {
            return Err(Error::BadDuration(format!(
                "{:.3} s: must be more than 0 and less than --timeout ({:.1} s)",
                d.as_secs_f64(),
                self.timeout.as_secs_f64()
            )));
        }
        if self.scenario == Scenario::Wait && self.duration.is_none() && self.api_sock.is_none() {
            if self.hotplug_churn.is_some() {
                return Err(Error::EndlessWait(
                    "with --hotplug-churn never ends: add --duration SECS \
                     (or --api-sock, and end it with {\"exit\":true})",
                ));
            }
            if self.hotplug.is_empty() {
                return Err(Error::EndlessWait(
                    "needs an end: a --hotplug schedule, --duration SECS, \
                     or --api-sock (and {\"exit\":true})",
                ));
            }
        }
        if self.apic_stride == 0 || self.apic_stride > 16 {
            return Err(Error::BadApicStride(self.apic_stride));
        }
        if !self.numa.is_empty() && self.numa.len() != self.cpus as usize {
            return Err(Error::BadNuma {
                spec: format!("{:?}", self.numa),
                reason: format!("maps {} CPUs but the VM has {}", self.numa.len(), self.cpus),
            });
        }
        Ok(())
    }
}

/// Parses a NUMA map such as `0-3,4-7` (node 0 = CPUs 0-3, node 1 = CPUs
/// 4-7): one comma-separated CPU list per node, every CPU exactly once.
pub fn parse_numa(spec: &str, cpus: u32) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::BadNuma {
        spec: spec.to_string(),
        reason,
    };
    let mut nodes = vec![None::<u8>; cpus as usize];
    let groups: Vec<&str> = spec.split(',').collect();
    if groups.len() > 64 {
        return Err(bad("more than 64 nodes".into()));
    }
    for (node, group) in groups.iter().enumerate() {
        let group = group.trim();
        let (lo, hi) = match group.split_once('-') {
            Some((a, b)) => (a, b),
            None => (group, group),
        };
        let lo: u32 = lo
            .trim()
            .parse()
            .map_err(|_| bad(format!("{group:?} is not a CPU or CPU range")))?;
        let hi: u32 = hi
            .trim()
            .parse()
            .map_err(|_| bad(format!("{group:?} is not a CPU or CPU range")))?;
        if lo > hi {
            return Err(bad(format!("range {group:?} is backwards")));
        }
        for cpu in lo..=hi {
            let slot = nodes
                .get_mut(cpu as usize)
                .ok_or_else(|| bad(format!("CPU {cpu} does not exist (--cpus {cpus})")))?;
            if slot.is_some() {
                return Err(bad(format!("CPU {cpu} is in two nodes")));
            }
            *slot = Some(node as u8);
        }
    }
    nodes
        .iter()
        .enumerate()
        .map(|(cpu, n)| n.ok_or_else(|| bad(format!("CPU {cpu} is in no node"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_maps() {
        assert_eq!(parse_numa("0-3,4-7", 8).unwrap(), [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(parse_numa("0,1-2", 3).unwrap(), [0, 1, 1]);
        for bad in ["0-3", "0-3,3-7", "a-b", "0-8", "3-1,0,2", ""] {
            assert!(parse_numa(bad, 8).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation() {
        assert!(VmConfig::with_cpus(8).validate().is_ok());
        assert!(matches!(
            VmConfig::with_cpus(0).validate(),
            Err(Error::NoCpus)
        ));
        assert!(matches!(
            VmConfig::with_cpus(shared::MAX_CPUS as u32 + 1).validate(),
            Err(Error::TooManyCpus { .. })
        ));
        let c = VmConfig {
            cmdline: "x".repeat(5000),
            ..VmConfig::with_cpus(1)
        };
        assert!(matches!(c.validate(), Err(Error::CmdlineTooLong { .. })));
        let c = VmConfig {
            cmdline: "maxcpus=1 run=selftest".into(),
            ..VmConfig::with_cpus(1)
        };
        assert!(matches!(c.validate(), Err(Error::RunInCmdline(s)) if s == "selftest"));
        let c = VmConfig {
            cmdline: "rerun=1 running".into(),
            ..VmConfig::with_cpus(1)
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn tracing_follows_the_flag_and_the_command_line() {
        let with = |rings, cmdline: &str| VmConfig {
            trace_rings: rings,
            cmdline: cmdline.into(),
            ..VmConfig::with_cpus(2)
        };
        assert!(!with(false, "").tracing());
        assert!(!with(false, "bench_ms=50 tracer").tracing());
        assert!(with(true, "").tracing());
        assert!(with(false, "trace").tracing());
        assert!(with(false, "trace_buf=64").tracing());
    }

    #[test]
    fn wait_needs_an_end() {
        let wait = |churn, duration, api: bool, schedule: bool| VmConfig {
            scenario: Scenario::Wait,
            hotplug_churn: churn,
            duration,
            api_sock: api.then(|| PathBuf::from("/tmp/x.sock")),
            hotplug: if schedule {
                crate::hotplug_driver::parse_schedule("10ms:off 1", 2).unwrap()
            } else {
                Vec::new()
            },
            ..VmConfig::with_cpus(2)
        };
        let ms = Some(Duration::from_millis(100));
        let secs = Some(Duration::from_secs(2));
        for (c, why) in [
            (wait(ms, None, false, false), "never ends"),
            (wait(ms, None, false, true), "never ends"),
            (wait(None, None, false, false), "needs an end"),
        ] {
            match c.validate() {
                Err(e @ Error::EndlessWait(_)) => assert!(e.to_string().contains(why), "{e}"),
                other => panic!("{c:?}: {other:?}"),
            }
        }
        for c in [
            wait(ms, secs, false, false),
            wait(ms, None, true, false),
            wait(None, None, false, true),
            wait(None, secs, false, false),
        ] {
            assert!(c.validate().is_ok(), "{c:?}");
        }
        // The guest's wait outlasts the host's --duration.
        let c = wait(ms, secs, false, false);
        assert_eq!(c.guest_cmdline(), "wait_ms=120000");
        let c = VmConfig {
            scenario: Scenario::Torture,
            ..wait(None, secs, false, false)
        };
        assert_eq!(c.guest_cmdline(), "torture.duration_ms=2000");
    }
}
