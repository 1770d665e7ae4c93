//! `vmm`: boot the smpcall guest on N KVM vCPUs and run a scenario.

use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;
use std::time::Duration;

use clap::Parser;
use shared::status::ExitCode;
use vmm::{Kernel, VmConfig};

const EXIT_CODES: &str = "\
Exit codes:
  0  success: the guest ran the scenario and reported success
  1  the guest reported a failure (a failed self-test, an unknown scenario)
  2  usage or configuration error (bad arguments, bad --kernel, no /dev/kvm)
  3  the guest crashed (exception, triple fault, failed entry) or KVM failed
  4  timeout: the watchdog stopped a guest that did not finish (--timeout)

Guest command-line words (--cmdline): nosmp, nr_cpus=N, maxcpus=N, as in Linux.
Logging: -v (info), -vv (debug), -vvv (trace), or RUST_LOG.";

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
    /// semantic, one line per case), wait (serve --hotplug / --api-sock
    /// requests until {"exit":true} or the schedule's end).
    #[arg(long, default_value = "demo", value_name = "SCENARIO")]
    run: String,
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
    /// Do not copy the guest console to stdout.
    #[arg(long, short)]
    quiet: bool,
    /// More logging (repeat for more).
    #[arg(long, short, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn config(cli: &Cli) -> Result<VmConfig, String> {
    if !cli.timeout.is_finite() || cli.timeout <= 0.0 || cli.timeout > 86_400.0 {
        return Err(format!(
            "--timeout {}: must be more than 0 and at most 86400 seconds",
            cli.timeout
        ));
    }
    let hotplug = match &cli.hotplug {
        Some(spec) => {
            vmm::hotplug::parse_schedule(spec, cli.cpus).map_err(|e| format!("--hotplug: {e}"))?
        }
        None => Vec::new(),
    };
    if cli.hotplug_churn == Some(0) {
        return Err("--hotplug-churn must be at least 1 ms".into());
    }
    let numa = match &cli.numa {
        Some(spec) => vmm::parse_numa(spec, cli.cpus).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    Ok(VmConfig {
        cpus: cli.cpus,
        mem_mib: cli.mem,
        cmdline: cli.cmdline.clone(),
        scenario: cli.run.clone(),
        kernel: cli.kernel.clone().map_or(Kernel::Embedded, Kernel::Path),
        timeout: Duration::from_secs_f64(cli.timeout),
        numa,
        echo_console: !cli.quiet,
        apic_stride: cli.apic_stride,
        hotplug,
        hotplug_churn: cli.hotplug_churn.map(Duration::from_millis),
        api_sock: cli.api_sock.clone(),
    })
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
    match vmm::run(&config) {
        Ok(outcome) => {
            for e in &outcome.hotplug {
                let what = match &e.result {
                    Ok(0) => "done".to_string(),
                    Ok(errno) => format!("refused ({errno})"),
                    Err(err) => err.to_string(),
                };
                println!(
                    "hotplug: {:>7.1} ms {} CPU {}: {what}",
                    e.at.as_secs_f64() * 1e3,
                    e.change.name(),
                    e.cpu
                );
            }
            let tests = outcome.tests();
            if !tests.is_empty() {
                let passed = tests.iter().filter(|t| t.passed).count();
                println!("{} passed, {} failed", passed, tests.len() - passed);
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
