//! Boot parameters from the guest command line, with the seed's meaning:
//! `nosmp`, `maxcpus=N` (SMP activation limit, 0 disables SMP),
//! `nr_cpus=N` (hard limit on possible CPUs), plus the test switches of
//! this kernel (the scenario comes in the boot information). Malformed values get a warning and the
//! default; nothing here can fail.

use shared::MAX_CPUS;
use shared::bench::{IdleMode, IpiMode};
use shared::cmdline::{NumberError, Param, params, parse_u64};

/// How to make the guest misbehave on purpose (for the VMM's tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Execute `ud2` (#UD).
    InvalidOpcode,
    /// Touch an unmapped address (#PF).
    PageFault,
    /// Load a non-canonical address (#GP).
    GeneralProtection,
    /// Write to the per-CPU window slot of a CPU that does not exist
    /// (#PF on its read-only zero page).
    PerCpuWrite,
}

/// Most warnings kept.
pub const MAX_WARNINGS: usize = 8;

/// A warning about one parameter, for the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warning<'a> {
    /// The parameter.
    pub key: &'a str,
    /// Its value, if any.
    pub value: Option<&'a str>,
    /// What is wrong.
    pub problem: &'static str,
}

/// The parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootParams<'a> {
    /// `maxcpus=` (or 0 from `nosmp`): CPUs to bring up at boot; `None`
    /// brings up every present CPU (the seed's `NR_CPUS` default).
    pub max_cpus: Option<u32>,
    /// `nr_cpus=`: hard limit on `nr_cpu_ids`, if given and positive.
    pub nr_cpus: Option<u32>,
    /// `nosmp` or `maxcpus=0`: SMP support disabled (only CPU 0 is
    /// possible, as x86's `disable_smp()`).
    pub smp_disabled: bool,
    /// `crash=ud|pf|gp|percpu`.
    pub crash: Option<Crash>,
    /// `hang`: spin forever after boot (trips the VMM's watchdog).
    pub hang: bool,
    /// `wait_ms=`: how long `run=wait` waits for the host at most.
    pub wait_ms: u64,
    /// `csd_lock_timeout=` in ms (0 turns the stall detector off).
    pub csd_lock_timeout_ms: Option<u64>,
    /// `ipi_drop=N`: guest-side fault injection, drop N per mille of the
    /// call-function IPIs this kernel sends (at most 1000).
    pub ipi_drop_permille: Option<u32>,
    /// `ipi=phys|shorthand|cluster|pv`: how multi-CPU IPIs are delivered.
    pub ipi: IpiMode,
    /// `idle=halt|poll`: what an idle CPU does.
    pub idle: IdleMode,
    /// `bench_ms=`: the benchmark's time goal per case, in ms.
    pub bench_ms: u64,
    /// `fail_prepare=N`: preparing CPU N's call data fails (tests the
    /// cancelled bring-up).
    pub fail_prepare: Option<u32>,
    /// `stuck_ap=N`: CPU N never finishes its start (tests up-canceled).
    pub stuck_ap: Option<u32>,
    /// `ap_timeout_ms=`: how long an AP gets to come online.
    pub ap_timeout_ms: u64,
    /// Problems found, at most [`MAX_WARNINGS`].
    pub warnings: [Option<Warning<'a>>; MAX_WARNINGS],
}

fn why(e: NumberError) -> &'static str {
    match e {
        NumberError::Missing => "needs a value; ignored",
        NumberError::Invalid => "is not a non-negative number; ignored",
        NumberError::Overflow => "is too large; ignored",
    }
}

