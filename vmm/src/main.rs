//! `vmm`: boot the smpcall guest on N KVM vCPUs and run a scenario.

use std::path::{Path, PathBuf};
use std::process::ExitCode as ProcessExit;
use std::time::Duration;

use clap::Parser;
use shared::Scenario;
use shared::status::ExitCode;
use vmm::{Kernel, VmConfig};

const EXIT_CODES: &str = "\
Exit codes:
  0  success: the guest ran the scenario and reported success
  1  the guest reported a failure (a failed self-test)
  2  usage or configuration error (bad arguments, bad --kernel, no /dev/kvm)
  3  the guest crashed (exception, triple fault, failed entry), wrote a meaningless
     exit status (as --run hostile does), or KVM failed
  4  timeout: the watchdog stopped a guest that did not finish (--timeout)
  130  SIGINT stopped the run (control socket removed, summary printed)
  143  SIGTERM stopped the run (likewise)
  159  a VMM thread made a syscall its seccomp filter forbids (--seccomp trap;
       one line names the syscall number)

Guest command-line words (--cmdline): nosmp, nr_cpus=N, maxcpus=N, as in Linux;
run= is refused (the scenario is --run).
IPI delivery and idle (--cmdline): ipi=phys|shorthand|cluster|pv, idle=halt|poll;
bench_ms=MS is the bench's time goal per case (default 200).
Torture (--run torture): scf.weight_single=N ... scf.weight_all_wait=N as scftorture,
torture.stat_ms=MS; csd_lock_timeout=MS sets the csd-lock stall detector; ipi_drop=N
drops N per mille of the guest's call-function IPIs (guest-side fault injection).
A hostile guest (--run hostile) abuses the protocol on purpose and exits 3.
Logging: -v (info), -vv (debug), -vvv (trace), or RUST_LOG.";

/// Unstuck csd-lock stalls listed one per line (all stuck ones are).
const STALLS_SHOWN: usize = 8;

/// Boot the smpcall unikernel on N KVM vCPUs (in-kernel x2APIC), let the
/// guest bring its CPUs up over x2APIC, and run a scenario of Linux's smp
/// cross-call machinery on them.
#[derive(Parser, Debug)]
#[command(name = "vmm", version, after_help = EXIT_CODES)]
struct Cli {
    /// Number of vCPUs (present CPUs).
    #[arg(long, default_value_t = 1, value_name = "N")]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = shared::layout::DEFAULT_MEM >> 20, value_name = "MIB")]
    mem: u64,
    /// Extra words for the guest command line (e.g. "maxcpus=2 nosmp").
    #[arg(long, default_value = "", value_name = "WORDS")]
    cmdline: String,
    /// Run this guest ELF instead of the embedded smpcall guest.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Scenario for the guest: demo (a tour of the API), selftest (every
    /// semantic, one case each), hotplug (hotplug cases), wait (serve
    /// --hotplug / --api-sock requests until {"exit":true} or the
    /// schedule's end), bench (IPI round trips and the smp call paths,
    /// timed in the guest, with KVM's counters per vCPU; see --json,
    /// --plot, --pin), torture (scftorture), hostile (abuses the protocol).
    #[arg(long, default_value = "demo", value_name = "SCENARIO", value_parser = scenario)]
    run: Scenario,
    /// Watchdog: stop the guest after this many seconds and print each
    /// vCPU's state.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    timeout: f64,
    /// NUMA nodes as CPU lists, one per node: "0-3,4-7" is two nodes.
    #[arg(long, value_name = "SPEC")]
    numa: Option<String>,
    /// APIC id of CPU n is n * STRIDE (keeps CPU numbers and APIC ids apart).
    #[arg(long, default_value_t = 1, value_name = "STRIDE")]
    apic_stride: u32,
    /// Hotplug schedule while the guest runs: "100ms:off 3; 250ms:on 3"
    /// (times from the start; s or ms).
    #[arg(long, value_name = "SCHEDULE")]
    hotplug: Option<String>,
    /// Take a random CPU offline or online every MS milliseconds.
    #[arg(long, value_name = "MS")]
    hotplug_churn: Option<u64>,
    /// Serve a control socket: line-delimited JSON such as
    /// {"cpu":3,"state":"offline"}, {"stats":true}, {"exit":true}.
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Pin each vCPU thread to its own host CPU (round robin).
    #[arg(long)]
    pin: bool,
    /// With --run bench: also write the report as JSON (schema in README).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// With --run bench: also draw the latency distributions as SVG.
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
    /// With a scenario that has test cases (selftest, hotplug, torture):
    /// also write the cases as a JUnit XML report.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// With --run torture: how long the invokers run (default 5 s).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Inject a fault (repeatable): stall:CPU:MS[@AT] stops vCPU CPU for
    /// MS ms (AT ms after the guest is ready); spurious-ipi:RATE sends RATE
    /// call-function IPIs a second to random vCPUs; drop-ipi:P drops a
    /// fraction P of the guest's call-function IPIs (if this host's KVM
    /// lets the VMM trap the x2APIC ICR; else skipped, with one line).
    #[arg(long, value_name = "SPEC")]
    fault: Vec<String>,
    /// seccomp filters on every VMM thread, one allow-list per thread kind:
    /// trap (a forbidden syscall stops the VMM, exit 159), log (allowed,
    /// logged by the kernel's audit log), off.
    #[arg(long, default_value = "trap", value_name = "MODE", value_parser = seccomp_mode)]
    seccomp: vmm::seccomp::SeccompMode,
    /// Test hook: vCPU 0's thread opens a file once its filter is in place.
    #[arg(long, hide = true)]
    seccomp_test_violation: bool,
    /// Do not copy the guest console to stdout.
    #[arg(long, short)]
    quiet: bool,
    /// More logging (repeat for more).
    #[arg(long, short, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// A `--run` value: one of [`Scenario::ALL`], by name.
fn scenario(name: &str) -> Result<Scenario, String> {
    Scenario::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Scenario::names().collect();
        format!("unknown scenario; one of: {}", names.join(", "))
    })
}

