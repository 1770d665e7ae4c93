//! `vmm`: boot the smpcall guest on N KVM vCPUs and run a scenario.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
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
  1  the guest reported a failure (a failed self-test), or a --fault was
     not injected (the run ended before it was due)
  2  usage or configuration error (bad arguments, an option for another
     scenario, bad --kernel, an output path that cannot be written, no
     /dev/kvm), said in one line
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
    #[arg(long, default_value_t = 1, value_name = "N", allow_negative_numbers = true,
          value_parser = |s: &str| whole::<u32>(s))]
    cpus: u32,
    /// Guest memory in MiB [default: 64, or what the CPUs need when more:
    /// 16 MiB + 128 KiB per CPU + 32 bytes per pair of CPUs, e.g. 176 at
    /// --cpus 1024]. Less than the kernel and the CPUs need is refused,
    /// naming the amount.
    #[arg(long, value_name = "MIB", allow_negative_numbers = true,
          value_parser = |s: &str| whole::<u64>(s))]
    mem: Option<u64>,
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
    #[arg(
        long,
        default_value_t = 120.0,
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    timeout: f64,
    /// NUMA nodes as CPU lists, one per node: "0-3,4-7" is two nodes.
    #[arg(long, value_name = "SPEC")]
    numa: Option<String>,
    /// APIC id of CPU n is n * STRIDE (keeps CPU numbers and APIC ids apart).
    #[arg(long, default_value_t = 1, value_name = "STRIDE", allow_negative_numbers = true,
          value_parser = |s: &str| whole::<u32>(s))]
    apic_stride: u32,
    /// Hotplug schedule while the guest runs: "100ms:off 3; 250ms:on 3":
    /// TIME:off|on CPU steps, TIME from the start as a whole number with
    /// its unit (ms or s; no fractions), CPU 1 to N-1.
    #[arg(long, value_name = "SCHEDULE")]
    hotplug: Option<String>,
    /// Take a random CPU (not 0) offline or online every MS milliseconds
    /// (with --run wait: until --duration).
    #[arg(long, value_name = "MS", allow_negative_numbers = true,
          value_parser = |s: &str| whole::<u64>(s))]
    hotplug_churn: Option<u64>,
    /// Serve a control socket: line-delimited JSON such as
    /// {"cpu":3,"state":"offline"}, {"stats":true}, {"exit":true}.
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Pin each vCPU thread to its own host CPU (round robin).
    #[arg(long)]
    pin: bool,
    /// With --run bench: also write the report as JSON (schema in README).
    /// Checked before the VM starts: a regular file, or a new one in an
    /// existing directory, and not the same file as --plot.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// With --run bench: also draw the latency distributions as SVG, and
    /// the fan-out curve next to it (PATH with "-fanout" before ".svg");
    /// checked as --json.
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
    /// With a scenario that has test cases (selftest, hotplug, torture):
    /// also write the cases as a JUnit XML report (checked as --json).
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// With --run torture: how long the invokers run (default 5 s); with
    /// --run wait: when the host ends the wait (churn stops then). Less
    /// than --timeout.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    duration: Option<f64>,
    /// Inject a fault (repeatable): stall:CPU:MS[@AT] stops vCPU CPU for
    /// MS ms (AT ms after the guest is ready); spurious-ipi:RATE sends RATE
    /// call-function IPIs a second to random vCPUs; drop-ipi:P drops a
    /// fraction P of the guest's call-function IPIs (if this host's KVM
    /// lets the VMM trap the x2APIC ICR; else skipped, with one line).
    /// A stall or spurious-ipi that the run ended before is said in one
    /// line and exits 1.
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
    /// Record the run's timeline: every cross call of every vCPU (the
    /// guest's trace rings), the VMM's own events and each vCPU's VM exits,
    /// as Perfetto's protobuf trace (open it in ui.perfetto.dev), or as
    /// ftrace-style text lines if PATH ends in .txt. Turns tracing on (the
    /// guest with its trace points). Written however the run ends (also on
    /// exit 1, 3, 4); checked as --json.
    #[arg(long, value_name = "PATH")]
    trace: Option<PathBuf>,
    /// Flight recorder: with a csd-lock stall report, a guest crash, a
    /// protocol error or a watchdog timeout, print the last N events of
    /// each CPU involved, newest last (default 16). Needs tracing: on with
    /// --trace, --flight or the command-line word `trace`.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = |s: &str| whole::<usize>(s))]
    flight: Option<usize>,
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

/// A whole-number option's value: decimal digits only (no sign), and it
/// must fit `T`. The range of the option is checked later, by name.
fn whole<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    if s.starts_with('-') && s.len() > 1 && s[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err("must not be negative".into());
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number".into());
    }
    s.parse::<u64>()
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| "too large".into())
}