impl<'a> BootParams<'a> {
    /// Parses `cmdline`.
    pub fn parse(cmdline: &'a str) -> Self {
        let mut p = BootParams {
            max_cpus: None,
            nr_cpus: None,
            smp_disabled: false,
            crash: None,
            hang: false,
            wait_ms: 60_000,
            csd_lock_timeout_ms: None,
            ipi_drop_permille: None,
            ipi: IpiMode::Phys,
            idle: IdleMode::Halt,
            bench_ms: 200,
            fail_prepare: None,
            stuck_ap: None,
            ap_timeout_ms: 5_000,
            warnings: [None; MAX_WARNINGS],
        };
        for Param { key, value } in params(cmdline) {
            let mut warn = |problem| p_warn(&mut p.warnings, key, value, problem);
            match key {
                // The scenario is in the boot information, not here.
                "run" => warn("the host chooses the scenario (vmm --run); ignored"),
                // Switches: a value (`hang=0`) would look as if it
                // turned them off; it is refused, not ignored silently.
                "nosmp" | "hang" if value.is_some() => warn("takes no value; ignored"),
                "nosmp" => {
                    p.max_cpus = Some(0);
                    p.smp_disabled = true;
                }
                "maxcpus" => match parse_u64(value) {
                    Ok(n) => {
                        let n = u32::try_from(n).unwrap_or(u32::MAX);
                        p.max_cpus = Some(n);
                        if n == 0 {
                            p.smp_disabled = true;
                        }
                    }
                    Err(e) => warn(why(e)),
                },
                "nr_cpus" => match parse_u64(value) {
                    // The seed ignores 0 (and values not below nr_cpu_ids,
                    // which the caller applies).
                    Ok(0) => warn("must be positive; ignored"),
                    Ok(n) => p.nr_cpus = Some(u32::try_from(n).unwrap_or(u32::MAX)),
                    Err(e) => warn(why(e)),
                },
                "crash" => match value {
                    Some("ud") => p.crash = Some(Crash::InvalidOpcode),
                    Some("pf") => p.crash = Some(Crash::PageFault),
                    Some("gp") => p.crash = Some(Crash::GeneralProtection),
                    Some("percpu") => p.crash = Some(Crash::PerCpuWrite),
                    _ => warn("takes ud, pf, gp or percpu; ignored"),
                },
                "hang" => p.hang = true,
                "wait_ms" => match parse_u64(value) {
                    Ok(n) => p.wait_ms = n,
                    Err(e) => warn(why(e)),
                },
                "csd_lock_timeout" => match parse_u64(value) {
                    Ok(n) => p.csd_lock_timeout_ms = Some(n),
                    Err(e) => warn(why(e)),
                },
                "ipi_drop" => match parse_u64(value) {
                    Ok(n) if n <= 1000 => p.ipi_drop_permille = Some(n as u32),
                    Ok(_) => warn("is per mille, at most 1000; ignored"),
                    Err(e) => warn(why(e)),
                },
                // The torture's own words (`scf.weight_single=`, ...),
                // parsed and checked by `kernel::torture`.
                k if k.starts_with("scf.") || k.starts_with("torture.") => {}
                // The VMM's: it places the trace rings (`shared::trace`).
                shared::trace::CMDLINE_TRACE | shared::trace::CMDLINE_TRACE_BUF => {}
                "ipi" => match value.and_then(IpiMode::from_name) {
                    Some(m) => p.ipi = m,
                    None => warn("takes phys, shorthand, cluster or pv; using phys"),
                },
                "idle" => match value.and_then(IdleMode::from_name) {
                    Some(m) => p.idle = m,
                    None => warn("takes halt or poll; using halt"),
                },
                "bench_ms" => match parse_u64(value) {
                    Ok(0) => warn("must be positive; ignored"),
                    Ok(n) => p.bench_ms = n.min(60_000),
                    Err(e) => warn(why(e)),
                },
                "fail_prepare" | "stuck_ap" => match parse_u64(value) {
                    Ok(n) if n > 0 && n < MAX_CPUS as u64 => {
                        let slot = if key == "fail_prepare" {
                            &mut p.fail_prepare
                        } else {
                            &mut p.stuck_ap
                        };
                        *slot = Some(n as u32);
                    }
                    Ok(_) => warn("takes an AP's CPU number (1 to MAX_CPUS - 1); ignored"),
                    Err(e) => warn(why(e)),
                },
                "ap_timeout_ms" => match parse_u64(value) {
                    Ok(n) if n > 0 => p.ap_timeout_ms = n.min(60_000),
                    Ok(_) => warn("must be positive; ignored"),
                    Err(e) => warn(why(e)),
                },
                _ => warn("unknown parameter; ignored"),
            }
        }
        p
    }

    /// The warnings, in order.
    pub fn warnings(&self) -> impl Iterator<Item = &Warning<'a>> {
        self.warnings.iter().flatten()
    }
}

