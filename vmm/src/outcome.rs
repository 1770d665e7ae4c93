//! What a run produced: how it ended, the console, the records
//! ([`crate::records`]), and a report a person can read.

use std::fmt::Write as _;
use std::time::Duration;

use kvm_bindings::{
    KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_UNINITIALIZED,
};
use shared::record::Body;
use shared::status::{ExitCode, GuestStatus};
use shared::vectors::exception_name;

use crate::records::Records;

/// How the run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest wrote its exit status.
    GuestExit(GuestStatus),
    /// The guest wrote an exit status that means nothing.
    BadExitStatus(u32),
    /// A vCPU triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault {
        /// The vCPU.
        cpu: u32,
    },
    /// KVM could not enter the guest (`KVM_EXIT_FAIL_ENTRY`).
    FailEntry {
        /// The vCPU.
        cpu: u32,
        /// Hardware entry failure reason.
        reason: u64,
    },
    /// KVM could not emulate something (`KVM_EXIT_INTERNAL_ERROR`).
    InternalError {
        /// The vCPU.
        cpu: u32,
    },
    /// An exit this VMM does not handle.
    UnexpectedExit {
        /// The vCPU.
        cpu: u32,
        /// What it was.
        what: String,
    },
    /// `KVM_RUN` itself failed.
    RunFailed {
        /// The vCPU.
        cpu: u32,
        /// The error.
        error: String,
    },
    /// The watchdog fired.
    Timeout(Duration),
    /// SIGINT or SIGTERM stopped the run (the CLI's handlers).
    Signal(i32),
    /// A thread's seccomp filter could not be installed: the guest never ran.
    Seccomp(String),
}

/// A vCPU's state when the run ended abnormally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuDump {
    /// The vCPU (= CPU number).
    pub cpu: u32,
    /// KVM's MP state (`KVM_MP_STATE_*`).
    pub mp_state: u32,
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Flags.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// EFER.
    pub efer: u64,
}

impl VcpuDump {
    fn mp_state_name(&self) -> &'static str {
        match self.mp_state {
            KVM_MP_STATE_RUNNABLE => "running",
            KVM_MP_STATE_UNINITIALIZED => "waiting for INIT/SIPI",
            KVM_MP_STATE_INIT_RECEIVED => "INIT received",
            KVM_MP_STATE_HALTED => "halted",
            KVM_MP_STATE_SIPI_RECEIVED => "SIPI received",
            _ => "unknown",
        }
    }
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// The guest console, line by line as the guest wrote it.
    pub console: String,
    /// Every well-formed record, in arrival order.
    pub records: Records,
    /// Malformed or unexpected guest output (the guest is untrusted).
    pub protocol_errors: Vec<String>,
    /// vCPU state, when the run ended abnormally.
    pub dumps: Vec<VcpuDump>,
    /// Wall time from VM creation to the end.
    pub elapsed: Duration,
    /// Hotplug changes the host made, with the guest's answers.
    pub hotplug: Vec<crate::hotplug_driver::Event>,
    /// Faults the VMM injected (`--fault`), and those it had to skip.
    pub faults: crate::fault::FaultReport,
    /// What the guest's benchmark reported (`--run bench`), with the KVM
    /// counters around each case.
    pub bench: crate::bench::BenchRun,
    /// When the VM came up and ended.
    pub boot: crate::boot_times::BootTimes,
    /// The trace rings, copied out of guest memory after the vCPUs
    /// stopped, when tracing was on ([`crate::trace_rings`]).
    pub trace: Option<crate::trace_rings::TraceSnapshot>,
    /// The guest kernel's function symbols.
    pub symbols: std::sync::Arc<crate::symbols::Symbols>,
    /// What the VMM recorded for the trace: its own events, the VM-exit
    /// samples, the clock, the flight-recorder reports.
    pub timeline: crate::trace::VmmTimeline,
}

impl Outcome {
    /// The process exit code this outcome maps to. A run whose guest
    /// succeeded but that did not inject a requested fault does not pass.
    pub fn exit_code(&self) -> ExitCode {
        match self.ending {
            Ending::GuestExit(GuestStatus::Success) if !self.faults.not_injected.is_empty() => {
                ExitCode::GuestFailure
            }
            Ending::GuestExit(GuestStatus::Success) => ExitCode::Success,
            Ending::GuestExit(GuestStatus::Failure | GuestStatus::BadRequest) => {
                ExitCode::GuestFailure
            }
            Ending::Timeout(_) => ExitCode::Timeout,
            Ending::Signal(libc::SIGINT) => ExitCode::Interrupted,
            Ending::Signal(_) => ExitCode::Terminated,
            Ending::Seccomp(_) => ExitCode::Usage,
            _ => ExitCode::Crashed,
        }
    }

    /// A one-paragraph explanation of an abnormal end (empty on success):
    /// exceptions with vector, RIP and CPU, and each vCPU's state.
    pub fn diagnosis(&self) -> String {
        let mut s = String::new();
        let _ = match &self.ending {
            Ending::GuestExit(GuestStatus::Success) => return s,
            Ending::GuestExit(status) => writeln!(s, "guest exited with status {status:?}"),
            Ending::BadExitStatus(v) => writeln!(s, "guest wrote unknown exit status {v:#x}"),
            Ending::TripleFault { cpu } => writeln!(s, "vCPU {cpu} triple-faulted (shutdown)"),
            Ending::FailEntry { cpu, reason } => {
                writeln!(
                    s,
                    "vCPU {cpu}: KVM failed to enter the guest (reason {reason:#x})"
                )
            }
            Ending::InternalError { cpu } => {
                writeln!(s, "vCPU {cpu}: KVM internal error (emulation failure)")
            }
            Ending::UnexpectedExit { cpu, what } => {
                writeln!(s, "vCPU {cpu}: unexpected exit {what}")
            }
            Ending::RunFailed { cpu, error } => writeln!(s, "vCPU {cpu}: KVM_RUN failed: {error}"),
            Ending::Timeout(t) => writeln!(
                s,
                "timeout: the guest did not finish within {:.1} s",
                t.as_secs_f64()
            ),
            Ending::Signal(sig) => writeln!(s, "stopped by {}", crate::stop_signal::name(*sig)),
            Ending::Seccomp(why) => writeln!(s, "{why}"),
        };
        for r in self.records.iter() {
            if let Body::Exception {
                vector,
                error_code,
                rip,
                cr2,
            } = r.body
            {
                let _ = write!(
                    s,
                    "CPU {} exception {vector} ({}) error code {error_code:#x} at RIP {rip:#x} {}",
                    r.cpu,
                    exception_name(vector),
                    self.symbols.at(rip)
                );
                if vector == 14 {
                    let _ = write!(s, " address {cr2:#x}");
                }
                s.push('\n');
            }
        }
        for d in &self.dumps {
            let _ = writeln!(
                s,
                "vCPU {}: {} RIP {:#x} {} RSP {:#x} RFLAGS {:#x} CR0 {:#x} CR3 {:#x} EFER {:#x}",
                d.cpu,
                d.mp_state_name(),
                d.rip,
                self.symbols.at(d.rip),
                d.rsp,
                d.rflags,
                d.cr0,
                d.cr3,
                d.efer
            );
        }
        for e in &self.protocol_errors {
            let _ = writeln!(s, "protocol error: {e}");
        }
        s
    }
}