/// Parses the command line; an error other than --help / --version is
/// one line, `vmm: ...`, naming the option, and exit 2 (clap's own report
/// spans several lines with usage and tips).
fn parse_cli() -> Result<Cli, String> {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => Err(one_line(&e.to_string())),
    }
}

/// The first line of a clap error, without its "error: " prefix.
fn one_line(report: &str) -> String {
    let line = report
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("bad arguments");
    let line = line.strip_prefix("error: ").unwrap_or(line);
    format!("{line} (see --help)")
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

/// A scenario-specific option: its flag, whether it was given, the
/// scenarios it applies to and what they have in common.
struct ScenarioOption {
    flag: &'static str,
    given: fn(&Cli) -> bool,
    applies: fn(Scenario) -> bool,
    what: &'static str,
}

/// Which option applies to which scenario: the one rule, for every
/// scenario-specific option (README's table). Any other use is refused,
/// never silently ignored. The other options apply to every scenario.
const SCENARIO_OPTIONS: &[ScenarioOption] = &[
    ScenarioOption {
        flag: "--json",
        given: |c| c.json.is_some(),
        applies: |s| s == Scenario::Bench,
        what: "the benchmark's report",
    },
    ScenarioOption {
        flag: "--plot",
        given: |c| c.plot.is_some(),
        applies: |s| s == Scenario::Bench,
        what: "the benchmark's latencies",
    },
    ScenarioOption {
        flag: "--junit",
        given: |c| c.junit.is_some(),
        applies: Scenario::has_cases,
        what: "scenarios with test cases",
    },
    ScenarioOption {
        flag: "--duration",
        given: |c| c.duration.is_some(),
        applies: |s| matches!(s, Scenario::Torture | Scenario::Wait),
        what: "how long the torture runs, or when the host ends a wait",
    },
];

/// Refuses a scenario-specific option given with a scenario it does not
/// apply to.
fn scenario_options(cli: &Cli) -> Result<(), String> {
    for o in SCENARIO_OPTIONS {
        if (o.given)(cli) && !(o.applies)(cli.run) {
            let with: Vec<_> = Scenario::ALL
                .iter()
                .filter(|s| (o.applies)(**s))
                .map(|s| s.name())
                .collect();
            return Err(format!(
                "{} applies only to --run {} ({}), not to --run {}",
                o.flag,
                with.join("|"),
                o.what,
                cli.run.name()
            ));
        }
    }
    Ok(())
}

/// The host's hotplug requests: each `--hotplug` step on its own line, the
/// `--hotplug-churn` (hundreds of requests) as one summary line.
fn report_hotplug(config: &VmConfig, events: &[vmm::hotplug_driver::Event]) {
    let (steps, churn) = events.split_at(config.hotplug.len().min(events.len()));
    for e in steps {
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
    if config.hotplug_churn.is_some() {
        let done = |c| {
            churn
                .iter()
                .filter(|e| e.change == c && e.result == Ok(0))
                .count()
        };
        let refused = churn
            .iter()
            .filter(|e| matches!(e.result, Ok(r) if r != 0))
            .count();
        let failed = churn.iter().filter(|e| e.result.is_err()).count();
        println!(
            "hotplug churn: {} requests: {} offline, {} online done, {refused} refused, {failed} failed",
            churn.len(),
            done(vmm::hotplug_driver::Change::Offline),
            done(vmm::hotplug_driver::Change::Online),
        );
    }
}

fn config(cli: &Cli) -> Result<VmConfig, String> {
    let timeout = seconds("--timeout", cli.timeout)?;
    let hotplug = match &cli.hotplug {
        Some(spec) => vmm::hotplug_driver::parse_schedule(spec, cli.cpus)
            .map_err(|e| format!("--hotplug: {e}"))?,
        None => Vec::new(),
    };
    scenario_options(cli)?;
    if let Some(n) = cli.flight
        && n > vmm::trace::flight::MAX_FLIGHT
    {
        return Err(format!(
            "--flight {n}: at most {} events per CPU",
            vmm::trace::flight::MAX_FLIGHT
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
        // --trace and --flight turn the rings on; so do the command
        // line's `trace`/`trace_buf=`.
        trace_rings: cli.trace.is_some() || cli.flight.is_some(),
        trace_buf_kib: None,
        flight: cli.flight.unwrap_or(vmm::config::DEFAULT_FLIGHT),
    })
}

/// An output file (`--json`, `--plot`, `--junit`), opened for writing
/// before the VM starts, so that a path that cannot be written is refused
/// at once, not after the whole run.
struct Output {
    flag: &'static str,
    path: PathBuf,
    file: File,
    /// This run created it (removed again if the run writes nothing).
    created: bool,
}

impl Output {
    /// Opens `path` for writing without truncating it yet: a regular file
    /// (checked before opening, so a FIFO cannot block, and again on the
    /// opened descriptor), or a new one in an existing, writable directory.
    fn open(flag: &'static str, path: &Path) -> Result<Output, String> {
        let name = || format!("{flag} {}", path.display());
        let not_regular = |m: &std::fs::Metadata| {
            let kind = if m.is_dir() {
                "a directory"
            } else {
                "a device, FIFO or socket"
            };
            format!("{}: not a regular file ({kind})", name())
        };
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => return Err(not_regular(&m)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", name())),
        }
        let open = |new: bool| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(new)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
        };
        let (file, created) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => (
                open(false).map_err(|e| format!("{}: cannot write: {e}", name()))?,
                false,
            ),
            Err(e) => return Err(format!("{}: cannot create: {e}", name())),
        };
        let out = Output {
            flag,
            path: path.to_path_buf(),
            file,
            created,
        };
        match out.file.metadata() {
            Ok(m) if m.is_file() => Ok(out),
            Ok(m) => Err(not_regular(&m)),
            Err(e) => Err(format!("{}: {e}", name())),
        }
    }

    /// Replaces the file's contents with `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        use std::io::{Seek, Write};
        let name = format!("{} {}", self.flag, self.path.display());
        self.file
            .set_len(0)
            .and_then(|()| self.file.rewind())
            .and_then(|()| self.file.write_all(bytes))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("{name}: {e}"))
    }

    /// Removes the file if this run created it and wrote nothing.
    fn discard(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The output files of a run, opened up front.
#[derive(Default)]
struct Outputs {
    json: Option<Output>,
    plot: Option<Output>,
    junit: Option<Output>,
    trace: Option<Output>,
}

impl Outputs {
    /// Opens every output `cli` asks for; two that are the same file (by
    /// device and inode, whatever the paths) are refused.
    fn open(cli: &Cli) -> Result<Outputs, String> {
        use std::os::unix::fs::MetadataExt;
        let mut outs = Outputs::default();
        let wanted = [
            ("--json", &cli.json),
            ("--plot", &cli.plot),
            ("--junit", &cli.junit),
            ("--trace", &cli.trace),
        ];
        for (flag, path) in wanted {
            let Some(path) = path else { continue };
            let out = match Output::open(flag, path) {
                Ok(o) => o,
                Err(e) => {
                    outs.discard();
                    return Err(e);
                }
            };
            let id = |o: &Output| o.file.metadata().ok().map(|m| (m.dev(), m.ino()));
            let same = outs
                .iter()
                .find(|o| id(o).is_some() && id(o) == id(&out))
                .map(|o| {
                    format!(
                        "{} and {} are the same file ({})",
                        o.flag,
                        flag,
                        path.display()
                    )
                });
            match flag {
                "--json" => outs.json = Some(out),
                "--plot" => outs.plot = Some(out),
                "--trace" => outs.trace = Some(out),
                _ => outs.junit = Some(out),
            }
            if let Some(msg) = same {
                outs.discard();
                return Err(msg);
            }
        }
        Ok(outs)
    }

    fn iter(&self) -> impl Iterator<Item = &Output> {
        [&self.json, &self.plot, &self.junit, &self.trace]
            .into_iter()
            .flatten()
    }

    /// Removes the files this run created (it is not going to write them).
    fn discard(self) {
        for o in [self.json, self.plot, self.junit, self.trace]
            .into_iter()
            .flatten()
        {
            o.discard();
        }
    }
}

/// Writes `--junit`: the run's test cases as JUnit XML.
fn junit_report(
    out: &mut Output,
    config: &VmConfig,
    tests: &[vmm::TestResult],
) -> Result<(), String> {
    let report = vmm::junit::report(config.scenario, config.cpus, tests);
    let xml = report.to_string().map_err(|e| e.to_string())?;
    out.write(xml.as_bytes())
}

/// Prints the benchmark table and writes `--json` / `--plot`.
fn bench_report(
    outs: &mut Outputs,
    config: &VmConfig,
    outcome: &vmm::Outcome,
    boot: vmm::boot_times::BootCurve,
) -> Result<(), String> {
    let info = vmm::bench::RunInfo {
        host: vmm::host::info(),
        vcpus: config.cpus,
        cmdline: config.guest_cmdline(),
        trace: config.tracing(),
        boot: Some(boot),
    };
    let report = vmm::bench::Report::new(info, &outcome.bench);
    print!("{}", report.table());
    if let Some(out) = &mut outs.json {
        let text = serde_json::to_string_pretty(&report.json()).map_err(|e| e.to_string())?;
        out.write((text + "\n").as_bytes())?;
    }
    if let Some(out) = &mut outs.plot {
        out.write(vmm::bench::plot::svg(&report).as_bytes())?;
        let fanout = vmm::bench::fanout_plot::sibling_path(&out.path);
        std::fs::write(&fanout, vmm::bench::fanout_plot::svg(&report))
            .map_err(|e| format!("--plot {}: {e}", fanout.display()))?;
    }
    Ok(())
}

fn main() -> ProcessExit {
    let process_start = std::time::Instant::now();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(msg) => {
            eprintln!("vmm: {msg}");
            return ProcessExit::from(ExitCode::Usage as u8);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();

    // Everything is checked before the output files are opened (created),
    // and they before the VM starts.
    let checked = config(&cli).and_then(|c| c.validate().map(|()| c).map_err(|e| e.to_string()));
    let (config, mut outputs) = match checked.and_then(|c| Ok((c, Outputs::open(&cli)?))) {
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
            report_hotplug(&config, &outcome.hotplug);
            // A failed --json / --plot write exits 2, unless the guest
            // failed: then its code (1, 3, 4) wins, with its diagnosis.
            let boot = outcome.boot.since(process_start);
            log::info!("{}", boot.line("vmm start"));
            if cli.run == Scenario::Bench
                && let Err(msg) = bench_report(&mut outputs, &config, &outcome, boot)
            {
                eprintln!("vmm: {msg}");
                if outcome.exit_code() == ExitCode::Success {
                    return ProcessExit::from(ExitCode::Usage as u8);
                }
            }
            let stalls = outcome.records.csd_stalls();
            if !stalls.is_empty() {
                let provoked = outcome
                    .records
                    .counter(shared::record::PROVOKED_STALLS_COUNTER);
                let (line, explained) = vmm::stalls::summary(&stalls, provoked);
                println!("{line}");
                // The ones never unstuck first, then the first few others.
                let (stuck, rest): (Vec<_>, Vec<_>) =
                    stalls.iter().partition(|s| s.unstuck_after.is_none());
                let shown = if explained { 0 } else { STALLS_SHOWN };
                for s in stuck.iter().chain(rest.iter().take(shown)) {
                    println!("{}", s.line(&outcome.symbols));
                }
                if rest.len() > shown && !explained {
                    println!("... and {} more unstuck stalls", rest.len() - shown);
                }
            }
            for line in outcome.faults.lines() {
                println!("{line}");
            }
            for line in &outcome.faults.not_injected {
                eprintln!("vmm: {line}");
            }
            let tests = outcome.records.tests();
            if !tests.is_empty() {
                println!("{}", vmm::CaseCounts::of(&tests));
            }
            // As --json: a failed write exits 2 unless the guest failed.
            if let Some(out) = &mut outputs.junit
                && let Err(msg) = junit_report(out, &config, &tests)
            {
                eprintln!("vmm: {msg}");
                if outcome.exit_code() == ExitCode::Success {
                    return ProcessExit::from(ExitCode::Usage as u8);
                }
            }
            for report in &outcome.timeline.flight {
                eprint!("{report}");
            }
            // Written however the run ended; a failed write exits 2 unless
            // the guest failed (as --json).
            if let Some(out) = &mut outputs.trace {
                let format = vmm::trace::Format::of_path(&out.path);
                let read = std::time::Instant::now();
                let guest = vmm::trace::guest_events(&outcome);
                let decoded = read.elapsed();
                let bytes = vmm::trace::render_events(&outcome, &guest, format);
                // The reader's cost (-v): decoding every ring, then encoding.
                log::info!(
                    "trace: read and decoded {} events of {} rings in {:.2} ms; encoded {} KiB ({format:?}) in {:.2} ms",
                    guest.len(),
                    outcome.trace.as_ref().map_or(0, |s| s.region.cpus),
                    decoded.as_secs_f64() * 1e3,
                    bytes.len() / 1024,
                    (read.elapsed() - decoded).as_secs_f64() * 1e3
                );
                if let Err(msg) = out.write(&bytes) {
                    eprintln!("vmm: {msg}");
                    if outcome.exit_code() == ExitCode::Success {
                        return ProcessExit::from(ExitCode::Usage as u8);
                    }
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
            outputs.discard();
            eprintln!("vmm: {e}");
            ProcessExit::from(e.exit_code() as u8)
        }
    }
}