fn p_warn<'a>(
    slots: &mut [Option<Warning<'a>>; MAX_WARNINGS],
    key: &'a str,
    value: Option<&'a str>,
    problem: &'static str,
) {
    if let Some(slot) = slots.iter_mut().find(|s| s.is_none()) {
        *slot = Some(Warning {
            key,
            value,
            problem,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = BootParams::parse("");
        assert_eq!((p.max_cpus, p.nr_cpus, p.smp_disabled), (None, None, false));
        assert_eq!(p.warnings().count(), 0);
    }

    #[test]
    fn nosmp_and_maxcpus_zero_disable_smp() {
        for line in ["nosmp", "maxcpus=0"] {
            let p = BootParams::parse(line);
            assert_eq!(p.max_cpus, Some(0), "{line}");
            assert!(p.smp_disabled);
        }
    }

    #[test]
    fn maxcpus_limits_activation_only() {
        let p = BootParams::parse("maxcpus=2");
        assert_eq!(p.max_cpus, Some(2));
        assert!(!p.smp_disabled);
    }

    #[test]
    fn nr_cpus_is_parsed_and_applied_by_the_core() {
        // Whether it lowers nr_cpu_ids is the core's rule
        // (`Smp::apply_nr_cpus_param`); the parser keeps any positive value.
        assert_eq!(BootParams::parse("nr_cpus=3").nr_cpus, Some(3));
        assert_eq!(BootParams::parse("nr_cpus=100").nr_cpus, Some(100));
    }

    #[test]
    fn tunables() {
        let p = BootParams::parse("wait_ms=5 csd_lock_timeout=0");
        assert_eq!((p.wait_ms, p.csd_lock_timeout_ms), (5, Some(0)));
    }

    #[test]
    fn malformed_values_warn_and_keep_defaults() {
        let p = BootParams::parse("maxcpus=abc nr_cpus=-1 maxcpus= nr_cpus=0 bogus crash=zz run=");
        assert_eq!((p.max_cpus, p.nr_cpus), (None, None));
        let keys: Vec<&str> = p.warnings().map(|w| w.key).collect();
        assert_eq!(
            keys,
            [
                "maxcpus", "nr_cpus", "maxcpus", "nr_cpus", "bogus", "crash", "run"
            ]
        );
    }

    #[test]
    fn warnings_are_capped() {
        let line = "a b c d e f g h i j k";
        assert_eq!(BootParams::parse(line).warnings().count(), MAX_WARNINGS);
    }

    #[test]
    fn delivery_modes() {
        let p = BootParams::parse("ipi=cluster idle=poll bench_ms=5");
        assert_eq!(
            (p.ipi, p.idle, p.bench_ms),
            (IpiMode::Cluster, IdleMode::Poll, 5)
        );
        assert_eq!(BootParams::parse("ipi=pv").ipi, IpiMode::Pv);
        assert_eq!(BootParams::parse("ipi=shorthand").ipi, IpiMode::Shorthand);
        let p = BootParams::parse("ipi=fast idle= bench_ms=0 ipi");
        assert_eq!(
            (p.ipi, p.idle, p.bench_ms),
            (IpiMode::Phys, IdleMode::Halt, 200)
        );
        let keys: Vec<&str> = p.warnings().map(|w| w.key).collect();
        assert_eq!(keys, ["ipi", "idle", "bench_ms", "ipi"]);
        assert_eq!(BootParams::parse("bench_ms=999999").bench_ms, 60_000);
    }

    #[test]
    fn fault_and_torture_words() {
        let p = BootParams::parse("ipi_drop=250 scf.weight_single=3 torture.duration_ms=10");
        assert_eq!(p.ipi_drop_permille, Some(250));
        assert_eq!(p.warnings().count(), 0);
        let p = BootParams::parse("ipi_drop=1001 ipi_drop=x");
        assert_eq!(p.ipi_drop_permille, None);
        assert_eq!(p.warnings().count(), 2);
    }

    #[test]
    fn bring_up_fault_switches() {
        let p = BootParams::parse("fail_prepare=2 stuck_ap=3 ap_timeout_ms=50");
        assert_eq!(
            (p.fail_prepare, p.stuck_ap, p.ap_timeout_ms),
            (Some(2), Some(3), 50)
        );
        let words = std::format!("fail_prepare=0 stuck_ap={MAX_CPUS} ap_timeout_ms=0");
        let p = BootParams::parse(&words);
        assert_eq!(
            (p.fail_prepare, p.stuck_ap, p.ap_timeout_ms),
            (None, None, 5_000)
        );
        assert_eq!(p.warnings().count(), 3);
    }

    #[test]
    fn test_switches() {
        let p = BootParams::parse("crash=pf hang");
        assert_eq!(p.crash, Some(Crash::PageFault));
        assert!(p.hang);
    }

    #[test]
    fn switches_take_no_value() {
        let p = BootParams::parse("hang=0 nosmp=1 hang=");
        assert!(!p.hang && !p.smp_disabled && p.max_cpus.is_none());
        let w: Vec<_> = p.warnings().map(|w| (w.key, w.value, w.problem)).collect();
        assert_eq!(
            w,
            [
                ("hang", Some("0"), "takes no value; ignored"),
                ("nosmp", Some("1"), "takes no value; ignored"),
                ("hang", Some(""), "takes no value; ignored"),
            ]
        );
    }
}