/// A `--seccomp` value.
fn seccomp_mode(name: &str) -> Result<vmm::seccomp::SeccompMode, String> {
    vmm::seccomp::SeccompMode::from_name(name).ok_or_else(|| {
        let names = vmm::seccomp::SeccompMode::NAMES;
        format!("unknown seccomp mode; one of: {}", names.join(", "))
    })
}

/// A `--timeout` / `--duration` value: more than 0, at most a day.
fn seconds(flag: &str, secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "{flag} {secs}: must be more than 0 and at most 86400 seconds"
        ))
    }
}

fn config(cli: &Cli) -> Result<VmConfig, String> {
    let timeout = seconds("--timeout", cli.timeout)?;
    let hotplug = match &cli.hotplug {
        Some(spec) => vmm::hotplug_driver::parse_schedule(spec, cli.cpus)
            .map_err(|e| format!("--hotplug: {e}"))?,
        None => Vec::new(),
    };
    if (cli.json.is_some() || cli.plot.is_some()) && cli.run != Scenario::Bench {
        return Err("--json and --plot need --run bench".into());
    }
    if cli.junit.is_some() && !cli.run.has_cases() {
        let with: Vec<_> = Scenario::ALL
            .iter()
            .filter(|s| s.has_cases())
            .map(|s| s.name())
            .collect();
        return Err(format!(
            "--junit needs a scenario with test cases (--run {})",
            with.join(", --run ")
        ));
    }
    let duration = cli.duration.map(|d| seconds("--duration", d)).transpose()?;
    let faults = cli
        .fault
        .iter()
        .map(|f| vmm::fault::Fault::parse(f).map_err(|e| format!("--fault {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let numa = match &cli.numa {
        Some(spec) => vmm::parse_numa(spec, cli.cpus).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    Ok(VmConfig {
        cpus: cli.cpus,
        mem_mib: cli.mem,
        cmdline: cli.cmdline.clone(),
        scenario: cli.run,
        kernel: cli.kernel.clone().map_or(Kernel::Embedded, Kernel::Path),
        timeout,
        numa,
        echo_console: !cli.quiet,
        apic_stride: cli.apic_stride,
        hotplug,
        hotplug_churn: cli.hotplug_churn.map(Duration::from_millis),
        api_sock: cli.api_sock.clone(),
        pin: cli.pin,
        faults,
        duration,
        seccomp: vmm::seccomp::SeccompConfig {
            mode: cli.seccomp,
            main_thread: true,
            test_violation: cli.seccomp_test_violation,
        },
    })
}

/// Writes `--junit`: the run's test cases as JUnit XML.
fn junit_report(path: &Path, config: &VmConfig, tests: &[vmm::TestResult]) -> Result<(), String> {
    let report = vmm::junit::report(config.scenario, config.cpus, tests);
    let xml = report.to_string().map_err(|e| e.to_string())?;
    std::fs::write(path, xml).map_err(|e| format!("--junit {}: {e}", path.display()))
}

/// Prints the benchmark table and writes `--json` / `--plot`.
fn bench_report(cli: &Cli, config: &VmConfig, outcome: &vmm::Outcome) -> Result<(), String> {
    let info = vmm::bench::RunInfo {
        host: vmm::host::info(),
        vcpus: config.cpus,
        cmdline: config.guest_cmdline(),
    };
    let report = vmm::bench::Report::new(info, &outcome.bench);
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report.json()).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("--json {}: {e}", path.display()))?;
    }
    if let Some(path) = &cli.plot {
        std::fs::write(path, vmm::bench::plot::svg(&report))
            .map_err(|e| format!("--plot {}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ProcessExit {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();

    let config = match config(&cli) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("vmm: {msg}");
            return ProcessExit::from(ExitCode::Usage as u8);
        }
    };
    if let Err(e) = vmm::stop_signal::install() {
        eprintln!("vmm: cannot install the SIGINT/SIGTERM handlers: {e}");
        return ProcessExit::from(ExitCode::Crashed as u8);
    }
    match vmm::run(&config) {
        Ok(outcome) => {
            for e in &outcome.hotplug {
                let what = match &e.result {
                    Ok(0) => "done".to_string(),
                    Ok(errno) => format!(
                        "refused ({})",
                        vmm::hotplug_driver::errno_text(*errno, e.cpu, e.change)
                    ),
                    Err(err) => err.to_string(),
                };
                println!(
                    "hotplug: {:>7.1} ms {} CPU {}: {what}",
                    e.at.as_secs_f64() * 1e3,
                    e.change.name(),
                    e.cpu
                );
            }
            // A failed --json / --plot write exits 2, unless the guest
            // failed: then its code (1, 3, 4) wins, with its diagnosis.
            if cli.run == Scenario::Bench
                && let Err(msg) = bench_report(&cli, &config, &outcome)
            {
                eprintln!("vmm: {msg}");
                if outcome.exit_code() == ExitCode::Success {
                    return ProcessExit::from(ExitCode::Usage as u8);
                }
            }
            let stalls = outcome.records.csd_stalls();
            if !stalls.is_empty() {
                let unstuck = stalls.iter().filter(|s| s.unstuck_after.is_some()).count();
                let resends: u32 = stalls.iter().map(|s| s.resends).sum();
                println!(
                    "csd-lock stalls: {} reported, {unstuck} got unstuck, IPI re-sent {resends} times",
                    stalls.len()
                );
                // The ones never unstuck first, then the first few others.
                let (stuck, rest): (Vec<_>, Vec<_>) =
                    stalls.iter().partition(|s| s.unstuck_after.is_none());
                for s in stuck.iter().chain(rest.iter().take(STALLS_SHOWN)) {
                    println!("{s}");
                }
                if rest.len() > STALLS_SHOWN {
                    println!("... and {} more unstuck stalls", rest.len() - STALLS_SHOWN);
                }
            }
            for line in outcome.faults.lines() {
                println!("{line}");
            }
            let tests = outcome.records.tests();
            if !tests.is_empty() {
                println!("{}", vmm::CaseCounts::of(&tests));
            }
            // As --json: a failed write exits 2 unless the guest failed.
            if let Some(path) = &cli.junit
                && let Err(msg) = junit_report(path, &config, &tests)
            {
                eprintln!("vmm: {msg}");
                if outcome.exit_code() == ExitCode::Success {
                    return ProcessExit::from(ExitCode::Usage as u8);
                }
            }
            let diagnosis = outcome.diagnosis();
            if !diagnosis.is_empty() {
                eprint!("vmm: {diagnosis}");
            }
            log::info!("ran for {:.3} s", outcome.elapsed.as_secs_f64());
            ProcessExit::from(outcome.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("vmm: {e}");
            ProcessExit::from(e.exit_code() as u8)
        }
    }
}
